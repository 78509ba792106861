"""Train stage: distill a labeling run into a compact student with Accelerate.

`run_train` reads top to bottom: accelerator → data → student → optimizer → prepare →
(resume) → the step loop (accumulate, clip, cosine LR, EMA, log, evaluate, checkpoint,
early stop) → student.pt and model_card.json. One process or many: under `accelerate launch`
or `torchrun` each process takes its share of every batch and DDP averages the gradients.
The config is `training.config`, the data side `training.data`, the loss
`students.losses`, the state a resume reloads (EMA, progress, checkpoints, never a pickle)
`training.state`.

    RUN_DIR/metrics.csv              one row per log step (train losses, lr; val_* on evals)
    RUN_DIR/tensorboard/             the same, for TensorBoard
    RUN_DIR/checkpoints/step-NNNNNN  accelerator.save_state (+ EMA, best weights, progress)
    RUN_DIR/student.pt               see students.checkpoint
    RUN_DIR/model_card.json
"""

from __future__ import annotations

import csv
import hashlib
import math
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from scipy import stats
from tqdm import tqdm

from distill import __version__, run_folder
from distill.config import to_dict
from distill.errors import ConfigError, DistillError
from distill.safefs import sha256_file
from distill.training.config import OptimConfig, TrainConfig
from distill.training.data import TeacherTargets, TrainData, build_data
from distill.training.state import (
    EMA,
    Progress,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from distill.training.threads import choose_threads, host_cores, running_elsewhere
from students import create_student
from students.checkpoint import load_student, output_names, save_student
from students.losses import distillation_loss
from students.models import count_flops, count_parameters


def run_train(config: TrainConfig, resume: bool = False, progress_bar: bool = True) -> dict:
    """Train `config.student` on `config.labels` into `config.out`; returns the model card
    (on the main process; {} on the others)."""
    run, optim = Path(config.out), config.optim
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # what starts a gloo group under torchrun on CPUs
        mixed_precision=config.mixed_precision, gradient_accumulation_steps=optim.grad_accum,
        log_with="tensorboard" if config.tensorboard else None, project_dir=str(run))
    if not torch.cuda.is_available():  # this host's cores, shared, and only the free ones
        torch.set_num_threads(choose_threads(
            config.cpu_threads, host_cores(), accelerator.num_processes,
            None if config.cpu_threads else running_elsewhere()))
    checkpoint = latest_checkpoint(run)
    if checkpoint is not None and not resume:
        raise DistillError(f"{run} holds checkpoints of an earlier run: pass --resume to "
                           "continue it, or choose a new --out")
    set_seed(config.seed)  # the same initial weights and augmentations on every rank

    show_progress = progress_bar and accelerator.is_main_process
    data = build_data(config, accelerator.num_processes, show_progress)
    model = create_student(config.student.name,
                           init="random" if config.student.finetune else config.student.init,
                           weights_dir=config.weights_dir, **architecture(config, data))
    if config.student.finetune:
        start_from(model, Path(config.student.finetune), config.student.name)
    if data.aux_scale is not None:  # the aux head predicts standardised targets
        model.set_aux_scale(data.aux_scale.mean, data.aux_scale.std)
    accelerator.print(f"student {config.student.name}: {model.init['kind'].upper()} init "
                      f"({model.init.get('file') or model.init.get('reason')}); {data.describe()}"
                      f"; {torch.get_num_threads()} torch threads")
    optimizer = torch.optim.AdamW(param_groups(model, optim.weight_decay), lr=optim.lr)
    model, optimizer, train_loader, val_loader = accelerator.prepare(
        model, optimizer, data.train_loader, data.val_loader)
    ema = EMA(accelerator.unwrap_model(model), optim.ema_decay)
    state = Progress()
    if resume and checkpoint is not None:
        load_checkpoint(accelerator, checkpoint, ema, state)
        accelerator.print(f"resumed from {checkpoint} at step {state.step}")
    if config.tensorboard:
        accelerator.init_trackers("tensorboard")
    fm = config.function_matching.enabled
    targets = TeacherTargets(config, accelerator.device) if fm else None
    metrics = MetricsLog(run / "metrics.csv", state.step, accelerator.is_main_process)
    bar = tqdm(total=optim.max_steps, initial=state.step, unit="step", desc="training",
               disable=not (progress_bar and accelerator.is_main_process), dynamic_ncols=True)
    started = time.perf_counter()

    while state.step < optim.max_steps and not state.stopped:
        epoch, done_in_epoch = divmod(state.step, data.steps_per_epoch)
        train_loader.set_epoch(epoch)  # the sampler's order is a function of (seed, epoch)
        batches = (accelerator.skip_first_batches(train_loader, done_in_epoch * optim.grad_accum)
                   if done_in_epoch else train_loader)
        model.train()
        for batch in batches:
            if targets is not None:  # function matching: the teachers score this very view
                batch = targets(batch)
            with accelerator.accumulate(model):
                out = model(batch["image"].float() / 255.0)
                loss, terms = distillation_loss(out, batch, config.loss)
                accelerator.backward(loss)
                if accelerator.sync_gradients and optim.grad_clip:
                    accelerator.clip_grad_norm_(model.parameters(), optim.grad_clip)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(state.step, optim)
                optimizer.step()  # a no-op until the last micro-batch of the accumulation
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            ema.update(accelerator.unwrap_model(model), state.step)
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", val_srcc=f"{state.best_srcc:.3f}")
            last = state.step >= optim.max_steps
            row = {"epoch": epoch, "lr": lr_at(state.step - 1, optim), "loss": loss.item(),
                   **{f"loss_{name}": value for name, value in terms.items()}}
            if state.step % config.eval_every == 0 or last:
                scores = evaluate(ema.module, val_loader, accelerator)
                row.update({f"val_{name}": value for name, value in scores.items()})
                state.observe(scores, ema.module, config.early_stopping_patience)
            if state.step % config.log_every == 0 or "val_srcc" in row or last:
                row["session_seconds"] = round(time.perf_counter() - started, 2)
                metrics.write(state.step, row)
                accelerator.log(row, step=state.step)
            if state.step % config.checkpoint_every == 0 or last or state.stopped:
                save_checkpoint(accelerator, run, ema, state, config.keep_checkpoints)
            if last or state.stopped:
                break
    bar.close()
    return finish(config, accelerator, model, ema, state, data, started)


