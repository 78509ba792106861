"""What `distill train` is configured with: one dataclass per config section (YAML keys)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from distill.errors import ConfigError
from distill.scoring import FACE_COLUMNS, offline_teachers
from students import preprocess
from students.losses import LossConfig


@dataclass
class DataConfig:
    val_fraction: float = 0.1  # of image_ids, by hash
    split_salt: str = "distill-val"
    image_size: int = 224
    # teacher_scale: longer side at most resize_size, default the labeling run's decode.max_side
    # (the pixels the teachers scored); shorter: shorter side to resize_size, default size / 0.93
    resize_mode: str = "teacher_scale"
    resize_size: int | None = None
    hflip: bool = True
    random_crop: bool = True
    cache: bool = False  # decode + resize every image once, into RAM (small pools)
    workers: int = 0  # DataLoader processes decoding ahead
    balanced: bool = True  # sample ∝ inverse frequency of the quality bin
    balance_bins: int = 9  # equal-width bins over 1–10
    balance_power: float = 0.5  # 1 = fully balanced (overshoots: spread > labels), 0 = off

    def __post_init__(self):
        if not 0 <= self.val_fraction < 1:
            raise ConfigError("data.val_fraction must be in [0, 1)")
        if self.resize_mode not in preprocess.RESIZE_MODES:
            raise ConfigError(f"data.resize_mode must be one of "
                              f"{', '.join(preprocess.RESIZE_MODES)}, got {self.resize_mode!r}")
        if self.resize_size is not None and self.resize_size < self.image_size:
            raise ConfigError("data.resize_size must be ≥ data.image_size")


@dataclass
class FunctionMatchingConfig:
    """Beyer et al. 2022: the teachers label the same augmented view the student sees.
    quality, keep_prob and confidence are rescored; rating histograms stay the stored ones."""

    enabled: bool = False
    teachers: dict[str, dict] = field(default_factory=offline_teachers)
    fusion: dict | None = None  # FusionConfig keys; default: the labeling run's fusion


@dataclass
class StudentConfig:
    name: str = "mobilenetv3_small"  # see `students.list_students()`
    init: str = "auto"  # auto: ImageNet file from the weights folder if present, else random
    dropout: float = 0.2
    finetune: str | None = None  # a student.pt to start from (its weights, same architecture)
    # label-shard columns an auxiliary head learns (loss.aux weighs it), e.g. [face_count,
    # face_min_eyes_open]; "faces" stands for every face_* column of the faces teacher
    aux_targets: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not all(isinstance(name, str) for name in self.aux_targets):
            raise ConfigError(f"student.aux_targets must be column names, got {self.aux_targets!r}")
        expanded = [c for name in self.aux_targets
                    for c in (FACE_COLUMNS if name == "faces" else (name,))]
        repeated = sorted({c for c in expanded if expanded.count(c) > 1})
        if repeated:
            raise ConfigError(f"student.aux_targets names {', '.join(repeated)} twice")
        self.aux_targets = expanded


@dataclass
class OptimConfig:
    batch_size: int = 32  # per process
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3  # AdamW peak, after linear warm-up; cosine decay to lr * min_lr_ratio
    min_lr_ratio: float = 0.01
    warmup_steps: int = 100
    max_steps: int = 2000  # optimizer steps
    weight_decay: float = 0.05  # not on biases and norm weights
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999  # 0 = no averaging (the EMA copy just follows the weights)


@dataclass
class TrainConfig:
    labels: str  # output folder of `distill label`
    out: str  # RUN_DIR
    student: StudentConfig = field(default_factory=StudentConfig)
    weights_dir: str | None = None
    seed: int = 0
    mixed_precision: str | None = None  # no | fp16 | bf16; None: accelerate launch's, else no
    cpu_threads: int | None = None  # torch threads per process on CPUs; None: training/threads.py
    tensorboard: bool = True
    log_every: int = 10
    eval_every: int = 100  # steps; evaluates the EMA weights on the val split
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    early_stopping_patience: int | None = 10  # evaluations without a better val SRCC
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    function_matching: FunctionMatchingConfig = field(default_factory=FunctionMatchingConfig)

    def __post_init__(self):
        if self.mixed_precision not in (None, "no", "fp16", "bf16"):
            raise ConfigError("mixed_precision must be no, fp16 or bf16, got "
                              f"{self.mixed_precision!r}")
        if self.mixed_precision == "fp16" and not torch.cuda.is_available():
            raise ConfigError("mixed_precision fp16 needs a GPU; use no (or bf16) on a CPU")
        for key in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be ≥ 1")
