"""Issue 19, the input side: every input the tool did not write is read by one rule, every
path from a manifest stays inside its root, damaged or half-written run files are one line,
names that are not UTF-8 travel reversibly, and no command writes over a folder it did not
make. Originals are checked by sha256 before and after.

Labeling here runs in-process with the technical teacher and no worker processes: the
behaviour under test is the reading, not the scoring.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tracemalloc
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import distill
import distill.cli
import distill.training.data
from distill import run_folder
from distill.config import load_yaml
from distill.errors import ConfigError, DistillError
from distill.names import as_path, as_text
from distill.sources import create_source
from tests.test_label import _photos


def label(source, out, **extra) -> dict | None:
    return distill.label(source=str(source), out=str(out), teachers="technical",
                         score_workers=0, progress=False, **extra)


def errors_of(out: Path) -> dict[str, str]:
    return {Path(as_path(e["path"])).name: e["reason"]
            for e in pq.read_table(out / "errors.parquet").to_pylist()}


def sha256_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def one_line(exc: BaseException, *needles: str) -> str:
    message = str(exc)
    assert isinstance(exc, DistillError) and "\n" not in message, repr(exc)
    for needle in needles:
        assert needle in message, message
    return message


@pytest.fixture(scope="module")
def jpegs(skimage_photos) -> list[bytes]:
    out = []
    for image in _photos(skimage_photos)[:6]:
        buffer = io.BytesIO()
        image.resize((image.width // 3, image.height // 3)).save(buffer, "JPEG", quality=85)
        out.append(buffer.getvalue())
    return out


@pytest.fixture(scope="module")
def photos(jpegs, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for index, data in enumerate(jpegs):
        (folder / f"p{index}.jpg").write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def finished(photos, tmp_path_factory) -> Path:
    """A finished run of 6 photos in 3 shards, copied by each test that damages it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert label(photos, out, shard_size=2)["labeled"] == 6
    return out


# ---------------------------------------------------------------- 10: manifests stay inside

def test_manifest_paths_resolve_inside_their_root_or_are_error_rows(jpegs, tmp_path):
    """COCO file_name and file-list entries: `../`, absolute paths elsewhere, /dev/zero and a
    link that leads out are error rows; the photo outside is never read."""
    images, outside = tmp_path / "images", tmp_path / "elsewhere"
    images.mkdir()
    outside.mkdir()
    (images / "good.jpg").write_bytes(jpegs[0])
    (outside / "secret.jpg").write_bytes(jpegs[1])
    (images / "link.jpg").symlink_to(outside / "secret.jpg")
    before = sha256_tree(tmp_path)
    names = ["good.jpg", "../elsewhere/secret.jpg", str(outside / "secret.jpg"), "/dev/zero",
             "link.jpg"]
    coco = tmp_path / "instances.json"
    coco.write_text(json.dumps({"images": [{"id": i, "file_name": n} for i, n in enumerate(names)]}))
    (images / "list.txt").write_text("\n".join(names) + "\n")
    for name, source in (("coco", {"kind": "coco", "annotations": str(coco), "images": str(images)}),
                         ("list", {"kind": "filelist", "file": str(images / "list.txt")})):
        summary = distill.label({"source": source, "out": str(tmp_path / name),
                                 "teachers": {"technical": {}}, "score_workers": 0},
                                progress=False)
        assert summary["labeled"] == 1 and summary["errors"] == 4, (name, summary)
        reasons = [e["reason"] for e in pq.read_table(tmp_path / name / "errors.parquet").to_pylist()]
        assert all("outside the source root" in r for r in reasons), reasons
    assert {k: v for k, v in sha256_tree(tmp_path).items() if k in before} == before


