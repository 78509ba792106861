"""Faults and bad inputs outside culling (culling's are in test_cull.py): a resume with other
options (5), a planted training checkpoint (6), and the one-line errors of (10): read-only
and full file systems, unknown teachers, bad numbers, thin panoramas, clashing tar members.

Read-only and full file systems are real tmpfs mounts (root, as in CI), never mocks.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from distill import run_folder
from tests.conftest import fill_up
from tests.test_label import _photos
from tests.test_train import write_label_run


def distill(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env=dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1"))


def assert_one_line(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def photos(skimage_photos, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for index, image in enumerate(_photos(skimage_photos)[:6]):
        image.resize((image.width // 2, image.height // 2)).save(folder / f"p{index}.jpg")
    return folder


def label(source: Path, out: Path, *extra) -> subprocess.CompletedProcess:
    return distill("label", "--source", source, "--out", out, "--teachers", "technical",
                   "--no-progress", *extra)


# ---------------------------------------------------------------- 5: a resume is the same run

@pytest.mark.parametrize("change, key", [
    (["--teachers", "piqe"], "teachers."), (["--shard-size", "4"], "shard_size"),
    (["--max-side", "512"], "decode.max_side")])
def test_5_a_resume_with_other_options_is_refused(change, key, photos, tmp_path):
    out = tmp_path / "run"
    first = label(photos, out, "--shard-size", "2", "--max-shards", "1")
    assert first.returncode == 0, first.stderr
    args = ["--shard-size", "2", *change]
    if change[0] == "--teachers":  # label() names the teachers: replace them
        result = distill("label", "--source", photos, "--out", out, "--no-progress", *args)
    else:
        result = label(photos, out, *args)
    assert_one_line(result, key, "new --out")
    assert sorted(p.name for p in (out / "shards").glob("labels-*")) == ["labels-00000.parquet"]
    done = label(photos, out, "--shard-size", "2")  # the same options finish it
    assert done.returncode == 0 and "labeled 6  errors 0" in done.stdout, done.stderr
    rows = run_folder.read_labels(out).to_pylist()
    assert len(rows) == len({r["image_id"] for r in rows}) == 6
    assert all(set(r) >= {"score_technical"} and "score_piqe" not in r for r in rows)


def test_5_fuse_changes_what_a_resume_must_ask_for(photos, tmp_path):
    out = tmp_path / "run"
    assert label(photos, out).returncode == 0
    assert distill("fuse", "--labels", out, "--keep-threshold", "7").returncode == 0
    assert_one_line(label(photos, out), "fusion.keep_threshold", "distill fuse")


def test_5_a_run_from_before_run_json_keeps_its_source_check(photos, tmp_path):
    """A wrong resume of a run that predates run.json is refused, and records nothing that
    would then refuse the right one."""
    out = tmp_path / "run"
    assert label(photos, out, "--shard-size", "2", "--max-shards", "1").returncode == 0
    (out / "run.json").unlink()  # as a run labeled by an earlier version
    other = tmp_path / "other"
    shutil.copytree(photos, other)
    assert_one_line(label(other, out, "--shard-size", "2"), "another source")
    assert not (out / "run.json").exists()
    done = label(photos, out, "--shard-size", "2")
    assert done.returncode == 0 and "labeled 6  errors 0" in done.stdout, done.stderr


# ---------------------------------------------------------------- 6: no pickles on --resume

class _Planted:
    """Unpickling this creates a file: what a planted checkpoint could do instead."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).touch, ())


