"""A student's score table (one row per photo: quality, keep probability, rating bins) as the
predictions every caller reads, `cull` and `bench` alike.

A row with a value that is not finite (a diverged fp16 run predicts NaN; an overflow, inf) is
no score: it is that photo's error, with its reason, and its numbers are not to be used."""

from __future__ import annotations

import numpy as np


def as_predictions(scores: np.ndarray) -> dict:
    """(N, 2 [+ bins]) scores → {"quality", "keep_prob"[, "rating"], "errors": {row: reason}}."""
    result = {"quality": scores[:, 0], "keep_prob": scores[:, 1]}
    if scores.shape[1] > 2:
        result["rating"] = scores[:, 2:]
    result["errors"] = {
        int(row): f"the student predicted a non-finite score (quality {scores[row, 0]}, "
                  f"keep_prob {scores[row, 1]}): a diverged or damaged model"
        for row in np.flatnonzero(~np.isfinite(scores).all(axis=1))}
    return result
