"""Export: ONNX that onnxruntime and OpenCV DNN run with PyTorch's numbers, TorchScript, the
preprocessing JSON, and a parity check that really fails."""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from distill.cli.train import export as export_command
from distill.errors import DistillError
from distill.training import export as exporting
from students import create_student, load_student, preprocess
from students.checkpoint import save_student


def make_student(path, name: str = "tiny", image_size: int = 96, rating_bins: int = 10):
    """A student.pt with random weights everywhere, the zero-initialised quality head
    included: a constant output would make any parity check pass."""
    torch.manual_seed(0)
    model = create_student(name, rating_bins=rating_bins, init="random")
    torch.nn.init.normal_(model.quality.weight, std=0.5)
    for module in model.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    policy = preprocess.policy(image_size)
    save_student(path, model.eval(), name, {"rating_bins": rating_bins, "dropout": 0.0}, policy,
                 {"parameters": sum(p.numel() for p in model.parameters()), "val_metrics": {}})
    return path


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    return make_student(tmp_path_factory.mktemp("student") / "student.pt")


@pytest.fixture(scope="module")
def held_out_photos(skimage_photos) -> list[Image.Image]:
    """Photos the export's own parity batch does not use, one of them grey."""
    names = ("rocket", "motorcycle_left")
    grey = Image.open(skimage_photos["coffee"]).convert("L")
    return [Image.open(skimage_photos[n]) for n in names] + [grey]


def test_onnx_runs_in_onnxruntime_and_opencv_like_pytorch(tiny_student, held_out_photos, tmp_path):
    out = tmp_path / "cull.onnx"
    report = exporting.export_student(tiny_student, "onnx", out)
    assert report["model"] == str(out) and report["sample_images"] >= 2
    assert all(diff <= 1e-4 for diff in report["max_abs_diff"].values())
    assert set(report["max_abs_diff"]) == {"onnxruntime", "opencv"}

    # Checked again here, independently, on other photos and other batch sizes.
    student = load_student(tiny_student)
    expected = student.predict(held_out_photos)
    batch = preprocess.batch(held_out_photos, student.preprocessing).numpy()
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    net = cv2.dnn.readNetFromONNX(str(out))
    for rows in (slice(0, 1), slice(0, 3)):
        ort_scores = session.run(["scores"], {"image": batch[rows]})[0]
        net.setInput(batch[rows])
        cv_scores = net.forward()
        for scores in (ort_scores, cv_scores):
            assert scores.shape == (rows.stop, 12)
            assert np.abs(scores[:, 0] - expected["quality"][rows]).max() <= 1e-4
            assert np.abs(scores[:, 1] - expected["keep_prob"][rows]).max() <= 1e-4
            assert np.abs(scores[:, 2:] - expected["rating"][rows]).max() <= 1e-4
    assert np.ptp(expected["quality"]) > 0.01  # the outputs really vary between photos

    model = onnx.load(str(out))
    assert model.opset_import[0].version == exporting.DEFAULT_OPSET
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    assert json.loads(metadata["distill.preprocessing"]) == student.preprocessing

    described = json.loads((tmp_path / "cull.preprocessing.json").read_text())
    assert described["input"] == {"name": "image", "shape": ["batch", 3, 96, 96],
                                  "dtype": "float32"}
    assert described["output"]["columns"][:2] == ["quality", "keep_prob"]
    policy = described["preprocessing"]
    assert (policy["channel_order"] == "RGB"
            and policy["resize"] == "longer_side_at_most_then_center_crop")
    assert policy["image_size"] == 96 and policy["resize_size"] == 768
    assert "longer side to at most 768" in described["opencv_example"]
    assert policy["mean"] == [0.485, 0.456, 0.406] and policy["input_range"] == [0.0, 1.0]


def test_onnx_student_predicts_like_the_pytorch_student(tiny_student, held_out_photos, tmp_path):
    from students.onnx_runtime import load_onnx_student

    exporting.export_student(tiny_student, "onnx", tmp_path / "s.onnx")
    onnx_student = load_onnx_student(tmp_path / "s.onnx")
    expected = load_student(tiny_student).predict(held_out_photos)
    got = onnx_student.predict(held_out_photos, batch_size=2)
    assert onnx_student.name == "tiny" and onnx_student.preprocessing["image_size"] == 96
    for key in ("quality", "keep_prob", "rating"):
        assert np.abs(got[key] - expected[key]).max() <= 1e-4
    with pytest.raises(DistillError, match="not an ONNX model"):
        load_onnx_student(tiny_student)


def test_torchscript_matches_and_loads_without_the_code(tiny_student, held_out_photos, tmp_path):
    report = exporting.export_student(tiny_student, "torchscript", tmp_path / "s.torchscript.pt")
    assert report["max_abs_diff"]["torchscript"] <= 1e-4
    student = load_student(tiny_student)
    batch = preprocess.batch(held_out_photos, student.preprocessing)
    scripted = torch.jit.load(str(tmp_path / "s.torchscript.pt"))
    with torch.no_grad():
        assert torch.allclose(scripted(batch), student.scores_head()(batch), atol=1e-5)
    assert (tmp_path / "s.torchscript.preprocessing.json").exists()


def test_a_real_backbone_exports_to_opencv(tmp_path):
    path = make_student(tmp_path / "student.pt", "mobilenetv3_small", image_size=224, rating_bins=0)
    report = exporting.export_student(path, "onnx")
    assert report["model"] == str(tmp_path / "student.onnx")
    assert max(report["max_abs_diff"].values()) <= 1e-4


def test_parity_failure_fails_the_export_and_removes_the_file(tiny_student, tmp_path, monkeypatch):
    real = exporting.run_opencv
    monkeypatch.setattr(exporting, "run_opencv",
                        lambda path, batch, names: [o + 2e-4 for o in real(path, batch, names)])
    out = tmp_path / "bad.onnx"
    with pytest.raises(DistillError, match="parity failed.*opencv"):
        exporting.export_student(tiny_student, "onnx", out)
    assert not out.exists() and not (tmp_path / "bad.preprocessing.json").exists()


def test_export_command(tiny_student, tmp_path):
    runner = CliRunner()
    result = runner.invoke(export_command, ["--model", str(tiny_student), "--format", "onnx",
                                            "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert "onnxruntime" in result.output and "opencv" in result.output
    missing = runner.invoke(export_command, ["--model", str(tmp_path / "none.pt")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    help_text = runner.invoke(export_command, ["--help"]).output
    assert "onnxruntime" in help_text and "OpenCV" in help_text
    assert "preprocessing.json" in help_text
