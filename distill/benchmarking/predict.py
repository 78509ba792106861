"""What the benchmark measures: a predictor protocol that teachers and students both satisfy.

A predictor turns RGB images into `Predictions`. A student (later issue) predicts a 1–10
quality and a keep probability directly; a teacher gives a native-scale score, which is
oriented (higher = better) here and mapped onto 1–10 by the metrics stage when the teacher's
native range is not already 1–10 (see `distill.bench_metrics`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from distill.errors import DistillError

STUDENT_SUFFIXES = (".pt", ".pth", ".onnx", ".safetensors")
CULLING_RANGE = (1.0, 10.0)


@dataclass
class Predictions:
    raw: np.ndarray  # (N,) the model's own score on its native scale; NaN where it failed
    oriented: np.ndarray  # (N,) higher = better: raw, or -raw for a lower-is-better model
    quality: np.ndarray | None = None  # (N,) on the 1–10 culling scale, if the model has one
    keep_prob: np.ndarray | None = None  # (N,) P(keep) in [0, 1], if the model outputs one
    errors: dict[int, str] = field(default_factory=dict)  # image index → reason
    aux: dict[str, np.ndarray] = field(default_factory=dict)  # a student's aux targets, (N,) each


@runtime_checkable
class Predictor(Protocol):
    """The benchmark's view of a model; a student implements this to be benched."""

    name: str
    kind: str  # "teacher" | "student"

    def predict(self, images: Sequence[Image.Image]) -> Predictions: ...

    def describe(self) -> dict:
        """Scale and orientation: higher_is_better, native_range, quality_source."""

    def cost(self) -> dict:
        """params, flops, size_mb; each None with a `*_note` reason where not applicable."""

    def provenance(self) -> dict: ...


class TeacherPredictor:
    """A teacher behind the predictor protocol."""

    kind = "teacher"

    def __init__(self, teacher, batch_size: int | None = None):
        self.teacher = teacher
        self.name = teacher.name
        if batch_size:
            teacher.batch_size = batch_size
        self.native_on_culling_scale = (teacher.spec.higher_is_better
                                        and tuple(teacher.spec.score_range) == CULLING_RANGE)

    @property
    def batch_size(self) -> int:
        return self.teacher.batch_size

    def predict(self, images: Sequence[Image.Image]) -> Predictions:
        output = self.teacher.score(images)
        raw = np.asarray(output.scores, dtype=np.float64)
        oriented = raw if self.teacher.spec.higher_is_better else -raw
        errors = dict(output.errors)
        errors.update({int(i): f"{self.name}: non-finite score" for i in
                       np.flatnonzero(~np.isfinite(raw)) if int(i) not in errors})
        return Predictions(raw=raw, oriented=oriented,
                           quality=raw if self.native_on_culling_scale else None,
                           errors=errors)

    def describe(self) -> dict:
        spec = self.teacher.spec
        return {
            "higher_is_better": spec.higher_is_better,
            "native_range": list(spec.score_range),
            "input_size": spec.input_size,
            "device": str(getattr(self.teacher, "device", "cpu")),
            "description": spec.description,
            "quality_source": "native 1-10" if self.native_on_culling_scale
            else "quantile-matched",
            "keep_source": "oriented score (rank-based; not a probability)",
        }

    def provenance(self) -> dict:
        return self.teacher.provenance()

    def cost(self) -> dict:
        return {**torch_cost(self.teacher), **weights_size(self.provenance().get("weights", []))}


def torch_modules(obj) -> list:
    import torch

    return [value for value in vars(obj).values() if isinstance(value, torch.nn.Module)]


def torch_cost(teacher) -> dict:
    """Parameters of the teacher's torch modules and FLOPs of one image at its input size."""
    modules = torch_modules(teacher)
    if not modules:
        reason = "not a torch model (numpy/scipy heuristics)"
        return {"params": teacher.parameter_count,
                "params_note": "" if teacher.parameter_count is not None else reason,
                "flops": None, "flops_note": reason}
    unique = {id(p): p for module in modules for p in module.parameters()}
    cost = {"params": int(sum(p.numel() for p in unique.values())), "params_note": ""}
    side = teacher.spec.input_size
    if side is None:
        cost.update(flops=None, flops_note=(
            "runs at native resolution, so FLOPs depend on the image; FlopCounterMode counts "
            "matmul/conv only and would undercount this method's elementwise NSS work"))
        return cost
    from torch.utils.flop_counter import FlopCounterMode

    probe = Image.fromarray(np.full((side, side, 3), 128, dtype=np.uint8), "RGB")
    with FlopCounterMode(display=False) as counter:
        teacher.score([probe])  # the real path: preprocessing, network and head
    cost.update(flops=int(counter.get_total_flops()),
                flops_note=f"torch FlopCounterMode, one {side}x{side} image, FLOPs = 2 x MACs")
    return cost


