"""Benchmark metrics: correlations, thresholded keep/trash metrics, ROC-AUC, calibration, CIs.

All metrics come from scipy and scikit-learn; this module only decides what is compared with
what. Three views of one model's predictions are needed:

- `oriented`: the model's score with higher = better (a lower-is-better teacher's score is
  negated). Correlations (SRCC, PLCC, KRCC) compare it with the dataset's native ground truth.
  PLCC is plain Pearson on the raw score, without the VQEG logistic fit.
- `quality`: a prediction on the 1–10 culling scale, for RMSE and the thresholded metrics.
  A model that predicts on 1–10 supplies it; for any other teacher it is made by quantile
  matching (`quantile_match`): the i-th ranked prediction gets the ground truth's own quantile
  at that rank. This borrows the test set's marginal score distribution (not any per-image
  pairing), so such thresholded metrics measure ranking at the dataset's base rates and are
  optimistic about calibration; reports say so beside the numbers.
- `keep_score`: what ROC-AUC ranks against (true ≥ keep threshold). A student's keep
  probability; for a teacher, the oriented score (ROC-AUC depends on ranks only). The
  calibration curve min-max scales a non-probability to [0, 1]: its shape, not its values, is
  what it shows for teachers.

Classes: binary at 5 is the AVA convention (positive: score > 5); binary at the keep threshold
uses score ≥ threshold (as the ROC-AUC target); the three tiers are ≤ 5, (5, 6], > 6.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    root_mean_squared_error,
)

from distill.scoring import tier

TIER_LABELS = ("<=5", "(5,6]", ">6")
AVA_BINARY_THRESHOLD = 5.0
DEFAULT_KEEP_THRESHOLD = 6.0
CALIBRATION_BINS = 10


def quantile_match(oriented: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Give each prediction the reference's value at the prediction's rank (ties share a rank)."""
    positions = (stats.rankdata(oriented) - 0.5) / len(oriented)
    return np.quantile(np.asarray(reference, dtype=np.float64), positions)


def min_max(values: np.ndarray) -> np.ndarray:
    span = values.max() - values.min()
    return np.full_like(values, 0.5) if span == 0 else (values - values.min()) / span


def _number(value) -> float | None:
    value = float(value)
    return None if not np.isfinite(value) else value


def _correlation(kind: str):
    function = {"srcc": stats.spearmanr, "plcc": stats.pearsonr, "krcc": stats.kendalltau}[kind]

    def statistic(truth, predicted):
        with warnings.catch_warnings():  # a constant input is reported as null, not a warning
            warnings.simplefilter("ignore")
            return function(truth, predicted).statistic

    return statistic


def _accuracy_at(threshold: float, above):
    def statistic(truth, predicted):
        return accuracy_score(above(truth, threshold), above(predicted, threshold))

    return statistic


def _greater(values, threshold):
    return np.asarray(values) > threshold


def _at_least(values, threshold):
    return np.asarray(values) >= threshold


def bootstrap_ci(statistic, truth: np.ndarray, predicted: np.ndarray, *, n_resamples: int,
                 seed: int) -> list[float | None]:
    """Paired percentile bootstrap 95 % CI (scipy.stats.bootstrap), seeded."""
    if len(truth) < 3 or n_resamples < 1:
        return [None, None]
    with warnings.catch_warnings():  # degenerate resamples give a NaN interval → null
        warnings.simplefilter("ignore")
        result = stats.bootstrap(
            (truth, predicted), statistic, paired=True, vectorized=False,
            n_resamples=n_resamples, confidence_level=0.95, method="percentile",
            rng=np.random.default_rng(seed),
        )
    return [_number(result.confidence_interval.low), _number(result.confidence_interval.high)]


def binary_report(truth: np.ndarray, predicted: np.ndarray, threshold: float, above,
                  names: tuple[str, str]) -> dict:
    y_true, y_pred = above(truth, threshold), above(predicted, threshold)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=[False, True], zero_division=0)
    return {
        "threshold": threshold,
        "positive": f"score {'>' if above is _greater else '>='} {threshold:g}",
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(names, precision, recall, f1, support)
        },
    }


