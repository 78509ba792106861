"""An offline sample pool from the real photos installed packages ship (quickstart's data).

Each clean source photo yields random crops/rescales, each optionally degraded the way real
photos go wrong — defocus and motion blur, sensor noise, JPEG artefacts, under- and
over-exposure, low resolution — at a known severity in [0, 1]. A few pool images are planted
again as near duplicates (re-encoded, resized, flipped). The benchmark set is built the same
way from *different* source photos, in AVA's format, with a ground-truth mean score that
falls with severity, so "does the student order it right" has an answer.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from distill.decode import DecodeError, decode_path
from distill.errors import DistillError
from distill.sources import packaged_photos

DEGRADATIONS = ("defocus", "motion", "noise", "jpeg", "underexposed", "overexposed", "lowres")
# Packaged images that are test patterns, graphics or micrographs rather than photographs,
# already degraded (clock_motion), or the stereo twin of another (motorcycle_right) — a twin on
# both sides of the train/benchmark split would leak.
NOT_PHOTOS = {"chessboard_GRAY", "chessboard_RGB", "color", "logo", "horse", "phantom", "text", "ihc",
              "page", "cell", "microaneurysms", "s1045", "membrane", "Minduka_Present_Blue_Pack",
              "logo2", "Stinkbug", "clock_motion", "motorcycle_right"}


@dataclass(frozen=True)
class Sample:
    name: str
    source: str  # the clean photo it came from
    degradation: str  # "none" or one of DEGRADATIONS
    severity: float  # 0 clean .. 1 worst

    @property
    def true_quality(self) -> float:
        """Ground truth on AVA's 1–10 scale: 8 for a clean crop, down to 2 at full severity."""
        return 8.0 - 6.0 * self.severity


def source_photos(min_side: int = 256) -> dict[str, Image.Image]:
    photos = {}
    for path in packaged_photos():
        if path.stem in NOT_PHOTOS or path.parent.name == "dist_dir":  # dist_dir: pre-degraded
            continue
        try:
            image = decode_path(path).image
        except DecodeError:
            continue
        if min(image.size) >= min_side and path.stem not in photos:
            photos[path.stem] = image
    return dict(sorted(photos.items()))


def _motion_kernel(length: int, angle: float) -> ImageFilter.Kernel:
    size = 2 * (length // 2) + 1
    kernel = np.zeros((size, size))
    centre = size // 2
    for t in np.linspace(-centre, centre, 4 * size):
        x = round(centre + t * np.cos(angle))
        y = round(centre + t * np.sin(angle))
        kernel[y, x] = 1
    return kernel / kernel.sum()


def degrade(image: Image.Image, kind: str, severity: float, rng: np.random.Generator) -> Image.Image:
    if kind == "defocus":
        return image.filter(ImageFilter.GaussianBlur(0.5 + 5.5 * severity))
    if kind == "motion":
        from scipy.ndimage import convolve

        kernel = _motion_kernel(int(3 + 22 * severity), rng.uniform(0, np.pi))
        pixels = np.asarray(image, dtype=np.float64)
        blurred = np.stack([convolve(pixels[..., c], kernel, mode="reflect") for c in range(3)], -1)
        return Image.fromarray(np.clip(blurred, 0, 255).astype(np.uint8))
    if kind == "noise":
        pixels = np.asarray(image, dtype=np.float64)
        noisy = pixels + rng.normal(0, 4 + 36 * severity, pixels.shape)
        return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=round(40 - 36 * severity))
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if kind == "underexposed":
        return ImageEnhance.Brightness(image).enhance(0.75 - 0.65 * severity)
    if kind == "overexposed":
        return ImageEnhance.Brightness(image).enhance(1.3 + 1.9 * severity)
    if kind == "lowres":
        factor = 1.5 + 6.5 * severity
        small = image.resize((max(8, round(image.width / factor)), max(8, round(image.height / factor))),
                             Image.Resampling.BILINEAR)
        return small.resize(image.size, Image.Resampling.NEAREST)
    raise ValueError(f"unknown degradation {kind!r}")


def random_view(image: Image.Image, rng: np.random.Generator, side: int) -> Image.Image:
    """A random crop keeping 50–100 % of each side, rescaled so its long side is `side`."""
    width, height = image.size
    crop_w, crop_h = int(width * rng.uniform(0.5, 1.0)), int(height * rng.uniform(0.5, 1.0))
    left, top = rng.integers(0, width - crop_w + 1), rng.integers(0, height - crop_h + 1)
    view = image.crop((left, top, left + crop_w, top + crop_h))
    scale = side / max(view.size)
    return view.resize((max(32, round(view.width * scale)), max(32, round(view.height * scale))),
                       Image.Resampling.LANCZOS)


def make_set(folder: Path, photos: dict[str, Image.Image], per_photo: int, seed: int,
             side: int = 384, clean_fraction: float = 0.25) -> list[Sample]:
    """Write `per_photo` views of each photo into `folder`; returns what each file is."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for source, image in photos.items():
        for index in range(per_photo):
            view = random_view(image, rng, side)
            if rng.random() < clean_fraction:
                kind, severity = "none", 0.0
            else:
                kind, severity = str(rng.choice(DEGRADATIONS)), float(rng.uniform(0.1, 1.0))
                view = degrade(view, kind, severity, rng)
            sample = Sample(f"{source}-{index:03d}", source, kind, round(severity, 4))
            view.save(folder / f"{sample.name}.jpg", quality=92)
            samples.append(sample)
    return samples


def plant_duplicates(folder: Path, samples: list[Sample], count: int, seed: int) -> list[tuple[str, str]]:
    """Re-encoded, resized or flipped copies of pool images: (duplicate, original) names."""
    rng = np.random.default_rng(seed)
    pairs = []
    for original in rng.choice(len(samples), size=min(count, len(samples)), replace=False):
        sample = samples[original]
        image = Image.open(folder / f"{sample.name}.jpg").convert("RGB")
        edit = rng.integers(3)
        if edit == 0:
            image = image.resize((round(image.width * 0.7), round(image.height * 0.7)))
        elif edit == 1:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        name = f"{sample.name}-dup"
        image.save(folder / f"{name}.jpg", quality=int(rng.integers(60, 90)))
        pairs.append((name, sample.name))
    return pairs


def write_ava(root: Path, samples: list[Sample], seed: int) -> Path:
    """AVA.txt for a set: 100 synthetic votes per image around its true quality."""
    rng = np.random.default_rng(seed)
    lines = []
    for index, sample in enumerate(samples, start=1):
        votes = np.clip(np.round(rng.normal(sample.true_quality, 1.2, 100)), 1, 10).astype(int)
        counts = np.bincount(votes, minlength=11)[1:]
        lines.append(f"{index} {sample.name} {' '.join(map(str, counts))} 0 0 0")
    path = root / "AVA.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def split_sources(photos: dict[str, Image.Image], held_out: tuple[str, ...]) -> tuple[dict, dict]:
    """Benchmark photos are different photos from the training pool's. They are named, so the
    benchmark stays the same when an installed package starts shipping more photos."""
    missing = sorted(set(held_out) - set(photos))
    if missing:
        raise DistillError(f"held-out sample photos missing: {', '.join(missing)}")
    return ({n: image for n, image in photos.items() if n not in held_out},
            {n: image for n, image in photos.items() if n in held_out})
