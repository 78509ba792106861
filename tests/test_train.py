"""The train stage: the imbalance fix, labels in (dedup, human rows), a run's outputs, resume
after SIGKILL, two processes in step, function matching, students and their init."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image, ImageFilter
from scipy import stats

from distill import run_folder
from distill.config import from_mapping
from distill.errors import ConfigError, DistillError
from distill.training import TrainConfig, run_train
from distill.training.data import EpochSampler, balance_weights, load_labels, split
from students import create_student, list_students, load_student
from students.losses import LossConfig, distillation_loss
from teachers.weights import sha256_of

SIDE = 64  # image_size of the test runs: the tiny student at 64 px trains at ~20 steps/s


# ---------------------------------------------------------------- a generated labeling run

def write_label_run(out: Path, photos: dict[str, Path], count: int = 40, seed: int = 0) -> Path:
    """Crops of real photos, blurred and darkened by a known amount; quality is a known
    function of the two (what a labeling run would hold, without running teachers)."""
    rng = np.random.default_rng(seed)
    bases = [Image.open(path).convert("RGB") for path in photos.values()]
    (out / "images").mkdir(parents=True)
    rows = []
    for index in range(count):
        base = bases[index % len(bases)]
        small = base.resize((base.width * 96 // base.height, 96))
        left = int(rng.integers(0, small.width - 80))
        blur, dark = rng.uniform(0, 2.5), rng.uniform(0, 0.6)
        crop = small.crop((left, 0, left + 80, 80)).filter(ImageFilter.GaussianBlur(blur))
        pixels = (np.asarray(crop, np.float64) * (1 - dark)).astype(np.uint8)
        path = out / "images" / f"photo{index:03d}.png"
        Image.fromarray(pixels).save(path)
        quality = 9.0 - 2.0 * blur - 5.0 * dark
        rows.append({"image_id": f"img{index:03d}", "source": "generated", "path": str(path),
                     "width": 80, "height": 80, "quality": quality,
                     "keep_prob": float(1 / (1 + np.exp(-(quality - 6) / 0.5))),
                     "confidence": float(rng.uniform(0.5, 1.0)), "label": "keep", "tier": 1,
                     "dist_nima": list(np.histogram(rng.normal(quality, 1, 50), 10,
                                                    (0.5, 10.5))[0] / 50.0)})
    run_folder.write_table(run_folder.labels_path(out, 0), pa.Table.from_pylist(rows))
    run_folder.write_json(out / "manifest.json", {
        "config": {"fusion": {"keep_threshold": 6.0, "temperature": 0.5,
                              "normalisation": "reference"}},
        "teachers": [{"teacher": "generated", "weights": []}]})
    return out


@pytest.fixture(scope="module")
def label_run(skimage_photos, tmp_path_factory) -> Path:
    return write_label_run(tmp_path_factory.mktemp("labels"), skimage_photos)


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """run_train sets torch's thread count for its process; give the next test its own."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def tiny_config(labels: Path, out: Path, **overrides) -> TrainConfig:
    mapping = {
        "labels": str(labels), "out": str(out), "student": {"name": "tiny", "dropout": 0.0},
        "cpu_threads": 1,  # small ops: a second thread only waits at barriers on a busy CPU
        "tensorboard": False, "log_every": 2, "eval_every": 5, "checkpoint_every": 5,
        "early_stopping_patience": None,
        "data": {"image_size": SIDE, "cache": True, "val_fraction": 0.25},
        "optim": {"batch_size": 8, "max_steps": 10, "warmup_steps": 2, "lr": 3e-3,
                  "ema_decay": 0.9},
    }
    for key, value in overrides.items():
        section, _, leaf = key.partition("__")
        if leaf:
            mapping.setdefault(section, {})[leaf] = value
        else:
            mapping[key] = value
    return from_mapping(TrainConfig, mapping)


