"""The one rule set: teacher sets, and how raw teacher scores become one quality on AVA's
1–10 scale, keep_prob, label and tier. Every stage that needs one of these asks here.

1. Orient and normalise every teacher to [0, 1], 1 = best:
   - `reference` (default): a fixed [worst, best] range per teacher (`REFERENCE_RANGES`),
     clipped. Labels then do not depend on what else is in the pool, so shards labeled in
     different runs are comparable and adding images never relabels old ones.
   - `rank`: the percentile rank within the run (ties averaged). Robust to a teacher's scale,
     but relative: the same photo gets another norm in another pool.
2. `quality = 1 + 9 * weighted mean of the norms` (a teacher that failed on an image is left
   out of that image's mean).
3. `keep_prob = sigmoid((quality - keep_threshold) / temperature)`; `label = keep` when
   quality ≥ keep_threshold, or when the image is in the top `keep_top_percent` % of the run.
4. `tier`: digiKam's three classes, 0 rejected (≤ 5), 1 pending (5, 6], 2 accepted (> 6).
5. `confidence = 1 - 2 * std of the norms across teachers` (0.5 is the largest possible std
   of values in [0, 1], so 1 = all teachers agree, 0 = they split to the extremes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import pyarrow as pa
import yaml
from scipy.special import expit

from distill.errors import ConfigError

# Named teacher sets (`offline`, `full`), package data so that a wheel behaves as a checkout.
TEACHER_SETS: dict[str, dict[str, dict]] = yaml.safe_load(
    resources.files("distill").joinpath("teacher_sets.yaml").read_text())
OFFLINE_TEACHERS: tuple[str, ...] = tuple(TEACHER_SETS["offline"])  # need no download
TIER_BOUNDARIES = (5.0, 6.0)  # digiKam's classes: rejected ≤ 5 < pending ≤ 6 < accepted
TIER_NAMES = ("rejected", "pending", "accepted")


def offline_teachers() -> dict[str, dict]:
    """The offline set as a teachers mapping (a fresh dict: callers may edit it)."""
    return {name: dict(opts or {}) for name, opts in TEACHER_SETS["offline"].items()}


def expand_teacher_sets(names: Sequence[str]) -> tuple[list[str], dict[str, dict]]:
    """Replace a named set (e.g. `offline`) by its teachers; returns (names, their options)."""
    expanded: dict[str, dict] = {}
    for name in (n.strip() for n in names if n.strip()):
        members = TEACHER_SETS.get(name) or {name: {}}
        for teacher, opts in members.items():
            expanded.setdefault(teacher, {}).update(opts or {})
    return list(expanded), {k: v for k, v in expanded.items() if v}


def parse_teacher_options(options: Iterable[str]) -> dict[str, dict[str, object]]:
    """`nima.backbone=vgg16` → {"nima": {"backbone": "vgg16"}}; values parse as YAML scalars."""
    parsed: dict[str, dict[str, object]] = {}
    for option in options:
        key, sep, value = option.partition("=")
        teacher, dot, name = key.partition(".")
        if not (sep and dot and teacher and name):
            raise ConfigError(f"bad teacher option {option!r}; expected TEACHER.KEY=VALUE")
        from distill.config import parse_yaml  # config builds on this module

        parsed.setdefault(teacher, {})[name] = parse_yaml(value, f"option {key}")
    return parsed


def tier(quality, boundaries: Sequence[float] = TIER_BOUNDARIES):
    """digiKam's three classes on the 1–10 scale: 0 (≤ low), 1 (≤ high), 2 (above).
    A scalar gives an int, an array an int8 array."""
    low, high = boundaries
    quality = np.asarray(quality, dtype=np.float64)
    tiers = np.where(quality <= low, 0, np.where(quality <= high, 1, 2)).astype(np.int8)
    return int(tiers) if tiers.ndim == 0 else tiers


def keep_prob(quality, threshold: float, temperature: float):
    """sigmoid((quality - threshold) / temperature): a scalar for a scalar, else an array."""
    probability = expit((np.asarray(quality, dtype=np.float64) - threshold) / temperature)
    return float(probability) if np.ndim(probability) == 0 else probability


# The per-photo measures the `faces` teacher writes as label-shard columns (teachers.faces
# `summary`): what `train --aux faces` learns and `bench` compares a student with.
FACE_COLUMNS = ("face_count", "face_eyes_closed", "face_min_sharpness", "face_min_eyes_open",
                "face_exposure")

# [worst, best] per teacher on its native scale; set from the teachers' published ranges and
# from their scores on clean vs. distorted photos (pyiqa's calibration set, skimage's data).
REFERENCE_RANGES = {
    "brisque": (100.0, 0.0),
    "piqe": (90.0, 10.0),
    "niqe": (12.0, 2.0),
    "nima": (3.0, 7.0),  # AVA means sit in 3–7; NIMA rarely leaves it
    "clip_aesthetic": (3.0, 8.0),
    "technical": (0.4, 1.0),
    "faces": (0.0, 1.0),  # share of faces with open eyes; 1 without faces
}
DEFAULT_WEIGHTS = {"brisque": 1.0, "piqe": 1.0, "niqe": 1.0, "technical": 1.0, "nima": 2.0,
                   "clip_aesthetic": 2.0, "faces": 1.0}


@dataclass
class FusionConfig:
    normalisation: str = "reference"  # reference | rank
    weights: dict[str, float] = field(default_factory=dict)  # default: DEFAULT_WEIGHTS
    reference_ranges: dict[str, list[float]] = field(default_factory=dict)  # [worst, best]
    keep_threshold: float = 6.0
    keep_top_percent: float | None = None
    temperature: float = 0.5
    tier_boundaries: list[float] = field(default_factory=lambda: [5.0, 6.0])

    def __post_init__(self):
        if self.normalisation not in ("reference", "rank"):
            raise ConfigError(f"fusion.normalisation must be reference or rank, got {self.normalisation!r}")
        if self.temperature <= 0:
            raise ConfigError("fusion.temperature must be > 0")
        if len(self.tier_boundaries) != 2 or self.tier_boundaries[0] > self.tier_boundaries[1]:
            raise ConfigError("fusion.tier_boundaries must be two increasing numbers")
        if self.keep_top_percent is not None and not 0 < self.keep_top_percent < 100:
            raise ConfigError("fusion.keep_top_percent must be in (0, 100)")

    def weight(self, teacher: str) -> float:
        return float(self.weights.get(teacher, DEFAULT_WEIGHTS.get(teacher, 1.0)))

    def reference_range(self, teacher: str) -> tuple[float, float]:
        if teacher in self.reference_ranges:
            worst, best = self.reference_ranges[teacher]
            return float(worst), float(best)
        if teacher not in REFERENCE_RANGES:
            raise ConfigError(f"fusion.reference_ranges: no range for teacher {teacher!r}")
        return REFERENCE_RANGES[teacher]


def normalise(scores: np.ndarray, teacher: str, config: FusionConfig,
              higher_is_better: bool | None = None) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if config.normalisation == "reference":
        worst, best = config.reference_range(teacher)
        return np.clip((scores - worst) / (best - worst), 0.0, 1.0)
    if higher_is_better is None:
        worst, best = config.reference_range(teacher)
        higher_is_better = best > worst
    # imported here: scipy.stats takes ~0.6 s, and every labeling worker imports this module
    # without ever ranking (only fusion ranks)
    from scipy.stats import rankdata

    norm = np.full_like(scores, np.nan)
    valid = ~np.isnan(scores)
    oriented = scores[valid] if higher_is_better else -scores[valid]
    norm[valid] = (rankdata(oriented) - 0.5) / max(valid.sum(), 1)
    return norm


def fuse_columns(raw: dict[str, np.ndarray], config: FusionConfig) -> dict[str, np.ndarray]:
    """raw: teacher → native scores (N,). Returns norm_<teacher> and the fused columns."""
    teachers = sorted(raw)
    if not teachers:
        raise ConfigError("fusion needs at least one teacher score column")
    norms = np.stack([normalise(raw[t], t, config) for t in teachers], axis=1)
    weights = np.array([config.weight(t) for t in teachers])
    present = ~np.isnan(norms)
    weighted = np.where(present, norms, 0.0) @ weights
    total = present.astype(np.float64) @ weights
    with np.errstate(invalid="ignore", divide="ignore"):
        fused = weighted / total
    quality = 1.0 + 9.0 * fused
    keep = quality >= config.keep_threshold
    if config.keep_top_percent is not None and len(quality):
        cutoff = np.nanpercentile(quality, 100.0 - config.keep_top_percent)
        keep |= quality >= cutoff
    spread = np.nanstd(norms, axis=1) if norms.shape[1] > 1 else np.zeros(len(quality))
    columns = {f"norm_{t}": norms[:, i] for i, t in enumerate(teachers)}
    columns.update(
        quality=quality,
        keep_prob=keep_prob(quality, config.keep_threshold, config.temperature),
        label=np.where(keep, "keep", "trash"),
        tier=tier(quality, config.tier_boundaries),
        confidence=np.clip(1.0 - 2.0 * spread, 0.0, 1.0),
    )
    return columns


def score_columns(table: pa.Table) -> dict[str, np.ndarray]:
    return {name.removeprefix("score_"): table.column(name).to_numpy(zero_copy_only=False)
            for name in table.column_names if name.startswith("score_")}


def apply(table: pa.Table, config: FusionConfig) -> pa.Table:
    """Replace a table's norm_* and fused columns with ones recomputed from its score_*."""
    fused = fuse_columns(score_columns(table), config)
    keep = [c for c in table.column_names if c not in fused]
    result = table.select(keep)
    for name, values in fused.items():
        result = result.append_column(name, pa.array(values))
    return result
