"""`distill train` as a call: a YAML config, `--set KEY.PATH=VALUE` overrides and the named
options, merged in that order into one `TrainConfig`."""

from __future__ import annotations

from pathlib import Path

from distill.config import from_mapping, load_yaml, parse_yaml
from distill.errors import ConfigError
from distill.training.config import TrainConfig
from distill.training.loop import run_train
from students.checkpoint import load_student
from students.preprocess import RESIZE_MODES


def _set(mapping: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        mapping = mapping.setdefault(key, {}) if isinstance(mapping.get(key, {}), dict) else {}
    mapping[leaf] = value


def build_train_config(config: str | Path | dict | None, flags: dict,
                       overrides: tuple[str, ...] = ()) -> TrainConfig:
    """YAML (optional) ← KEY.PATH=VALUE overrides ← the named flags; then `from_mapping`."""
    mapping = dict(config) if isinstance(config, dict) else load_yaml(config) if config else {}
    for override in overrides:
        key, sep, value = override.partition("=")
        if not (sep and key.strip()):
            raise ConfigError(f"--set {override!r}: expected KEY.PATH=VALUE, e.g. optim.lr=3e-4")
        _set(mapping, key.strip(), parse_yaml(value, f"--set {key.strip()}"))
    for dotted, value in flags.items():
        if value is not None:
            _set(mapping, dotted, value)
    for key, flag in (("labels", "--labels"), ("out", "--out")):
        if key not in mapping:
            raise ConfigError(f"give {flag} (or `{key}:` in --config)")
    return from_mapping(TrainConfig, mapping)


def finetune_flags(finetune: str | Path, student: str | None) -> dict:
    """Fine-tuning keeps the base student's architecture and the pixels it was trained on."""
    base = load_student(finetune)
    modes = {description: mode for mode, description in RESIZE_MODES.items()}
    return {"student.finetune": str(finetune), "student.name": student or base.name,
            "data.image_size": base.preprocessing["image_size"],
            "data.resize_mode": modes[base.preprocessing["resize"]],
            "data.resize_size": base.preprocessing["resize_size"]}


def train(config: str | Path | dict | None = None, *, labels: str | None = None,
          student: str | None = None, out: str | None = None, init: str | None = None,
          max_steps: int | None = None, batch_size: int | None = None,
          grad_accum: int | None = None, lr: float | None = None,
          mixed_precision: str | None = None, function_matching: bool | None = None,
          overrides: tuple[str, ...] = (), weights_dir: str | None = None,
          finetune: str | Path | None = None, resume: bool = False,
          aux: str | list[str] | None = None, progress: bool = True) -> dict:
    """`distill train`: distill a labeling run into a student; returns the model card (on the
    main process; {} on the others). `aux`: aux targets, a list or comma-separated
    (`faces` = every face_* column)."""
    if isinstance(aux, str):
        aux = [name.strip() for name in aux.split(",") if name.strip()]
    flags = {"labels": labels, "student.name": student, "out": out, "student.init": init,
             "optim.max_steps": max_steps, "optim.batch_size": batch_size,
             "optim.grad_accum": grad_accum, "optim.lr": lr, "mixed_precision": mixed_precision,
             "function_matching.enabled": function_matching, "weights_dir": weights_dir,
             "student.aux_targets": aux}
    if finetune:
        flags.update(finetune_flags(finetune, student))
    return run_train(build_train_config(config, flags, tuple(overrides)), resume=resume,
                     progress_bar=progress)