def weights_size(weight_files: list[dict]) -> dict:
    if not weight_files:
        return {"size_mb": 0.0, "size_note": "no weights file"}
    sizes = [Path(record["path"]).stat().st_size for record in weight_files]
    return {"size_mb": sum(sizes) / 1e6,
            "size_note": "weights files on disk, MB = 1e6 bytes: "
            + ", ".join(record["file"] for record in weight_files)}


def load_predictor(model: str, *, options: dict | None = None, weights_dir: str | None = None,
                   batch_size: int | None = None) -> Predictor:
    """`teacher:NAME` → that teacher; a student.pt / student.onnx file → that student."""
    if model.startswith("teacher:"):
        from teachers import TEACHERS, create_teachers

        name = model.removeprefix("teacher:")
        if name not in TEACHERS:
            raise DistillError(f"unknown teacher {name!r}; known: {', '.join(TEACHERS.names())}")
        (teacher,) = create_teachers({name: options or {}}, weights_dir)
        return TeacherPredictor(teacher, batch_size)
    if options:
        raise DistillError("--option applies to teacher:NAME models only")
    path = Path(model)
    if path.suffix.lower() in STUDENT_SUFFIXES and path.is_file():
        return StudentPredictor(path, batch_size)
    if path.suffix.lower() in STUDENT_SUFFIXES:
        raise DistillError(f"--model {model}: no such student file")
    raise DistillError(f"--model {model}: expected teacher:NAME or a student file "
                       f"({', '.join(STUDENT_SUFFIXES)})")


class StudentPredictor:
    """A trained student (student.pt, or student.onnx from `distill export`): it predicts the
    1–10 quality and keep_prob directly, so no quantile matching is involved."""

    kind = "student"

    def __init__(self, path: Path, batch_size: int | None = None):
        from students import load_model

        self.path = Path(path)
        self.student = load_model(self.path)
        self.name = f"student:{self.path.parent.name}/{self.path.name}"
        self.batch_size = batch_size or 32

    def predict(self, images: Sequence[Image.Image]) -> Predictions:
        out = self.student.predict(list(images), batch_size=self.batch_size)
        quality = np.asarray(out["quality"], dtype=np.float64)
        return Predictions(raw=quality, oriented=quality, quality=quality,
                           keep_prob=np.asarray(out["keep_prob"], dtype=np.float64),
                           errors=dict(out["errors"]), aux=out.get("aux", {}))

    def describe(self) -> dict:
        return {"higher_is_better": True, "native_range": list(CULLING_RANGE),
                "input_size": self.student.preprocessing.get("image_size"),
                "device": "cpu", "description": f"distilled student from {self.path}",
                "quality_source": "native 1-10", "keep_source": "keep_prob head",
                "aux_outputs": list(getattr(self.student, "aux_outputs", []))}

    def provenance(self) -> dict:
        card = getattr(self.student, "card", {}) or {}
        return {"student": str(self.path), "card": card}

    def cost(self) -> dict:
        size = {"size_mb": self.path.stat().st_size / 1e6, "size_note": f"{self.path.name} on disk"}
        model = getattr(self.student, "model", None)
        if model is None:  # ONNX: the model card written at training time has the counts
            card = getattr(self.student, "card", {}) or {}
            return {"params": card.get("parameters"), "params_note": "from the model card",
                    "flops": card.get("flops_at_224"), "flops_note": "from the model card (224 px)", **size}
        from students.models import count_flops, count_parameters

        side = int(self.student.preprocessing.get("image_size", 224))
        return {"params": count_parameters(model), "params_note": "",
                "flops": count_flops(model, side),
                "flops_note": f"torch FlopCounterMode, one {side}x{side} image", **size}
