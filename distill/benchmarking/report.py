"""Bench reports: report.json, report.md, predictions.csv, skipped.csv and PNG plots.

One summary-row format (`summary_row`) serves a single report and `--compare`, so teachers and
students line up column for column. Plots are drawn on Agg canvases without pyplot, so no
global backend state is touched.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

from distill.decode import read_input
from distill.errors import DistillError

SUMMARY_COLUMNS = (
    "model", "kind", "dataset (split)", "n", "skipped", "SRCC [95% CI]", "PLCC [95% CI]",
    "KRCC", "RMSE 1-10", "acc@5", "acc@keep", "F1 3-tier", "ROC-AUC", "1-10 from",
    "img/s", "p50 ms", "p95 ms", "params", "GFLOPs", "MB",
)
REPORT_SCHEMA = "distill.bench/1"
PLOTS = {"scatter": "scatter.png", "confusion": "confusion.png",
         "histograms": "histograms.png", "calibration": "calibration.png"}


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _with_ci(metrics: dict, key: str) -> str:
    low, high = metrics["ci95"].get(key, [None, None])
    interval = "" if low is None else f" [{_fmt(low)}, {_fmt(high)}]"
    return _fmt(metrics[key]) + interval


def summary_row(report: dict) -> list[str]:
    metrics, model, speed = report["metrics"], report["model"], report["speed"]
    cost, dataset = model["cost"], report["dataset"]
    flops = cost.get("flops")
    return [
        model["spec"], model["kind"], f"{dataset['name']} ({dataset['split']['kind']})",
        _fmt(metrics["n"]), _fmt(report["skipped"]["count"]),
        _with_ci(metrics, "srcc"), _with_ci(metrics, "plcc"), _fmt(metrics["krcc"]),
        _fmt(metrics["rmse_1_10"]), _fmt(metrics["binary_at_5"]["accuracy"]),
        _fmt(metrics["binary_at_keep"]["accuracy"]), _fmt(metrics["three_class"]["f1_macro"]),
        _fmt(metrics["roc_auc"]["value"]), model.get("quality_source", "n/a"),
        _fmt(speed["images_per_second"], 1), _fmt(speed["latency_ms"]["p50_ms"], 1),
        _fmt(speed["latency_ms"]["p95_ms"], 1), _fmt(cost.get("params")),
        "n/a" if flops is None else _fmt(flops / 1e9, 2), _fmt(cost.get("size_mb"), 1),
    ]


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def per_class_table(section: dict) -> str:
    rows = [[name, _fmt(c["precision"]), _fmt(c["recall"]), _fmt(c["f1"]), c["support"]]
            for name, c in section["per_class"].items()]
    return markdown_table(("class", "precision", "recall", "F1", "support"), rows)


def render_markdown(report: dict) -> str:
    metrics, model, dataset = report["metrics"], report["model"], report["dataset"]
    tiers = metrics["three_class"]
    confusion = [[f"true {label}", *row] for label, row in zip(tiers["labels"],
                                                                 tiers["confusion"])]
    cost, skipped, speed = model["cost"], report["skipped"], report["speed"]
    header = (f"{dataset['split']['kind']} split ({dataset['split']['source']}), "
              f"{report['n_scored']} images scored, {skipped['count']} skipped; keep threshold "
              f"{report['keep_threshold']:g} on the 1-10 scale ({dataset['culling_scale']}).")
    notes = [
        *report["notes"],
        f"correlations: {metrics['correlation_of']}; PLCC without a logistic fit",
        f"calibration input: {metrics['calibration']['input']}",
        (f"CIs: {metrics['bootstrap']['n_resamples']} resamples, "
         f"{metrics['bootstrap']['method']}, seed {metrics['bootstrap']['seed']}"),
        (f"img/s: {speed['images_per_second_note']}; latency: one image per call over "
         f"{speed['latency_ms']['samples']} images"),
    ]
    parts = [
        f"# Bench: {model['spec']} on {dataset['name']}",
        header,
        markdown_table(SUMMARY_COLUMNS, [summary_row(report)]),
        "## Notes",
        "\n".join(f"- {note}" for note in notes),
        f"## Binary at 5 ({metrics['binary_at_5']['positive']})",
        per_class_table(metrics["binary_at_5"]),
        f"## Binary at keep ({metrics['binary_at_keep']['positive']})",
        per_class_table(metrics["binary_at_keep"]),
        f"## Three tiers (accuracy {_fmt(tiers['accuracy'])}, macro F1 {_fmt(tiers['f1_macro'])})",
        per_class_table(tiers),
        markdown_table(("", *[f"pred {label}" for label in tiers["labels"]]), confusion),
        *faces_section(metrics.get("faces")),
        "## Cost",
        markdown_table(("measure", "value", "note"), [
            ("params", _fmt(cost.get("params")), cost.get("params_note", "")),
            ("FLOPs", _fmt(cost.get("flops")), cost.get("flops_note", "")),
            ("size MB", _fmt(cost.get("size_mb"), 1), cost.get("size_note", ""))]),
        f"## Skipped images: {skipped['count']}",
        ", ".join(f"{stage}: {count}" for stage, count in skipped["by_stage"].items())
        + f" (all in {skipped['all']})",
        "\n".join(f"- `{s['id']}` ({s['stage']}): {s['reason']}" for s in skipped["examples"]),
        "## Plots",
        "\n".join(f"![{name}]({file})" for name, file in report["files"]["plots"].items()),
    ]
    return "\n\n".join(part for part in parts if part) + "\n"


def faces_section(faces: dict | None) -> list[str]:
    """The student's aux heads against the faces teacher, when the bench measured them."""
    if not faces:
        return []
    rows = [(name, _fmt(c["n"]), _fmt(c["srcc"]), _fmt(c["plcc"]), _fmt(c["mae"]))
            for name, c in faces["columns"].items()]
    verdicts = [(name, _fmt(v["n"]), _fmt(v.get("positives")), _fmt(v["accuracy"]),
                 _fmt(v["balanced_accuracy"]), _fmt(v["roc_auc"]))
                for name, v in faces.items() if name in ("has_face", "any_eyes_closed")]
    return ["## Agreement with the faces teacher",
            markdown_table(("column", "n", "SRCC", "PLCC", "MAE"), rows),
            markdown_table(("verdict", "n", "teacher yes", "accuracy", "balanced acc.",
                            "ROC-AUC"), verdicts) if verdicts else ""]


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_scatter(columns: dict, report: dict, path: Path) -> None:
    raw, truth = np.asarray(columns["raw"]), np.asarray(columns["truth"])
    slope, intercept = np.polyfit(raw, truth, 1)
    figure = Figure(figsize=(5, 4.5))
    axes = figure.add_subplot()
    axes.scatter(raw, truth, s=8, alpha=0.5)
    line = np.linspace(raw.min(), raw.max(), 2)
    axes.plot(line, slope * line + intercept, color="C3",
              label=f"least squares: {slope:.3g} x + {intercept:.3g}")
    better = "higher" if report["model"].get("higher_is_better", True) else "lower"
    axes.set(xlabel=f"{report['model']['name']} score ({better} is better)",
             ylabel=f"{report['dataset']['name']} ground truth (native)",
             title=f"SRCC {_fmt(report['metrics']['srcc'])}, n={len(raw)}")
    axes.legend(loc="best", fontsize=8)
    _save(figure, path)


