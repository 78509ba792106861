"""Decode stage on a torch device: JPEG bytes → RGB uint8 tensors where the teachers run.

`torchvision.io.decode_jpeg` decodes a batch of JPEGs on the given device: nvJPEG on CUDA,
libjpeg-turbo on a CPU (the same API, so this path is tested on CPUs). Everything else follows
`distill.decode`'s rules and messages: the header's pixel count, EXIF orientation, the size
checks, `draft_size` and the long-side cap. What the device path does not decode the way the
Pillow path would goes to `decode.decode_named` instead, one image at a time, and comes back
as the Pillow path's own image or error row: files that are not baseline 8-bit 3-channel
JPEGs (progressive, CMYK, greyscale, MPO, RAW, PNG, ...), files with anything after the end
marker or without one (truncated), files the device's decoder refuses, and sizes whose
Pillow thumbnail would first `reduce` by an integer factor (panorama strips).

What differs from the Pillow path, by design: a JPEG decodes at full size and is then
averaged over s x s blocks, where Pillow's draft mode asks libjpeg for a DCT-scaled 1/s
image. The sizes are the same; the pixels differ slightly (on the packaged photos at
1600-3300 px: mean |difference| 0.06-0.29 levels, 99th percentile <= 2 levels; scores within
0.36 for BRISQUE, 1.5 for PIQE, 0.0014 for technical; tests/test_decode_device.py). With
s = 1 (no draft reduction) libjpeg-turbo on a CPU gives Pillow's pixels exactly; nvJPEG's
IDCT and chroma upsampling are its own. The cap to max_side is Pillow's BICUBIC thumbnail
computed bit for bit (`distill.resample`). So labels decoded here are a different run
shape from the Pillow path's (`decode.jpeg_decoder`).
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from distill import resample
from distill.decode import (
    HEIF_EXTENSIONS,
    MAX_PIXELS,
    MIN_SIDE,
    ORIGINAL_SIZE_KEY,
    RAW_EXTENSIONS,
    Decoded,
    DecodeError,
    capture_time,
    check_min_side,
    check_pixels,
    check_thin,
    decode_named,
    oriented_size,
)

JPEG_START, JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"


@dataclass
class DeviceImage:
    """A decoded RGB image as a (3, H, W) uint8 tensor on a device; it quacks like the Pillow
    image where the teachers look (`size`, `mode`, `info`), and `to_pil` copies it to host."""

    pixels: torch.Tensor
    info: dict = field(default_factory=dict)
    mode: str = "RGB"

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[-1], self.pixels.shape[-2]

    @property
    def width(self) -> int:
        return self.pixels.shape[-1]

    @property
    def height(self) -> int:
        return self.pixels.shape[-2]

    def to_pil(self) -> Image.Image:
        image = Image.fromarray(self.pixels.permute(1, 2, 0).cpu().numpy(), "RGB")
        image.info.update(self.info)
        return image

    def convert(self, mode: str) -> Image.Image:
        return self.to_pil().convert(mode)


def as_pil(image) -> Image.Image:
    """A Pillow image of `image`, whichever of the two kinds it is."""
    return image.to_pil() if isinstance(image, DeviceImage) else image


@dataclass
class _Plan:
    """What to do with one JPEG the device decodes: its header's size, EXIF orientation,
    draft scale and final size."""

    index: int
    data: bytes
    sha1: str
    header: tuple[int, int]
    orientation: int | None
    taken_at: str | None
    scale: int
    target: tuple[int, int] | None  # the thumbnail's size, None = no cap needed


def draft_scale(size: tuple[int, int], draft_size: int | None) -> int:
    """The factor Pillow's JPEG `draft(mode, (d, d))` reduces by: the largest of 8, 4, 2, 1
    that the header's size holds at least d times per side."""
    if not draft_size:
        return 1
    fits = min(size[0] // draft_size, size[1] // draft_size)
    return next(s for s in (8, 4, 2, 1) if fits >= s or s == 1)


def _plan(index: int, data: bytes, name: str, *, draft_size, max_side, min_side,
          max_pixels) -> _Plan | None:
    """The plan for a JPEG the device decodes like Pillow would, None for the Pillow path;
    raises the Pillow path's DecodeError for a header it refuses."""
    if Path(name).suffix.lower() in RAW_EXTENSIONS | HEIF_EXTENSIONS:
        return None
    if not data.startswith(JPEG_START) or not data.endswith(JPEG_END):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            header = Image.open(io.BytesIO(data))
            if header.format != "JPEG" or header.mode != "RGB" or header.info.get(
                    "progressive") or getattr(header, "bits", 8) != 8 or len(header.layer) != 3:
                return None
            exif = header.getexif()
            orientation, taken_at = exif.get(0x0112, 1), capture_time(exif)
    except Exception:  # noqa: BLE001 - whatever Pillow says about it, it says on its own path
        return None
    check_pixels(*header.size, max_pixels)
    width, height = oriented_size(*header.size, orientation)
    check_min_side(width, height, min_side)
    scale = draft_scale(header.size, draft_size)
    drafted = oriented_size(-(-header.size[0] // scale), -(-header.size[1] // scale), orientation)
    target = resample.thumbnail_size(drafted, max_side) if max_side else None
    if target is not None:
        if resample.thumbnail_reduces(drafted, target):
            return None
        check_thin(width, height, target, max_side, min_side)
    return _Plan(index, data, hashlib.sha1(data).hexdigest(), header.size, orientation,
                 taken_at, scale, target)


def box_reduce(pixels: torch.Tensor, scale: int) -> torch.Tensor:
    """(C, H, W) uint8 averaged over scale x scale blocks (the last row and column of blocks
    over the pixels they have), rounded: about what libjpeg's 1/scale DCT scaling gives."""
    if scale == 1:
        return pixels
    channels, height, width = pixels.shape
    rows, cols = -(-height // scale), -(-width // scale)
    padded = torch.zeros((channels + 1, rows * scale, cols * scale), dtype=torch.int32,
                         device=pixels.device)
    padded[:channels, :height, :width] = pixels
    padded[channels, :height, :width] = 1  # how many pixels each block has
    sums = padded.reshape(channels + 1, rows, scale, cols, scale).sum(dim=(2, 4))
    counts = sums[channels:]
    return ((sums[:channels] + counts // 2) // counts).to(torch.uint8)


def orient(pixels: torch.Tensor, orientation: int | None) -> torch.Tensor:
    """Pillow's ImageOps.exif_transpose of (C, H, W) pixels."""
    if orientation in (5, 6, 7, 8):
        pixels = pixels.transpose(-2, -1)
    flips = {2: (-1,), 3: (-2, -1), 4: (-2,), 6: (-1,), 7: (-2, -1), 8: (-2,)}.get(orientation)
    return pixels.flip(flips) if flips else pixels


def _decode_on_device(plans: list[_Plan], device: torch.device) -> list[torch.Tensor | None]:
    """The plans' full-size RGB pixels, decoded in one batch call; where that fails, one by
    one, and None for each image the decoder refuses (it goes to the Pillow path)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not plans:
        return []
    encoded = [torch.frombuffer(bytearray(plan.data), dtype=torch.uint8) for plan in plans]
    try:
        decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        decoded = []
        for data in encoded:
            try:
                decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                decoded.append(None)
    return [pixels if pixels is not None and tuple(pixels.shape) == (3, plan.header[1],
                                                                     plan.header[0]) else None
            for plan, pixels in zip(plans, decoded)]


def _finish(plan: _Plan, pixels: torch.Tensor) -> Decoded:
    pixels = orient(box_reduce(pixels, plan.scale), plan.orientation)
    if plan.target is not None:
        pixels = resample.resize(pixels, plan.target, "bicubic")
    width, height = oriented_size(*plan.header, plan.orientation)
    notes = (f"exif orientation {plan.orientation} applied"
             if plan.orientation not in (1, None) else "")
    image = DeviceImage(pixels.contiguous(), {ORIGINAL_SIZE_KEY: (width, height)})
    return Decoded(image, width, height, plan.sha1, notes, plan.taken_at)


def decode_batch(items: list[tuple[bytes, str | os.PathLike]], device: str | torch.device, *,
                 draft_size: int | None = None, max_side: int | None = None,
                 min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS,
                 ) -> list[tuple[Decoded | None, str | None]]:
    """(decoded, None) or (None, the error row's reason) for each (bytes, file name), in order:
    JPEGs decoded on `device` in one call, everything else by `decode.decode_named`."""
    options = {"draft_size": draft_size, "max_side": max_side, "min_side": min_side,
               "max_pixels": max_pixels}
    results: list[tuple[Decoded | None, str | None]] = [(None, None)] * len(items)
    plans, on_host = [], []
    for index, (data, name) in enumerate(items):
        try:
            plan = _plan(index, data, str(name), **options)
        except DecodeError as exc:
            results[index] = (None, str(exc))
            continue
        (plans if plan else on_host).append(plan or index)
    for plan, pixels in zip(plans, _decode_on_device(plans, torch.device(device))):
        if pixels is None:
            on_host.append(plan.index)
        else:
            results[plan.index] = (_finish(plan, pixels), None)
    for index in sorted(on_host):
        data, name = items[index]
        try:
            results[index] = (decode_named(data, name, **options), None)
        except DecodeError as exc:
            results[index] = (None, str(exc))
    return results
