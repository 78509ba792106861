"""The fast (numpy/OpenCV) and torch BRISQUE and PIQE against pyiqa's own modules, on real
photos (the torch ones on the CPU device: the code a CUDA device runs)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from distill.errors import ConfigError
from teachers import _fast_iqa, create_teacher

# Measured 2026-12-03 on the ResultsCalibra images and skimage photos below:
# PIQE within 3e-6, BRISQUE within 2e-3 (absolute; scores 0-100).
PIQE_ATOL = 1e-3
BRISQUE_ATOL = 5e-3


def _photos(calibration_dir, skimage_photos):
    images = [Image.open(calibration_dir / f"{n}.bmp").convert("RGB")
              for n in ("I03", "I04", "I06", "I08", "I19")]
    for name in ("astronaut", "coffee", "chelsea"):
        image = Image.open(skimage_photos[name]).convert("RGB")
        images.append(image)
        images.append(image.crop((3, 5, 3 + 301, 5 + 217)))  # odd sizes, not multiples of 16
    images.append(images[-1].convert("L").convert("RGB"))  # greyscale
    return images


@pytest.fixture(scope="module")
def photos_and_pyiqa(calibration_dir, skimage_photos):
    images = _photos(calibration_dir, skimage_photos)
    references = {}
    for name in ("piqe", "brisque"):
        output = create_teacher(name, impl="pyiqa").score(images)
        assert not output.errors
        references[name] = output.scores
    return images, references


@pytest.mark.parametrize("impl", ["fast", "torch"])
@pytest.mark.parametrize("name, atol", [("piqe", PIQE_ATOL), ("brisque", BRISQUE_ATOL)])
def test_fast_matches_pyiqa_on_real_photos(name, atol, impl, photos_and_pyiqa):
    images, references = photos_and_pyiqa
    ours = create_teacher(name, impl=impl, device="cpu").score(images)
    assert not ours.errors
    np.testing.assert_allclose(ours.scores, references[name], rtol=0, atol=atol)


def test_luma_and_resize_are_bit_identical_to_pyiqa(photo):
    import torch
    from pyiqa.matlab_utils import imresize
    from pyiqa.utils.color_util import rgb2yiq
    from torchvision.transforms.functional import to_tensor

    rgb = np.asarray(photo)
    y = _fast_iqa.y_channel(rgb)
    assert np.array_equal(y, rgb2yiq(to_tensor(photo).unsqueeze(0))[0, 0].numpy())
    for crop in (y, y[:37, :51]):
        luma = np.round(crop * np.float32(255))
        ref = imresize(torch.from_numpy(luma)[None, None], scale=0.5, antialiasing=True)
        assert np.array_equal(_fast_iqa.imresize_half(luma), ref[0, 0].numpy())


def test_greyscale_mode_scores_like_its_rgb_conversion(photo):
    teacher = create_teacher("piqe")
    grey = photo.convert("L")
    assert teacher.score([grey]).scores[0] == teacher.score([grey.convert("RGB")]).scores[0]


@pytest.mark.parametrize("name", ["piqe", "brisque"])
def test_failing_image_gets_nan_and_a_reason(name, photo):
    teacher = create_teacher(name, impl="fast")
    images = [photo, Image.new("RGB", (64, 48), (0, 0, 0)), photo.resize((40, 30))]
    output = teacher.score(images)
    assert np.isnan(output.scores[1]) and set(output.errors) == {1}
    assert output.errors[1].startswith(f"{name}: ")
    assert np.isfinite(output.scores[[0, 2]]).all()
    alone = teacher.score([images[1]])  # a batch of one (a scoring worker's last image)
    assert np.isnan(alone.scores[0]) and alone.errors[0] == output.errors[1]


def test_provenance_names_the_implementation():
    assert create_teacher("piqe").provenance()["implementation"] == "fast"
    assert create_teacher("piqe", device="cpu").provenance()["implementation"] == "fast"
    assert create_teacher("piqe", impl="pyiqa").provenance()["implementation"] == "pyiqa"
    assert create_teacher("brisque").provenance()["implementation"] == "fast"
    torch_piqe = create_teacher("piqe", impl="torch", device="cpu").provenance()
    assert torch_piqe["implementation"] == "torch" and torch_piqe["device"] == "cpu"
    assert "_torch_iqa.piqe" in torch_piqe["computed_by"] and "on cpu" in torch_piqe["computed_by"]
    with pytest.raises(ConfigError):
        create_teacher("piqe", impl="gpu")
