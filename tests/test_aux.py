"""Aux targets: a student learns the faces teacher's face_* columns beside quality and keep
(`train --aux`), keeps them in student.pt and in a second ONNX output, and `bench --dataset
run` reports its agreement with the faces teacher. The run here is generated: real photo crops
whose face_* columns are written through run_folder's writer (not by running the teacher), so
the truth is known: photos of the astronaut "have a face", the others none, and the least
open eye follows the crop's brightness."""

from __future__ import annotations

import csv
import json

import numpy as np
import onnxruntime
import pyarrow as pa
import pytest
import torch
from PIL import Image
from scipy import stats

from distill import run_folder
from distill.errors import ConfigError
from distill.scoring import FACE_COLUMNS
from distill.training import export as exporting
from distill.training import run_train
from distill.training.data import load_labels
from students import create_student, load_student
from students.losses import LossConfig, distillation_loss
from students.onnx_runtime import load_onnx_student
from tests.test_train import tiny_config, write_label_run

AUX = ["face_count", "face_eyes_closed", "face_min_eyes_open"]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def add_face_columns(run, astronaut_rows) -> None:
    """face_* columns as the faces teacher writes them: a face on the astronaut's crops (its
    least open eye = 0.05 + 0.4 x the crop's brightness, closed below 0.2), none elsewhere."""
    path = run_folder.labels_path(run, 0)
    rows = run_folder.read_parquet(path).to_pylist()
    for index, row in enumerate(rows):
        brightness = np.asarray(Image.open(row["path"]).convert("L")).mean() / 255.0
        face = index in astronaut_rows
        eyes = 0.05 + 0.4 * brightness if face else float("nan")
        row.update(face_count=float(face), face_eyes_closed=float(face and eyes < 0.2),
                   face_min_eyes_open=eyes, face_min_sharpness=0.5 if face else float("nan"),
                   face_exposure=brightness if face else float("nan"))
    rows[-1]["face_count"] = None  # a row the faces teacher did not label: masked out
    run_folder.write_table(path, pa.Table.from_pylist(rows))


@pytest.fixture(scope="module")
def face_run(skimage_photos, tmp_path_factory):
    photos = {"astronaut": skimage_photos["astronaut"], "coffee": skimage_photos["coffee"]}
    run = write_label_run(tmp_path_factory.mktemp("faces-run"), photos, count=48, seed=1)
    add_face_columns(run, {i for i in range(48) if i % 2 == 0})
    return run


