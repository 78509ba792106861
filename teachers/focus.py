"""Focus where it matters: how sharp the subject is, at the resolution the photo was decoded
at (its native resolution unless a JPEG was draft-decoded), on a scale that does not depend on
how much texture the scene has.

The measure is 1 − the blur effect of Crété-Roffet et al. (2007), `skimage.measure.blur_effect`:
the image is blurred once more (an 11-tap box filter along each axis) and the share of its
neighbour-to-neighbour variation that the extra blur removes is taken. A sharp edge loses most
of it, an edge that was already soft loses little, and since it is a ratio of the image's own
variations, a busy scene and a plain one score alike when both are sharp. 1 is crisp, values
fall toward 0 with defocus (`benchmarks/burst_focus.py` has the figures).

Where it is taken: on the faces when a caller gives their boxes, else on the `TILES` most
detailed tiles of `TILE` px. Tiles are ranked by the gradient energy of a 4× smaller copy,
structure that survives a defocus, so every frame of a burst is measured on the same places
whichever frame is sharp. The median over the tiles is the photo's focus.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image
from skimage.measure import blur_effect

from distill.decode import ORIGINAL_SIZE_KEY

TILE = 96  # px at the decoded resolution: a few eyelashes, a few bricks
TILES = 8
RANKING_SCALE = 4  # tiles are ranked on a copy this many times smaller
BOX_FILTER = 11  # Crété-Roffet's re-blur, as skimage's default
MIN_SIDE = 16  # a region thinner than this has no measurable focus


def luma(image: Image.Image) -> np.ndarray:
    """Rec. 601 luma (Pillow's "L") as float32, 0–255."""
    return np.asarray(image if image.mode == "L" else image.convert("L"), dtype=np.float32)


def region_focus(pixels: np.ndarray) -> float:
    """1 − Crété-Roffet blur effect of a luma region; NaN where it is too small or flat."""
    if min(pixels.shape[:2]) < MIN_SIDE or float(pixels.max() - pixels.min()) < 1.0:
        return float("nan")
    return float(1.0 - blur_effect(pixels, h_size=BOX_FILTER))


def detailed_tiles(pixels: np.ndarray, tile: int = TILE, count: int = TILES) -> list[tuple]:
    """(top, left, bottom, right) of the `count` tiles with the most coarse structure."""
    rows, cols = pixels.shape
    if rows < tile or cols < tile:
        return [(0, 0, rows, cols)]
    small = cv2.resize(pixels, (cols // RANKING_SCALE, rows // RANKING_SCALE),
                       interpolation=cv2.INTER_AREA)
    energy = cv2.Sobel(small, cv2.CV_32F, 1, 0) ** 2 + cv2.Sobel(small, cv2.CV_32F, 0, 1) ** 2
    step = tile // RANKING_SCALE
    down, across = energy.shape[0] // step, energy.shape[1] // step
    per_tile = energy[:down * step, :across * step].reshape(down, step, across, step).mean((1, 3))
    best = np.argsort(per_tile.ravel(), kind="stable")[::-1][:count]
    return [(int(i // across) * tile, int(i % across) * tile,
             int(i // across + 1) * tile, int(i % across + 1) * tile) for i in best]


def focus(pixels: np.ndarray, regions: Sequence[tuple] | None = None) -> float:
    """Median focus over `regions` ((top, left, bottom, right) in pixels), else over the most
    detailed tiles; NaN when no region can be measured."""
    regions = regions if regions else detailed_tiles(pixels)
    values = [region_focus(pixels[top:bottom, left:right])
              for top, left, bottom, right in regions]
    values = [v for v in values if np.isfinite(v)]
    return float(np.median(values)) if values else float("nan")


def decoded_scale(image: Image.Image) -> float:
    """Decoded width / original width: 1.0 at native resolution, 0.5 for a half-size draft."""
    width, _ = image.info.get(ORIGINAL_SIZE_KEY, image.size)
    return image.width / width if width else 1.0


def measure_focus(image: Image.Image) -> dict[str, float]:
    """The photo's focus on its most detailed tiles, and the scale it was measured at."""
    return {"focus": round(focus(luma(image)), 4), "focus_scale": round(decoded_scale(image), 4)}
