"""A student's score table (one row per photo: quality, keep probability, rating bins) as the
predictions every caller reads, `cull` and `bench` alike.

A row with a value that is not finite (a diverged fp16 run predicts NaN; an overflow, inf) is
no score: it is that photo's error, with its reason, and its numbers are not to be used."""

from __future__ import annotations

import numpy as np


def as_predictions(scores: np.ndarray, aux: np.ndarray | None = None,
                   aux_names: list[str] = ()) -> dict:
    """(N, 2 [+ bins]) scores [and (N, K) aux] → {"quality", "keep_prob"[, "rating"][, "aux":
    {name: (N,)}], "errors": {row: reason}}. Errors come from the scores alone: an aux value
    that is not finite is NaN in its column, the photo's keep/trash still stands."""
    result = {"quality": scores[:, 0], "keep_prob": scores[:, 1]}
    if scores.shape[1] > 2:
        result["rating"] = scores[:, 2:]
    if aux is not None:
        aux = np.where(np.isfinite(aux), aux, np.nan)
        result["aux"] = {name: aux[:, index] for index, name in enumerate(aux_names)}
    result["errors"] = {
        int(row): f"the student predicted a non-finite score (quality {scores[row, 0]}, "
                  f"keep_prob {scores[row, 1]}): a diverged or damaged model"
        for row in np.flatnonzero(~np.isfinite(scores).all(axis=1))}
    return result
