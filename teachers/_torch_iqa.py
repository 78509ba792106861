"""BRISQUE and PIQE with the fast path's arithmetic, batched in torch on any device.

`teachers._fast_iqa` is pyiqa's arithmetic in numpy/OpenCV, one image at a time; this is the
same arithmetic on N same-size images stacked in one (N, 3, H, W) uint8 tensor, so that a CUDA
device scores a batch in one pass. It is written so that a CPU and a CUDA device compute the
same bits wherever the score is sensitive to them:

- the 7x7 Gaussian of the MSCN coefficients is what torch's CPU `conv2d` computes in pyiqa's
  own modules: a float32 fused multiply-add chain over the taps in row-major order, each step
  rounded once (OpenCV's `filter2D` too, but for the last width % 8 columns, where its scalar
  tail rounds the products separately). Here each step is one `addcmul_` of a float32
  accumulator with a float64 tap: the product of a float32 tap and a float32 pixel is exact
  in float64, so the step is the exact sum rounded to float64 and then to float32, the same
  on every device (tested: bit for bit pyiqa's `normalize_img_with_gauss`). A device's own
  convolution (cuDNN, TF32, FFT or Winograd algorithms) rounds differently, and BRISQUE
  cannot afford it: the signs of the MSCN values that are pure rounding residue (flat areas,
  linear ramps) feed its AGGD fits; a float64 convolution moves ResultsCalibra I08 from 5.14
  to 5.91, products rounded before the sum move I06 from 1.08 to 0.97;
- every other float32 step is one IEEE operation per kernel (multiply, then add; never a
  fused `alpha=` form, which a CUDA compiler may turn into an FMA), so it rounds alike;
- the image statistics are summed in float64 (the fast path sums some in float32), and the
  AGGD / GGD fits search pyiqa's grid (`_fast_iqa.GAMMA`) with `argmin`, as numpy does.

So the scores equal the fast path's to float64 summation order, except where a sum lands on
a midpoint of the fits' grid; tests/test_torch_teachers.py states the tolerance.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F

from teachers import _fast_iqa

_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))  # pyiqa's torch.roll shifts, (rows, cols)
GGD_UNDEFINED = "Expected image with non zero variance of pixel values"
AGGD_UNDEFINED = ("AGGD fit undefined: the image is flat (no positive or no negative "
                  "neighbour products)")
PIQE_UNDEFINED = "PIQE is undefined on an all-black image (pyiqa returns NaN)"


@cache
def _constants(device: torch.device) -> dict[str, torch.Tensor]:
    """Tables the fast path uses, as tensors on `device` (made once per device)."""
    return {
        "y_luts": torch.from_numpy(np.stack(_fast_iqa._Y_LUTS)).to(device),
        "taps": torch.from_numpy(_fast_iqa._GAUSS.astype(np.float64)).to(device),
        "gamma": torch.from_numpy(_fast_iqa.GAMMA).to(device),
        "ggd": torch.from_numpy(_fast_iqa.GGD_TABLE).to(device),
        "aggd": torch.from_numpy(_fast_iqa.AGGD_TABLE).to(device),
    }


def y_channel(rgb: torch.Tensor) -> torch.Tensor:
    """(N, H, W) float32 Y of YIQ in [0, 1] from (N, 3, H, W) uint8, bit-identical to
    `_fast_iqa.y_channel` (and so to pyiqa's rgb2yiq on to_tensor): the same float32 table
    per channel, summed left to right."""
    luts = _constants(rgb.device)["y_luts"]
    index = rgb.int()
    return (luts[0][index[:, 0]] + luts[1][index[:, 1]]) + luts[2][index[:, 2]]


def gauss_filter(plane: torch.Tensor, border: str) -> torch.Tensor:
    """pyiqa's imfilter(plane, its 7x7 taps) of (N, H, W) float32 planes as torch's CPU conv2d
    computes it: 'same' pads zeros, 'replicate' repeats the edge. The row-major chain of float32
    multiply-adds, each step one addcmul_ computed in float64 (see the module's docstring)."""
    height, width = plane.shape[-2:]
    mode = {"same": "constant", "replicate": "replicate"}[border]
    padded = F.pad(plane.unsqueeze(1), (3, 3, 3, 3), mode=mode).squeeze(1)
    taps = _constants(plane.device)["taps"]
    acc = torch.zeros_like(plane)
    for row in range(7):
        for col in range(7):
            acc.addcmul_(padded[:, row:row + height, col:col + width], taps[row, col].view(1, 1, 1))
    return acc


def mscn(plane: torch.Tensor, border: str) -> torch.Tensor:
    """`_fast_iqa.mscn` of (N, H, W) float32 planes, in float32."""
    mu = gauss_filter(plane, border)
    sigma = gauss_filter(plane * plane, border)
    sigma = torch.sqrt((sigma - mu * mu).abs() + _fast_iqa._EPS32) + 1.0
    return (plane - mu) / sigma


def _grid_argmin(table: torch.Tensor, gamma: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """pyiqa's grid search for each value (any shape), as `_fast_iqa._grid_argmin`."""
    return gamma[(table - value.unsqueeze(-1)).abs().argmin(dim=-1)]


def ggd_fit(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`_fast_iqa.ggd_fit` of each (H, W) plane of (N, H, W): (shape, sigma, defined)."""
    constants = _constants(x.device)
    x64 = x.double()
    count = x.shape[-1] * x.shape[-2]
    sigma_sq = (x64 * x64).sum(dim=(-2, -1)) / count
    mean_abs = x64.abs().sum(dim=(-2, -1)) / count
    defined = sigma_sq.sqrt() > 1e-8
    shape = _grid_argmin(constants["ggd"], constants["gamma"], sigma_sq / mean_abs**2)
    return shape, sigma_sq.sqrt(), defined


def aggd_fit(p: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """`_fast_iqa.aggd_fit` of each (H, W) plane of (..., H, W): (alpha, left std, right
    std, defined)."""
    constants = _constants(p.device)
    p64 = p.double()
    count = p.shape[-1] * p.shape[-2]
    negative = p64 < 0
    squares = p64 * p64
    count_left = negative.sum(dim=(-2, -1))
    count_right = (p64 > 0).sum(dim=(-2, -1))
    sum_sq = squares.sum(dim=(-2, -1))
    sum_left_sq = torch.where(negative, squares, 0.0).sum(dim=(-2, -1))
    sum_abs = p64.abs().sum(dim=(-2, -1))
    left_std = torch.sqrt(sum_left_sq / count_left)  # 0/0 = NaN, like the fast path's nan
    right_std = torch.sqrt((sum_sq - sum_left_sq) / count_right)
    gammahat = left_std / right_std
    rhat = (sum_abs / count) ** 2 / (sum_sq / count)
    rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
    defined = torch.isfinite(rhatnorm)
    alpha = _grid_argmin(constants["aggd"], constants["gamma"], rhatnorm.nan_to_num(0.0))
    return alpha, left_std, right_std, defined


def nss_features(luma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`_fast_iqa.nss_features` of (N, H, W) float32 luma: (N, 18) float64 features, and
    whether the GGD and the AGGD fits were defined for each image."""
    n = mscn(luma, "same")
    shape, sigma, ggd_defined = ggd_fit(n)
    products = torch.stack([n * torch.roll(n, shift, dims=(-2, -1)) for shift in _SHIFTS], 1)
    alpha, sigma_l, sigma_r, aggd_defined = aggd_fit(products)  # (N, 4) each
    eta = (sigma_r - sigma_l) * torch.exp(
        torch.lgamma(2.0 / alpha) - (torch.lgamma(1.0 / alpha) + torch.lgamma(3.0 / alpha)) / 2)
    per_shift = torch.stack((alpha, eta, sigma_l**2, sigma_r**2), dim=-1).flatten(1)
    features = torch.cat((torch.stack((shape, sigma**2), dim=-1), per_shift), dim=-1)
    return features, ggd_defined, aggd_defined.all(dim=-1)


@cache
def _resize_plan(length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """pyiqa's half-size resize of one axis as (K, size, 1) float32 weights and (K, size)
    row indices into the unpadded axis (MATLAB's reflect padding folded into the indices)."""
    weight, base, pad_pre, pad_post = _fast_iqa._resize_plan(length, 0.5)
    padded_index = np.pad(np.arange(length), (pad_pre, pad_post), mode="symmetric")
    rows = np.stack([padded_index[base + k] for k in range(weight.shape[0])])
    return (torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)).unsqueeze(-1).to(device),
            torch.from_numpy(rows).to(device))


def _resize_rows(x: torch.Tensor) -> torch.Tensor:
    weight, rows = _resize_plan(x.shape[-2], x.device)
    out = torch.zeros((x.shape[0], rows.shape[1], x.shape[-1]), dtype=x.dtype, device=x.device)
    for k in range(weight.shape[0]):
        out += x.index_select(-2, rows[k]) * weight[k]  # a float32 multiply, then an add
    return out


def imresize_half(x: torch.Tensor) -> torch.Tensor:
    """`_fast_iqa.imresize_half` (= pyiqa's imresize(scale=0.5, antialiasing=True)) of
    (N, H, W) float32 planes: rows, then columns."""
    return _resize_rows(_resize_rows(x).transpose(-2, -1)).transpose(-2, -1).contiguous()


class BrisqueBatch:
    """`_fast_iqa.BrisqueModel` on (N, 3, H, W) uint8 batches on the SVR's device."""

    def __init__(self, sv_coef: torch.Tensor, sv: torch.Tensor, gamma: float, rho: float,
                 device: torch.device):
        self.sv_t = sv.double().t().contiguous().to(device)
        self.sv_coef = sv_coef.double().to(device)
        self.gamma, self.rho = gamma, rho

    def features(self, rgb: torch.Tensor) -> tuple[torch.Tensor, list[str | None]]:
        luma = torch.round(y_channel(rgb) * 255.0)
        first, *defined_first = nss_features(luma)
        second, *defined_second = nss_features(imresize_half(luma))
        checks = [(defined_first[0], GGD_UNDEFINED), (defined_first[1], AGGD_UNDEFINED),
                  (defined_second[0], GGD_UNDEFINED), (defined_second[1], AGGD_UNDEFINED)]
        features = torch.cat((first, second), dim=-1).float().double()  # the fast path's float32
        return features, _first_failures(checks, len(rgb))

    def score(self, rgb: torch.Tensor) -> tuple[np.ndarray, list[str | None]]:
        """(N,) float64 scores (NaN where undefined) and each image's reason, or None."""
        from pyiqa.archs.brisque_arch import rbf_kernel, scale_features

        features, reasons = self.features(rgb)
        kernel = rbf_kernel(scale_features(features), self.sv_t, gamma=self.gamma)
        scores = (kernel.double() @ self.sv_coef).reshape(-1) - self.rho
        scores = scores.cpu().numpy()
        scores[[reason is not None for reason in reasons]] = np.nan
        return scores, reasons


def _first_failures(checks: list[tuple[torch.Tensor, str]], count: int) -> list[str | None]:
    """Per image, the message of the first check it fails (the fast path raises at the first
    fit that is undefined), else None. One transfer for all the checks."""
    passed = torch.stack([defined for defined, _ in checks]).cpu().numpy()
    reasons: list[str | None] = [None] * count
    for row, (_, message) in zip(passed, checks):
        for image in np.flatnonzero(~row):
            reasons[image] = reasons[image] or message
    return reasons


def _symmetric_pad_bottom_right(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """numpy's np.pad(mode='symmetric') after the last row and column of (N, H, W)."""
    height, width = x.shape[-2:]
    row_index = torch.from_numpy(np.pad(np.arange(height), (0, rows), mode="symmetric"))
    col_index = torch.from_numpy(np.pad(np.arange(width), (0, cols), mode="symmetric"))
    return x.index_select(-2, row_index.to(x.device)).index_select(-1, col_index.to(x.device))


def _std(x: torch.Tensor, dim) -> torch.Tensor:
    """Sample standard deviation (ddof 1) in two passes, as numpy's x.std(ddof=1)."""
    count = math.prod(x.shape[d] for d in ((dim,) if isinstance(dim, int) else dim))
    deviation = x - x.mean(dim=dim, keepdim=True)
    return torch.sqrt((deviation * deviation).sum(dim=dim) / (count - 1))


def piqe(rgb: torch.Tensor, block_size: int = 16, activity_threshold: float = 0.1,
         block_impaired_threshold: float = 0.1, window_size: int = 6,
         ) -> tuple[np.ndarray, list[str | None]]:
    """`_fast_iqa.piqe` of (N, 3, H, W) uint8: (N,) scores (NaN where undefined) and each
    image's reason, or None."""
    y = y_channel(rgb)
    peak = y.flatten(1).amax(dim=1)
    dark = peak <= 0
    img = torch.round((y / torch.where(dark, 1.0, peak).view(-1, 1, 1)) * 255.0)
    height, width = img.shape[-2:]
    col_pad, row_pad = width % block_size, height % block_size
    if col_pad or row_pad:
        img = _symmetric_pad_bottom_right(img, row_pad, col_pad)
    norm = mscn(img, "replicate").double()
    rows, cols = norm.shape[-2] // block_size, norm.shape[-1] // block_size
    blocks = (norm[:, : rows * block_size, : cols * block_size]
              .reshape(len(norm), rows, block_size, cols, block_size).transpose(2, 3)
              .reshape(len(norm), rows * cols, block_size, block_size))
    block_var = _std(blocks, (-2, -1)) ** 2
    active = block_var > activity_threshold

    # noise criterion, with the fast path's (and pyiqa's) centre columns and surround
    center1 = block_size // 2
    keep = [c for c in range(block_size) if c != center1 - 1]
    keep = keep[:center1] + keep[center1 + 1:]
    center_std = _std(blocks[..., [center1 - 1, center1]], (-2, -1))
    surround_std = _std(blocks[..., keep], (-2, -1))
    cen_sur = torch.nan_to_num(center_std / surround_std)
    block_sigma = torch.sqrt(block_var)
    beta = (block_sigma - cen_sur).abs() / torch.maximum(block_sigma, cen_sur)
    noise = block_sigma > 2 * beta

    edges = torch.stack((blocks[..., 0, :], blocks[..., :, -1], blocks[..., -1, :],
                         blocks[..., :, 0]), dim=2)
    segments = edges.unfold(-1, window_size, 1)
    impaired = (_std(segments, -1) < block_impaired_threshold).flatten(2).any(dim=-1)

    scores = active * impaired * (1 - block_var) + active * noise * block_var
    result = (scores.sum(dim=1) + 1) / (1 + active.sum(dim=1)) * 100
    result = torch.where(dark, torch.nan, result).cpu().numpy()
    return result, [PIQE_UNDEFINED if undefined else None for undefined in dark.cpu().tolist()]
