"""The OpenCV technical measures equal the float64 scipy code they replaced.

`reference_measure` is that code, kept verbatim as the reference: Pillow's LANCZOS thumbnail,
Rec. 601 luma in float64, `scipy.ndimage.convolve(mode="reflect")`, numpy statistics.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from distill.decode import ORIGINAL_SIZE_KEY
from teachers.technical import (
    LUMA_SCALE,
    LUMA_WEIGHTS,
    MEASURES,
    WORKING_SIDE,
    luma_per_mille,
    measure,
)

# Every measure within this of the reference; the floor is for measures that are 0 (a flat
# image's sharpness is float64 residue, ~1e-28, in the reference and exactly 0 here).
RELATIVE, ABSOLUTE = 1e-6, 1e-9
LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64)
NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)


def reference_measure(image: Image.Image) -> dict[str, float]:
    width, height = image.info.get(ORIGINAL_SIZE_KEY, image.size)
    working = image.copy()
    working.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.LANCZOS)
    rgb = np.asarray(working.convert("RGB"), dtype=np.float64)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 0.299 * red + 0.587 * green + 0.114 * blue

    rows, cols = luma.shape
    residual = np.abs(ndimage.convolve(luma, NOISE_KERNEL, mode="reflect"))[1:-1, 1:-1]
    noise = np.sqrt(np.pi / 2) * residual.sum() / (6.0 * max(rows - 2, 1) * max(cols - 2, 1))

    red_green, yellow_blue = red - green, 0.5 * (red + green) - blue
    colourfulness = np.hypot(red_green.std(), yellow_blue.std()) + 0.3 * np.hypot(
        red_green.mean(), yellow_blue.mean()
    )
    return {
        "sharpness": float(ndimage.convolve(luma, LAPLACIAN, mode="reflect").var()),
        "clipped_highlights": float((luma >= 250).mean()),
        "clipped_shadows": float((luma <= 5).mean()),
        "exposure": float(luma.mean() / 255.0),
        "noise": float(noise),
        "colourfulness": float(colourfulness),
        "megapixels": width * height / 1e6,
    }


def _skimage_photos() -> dict[str, Image.Image]:
    import skimage

    folder = os.path.join(os.path.dirname(skimage.__file__), "data")
    names = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg",
             "retina.jpg", "camera.png", "hubble_deep_field.jpg", "brick.png", "moon.png")
    return {name: Image.open(os.path.join(folder, name)) for name in names
            if os.path.exists(os.path.join(folder, name))}


def _cases() -> dict[str, Image.Image]:
    photos = _skimage_photos()
    rng = np.random.default_rng(0)
    coffee = photos["coffee.png"].convert("RGB")
    cases = dict(photos)
    cases.update({
        # the teachers' 768 px input, and odd sizes on both sides of the working size
        "coffee-768": coffee.resize((768, 512), Image.Resampling.BICUBIC),
        "astronaut-odd": photos["astronaut.png"].convert("RGB").resize((517, 333)),
        "coffee-tall-odd": coffee.resize((301, 913), Image.Resampling.BICUBIC),
        "coffee-small": coffee.resize((97, 61), Image.Resampling.BICUBIC),
        "strip-1-row": coffee.resize((600, 1)),
        "strip-2-cols": coffee.resize((2, 700)),
        "three-by-three": coffee.resize((3, 3)),
        "greyscale-L": photos["camera.png"].convert("L"),
        "rgba": photos["astronaut.png"].convert("RGBA"),
        "flat-grey": Image.new("RGB", (640, 480), (120, 120, 120)),
        "flat-colour": Image.new("RGB", (400, 300), (200, 40, 90)),
        "white": Image.new("RGB", (300, 200), (255, 255, 255)),
        "black": Image.new("RGB", (300, 200), (0, 0, 0)),
        "at-the-thresholds": Image.new("RGB", (64, 64), (250, 250, 250)),
        "noise": Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)),
        # a colour cast with a few odd pixels: a tiny spread under a large mean
        "cast-with-specks": _specks(Image.new("RGB", (512, 384), (230, 180, 20)), rng),
    })
    cases["original-size"] = coffee.copy()
    cases["original-size"].info[ORIGINAL_SIZE_KEY] = (6000, 4000)
    return cases


def _specks(image: Image.Image, rng) -> Image.Image:
    pixels = np.array(image)
    pixels[rng.integers(0, pixels.shape[0], 3), rng.integers(0, pixels.shape[1], 3)] = (0, 255, 9)
    return Image.fromarray(pixels)


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_measures_equal_the_scipy_reference(name):
    image = CASES[name]
    fast, reference = measure(image), reference_measure(image)
    assert list(fast) == list(reference) == list(MEASURES)
    for key in MEASURES:
        assert fast[key] == pytest.approx(reference[key], rel=RELATIVE, abs=ABSOLUTE), key
    # counts are counts: the clipped fractions are the same number of pixels, exactly
    assert fast["clipped_highlights"] == reference["clipped_highlights"]
    assert fast["clipped_shadows"] == reference["clipped_shadows"]


def test_luma_is_exact_and_its_thresholds_agree_with_float64_luma_on_every_colour():
    """The clipping counts compare 1000 × luma (`luma_per_mille`) with 250,000 and 5,000; the
    reference compares float64 luma with 250 and 5. On all 2^24 colours the plane holds the
    exact integer, and the two comparisons agree, ties included."""
    green, blue = (plane.astype(np.uint8) for plane in np.meshgrid(
        np.arange(256), np.arange(256), indexing="ij"))
    for first_red in range(0, 256, 16):  # 16 reds at a time: 1 M colours in one plane
        red = np.repeat(np.arange(first_red, first_red + 16, dtype=np.uint8), 256 * 256)
        red = red.reshape(16 * 256, 256)
        greens, blues = np.tile(green, (16, 1)), np.tile(blue, (16, 1))
        luma = luma_per_mille(red, greens, blues)
        exact = sum(w * c.astype(np.int64) for w, c in zip(LUMA_WEIGHTS, (red, greens, blues)))
        assert np.array_equal(luma, exact)
        reference = (0.299 * red.astype(np.float64) + 0.587 * greens.astype(np.float64)
                     + 0.114 * blues.astype(np.float64))
        assert np.array_equal(reference >= 250, luma >= 250 * LUMA_SCALE), first_red
        assert np.array_equal(reference <= 5, luma <= 5 * LUMA_SCALE), first_red


def test_lazy_jpeg_measures_as_its_loaded_copy(tmp_path):
    """An unloaded JPEG is thumbnailed from the same pixels as the reference's copy."""
    path = tmp_path / "coffee.jpg"
    CASES["coffee-768"].save(path, quality=90)
    with Image.open(path) as lazy:
        fast = measure(lazy)
    with Image.open(path) as lazy:
        reference = reference_measure(lazy)
    assert fast == pytest.approx(reference, rel=RELATIVE, abs=ABSOLUTE)
