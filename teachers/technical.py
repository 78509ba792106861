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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from distill.decode import ORIGINAL_SIZE_KEY
from teachers.base import Teacher, TeacherOutput, TeacherSpec, library_versions

WORKING_SIDE = 512
LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64)
# Immerkær's kernel is the difference of two Laplacians: it cancels image structure up to
# second order, so what remains is (mostly) noise.
NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
SUBSCORE_WEIGHTS = {
    "sharpness": 0.35, "noise": 0.20, "exposure": 0.15, "clipping": 0.15,
    "resolution": 0.10, "colourfulness": 0.05,
}
MEASURES = ("sharpness", "clipped_highlights", "clipped_shadows", "exposure", "noise",
            "colourfulness", "megapixels")


def measure(image: Image.Image) -> dict[str, float]:
    width, height = image.info.get(ORIGINAL_SIZE_KEY, image.size)
    working = image.copy()
    working.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.LANCZOS)
    rgb = np.asarray(working.convert("RGB"), dtype=np.float64)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 0.299 * red + 0.587 * green + 0.114 * blue

    rows, cols = luma.shape
    residual = np.abs(ndimage.convolve(luma, NOISE_KERNEL, mode="reflect"))[1:-1, 1:-1]
    noise = np.sqrt(np.pi / 2) * residual.sum() / (6.0 * max(rows - 2, 1) * max(cols - 2, 1))

    red_green, yellow_blue = red - green, 0.5 * (red + green) - blue
    colourfulness = np.hypot(red_green.std(), yellow_blue.std()) + 0.3 * np.hypot(
        red_green.mean(), yellow_blue.mean()
    )
    return {
        "sharpness": float(ndimage.convolve(luma, LAPLACIAN, mode="reflect").var()),
        "clipped_highlights": float((luma >= 250).mean()),
        "clipped_shadows": float((luma <= 5).mean()),
        "exposure": float(luma.mean() / 255.0),
        "noise": float(noise),
        "colourfulness": float(colourfulness),
        "megapixels": width * height / 1e6,
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
            "libraries": library_versions("scipy", "numpy", "pillow"),
            "subscore_weights": SUBSCORE_WEIGHTS,
            "working_side": WORKING_SIDE,
        }


def create_technical() -> Teacher:
    """Technical heuristics (sharpness, noise, exposure, clipping, ...); 0-1, higher is better."""
    return TechnicalTeacher()
