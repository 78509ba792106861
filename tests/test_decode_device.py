"""JPEGs decoded by torchvision on a torch device (here the CPU's libjpeg-turbo: the same API
and code as nvJPEG on CUDA) against the Pillow path, `distill.decode`."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from distill.decode import DecodeError, decode_named
from distill.decode_device import DeviceImage, decode_batch, draft_scale, orient
from teachers import create_teacher

OPTIONS = {"draft_size": 256, "max_side": 256, "min_side": 32, "max_pixels": 200_000_000}
# Where a JPEG is big enough for Pillow's draft mode (DCT scaling by 1/s), the device path
# decodes in full and averages s x s blocks: measured on 16 packaged photos at 1600-3300 px,
# mean |pixel difference| <= 0.29 levels, 99th percentile <= 2, and the teachers' scores
# within 0.36 (BRISQUE, ~0-150), 1.5 (PIQE, 0-100) and 0.0014 (technical, 0-1).
DRAFTED = {"mean": 0.5, "p99": 3}
DRAFTED_SCORES = {"brisque": 1.0, "piqe": 3.0, "technical": 0.01}


def _jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def source(skimage_photos) -> Image.Image:
    return Image.open(skimage_photos["astronaut"]).convert("RGB").resize((300, 200))


def _pillow(data: bytes, name: str, options=OPTIONS):
    try:
        return decode_named(data, name, **options), None
    except DecodeError as exc:
        return None, str(exc)


def _same_decoded(device, pillow) -> None:
    assert (device.width, device.height, device.sha1, device.notes, device.taken_at) == (
        pillow.width, pillow.height, pillow.sha1, pillow.notes, pillow.taken_at)
    image = device.image.to_pil() if isinstance(device.image, DeviceImage) else device.image
    assert np.array_equal(np.asarray(image), np.asarray(pillow.image))
    assert image.info.get("distill.original_size") == pillow.image.info["distill.original_size"]


def test_every_exif_orientation_is_pillows_image_bit_for_bit(source):
    """No draft reduction here (300x200 < 2 x 256): libjpeg-turbo's pixels, oriented and
    capped to 256 px by Pillow's BICUBIC thumbnail made in torch."""
    items = []
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        exif.get_ifd(0x8769)[0x9003] = "2026:12:04 10:11:12"
        items.append((_jpeg(source, quality=90, exif=exif.tobytes()), f"o{orientation}.jpg"))
    for (data, name), (decoded, reason) in zip(items, decode_batch(items, "cpu", **OPTIONS)):
        assert reason is None and isinstance(decoded.image, DeviceImage)
        assert decoded.image.pixels.device.type == "cpu"
        _same_decoded(decoded, _pillow(data, name)[0])


def test_odd_files_become_the_pillow_paths_images_or_error_rows(source):
    big = source.resize((900, 600))
    png = io.BytesIO()
    big.save(png, "PNG")
    jpeg = _jpeg(big)
    items = [(_jpeg(big, progressive=True), "progressive.jpg"), (_jpeg(big.convert("CMYK")),
             "cmyk.jpg"), (_jpeg(big.convert("L")), "grey.jpg"), (jpeg[:20000], "truncated.jpg"),
             (jpeg + b"trailing bytes", "tail.jpg"), (png.getvalue(), "photo.jpg"),
             (_jpeg(source.resize((40, 20))), "tiny.jpg"), (_jpeg(source.resize((3000, 60))),
             "strip.jpg"), (b"", "empty.jpg"), (b"\xff\xd8\xffnot a jpeg\xff\xd9", "fake.jpg")]
    for (data, name), (decoded, reason) in zip(items, decode_batch(items, "cpu", **OPTIONS)):
        expected, expected_reason = _pillow(data, name)
        assert reason == expected_reason, name
        if expected is not None:
            assert not isinstance(decoded.image, DeviceImage), name  # Pillow decoded it
            _same_decoded(decoded, expected)


def test_draft_sized_jpegs_keep_sizes_and_scores_within_the_stated_tolerance(skimage_photos):
    photos = [Image.open(skimage_photos[n]).convert("RGB") for n in ("astronaut", "coffee",
                                                                       "chelsea")]
    items = [(_jpeg(photo.resize((1600, 1100)), quality=90), f"{i}.jpg")
             for i, photo in enumerate(photos)]
    options = {**OPTIONS, "draft_size": 512, "max_side": 512}  # teachers' scale, near 768
    assert draft_scale((1600, 1100), 512) == 2  # Pillow's 1/2 DCT scale, 800x550, then 512
    decoded = [d for d, _ in decode_batch(items, "cpu", **options)]
    pillow = [_pillow(data, name, options)[0] for data, name in items]
    ours = [d.image.to_pil() for d in decoded]
    for mine, theirs in zip(ours, pillow):
        assert mine.size == theirs.image.size
        difference = np.abs(np.asarray(mine, int) - np.asarray(theirs.image, int))
        assert difference.mean() <= DRAFTED["mean"] and np.percentile(difference, 99) <= DRAFTED["p99"]
    for name, tolerance in DRAFTED_SCORES.items():
        teacher = create_teacher(name)
        a, b = teacher.score([p.image for p in pillow]).scores, teacher.score(ours).scores
        assert np.all(np.abs(a - b) <= tolerance), (name, a, b)


def test_orient_is_exif_transpose():
    from PIL import ImageOps

    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 7
    for orientation in range(1, 9):
        image = Image.fromarray(pixels)
        exif = image.getexif()
        exif[0x0112] = orientation
        expected = np.asarray(ImageOps.exif_transpose(image))
        ours = orient(torch.from_numpy(pixels).permute(2, 0, 1), orientation).permute(1, 2, 0)
        assert np.array_equal(ours.numpy(), expected), orientation
