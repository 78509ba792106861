"""Active learning queue, human label import, and the audit gallery."""

from __future__ import annotations

import csv
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from distill import run_folder
from distill.config import LabelConfig, from_mapping
from distill.labeling import run_label
from distill.review import build_audit, build_queue, import_labels, select
from tests.test_label import _photos


@pytest.fixture(scope="module")
def labeled(skimage_photos, tmp_path_factory):
    root = tmp_path_factory.mktemp("active")
    (root / "photos").mkdir()
    for index, image in enumerate(_photos(skimage_photos)):
        image.save(root / "photos" / f"p{index:02d}.jpg", quality=90)
    config = from_mapping(LabelConfig, {"source": {"kind": "folder", "root": str(root / "photos")},
                                        "out": str(root / "out"), "shard_size": 6})
    run_label(config, progress=False)
    return root / "out"


def test_selection_is_enriched_for_uncertain_and_disagreeing_images():
    rng = np.random.default_rng(0)
    n = 600
    table = pa.table({
        "keep_prob": rng.beta(0.6, 0.6, n),  # mostly confident, some near 0.5
        "confidence": rng.beta(4, 1.5, n),
        "norm_a": rng.random(n), "norm_b": rng.random(n), "tech_x": rng.normal(size=n),
    })
    picked = select(table, None, budget=40, seed=0)
    chosen = np.array(picked["chosen"])
    assert len(chosen) == len(set(chosen)) == 40
    for measure in ("uncertainty", "disagreement", "informativeness"):
        values = picked[measure]
        random_means = [values[rng.choice(n, 40, replace=False)].mean() for _ in range(200)]
        assert values[chosen].mean() > np.percentile(random_means, 99), measure
    assert len(np.unique(picked["cluster"][chosen])) >= 30, "picks spread over clusters"


def test_queue_files_and_sheet(labeled, tmp_path):
    result = build_queue(labeled, budget=5, review_dir=tmp_path / "review")
    assert result["queued"] == 5
    with open(result["queue"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5 and {"human_label", "human_score", "score_brisque"} <= set(rows[0])
    images = _img_sources(Path(result["sheet"]))
    assert len(images) == 5 and all((tmp_path / "review" / src).is_file() for src in images)


def test_import_labels_overrides_the_training_targets(labeled, tmp_path):
    table = run_folder.read_labels(labeled).to_pylist()
    trash_it, score_it = table[0], table[1]
    labels_csv = tmp_path / "human.csv"
    labels_csv.write_text("image_id,path,human_label,human_score\n"
                          f"{trash_it['image_id']},,trash,\n"
                          f",{score_it['path']},,9.5\n"
                          f"{table[2]['image_id']},,,\n")  # unfilled queue row: ignored
    result = subprocess.run([sys.executable, "-m", "distill.cli", "import-labels", str(labels_csv),
                             "--labels", str(labeled)], capture_output=True, text=True,
                            check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    training = {r["image_id"]: r for r in run_folder.read_training_labels(labeled).to_pylist()}
    assert len(training) == len(table)
    assert training[trash_it["image_id"]]["source"] == "human"
    assert (training[trash_it["image_id"]]["label"], training[trash_it["image_id"]]["keep_prob"]) == ("trash", 0.0)
    assert training[score_it["image_id"]]["quality"] == 9.5
    assert training[score_it["image_id"]]["tier"] == 2
    assert training[table[2]["image_id"]]["source"] != "human"
    # Already-labeled images leave the next queue.
    queued = build_queue(labeled, budget=50, review_dir=tmp_path / "again")
    assert queued["pool"] == len(table) - 2


def test_bad_human_label_names_the_line(labeled, tmp_path):
    from distill.errors import DistillError

    first = run_folder.read_labels(labeled).column("image_id")[0].as_py()
    bad = tmp_path / "bad.csv"
    bad.write_text(f"image_id,human_label\n{first},maybe\n")
    with pytest.raises(DistillError, match="bad.csv:2: human_label must be keep or trash"):
        import_labels(labeled, bad)


def test_audit_gallery(labeled, tmp_path):
    result = build_audit(labeled, per_section=3, audit_dir=tmp_path / "audit")
    images = _img_sources(Path(result["sheet"]))
    assert len(images) == result["shown"] > 0
    assert all((tmp_path / "audit" / src).is_file() for src in images)
    text = Path(result["sheet"]).read_text()
    assert "teachers disagree most" in text and "accepted (tier 2)" in text


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def _img_sources(page: Path) -> list[str]:
    parser = _Images()
    parser.feed(page.read_text())
    return parser.sources
