"""Scoring worker processes: the same rows as scoring in this process, and nothing lost when
a worker or the labeling process itself is killed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from distill import label, run_folder
from distill.errors import DistillError
from tests.test_label import GOOD, _rows, photo_folder  # noqa: F401 - a fixture

OPTIONS = {"shard_size": 2, "batch_size": 2, "progress": False}


def test_workers_label_exactly_what_this_process_does(photo_folder, tmp_path):  # noqa: F811
    for count in (0, 1, 3):
        summary = label(source=str(photo_folder), out=str(tmp_path / f"w{count}"),
                        score_workers=count, **OPTIONS)
        assert summary["labeled"] == GOOD
    assert _rows(tmp_path / "w1") == _rows(tmp_path / "w0")
    assert _rows(tmp_path / "w3") == _rows(tmp_path / "w0")


def _start(folder: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "distill.cli", "label", "--source", str(folder), "--out", str(out),
         "--shard-size", "1", "--batch-size", "1", "--score-workers", "2", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_shard(out: Path, index: int) -> None:
    deadline = time.monotonic() + 120
    while not run_folder.labels_path(out, index).exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def _workers(process: subprocess.Popen) -> list[psutil.Process]:
    """The scoring workers: children of the fork server, itself a child of the labeler."""
    return [p for p in psutil.Process(process.pid).children(recursive=True)
            if p.ppid() != process.pid]


def test_a_killed_worker_stops_the_run_and_the_rerun_completes_it(photo_folder, tmp_path):  # noqa: F811
    clean = tmp_path / "clean"
    label(source=str(photo_folder), out=str(clean), score_workers=0, **OPTIONS)

    killed = tmp_path / "killed"
    process = _start(photo_folder, killed)
    _wait_for_shard(killed, 1)
    workers_now = _workers(process)
    assert len(workers_now) == 2, workers_now
    workers_now[0].kill()  # as the OOM killer would
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    assert "scoring worker process died" in stderr and "run the same command" in stderr, stderr
    assert 2 <= len(run_folder.completed_shards(killed)) < GOOD

    assert label(source=str(photo_folder), out=str(killed), shard_size=1, batch_size=1,
                 progress=False)
    assert _rows(killed) == _rows(clean)


def test_killing_the_labeling_process_leaves_no_worker_behind(photo_folder, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    process = _start(photo_folder, out)
    _wait_for_shard(out, 0)
    descendants = psutil.Process(process.pid).children(recursive=True)
    assert len(_workers(process)) == 2
    process.kill()
    process.communicate(timeout=30)  # EOF only once every worker has closed the pipes
    _, alive = psutil.wait_procs(descendants, timeout=10)
    assert not alive, f"still running after the labeler was killed: {alive}"


def test_a_teacher_only_this_process_knows_is_named_not_a_dead_worker(photo_folder, tmp_path):  # noqa: F811
    import open_clip
    import torch

    from teachers.clip_aesthetic import build_head
    from tests.test_clip_aesthetic import TINY

    open_clip.add_model_config(TINY)  # in this process only: the workers never see it
    torch.save(open_clip.create_model("distill-tiny-clip").state_dict(), tmp_path / "clip.pt")
    torch.save(build_head("mlp", 32).state_dict(), tmp_path / "head.pth")
    clip = {"arch": "distill-tiny-clip", "head": "mlp", "clip_weights": str(tmp_path / "clip.pt"),
            "head_weights": str(tmp_path / "head.pth")}
    with pytest.raises(DistillError, match="could not make its teachers.*--score-workers 0"):
        label(source=str(photo_folder), out=str(tmp_path / "out"), score_workers=2,
              teachers=None, config={"teachers": {"technical": {}, "clip_aesthetic": clip}},
              **OPTIONS)
