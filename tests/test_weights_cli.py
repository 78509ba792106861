"""Weights management and the CLI, run as a user runs them: as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from teachers import weights
from tests.conftest import offline_env


def distill(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, check=False)


def test_missing_weights_offline_fail_fast_in_one_line(tmp_path, photo):
    photo.save(tmp_path / "cat.jpg")
    empty = tmp_path / "empty-weights"
    started = time.monotonic()
    result = distill("score", str(tmp_path / "cat.jpg"), "--teachers", "nima",
                     env=offline_env(DISTILL_WEIGHTS_DIR=str(empty)))
    assert time.monotonic() - started < 60
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "NIMA_InceptionV2_ava-b0c77c00.pth" in lines[0]
    assert str(empty) in lines[0]
    assert "distill weights fetch nima-inception_resnet_v2-ava" in lines[0]
    assert "Traceback" not in result.stderr


def test_fetch_offline_is_one_line_not_a_hang(tmp_path):
    result = distill("weights", "fetch", "laion-aesthetic-linear-b32", "--weights-dir",
                     str(tmp_path), env=offline_env())
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "HF_HUB_OFFLINE" in result.stderr and str(tmp_path) in result.stderr


def test_list_and_verify(tmp_path):
    weights.fetch("brisque-live", tmp_path)
    (tmp_path / "sa_0_4_vit_b_32_linear.pth").write_bytes(b"not the LAION head")
    listing = distill("weights", "list", "--weights-dir", str(tmp_path)).stdout
    assert str(tmp_path) in listing
    brisque_row = next(line for line in listing.splitlines() if "brisque-live" in line)
    assert brisque_row.startswith("present") and "7c8e239223d4ff93" in brisque_row
    assert next(line for line in listing.splitlines() if "nima-vgg16" in line).startswith("missing")

    verified = distill("weights", "verify", "--weights-dir", str(tmp_path))
    assert verified.returncode == 1
    states = {line.split()[1]: line.split()[0] for line in verified.stdout.splitlines()}
    assert states["brisque-live"] == "ok"
    assert states["laion-aesthetic-linear-b32"] == "MISMATCH"
    assert states["nima-vgg16-ava"] == "missing"


def test_weights_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_WEIGHTS_DIR", str(tmp_path / "env"))
    assert weights.weights_dir(tmp_path / "flag") == tmp_path / "flag"
    assert weights.weights_dir() == tmp_path / "env"
    monkeypatch.delenv("DISTILL_WEIGHTS_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert weights.weights_dir() == tmp_path / "cache" / "distill" / "weights"


def test_score_command_keeps_every_input(skimage_photos, tmp_path):
    (tmp_path / "broken.jpg").write_text("not an image")
    paths = [str(p) for p in skimage_photos.values()] + [str(tmp_path / "broken.jpg")]
    result = distill("score", *paths, "--teachers", "brisque,piqe,technical", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == len(paths)
    scored = [r for r in rows if "error" not in r]
    assert len(scored) == len(skimage_photos)
    assert all(isinstance(r["score_brisque"], float) and len(r["sha1"]) == 40 for r in scored)
    (broken,) = [r for r in rows if "error" in r]
    assert broken["stage"] == "decode" and "not an image" in broken["error"]
    assert "1 of 6 inputs not scored" in result.stderr


@pytest.mark.parametrize("command", [[], ["score"], ["teachers"], ["weights"], ["weights", "list"],
                                     ["weights", "fetch"], ["weights", "verify"]])
def test_every_command_explains_itself(command):
    result = distill(*command, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout


def test_bad_teacher_option_names_the_key(photo, tmp_path):
    photo.save(tmp_path / "cat.png")
    result = distill("score", str(tmp_path / "cat.png"), "--teachers", "piqe", "-o", "piqe.colour=1")
    assert result.returncode == 2 and "'colour'" in result.stderr


def test_named_teacher_sets_expand_with_their_options():
    from distill.scoring import expand_teacher_sets

    assert expand_teacher_sets(["offline"]) == (["brisque", "piqe", "technical"], {})
    names, options = expand_teacher_sets(["full", "piqe"])
    assert names == ["brisque", "piqe", "niqe", "technical", "nima", "clip_aesthetic"]
    assert options["nima"] == {"backbone": "inception_resnet_v2"}
