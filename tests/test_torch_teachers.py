"""The classical teachers batched in torch (`impl="torch"`), on the CPU device: the code a CUDA
device runs, against the CPU implementations. (Against pyiqa and its published calibration
values: tests/test_fast_teachers.py and tests/test_calibration.py run "torch" too.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from distill import resample
from distill.decode import ORIGINAL_SIZE_KEY
from teachers import _fast_iqa, _torch_iqa, create_teacher

# torch against the fast path, measured on these photos: BRISQUE within 5e-5 (the fast path
# sums some statistics in float32, this one in float64), PIQE within 6e-8; technical exact.
TORCH_VS_FAST = {"brisque": 2e-4, "piqe": 1e-6, "technical": 0.0}


@pytest.fixture(scope="module")
def images(skimage_photos):
    photos = [Image.open(skimage_photos[n]).convert("RGB") for n in ("astronaut", "coffee")]
    shots = [photos[0], photos[0].crop((3, 5, 304, 222)), photos[1].crop((0, 0, 301, 217)),
             photos[1].resize((260, 700)),  # portrait: Pillow 13 resamples it vertically first
             photos[0].convert("L").convert("RGB")]
    shots[0].info[ORIGINAL_SIZE_KEY] = (4000, 3000)  # a decoded photo's original size
    return shots + [Image.new("RGB", (64, 48), (0, 0, 0)), Image.new("RGB", (64, 48), (90,) * 3)]


@pytest.mark.parametrize("name", ["brisque", "piqe", "technical"])
def test_torch_matches_the_cpu_path_errors_and_extras_included(name, images):
    fast = create_teacher(name).score(images)
    ours = create_teacher(name, impl="torch", device="cpu").score(images)
    assert ours.errors == fast.errors  # the same error rows, word for word
    assert np.array_equal(np.isnan(ours.scores), np.isnan(fast.scores))
    finite = np.isfinite(fast.scores)
    np.testing.assert_allclose(ours.scores[finite], fast.scores[finite], rtol=0,
                               atol=TORCH_VS_FAST[name])
    assert ours.extras.keys() == fast.extras.keys()
    for key in fast.extras:
        assert np.array_equal(ours.extras[key], fast.extras[key]), key


def test_an_image_scores_alike_alone_and_in_a_group(images):
    same_size = [images[1], images[2], images[1].transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    for name in ("brisque", "piqe", "technical"):
        teacher = create_teacher(name, impl="torch", device="cpu")
        together = teacher.score(same_size).scores
        alone = np.array([teacher.score([image]).scores[0] for image in same_size])
        # float64 sums over a batch may add in another order: BRISQUE's SVR cancellation
        # turns that into ~1e-12 (measured 2.7e-12)
        np.testing.assert_allclose(together, alone, rtol=0, atol=1e-9)


def test_mscn_is_pyiqas_bit_for_bit(photo):
    """The one step BRISQUE's score cannot afford to round differently (see _torch_iqa): the
    chain equals pyiqa's own normalize_img_with_gauss (torch's CPU conv2d) on every pixel
    (OpenCV's filter2D, the fast path's, differs in the last width % 8 columns)."""
    from pyiqa.archs.func_util import normalize_img_with_gauss

    luma = np.round(_fast_iqa.y_channel(np.asarray(photo)[:97, :131]) * np.float32(255))
    for plane in (luma, _fast_iqa.imresize_half(luma)):
        batch = torch.from_numpy(np.ascontiguousarray(plane)).unsqueeze(0)
        for border in ("same", "replicate"):
            expected = normalize_img_with_gauss(batch.unsqueeze(1), padding=border)[:, 0]
            assert torch.equal(_torch_iqa.mscn(batch, border), expected), border


@pytest.mark.parametrize("kind, filter_", [("bicubic", Image.Resampling.BICUBIC),
                                           ("lanczos", Image.Resampling.LANCZOS)])
def test_resample_is_pillows_bit_for_bit(kind, filter_):
    rng = np.random.default_rng(0)
    sizes = [(300, 200, 150), (200, 300, 150), (100, 300, 150), (200, 401, 200),
             (97, 61, 60), (640, 480, 512), (50, 60, 70)]  # the last one leaves it as it is
    for width, height, side in sizes:
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        expected = Image.fromarray(pixels)
        expected.thumbnail((side, side), filter_)
        ours = resample.thumbnail(torch.from_numpy(pixels).permute(2, 0, 1), side, kind)
        assert np.array_equal(ours.permute(1, 2, 0).numpy(), np.asarray(expected)), (width, height)
