"""Technical heuristics: the seed's quality checks, cheap and weight-free.

Each measure is computed on the image resized so its long side is `WORKING_SIDE` px, so that
values are comparable across resolutions (a 24 MP photo and its 1 MP export score alike).
Luminance is Rec. 601 luma in 0–255.

| measure            | what it is                                                        | good when |
|--------------------|-------------------------------------------------------------------|-----------|
| sharpness          | variance of the 3x3 Laplacian of luma (Pech-Pacheco et al. 2000)  | high      |
| clipped_highlights | fraction of pixels with luma ≥ 250                                 | low       |
| clipped_shadows    | fraction of pixels with luma ≤ 5                                   | low       |
| exposure           | mean luma / 255                                                    | 0.3–0.6   |
| noise              | Immerkær (1996) fast noise sigma, in luma units                   | low       |
| colourfulness      | Hasler & Süsstrunk (2003) M metric                                | moderate+ |
| megapixels         | original width × height / 1e6                                     | high      |

The teacher's score is a weighted mean of per-measure sub-scores in [0, 1] (see
`SUBSCORE_WEIGHTS` and `subscores`); the raw measures are returned as extras.

How they are computed. Pillow's LANCZOS thumbnail defines the working pixels (and is now
~90 % of the time). From its 8-bit RGB, 1000 × luma (299 R + 587 G + 114 B) is an integer
below 2^24, and so is every 3x3 sum of it the two filters take: in float32, OpenCV's
`Laplacian` / `filter2D` (BORDER_REFLECT, which is scipy's `reflect`) compute them exactly,
and OpenCV sums them in float64. The colour statistics come from exact integer sums of the
8-bit planes (`_variance`, `_squared_distance`). The arithmetic is ~20x faster than float64
luma through `scipy.ndimage.convolve`, `measure` ~2x, and agrees with it to ~1e-15; the
clipping thresholds agree on every one of the 2^24 RGB values (`tests/test_technical_fast.py`
keeps that scipy code as the reference and checks both).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from distill.decode import ORIGINAL_SIZE_KEY
from teachers.base import Teacher, TeacherOutput, TeacherSpec, choose_impl, library_versions

WORKING_SIDE = 512
# Immerkær's kernel is the difference of two Laplacians: it cancels image structure up to
# second order, so what remains is (mostly) noise. (The Laplacian itself is cv2.Laplacian's
# ksize=1 aperture, [[0, 1, 0], [1, -4, 1], [0, 1, 0]].)
NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
# 1000 × Rec. 601 luma: integer weights, so it holds exact integers (≤ 255,000) in float32.
LUMA_WEIGHTS = (299, 587, 114)
LUMA_SCALE = 1000
SUBSCORE_WEIGHTS = {
    "sharpness": 0.35, "noise": 0.20, "exposure": 0.15, "clipping": 0.15,
    "resolution": 0.10, "colourfulness": 0.05,
}
MEASURES = ("sharpness", "clipped_highlights", "clipped_shadows", "exposure", "noise",
            "colourfulness", "megapixels")


def measure(image: Image.Image) -> dict[str, float]:
    width, height = image.info.get(ORIGINAL_SIZE_KEY, image.size)
    return {**pixel_measures(working_pixels(image)), "megapixels": width * height / 1e6}


def working_pixels(image: Image.Image) -> np.ndarray:
    """8-bit RGB of the image with its long side at most WORKING_SIDE (Pillow's LANCZOS
    thumbnail; an image that already fits is used as it is, as `thumbnail` leaves it)."""
    if max(image.size) > WORKING_SIDE:
        image = image.copy()
        image.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.LANCZOS)
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def _variance(total: int, squares: int, count: int) -> float:
    """Population variance from the exact sum and sum of squares of integers: no
    cancellation when the mean is large and the spread small."""
    return (count * squares - total * total) / (count * count)


def _squared_distance(a: np.ndarray, b: np.ndarray) -> int:
    """Σ (a − b)² over two 8-bit planes, in OpenCV's integer accumulators."""
    return round(cv2.norm(a, b, cv2.NORM_L2SQR))


