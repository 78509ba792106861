"""The Python API is the CLI's: `import distill` runs every stage with the commands' options
(the README's example, on packaged photos)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

import distill
from distill.errors import ConfigError
from distill.sources import packaged_photos


def test_import_distill_stays_light():
    probe = "import sys, distill; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_every_stage_runs_from_python(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in [p for p in packaged_photos() if p.suffix.lower() in (".png", ".jpg")][:8]:
        shutil.copy(path, photos / path.name)
    runs = tmp_path / "runs"
    summary = distill.label(source=str(photos), teachers="piqe,technical", out=str(runs / "photos"),
                            progress=False)
    assert summary["labeled"] + summary["errors"] == summary["inputs"] == 8
    assert summary["out"] == str(runs / "photos")
    fused = distill.fuse(runs / "photos", keep_threshold=1.0)
    assert fused["keep"] == fused["rows"] == summary["labeled"]
    assert distill.dedup(runs / "photos", progress=False)["images"] == summary["labeled"]
    card = distill.train(labels=str(runs / "photos"), student="tiny", out=str(runs / "student"),
                         max_steps=3, overrides=("data.image_size=64", "tensorboard=false"),
                         progress=False)
    assert card["training"]["steps"] == 3
    exported = distill.export(runs / "student" / "student.pt", "onnx")
    assert max(exported["max_abs_diff"].values()) <= 1e-4
    result = distill.cull(photos, exported["model"], dest=tmp_path / "culled",
                          options=distill.CullOptions(action="dry"), progress=False)
    assert result["keep"] + result["pending"] + result["trash"] + result["error"] == 8
    scored = distill.score([photos], teachers="piqe", progress=False)
    assert len(scored.rows) == 8 and all("score_piqe" in row for row in scored.rows)


def test_label_keeps_the_options_a_teachers_mapping_gives(tmp_path):
    # A mapping's options reach the teacher: an unknown one is refused by name, not dropped.
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(packaged_photos()[0], photos)
    with pytest.raises(ConfigError, match="no_such_option"):
        distill.label(source=str(photos), teachers={"piqe": {"no_such_option": 1}},
                      out=str(tmp_path / "out"), progress=False)
