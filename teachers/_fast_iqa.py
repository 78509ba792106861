"""BRISQUE and PIQE features with pyiqa's arithmetic, computed in numpy and OpenCV.

pyiqa (0.1.16, `pyiqa.archs.brisque_arch`, `pyiqa.archs.piqe_arch`) is the reference: every
step below is the same formula on the same pixels, only computed differently:

- the 7x7 Gaussian of `normalize_img_with_gauss` runs in `cv2.filter2D` with pyiqa's own
  float32 taps and the same border (zeros for BRISQUE's 'same', edge replication for PIQE's
  'replicate'); pyiqa runs torch's `conv2d`. It is deliberately not separable: see `gauss_2d`;
- MATLAB-style `imresize(scale=0.5, antialiasing=True)` uses pyiqa's own weights and sample
  positions (`pyiqa.matlab_utils.resize.get_weight`), applied as a weighted sum of shifted
  slices on the MATLAB-reflect-padded image instead of `unfold`;
- the AGGD / GGD fits keep pyiqa's grid search exactly: the answer is the argmin over the same
  float32 table of 9,801 gamma values (computed once, by pyiqa's formula, in torch float32);
  what was slow is not the search but the ~10 full-image passes per call, here 4 fused-ish
  numpy passes over the pairwise products;
- the SVR is pyiqa's own code (see `BrisqueModel`).

Scores agree with pyiqa's to float32 rounding except where a float32 difference moves a
statistic across one of the grid's midpoints (BRISQUE: alpha moves by 0.001) or one of
PIQE's block thresholds; `tests/test_fast_teachers.py` states and checks the tolerance.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

_EPS32 = float(np.finfo(np.float32).eps)
_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))  # pyiqa's torch.roll shifts, (rows, cols)


def _gamma_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pyiqa's search grids and ratio tables, built by pyiqa's own formula in float32."""
    gam = torch.arange(0.2, 10 + 0.001, 0.001, dtype=torch.float32)
    ggd = (torch.lgamma(1.0 / gam) + torch.lgamma(3.0 / gam) - 2 * torch.lgamma(2.0 / gam)).exp()
    aggd = (2 * torch.lgamma(2.0 / gam) - (torch.lgamma(1.0 / gam) + torch.lgamma(3.0 / gam))).exp()
    return gam.numpy().astype(np.float64), ggd.numpy().astype(np.float64), aggd.numpy().astype(np.float64)


GAMMA, GGD_TABLE, AGGD_TABLE = _gamma_tables()


def gauss_2d(size: int = 7, sigma: float = 7.0 / 6) -> np.ndarray:
    """pyiqa's fspecial(size, sigma) taps, float32 as pyiqa uses them.

    The taps must be these float32 values (they sum to 1 + 1.1e-8), applied as one 2-D
    sum: ~30 % of a photo with flat areas (ResultsCalibra I19) has MSCN values that are pure
    float32 rounding residue, and their signs feed the AGGD fits. A separable version of the
    same Gaussian (float32 or float64) moves BRISQUE on I19 by 0.7 to 6 points; this one
    matches pyiqa's conv2d to 2.4e-7.
    """
    from pyiqa.matlab_utils import fspecial

    return fspecial(size, sigma, 1)[0, 0].numpy().astype(np.float32)


_GAUSS = gauss_2d()


_LEVELS = np.arange(256, dtype=np.float32) / np.float32(255)  # torchvision's to_tensor
_Y_LUTS = [_LEVELS * np.float32(w) for w in (0.299, 0.587, 0.114)]  # rgb2yiq's first row


def y_channel(rgb: np.ndarray) -> np.ndarray:
    """Y of YIQ from (H, W, 3) uint8 RGB in [0, 1], bit-identical to pyiqa's rgb2yiq on
    to_tensor(image): float32 products of the scaled levels, summed left to right."""
    red, green, blue = cv2.split(np.ascontiguousarray(rgb, dtype=np.uint8))
    luts = _Y_LUTS
    return (cv2.LUT(red, luts[0]) + cv2.LUT(green, luts[1])) + cv2.LUT(blue, luts[2])


def mscn(image: np.ndarray, border: str) -> np.ndarray:
    """pyiqa's normalize_img_with_gauss(image, 7, 7/6, C=1, padding=border) for a 2-D plane,
    in float32 like pyiqa ('same' pads zeros, 'replicate' repeats the edge)."""
    border_type = {"same": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE}[border]
    img = np.ascontiguousarray(image, dtype=np.float32)
    mu = cv2.filter2D(img, cv2.CV_32F, _GAUSS, borderType=border_type)
    sigma = cv2.filter2D(img * img, cv2.CV_32F, _GAUSS, borderType=border_type)
    mu_sq = mu * mu
    np.subtract(sigma, mu_sq, out=sigma)
    np.abs(sigma, out=sigma)
    sigma += np.float32(_EPS32)
    np.sqrt(sigma, out=sigma)
    sigma += np.float32(1.0)
    np.subtract(img, mu, out=mu)
    np.divide(mu, sigma, out=mu)
    return mu