def finish(config: TrainConfig, accelerator: Accelerator, model, ema: EMA, state: Progress,
           data: TrainData, started: float) -> dict:
    """Check the ranks agree, then (main process) write student.pt and the model card."""
    if state.stopped:
        accelerator.print(f"early stop at step {state.step}: val SRCC {state.best_srcc:.4f} "
                          f"(step {state.best_step}) not beaten in "
                          f"{config.early_stopping_patience} evaluations")
    # Each rank hashes its own parameters: DDP keeps them bitwise identical, or the run is broken.
    digest = parameters_digest(accelerator.unwrap_model(model)).to(accelerator.device)
    ranks = accelerator.gather(digest)
    rank_digests = [f"{int(d):016x}" for d in ranks.cpu().tolist()]
    if len(set(rank_digests)) > 1:
        accelerator.print(f"WARNING: the processes ended with different parameters: {rank_digests}")
    card = {}
    if accelerator.is_main_process:
        session = {"processes": accelerator.num_processes, "rank_parameter_digests": rank_digests,
                   "device": accelerator.device.type,
                   "mixed_precision": accelerator.mixed_precision,
                   # floating-point sums depend on it: equal weights need equal thread counts
                   "torch_threads": torch.get_num_threads(),
                   "seconds_last_session": round(time.perf_counter() - started, 1)}
        card = write_outputs(config, data, ema.module, state, session)
    accelerator.end_training()
    return card


