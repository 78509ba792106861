"""Learning from a photographer's own picks: sidecar ratings and pick labels (digiKam,
darktable, Lightroom styles) become human label shards, and `distill train --finetune`
adapts a trained student to them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from distill import run_folder
from distill.review import pick_from_sidecar
from distill.xmp import PICK_LABEL, RATING, write_sidecar
from students import load_student
from tests.test_faults import assert_one_line, distill
from tests.test_label import _photos

LIGHTROOM_REJECT = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
                    'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
                    'rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="-1"/>'
                    '</rdf:RDF></x:xmpmeta>')


@pytest.mark.parametrize("properties, expected", [
    ({PICK_LABEL: "3", RATING: "2"}, ("keep", 3.25)),  # the pick label decides
    ({PICK_LABEL: "1", RATING: "5"}, ("trash", 10.0)),
    ({RATING: "-1"}, ("trash", 1.0)),  # Lightroom / darktable reject
    ({RATING: "4"}, ("keep", 7.75)), ({RATING: "3"}, ("trash", 5.5)),
    ({RATING: "0"}, None), ({PICK_LABEL: "2"}, None), ({}, None), ({RATING: "x"}, None)])
def test_a_sidecar_pick_becomes_a_human_label(properties, expected):
    assert pick_from_sidecar(properties, keep_stars=4) == expected


@pytest.fixture()
def picked(skimage_photos, tmp_path) -> Path:
    folder = tmp_path / "picked"
    folder.mkdir()
    for index, image in enumerate(_photos(skimage_photos)[:10]):
        image.save(folder / f"p{index}.jpg", quality=90)
    for index in range(4):
        write_sidecar(folder / f"p{index}.jpg.xmp", 5, 3)  # digiKam: accepted, 5 stars
    for index in range(4, 7):
        write_sidecar(folder / f"p{index}.jpg.xmp", 1, 1)  # digiKam: rejected
    (folder / "p7.xmp").write_text(LIGHTROOM_REJECT, encoding="utf-8")
    (folder / "p8.jpg.xmp").write_bytes(b"<not xml")  # unreadable: an error row, not a crash
    return folder  # p9 has no sidecar: unrated


def test_import_picks_and_finetune_a_student(picked, student_file, tmp_path):
    run = tmp_path / "picks"
    result = distill("import-labels", "--from-xmp", picked, "--out", run)
    assert result.returncode == 0, result.stderr
    assert "8 of 10 photos carry a pick (keep 4, trash 4; 1 unrated, 1 unreadable)" in \
        result.stdout, result.stdout
    rows = {Path(r["path"]).name: r for r in run_folder.read_labels(run).to_pylist()}
    assert sorted(rows) == [f"p{i}.jpg" for i in range(8)]
    assert {rows[f"p{i}.jpg"]["label"] for i in range(4)} == {"keep"}
    assert {rows[f"p{i}.jpg"]["label"] for i in range(4, 8)} == {"trash"}
    assert rows["p7.jpg"]["quality"] == 1.0 and rows["p0.jpg"]["quality"] == 10.0
    assert all(r["source"] == "human" for r in rows.values())
    errors = pq.read_table(run / "errors.parquet").to_pylist()
    assert [Path(e["path"]).name for e in errors] == ["p8.jpg"]

    out = tmp_path / "tuned"
    tuned = distill("train", "--labels", run, "--finetune", student_file, "--out", out,
                    "--max-steps", "6", "--batch-size", "4", "--no-progress",
                    "--set", "tensorboard=false", "--set", "data.val_fraction=0.25")
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    card = json.loads((out / "model_card.json").read_text())
    assert card["init"]["kind"] == "finetune" and card["init"]["file"] == str(student_file)
    base, new = load_student(student_file), load_student(out / "student.pt")
    assert new.name == base.name and new.preprocessing == base.preprocessing
    changed = [k for k, v in base.model.state_dict().items()
               if v.dtype.is_floating_point and not torch.equal(v, new.model.state_dict()[k])]
    assert changed, "fine-tuning moved the weights"
    photos = [Image.open(picked / f"p{i}.jpg") for i in range(3)]
    assert np.isfinite(new.predict(photos)["quality"]).all()


def test_finetune_of_another_architecture_is_one_line(picked, student_file, tmp_path):
    run = tmp_path / "picks"
    assert distill("import-labels", "--from-xmp", picked, "--out", run).returncode == 0
    result = distill("train", "--labels", run, "--finetune", student_file, "--student",
                     "patch_cnn", "--out", tmp_path / "x", "--max-steps", "2", "--no-progress")
    assert_one_line(result, "is a 'tiny' student, not 'patch_cnn'")


def test_import_labels_needs_one_kind_of_input(picked, tmp_path):
    assert_one_line(distill("import-labels"), "--from-xmp")
    assert_one_line(distill("import-labels", "--from-xmp", picked), "--out")


def test_raw_picks_are_labels_too(skimage_photos, tmp_path):
    """A RAW's size comes from libraw: Pillow alone would refuse the DNG as no image."""
    from benchmarks.camera_files import write_dng
    from distill.review import xmp_to_labels

    folder = tmp_path / "card"
    folder.mkdir()
    write_dng(Image.open(skimage_photos["coffee"]).convert("RGB"), folder / "IMG_0001.DNG")
    (folder / "IMG_0001.xmp").write_text(LIGHTROOM_REJECT, encoding="utf-8")
    summary = xmp_to_labels(folder, tmp_path / "run", progress=False)
    assert (summary["labeled"], summary["errors"]) == (1, 0)
    (row,) = run_folder.read_labels(tmp_path / "run").to_pylist()
    assert (row["label"], row["width"], row["height"]) == ("trash", 600, 400)
