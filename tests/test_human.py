"""`distill ava to-labels`: AVA votes as label shards in the pseudo-label schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from distill import run_folder
from distill.review import ava_to_labels

VOTES = {  # id -> vote counts for 1..10
    "1001": [0, 0, 0, 1, 4, 10, 6, 2, 0, 0],
    "1002": [0, 0, 2, 8, 12, 3, 0, 0, 0, 0],
    "1003": [0, 0, 0, 0, 1, 2, 8, 9, 4, 1],
    "1004": [1, 3, 6, 6, 2, 0, 0, 0, 0, 0],
    "1005": [0, 0, 0, 0, 0, 5, 5, 0, 0, 0],
}


@pytest.fixture()
def ava_root(tmp_path, photo):
    (tmp_path / "images").mkdir()
    lines = []
    for index, (ava_id, votes) in enumerate(VOTES.items()):
        if ava_id != "1005":  # 1005 is listed but its image is missing, as some AVA ids are
            photo.rotate(index * 10).save(tmp_path / "images" / f"{ava_id}.jpg")
        lines.append(f"{index + 1} {ava_id} {' '.join(map(str, votes))} 12 0 3")
    (tmp_path / "AVA.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def _means():
    return {k: float(np.dot(np.arange(1, 11), v) / np.sum(v)) for k, v in VOTES.items()}


def test_threshold_conversion(ava_root, tmp_path):
    summary = ava_to_labels(ava_root, tmp_path / "out", threshold=6.0, progress=False)
    assert (summary["inputs"], summary["labeled"], summary["errors"]) == (5, 4, 1)
    rows = {Path(r["path"]).stem: r for r in run_folder.read_labels(tmp_path / "out").to_pylist()}
    for ava_id, mean in _means().items():
        if ava_id == "1005":
            continue
        row = rows[ava_id]
        assert row["source"] == "human" and row["quality"] == pytest.approx(mean)
        assert row["label"] == ("keep" if mean >= 6 else "trash")
        assert row["tier"] == (0 if mean <= 5 else 1 if mean <= 6 else 2)
        np.testing.assert_allclose(row["dist_human"], np.array(VOTES[ava_id]) / sum(VOTES[ava_id]))
        assert len(row["sha1"]) == 40
    errors = pq.read_table(tmp_path / "out" / "errors.parquet").to_pylist()
    assert len(errors) == 1 and errors[0]["path"].endswith("1005.jpg")


def test_percentile_conversion_via_cli(ava_root, tmp_path):
    result = subprocess.run([sys.executable, "-m", "distill.cli", "ava", "to-labels", "--root",
                             str(ava_root), "--out", str(tmp_path / "out"), "--percentile", "50",
                             "--no-progress"], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    cutoff = float(np.percentile(list(_means().values()), 50))
    rows = run_folder.read_labels(tmp_path / "out").to_pylist()
    assert [r["label"] for r in rows] == ["keep" if r["quality"] >= cutoff else "trash" for r in rows]

