"""Each technical measure moves the right way under the degradation it is meant to catch."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from teachers.technical import TechnicalTeacher, measure


def _noisy(image: Image.Image, sigma: float, seed: int = 0) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64)
    noise = np.random.default_rng(seed).normal(0, sigma, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def test_measures_track_their_degradations(photo):
    clean = measure(photo)
    assert measure(photo.filter(ImageFilter.GaussianBlur(3)))["sharpness"] < clean["sharpness"] / 5
    assert measure(_noisy(photo, 15))["noise"] > clean["noise"] + 8
    dark = ImageEnhance.Brightness(photo).enhance(0.2)
    assert measure(dark)["exposure"] < clean["exposure"] * 0.4
    assert measure(dark)["clipped_shadows"] > clean["clipped_shadows"]
    bright = ImageEnhance.Brightness(photo).enhance(3.0)
    assert measure(bright)["clipped_highlights"] > 0.2
    assert measure(photo.convert("L").convert("RGB"))["colourfulness"] == pytest.approx(0, abs=1e-9)


def test_noise_estimate_recovers_known_sigma():
    flat = Image.new("RGB", (400, 300), (120, 120, 120))
    # Independent per-channel noise shrinks in luma by the norm of the Rec. 601 weights.
    luma_sigma = 8.0 * np.linalg.norm([0.299, 0.587, 0.114])
    assert measure(_noisy(flat, 8.0))["noise"] == pytest.approx(luma_sigma, rel=0.05)


def test_score_prefers_the_clean_photo(photo):
    degraded = [
        photo.filter(ImageFilter.GaussianBlur(4)),
        _noisy(photo, 25),
        ImageEnhance.Brightness(photo).enhance(0.15),
    ]
    output = TechnicalTeacher().score([photo, *degraded])
    assert np.all(output.scores[0] > output.scores[1:])
    assert set(output.extras) >= {"tech_sharpness", "tech_noise", "tech_megapixels"}
