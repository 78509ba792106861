"""How a photo becomes a student's input: one policy for training, inference and export.

The policy, recorded in `student.pt` and beside every exported model:

1. RGB, channel order R, G, B.
2. Resize, one of two ways (`resize_mode`):
   - `teacher_scale` (the default): shrink so the *longer* side is at most `resize_size`
     px, the long side the teachers labeled at (`decode.max_side` of the labeling run,
     768 by default), bicubic and antialiased as the labeler's decode is; smaller photos
     keep their pixels. The student then sees the very pixels the teachers scored. Quality
     cues (blur, noise, JPEG blocks) live in high frequencies that a further downscale
     erases: the teachers themselves agree with their own labels at SRCC 0.98 on a centre
     crop at their scale, and at 0.87 on a 224 crop of the photo shrunk to 241 px.
   - `shorter`: the ImageNet habit, shorter side to `resize_size` (224 / 0.93), bilinear
     and antialiased. Kept for students whose pretrained features expect whole scenes.
   Both are computed by torchvision's uint8 antialias kernels (Pillow's filters to within
   0.01 grey levels on average, ~3x faster on this CPU); OpenCV's INTER_AREA is the closest
   match. An aliasing resize (cv2 INTER_LINEAR on a large downscale) shows the student a
   different image from the one it learned on.
3. Crop `image_size` x `image_size`: the centre at inference, a random position (+ optional
   horizontal flip) in training. No rescale jitter: sharpness and noise are scale-dependent,
   so zooming would change the very thing being scored.
4. float32 in [0, 1], NCHW. The ImageNet mean/std normalisation happens *inside* the model,
   so every runtime feeds the same [0, 1] tensor (OpenCV:
   `cv2.dnn.blobFromImage(rgb_crop, 1 / 255)`).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from distill.errors import DistillError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 0.93  # `shorter` mode's image_size / resize_size: a mild crop, 224 of 240
TEACHER_SIDE = 768  # `teacher_scale` mode's default: the labeler's default decode.max_side
RESIZE_MODES = {  # resize_mode → the record's description of it
    "teacher_scale": "longer_side_at_most_then_center_crop",
    "shorter": "shorter_side_then_center_crop",
}
INTERPOLATION = {"teacher_scale": "bicubic", "shorter": "bilinear"}
MAX_SIDE = 8192  # a student's input or resize side above this is not a photo policy


def default_resize_size(image_size: int, resize_mode: str) -> int:
    return TEACHER_SIDE if resize_mode == "teacher_scale" else round(image_size / CROP_FRACTION)


def policy(image_size: int = 224, resize_size: int | None = None,
           resize_mode: str = "teacher_scale") -> dict:
    """The preprocessing record stored in student.pt and written beside exported models."""
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}, "
                         f"got {resize_mode!r}")
    resize_size = resize_size or default_resize_size(image_size, resize_mode)
    return {
        "image_size": image_size,
        "resize_size": resize_size,
        "resize": RESIZE_MODES[resize_mode],
        "interpolation": f"{INTERPOLATION[resize_mode]}, antialiased (Pillow); "
                         "cv2.INTER_AREA when downscaling",
        "channel_order": "RGB",
        "layout": "NCHW",
        "dtype": "float32",
        "input_range": [0.0, 1.0],
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "normalization": "inside the model: feed RGB / 255, do not subtract mean or divide by std",
    }


class PolicyError(DistillError, ValueError):
    """A preprocessing record this version cannot follow: one line for the user."""


def check_policy(preprocessing: dict) -> None:
    """Refuse a record (from a file: student.pt, ONNX metadata) this module cannot follow:
    a missing, empty, non-integer or absurd size would fail deep inside a resize, or ask for
    gigabytes per image."""
    if not isinstance(preprocessing, dict):
        raise PolicyError(f"preprocessing must be a mapping, got {type(preprocessing).__name__}")
    for key in ("image_size", "resize_size"):
        value = preprocessing.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIDE:
            raise PolicyError(f"preprocessing.{key} must be an integer in 1..{MAX_SIDE}, "
                              f"got {value!r}")
    if preprocessing.get("resize") not in RESIZE_MODES.values():
        raise PolicyError(f"preprocessing.resize {preprocessing.get('resize')!r} is not one of "
                          "this version's resize modes")


def resize_for(image: Image.Image | np.ndarray, preprocessing: dict) -> np.ndarray:
    """An RGB photo → HWC uint8 pixels at the policy's scale, at least image_size per side."""
    from torchvision.transforms.v2.functional import InterpolationMode, resize

    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    size, crop = preprocessing["resize_size"], preprocessing["image_size"]
    if preprocessing["resize"] == RESIZE_MODES["shorter"]:
        scale, mode = size / min(width, height), InterpolationMode.BILINEAR
    else:  # never enlarge, except a photo too small for the crop
        scale = max(min(1.0, size / max(width, height)), crop / min(width, height))
        mode = InterpolationMode.BICUBIC
    target = [max(crop, round(height * scale)), max(crop, round(width * scale))]
    if target == [height, width]:
        return pixels
    # a CHW view of HWC memory is what torchvision's fast uint8 antialias path expects
    chw = torch.from_numpy(np.require(pixels, requirements="W")).permute(2, 0, 1)
    return resize(chw, target, interpolation=mode, antialias=True).permute(1, 2, 0).numpy()


def crop_box(width: int, height: int, size: int, rng: np.random.Generator | None = None):
    """Centre crop, or a uniformly random one when an rng is given."""
    if rng is None:
        left, top = (width - size) // 2, (height - size) // 2
    else:
        left = int(rng.integers(0, width - size + 1))
        top = int(rng.integers(0, height - size + 1))
    return left, top, left + size, top + size


def prepare(image: Image.Image, preprocessing: dict) -> np.ndarray:
    """One photo → the (S, S, 3) uint8 RGB crop the student sees at inference."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    resized = resize_for(rgb, preprocessing)
    left, top, right, bottom = crop_box(resized.shape[1], resized.shape[0],
                                        preprocessing["image_size"])
    return resized[top:bottom, left:right]


def batch(images: list[Image.Image], preprocessing: dict) -> torch.Tensor:
    """Photos → (N, 3, S, S) float32 in [0, 1], contiguous."""
    check_policy(preprocessing)  # whatever file it came from, before any pixel is resized
    pixels = np.stack([prepare(image, preprocessing) for image in images])
    # numpy's cast-while-transposing is ~4x faster here than torch's permute + float + copy
    floats = pixels.transpose(0, 3, 1, 2).astype(np.float32)
    return torch.from_numpy(np.multiply(floats, np.float32(1 / 255), out=floats))
