"""The student's preprocessing: both resize modes, against Pillow's own filters."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from students import preprocess


@pytest.fixture(scope="module")
def photo(skimage_photos) -> Image.Image:
    return Image.open(skimage_photos["coffee"]).convert("RGB")  # 600 x 400


def mean_abs_diff(ours: np.ndarray, pillow: Image.Image) -> float:
    return float(np.abs(ours.astype(np.float64) - np.asarray(pillow, np.float64)).mean())


def test_teacher_scale_keeps_the_pixels_the_teachers_saw(photo):
    policy = preprocess.policy(224)  # teacher_scale, longer side at most 768
    assert policy["resize_size"] == 768
    same = preprocess.resize_for(photo, policy)
    assert np.array_equal(same, np.asarray(photo))  # 600 px: never enlarged, never filtered
    crop = preprocess.prepare(photo, policy)
    assert np.array_equal(crop, np.asarray(photo)[88:312, 188:412])  # the centre, 1:1


def test_teacher_scale_shrinks_a_large_photo_like_pillow_bicubic(photo):
    policy = preprocess.policy(96, 300)
    shrunk = preprocess.resize_for(photo, policy)
    assert shrunk.shape == (200, 300, 3)
    pillow = photo.resize((300, 200), Image.Resampling.BICUBIC)
    assert mean_abs_diff(shrunk, pillow) < 0.05


def test_teacher_scale_enlarges_only_a_photo_too_small_for_the_crop(photo):
    small = photo.resize((150, 100))
    enlarged = preprocess.resize_for(small, preprocess.policy(128))
    assert enlarged.shape == (128, 192, 3)


def test_shorter_mode_is_the_imagenet_habit(photo):
    policy = preprocess.policy(224, resize_mode="shorter")
    assert policy["resize_size"] == 241 and policy["resize"] == "shorter_side_then_center_crop"
    resized = preprocess.resize_for(photo, policy)
    assert resized.shape == (241, 362, 3)
    pillow = photo.resize((362, 241), Image.Resampling.BILINEAR)
    assert mean_abs_diff(resized, pillow) < 0.05


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="resize_mode must be one of teacher_scale, shorter"):
        preprocess.policy(224, resize_mode="zoom")
