"""The technical measures' integer sums (`technical.SUMS`), batched in torch on any device.

`technical.pixel_sums` computes them with OpenCV on one image; here the same integers come
from (N, 3, H, W) uint8 batches of one size, in int32/int64 arithmetic (exact on every
device), and `technical.measures_from_sums` turns them into the same measures. The working
pixels are Pillow's LANCZOS thumbnail, made bit for bit by `distill.resample`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill import resample
from teachers.technical import LUMA_SCALE, LUMA_WEIGHTS, SUMS, WORKING_SIDE


def working_pixels(rgb: torch.Tensor) -> torch.Tensor:
    """`technical.working_pixels` of a (N, 3, H, W) uint8 batch."""
    return resample.thumbnail(rgb, WORKING_SIDE, "lanczos")


def pixel_sums(rgb: torch.Tensor) -> torch.Tensor:
    """(N, len(SUMS)) int64: `technical.pixel_sums` of each image of a (N, 3, H, W) uint8
    batch at the working size."""
    channels = rgb.int()
    red, green, blue = channels[:, 0], channels[:, 1], channels[:, 2]
    luma = LUMA_WEIGHTS[0] * red + LUMA_WEIGHTS[1] * green + LUMA_WEIGHTS[2] * blue  # < 2^18
    rows, cols = luma.shape[-2:]
    # OpenCV's BORDER_REFLECT one pixel deep repeats the edge pixel: 'replicate'
    edged = F.pad(luma.unsqueeze(1).float(), (1, 1, 1, 1), mode="replicate").squeeze(1).int()
    centre = edged[:, 1:-1, 1:-1]
    laplacian = (edged[:, :-2, 1:-1] + edged[:, 2:, 1:-1] + edged[:, 1:-1, :-2]
                 + edged[:, 1:-1, 2:] - 4 * centre).long()
    if rows > 2 and cols > 2:
        # Immerkær's kernel over the interior only: [[1,-2,1],[-2,4,-2],[1,-2,1]]
        residual = (luma[:, :-2, :-2] + luma[:, :-2, 2:] + luma[:, 2:, :-2] + luma[:, 2:, 2:]
                    - 2 * (luma[:, :-2, 1:-1] + luma[:, 2:, 1:-1] + luma[:, 1:-1, :-2]
                           + luma[:, 1:-1, 2:]) + 4 * luma[:, 1:-1, 1:-1])
        noise_l1 = residual.long().abs().sum(dim=(-2, -1))
    else:
        noise_l1 = torch.zeros(len(rgb), dtype=torch.int64, device=rgb.device)

    def total(x):
        return x.long().sum(dim=(-2, -1))

    def squared_distance(a, b):
        return total((a - b) * (a - b))

    sums = {
        "red": total(red), "green": total(green), "blue": total(blue),
        "laplacian": laplacian.sum(dim=(-2, -1)),
        "laplacian_squares": (laplacian * laplacian).sum(dim=(-2, -1)),
        "noise_l1": noise_l1,
        "red_green": squared_distance(red, green),
        "red_blue": squared_distance(red, blue),
        "green_blue": squared_distance(green, blue),
        "highlights": total(luma >= 250 * LUMA_SCALE),
        "shadows": total(luma <= 5 * LUMA_SCALE),
    }
    return torch.stack([sums[name] for name in SUMS], dim=1)
