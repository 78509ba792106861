"""The one interface every teacher implements.

A teacher turns a batch of RGB Pillow images into a score per image, plus a 10-bin rating
distribution (NIMA) or an image embedding (CLIP) where it has one. A failure on one image
never loses the batch: the batch is retried image by image, and the failing image gets a NaN
score and a recorded reason.
"""

from __future__ import annotations

import importlib.metadata
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from distill.errors import ConfigError


@dataclass(frozen=True)
class TeacherSpec:
    name: str
    higher_is_better: bool
    score_range: tuple[float, float]  # native scale, as the method's authors report it
    input_size: int | None  # square side the network sees; None = native resolution
    description: str


@dataclass
class TeacherOutput:
    scores: np.ndarray  # (N,) float64, NaN where the image failed
    distributions: np.ndarray | None = None  # (N, 10) rating histogram (NIMA)
    embeddings: np.ndarray | None = None  # (N, D) L2-normalised float32 (CLIP)
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # per-image sub-measures
    errors: dict[int, str] = field(default_factory=dict)  # image index → reason

    @classmethod
    def concat(cls, parts: Sequence[TeacherOutput]) -> TeacherOutput:
        def stack(arrays):
            return None if any(a is None for a in arrays) else np.concatenate(arrays)

        errors, offset = {}, 0
        for part in parts:
            errors.update({offset + i: reason for i, reason in part.errors.items()})
            offset += len(part.scores)
        extra_keys = parts[0].extras.keys() if parts else ()
        return cls(
            scores=np.concatenate([p.scores for p in parts]) if parts else np.zeros(0),
            distributions=stack([p.distributions for p in parts]) if parts else None,
            embeddings=stack([p.embeddings for p in parts]) if parts else None,
            extras={k: np.concatenate([p.extras[k] for p in parts]) for k in extra_keys},
            errors=errors,
        )

    def take(self, indices: Sequence[int]) -> TeacherOutput:
        """The outputs of the images at `indices`, in that order (errors renumbered)."""
        indices = np.asarray(indices, dtype=np.int64)
        where = {int(index): kept for kept, index in enumerate(indices)}

        def rows(array):
            return None if array is None else array[indices]

        return TeacherOutput(
            scores=self.scores[indices], distributions=rows(self.distributions),
            embeddings=rows(self.embeddings),
            extras={key: values[indices] for key, values in self.extras.items()},
            errors={where[index]: reason for index, reason in self.errors.items()
                    if index in where},
        )


def library_versions(*dists: str) -> dict[str, str]:
    versions = {}
    for dist in ("torch", *dists):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


class Teacher(ABC):
    spec: TeacherSpec
    batch_size: int = 8
    # Scores one image at a time on one CPU thread, so N single-threaded processes run it N
    # times as fast (the label stage's default on a CPU). Networks (NIMA, CLIP) say False:
    # their batches use intra-op threads well, and a copy per process costs memory.
    per_process: bool = False
    # For a teacher without torch modules: its learned parameters, where the method has a
    # known count (the benchmark's cost column); None where counting makes no sense.
    parameter_count: int | None = None
    # Takes images decoded on a torch device (`decode_device.DeviceImage`) as they are; any
    # other teacher gets them as Pillow images, copied to the host.
    takes_device_images: bool = False

    @abstractmethod
    def _score_batch(self, images: Sequence[Image.Image]) -> TeacherOutput:
        """Score a batch; may raise, in which case `score` retries image by image."""

    @abstractmethod
    def provenance(self) -> dict:
        """Which weights (path, sha256) and library versions produced these scores."""

    @property
    def name(self) -> str:
        return self.spec.name

    def score(self, images: Sequence[Image.Image]) -> TeacherOutput:
        if not self.takes_device_images:
            images = [image.to_pil() if hasattr(image, "to_pil") else image for image in images]
        parts = [
            self._score_resilient(images[start : start + self.batch_size])
            for start in range(0, len(images), self.batch_size)
        ]
        return TeacherOutput.concat(parts) if parts else self._empty()

    def _score_resilient(self, batch: Sequence[Image.Image]) -> TeacherOutput:
        try:
            return self._score_batch(batch)
        except Exception as exc:  # noqa: BLE001 - one bad image must not cost the others
            if len(batch) == 1:  # recorded with its reason; a teacher broken for every
                # image raises from _failed's probe instead
                return self._failed(f"{self.name}: {type(exc).__name__}: {exc}")
        return TeacherOutput.concat([self._score_resilient([image]) for image in batch])

    def _failed(self, reason: str) -> TeacherOutput:
        """A one-image output shaped like a success, with NaNs and the reason."""
        template = self._score_batch([_PROBE_IMAGE])

        def nan_like(array):
            return None if array is None else np.full_like(array, np.nan, dtype=np.float64)

        return TeacherOutput(
            scores=np.full(1, np.nan),
            distributions=nan_like(template.distributions),
            embeddings=nan_like(template.embeddings),
            extras={k: np.full(1, np.nan) for k in template.extras},
            errors={0: reason},
        )

    def _empty(self) -> TeacherOutput:
        out = self._score_batch([_PROBE_IMAGE])
        return TeacherOutput(
            scores=out.scores[:0],
            distributions=None if out.distributions is None else out.distributions[:0],
            embeddings=None if out.embeddings is None else out.embeddings[:0],
            extras={k: v[:0] for k, v in out.extras.items()},
        )


IMPLEMENTATIONS = ("fast", "pyiqa", "torch")


def choose_impl(impl: str | None, device: str | None, on_cpu: str = "fast",
                allowed: tuple[str, ...] = IMPLEMENTATIONS) -> str:
    """The implementation asked for, else "torch" on a device that is not a CPU ("cuda",
    "cuda:1"), else the CPU's default."""
    if impl is None:
        impl = "torch" if device and str(device).split(":")[0] != "cpu" else on_cpu
    if impl not in allowed:
        raise ConfigError(f"impl must be one of {', '.join(allowed)}, got {impl!r}")
    return impl


def weights_record(path: Path, sha256: str) -> dict:
    return {"file": path.name, "path": str(path), "sha256": sha256}


# A mid-grey textured image, used only to learn the shape of a teacher's outputs; 128 px
# because NIQE needs a 96 px block (a 64 px probe made its one-image failure a crash).
_PROBE_IMAGE = Image.fromarray(
    (np.random.default_rng(0).random((128, 128, 3)) * 255).astype(np.uint8), "RGB"
)
