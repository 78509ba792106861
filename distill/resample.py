"""Pillow's 8-bit resampling, bit-exact, on torch tensors on any device.

The Pillow path defines the pixels every teacher sees: `decode` caps the long side with
`thumbnail(..., BICUBIC)`, the technical teacher works on a `thumbnail(..., LANCZOS)` copy.
A device path that decodes on a GPU must make the same pixels there. Pillow resamples 8-bit
images in integer arithmetic (`libImaging/Resample.c`): per output pixel, filter weights
computed in double, normalised, scaled to 22-bit fixed point and rounded; a horizontal pass,
then a vertical one, each summing pixel × weight in integers and rounding back to 8 bits.
Here the weights are computed the same way in Python (once per size pair), and each pass is a
float64 matrix product: every product and partial sum is an integer below 2^53, so it is
exact in any summation order, on any device, and equals Pillow's int32 sums.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import numpy as np
import PIL
import torch

PRECISION_BITS = 32 - 8 - 2  # Resample.c's fixed point for 8-bit images
_PILLOW_MAJOR = int(PIL.__version__.split(".")[0])


def _bicubic(x: float) -> float:
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


FILTERS: dict[str, tuple[Callable[[float], float], float]] = {
    "bicubic": (_bicubic, 2.0), "lanczos": (_lanczos, 3.0),
}


def _fixed_point(weight: float) -> int:
    """normalize_coeffs_8bpc: round half away from zero at 2^22 (C's int() truncates)."""
    scaled = weight * (1 << PRECISION_BITS)
    return int(-0.5 + scaled) if weight < 0 else int(0.5 + scaled)


@cache
def _weights(in_size: int, out_size: int, kind: str) -> np.ndarray:
    """(in_size, out_size) matrix of Pillow's fixed-point weights (precompute_coeffs over the
    whole image: box (0, in_size))."""
    function, support = FILTERS[kind]
    scale = filterscale = in_size / out_size
    filterscale = max(filterscale, 1.0)
    support = support * filterscale
    inverse = 1.0 / filterscale
    matrix = np.zeros((in_size, out_size), dtype=np.float64)
    for out in range(out_size):
        center = (out + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        weights = [function((x + lo - center + 0.5) * inverse) for x in range(hi - lo)]
        total = 0.0
        for weight in weights:  # left to right, as the C loop (not Python's sum)
            total += weight
        for x, weight in enumerate(weights):
            matrix[lo + x, out] = _fixed_point(weight / total if total != 0.0 else weight)
    return matrix


@cache
def _weights_on(in_size: int, out_size: int, kind: str, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(_weights(in_size, out_size, kind)).to(device)


def _pass(pixels: torch.Tensor, out_size: int, kind: str) -> torch.Tensor:
    """One axis (the last) of uint8 pixels resampled to out_size, as Pillow rounds it."""
    matrix = _weights_on(pixels.shape[-1], out_size, kind, pixels.device)
    sums = (pixels.double() @ matrix).to(torch.int64) + (1 << (PRECISION_BITS - 1))
    return (sums >> PRECISION_BITS).clamp_(0, 255).to(torch.uint8)


def _horizontal_first(in_size: tuple[int, int], out_size: tuple[int, int]) -> bool:
    """The order of Pillow's passes (ImagingResampleInner): since Pillow 13, vertical first
    when the height shrinks by more than twice as many pixels as the width; before, always
    horizontal first. Each pass rounds to 8 bits, so the order shows in the pixels."""
    if _PILLOW_MAJOR < 13:
        return True
    shrink_x, shrink_y = in_size[0] - out_size[0], in_size[1] - out_size[1]
    return not (shrink_y > 0 and shrink_y > shrink_x * 2)


def resize(pixels: torch.Tensor, size: tuple[int, int], kind: str) -> torch.Tensor:
    """Pillow's `Image.resize(size, BICUBIC | LANCZOS)` (no box, no reducing gap) of
    (..., H, W) uint8 pixels; `size` is (width, height), as Pillow's."""
    width, height = size

    def horizontal(x):
        return _pass(x, width, kind) if x.shape[-1] != width else x

    def vertical(x):
        return _pass(x.transpose(-2, -1), height, kind).transpose(-2, -1) \
            if x.shape[-2] != height else x

    if _horizontal_first((pixels.shape[-1], pixels.shape[-2]), size):
        return vertical(horizontal(pixels)).contiguous()
    return horizontal(vertical(pixels)).contiguous()


def thumbnail_size(size: tuple[int, int], side: int) -> tuple[int, int] | None:
    """The size `Image.thumbnail((side, side))` gives an image of `size`, or None where it
    leaves the image as it is (Pillow's preserve_aspect_ratio)."""
    width, height = size
    if side >= width and side >= height:
        return None
    aspect = width / height
    x = y = side
    if x / y >= aspect:
        x = _round_aspect(y * aspect, key=lambda n: abs(aspect - n / y))
    else:
        y = _round_aspect(x / aspect, key=lambda n: 0 if n == 0 else abs(aspect - x / n))
    return x, y


def _round_aspect(number: float, key) -> int:
    return max(min(math.floor(number), math.ceil(number), key=key), 1)


def thumbnail_reduces(size: tuple[int, int], target: tuple[int, int]) -> bool:
    """Whether Pillow's thumbnail (reducing_gap 2.0) would first `reduce` an image of `size`
    by an integer factor before resampling to `target`: `resize` above does not do that step."""
    return any(int(a / b / 2.0) > 1 for a, b in zip(size, target))


def thumbnail(pixels: torch.Tensor, side: int, kind: str) -> torch.Tensor:
    """Pillow's `thumbnail((side, side), BICUBIC | LANCZOS)` of (..., H, W) uint8 pixels where
    it needs no integer reduce first (see `thumbnail_reduces`; callers fall back to Pillow)."""
    target = thumbnail_size((pixels.shape[-1], pixels.shape[-2]), side)
    if target is None:
        return pixels
    if thumbnail_reduces((pixels.shape[-1], pixels.shape[-2]), target):
        raise ValueError(f"{pixels.shape[-1]}x{pixels.shape[-2]} to {target}: Pillow would "
                         "reduce first; use Pillow for it")
    return resize(pixels, target, kind)
