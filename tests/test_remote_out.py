"""A run folder on object storage (`--out s3://bucket/run`, `distill.remote_run`), against a
real S3 server on 127.0.0.1 (conftest's `s3_server`): labeled, killed at an exact push and
resumed, read back by a later stage through the mirror, and its one-line refusals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner
from PIL import Image

from distill import remote_run, run_folder
from distill.errors import ConfigError, DistillError
from tests.conftest import s3_filesystem

OPTIONS = {"teachers": "technical", "shard_size": 2, "batch_size": 2, "score_workers": 0,
           "progress": False}
PHOTOS = 5  # three shards: 2 + 2 + 1


@pytest.fixture(scope="module")
def photos(skimage_photos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name, path in list(skimage_photos.items())[:PHOTOS]:
        image = Image.open(path).convert("RGB")
        image.thumbnail((128, 128))
        image.save(folder / f"{name}.jpg", quality=90)
    return folder


@pytest.fixture(scope="module")
def runs_bucket(s3_server, tmp_path_factory):
    """s3://runs, and a cache of this module's own for default staging folders."""
    s3_filesystem().mkdir("runs")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield s3_server


@pytest.fixture(scope="module")
def local_run(photos, tmp_path_factory):
    """The same photos labeled into a local folder: what a remote run must equal."""
    from distill import label

    out = tmp_path_factory.mktemp("local") / "run"
    label(source=str(photos), out=str(out), **OPTIONS)
    return out


def _remote_shards(prefix: str) -> dict[int, bytes]:
    fs = s3_filesystem()
    names = fs.find(f"{prefix}/shards")
    return {run_folder.shard_index(name, "labels"): fs.cat(name) for name in names
            if run_folder.shard_index(name, "labels") is not None}


