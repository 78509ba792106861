"""The label stage end to end: shards, bad inputs, resume after a kill, two processes = one."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from distill import run_folder
from distill.labeling import threaded_batches
from tests.killing import killed_after
from tests.test_decode import _png_claiming

GOOD = 12  # real photos and crops of them, enough for several shards


def _photos(skimage_photos) -> list[Image.Image]:
    base = [Image.open(p).convert("RGB") for p in skimage_photos.values()]
    crops = [image.crop((0, 0, image.width * 2 // 3, image.height * 2 // 3)) for image in base]
    flips = [image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for image in base]
    return (base + crops + flips)[:GOOD]


@pytest.fixture(scope="module")
def photo_folder(skimage_photos, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for index, image in enumerate(_photos(skimage_photos)):
        image.save(folder / f"photo{index:02d}.jpg", quality=90)
    return folder


def distill(*args, env_extra=None, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300, check=False, **kwargs)


def _rows(out: Path) -> list[dict]:
    return run_folder.read_labels(out).sort_by("image_id").to_pylist()


def test_label_run_writes_the_documented_layout(photo_folder, tmp_path):
    out = tmp_path / "out"
    result = distill("label", "--source", str(photo_folder), "--out", str(out), "--shard-size", "5",
                     "--no-progress")
    assert result.returncode == 0, result.stderr
    assert f"inputs {GOOD}  labeled {GOOD}  errors 0" in result.stdout
    files = sorted(p.name for p in (out / "shards").glob("labels-*.parquet"))
    assert files == ["labels-00000.parquet", "labels-00001.parquet", "labels-00002.parquet"]
    loaded = datasets.load_dataset("parquet", data_files=[str(out / "shards" / f) for f in files],
                                   split="train")
    required = {"image_id", "source", "path", "sha1", "width", "height", "quality", "keep_prob",
                "label", "tier", "confidence"}
    for teacher in ("brisque", "piqe", "technical"):
        required |= {f"score_{teacher}", f"norm_{teacher}"}
    assert required <= set(loaded.column_names)
    assert loaded.num_rows == GOOD and len(set(loaded["image_id"])) == GOOD
    quality = np.array(loaded["quality"])
    assert np.all((quality >= 1) & (quality <= 10))
    assert set(loaded["label"]) <= {"keep", "trash"} and set(loaded["tier"]) <= {0, 1, 2}
    expected_label = np.where(quality >= 6, "keep", "trash")
    assert list(expected_label) == loaded["label"]

    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["labeled"] + manifest["summary"]["errors"] == GOOD
    brisque = next(t for t in manifest["teachers"] if t["teacher"] == "brisque")
    assert len(brisque["weights"][0]["sha256"]) == 64 and brisque["libraries"]["pyiqa"]
    assert pq.read_table(out / "errors.parquet").num_rows == 0


def test_fuse_recomputes_without_teachers(photo_folder, tmp_path):
    out = tmp_path / "out"
    assert distill("label", "--source", str(photo_folder), "--out", str(out), "--no-progress").returncode == 0
    before = _rows(out)
    result = distill("fuse", "--labels", str(out), "--keep-threshold", "9.5")
    assert result.returncode == 0, result.stderr
    after = _rows(out)
    assert [r["score_brisque"] for r in after] == [r["score_brisque"] for r in before]
    assert all(r["label"] == ("keep" if r["quality"] >= 9.5 else "trash") for r in after)
    assert [r["label"] for r in after] != [r["label"] for r in before]


def _bad_folder(root: Path, photo: Image.Image) -> dict[str, str | None]:
    """Every bad input the issue lists; value = expected reason fragment, None = labeled."""
    jpeg = io.BytesIO()
    photo.save(jpeg, "JPEG", quality=90)
    (root / "zero.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (root / "text.jpg").write_text("just some words")
    (root / "bomb.png").write_bytes(_png_claiming(40000, 40000))
    photo.convert("CMYK").save(root / "cmyk.jpg", quality=90)
    grey = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey).save(root / "sixteen.png")
    frames = [photo.convert("P"), photo.rotate(180).convert("P")]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:])
    photo.save(root / "unreadable.jpg")
    (root / "unreadable.jpg").chmod(0)
    return {"zero.jpg": "empty file", "truncated.jpg": "corrupt or truncated",
            "text.jpg": "not an image", "bomb.png": "decompression bomb", "cmyk.jpg": None,
            "sixteen.png": None, "animated.gif": None, "unreadable.jpg": "permission denied"}


def test_every_bad_input_is_recorded_and_the_run_completes(photo, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    expected = _bad_folder(photos, photo.resize((300, 200)))
    command = [sys.executable, "-m", "distill.cli", "label", "--source", str(photos),
               "--out", str(tmp_path / "out"), "--shard-size", "3", "--no-progress"]
    if os.geteuid() == 0:
        # Root reads a chmod-000 file anyway; without these capabilities it cannot.
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all",
                   "--", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr
    table = pq.read_table(tmp_path / "out" / "errors.parquet")
    errors = {Path(row["path"]).name: row["reason"] for row in table.to_pylist()}
    labeled = {Path(p).name for p in run_folder.read_labels(tmp_path / "out").column("path").to_pylist()}
    for name, reason in expected.items():
        if reason is None:
            assert name in labeled, name
        else:
            assert reason in errors.get(name, ""), (name, errors.get(name))
    assert len(errors) + len(labeled) == len(expected)


def test_a_path_that_vanishes_mid_run_becomes_an_error_row(photo_folder, tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    for path in sorted(photo_folder.iterdir())[:6]:
        (pool / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "out"
    args = ["label", "--source", str(pool), "--out", str(out), "--shard-size", "3", "--no-progress"]
    assert distill(*args, "--max-shards", "1").returncode == 0
    assert not (out / "manifest.json").exists(), "an unfinished run must not look finished"
    vanished = sorted(pool.iterdir())[4]
    vanished.unlink()  # after the input list was frozen, before its shard ran
    result = distill(*args)
    assert result.returncode == 0, result.stderr
    errors = pq.read_table(out / "errors.parquet").to_pylist()
    assert [(Path(e["path"]).name, e["stage"]) for e in errors] == [(vanished.name, "decode")]
    assert "file not found" in errors[0]["reason"]
    assert "inputs 6  labeled 5  errors 1" in result.stdout


def test_killed_run_resumes_to_exactly_the_uninterrupted_rows(photo_folder, tmp_path):
    args = ["--source", str(photo_folder), "--shard-size", "2", "--batch-size", "2", "--no-progress"]
    clean = tmp_path / "clean"
    assert distill("label", *args, "--out", str(clean)).returncode == 0

    killed = tmp_path / "killed"  # right after its 2nd shard, with later batches in flight
    killed_after(2, "distill.run_folder:write_shard", "label", *args, "--out", killed)
    assert run_folder.completed_shards(killed) == {0, 1}

    result = distill("label", *args, "--out", str(killed))
    assert result.returncode == 0, result.stderr
    assert _rows(killed) == _rows(clean)
    assert not list((killed / "shards").glob(".*partial"))


def test_threaded_batches_keep_order_and_lose_nothing():
    def slow_item(index: int) -> int:
        time.sleep(0.001 * (index * 7 % 5))  # finish out of order
        return index

    class Items(list):
        def __getitem__(self, index):
            return slow_item(super().__getitem__(index))

    batches = list(threaded_batches(Items(range(23)), batch_size=4, threads=3, prefetch=2))
    assert [len(b) for b in batches] == [4, 4, 4, 4, 4, 3]
    assert [item for batch in batches for item in batch] == list(range(23))
    assert list(threaded_batches(Items(range(5)), 2, 0, 1)) == [[0, 1], [2, 3], [4]]


def test_decoding_in_threads_labels_exactly_what_inline_decoding_does(photo_folder, tmp_path):
    args = ["label", "--source", str(photo_folder), "--shard-size", "5", "--batch-size", "3",
            "--no-progress"]
    for threads in (0, 3):
        result = distill(*args, "--decode-threads", str(threads), "--out", str(tmp_path / f"t{threads}"))
        assert result.returncode == 0, result.stderr
    assert _rows(tmp_path / "t3") == _rows(tmp_path / "t0")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_equal_one(photo_folder, tmp_path):
    args = ["label", "--source", str(photo_folder), "--shard-size", "2", "--no-progress"]
    single = distill(*args, "--out", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr
    torchrun = Path(sys.executable).with_name("torchrun")
    double = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), "-m", "distill.cli", *args, "--out", str(tmp_path / "two")],
        capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300,
        check=False)
    assert double.returncode == 0, double.stderr[-2000:]
    assert double.stdout.count("inputs 12") == 1, "one rank finalizes"
    assert _rows(tmp_path / "two") == _rows(tmp_path / "one")


def _tiny_clip(folder: Path) -> dict:
    """A CLIP teacher's options: tiny, random, its weights saved in `folder` (its model config
    is registered in this process only)."""
    import open_clip
    import torch

    from teachers.clip_aesthetic import build_head
    from tests.test_clip_aesthetic import TINY

    open_clip.add_model_config(TINY)
    torch.manual_seed(0)
    torch.save(open_clip.create_model("distill-tiny-clip").state_dict(), folder / "clip.pt")
    torch.save(build_head("mlp", 32).state_dict(), folder / "head.pth")
    return {"arch": "distill-tiny-clip", "head": "mlp", "clip_weights": str(folder / "clip.pt"),
            "head_weights": str(folder / "head.pth")}


def test_clip_embeddings_are_stored_row_aligned(photo_folder, tmp_path):
    """A CLIP teacher (tiny, random, loaded from files) stores float16 embeddings per shard."""
    from distill.config import LabelConfig, from_mapping
    from distill.decode import decode_path
    from distill.labeling import run_label
    from teachers import create_teacher

    clip = _tiny_clip(tmp_path)
    config = from_mapping(LabelConfig, {
        "source": {"kind": "folder", "root": str(photo_folder)}, "out": str(tmp_path / "out"),
        "teachers": {"technical": {}, "clip_aesthetic": clip}, "shard_size": 5})
    summary = run_label(config, progress=False)
    assert summary["labeled"] == GOOD
    labels = run_folder.read_labels(tmp_path / "out")
    embeddings = run_folder.read_embeddings(tmp_path / "out")
    assert embeddings.dtype == np.float16 and embeddings.shape == (GOOD, 32)
    np.testing.assert_allclose(np.linalg.norm(embeddings.astype(np.float32), axis=1), 1, atol=2e-3)
    # Row alignment: the shard's embedding for a photo is that photo's embedding.
    teacher = create_teacher("clip_aesthetic", **clip)
    row = 7
    image = decode_path(labels.column("path")[row].as_py(), draft_size=768, max_side=768).image
    expected = teacher.score([image]).embeddings[0]
    np.testing.assert_allclose(embeddings[row].astype(np.float32), expected, atol=2e-3)


def test_teacher_groups_scored_apart_assemble_into_the_same_rows(photo_folder, tmp_path):
    """Each group of teachers scoring a shard in a part of its own (as on different Ray
    workers), merged: the rows, error rows (failures of teachers in different groups joined
    in the run's order, decode failures in their batch's place) and embeddings of one
    process scoring with every teacher."""
    from distill.config import LabelConfig, from_mapping
    from distill.labeling.parts import assemble_parts, label_part
    from distill.labeling.run import open_run
    from distill.labeling.shard_work import LabelRun, tools
    from distill.labeling.shards import score_here

    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in sorted(photo_folder.iterdir())[:4]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    # shard 0 in batches of 2: [black, photo00], [photo00b (broken), photo01]: its teacher
    # error row comes before its decode error row, as the batches come
    (folder / "photo00b.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    Image.new("RGB", (200, 200)).save(folder / "black.png")  # BRISQUE and PIQE fail on it
    config = from_mapping(LabelConfig, {
        "source": {"kind": "folder", "root": str(folder)}, "out": str(tmp_path / "out"),
        "teachers": {"brisque": {}, "clip_aesthetic": _tiny_clip(tmp_path), "piqe": {}},
        "shard_size": 4, "batch_size": 2, "gpu_teachers": ["clip_aesthetic", "piqe"]})
    config, source, _inputs = open_run(config, False, "cpu")
    run = LabelRun(tmp_path / "out", config)
    _, teachers = tools(run)
    errors = []
    for shard in range(2):
        rows = run_folder.read_shard_inputs(run.out, shard, config.shard_size).to_pylist()
        whole = score_here(shard, rows, source, teachers, config, None)
        parts = [label_part(run, shard, ["clip_aesthetic", "piqe"]),
                 label_part(run, shard, ["brisque"])]
        merged = assemble_parts(config, shard, rows, parts)
        assert merged.rows == whole.rows and merged.errors == whole.errors
        np.testing.assert_array_equal(np.stack(merged.embeddings), np.stack(whole.embeddings))
        errors += merged.errors
    reasons = {Path(row["path"]).name: row["reason"] for row in errors}
    assert list(reasons) == ["black.png", "photo00b.jpg"]
    assert reasons["black.png"].startswith("brisque: ") and "; piqe: " in reasons["black.png"]