@pytest.mark.parametrize("document, needle", [
    ({"images": [{"id": 1}]}, "images[0] has no file_name"),
    ({"images": [{"id": 1, "file_name": "a.jpg"}, {"id": "2", "file_name": "b.jpg"}]},
     "mix integers and strings"),
    ({"images": {"id": 1}}, "no 'images' list"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"images": [{"id": 1, "file_na', "not valid JSON"),
])
def test_bad_coco_annotations_are_one_line(document, needle, tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    source = create_source({"kind": "coco", "annotations": str(path), "images": str(tmp_path)})
    with pytest.raises(ConfigError) as caught:
        list(source.items())
    one_line(caught.value, str(path), needle)


def test_tar_members_that_are_not_files_are_error_rows_and_a_truncated_tar_one_line(jpegs,
                                                                                      tmp_path):
    shard = tmp_path / "00000.tar"
    with tarfile.open(shard, "w") as archive:
        for name, data in (("0001.jpg", jpegs[0]), ("../../0002.jpg", jpegs[1])):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("0003.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    summary = label(shard, tmp_path / "run")
    assert (summary["labeled"], summary["errors"]) == (1, 2), summary
    reasons = " | ".join(errors_of(tmp_path / "run").values())
    assert "leaves the archive" in reasons and "symbolic link" in reasons, reasons
    cut = tmp_path / "cut" / "00000.tar"
    cut.parent.mkdir()
    cut.write_bytes(shard.read_bytes()[:1024 + len(jpegs[0]) // 2])
    with pytest.raises(ConfigError) as caught:
        label(cut, tmp_path / "cut-run")
    one_line(caught.value, str(cut), "truncated")


# ---------------------------------------------------------------- 4: paths that are not photos

def test_paths_that_are_not_photos_are_rows_in_score_not_skipped(jpegs, tmp_path):
    (tmp_path / "good.jpg").write_bytes(jpegs[0])
    os.mkfifo(tmp_path / "fifo.jpg")
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    with open(tmp_path / "sparse.jpg", "wb") as handle:
        handle.truncate(20 * 1024**3)  # 20 GB, nothing on disk: a corrupt FAT entry
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    rows = distill.score([tmp_path], teachers="technical", progress=False).rows
    reasons = {Path(r["path"]).name: r.get("error", "") for r in rows}
    assert reasons["good.jpg"] == ""
    assert "FIFO" in reasons["fifo.jpg"] and "character device" in reasons["zero.jpg"]
    assert "sparse" in reasons["sparse.jpg"] and "not found" in reasons["gone.jpg"]


def test_a_decoder_limit_is_an_error_row_in_score_and_dedup(jpegs, tmp_path):
    import struct
    import zlib

    png = io.BytesIO()
    from PIL import Image

    Image.open(io.BytesIO(jpegs[0])).save(png, "PNG")
    text = b"Comment\x00\x00" + zlib.compress(b"\x00" * (2 * 1024**2), 9)
    chunk = (struct.pack(">I", len(text)) + b"zTXt" + text
             + struct.pack(">I", zlib.crc32(b"zTXt" + text) & 0xFFFFFFFF))
    (tmp_path / "bomb.png").write_bytes(png.getvalue()[:33] + chunk + png.getvalue()[33:])
    (rows,) = [distill.score([tmp_path / "bomb.png"], teachers="technical", progress=False).rows]
    assert "Decompressed data too large" in rows[0]["error"]
    from distill.similar import offline_descriptors

    _, _, failures = offline_descriptors([tmp_path / "bomb.png"], progress=False)
    assert "Decompressed data too large" in failures[0]


# ---------------------------------------------------------------- 10: YAML, students

BOMB = "\n".join([
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    *(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")),
    "source: {kind: folder, root: .}", "out: run"]) + "\n"


def test_a_yaml_alias_bomb_is_one_line_fast_in_bounded_memory(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB) < 1000
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    one_line(caught.value, str(path), "alias")
    assert time.perf_counter() - started < 5 and peak < 50 * 1024**2


@pytest.mark.parametrize("change, needle", [
    ({"image_size": ""}, "image_size"), ({"resize_size": 10**9}, "resize_size"),
    ({"image_size": None}, "image_size")])
def test_a_student_with_empty_or_huge_preprocessing_is_one_line(change, needle, student_file,
                                                                tmp_path, photo):
    import torch

    from students import load_model

    payload = torch.load(student_file, weights_only=True)
    payload["preprocessing"] = {**payload["preprocessing"], **change}
    torch.save(payload, tmp_path / "student.pt")
    with pytest.raises(DistillError) as caught:
        load_model(tmp_path / "student.pt").predict([photo])
    one_line(caught.value, needle)


def test_a_student_predicting_nan_is_that_images_error_in_bench(student_file, tmp_path, photo):
    import torch

    from distill.benchmarking.predict import StudentPredictor

    payload = torch.load(student_file, weights_only=True)
    payload["state_dict"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                             for k, v in payload["state_dict"].items()}
    torch.save(payload, tmp_path / "student.pt")
    predictions = StudentPredictor(tmp_path / "student.pt").predict([photo, photo])
    assert sorted(predictions.errors) == [0, 1]
    assert "non-finite" in predictions.errors[0]


# ---------------------------------------------------------------- 11, 12: the run folder

def _damage(run: Path, name: str, how: str) -> Path:
    path = run / name
    path.write_bytes(b"" if how == "empty" else path.read_bytes()[: path.stat().st_size // 2])
    return path


READERS = {
    "resume": lambda run, photos: label(photos, run, shard_size=2),
    "train": lambda run, photos: distill.training.data.load_labels(run),
    "dedup": lambda run, photos: distill.dedup(run, progress=False),
    "fuse": lambda run, photos: distill.fuse(run, keep_threshold=7),
}


@pytest.mark.parametrize("name, how, readers", [
    ("shards/labels-00001.parquet", "truncated", ("resume", "train", "dedup", "fuse")),
    ("shards/labels-00001.parquet", "empty", ("resume", "train", "dedup", "fuse")),
    ("inputs.parquet", "truncated", ("resume", "train")),
    ("run.json", "truncated", ("resume",)),
    ("manifest.json", "truncated", ("train", "fuse")),
])
def test_a_damaged_run_file_is_one_line_naming_it(name, how, readers, finished, photos,
                                                  tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    damaged = _damage(run, name, how)
    for reader in readers:
        with pytest.raises(DistillError) as caught:
            READERS[reader](run, photos)
        one_line(caught.value, str(damaged), "damaged")


def test_a_half_written_run_is_named_so_by_every_reader(photos, tmp_path):
    from distill.review import build_audit, build_queue

    run = tmp_path / "run"
    assert label(photos, run, shard_size=2, max_shards=1) is None
    for read in (lambda: distill.dedup(run, progress=False), lambda: build_queue(run, 4),
                 lambda: build_audit(run), lambda: distill.fuse(run, keep_threshold=7),
                 lambda: distill.training.data.load_labels(run)):
        with pytest.raises(DistillError) as caught:
            read()
        one_line(caught.value, str(run), "half-written", "1 of 3 shards")
    assert not (run / "dedup.parquet").exists()


def test_shards_are_matched_by_their_exact_name(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    shard = run / "shards" / "labels-00001.parquet"
    shutil.copy(shard, shard.with_name("labels-00001-backup.parquet"))
    shutil.copy(shard, shard.with_name("labels-00001.parquet.bak"))
    assert run_folder.read_labels(run).num_rows == 6
    assert run_folder.completed_shards(run) == {0, 1, 2}


def test_a_label_kill_between_write_and_rename_leaves_no_partial(finished, photos, tmp_path):
    """SIGKILL inside atomic_write of a shard (after the bytes, before the rename): the
    resume removes the dead writer's partial file and ends with the same rows."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "manifest.json").unlink()
    run_folder.labels_path(run, 2).unlink()
    killer = ("import os, signal, sys, pyarrow.parquet as pq\n"
              "from distill import run_folder\n"
              "from distill.safefs import atomic_write\n"
              "run = sys.argv[1]\n"
              "with atomic_write(run_folder.labels_path(run, 2)) as partial:\n"
              "    pq.write_table(pq.read_table(run_folder.labels_path(run, 1)), partial)\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", killer, str(run)], check=False)
    assert done.returncode == -signal.SIGKILL
    assert len(list((run / "shards").glob(".labels-00002.parquet.*.partial"))) == 1
    label(photos, run, shard_size=2)
    assert not list(run.rglob("*.partial"))
    assert run_folder.read_labels(run).to_pylist() == run_folder.read_labels(finished).to_pylist()


def test_a_resume_accepts_a_relative_source_for_the_same_folder(photos, tmp_path, monkeypatch):
    monkeypatch.chdir(photos.parent)
    run = tmp_path / "run"
    assert label(photos.name, run, shard_size=2, max_shards=1) is None
    assert label(photos, run, shard_size=2)["labeled"] == 6


# ---------------------------------------------------------------- 3: no writing over a folder

def test_commands_that_create_a_run_refuse_a_non_empty_out(finished, photos, tmp_path):
    from distill.quickstart import run_quickstart
    from distill.review import xmp_to_labels

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    before = sha256_tree(tmp_path)
    for create in (lambda: xmp_to_labels(photos, run, progress=False),
                   lambda: xmp_to_labels(photos, mine, progress=False),
                   lambda: label(photos, mine),
                   lambda: run_quickstart(mine, "small", progress=False)):
        with pytest.raises(DistillError) as caught:
            create()
        one_line(caught.value, "is not empty")
    assert sha256_tree(tmp_path) == before


# ---------------------------------------------------------------- 5: names that are not text

def test_names_that_are_not_utf8_travel_reversibly(jpegs, tmp_path):
    folder = tmp_path / "card"
    folder.mkdir()
    latin1 = os.fsdecode(b"caf\xe9.jpg")  # a name from an old card or a Windows zip
    (folder / latin1).write_bytes(jpegs[0])
    (folder / "plain.jpg").write_bytes(jpegs[1])
    before = sha256_tree(folder)
    summary = label(folder, tmp_path / "run")
    assert (summary["labeled"], summary["errors"]) == (2, 0), summary
    stored = as_text(folder / latin1)
    assert stored.endswith("caf\\xe9.jpg") and as_path(stored) == str(folder / latin1)
    assert stored in run_folder.read_labels(tmp_path / "run").column("path").to_pylist()
    assert distill.dedup(tmp_path / "run", progress=False)["no_descriptor"] == 0
    reader = distill.training.data.ImageReader(tmp_path / "run")
    assert reader.read(stored, None) == jpegs[0]
    rows = distill.score([folder], teachers="technical", progress=False).rows
    text = json.dumps(rows, ensure_ascii=False).encode("utf-8")  # strict: no lone surrogates
    assert as_path(json.loads(text)[0]["path"]) == str(folder / latin1)
    result = CliRunner().invoke(distill.cli.main, ["score", str(folder), "--teachers",
                                                   "technical", "--format", "csv"])
    assert result.exit_code == 0 and "caf\\xe9.jpg" in result.output, result.output
    assert sha256_tree(folder) == before


def test_a_new_review_queue_never_replaces_one_a_person_filled_in(finished, tmp_path):
    from distill.review import build_queue

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    queue = Path(build_queue(run, 4)["queue"])
    rows = queue.read_text().splitlines()
    assert rows[1].endswith(",,")  # human_label, human_score: empty
    queue.write_text("\n".join([rows[0], rows[1][:-1] + "keep,", *rows[2:]]) + "\n")
    before = sha256_tree(run / "review")
    with pytest.raises(DistillError) as caught:
        build_queue(run, 4)
    one_line(caught.value, str(queue), "1 human labels", "import-labels")
    assert sha256_tree(run / "review") == before