def test_a_run_killed_mid_push_resumes_and_equals_labeling_a_local_folder(
        runs_bucket, photos, local_run, tmp_path):
    from distill import label

    staging = tmp_path / "staging"
    runs_bucket.hold("labels-00001")  # shard 1 is written in staging, its labels PUT waits
    runs_bucket.puts.clear()
    process = subprocess.Popen(
        [sys.executable, "-m", "distill.cli", "label", "--source", str(photos), "--out",
         "s3://runs/killed", "--staging", str(staging), "--teachers", "technical",
         "--shard-size", "2", "--batch-size", "2", "--score-workers", "0", "--no-progress"],
        env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        arrived = runs_bucket.arrived.wait(timeout=240)
    finally:
        process.send_signal(signal.SIGKILL)
        stderr = process.communicate()[1]
        runs_bucket.drop()
    assert arrived, stderr
    assert run_folder.labels_path(staging, 1).exists()  # labeled here, never pushed
    assert sorted(_remote_shards("runs/killed")) == [0]
    assert runs_bucket.puts == [f"/runs/killed/{name}" for name in (  # labels after the rest
        "run.json", "inputs.parquet", "shards/errors-00000.parquet",
        "shards/labels-00000.parquet", "shards/errors-00001.parquet")]

    summary = label(source=str(photos), out="s3://runs/killed", staging=str(staging), **OPTIONS)
    assert [record["shard"] for record in summary["ledger"]] == [1, 2]  # shard 1 again
    assert (summary["inputs"], summary["labeled"] + summary["errors"]) == (PHOTOS, PHOTOS)
    local = {index: path.read_bytes() for index, path in run_folder.shard_files(local_run).items()}
    assert _remote_shards("runs/killed") == local  # byte for byte, no shard twice or missing
    fs = s3_filesystem()
    assert fs.exists("runs/killed/manifest.json") and fs.exists("runs/killed/errors.parquet")
    assert not list(staging.rglob("*.partial"))


def test_a_later_stage_reads_a_remote_run_through_its_mirror(runs_bucket, photos, local_run):
    from distill import label
    from distill.cli import main

    url = "s3://runs/read"
    label(source=str(photos), out=url, **OPTIONS)  # staged in the module's cache
    runs_bucket.puts.clear()
    label(source=str(photos), out=url, **OPTIONS)  # finished: finalized again, as locally
    assert runs_bucket.puts == ["/runs/read/manifest.json"]  # the same fused bytes stay put
    result = CliRunner().invoke(main, ["dedup", "--labels", url, "--descriptor", "offline",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    assert s3_filesystem().exists("runs/read/dedup.parquet")  # what dedup wrote is pushed back
    mirrored = remote_run.mirror(url)
    assert mirrored == remote_run.default_staging(url, "mirrors")
    assert run_folder.read_labels(mirrored) == run_folder.read_labels(local_run)
    before = {path: path.stat().st_mtime_ns for path in mirrored.rglob("*.parquet")}
    remote_run.mirror(url)  # nothing changed remotely: nothing pulled again
    assert {path: path.stat().st_mtime_ns for path in mirrored.rglob("*.parquet")} == before
    # a person's file in the mirror (`active`'s queue, filled in) is kept, then pushed
    queue = mirrored / "review" / "queue.csv"
    queue.parent.mkdir()
    queue.write_text("image_id,human_label\n")
    remote_run.mirror(url)
    assert queue.exists() and remote_run.push_changed(url, mirrored) == ["review/queue.csv"]
    queue.write_text("image_id,human_label\nabc,keep\n")  # edited after it was pushed
    remote_run.mirror(url)
    assert queue.read_text().endswith("abc,keep\n")
    (mirrored / run_folder.SHARD_DIR / "labels-00009.parquet").write_bytes(b"left by a crash")
    remote_run.mirror(url)  # a run file the remote does not hold: removed
    assert not (mirrored / run_folder.SHARD_DIR / "labels-00009.parquet").exists()
    with pytest.raises(ConfigError, match=f"{url} was started with shard_size = 2, this call "
                       "asks for 3"):
        label(source=str(photos), out=url, **{**OPTIONS, "shard_size": 3})


def test_remote_runs_refuse_in_one_line(runs_bucket, photos, tmp_path):
    from distill.cli import main

    fs = s3_filesystem()
    fs.pipe("runs/other/notes.txt", b"not a run")
    label = ["label", "--source", str(photos), "--teachers", "technical", "--shard-size", "2",
             "--score-workers", "0", "--no-progress", "--out"]
    cases = {"s3://no-such-bucket/run": "bucket no-such-bucket does not exist",
             "s3://runs/other": "is not empty (1 objects, e.g. notes.txt)"}
    for out, message in cases.items():
        result = CliRunner().invoke(main, [*label, out])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(main, ["dedup", "--labels", "s3://runs/nothing"])
    assert result.exit_code == 2 and "no run there" in result.output, result.output
    staging = tmp_path / "staging"
    (staging / "mine.txt").parent.mkdir()
    (staging / "mine.txt").write_text("a user's file")
    result = CliRunner().invoke(main, [*label, "s3://runs/new", "--staging", str(staging)])
    assert result.exit_code == 2 and f"--staging {staging} is not empty" in result.output
    remote_run.claim_staging("s3://runs/new", tmp_path / "claimed")
    with pytest.raises(DistillError, match="stages s3://runs/new, not s3://runs/newer"):
        remote_run.claim_staging("s3://runs/newer", tmp_path / "claimed")


def test_credentials_the_server_refuses_are_one_line(runs_bucket, photos, monkeypatch):
    import moto.settings

    from distill.cli import main

    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # keys checked now
    for command in (["label", "--source", str(photos), "--out", "s3://runs/denied"],
                    ["dedup", "--labels", "s3://runs/denied"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2, result.output
        assert result.output.strip() == ("distill: error: s3://runs/denied: access denied "
                                         "(check the credentials: AWS_PROFILE, "
                                         "AWS_ACCESS_KEY_ID, …)")


def test_without_s3fs_a_remote_run_is_one_line(runs_bucket, photos, monkeypatch):
    import importlib

    from distill.cli import main

    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if the [s3] extra were not installed
    monkeypatch.delitem(importlib.import_module("fsspec.registry")._registry, "s3")
    result = CliRunner().invoke(main, ["label", "--source", str(photos), "--out", "s3://runs/x"])
    assert result.exit_code == 2, result.output
    assert "s3://runs/x: no s3:// support here" in result.output
    assert "pip install 'distill[s3]'" in result.output


def test_a_shard_labeled_on_another_machine_pulls_what_it_needs_and_pushes_its_shard(
        runs_bucket, photos, local_run, tmp_path, monkeypatch):
    """What a Ray task on another node does (`label_shard`, every engine's shard function):
    its own staging folder (under its own user's cache, not the driver's path), run.json and
    inputs.parquet pulled, the shard pushed; a shard it staged whose push never finished is
    labeled again, not taken as done; the driver then labels only what is left."""
    from distill import label
    from distill.config import LabelConfig, from_mapping
    from distill.labeling.shard_work import LabelRun, label_shard
    from distill.sources import guess_source

    url = "s3://runs/nodes"
    label(source=str(photos), out=url, staging=str(tmp_path / "driver"), max_shards=1, **OPTIONS)
    config = from_mapping(LabelConfig, {"source": guess_source(str(photos)), "out": url,
                                        "teachers": {"technical": {}}, "shard_size": 2,
                                        "batch_size": 2, "score_workers": 0})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other-home"))  # another machine
    sent = LabelRun(tmp_path / "driver", config, remote=url)  # the driver's path, as Ray sends it
    record = label_shard(sent, 1)
    elsewhere = remote_run.default_staging(url)
    assert elsewhere.is_relative_to(tmp_path / "other-home")
    assert (record.shard, record.rows, record.attempt) == (1, 2, 1)
    assert (elsewhere / run_folder.INPUTS_FILE).exists()  # pulled; shard 0 is not needed
    assert not run_folder.labels_path(elsewhere, 0).exists()
    assert sorted(_remote_shards("runs/nodes")) == [0, 1]
    # Its labels object gone (the push cut short, as the node died): staged here is not done.
    s3_filesystem().rm_file(f"runs/nodes/shards/{run_folder.shard_name('labels', 1)}")
    again = label_shard(sent, 1)
    assert again.attempt >= 1 and sorted(_remote_shards("runs/nodes")) == [0, 1]
    assert label_shard(sent, 1).attempt == 0  # now it is done: labeled once more, not twice
    monkeypatch.undo()
    summary = label(source=str(photos), out=url, staging=str(tmp_path / "driver"), **OPTIONS)
    assert [r["shard"] for r in summary["ledger"]] == [2]
    local = {index: path.read_bytes() for index, path in run_folder.shard_files(local_run).items()}
    assert _remote_shards("runs/nodes") == local


def test_an_object_key_never_names_a_file_outside_the_mirror(runs_bucket, photos, tmp_path):
    """An object key is any text: `run//tmp/x` would name the absolute path /tmp/x, and a
    mirror of a bucket others write to must not write there."""
    from distill import label

    url = "s3://runs/keys"
    label(source=str(photos), out=url, staging=str(tmp_path / "staging"), **OPTIONS)
    outside = tmp_path / "outside" / "evil.txt"
    s3_filesystem().pipe_file(f"runs/keys/{outside}", b"planted")  # runs/keys//tmp/.../evil.txt
    assert any("//" in key for key in s3_filesystem().find("runs/keys"))
    mirrored = remote_run.mirror(url, tmp_path / "mirror")
    assert not outside.exists() and not (tmp_path / "outside").exists()
    assert run_folder.labels_path(mirrored, 0).exists()
