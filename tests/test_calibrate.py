"""`distill calibrate` fits fusion weights and the keep threshold against human AVA scores."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image, ImageFilter

from distill import run_folder
from distill.config import LabelConfig, from_mapping
from distill.errors import DistillError
from distill.labeling import fit_fusion as calibrate
from distill.labeling import run_label
from distill.scoring import FusionConfig


@pytest.fixture(scope="module")
def rated_run(skimage_photos, tmp_path_factory):
    """Blurred copies of real photos; the 'human' score falls with the blur radius."""
    root = tmp_path_factory.mktemp("ava")
    (root / "images").mkdir()
    lines, truth = [], {}
    bases = [Image.open(p).convert("RGB") for p in skimage_photos.values()]
    for index in range(20):
        radius = index % 5
        image = bases[index % len(bases)].filter(ImageFilter.GaussianBlur(radius * 1.5))
        ava_id = str(100000 + index)
        image.save(root / "images" / f"{ava_id}.jpg", quality=92)
        votes = np.zeros(10, int)
        votes[7 - radius] = 30  # mean 8 for sharp, down to 4 for the blurriest
        votes[6 - radius] = 10
        truth[ava_id] = float(np.average(np.arange(1, 11), weights=votes))
        lines.append(f"{index + 1} {ava_id} {' '.join(map(str, votes))} 0 0 1")
    (root / "AVA.txt").write_text("\n".join(lines) + "\n")
    out = root / "out"
    config = from_mapping(LabelConfig, {"source": {"kind": "folder", "root": str(root / "images")},
                                        "out": str(out), "shard_size": 8})
    run_label(config, progress=False)
    return root, out, truth


def test_calibration_fits_weights_and_threshold(rated_run):
    root, out, _ = rated_run
    fitted, report = calibrate(out, root / "AVA.txt", FusionConfig())
    assert report["matched"] == 20
    assert set(report["weights"]) == {"brisque", "piqe", "technical"}
    assert all(w >= 0 for w in report["weights"].values())
    assert report["srcc_after"] >= report["srcc_before"] - 1e-9
    assert report["srcc_after"] > 0.5, "blur is what the human scores follow"
    assert fitted.temperature > 0 and 1 <= fitted.keep_threshold <= 10


def test_cli_saves_a_config_fuse_applies(rated_run, tmp_path):
    root, out, _ = rated_run
    target = tmp_path / "fusion.yaml"
    result = subprocess.run([sys.executable, "-m", "distill.cli", "calibrate", "--labels", str(out),
                             "--reference", str(root / "AVA.txt"), "--save", str(target)],
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    fusion = from_mapping(FusionConfig, yaml.safe_load(target.read_text())["fusion"], "fusion.")
    applied = subprocess.run([sys.executable, "-m", "distill.cli", "fuse", "--labels", str(out),
                              "--config", str(target)], capture_output=True, text=True,
                             check=False, timeout=120)
    assert applied.returncode == 0, applied.stderr
    rows = run_folder.read_labels(out).to_pylist()
    assert all(r["label"] == ("keep" if r["quality"] >= fusion.keep_threshold else "trash") for r in rows)


def test_too_few_matches_is_a_clear_error(rated_run, tmp_path):
    _, out, _ = rated_run
    (tmp_path / "AVA.txt").write_text("1 999 0 0 0 0 5 0 0 0 0 0 0 0 1\n")
    with pytest.raises(DistillError, match="only 0 labeled images match"):
        calibrate(out, tmp_path / "AVA.txt", FusionConfig())