def plot_confusion(report: dict, path: Path) -> None:
    tiers = report["metrics"]["three_class"]
    figure = Figure(figsize=(4.5, 4))
    axes = figure.add_subplot()
    ConfusionMatrixDisplay(np.array(tiers["confusion"]), display_labels=tiers["labels"]).plot(
        ax=axes, colorbar=False)
    axes.set_title(f"three tiers, macro F1 {_fmt(tiers['f1_macro'])}")
    _save(figure, path)


def plot_histograms(columns: dict, report: dict, path: Path) -> None:
    figure = Figure(figsize=(9, 3.5))
    left, right = figure.subplots(1, 2)
    bins = np.linspace(1, 10, 37)
    left.hist(columns["truth_1_10"], bins=bins, alpha=0.6, label="ground truth")
    left.hist(columns["quality_1_10"], bins=bins, alpha=0.6,
              label=f"prediction ({report['model'].get('quality_source', '')})")
    left.set(xlabel="score, 1-10 culling scale", ylabel="images")
    left.legend(fontsize=8)
    right.hist(columns["raw"], bins=30, color="C2")
    right.set(xlabel=f"{report['model']['name']} raw score (native)", ylabel="images")
    _save(figure, path)


def plot_calibration(report: dict, path: Path) -> None:
    calibration = report["metrics"]["calibration"]
    figure = Figure(figsize=(4.5, 4))
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    axes.plot(calibration["prob_pred"], calibration["prob_true"], marker="o", label="model")
    is_probability = calibration["input"] == "keep probability"
    axes.set(xlabel="predicted keep probability" if is_probability
             else "oriented score, min-max scaled\n(not a probability: shape only)",
             ylabel="fraction of keepers",
             title=f"keep at >= {report['keep_threshold']:g}")
    axes.legend(fontsize=8)
    _save(figure, path)


