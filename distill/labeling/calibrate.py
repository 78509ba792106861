"""Fit the fusion to human scores: teacher weights, the keep threshold and its temperature.

Images of a labeling run are matched to a human-rated reference (AVA.txt: the file stem of
`path` is the AVA image id). Then:
1. weights: a non-negative least-squares fit of the human mean score on the per-teacher
   `norm_*` columns (scikit-learn's LinearRegression(positive=True)); a teacher that does not
   help gets weight 0. Weights are scaled to mean 1 (only their ratios matter).
2. keep threshold and temperature: a logistic regression of "human mean ≥ 6" on the refitted
   quality, so keep_prob = 0.5 where a person is equally likely to keep or trash, and its
   slope sets the temperature.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import yaml

from distill import run_folder
from distill.config import from_mapping, load_yaml
from distill.errors import DistillError
from distill.human_scores import load_ava
from distill.labeling.fusion import apply_fusion
from distill.scoring import FusionConfig, fuse_columns, score_columns

MIN_MATCHED = 10


def read_reference(reference: Path) -> dict[str, float]:
    labels = load_ava(reference.parent, reference)
    return {item.id: item.score for item in labels.items}


def fit_fusion(labels_dir: Path, reference: Path, base: FusionConfig,
               human_keep: float = 6.0) -> tuple[FusionConfig, dict]:
    """The fusion fitted to the human scores of `reference`, and a report of the fit."""
    # here, not at the top: scikit-learn and scipy.stats take ~1.7 s to import, and every
    # `distill label` and labeling worker imports this package
    from scipy.stats import spearmanr
    from sklearn.linear_model import LinearRegression, LogisticRegression

    table = run_folder.read_labels(labels_dir)
    human = read_reference(reference)
    stems = [Path(p).stem for p in table.column("path").to_pylist()]
    matched = np.array([stem in human for stem in stems])
    if matched.sum() < MIN_MATCHED:
        raise DistillError(f"only {int(matched.sum())} labeled images match ids in {reference} "
                           f"(need {MIN_MATCHED}); ids are the file stems of `path`")
    table = table.filter(matched)
    truth = np.array([human[stem] for stem, hit in zip(stems, matched) if hit])
    raw = score_columns(table)
    teachers = sorted(raw)
    before = fuse_columns(raw, base)
    norms = np.stack([before[f"norm_{t}"] for t in teachers], axis=1)
    usable = ~np.isnan(norms).any(axis=1)

    fit = LinearRegression(positive=True).fit(norms[usable], truth[usable])
    coef = fit.coef_ if fit.coef_.sum() > 0 else np.ones(len(teachers))
    weights = {t: round(float(w), 6) for t, w in zip(teachers, coef / coef.mean())}
    reweighted = FusionConfig(**{**asdict(base), "weights": weights})
    quality = fuse_columns(raw, reweighted)["quality"]

    keep = truth >= human_keep
    result = asdict(reweighted)
    if keep.all() or not keep.any():
        note = f"every matched image is on one side of {human_keep}: threshold left as is"
    else:
        logistic = LogisticRegression(C=1e4).fit(quality[usable, None], keep[usable])
        slope, intercept = float(logistic.coef_[0, 0]), float(logistic.intercept_[0])
        if slope <= 0:
            note = "quality does not rise with human keep: threshold left as is"
        else:
            result.update(keep_threshold=round(-intercept / slope, 4), temperature=round(1 / slope, 4))
            note = "threshold and temperature fitted by logistic regression"
    calibrated = FusionConfig(**result)
    report = {
        "matched": int(matched.sum()), "teachers": teachers, "weights": weights,
        "keep_threshold": calibrated.keep_threshold, "temperature": calibrated.temperature,
        "srcc_before": round(float(spearmanr(before["quality"], truth).statistic), 4),
        "srcc_after": round(float(spearmanr(quality, truth).statistic), 4),
        "note": note,
    }
    return calibrated, report


def save_fusion(path: Path, fusion: FusionConfig) -> None:
    """Write (or update) the `fusion:` section of a YAML config, keeping its other keys."""
    existing = load_yaml(path) if path.is_file() else {}
    existing = existing or {}
    existing["fusion"] = asdict(fusion)
    path.write_text(yaml.safe_dump(existing, sort_keys=False))


def calibrate(labels_dir: str | Path, reference: str | Path, *,
              save_to: str | Path | None = None, apply: bool = False) -> dict:
    """`distill calibrate`: fit the run's fusion to human scores, save it as the `fusion:`
    section of `save_to` (default LABELS/fusion_calibrated.yaml) and, with `apply`, re-fuse
    the shards with it. Returns the fit's report, with where it was saved."""
    labels_dir = Path(labels_dir)
    base = from_mapping(FusionConfig, run_folder.manifest_config(labels_dir, "fusion", {}),
                        "fusion.")
    fitted, report = fit_fusion(labels_dir, Path(reference), base)
    target = Path(save_to) if save_to else labels_dir / "fusion_calibrated.yaml"
    save_fusion(target, fitted)
    if apply:
        apply_fusion(labels_dir, fitted)
    return {**report, "saved": str(target), "applied": apply}
