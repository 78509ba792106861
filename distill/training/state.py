"""What a training run carries across a kill: the EMA weights, the progress (step, early
stopping, best weights), and the checkpoints that hold them beside accelerate's own state.

Nothing here is ever unpickled: accelerate's custom-object checkpoints are loaded with
`weights_only=False`, so a planted `custom_checkpoint_0.pkl` would run code on --resume.
The EMA and best weights are a tensors-only file read with `weights_only=True`, and the
progress is JSON.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator

from distill.errors import DistillError, first_line

CHECKPOINTS = "checkpoints"


class EMA:
    """Exponential moving average of the weights, with timm's warm-up: step t uses decay
    min(decay, (1 + t) / (10 + t)), so early averages are not anchored at the random init."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for average, current in zip(self.module.state_dict().values(), model.state_dict().values()):
            if average.dtype.is_floating_point:
                average.lerp_(current.detach(), 1.0 - decay)
            else:
                average.copy_(current)  # BatchNorm's num_batches_tracked

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)


class Progress:
    """What a checkpoint carries besides weights: the step, early stopping, the best weights."""

    def __init__(self):
        self.step, self.best_step, self.stale, self.stopped = 0, 0, 0, False
        self.best_srcc, self.best_metrics, self.best_state = -math.inf, {}, {}

    def observe(self, scores: dict, model: torch.nn.Module, patience: int | None) -> None:
        if not scores:
            return  # no val split: the final weights are the result
        if scores["srcc"] > self.best_srcc:  # NaN (constant predictions) never improves
            self.best_srcc, self.best_step, self.best_metrics = scores["srcc"], self.step, scores
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            self.stale = 0
        else:
            self.stale += 1
            self.stopped = patience is not None and self.stale >= patience

    def scalars(self) -> dict:
        """Everything but the weights, for progress.json."""
        return {k: v for k, v in vars(self).items() if k != "best_state"}


def latest_checkpoint(run: Path) -> Path | None:
    """The newest complete checkpoint (a `.partial` folder is one a kill interrupted)."""
    folder = Path(run) / CHECKPOINTS
    done = sorted(p for p in folder.glob("step-*") if p.is_dir() and "." not in p.name)
    return done[-1] if done else None


PROGRESS_FILE, WEIGHTS_FILE = "progress.json", "distill_state.pt"


def save_checkpoint(accelerator: Accelerator, run: Path, ema: EMA, state: Progress,
                    keep: int) -> None:
    """accelerator.save_state into step-NNNNNN.partial, renamed when every rank is done.

    The EMA and best weights go in a tensors-only file and the progress in JSON, never in a
    pickle (accelerate's custom-object checkpoints are unpickled with weights_only=False, so a
    planted checkpoint would run code on --resume)."""
    final = Path(run) / CHECKPOINTS / f"step-{state.step:06d}"
    partial = final.with_name(f"{final.name}.partial")
    accelerator.save_state(str(partial))
    if accelerator.is_main_process:
        torch.save({"ema": ema.state_dict(), "best_state": state.best_state},
                   partial / WEIGHTS_FILE)
        (partial / PROGRESS_FILE).write_text(json.dumps(state.scalars()))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        complete = sorted(p for p in final.parent.glob("step-*") if "." not in p.name)
        for old in complete[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, ema: EMA, state: Progress) -> None:
    """The inverse of save_checkpoint; every file is read without unpickling code."""
    if not (checkpoint / PROGRESS_FILE).is_file():
        raise DistillError(f"{checkpoint} has no {PROGRESS_FILE} (an older distill pickled its "
                           "state, which --resume no longer unpickles); start a new --out")
    try:
        accelerator.load_state(str(checkpoint))  # accelerate's own files: weights_only=True
        weights = torch.load(checkpoint / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        progress = json.loads((checkpoint / PROGRESS_FILE).read_text())
    except (pickle.UnpicklingError, RuntimeError, ValueError, KeyError) as exc:
        raise DistillError(f"{checkpoint}: cannot be resumed safely ({first_line(exc)})") from None
    ema.load_state_dict(weights["ema"])
    vars(state).update({k: v for k, v in progress.items() if k in vars(state)},
                       best_state=weights["best_state"])