def train_cli(*args, timeout=300, **popen):
    command = [sys.executable, "-m", "distill.cli", "train", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if popen:
        return subprocess.Popen(command, env=env, **popen)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


# ---------------------------------------------------------------- the imbalance failure

FEATURES = 16


@dataclass(frozen=True)
class Scenario:
    """How a generated label set is made; see `imbalanced_set`."""

    centre: float  # the typical photo's level of each degradation
    spread: float  # how much typical photos vary around it
    feature_noise: float  # how faintly the student's features show the levels
    teacher_noise: float  # std of the label noise the student cannot reproduce (mean over photos)
    disagreeing: bool  # noise varies per photo and `confidence` says how much


# The student sees the degradations clearly; teachers disagree, and say where.
CLEAR_CUES = Scenario(centre=0.5, spread=0.05, feature_noise=0.2, teacher_noise=0.5,
                      disagreeing=True)
# The student's features show the degradations faintly (a weak backbone, subtle defects).
FAINT_CUES = Scenario(centre=0.4, spread=0.06, feature_noise=0.5, teacher_noise=0.5,
                      disagreeing=False)


def imbalanced_set(count: int, seed: int, scenario: Scenario):
    """Three visible degradations (blur, noise, exposure), each 0–1. 85 % of photos are typical
    (every level near the centre: quality near the mean, 5.4–6), 15 % anywhere: AVA's shape,
    label std ~0.8–0.9. Quality is a known function of the levels; the label adds teacher
    noise (the part of a teacher's score no student reproduces); the student sees the levels
    through a fixed noisy 16-d embedding, as a frozen backbone's features."""
    rng = np.random.default_rng(seed)
    typical = rng.random(count) < 0.85
    levels = np.where(typical[:, None], rng.normal(scenario.centre, scenario.spread, (count, 3)),
                      rng.uniform(0, 1, (count, 3))).clip(0, 1)
    blur, noise, exposure = levels.T
    quality = 9.25 - 3.0 * blur - 3.0 * noise - 3.0 * exposure**2
    disagreement = rng.random(count) if scenario.disagreeing else np.full(count, 0.5)
    label = quality + 2 * scenario.teacher_noise * disagreement * rng.normal(size=count)
    embed = np.random.default_rng(7).normal(size=(3, FEATURES))
    features = np.tanh(levels @ embed) + scenario.feature_noise * rng.normal(size=(count, FEATURES))
    confidence = 1 - disagreement if scenario.disagreeing else np.ones(count)
    tensors = (torch.tensor(a, dtype=torch.float32) for a in (features, label, confidence))
    return (*tensors, quality)


class FeatureHead(torch.nn.Module):
    """The student's heads on fixed features: isolates the objective and the sampler."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(FEATURES, 64), torch.nn.ReLU())
        self.quality, self.keep = torch.nn.Linear(64, 1), torch.nn.Linear(64, 1)

    def forward(self, x):
        hidden = self.body(x)
        return {"quality": self.quality(hidden).squeeze(1) + 5.5,
                "keep_logit": self.keep(hidden).squeeze(1)}


def fit_head(train, held_out, loss: LossConfig, balance_power: float, seed: int,
             steps: int = 300, batch: int = 64) -> dict:
    features, label, confidence, _ = train
    torch.manual_seed(seed)
    head = FeatureHead()
    optimizer = torch.optim.AdamW(head.parameters(), 1e-3, weight_decay=0.05)
    weights = balance_weights(label.numpy(), 9, balance_power) if balance_power else None
    order = torch.tensor([i for i, _ in EpochSampler(steps * batch, len(label), weights, seed)])
    for step in range(steps):
        rows = order[step * batch:(step + 1) * batch]
        targets = {"quality": label[rows], "keep_prob": torch.sigmoid((label[rows] - 6) / 0.5),
                   "confidence": confidence[rows],
                   "has_quality": torch.ones(batch, dtype=torch.bool)}
        total, _ = distillation_loss(head(features[rows]), targets, loss)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    test_features, test_label, _, test_quality = held_out
    with torch.no_grad():
        pred = head(test_features)["quality"].numpy()
    keep_true, keep_pred = test_quality >= 6, pred >= 6
    return {"std_ratio": pred.std() / test_label.numpy().std(),
            "srcc": stats.spearmanr(pred, test_quality).statistic,
            "keep_f1": 2 * (keep_true & keep_pred).sum() / (keep_true.sum() + keep_pred.sum())}


PLAIN_MSE = LossConfig(regression="mse", keep=0, rank=0, confidence_weighting=False)
OURS = LossConfig(keep=0)  # the defaults: Huber, ranking hinge, confidence weights


def compare_on(scenario: Scenario) -> list[tuple[dict, dict]]:
    """Plain MSE with uniform sampling vs the defaults with balanced sampling (power 0.5), on
    three generated sets. Head level, on purpose: the claim is about the objective and the
    sampler, and on fixed features it is deterministic and takes seconds; with a CNN learning
    from scratch on this CPU the outcome at a small budget depends on the seed (one MSE run
    collapsed to 0.05 x the label std, the next reached 0.86) and costs minutes per run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 16x64 matmuls: more threads only add contention
    try:
        results = []
        for seed in range(3):
            train = imbalanced_set(2000, 10 * seed, scenario)
            held_out = imbalanced_set(3000, 10 * seed + 1, scenario)
            results.append((fit_head(train, held_out, PLAIN_MSE, balance_power=0.0, seed=seed),
                            fit_head(train, held_out, OURS, balance_power=0.5, seed=seed)))
        return results
    finally:
        torch.set_num_threads(threads)


def test_balanced_sampling_and_ranking_stop_the_collapse_to_the_mean():
    for mse, fixed in compare_on(CLEAR_CUES):
        assert mse["std_ratio"] < 0.3, mse  # plain MSE predicts (nearly) the mean
        assert fixed["std_ratio"] > 0.6, fixed
        assert fixed["keep_f1"] > mse["keep_f1"] + 0.15, (mse, fixed)  # keeps are found again
        # With clear cues MSE ranks as well as it can: the spread costs no ranking (SRCC vs
        # the true quality within 0.02) but does not raise it either.
        assert fixed["srcc"] > mse["srcc"] - 0.02, (mse, fixed)


def test_with_faint_cues_balanced_sampling_and_ranking_also_raise_srcc():
    """Faint cues, same 300-step budget: plain MSE, fed mostly typical photos whose labels
    differ by noise, has barely started to rank; balanced sampling shows it the informative
    extremes three times as often and the ranking term pays per mis-ordered pair."""
    for mse, fixed in compare_on(FAINT_CUES):
        assert mse["std_ratio"] < 0.3, mse
        assert fixed["std_ratio"] > 0.6, fixed
        assert fixed["srcc"] > mse["srcc"] + 0.04, (mse, fixed)


def test_rank_loss_is_zero_only_when_predictions_spread_as_labels_do():
    from students.losses import rank_loss

    label, weights = torch.tensor([4.0, 5.0, 6.0, 7.0]), torch.ones(4)
    assert rank_loss(label.clone(), label, weights, 0.05).item() == 0.0
    # Collapsed to the mean: every ordered pair pays its label gap (1+2+1+3+2+1) / 6.
    assert rank_loss(torch.full((4,), 5.5), label, weights, 0.05).item() == pytest.approx(10 / 6)
    assert rank_loss(label * 2, label, weights, 0.05).item() == 0.0  # over-spread is free
    assert rank_loss(label.flip(0), label, weights, 0.05).item() > 10 / 6  # reversed: worse


def test_balanced_sampler_evens_out_score_bins():
    quality = np.concatenate([np.full(900, 5.5), np.full(50, 2.5), np.full(50, 8.5)])
    weights = balance_weights(quality, 9, power=1.0)
    drawn = [i for i, _ in EpochSampler(30000, len(quality), weights, seed=1)]
    share_tails = np.isin(quality[drawn], (2.5, 8.5)).mean()
    assert share_tails == pytest.approx(2 / 3, abs=0.02)  # three bins, one third each
    again = list(EpochSampler(100, len(quality), weights, seed=1))
    other_epoch = EpochSampler(100, len(quality), weights, seed=1)
    other_epoch.set_epoch(1)
    assert again == list(EpochSampler(100, len(quality), weights, seed=1))
    assert again != list(other_epoch)
    plain = [i for i, _ in EpochSampler(1000, 1000, None, seed=0)]
    assert sorted(plain) == list(range(1000))  # without weights: a permutation

# ---------------------------------------------------------------- labels in

def test_dedup_and_human_labels_shape_the_training_rows(label_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(label_run, run)
    pseudo = {r["image_id"]: r for r in run_folder.read_labels(run).to_pylist()}
    run_folder.write_table(run / "dedup.parquet", pa.table({
        "image_id": ["img001", "img002", "img003"], "cluster_id": [0, 0, 1],
        "is_duplicate": [True, False, None], "dup_of": ["img002", None, None],
        "similarity": [0.99, 1.0, 1.0]}))
    # img004: a scored human label whose row lacks the path; img005: keep/trash only.
    run_folder.write_table(run / "human.parquet", pa.Table.from_pylist([
        {"image_id": "img004", "source": "human", "path": None, "quality": 9.5, "keep_prob": 1.0,
         "confidence": 1.0},
        {"image_id": "img005", "source": "human", "path": pseudo["img005"]["path"],
         "quality": float("nan"), "keep_prob": 0.0, "confidence": 1.0}]))
    labels = load_labels(run)
    by_id = {image_id: i for i, image_id in enumerate(labels.image_id)}
    assert "img001" not in by_id and "img002" in by_id and "img003" in by_id
    assert len(labels) == 39 and labels.summary["duplicates_dropped"] == 1
    assert labels.summary["human_labels"] == 2
    human = by_id["img004"]
    assert labels.quality[human] == 9.5 and labels.path[human] == pseudo["img004"]["path"]
    unscored = by_id["img005"]
    assert np.isnan(labels.quality[unscored]) and labels.keep_prob[unscored] == 0.0
    assert labels.summary["unlabeled_dropped"] == 0
    # dist_nima histograms, normalised; the human rows replace the teachers' histogram too.
    assert labels.has_rating.sum() == 37 and not labels.has_rating[[human, unscored]].any()
    assert np.allclose(labels.rating[labels.has_rating].sum(1), 1.0)

    train, val = split(labels, 0.25, "salt")
    assert set(train.image_id).isdisjoint(val.image_id) and len(train) + len(val) == 39
    again, _ = split(load_labels(run), 0.25, "salt")
    assert again.image_id == train.image_id  # a hash, not a shuffle


def test_missing_labels_and_bad_keys_are_one_line_errors(label_run, tmp_path):
    from click.testing import CliRunner

    from distill.cli.train import train

    with pytest.raises(DistillError, match="no label shards"):
        load_labels(tmp_path)
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        from_mapping(TrainConfig, {"labels": "x", "out": "y", "optim": {"learning_rate": 1}})
    with pytest.raises(ConfigError, match="data.resize_mode must be one of teacher_scale"):
        from_mapping(TrainConfig, {"labels": "x", "out": "y", "data": {"resize_mode": "zoom"}})
    runner = CliRunner()
    result = runner.invoke(train, ["--student", "tiny", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert result.stderr.strip() == "distill: error: give --labels (or `labels:` in --config)"
    result = runner.invoke(train, ["--labels", str(label_run), "--out", str(tmp_path / "r"),
                                   "--student", "vgg"])
    assert result.exit_code == 2 and "unknown student 'vgg'" in result.stderr
    result = runner.invoke(train, ["--labels", str(label_run), "--out", str(tmp_path / "r"),
                                   "--set", "optim.lr"])
    assert result.exit_code == 2 and "expected KEY.PATH=VALUE" in result.stderr


# ---------------------------------------------------------------- a run and its outputs

def test_a_run_writes_student_card_metrics_and_tensorboard(label_run, tmp_path):
    out = tmp_path / "run"
    card = run_train(tiny_config(label_run, out, tensorboard=True), progress_bar=False)
    assert card["training"]["steps"] == 10 and card["init"]["kind"] == "random"
    assert card["labels"]["manifest_sha256"] == sha256_of(label_run / "manifest.json")
    assert card["teachers"] == [{"teacher": "generated", "weights": []}]
    rating_head = 10 * (96 + 1)
    tiny = sum(p.numel() for p in create_student("tiny").parameters())
    assert card["parameters"] == tiny + rating_head
    assert card["flops_at_224"] > 5e7 and set(card["val_metrics"]) >= {"srcc", "plcc", "std_ratio"}
    assert card["outputs"][:2] == ["quality", "keep_prob"] and len(card["outputs"]) == 12
    assert json.loads((out / "model_card.json").read_text())["parameters"] == card["parameters"]
    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [2, 4, 5, 6, 8, 10]
    assert all(r["val_srcc"] for r in rows if int(r["step"]) in (5, 10))
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000005", "step-000010"]

    student = load_student(out / "student.pt")
    assert student.preprocessing["image_size"] == SIDE and student.card["student"] == "tiny"
    # teacher_scale by default; this manifest records no decode scale, so the labeler's default
    assert student.preprocessing["resize_size"] == 768
    photos = [Image.open(p) for p in sorted((label_run / "images").glob("*.png"))[:5]]
    scores = student.predict(photos)
    assert scores["quality"].shape == (5,)
    assert np.all((scores["quality"] >= 1) & (scores["quality"] <= 10))
    assert np.allclose(scores["rating"].sum(1), 1.0, atol=1e-5)

    again = run_train  # a finished RUN_DIR is refused without --resume
    with pytest.raises(DistillError, match="--resume"):
        again(tiny_config(label_run, out), progress_bar=False)


def test_killed_between_checkpoints_resumes_to_the_same_model(label_run, tmp_path):
    args = ["--labels", str(label_run), "--student", "tiny", "--max-steps", "30",
            "--batch-size", "8",
            "--no-progress", "--set", f"data.image_size={SIDE}", "--set", "data.cache=true",
            "--set", "checkpoint_every=10", "--set", "eval_every=20", "--set", "tensorboard=false",
            "--set", "optim.warmup_steps=5", "--set", "data.val_fraction=0.25",
            # Bitwise equality needs the same reduction order in both sessions: left to itself,
            # each session picks its thread count from the load it finds (threads.py).
            "--set", "cpu_threads=1"]
    whole = train_cli(*args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-2000:]

    killed = tmp_path / "killed"
    process = train_cli(*args, "--out", str(killed), stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (killed / "checkpoints" / "step-000010").is_dir():
        assert process.poll() is None and time.monotonic() < deadline, "no first checkpoint"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # somewhere after step 10, long before step 30
    process.wait()
    assert not (killed / "student.pt").exists()
    assert not (killed / "checkpoints" / "step-000030").exists()

    resumed = train_cli(*args, "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout and "at step" in resumed.stdout
    card = json.loads((killed / "model_card.json").read_text())
    assert card["training"]["steps"] == 30 and card["training"]["torch_threads"] == 1
    with (killed / "metrics.csv").open() as handle:
        steps = [int(r["step"]) for r in csv.DictReader(handle)]
    assert steps == sorted(set(steps)) and steps[-1] == 30
    # The sampler's order is a function of (seed, epoch) and the crops of (seed, sample):
    # the resumed run is the uninterrupted one, weight for weight.
    first, second = (load_student(d / "student.pt").model.state_dict() for d in
                     (tmp_path / "whole", killed))
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert np.isfinite(load_student(killed / "student.pt").predict(
        [Image.open(p) for p in sorted((label_run / "images").glob("*.png"))[:2]])["quality"]).all()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_keep_identical_parameters(label_run, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ddp"
    result = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
         str(_free_port()), "-m", "distill.cli", "train", "--labels", str(label_run),
         "--student", "tiny", "--out", str(out), "--max-steps", "6", "--batch-size", "4",
         "--no-progress", "--set", f"data.image_size={SIDE}", "--set", "data.cache=true",
         "--set", "tensorboard=false", "--set", "eval_every=3"],
        capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300,
        check=False)
    assert result.returncode == 0, result.stdout + "\n=====\n" + result.stderr[-3000:]
    card = json.loads((out / "model_card.json").read_text())
    assert card["training"]["processes"] == 2 and card["training"]["steps"] == 6
    digests = card["training"]["rank_parameter_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert result.stdout.count("after 6 steps") == 1  # only rank 0 reports


# ---------------------------------------------------------------- function matching

def test_function_matching_teachers_label_the_crop_being_trained_on(label_run, tmp_path):
    from distill.training.data import TeacherTargets, build_data

    config = tiny_config(label_run, tmp_path / "fm", function_matching={"enabled": True},
                         optim={"batch_size": 4, "max_steps": 2, "warmup_steps": 1})
    data = build_data(config, world=1, progress=False)
    batch = next(iter(data.train_loader))
    fresh = TeacherTargets(config, torch.device("cpu"))(batch)
    # The generated labels are not the teachers' fusion: rescoring the crops changes them.
    assert not torch.allclose(fresh["quality"], batch["quality"])
    assert torch.all((fresh["quality"] >= 1) & (fresh["quality"] <= 10))
    card = run_train(config, progress_bar=False)
    assert card["function_matching"] is True and card["training"]["steps"] == 2


# ---------------------------------------------------------------- students

def test_every_student_builds_and_predicts_its_heads():
    assert list_students() == ["efficientnet_b0", "mobilenetv3_large", "mobilenetv3_small",
                               "patch_cnn", "resnet18", "tiny"]
    images = torch.rand(2, 3, SIDE, SIDE)
    for name in list_students():
        model = create_student(name, rating_bins=10, init="random").eval()
        with torch.no_grad():
            out = model(images)
        assert out["quality"].shape == (2,) and out["rating_logits"].shape == (2, 10)
    with pytest.raises(ConfigError, match="no option 'depth'"):
        create_student("tiny", depth=3)


def test_imagenet_init_comes_from_the_weights_folder_or_is_said_random(isolated_weights):
    import timm

    random_model = create_student("mobilenetv3_small")
    assert random_model.init == {"kind": "random",
                                 "reason": "no ImageNet file in the weights folder"}
    with pytest.raises(ConfigError, match="mobilenetv3_small.pth"):
        create_student("mobilenetv3_small", init="imagenet")

    reference = timm.create_model("mobilenetv3_small_100", pretrained=False, num_classes=1000)
    (isolated_weights / "students").mkdir()
    path = isolated_weights / "students" / "mobilenetv3_small_100.lamb_in1k.pth"
    torch.save(reference.state_dict(), path)  # timm's name, classifier included
    model = create_student("mobilenetv3_small")
    assert model.init["kind"] == "imagenet" and model.init["file"] == str(path)
    assert model.init["sha256"] == sha256_of(path)
    own = model.backbone.state_dict()
    assert all(torch.equal(own[k], reference.state_dict()[k]) for k in own)
    assert create_student("mobilenetv3_small", init="random").init["kind"] == "random"


def test_teacher_scale_follows_the_scale_the_labels_were_made_at(label_run, tmp_path):
    from distill.training.data import resize_size

    run = tmp_path / "labels"
    shutil.copytree(label_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["decode"] = {"max_side": 512}
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert resize_size(tiny_config(run, tmp_path / "r")) == 512
    assert resize_size(tiny_config(run, tmp_path / "r", data__resize_size=300)) == 300
    shorter = tiny_config(run, tmp_path / "r", data__resize_mode="shorter")
    assert resize_size(shorter) is None  # policy() then takes image_size / 0.93