def parameters_digest(model: torch.nn.Module) -> torch.Tensor:
    """63 bits of the sha256 of every parameter, as a 1-element int64 tensor. Buffers are left
    out: BatchNorm statistics are updated from each rank's own batch (DDP re-broadcasts rank
    0's at every forward, and rank 0's are the ones saved)."""
    digest = hashlib.sha256()
    for tensor in model.parameters():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return torch.tensor([int(digest.hexdigest()[:15], 16)], dtype=torch.int64)


def start_from(model: torch.nn.Module, path: Path, name: str) -> None:
    """Fine-tuning: every weight of a trained student whose shape fits; a head the new
    labels do not train (a rating head without rating histograms, aux targets the base did
    not have) is left out."""
    base = load_student(path)
    if base.name != name:
        raise ConfigError(f"--finetune {path} is a {base.name!r} student, not {name!r}")
    own = model.state_dict()
    usable = {k: v for k, v in base.model.state_dict().items()
              if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable and not k.startswith(("rating.", "aux"))]
    if missing:
        raise ConfigError(f"--finetune {path}: its weights do not fit ({', '.join(missing[:3])})")
    model.load_state_dict(usable, strict=False)
    model.init = {"kind": "finetune", "file": str(path), "sha256": sha256_file(path)}


def architecture(config: TrainConfig, data: TrainData) -> dict:
    """What rebuilds the student's shape (stored in student.pt); init is not part of it."""
    return {"rating_bins": data.rating_bins, "dropout": config.student.dropout,
            **({"aux_targets": data.aux_targets} if data.aux_targets else {})}


class MetricsLog:
    """metrics.csv, appended by the main process; a resume drops rows after its checkpoint."""

    COLUMNS = ("step", "epoch", "lr", "loss", "loss_quality", "loss_keep", "loss_rank",
               "loss_rating", "loss_aux", "val_srcc", "val_plcc", "val_mae", "val_std_ratio",
               "val_keep_agreement", "session_seconds")

    def __init__(self, path: Path, resumed_step: int, enabled: bool):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        kept = []
        if path.exists() and resumed_step:
            with path.open(newline="") as handle:
                kept = [r for r in csv.DictReader(handle) if int(r["step"]) <= resumed_step]
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, self.COLUMNS, restval="")
            writer.writeheader()
            writer.writerows(kept)

    def write(self, step: int, row: dict) -> None:
        if self.enabled:
            with self.path.open("a", newline="") as handle:
                csv.DictWriter(handle, self.COLUMNS, restval="", extrasaction="ignore").writerow(
                    {"step": step, **{k: _rounded(v) for k, v in row.items()}})


def _rounded(value):
    return round(value, 6) if isinstance(value, float) else value


