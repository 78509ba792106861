"""The bench stage on real photos: loaders, metrics against scipy/sklearn, reports, --compare.

The fixture is a small AVA-format dataset made from scikit-image's photos (crops, blurs, JPEG
artefacts, noise) with known vote counts, one listed image that does not exist and one that is
truncated. A student cannot be benched yet (students arrive with the distillation issue): only
its clear refusal is tested here.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageFilter
from scipy import stats
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from distill.benchmarking import TeacherPredictor, compare_reports, run_bench
from distill.cli.bench import bench
from distill.errors import DistillError
from distill.human_scores import in_hash_test_split, load_dataset
from teachers import create_teacher
from teachers.clip_aesthetic import build_head

SIZE = (160, 120)
MISSING_ID, CORRUPT_ID, NO_VOTES_ID = "999001", "999002", "999003"


def variants(photo: Image.Image) -> list[Image.Image]:
    """Seven versions of one photo, from clean to badly degraded."""
    width, height = photo.size
    crop = photo.crop((width // 8, height // 8, width * 7 // 8, height * 7 // 8)).resize(SIZE)
    noise = np.random.default_rng(1).normal(0, 25, (SIZE[1], SIZE[0], 3))
    noisy = np.asarray(crop, dtype=np.float64) + noise
    jpeg = io.BytesIO()
    crop.save(jpeg, "JPEG", quality=5)
    return [
        crop,
        photo.crop((0, 0, width // 2, height // 2)).resize(SIZE),
        crop.resize((48, 36)).resize(SIZE),
        crop.filter(ImageFilter.GaussianBlur(1.5)),
        crop.filter(ImageFilter.GaussianBlur(4)),
        Image.open(jpeg).convert("RGB"),
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)),
    ]


@pytest.fixture(scope="module")
def ava(tmp_path_factory, skimage_photos) -> tuple[Path, dict[str, np.ndarray]]:
    """An AVA root (AVA.txt + images/) and the vote counts written for each image id."""
    root = tmp_path_factory.mktemp("ava")
    (root / "images").mkdir()
    rng = np.random.default_rng(7)
    counts, lines = {}, []
    for p, path in enumerate(sorted(skimage_photos.values())):
        photo = Image.open(path).convert("RGB")
        for v, image in enumerate(variants(photo)):
            image_id = str(100000 + 10 * p + v)
            image.save(root / "images" / f"{image_id}.jpg", quality=92)
            centre = 7.5 - 0.6 * v + 0.3 * p  # cleaner variants get higher votes
            weights = np.exp(-((np.arange(1, 11) - centre) ** 2) / 4.5)
            counts[image_id] = rng.multinomial(60 + 10 * v, weights / weights.sum())
    counts[MISSING_ID] = np.array([0, 1, 2, 5, 9, 7, 3, 1, 0, 0])
    counts[CORRUPT_ID] = np.array([1, 0, 0, 4, 6, 8, 5, 2, 1, 1])
    full = (root / "images" / "100000.jpg").read_bytes()
    (root / "images" / f"{CORRUPT_ID}.jpg").write_bytes(full[: len(full) // 3])
    for index, (image_id, votes) in enumerate(counts.items(), start=1):
        lines.append(f"{index} {image_id} {' '.join(map(str, votes))} 1 {index % 40} 1396")
    lines.append(f"{len(lines) + 1} {NO_VOTES_ID} {' '.join(['0'] * 10)} 0 0 1396")
    (root / "AVA.txt").write_text("\n".join(lines) + "\n")
    return root, counts


@pytest.fixture(scope="module")
def piqe_run(ava, tmp_path_factory) -> tuple[dict, Path]:
    root, _ = ava
    out = tmp_path_factory.mktemp("bench") / "piqe"
    return run_bench("teacher:piqe", "ava", root, "all", out, latency_samples=5), out


def read_predictions(out: Path) -> dict[str, np.ndarray]:
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    numeric = ("truth", "truth_1_10", "raw", "oriented", "quality_1_10", "keep_score")
    columns = {key: np.array([float(row[key]) for row in rows]) for key in numeric}
    columns["id"] = [row["id"] for row in rows]
    return columns


def test_ava_loader_computes_mean_and_std_of_the_votes(ava):
    root, counts = ava
    data = load_dataset("ava", root, "all")
    by_id = {item.id: item for item in data.items}
    assert set(by_id) == set(counts)  # the no-vote row is left out, with a note
    assert any(NO_VOTES_ID in note for note in data.notes)
    for image_id, votes in counts.items():
        every_vote = np.repeat(np.arange(1, 11), votes)  # one entry per voter
        assert by_id[image_id].score == pytest.approx(every_vote.mean(), abs=1e-12)
        assert by_id[image_id].score_std == pytest.approx(every_vote.std(), abs=1e-12)
    assert by_id["100003"].path == root / "images" / "100003.jpg"


def test_ava_splits_official_file_and_hash(ava, tmp_path):
    root, counts = ava
    listed = sorted(counts)[:5]
    (tmp_path / "test.jpgl").write_text("\n".join(f"{i}.jpg" for i in listed) + "\n")
    data = load_dataset("ava", root, str(tmp_path / "test.jpgl"))
    assert sorted(item.id for item in data.items) == listed
    assert data.split["kind"] == "file"
    by_hash = load_dataset("ava", root)  # no official list under the root: the hash split
    expected = {i for i in counts if int(hashlib.sha1(i.encode()).hexdigest()[:16], 16) % 100 < 10}
    assert by_hash.split["kind"] == "hash"
    assert {item.id for item in by_hash.items} == expected
    share = np.mean([in_hash_test_split(str(i)) for i in range(20000)])
    assert 0.09 < share < 0.11
    with pytest.raises(DistillError, match="no official test split"):
        load_dataset("ava", root, "official")
    official_root = tmp_path / "with_lists"
    (official_root / "aesthetics_image_lists").mkdir(parents=True)
    (official_root / "AVA.txt").write_bytes((root / "AVA.txt").read_bytes())
    (official_root / "aesthetics_image_lists" / "generic_test.jpgl").write_text(
        f"{listed[0]}\n{listed[1]}\n123\n")
    official = load_dataset("ava", official_root)  # found under the root: used by default
    assert official.split["kind"] == "official"
    assert [item.id for item in official.items] == listed[:2]
    assert official.split["n_split_ids_without_label"] == 1


def test_every_metric_equals_scipy_and_sklearn(piqe_run):
    report, out = piqe_run
    m, p = report["metrics"], read_predictions(out)
    truth, truth10, oriented = p["truth"], p["truth_1_10"], p["oriented"]
    quality = p["quality_1_10"]
    np.testing.assert_array_equal(oriented, -p["raw"])  # piqe: lower is better
    assert m["n"] == len(truth) == report["n_scored"]
    assert m["srcc"] == pytest.approx(stats.spearmanr(truth, oriented)[0])
    assert m["plcc"] == pytest.approx(stats.pearsonr(truth, oriented)[0])
    assert m["krcc"] == pytest.approx(stats.kendalltau(truth, oriented)[0])
    assert m["rmse_1_10"] == pytest.approx(np.sqrt(skm.mean_squared_error(truth10, quality)))
    # quantile matching: piqe's order (tied scores share their mid-rank), the truth's quantiles
    below = (oriented[None, :] < oriented[:, None]).sum(axis=1)
    tied = (oriented[None, :] == oriented[:, None]).sum(axis=1)
    np.testing.assert_allclose(quality, np.quantile(truth10, (below + tied / 2) / len(truth)))
    assert stats.spearmanr(quality, oriented)[0] == pytest.approx(1.0)
    for key, true_pos, pred_pos in (("binary_at_5", truth10 > 5, quality > 5),
                                    ("binary_at_keep", truth10 >= 6, quality >= 6)):
        assert m[key]["accuracy"] == pytest.approx(skm.accuracy_score(true_pos, pred_pos))
        prf = skm.precision_recall_fscore_support(true_pos, pred_pos, labels=[False, True],
                                                  zero_division=0)
        for column, name in enumerate(m[key]["per_class"]):
            got = m[key]["per_class"][name]
            assert [got["precision"], got["recall"], got["f1"], got["support"]] == pytest.approx(
                [prf[0][column], prf[1][column], prf[2][column], prf[3][column]])
    tier_true = np.select([truth10 <= 5, truth10 <= 6], [0, 1], 2)
    tier_pred = np.select([quality <= 5, quality <= 6], [0, 1], 2)
    assert m["three_class"]["f1_macro"] == pytest.approx(
        skm.f1_score(tier_true, tier_pred, labels=[0, 1, 2], average="macro", zero_division=0))
    assert m["three_class"]["confusion"] == skm.confusion_matrix(
        tier_true, tier_pred, labels=[0, 1, 2]).tolist()
    assert m["roc_auc"]["value"] == pytest.approx(skm.roc_auc_score(truth10 >= 6, oriented))
    span = (oriented - oriented.min()) / (oriented.max() - oriented.min())
    prob_true, prob_pred = calibration_curve(truth10 >= 6, span, n_bins=10)
    assert m["calibration"]["prob_true"] == pytest.approx(prob_true.tolist())
    assert m["calibration"]["prob_pred"] == pytest.approx(prob_pred.tolist())


def test_bootstrap_intervals_agree_with_an_independent_resampling(piqe_run):
    report, out = piqe_run
    m, p = report["metrics"], read_predictions(out)
    rng = np.random.default_rng(12345)  # another seed and loop: agreement within MC error
    draws = rng.integers(0, len(p["truth"]), (2000, len(p["truth"])))
    checks = {
        "srcc": [stats.spearmanr(p["truth"][i], p["oriented"][i])[0] for i in draws],
        "plcc": [stats.pearsonr(p["truth"][i], p["oriented"][i])[0] for i in draws],
        "accuracy_at_5": [np.mean((p["truth_1_10"][i] > 5) == (p["quality_1_10"][i] > 5))
                          for i in draws],
    }
    for key, values in checks.items():
        low, high = m["ci95"][key]
        assert [low, high] == pytest.approx(np.percentile(values, [2.5, 97.5]), abs=0.08), key
    assert m["ci95"]["accuracy_at_5"][0] <= m["binary_at_5"]["accuracy"] <= m["ci95"][
        "accuracy_at_5"][1]
    assert m["ci95"]["srcc"][0] < m["srcc"] < m["ci95"]["srcc"][1]


def test_missing_and_corrupt_images_are_counted_and_skipped(piqe_run):
    report, out = piqe_run
    assert report["skipped"]["count"] == 2
    assert report["skipped"]["by_stage"] == {"decode": 2, "predict": 0}
    reasons = {row["id"]: row["reason"] for row in csv.DictReader((out / "skipped.csv").open())}
    assert reasons.keys() == {MISSING_ID, CORRUPT_ID}
    assert "not found" in reasons[MISSING_ID]
    assert "corrupt or truncated" in reasons[CORRUPT_ID]
    assert report["n_scored"] == report["dataset"]["n_test"] - 2 == 35
    assert MISSING_ID not in read_predictions(out)["id"]


def test_report_renders_markdown_json_and_plots_for_a_teacher(piqe_run):
    report, out = piqe_run
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["metrics"]["srcc"] == pytest.approx(report["metrics"]["srcc"])
    assert on_disk["model"]["cost"]["params"] == 0  # PIQE has no learned parameters
    assert on_disk["model"]["cost"]["flops"] is None and on_disk["model"]["cost"]["flops_note"]
    speed = on_disk["speed"]
    assert speed["images_per_second"] > 0 and speed["latency_ms"]["samples"] == 5
    assert 0 < speed["latency_ms"]["p50_ms"] <= speed["latency_ms"]["p95_ms"]
    markdown = (out / "report.md").read_text()
    assert "| teacher:piqe | teacher | ava (all) | 35 | 2 |" in markdown
    assert "thresholded metrics for piqe use quantile-matched scores" in markdown
    for name in ("scatter", "confusion", "histograms", "calibration"):
        assert f"({name}.png)" in markdown
        with Image.open(out / f"{name}.png") as png:
            assert png.format == "PNG" and min(png.size) >= 300


def test_cli_bench_and_compare_give_one_table(piqe_run, ava, tmp_path):
    root, _ = ava
    _, piqe_out = piqe_run
    runner = CliRunner()
    result = runner.invoke(bench, ["--model", "teacher:technical", "--dataset", "ava", "--root",
                                   str(root), "--split", "all", "--out", str(tmp_path / "tech"),
                                   "--latency-samples", "3", "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    assert "35 scored, 2 skipped" in result.output
    reports = [str(piqe_out / "report.json"), str(tmp_path / "tech" / "report.json")]
    result = runner.invoke(bench, ["--compare", *reports, "--out", str(tmp_path / "table.md")])
    assert result.exit_code == 0, result.output
    table = compare_reports(reports)
    assert result.output == table == (tmp_path / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert len(rows) == 4 and rows[0].startswith("| model | kind |")  # header, rule, 2 rows
    assert rows[2].startswith("| teacher:piqe |") and rows[3].startswith("| teacher:technical |")
    assert len({row.count("|") for row in rows}) == 1
    bad = runner.invoke(bench, ["--compare", str(root / "AVA.txt")])
    assert bad.exit_code == 2 and "not a bench report" in bad.output


def test_a_student_is_benched_on_the_same_rows_as_teachers(ava, piqe_run, tmp_path):
    import torch

    from students import create_student
    from students.checkpoint import save_student
    from students.preprocess import policy

    root, _ = ava
    torch.manual_seed(0)
    save_student(tmp_path / "student.pt", create_student("tiny").eval(), "tiny", {}, policy(64), {})
    result = CliRunner().invoke(bench, ["--model", str(tmp_path / "student.pt"), "--dataset", "ava",
                                        "--root", str(root), "--split", "all", "--out",
                                        str(tmp_path / "student"), "--latency-samples", "3",
                                        "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "student" / "report.json").read_text())
    assert report["model"]["kind"] == "student"
    assert report["model"]["cost"]["params"] > 0 and report["model"]["cost"]["flops"] > 0
    predictions = read_predictions(tmp_path / "student")
    assert np.all((predictions["quality_1_10"] >= 1) & (predictions["quality_1_10"] <= 10))
    table = compare_reports([str(piqe_run[1] / "report.json"), str(tmp_path / "student" / "report.json")])
    assert "| student |" in table and "| teacher:piqe |" in table
    missing = CliRunner().invoke(bench, ["--model", str(tmp_path / "nope.pt"), "--dataset", "ava",
                                         "--root", str(root)])
    assert missing.exit_code == 2 and "no such student file" in missing.output


def test_koniq_loader_keeps_native_mos_and_maps_thresholds(tmp_path):
    (tmp_path / "512x384").mkdir()
    header = "image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore,set"
    rows = ["10004473376.jpg,0,0,25,73,7,105,3.828571,0.527278,77.38,training",
            "10007357496.jpg,0,3,45,47,1,96,3.479167,0.580003,68.54,test",
            "10020766793.jpg,1,0,7,62,13,83,4.048193,0.514535,81.51,test"]
    (tmp_path / "koniq10k_distributions_sets.csv").write_text("\n".join([header, *rows]) + "\n")
    data = load_dataset("koniq", tmp_path)  # the set column is the official split
    assert [item.id for item in data.items] == ["10007357496", "10020766793"]
    assert data.items[0].score == pytest.approx(3.479167) and data.items[0].score_std == 0.580003
    assert data.items[0].path == tmp_path / "512x384" / "10007357496.jpg"
    np.testing.assert_allclose(data.to_culling(np.array([1.0, 3.0, 5.0])), [1.0, 5.5, 10.0])
    assert len(load_dataset("koniq", tmp_path, "all").items) == 3


def test_csv_loader_relative_absolute_and_scale(tmp_path, skimage_photos):
    absolute = skimage_photos["coffee"]
    (tmp_path / "scores.csv").write_text(f"path,score\nsub/a.jpg,80\n{absolute},20\n")
    data = load_dataset("csv", tmp_path, "all", score_scale=(0, 100))
    assert [item.path for item in data.items] == [tmp_path / "sub" / "a.jpg", absolute]
    np.testing.assert_allclose(data.to_culling(np.array([0, 80, 100])), [1.0, 8.2, 10.0])
    (tmp_path / "test.txt").write_text("sub/a.jpg\n")
    assert [item.id for item in load_dataset("csv", tmp_path, str(tmp_path / "test.txt")).items] == [
        "sub/a.jpg"]
    with pytest.raises(DistillError, match="--score-scale applies to --dataset csv only"):
        load_dataset("ava", tmp_path, score_scale=(0, 100))


def test_eva_loader_averages_votes_and_finds_images(tmp_path):
    folder = tmp_path / "images" / "EVA_category" / "EVA_together"
    folder.mkdir(parents=True)
    (folder / "1234.jpg").write_bytes(b"")
    votes = ["image_id=user_id=score=difficulty", "1234=1=7=2", "1234=2=4=3", "1234=3=x=3",
             "555=1=9=1"]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "votes_filtered.csv").write_text("\n".join(votes) + "\n")
    data = load_dataset("eva", tmp_path, "all")
    by_id = {item.id: item for item in data.items}
    assert by_id["1234"].score == 5.5 and by_id["1234"].score_std == 1.5
    assert by_id["1234"].path == folder / "1234.jpg"
    assert by_id["555"].path == folder / "555.jpg"  # missing: reported where EVA keeps it
    assert any("1 votes with a non-numeric score" in note for note in data.notes)


TINY_CLIP = Path(__file__).parent / "fixtures" / "distill-tiny-clip.json"


def test_torch_teacher_cost_and_native_scale(tmp_path, ava):
    """A real (tiny, random) CLIP teacher: params, FLOPs and MB, and no quantile matching."""
    open_clip.add_model_config(TINY_CLIP)
    torch.manual_seed(0)
    model = open_clip.create_model("distill-tiny-clip", pretrained=None).eval()
    head = build_head("mlp", 32).eval()
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    torch.save(head.state_dict(), tmp_path / "head.pth")
    options = {"arch": "distill-tiny-clip", "clip_weights": str(tmp_path / "clip.pt"),
               "head_weights": str(tmp_path / "head.pth")}
    cost = TeacherPredictor(create_teacher("clip_aesthetic", **options)).cost()
    params = [p for module in (model, head) for p in module.parameters()]
    assert cost["params"] == sum(p.numel() for p in params)
    sizes = (tmp_path / "clip.pt").stat().st_size + (tmp_path / "head.pth").stat().st_size
    assert cost["size_mb"] == pytest.approx(sizes / 1e6)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        head(model.encode_image(torch.zeros(1, 3, 64, 64)))
    assert cost["flops"] == counter.get_total_flops() > 0

    root, _ = ava
    report = run_bench("teacher:clip_aesthetic", "ava", root, "all", tmp_path / "out",
                       options=options, latency_samples=2, n_resamples=0)
    assert report["model"]["quality_source"] == "native 1-10"
    predictions = read_predictions(tmp_path / "out")
    np.testing.assert_array_equal(predictions["quality_1_10"], predictions["raw"])
    assert report["metrics"]["ci95"]["srcc"] == [None, None]
