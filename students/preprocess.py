"""How a photo becomes a student's input: one policy for training, inference and export.

The policy, recorded in `student.pt` and beside every exported model:

1. RGB, channel order R, G, B.
2. Resize so the *shorter* side is `resize_size` px, bilinear and antialiased: Pillow's
   BILINEAR filter with its downscale support, computed by torchvision's uint8 kernel (same
   result within 0.01 grey levels on average, ~3x faster than Pillow on this CPU); OpenCV's
   INTER_AREA is the closest match. Quality cues (blur, noise, JPEG blocks) live in high
   frequencies, so an aliasing resize (cv2 INTER_LINEAR on a large downscale) shows the
   student a different image from the one it learned on.
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

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 0.93  # image_size / resize_size: a mild crop, 224 out of 240


def default_resize_size(image_size: int) -> int:
    return round(image_size / CROP_FRACTION)


def policy(image_size: int = 224, resize_size: int | None = None) -> dict:
    """The preprocessing record stored in student.pt and written beside exported models."""
    resize_size = resize_size or default_resize_size(image_size)
    return {
        "image_size": image_size,
        "resize_size": resize_size,
        "resize": "shorter_side_then_center_crop",
        "interpolation": "bilinear, antialiased (Pillow); cv2.INTER_AREA when downscaling",
        "channel_order": "RGB",
        "layout": "NCHW",
        "dtype": "float32",
        "input_range": [0.0, 1.0],
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "normalization": "inside the model: feed RGB / 255, do not subtract mean or divide by std",
    }


def resize_shorter(image: Image.Image | np.ndarray, size: int) -> np.ndarray:
    """An RGB photo → HWC uint8 pixels whose shorter side is `size` (antialiased bilinear)."""
    from torchvision.transforms.v2.functional import resize

    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    scale = size / min(width, height)
    target = [max(size, round(height * scale)), max(size, round(width * scale))]
    if target == [height, width]:
        return pixels
    # a CHW view of HWC memory is what torchvision's fast uint8 antialias path expects
    chw = torch.from_numpy(np.require(pixels, requirements="W")).permute(2, 0, 1)
    return resize(chw, target, antialias=True).permute(1, 2, 0).numpy()


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
    resized = resize_shorter(rgb, preprocessing["resize_size"])
    left, top, right, bottom = crop_box(resized.shape[1], resized.shape[0],
                                        preprocessing["image_size"])
    return resized[top:bottom, left:right]


def batch(images: list[Image.Image], preprocessing: dict) -> torch.Tensor:
    """Photos → (N, 3, S, S) float32 in [0, 1], contiguous."""
    pixels = np.stack([prepare(image, preprocessing) for image in images])
    # numpy's cast-while-transposing is ~4x faster here than torch's permute + float + copy
    floats = pixels.transpose(0, 3, 1, 2).astype(np.float32)
    return torch.from_numpy(np.multiply(floats, np.float32(1 / 255), out=floats))