@pytest.fixture(scope="module")
def aux_student(face_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("aux-student")
    threads = torch.get_num_threads()
    card = run_train(tiny_config(face_run, out, student={"name": "tiny", "dropout": 0.0,
                                                          "aux_targets": AUX},
                                 optim={"batch_size": 8, "max_steps": 40, "warmup_steps": 2,
                                        "lr": 3e-3, "ema_decay": 0.9},
                                 loss__aux=1.0, eval_every=20),
                     progress_bar=False)
    torch.set_num_threads(threads)
    return out / "student.pt", card


def test_labels_carry_aux_columns_masked_where_missing(face_run):
    labels = load_labels(face_run, AUX)
    assert labels.aux.shape == (48, 3)
    assert np.isnan(labels.aux[-1, 0]) and np.isnan(labels.aux[1, 2])  # no face: no eye ratio
    assert labels.summary["aux_rows"] == {"face_count": 47, "face_eyes_closed": 48,
                                          "face_min_eyes_open": 24}
    with pytest.raises(ConfigError, match="no row has score_niqe"):
        load_labels(face_run, ["score_niqe"])
    with pytest.raises(ConfigError, match="names face_count twice"):
        tiny_config(face_run, face_run / "x", student={"name": "tiny",
                                                       "aux_targets": ["faces", "face_count"]})
    config = tiny_config(face_run, face_run / "x", student={"name": "tiny",
                                                            "aux_targets": ["faces"]})
    assert config.student.aux_targets == list(FACE_COLUMNS)


def test_aux_loss_ignores_masked_rows_and_weighs_in():
    torch.manual_seed(0)
    out = {"quality": torch.full((4,), 5.0), "keep_logit": torch.zeros(4),
           "aux": torch.randn(4, 2, requires_grad=True)}
    batch = {"quality": torch.full((4,), 5.0), "has_quality": torch.ones(4, dtype=torch.bool),
             "keep_prob": torch.full((4,), 0.5), "confidence": torch.ones(4),
             "aux": torch.randn(4, 2), "has_aux": torch.tensor([[1, 1], [1, 0], [0, 1], [0, 0]],
                                                             dtype=torch.bool)}
    _, terms = distillation_loss(out, batch, LossConfig())
    changed = dict(batch, aux=batch["aux"].masked_fill(~batch["has_aux"], 99.0))
    _, same = distillation_loss(out, changed, LossConfig())
    assert terms["aux"] > 0 and same["aux"] == pytest.approx(terms["aux"])
    total, _ = distillation_loss(out, dict(batch, has_aux=torch.zeros(4, 2, dtype=torch.bool)),
                                 LossConfig())
    total.backward()  # every row masked: the term is 0 and the head still has a gradient
    assert out["aux"].grad is not None and float(out["aux"].grad.abs().sum()) == 0.0


def test_a_student_learns_the_aux_targets_and_records_them(aux_student, face_run):
    path, card = aux_student
    student = load_student(path)
    assert student.aux_outputs == AUX and card["aux_outputs"] == AUX
    assert student.outputs == ["quality", "keep_prob", *[f"rating_{i}" for i in range(1, 11)]]
    labels = load_labels(face_run, AUX)
    eyes = labels.aux[:, 2]
    # the scale the head predicts in is the training rows' own (the val rows left out)
    scale = card["aux_targets"]["face_min_eyes_open"]
    assert scale["rows"] == 24 and min(eyes[np.isfinite(eyes)]) < scale["mean"] < max(eyes)
    # learned (the head starts constant, at the mean): on the training run the student ranks
    # the least open eye as the labels do
    images = [Image.open(p).convert("RGB") for p in labels.path]
    predicted = student.predict(images)
    has = np.isfinite(eyes)
    assert stats.spearmanr(predicted["aux"]["face_min_eyes_open"][has], eyes[has]).statistic > 0.6
    assert "aux_face_min_eyes_open_srcc" in card["val_metrics"]
    # a student without aux targets keeps exactly the old shape: no aux weights, no aux output
    plain = create_student("tiny").eval()
    assert not any(k.startswith("aux") for k in plain.state_dict())
    assert "aux" not in plain(torch.zeros(1, 3, 64, 64))


def test_onnx_exposes_aux_as_a_second_output(aux_student, face_run, tmp_path, student_file):
    path, _ = aux_student
    report = exporting.export_student(path, "onnx", tmp_path / "aux.onnx")
    assert max(report["max_abs_diff"].values()) <= exporting.TOLERANCE  # onnxruntime and OpenCV
    session = onnxruntime.InferenceSession(str(tmp_path / "aux.onnx"),
                                           providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["scores", "aux"]
    described = json.loads((tmp_path / "aux.preprocessing.json").read_text())
    assert described["aux_output"]["columns"] == AUX and described["output"]["shape"][1] == 12
    # on other photos than the export's parity batch, through both students' predict
    images = [Image.open(p).convert("RGB") for p in sorted((face_run / "images").iterdir())[:5]]
    expected = load_student(path).predict(images)
    got = load_onnx_student(tmp_path / "aux.onnx").predict(images, batch_size=2)
    assert list(got["aux"]) == AUX
    for name in AUX:
        assert np.abs(got["aux"][name] - expected["aux"][name]).max() <= 1e-4
    assert np.abs(got["quality"] - expected["quality"]).max() <= 1e-4
    # a student without aux heads still exports one output
    exporting.export_student(student_file, "onnx", tmp_path / "plain.onnx")
    plain = onnxruntime.InferenceSession(str(tmp_path / "plain.onnx"),
                                         providers=["CPUExecutionProvider"])
    assert [o.name for o in plain.get_outputs()] == ["scores"]
    assert "aux" not in load_onnx_student(tmp_path / "plain.onnx").predict(images[:1])


def test_bench_on_a_run_reports_agreement_with_the_faces_teacher(aux_student, face_run,
                                                                  tmp_path):
    from click.testing import CliRunner

    from distill.cli import main

    path, _ = aux_student
    result = CliRunner().invoke(main, ["bench", "--model", str(path), "--dataset", "run",
                                       "--root", str(face_run), "--split", "all",
                                       "--out", str(tmp_path / "bench"), "--latency-samples",
                                       "0", "--bootstrap", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "faces teacher: face_min_eyes_open SRCC" in result.output
    report = json.loads((tmp_path / "bench" / "report.json").read_text())
    faces = report["metrics"]["faces"]
    with (tmp_path / "bench" / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    teacher = np.array([float(r["teacher_face_min_eyes_open"] or "nan") for r in rows])
    student = np.array([float(r["student_face_min_eyes_open"]) for r in rows])
    has = np.isfinite(teacher)
    eyes = faces["columns"]["face_min_eyes_open"]
    assert eyes["n"] == has.sum() == 24
    assert eyes["srcc"] == pytest.approx(stats.spearmanr(teacher[has], student[has]).statistic)
    closed = faces["any_eyes_closed"]
    assert closed["n"] == 24 and closed["student_output"] == "face_eyes_closed >= 0.5"
    assert faces["has_face"]["n"] == 47 and faces["has_face"]["positives"] == 24
    assert "Agreement with the faces teacher" in (tmp_path / "bench" / "report.md").read_text()


def test_face_columns_are_the_faces_teachers_own():
    from teachers.faces import summary

    assert tuple(summary([])) == FACE_COLUMNS


def test_cli_aux_flag_reaches_the_config(face_run, tmp_path):
    from click.testing import CliRunner

    from distill.cli import main

    result = CliRunner().invoke(main, ["train", "--labels", str(face_run), "--student", "tiny",
                                       "--out", str(tmp_path / "s"), "--no-progress",
                                       "--aux", "faces, score_x"])
    assert result.exit_code != 0
    assert "no row has score_x" in result.output and "face_count" not in result.output