def test_6_resume_never_unpickles_a_checkpoint(skimage_photos, tmp_path):
    labels = write_label_run(tmp_path / "labels", skimage_photos, count=12)
    out = tmp_path / "student"
    args = ["train", "--labels", labels, "--out", out, "--student", "tiny", "--max-steps", "4",
            "--batch-size", "4", "--no-progress", "--set", "data.image_size=32",
            "--set", "checkpoint_every=2", "--set", "tensorboard=false"]
    first = distill(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = max((out / "checkpoints").glob("step-*"))
    assert not list(checkpoint.glob("custom_checkpoint*")), "no pickled custom state"
    marker = tmp_path / "code-ran"
    for name in ("custom_checkpoint_0.pkl", "distill_state.pt"):
        with open(checkpoint / name, "wb") as handle:  # a pickle that runs code when loaded
            pickle.dump(_Planted(str(marker)), handle)
    resumed = distill(*args[:-2], "--set", "tensorboard=false", "--max-steps", "6", "--resume")
    assert_one_line(resumed, "cannot be resumed safely")
    assert not marker.exists(), "the planted pickle ran"


# ---------------------------------------------------------------- 10: file systems

@pytest.fixture()
def readonly_run(photos, mount_tmpfs) -> Path:
    """A finished labeling run on a file system that is then made read-only."""
    root = mount_tmpfs("ro", "size=8m")
    assert label(photos, root / "run").returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
    return root / "run"


def test_10_read_only_outputs_are_one_line(photos, readonly_run, skimage_photos, tmp_path):
    assert_one_line(label(photos, readonly_run.parent / "other"), "Read-only file system",
                    str(readonly_run.parent))
    assert_one_line(distill("dedup", "--labels", readonly_run), "Read-only file system")
    labels = write_label_run(tmp_path / "labels", skimage_photos, count=8)
    assert_one_line(distill("train", "--labels", labels, "--out", readonly_run / "student",
                            "--student", "tiny", "--max-steps", "2", "--no-progress"),
                    "Read-only file system")


def test_10_a_full_disk_in_label_and_train_is_one_line(photos, mount_tmpfs, skimage_photos,
                                                       tmp_path):
    full = mount_tmpfs("full", "size=512k")
    (full / "run").mkdir()
    (full / "student").mkdir()
    fill_up(full)
    assert_one_line(label(photos, full / "run"), "No space left on device", str(full / "run"))
    assert not list((full / "run").rglob("*.partial")), "no partial file left behind"
    labels = write_label_run(tmp_path / "labels", skimage_photos, count=8)
    assert_one_line(distill("train", "--labels", labels, "--out", full / "student", "--student",
                            "tiny", "--max-steps", "2", "--no-progress",
                            "--set", "tensorboard=false"), "No space left on device",
                    str(full / "student"))


# ---------------------------------------------------------------- 10: bad options and inputs

def test_10_bad_label_options_are_one_line(photos, tmp_path):
    assert_one_line(label(photos, tmp_path / "a", "--teachers", "nonsense"),
                    "unknown teacher 'nonsense'")
    result = label(photos, tmp_path / "b", "--max-shards", "-1")
    assert result.returncode == 2 and "--max-shards" in result.stderr
    assert "Traceback" not in result.stderr
    assert_one_line(label(photos, tmp_path / "c", "--max-side", "0"), "decode.max_side")
    config = tmp_path / "label.yaml"
    config.write_text(f"source: {{kind: folder, root: {photos}}}\nout: {tmp_path / 'd'}\n"
                      "decode: {max_side: -5}\n")
    assert_one_line(distill("label", "--config", config), "decode.max_side")


def test_10_a_thin_panorama_is_an_error_row_with_a_reason(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (8000, 64), (120, 90, 60)).save(folder / "strip.png")
    noise = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "fine.png")
    Image.new("RGB", (300, 200), (120, 90, 60)).save(folder / "flat.png")
    result = distill("label", "--source", folder, "--out", tmp_path / "run", "--no-progress",
                     "--teachers", "brisque,technical")
    assert result.returncode == 0, result.stderr
    errors = pq.read_table(tmp_path / "run" / "errors.parquet").to_pylist()
    assert sorted((Path(e["path"]).name, e["stage"]) for e in errors) == [
        ("flat.png", "teacher"), ("strip.png", "decode")]
    reasons = {Path(e["path"]).name: e["reason"] for e in errors}
    assert "too thin: 8000x64 becomes 768x6" in reasons["strip.png"]
    assert "brisque" in reasons["flat.png"] and "flat" in reasons["flat.png"]
    labels = pq.read_table(run_folder.labels_path(tmp_path / "run", 0)).to_pylist()
    assert [Path(row["path"]).name for row in labels] == ["fine.png"]


def test_10_a_tar_with_a_repeated_member_names_the_key(photos, tmp_path):
    shard = tmp_path / "00000.tar"
    with tarfile.open(shard, "w") as archive:
        for folder in ("a", "b"):
            data = (photos / "p0.jpg").read_bytes()
            info = tarfile.TarInfo(f"{folder}/0001.jpg")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    assert_one_line(label(shard, tmp_path / "run"), "'00000/0001'", "twice")


def test_10_the_error_boundary_leaves_real_bugs_as_tracebacks():
    """Only user and OS errors become one line: a bug must still show where it is."""
    from distill.errors import error_line

    assert error_line(OSError(28, "No space left on device", "/x/y")) == \
        "/x/y: No space left on device"
    assert error_line(KeyError("bug")) is None


def test_10_atomic_writes_leave_nothing_on_a_full_disk(mount_tmpfs):
    full = mount_tmpfs("full", "size=256k")
    fill_up(full)
    with pytest.raises(OSError) as caught:
        run_folder.write_json(full / "big.json", {"rows": list(range(200_000))})
    assert caught.value.filename == str(full / "big.json")
    assert [p.name for p in full.iterdir()] == ["filler"], "no partial file left behind"
    (full / "filler").unlink()
    run_folder.write_json(full / "big.json", {"rows": [1]})
    assert (full / "big.json").exists()


def test_11_partials_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    import socket
    import subprocess
    import sys

    from distill import safefs

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    host = socket.gethostname()
    stale = tmp_path / f".labels-00003.parquet.{host}.{dead.stdout.strip()}.a1b2c3.partial"
    live = tmp_path / f".labels-00004.parquet.{host}.{os.getpid()}.d4e5f6.partial"
    elsewhere = tmp_path / f".labels-00005.parquet.other-host.{dead.stdout.strip()}.0a0b0c.partial"
    # a writer killed but not yet reaped by its parent (a zombie) is dead too: kill(pid, 0)
    # finds it, and its partial used to stay
    zombie = subprocess.Popen(["true"])
    os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped
    undead = tmp_path / f".labels-00006.parquet.{host}.{zombie.pid}.0d0e0f.partial"
    for path in (stale, live, elsewhere, undead):
        path.write_bytes(b"half a shard")
    try:
        assert sorted(safefs.remove_stale_partials(tmp_path)) == [stale, undead]
    finally:
        zombie.wait()
    assert not stale.exists() and not undead.exists() and live.exists() and elsewhere.exists()