def lr_at(step: int, optim: OptimConfig) -> float:
    """Linear warm-up over warmup_steps, then cosine decay to lr * min_lr_ratio at max_steps."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    done = min(1.0, (step - optim.warmup_steps) / max(1, optim.max_steps - optim.warmup_steps))
    floor = optim.min_lr_ratio
    return optim.lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * done)))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and kernels only, not on biases and norm scales."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, accelerator: Accelerator) -> dict:
    """Quality metrics of `model` on the val split, gathered across processes."""
    model.eval()
    parts = []
    for batch in loader:
        with accelerator.autocast():
            out = model(batch["image"].float() / 255.0)
        aux = (out["aux"].float(), batch["aux"], batch["has_aux"]) if "aux" in out else ()
        parts.append(accelerator.gather_for_metrics(
            (out["quality"].float(), out["keep_logit"].float(), batch["quality"],
             batch["keep_prob"], *aux)))
    if not parts:
        return {}
    pred, keep_logit, label, keep_prob, *aux = (torch.cat(p).cpu().numpy() for p in zip(*parts))
    names = getattr(accelerator.unwrap_model(model), "aux_targets", [])
    return quality_metrics(pred, label) | {
        "keep_agreement": float(np.mean((keep_logit > 0) == (keep_prob > 0.5)))} | (
        aux_metrics(names, *aux) if aux else {})


def aux_metrics(names: list[str], pred: np.ndarray, target: np.ndarray,
                has: np.ndarray) -> dict:
    """Spearman of each aux target with its label, on the val rows that have it."""
    scores = {}
    for index, name in enumerate(names):
        rows = has[:, index]
        p, t = pred[rows, index], target[rows, index]
        usable = len(p) >= 3 and np.std(p) > 0 and np.std(t) > 0
        scores[f"aux_{name}_srcc"] = (float(stats.spearmanr(p, t).statistic) if usable
                                      else float("nan"))
    return scores


def quality_metrics(pred: np.ndarray, label: np.ndarray) -> dict:
    """SRCC, PLCC, MAE and std(pred) / std(label): below ~0.3 the model predicts the mean."""
    if len(pred) < 3 or np.std(pred) == 0 or np.std(label) == 0:
        return {"srcc": float("nan"), "plcc": float("nan"),
                "mae": float(np.mean(np.abs(pred - label))),
                "std_ratio": float(np.std(pred) / max(np.std(label), 1e-12))}
    return {"srcc": float(stats.spearmanr(pred, label).statistic),
            "plcc": float(stats.pearsonr(pred, label).statistic),
            "mae": float(np.mean(np.abs(pred - label))),
            "std_ratio": float(np.std(pred) / np.std(label))}


def write_outputs(config: TrainConfig, data: TrainData, ema_model: torch.nn.Module,
                  state: Progress, session: dict) -> dict:
    """student.pt (best-val EMA weights, else the last) and model_card.json."""
    run = Path(config.out)
    arch = architecture(config, data)
    student = create_student(config.student.name, init="random", **arch)
    student.load_state_dict(state.best_state or ema_model.state_dict())
    student.eval()
    manifest_path = Path(config.labels) / run_folder.MANIFEST_FILE
    manifest = run_folder.read_manifest(Path(config.labels))
    preprocessing = data.train.preprocessing
    card = {
        "student": config.student.name,
        "architecture": {"registry_name": config.student.name, **arch},
        "parameters": count_parameters(student),
        "flops_at_224": count_flops(student, 224),
        "flops_note": "torch.utils.flop_counter at 1x3x224x224: 2 per multiply-add, "
                      "convolutions and matmuls",
        "init": ema_model.init,
        "teachers": [{"teacher": t.get("teacher"), "weights": [
            {k: w.get(k) for k in ("file", "sha256")} for w in t.get("weights", [])]}
            for t in manifest.get("teachers", [])],
        "labels": {"dir": str(Path(config.labels).resolve()),
                   "manifest_sha256": sha256_file(manifest_path) if manifest_path.exists() else None,
                   **data.summary},
        "function_matching": config.function_matching.enabled,
        **({"aux_targets": data.aux_record()} if data.aux_targets else {}),
        "val_metrics": state.best_metrics,
        "val_metrics_note": (f"EMA weights at step {state.best_step}, the best val SRCC; these "
                             "are the weights in student.pt") if state.best_metrics else
                            "no val split: student.pt holds the last EMA weights",
        "training": {"steps": state.step, "max_steps": config.optim.max_steps,
                     "stopped_early": state.stopped, "ema_decay": config.optim.ema_decay,
                     "torch_threads": torch.get_num_threads(),
                     **session},
        "preprocessing": preprocessing,
        "outputs": output_names(arch["rating_bins"]),
        **({"aux_outputs": data.aux_targets} if data.aux_targets else {}),
        "config": to_dict(config),
        "distill_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    save_student(run / "student.pt", student, config.student.name, arch, preprocessing, card)
    run_folder.write_json(run / "model_card.json", card)
    return card