def _grid_argmin(table: np.ndarray, value: float) -> float:
    return float(GAMMA[int(np.argmin(np.abs(table - value)))])


def ggd_fit(x: np.ndarray) -> tuple[float, float]:
    """pyiqa's estimate_ggd_param: (shape, sigma)."""
    flat = x.ravel()
    sigma_sq = float(np.dot(flat, flat)) / flat.size
    if math.sqrt(sigma_sq) <= 1e-8:  # pyiqa asserts the same (torch.isclose to 0)
        raise ValueError("Expected image with non zero variance of pixel values")
    mean_abs = float(np.abs(flat).sum(dtype=np.float64)) / flat.size
    return _grid_argmin(GGD_TABLE, sigma_sq / mean_abs**2), math.sqrt(sigma_sq)


def aggd_fit(p: np.ndarray) -> tuple[float, float, float]:
    """pyiqa's estimate_aggd_param(return_sigma=True): (alpha, left std, right std)."""
    flat = p.ravel()
    left = np.minimum(flat, 0)
    count_left = np.count_nonzero(left)
    count_right = np.count_nonzero(flat > 0)
    sum_left_sq = float(np.dot(left, left))
    sum_sq = float(np.dot(flat, flat))
    sum_right_sq = sum_sq - sum_left_sq
    total = float(flat.sum(dtype=np.float64))
    sum_abs = total - 2.0 * float(left.sum(dtype=np.float64))
    left_std = math.sqrt(sum_left_sq / count_left) if count_left else math.nan
    right_std = math.sqrt(sum_right_sq / count_right) if count_right else math.nan
    gammahat = left_std / right_std
    rhat = (sum_abs / flat.size) ** 2 / (sum_sq / flat.size)
    rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
    if not math.isfinite(rhatnorm):
        raise ValueError("AGGD fit undefined: the image is flat (no positive or no negative "
                         "neighbour products)")
    return _grid_argmin(AGGD_TABLE, rhatnorm), left_std, right_std


def _shifted_product(n: np.ndarray, shift: tuple[int, int]) -> np.ndarray:
    return n * np.roll(n, shift, axis=(0, 1))


def nss_features(luma: np.ndarray) -> list[float]:
    """pyiqa's natural_scene_statistics(luma, 7, 7/6): 18 features of one scale."""
    n = mscn(luma, "same")
    alpha, sigma = ggd_fit(n)
    features = [alpha, sigma**2]
    for shift in _SHIFTS:
        alpha, sigma_l, sigma_r = aggd_fit(_shifted_product(n, shift))
        eta = (sigma_r - sigma_l) * math.exp(
            math.lgamma(2.0 / alpha) - (math.lgamma(1.0 / alpha) + math.lgamma(3.0 / alpha)) / 2
        )
        features.extend((alpha, eta, sigma_l**2, sigma_r**2))
    return features