def json_safe(value):
    """NaN and infinities become null: strict JSON readers reject them."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_report(report: dict, columns: dict, skipped: list[dict], out: Path) -> dict:
    """Write every report file into `out`; returns their names (relative to `out`)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": "report.json", "markdown": "report.md", "predictions": "predictions.csv",
             "skipped": "skipped.csv", "plots": dict(PLOTS)}
    report["files"] = files
    names = list(columns)
    write_csv(out / files["predictions"],
              [dict(zip(names, values)) for values in zip(*columns.values())], names)
    write_csv(out / files["skipped"], skipped, ["id", "path", "stage", "reason"])
    plot_scatter(columns, report, out / PLOTS["scatter"])
    plot_confusion(report, out / PLOTS["confusion"])
    plot_histograms(columns, report, out / PLOTS["histograms"])
    plot_calibration(report, out / PLOTS["calibration"])
    (out / files["markdown"]).write_text(render_markdown(report))
    text = json.dumps(json_safe(report), indent=2, default=str, allow_nan=False)
    (out / files["json"]).write_text(text + "\n")
    return files


def load_report(path: str | Path) -> dict:
    try:
        report = json.loads(read_input(path, "bench report"))
    except (ValueError, RecursionError) as exc:
        raise DistillError(f"{path}: not a bench report: {exc}") from None
    if not isinstance(report, dict) or report.get("schema") != REPORT_SCHEMA:
        raise DistillError(f"{path}: not a bench report (schema {REPORT_SCHEMA})")
    return report


def compare_reports(paths: list[str | Path]) -> str:
    """One markdown table, a row per report.json, in the order given."""
    if not paths:
        raise DistillError("--compare needs at least one report.json")
    reports = [load_report(path) for path in paths]
    table = markdown_table(SUMMARY_COLUMNS, [summary_row(report) for report in reports])
    footnotes = []
    if len({(r["dataset"]["name"], r["dataset"]["split"]["source"], r["dataset"]["n_test"])
            for r in reports}) > 1:
        footnotes.append("rows come from different datasets or splits: compare with care")
    if any(r["model"].get("quality_source") == "quantile-matched" for r in reports):
        footnotes.append("\"quantile-matched\": thresholded metrics (acc, F1, RMSE) use the "
                         "model's ranking mapped onto the test set's own score distribution")
    return table + "".join(f"\n\n- {note}" for note in footnotes) + "\n"
