"""The whole engine end to end, offline: the quickstart at its reduced size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from distill import shards

# Measured with seed 0 at --size small (see README, "Quickstart"): held-out SRCC 0.20 over 25
# images. Chance gives 0 ± 0.2 (1/sqrt(n-1)); the floor demands the student's ordering be
# positively related to the ground truth, and catches a pipeline that trains on the wrong
# targets or on nothing (a constant or shuffled student scores about 0 or below).
SRCC_FLOOR = 0.1


def test_quickstart_small_runs_every_stage(tmp_path):
    workdir = tmp_path / "qs"
    result = subprocess.run([sys.executable, "-m", "distill.cli", "quickstart", "--size", "small",
                             "--workdir", str(workdir), "--no-progress"],
                            capture_output=True, text=True, check=False, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in ("samples", "label", "dedup", "train", "bench"):
        assert any(line.startswith(stage) for line in result.stdout.splitlines()), stage

    pool = sorted((workdir / "pool").glob("*.jpg"))
    manifest = json.loads((workdir / "labels" / "manifest.json").read_text())["summary"]
    assert manifest["inputs"] == len(pool) == manifest["labeled"] + manifest["errors"]
    dedup = pq.read_table(workdir / "labels" / "dedup.parquet")
    assert dedup.num_rows == manifest["labeled"]
    planted = [p for p in pool if p.stem.endswith("-dup")]
    dropped = set(dedup.filter(dedup.column("is_duplicate")).column("image_id").to_pylist())
    ids = {Path(p).stem: i for p, i in zip(*shards.read_labels(workdir / "labels")
                                          .select(["path", "image_id"]).to_pydict().values())}
    caught = sum(1 for p in planted if ids[p.stem] in dropped or ids[p.stem.removesuffix("-dup")] in dropped)
    assert caught == len(planted), "every planted near duplicate (or its original) is dropped"

    card = json.loads((workdir / "student" / "model_card.json").read_text())
    assert card["init"]["kind"] == "random"
    report = json.loads((workdir / "report" / "report.json").read_text())
    bench_images = len(list((workdir / "bench" / "images").glob("*.jpg")))
    assert report["metrics"]["n"] + report["skipped"]["count"] == bench_images
    assert report["model"]["kind"] == "student"
    assert report["metrics"]["srcc"] > SRCC_FLOOR
    assert (workdir / "report" / "report.md").is_file()