def luma_per_mille(red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> np.ndarray:
    """1000 × Rec. 601 luma of 8-bit planes: exact integers in float32."""
    luma = cv2.addWeighted(red, LUMA_WEIGHTS[0], green, LUMA_WEIGHTS[1], 0, dtype=cv2.CV_32F)
    return cv2.scaleAdd(blue.astype(np.float32), LUMA_WEIGHTS[2], luma)


# The exact integer sums over the working pixels that every measure but megapixels is a
# function of (`measures_from_sums`): here from OpenCV, in `teachers._torch_technical` from
# torch on a device; the same integers either way.
SUMS = ("red", "green", "blue", "laplacian", "laplacian_squares", "noise_l1", "red_green",
        "red_blue", "green_blue", "highlights", "shadows")


def pixel_sums(rgb: np.ndarray) -> dict[str, int]:
    """SUMS of an 8-bit RGB array at the working size: channel totals, the Laplacian's sum
    and sum of squares and the noise residual's absolute sum over 1000 × luma (interior pixels
    only), Σ (a − b)² of the channel pairs, and the clipped pixel counts."""
    rows, cols = rgb.shape[:2]
    # OpenCV, not a numpy matrix product: OpenBLAS would take every core for a 3x3 product
    # and then spin, which starves the decoding threads beside it in `distill cull`.
    red, green, blue = cv2.split(rgb)
    luma = luma_per_mille(red, green, blue)
    laplacian = cv2.Laplacian(luma, cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT)
    noise_l1 = 0
    if rows > 2 and cols > 2:  # the estimate uses interior pixels only, so the border is moot
        residual = cv2.filter2D(luma, cv2.CV_32F, NOISE_KERNEL, borderType=cv2.BORDER_REFLECT)
        noise_l1 = round(cv2.norm(residual[1:-1, 1:-1], cv2.NORM_L1))
    totals = (round(total) for total in cv2.sumElems(rgb)[:3])
    return {
        **dict(zip(("red", "green", "blue"), totals)),
        "laplacian": round(cv2.sumElems(laplacian)[0]),
        "laplacian_squares": round(cv2.norm(laplacian, cv2.NORM_L2SQR)),
        "noise_l1": noise_l1,
        "red_green": _squared_distance(red, green),
        "red_blue": _squared_distance(red, blue),
        "green_blue": _squared_distance(green, blue),
        "highlights": np.count_nonzero(luma >= 250 * LUMA_SCALE),
        "shadows": np.count_nonzero(luma <= 5 * LUMA_SCALE),
    }


def pixel_measures(rgb: np.ndarray) -> dict[str, float]:
    """Every measure but megapixels, of an 8-bit RGB array at the working size."""
    return measures_from_sums(pixel_sums(rgb), *rgb.shape[:2])


def measures_from_sums(sums: dict[str, int], rows: int, cols: int) -> dict[str, float]:
    """Every measure but megapixels, from `pixel_sums` of a rows x cols image."""
    count = rows * cols
    sum_red, sum_green, sum_blue = sums["red"], sums["green"], sums["blue"]
    sharpness = _variance(sums["laplacian"], sums["laplacian_squares"], count) / LUMA_SCALE**2
    noise = 0.0
    if rows > 2 and cols > 2:
        noise = (np.sqrt(np.pi / 2) * sums["noise_l1"] / LUMA_SCALE
                 / (6.0 * (rows - 2) * (cols - 2)))

    # Opponent axes rg = R − G and yb = (R + G)/2 − B, from their exact sums: since
    # R + G − 2B = (R − B) + (G − B), Σ (R + G − 2B)² = 2 Σ (R − B)² + 2 Σ (G − B)² − Σ (R − G)².
    red_green = sums["red_green"]
    yellow_blue2 = 2 * sums["red_blue"] + 2 * sums["green_blue"] - red_green
    sum_rg, sum_yb2 = sum_red - sum_green, sum_red + sum_green - 2 * sum_blue
    colourfulness = np.hypot(_variance(sum_rg, red_green, count) ** 0.5,
                             _variance(sum_yb2, yellow_blue2, count) ** 0.5 / 2) + 0.3 * np.hypot(
        sum_rg / count, sum_yb2 / (2 * count))
    luma_total = sum(w * t for w, t in zip(LUMA_WEIGHTS, (sum_red, sum_green, sum_blue)))
    return {
        "sharpness": float(sharpness),
        "clipped_highlights": sums["highlights"] / count,
        "clipped_shadows": sums["shadows"] / count,
        "exposure": luma_total / LUMA_SCALE / count / 255.0,
        "noise": float(noise),
        "colourfulness": float(colourfulness),
    }


def clip01(value: float) -> float:
    return float(np.clip(value, 0.0, 1.0))


def subscores(m: dict[str, float]) -> dict[str, float]:
    """Map each raw measure to [0, 1], 1 = no problem. Break points are documented inline."""
    return {
        # Laplacian variance ≥ 300 at 512 px is crisp; defocus blur drops it below ~30.
        "sharpness": clip01(np.log1p(m["sharpness"]) / np.log1p(300.0)),
        # sigma ≤ 2 is clean, ≥ 12 (of 255) is visibly noisy.
        "noise": clip01(1.0 - (m["noise"] - 2.0) / 10.0),
        # A mean luma within 0.30–0.60 is fine; black (0) or white (1) frames score 0.
        "exposure": clip01(1.0 - max(0.0, abs(m["exposure"] - 0.45) - 0.15) / 0.30),
        # A quarter of the frame clipped (either end) scores 0.
        "clipping": clip01(1.0 - (m["clipped_highlights"] + m["clipped_shadows"]) / 0.25),
        # 0.1 MP (e.g. 320x320) scores 0, 2 MP and above score 1, log-linear between.
        "resolution": clip01(np.log(max(m["megapixels"], 1e-6) / 0.1) / np.log(20.0)),
        # Hasler & Süsstrunk call M ≥ 59 "quite colourful"; monochrome keeps 0 here.
        "colourfulness": clip01(m["colourfulness"] / 59.0),
    }


class TechnicalTeacher(Teacher):
    spec = TeacherSpec(
        "technical", higher_is_better=True, score_range=(0.0, 1.0), input_size=None,
        description="weighted technical heuristics: sharpness, noise, exposure, clipping, "
        "resolution, colourfulness",
    )
    batch_size = 32
    per_process = True

    def _score_batch(self, images: Sequence[Image.Image]) -> TeacherOutput:
        raw = [measure(image) for image in images]
        scores = [
            sum(SUBSCORE_WEIGHTS[k] * v for k, v in subscores(m).items()) for m in raw
        ]
        extras = {f"tech_{name}": np.array([m[name] for m in raw]) for name in MEASURES}
        return TeacherOutput(scores=np.asarray(scores, dtype=np.float64), extras=extras)

    def provenance(self) -> dict:
        return {
            "teacher": self.name,
            "weights": [],
            "libraries": library_versions("numpy", "pillow", "opencv-python-headless"),
            "implementation": "integer luma and opponent planes in float32, OpenCV filters "
                              "and float64 sums (exact; equal to float64 scipy to ~1e-15)",
            "subscore_weights": SUBSCORE_WEIGHTS,
            "working_side": WORKING_SIDE,
        }


def create_technical(impl: str | None = None, device: str | None = None) -> Teacher:
    """Technical heuristics (sharpness, noise, exposure, clipping, ...); 0-1, higher is better.

    impl: "fast" (OpenCV, the CPU's default) or "torch" (the same integer sums batched on
    `device`; the default off the CPU)."""
    if choose_impl(impl, device, allowed=("fast", "torch")) == "fast":
        return TechnicalTeacher()
    from teachers import batched

    return batched.BatchedTeacher(
        TechnicalTeacher.spec, device or "cpu", batched.technical_scorer, [],
        "teachers._torch_technical: Pillow's LANCZOS thumbnail bit for bit (distill.resample), "
        "the measures' exact integer sums in int32/int64, the OpenCV path's float formulas",
        ("numpy", "pillow"),
        {"subscore_weights": SUBSCORE_WEIGHTS, "working_side": WORKING_SIDE})