def _resize_plan(length: int, scale: float) -> tuple[np.ndarray, np.ndarray, int, int]:
    """pyiqa resize_1d's weights (K, size), sample bases (size,), pads, for cubic+antialias."""
    from pyiqa.matlab_utils.resize import get_padding, get_weight

    size = math.ceil(length * scale)
    kernel_size = 4
    antialiasing_factor = 1
    if scale < 1:
        antialiasing_factor = scale
        kernel_size = math.ceil(kernel_size / antialiasing_factor)
    kernel_size += 2
    pos = torch.linspace(0, size - 1, steps=size, dtype=torch.float32)
    pos = (pos + 0.5) / scale - 0.5
    base = pos.floor() - (kernel_size // 2) + 1
    dist = pos - base
    weight = get_weight(dist, kernel_size, kernel="cubic", antialiasing_factor=antialiasing_factor)
    pad_pre, pad_post, base = get_padding(base, kernel_size, length)
    return weight.numpy(), base.numpy(), int(pad_pre), int(pad_post)


_PLANS: dict[int, tuple] = {}


def _resize_axis0(x: np.ndarray) -> np.ndarray:
    length = x.shape[0]
    if length not in _PLANS:
        _PLANS[length] = _resize_plan(length, 0.5)
    weight, base, pad_pre, pad_post = _PLANS[length]
    # MATLAB reflect padding ([a, a, b, c, d, d]) is numpy's 'symmetric'
    padded = np.pad(x, ((pad_pre, pad_post), (0, 0)), mode="symmetric") if pad_pre or pad_post else x
    out = np.zeros((len(base), x.shape[1]), dtype=x.dtype)
    step = base[1] - base[0] if len(base) > 1 else 1
    regular = len(base) > 1 and np.all(np.diff(base) == step)
    for k in range(weight.shape[0]):
        w = weight[k]
        rows = padded[base[0] + k : base[0] + k + step * (len(base) - 1) + 1 : step] if regular \
            else padded[base + k]
        if np.all(w == w[0]):
            out += w[0] * rows
        else:
            out += w[:, None] * rows
    return out


def imresize_half(x: np.ndarray) -> np.ndarray:
    """pyiqa's imresize(x, scale=0.5, antialiasing=True) for a 2-D float32 plane."""
    return np.ascontiguousarray(_resize_axis0(np.ascontiguousarray(_resize_axis0(x).T)).T)




class BrisqueModel:
    """pyiqa's BRISQUE ('original' version) with the LIVE SVR, features from numpy arrays.

    The SVR runs pyiqa's own `scale_features` and `rbf_kernel` in float64. The score is what
    remains of +-1024 coefficients cancelling, so pyiqa's float32 kernel carries ~1e-3 of
    rounding: on ResultsCalibra I04 (score -0.108) this path gives -0.10711, and so do pyiqa's
    own features through a float64 kernel; pyiqa's float32 kernel gives -0.10772, the
    published value is -0.1082.
    """

    def __init__(self, sv_coef: torch.Tensor, sv: torch.Tensor, gamma: float = 0.05,
                 rho: float = -153.591):
        self.sv_t = sv.double().t().contiguous()  # pyiqa stores (n_sv, 36), uses its transpose
        self.sv_coef = sv_coef.double()
        self.gamma, self.rho = gamma, rho

    def features(self, rgb: np.ndarray) -> np.ndarray:
        luma = np.round(y_channel(rgb) * np.float32(255.0))
        first = nss_features(luma)
        second = nss_features(imresize_half(luma))
        return np.asarray(first + second, dtype=np.float32)

    def score(self, rgb: np.ndarray) -> float:
        from pyiqa.archs.brisque_arch import rbf_kernel, scale_features

        features = torch.from_numpy(self.features(rgb).astype(np.float64)).unsqueeze(0)
        kernel = rbf_kernel(scale_features(features), self.sv_t, gamma=self.gamma)
        return float((kernel.double() @ self.sv_coef).reshape(-1)[0] - self.rho)


def _std(x: np.ndarray, axis) -> np.ndarray:
    return x.std(axis=axis, ddof=1, dtype=np.float64)


def piqe(rgb: np.ndarray, block_size: int = 16, activity_threshold: float = 0.1,
         block_impaired_threshold: float = 0.1, window_size: int = 6) -> float:
    """pyiqa's piqe(img)[0] for one (H, W, 3) uint8 RGB image."""
    y = y_channel(rgb)
    peak = y.max()
    if not peak > 0:
        raise ValueError("PIQE is undefined on an all-black image (pyiqa returns NaN)")
    img = np.round(np.float32(255) * (y / peak)).astype(np.float32)
    height, width = img.shape
    col_pad, row_pad = width % block_size, height % block_size
    if col_pad or row_pad:
        img = np.pad(img, ((0, row_pad), (0, col_pad)), mode="symmetric")
    norm = mscn(img, "replicate").astype(np.float64)
    rows, cols = norm.shape[0] // block_size, norm.shape[1] // block_size
    blocks = (norm[: rows * block_size, : cols * block_size]
              .reshape(rows, block_size, cols, block_size).transpose(0, 2, 1, 3)
              .reshape(rows * cols, block_size, block_size))
    block_var = blocks.reshape(len(blocks), -1).var(axis=1, ddof=1)
    active = block_var > activity_threshold

    # noise criterion; pyiqa passes block_size - 1, so the centre is columns 7 and 8 and,
    # after its two deletions, the surround is columns 0-6, 8 and 10-15
    center1 = block_size // 2
    center = blocks[:, :, [center1 - 1, center1]]
    keep = [c for c in range(block_size) if c != center1 - 1]
    keep = keep[:center1] + keep[center1 + 1:]
    center_std = _std(center.reshape(len(blocks), -1), 1)
    surround_std = _std(blocks[:, :, keep].reshape(len(blocks), -1), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cen_sur = np.nan_to_num(center_std / surround_std)
        block_sigma = np.sqrt(block_var)
        beta = np.abs(block_sigma - cen_sur) / np.maximum(block_sigma, cen_sur)
    noise = block_sigma > 2 * beta

    # noticeable-distortion criterion: any 6-px segment of an edge with std below threshold
    edges = np.stack((blocks[:, 0, :], blocks[:, :, -1], blocks[:, -1, :], blocks[:, :, 0]), 1)
    segments = np.lib.stride_tricks.sliding_window_view(edges, window_size, axis=-1)
    impaired = (_std(segments, -1) < block_impaired_threshold).any(axis=(1, 2))

    scores = active * impaired * (1 - block_var) + active * noise * block_var
    return float((scores.sum() + 1) / (1 + active.sum()) * 100)
