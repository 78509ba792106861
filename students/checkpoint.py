"""`student.pt`: everything needed to rebuild, run and export a trained student.

    {"format": "distill-student/1",
     "student": "mobilenetv3_small",         registry name (`create_student`)
     "opts": {"rating_bins": 10, ...},       rebuild options (init is forced to random)
     "state_dict": {...},                    the weights (EMA when training used EMA)
     "preprocessing": {...},                 see students.preprocess.policy
     "outputs": ["quality", "keep_prob", "rating_1", ...],
     "aux_outputs": ["face_min_eyes_open", ...],   only a student trained with aux_targets
     "card": {...}}                          the model card (also model_card.json)

A student with aux targets is deployed with a second output, `aux` (N, len(aux_outputs)), in
the label columns' own units; `scores` keeps its shape, so what reads it reads it unchanged.

Plain tensors, numbers, strings and lists only, so `torch.load(weights_only=True)` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from distill.errors import DistillError, first_line
from distill.safefs import atomic_write
from students import preprocess
from students.predictions import as_predictions

FORMAT = "distill-student/1"


def output_names(rating_bins: int) -> list[str]:
    return ["quality", "keep_prob"] + [f"rating_{i + 1}" for i in range(rating_bins)]


class ScoresHead(nn.Module):
    """The deployed form: one (N, 2 [+ bins]) tensor of quality clamped to 1–10, keep
    probability and the rating histogram; what TorchScript, ONNX and OpenCV run. A student
    with aux targets returns (scores, aux), aux in the label columns' units."""

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.student(images)
        quality, keep_logit = out["quality"], out["keep_logit"]
        # clamp and sigmoid turn inf into 10 and 1: x - x (0, or NaN where x is not finite)
        # keeps an overflowed student's output non-finite, so it is an error, not a score
        columns = [(quality.clamp(1.0, 10.0) + (quality - quality)).unsqueeze(1),
                   (torch.sigmoid(keep_logit) + (keep_logit - keep_logit)).unsqueeze(1)]
        if "rating_logits" in out:
            columns.append(torch.softmax(out["rating_logits"], dim=1))
        scores = torch.cat(columns, dim=1)
        if "aux" in out:
            return scores, self.student.aux_native(out["aux"])
        return scores


def save_student(path: Path, model: nn.Module, name: str, opts: dict, preprocessing: dict,
                 card: dict) -> None:
    rating_bins = opts.get("rating_bins", 0)
    payload = {
        "format": FORMAT, "student": name, "opts": dict(opts),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "preprocessing": preprocessing, "outputs": output_names(rating_bins), "card": card,
    }
    if opts.get("aux_targets"):
        payload["aux_outputs"] = list(opts["aux_targets"])
    with atomic_write(path) as partial:
        torch.save(payload, partial)


@dataclass
class LoadedStudent:
    model: nn.Module  # StudentNet in eval mode
    name: str
    opts: dict
    preprocessing: dict
    outputs: list[str]
    card: dict
    aux_outputs: list[str] = field(default_factory=list)

    def scores_head(self) -> ScoresHead:
        return ScoresHead(self.model).eval()

    @torch.no_grad()
    def predict(self, images: list[Image.Image], batch_size: int = 32) -> dict[str, np.ndarray]:
        """RGB photos → {"quality": (N,), "keep_prob": (N,)[, "rating": (N, bins)][, "aux":
        {target: (N,)}], "errors"} (`students.predictions`: a photo with a non-finite score is
        an error)."""
        head = self.scores_head()
        parts = [head(preprocess.batch(images[i:i + batch_size], self.preprocessing))
                 for i in range(0, len(images), batch_size)]
        if self.aux_outputs:
            parts, aux_parts = [p[0] for p in parts], [p[1] for p in parts]
            aux = torch.cat(aux_parts).numpy() if aux_parts else np.zeros((0, len(self.aux_outputs)))
        scores = torch.cat(parts).numpy() if parts else np.zeros((0, len(self.outputs)))
        return as_predictions(scores, aux if self.aux_outputs else None, self.aux_outputs)


def load_student(path: str | Path) -> LoadedStudent:
    """Rebuild a trained student from student.pt (never touches the weights folder)."""
    from students import create_student

    path = Path(path)
    if not path.is_file():
        raise DistillError(f"student file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear line
        raise DistillError(f"{path}: not a student file ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DistillError(f"{path}: not a {FORMAT} file")
    missing = [k for k in ("student", "opts", "state_dict", "preprocessing", "outputs", "card")
               if k not in payload]
    if missing:
        raise DistillError(f"{path}: a damaged {FORMAT} file (no {', '.join(missing)})")
    model = create_student(payload["student"], **{**payload["opts"], "init": "random"})
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise DistillError(f"{path}: its weights do not fit student {payload['student']!r} "
                           f"({first_line(exc)})") from None
    model.eval()
    return LoadedStudent(model, payload["student"], payload["opts"], payload["preprocessing"],
                         payload["outputs"], payload["card"], payload.get("aux_outputs", []))