def three_class_report(truth10: np.ndarray, quality10: np.ndarray) -> dict:
    y_true, y_pred = tier(truth10), tier(quality10)
    labels = list(range(len(TIER_LABELS)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    return {
        "labels": list(TIER_LABELS),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, labels=labels, average="macro",
                                   zero_division=0)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(TIER_LABELS, precision, recall, f1, support)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "confusion_axes": "rows: true tier, columns: predicted tier",
    }


def roc_and_calibration(truth10: np.ndarray, keep_score: np.ndarray, keep_threshold: float,
                        is_probability: bool) -> tuple[dict, dict]:
    y_true = _at_least(truth10, keep_threshold)
    if y_true.all() or not y_true.any():
        roc = {"value": None, "reason": f"every test image is on one side of {keep_threshold:g}"}
    else:
        roc = {"value": float(roc_auc_score(y_true, keep_score))}
    probability = keep_score if is_probability else min_max(keep_score)
    prob_true, prob_pred = calibration_curve(y_true, probability, n_bins=CALIBRATION_BINS)
    calibration = {
        "n_bins": CALIBRATION_BINS, "strategy": "uniform",
        "prob_true": prob_true.tolist(), "prob_pred": prob_pred.tolist(),
        "input": "keep probability" if is_probability
        else "oriented score min-max scaled to [0, 1] (not a probability: shape only)",
    }
    return roc, calibration


def compute_metrics(truth: np.ndarray, truth10: np.ndarray, oriented: np.ndarray,
                    quality10: np.ndarray, keep_score: np.ndarray, *,
                    keep_is_probability: bool = False,
                    keep_threshold: float = DEFAULT_KEEP_THRESHOLD,
                    n_resamples: int = 1000, seed: int = 0) -> dict:
    """Every metric of one model on one test set; arrays are aligned, one entry per image."""
    truth, truth10, oriented, quality10, keep_score = (
        np.asarray(a, dtype=np.float64) for a in (truth, truth10, oriented, quality10, keep_score))
    correlations = {kind: _correlation(kind) for kind in ("srcc", "plcc", "krcc")}
    accuracies = {
        "accuracy_at_5": (_accuracy_at(AVA_BINARY_THRESHOLD, _greater), truth10, quality10),
        "accuracy_at_keep": (_accuracy_at(keep_threshold, _at_least), truth10, quality10),
    }
    ci = {kind: bootstrap_ci(fn, truth, oriented, n_resamples=n_resamples, seed=seed)
          for kind, fn in correlations.items()}
    ci.update({name: bootstrap_ci(fn, t, p, n_resamples=n_resamples, seed=seed)
               for name, (fn, t, p) in accuracies.items()})
    roc, calibration = roc_and_calibration(truth10, keep_score, keep_threshold,
                                           keep_is_probability)
    return {
        "n": len(truth),
        "correlation_of": "native ground truth vs oriented score (higher = better)",
        **{kind: _number(fn(truth, oriented)) if len(truth) > 1 else None
           for kind, fn in correlations.items()},
        "rmse_1_10": float(root_mean_squared_error(truth10, quality10)),
        "binary_at_5": binary_report(truth10, quality10, AVA_BINARY_THRESHOLD, _greater,
                                     ("low", "high")),
        "binary_at_keep": binary_report(truth10, quality10, keep_threshold, _at_least,
                                        ("trash", "keep")),
        "three_class": three_class_report(truth10, quality10),
        "roc_auc": roc,
        "calibration": calibration,
        "ci95": ci,
        "bootstrap": {"n_resamples": n_resamples, "method": "percentile, paired",
                      "seed": seed, "library": "scipy.stats.bootstrap"},
    }


def face_agreement(teacher: dict[str, np.ndarray], student: dict[str, np.ndarray]) -> dict:
    """A student's aux heads against the faces teacher's columns, image by image.

    Per face_* column both have: Spearman, Pearson and MAE on the images where the teacher
    measured it (face_min_eyes_open exists only where it found a face). Then two verdicts
    as a photographer uses them: `has_face` (teacher face_count > 0 vs the student's
    rounded count, over every image) and `any_eyes_closed` (over the images the teacher found
    faces in: teacher face_eyes_closed > 0, or its least open eye below the teacher's own
    threshold, against the student's predicted count ≥ 0.5 or least open eye below it), each
    with accuracy, balanced accuracy, ROC-AUC of the student's continuous output, support."""
    from teachers.faces import EYES_CLOSED_BELOW

    report: dict = {"teacher": "faces", "columns": {}}
    for name in sorted(set(teacher) & set(student)):
        rows = np.isfinite(teacher[name]) & np.isfinite(student[name])
        t, s = teacher[name][rows], student[name][rows]
        report["columns"][name] = {
            "n": int(rows.sum()),
            "srcc": _number(_correlation("srcc")(t, s)) if rows.sum() > 2 else None,
            "plcc": _number(_correlation("plcc")(t, s)) if rows.sum() > 2 else None,
            "mae": float(np.mean(np.abs(t - s))) if rows.any() else None}
    if "face_count" in teacher and "face_count" in student:
        counted = np.isfinite(teacher["face_count"])  # images the faces teacher labeled
        report["has_face"] = verdict_agreement(teacher["face_count"][counted] > 0,
                                               student["face_count"][counted], 0.5)
    with_faces = (teacher["face_count"] > 0 if "face_count" in teacher
                  else np.isfinite(teacher.get("face_min_eyes_open", np.array([]))))
    if "face_eyes_closed" in teacher:
        closed = teacher["face_eyes_closed"] > 0
    else:
        closed = teacher.get("face_min_eyes_open", np.array([])) < EYES_CLOSED_BELOW
    if "face_eyes_closed" in student:
        report["any_eyes_closed"] = verdict_agreement(
            closed[with_faces], student["face_eyes_closed"][with_faces], 0.5)
        report["any_eyes_closed"]["student_output"] = "face_eyes_closed >= 0.5"
    elif "face_min_eyes_open" in student:
        report["any_eyes_closed"] = verdict_agreement(
            closed[with_faces], -student["face_min_eyes_open"][with_faces], -EYES_CLOSED_BELOW)
        report["any_eyes_closed"]["student_output"] = (f"face_min_eyes_open < "
                                                       f"{EYES_CLOSED_BELOW:g}")
    return report


def verdict_agreement(truth: np.ndarray, score: np.ndarray, threshold: float) -> dict:
    """A yes/no verdict of the teacher against the student's score (yes when ≥ threshold)."""
    usable = np.isfinite(score)
    truth, score = np.asarray(truth, bool)[usable], score[usable]
    if not len(truth):
        return {"n": 0, "accuracy": None, "balanced_accuracy": None, "roc_auc": None}
    predicted = score >= threshold
    both = truth.any() and not truth.all()
    return {"n": len(truth), "positives": int(truth.sum()),
            "accuracy": float(accuracy_score(truth, predicted)),
            "balanced_accuracy": float(balanced_accuracy_score(truth, predicted)) if both else None,
            "roc_auc": float(roc_auc_score(truth, score)) if both else None}
