"""`distill label --device`: the batched torch teachers and torchvision's JPEG decoding in the
label stage, run here on the CPU device (the code a CUDA device runs) against the default
path; and a GPU asked for where there is none is a one-line error."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import pyarrow.parquet as pq
from click.testing import CliRunner
from PIL import Image

from distill import run_folder
from distill.cli.label import label as label_command
from distill.config import DecodeConfig, LabelConfig
from distill.errors import ConfigError
from distill.labeling import label
from distill.labeling.run import check_resume
from tests.test_decode_device import DRAFTED_SCORES
from tests.test_torch_teachers import TORCH_VS_FAST

TEACHERS = ("brisque", "piqe", "technical")
# torch against the fast path (tests/test_torch_teachers.py), but for BRISQUE a fit landing on
# the other side of a midpoint of pyiqa's 0.001 shape grid: the torch path sums the GGD's
# statistics in float64, the fast path (and pyiqa) in float32. Measured here on coffee at
# 256x179: the second scale's GGD shape one step apart, BRISQUE 7.1592 against 7.1680 (pyiqa
# 7.1679). The fused columns follow the scores. (Small photos: on a CPU the torch path's exact
# Gaussian, 49 float64 multiply-adds a pixel, is slow; it is written for a GPU.)
SCORE_TOLERANCE = {**TORCH_VS_FAST, "brisque": 0.02}
FUSED_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def pool(skimage_photos, tmp_path_factory) -> Path:
    """Photos over max_side (capped by the BICUBIC thumbnail, not drafted), and the inputs the
    device decoder hands to Pillow or refuses: progressive, greyscale, PNG, truncated, tiny;
    and one JPEG at twice max_side, which the two decoders reduce differently."""
    folder = tmp_path_factory.mktemp("pool")
    photos = [Image.open(skimage_photos[n]).convert("RGB") for n in ("astronaut", "coffee",
                                                                       "chelsea")]
    for index, photo in enumerate(photos):
        photo.resize((150, 100 + 9 * index)).save(folder / f"photo{index}.jpg", quality=90)
    big = photos[0].resize((150, 120))
    big.save(folder / "portrait.jpg", quality=85, exif=_rotated())
    big.save(folder / "progressive.jpg", progressive=True)
    big.convert("L").save(folder / "grey.jpg")
    big.save(folder / "photo.png")
    buffer = io.BytesIO()
    big.save(buffer, "JPEG")
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[:3000])
    big.resize((40, 20)).save(folder / "tiny.jpg")
    photos[1].resize((300, 200)).save(folder / "drafted.jpg", quality=90)  # 1/2 draft scale
    return folder


def _rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif.tobytes()


def _run(pool: Path, out: Path, teachers: dict, **options) -> tuple[dict[str, dict], dict[str, str]]:
    summary = label({"teachers": teachers}, source=str(pool), out=str(out), max_side=128,
                    shard_size=4, batch_size=4, progress=False, **options)
    assert summary["inputs"] == 10
    rows = {Path(row["path"]).name: row for row in run_folder.read_labels(out).to_pylist()}
    errors = {Path(row["path"]).name: row["reason"]
              for row in pq.read_table(out / run_folder.ERRORS_FILE).to_pylist()}
    return rows, errors


def test_label_on_the_cpu_device_matches_the_default_path(pool, tmp_path):
    # the default path in this process (score workers give the same rows: tests/test_label.py)
    rows, errors = _run(pool, tmp_path / "default", dict.fromkeys(TEACHERS, {}), score_workers=0)
    ours, our_errors = _run(pool, tmp_path / "device", {name: {"impl": "torch"} for name in TEACHERS},
                            device="cpu", jpeg_decoder="torchvision")
    assert our_errors == errors and set(errors) == {"truncated.jpg", "tiny.jpg"}
    assert ours.keys() == rows.keys() and len(rows) == 8
    drafted, mine = rows.pop("drafted.jpg"), ours.pop("drafted.jpg")
    assert (mine["width"], mine["height"], mine["sha1"]) == (
        drafted["width"], drafted["height"], drafted["sha1"])
    differences = [abs(mine[f"score_{n}"] - drafted[f"score_{n}"]) for n in DRAFTED_SCORES]
    assert all(d <= DRAFTED_SCORES[n] for d, n in zip(differences, DRAFTED_SCORES))
    assert max(differences) > 0  # decoded on the device: 2x2 block means, not Pillow's draft
    for name, row in rows.items():
        assert ours[name].keys() == row.keys()
        for column, value in row.items():
            mine = ours[name][column]
            teacher = column.removeprefix("score_")
            if teacher in SCORE_TOLERANCE:
                assert math.isclose(mine, value, rel_tol=0, abs_tol=SCORE_TOLERANCE[teacher]), column
            elif isinstance(value, float) and not column.startswith("tech_"):
                assert math.isclose(mine, value, rel_tol=0, abs_tol=FUSED_TOLERANCE), column
            else:  # ids, sizes, sha1, labels and the technical measures: exactly
                assert mine == value, (name, column)
    manifest = run_folder.read_manifest(tmp_path / "device")
    assert [(t["implementation"], t["device"]) for t in manifest["teachers"]] == [("torch", "cpu")] * 3


def test_a_run_resumes_only_on_its_own_device_kind_and_decoder(tmp_path):
    config = LabelConfig(source="x", out=str(tmp_path))
    check_resume(tmp_path, config, "cpu")  # records the run's shape
    check_resume(tmp_path, config, "cpu")
    with pytest.raises(ConfigError, match="device"):
        check_resume(tmp_path, config, "cuda:0")
    config.decode.jpeg_decoder = "torchvision"
    with pytest.raises(ConfigError, match="jpeg_decoder"):
        check_resume(tmp_path, config, "cpu")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_gpu_asked_for_where_there_is_none_is_a_one_line_error(device, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(label_command, ["--source", str(tmp_path), "--out", str(out),
                                                "--device", device])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        result.output.strip()] and f"device {device}: torch sees no CUDA GPU" in result.output
    assert not out.exists()  # nothing ran on the CPU instead


def test_config_refuses_a_misspelt_device_and_scoring_workers_for_device_decoding():
    for device in ("gpu", "cuda:x", "CPU"):
        with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N"):
            LabelConfig(source="x", out="y", device=device)
    assert LabelConfig(source="x", out="y").device == "auto"
    with pytest.raises(ConfigError, match="use score_workers 0"):
        LabelConfig(source="x", out="y", score_workers=2,
                    decode=DecodeConfig(jpeg_decoder="torchvision"))
    with pytest.raises(ConfigError, match="jpeg_decoder must be one of pillow, torchvision"):
        DecodeConfig(jpeg_decoder="nvjpeg")
