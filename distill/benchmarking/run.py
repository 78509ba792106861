"""Bench stage: score a dataset's test split with one model and measure it against the labels.

    run_bench("teacher:piqe", "ava", Path("/data/AVA"), split=None, out=Path("bench-ava-piqe"))

Steps: load the test split (`distill.human_scores`), build the predictor (`predict`), decode
and predict every image (decode failures and model failures are listed and skipped), time the
model (throughput over batches, latency over single images), compute the metrics (`metrics`)
and write report.json, report.md, predictions.csv, skipped.csv and the plots (`report`). `compare_reports` renders several report.json files as one table.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from distill.benchmarking.metrics import (
    DEFAULT_KEEP_THRESHOLD,
    compute_metrics,
    face_agreement,
    quantile_match,
)
from distill.benchmarking.predict import Predictor, load_predictor
from distill.benchmarking.report import REPORT_SCHEMA, compare_reports, write_report
from distill.decode import DecodeError, decode_path
from distill.errors import DistillError
from distill.human_scores import BenchDataset, BenchItem, load_dataset

CHUNK = 32  # images decoded and held at once
LATENCY_SAMPLES = 50

__all__ = ["REPORT_SCHEMA", "BenchOptions", "compare_reports", "default_out_dir", "run_bench"]


@dataclass
class BenchOptions:
    """How `run_bench` benches, beside what (model, dataset, root, split) and where (out)."""

    labels: str | Path | None = None  # label file, when not where the dataset expects it
    score_scale: tuple[float, float] | None = None  # csv only: the score column's scale
    keep_threshold: float = DEFAULT_KEEP_THRESHOLD
    options: dict | None = None  # the teacher's options
    weights_dir: str | None = None
    batch_size: int | None = None  # images per predict call (default: the model's own)
    draft_size: int | None = None  # JPEGs decode straight to about this many px
    limit: int | None = None  # bench only the first N test images
    latency_samples: int = LATENCY_SAMPLES
    n_resamples: int = 1000  # bootstrap resamples for the 95 % CIs
    seed: int = 0
    progress: bool = False


@dataclass
class Scored:
    """The images that were predicted, aligned, plus those skipped and the model's time."""

    items: list[BenchItem] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    oriented: list[float] = field(default_factory=list)
    quality: list[float] = field(default_factory=list)  # NaN where the model has no 1–10 score
    keep_prob: list[float] = field(default_factory=list)  # NaN where it has no probability
    aux: list[dict] = field(default_factory=list)  # a student's aux predictions per image
    skipped: list[dict] = field(default_factory=list)
    predict_seconds: float = 0.0
    latency_images: list = field(default_factory=list)  # a few decoded images, re-timed alone


def default_out_dir(dataset: str, model: str) -> Path:
    """bench-<dataset>-<model>: `teacher:piqe` → bench-ava-teacher-piqe, a file → its stem."""
    label = model.replace(":", "-") if model.startswith("teacher:") else Path(model).stem
    return Path(f"bench-{dataset}-{label}")


def predict_items(predictor: Predictor, items: list[BenchItem], *, batch_size: int,
                  draft_size: int | None = None, progress: bool = False,
                  latency_samples: int = LATENCY_SAMPLES) -> Scored:
    scored, warmed = Scored(), False
    bar = tqdm(total=len(items), unit="img", desc=f"bench {predictor.name}", disable=not progress)
    for start in range(0, len(items), CHUNK):
        chunk, decoded = items[start : start + CHUNK], []
        for item in chunk:
            try:
                decoded.append((item, decode_path(item.path, draft_size=draft_size).image))
            except DecodeError as exc:
                scored.skipped.append(_skip(item, "decode", str(exc)))
        if decoded and not warmed:
            predictor.predict([decoded[0][1]])  # warm-up, untimed: lazy init is not throughput
            warmed = True
        for first in range(0, len(decoded), batch_size):
            batch = decoded[first : first + batch_size]
            began = time.perf_counter()
            predictions = predictor.predict([image for _, image in batch])
            scored.predict_seconds += time.perf_counter() - began
            for index, (item, image) in enumerate(batch):
                if index in predictions.errors:
                    scored.skipped.append(_skip(item, "predict", predictions.errors[index]))
                    continue
                scored.items.append(item)
                scored.raw.append(float(predictions.raw[index]))
                scored.oriented.append(float(predictions.oriented[index]))
                scored.quality.append(_at(predictions.quality, index))
                scored.keep_prob.append(_at(predictions.keep_prob, index))
                scored.aux.append({k: float(v[index]) for k, v in predictions.aux.items()})
                if len(scored.latency_images) < latency_samples:
                    scored.latency_images.append(image)
        bar.update(len(chunk))
    bar.close()
    return scored


def _skip(item: BenchItem, stage: str, reason: str) -> dict:
    return {"id": item.id, "path": str(item.path), "stage": stage, "reason": reason}


def _at(values: np.ndarray | None, index: int) -> float:
    return float("nan") if values is None else float(values[index])


def measure_latency(predictor: Predictor, images: list) -> dict:
    """Wall time of predict([one image]) after one warm-up call; decode excluded."""
    if not images:
        return {"p50_ms": None, "p95_ms": None, "samples": 0}
    predictor.predict(images[:1])  # first call pays lazy initialisation, not latency
    times = []
    for image in images:
        began = time.perf_counter()
        predictor.predict([image])
        times.append((time.perf_counter() - began) * 1e3)
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)),
            "samples": len(times)}


def speed_report(predictor: Predictor, scored: Scored, wall_seconds: float,
                 batch_size: int, device: str) -> dict:
    import torch

    n = len(scored.items)
    return {
        "images_per_second": n / scored.predict_seconds if scored.predict_seconds else None,
        "images_per_second_note": "model time only (predict calls), decode excluded",
        "images_per_second_end_to_end": n / wall_seconds if wall_seconds else None,
        "latency_ms": measure_latency(predictor, scored.latency_images),
        "batch_size": batch_size,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}".strip(),
    }


def evaluate(dataset: BenchDataset, scored: Scored, *, keep_threshold: float,
             n_resamples: int, seed: int) -> tuple[dict, dict]:
    """Metrics, and the aligned per-image columns that they were computed from."""
    truth = np.array([item.score for item in scored.items])
    truth10 = dataset.to_culling(truth)
    oriented = np.array(scored.oriented)
    quality = np.array(scored.quality)
    if np.isnan(quality).any():  # a teacher off the 1–10 scale: borrow the truth's quantiles
        quality = quantile_match(oriented, truth10)
    keep_prob = np.array(scored.keep_prob)
    keep_is_probability = not np.isnan(keep_prob).any()
    keep_score = keep_prob if keep_is_probability else oriented
    metrics = compute_metrics(truth, truth10, oriented, quality, keep_score,
                              keep_is_probability=keep_is_probability,
                              keep_threshold=keep_threshold, n_resamples=n_resamples, seed=seed)
    columns = {
        "id": [item.id for item in scored.items], "path": [str(i.path) for i in scored.items],
        "truth": truth, "truth_std": [item.score_std for item in scored.items],
        "truth_1_10": truth10, "raw": np.array(scored.raw), "oriented": oriented,
        "quality_1_10": quality, "keep_score": keep_score,
    }
    teacher = {name: np.array([item.extras.get(name, np.nan) for item in scored.items])
               for name in {n for item in scored.items for n in item.extras}}
    student = {name: np.array([row.get(name, np.nan) for row in scored.aux])
               for name in {n for row in scored.aux for n in row}}
    if teacher and student:  # a labeling run with the faces teacher, a student with aux heads
        metrics["faces"] = face_agreement(teacher, student)
        columns.update({f"teacher_{n}": v for n, v in sorted(teacher.items())})
        columns.update({f"student_{n}": v for n, v in sorted(student.items())})
    return metrics, columns


def run_bench(model: str, dataset: str, root: str | Path, split: str | None = None,
              out: str | Path | None = None, settings: BenchOptions | None = None,
              **overrides) -> dict:
    """Bench `model` (teacher:NAME | a student file) on a dataset; write and return the report.
    `overrides` are BenchOptions fields, e.g. `latency_samples=5`."""
    opts = replace(settings or BenchOptions(), **overrides)
    labels, limit, batch_size = opts.labels, opts.limit, opts.batch_size
    data = load_dataset(dataset, root, split, labels=labels, score_scale=opts.score_scale)
    items = data.items[:limit] if limit else data.items
    predictor = load_predictor(model, options=opts.options, weights_dir=opts.weights_dir,
                               batch_size=batch_size)
    batch = batch_size or getattr(predictor, "batch_size", 8)
    began = time.perf_counter()
    scored = predict_items(predictor, items, batch_size=batch, draft_size=opts.draft_size,
                           progress=opts.progress, latency_samples=opts.latency_samples)
    wall = time.perf_counter() - began
    if len(scored.items) < 2:
        raise DistillError(f"only {len(scored.items)} of {len(items)} test images could be "
                           f"scored; first reasons: "
                           f"{'; '.join(s['reason'] for s in scored.skipped[:3])}")
    describe = predictor.describe()
    metrics, columns = evaluate(data, scored, keep_threshold=opts.keep_threshold,
                                n_resamples=opts.n_resamples, seed=opts.seed)
    notes = [*data.notes]
    if describe.get("quality_source") == "quantile-matched":
        notes.append(f"thresholded metrics for {predictor.name} use quantile-matched scores: its "
                     "ranking mapped onto this test set's own 1-10 score distribution")
    report = {
        "schema": REPORT_SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {"spec": model, "name": predictor.name, "kind": predictor.kind,
                  **describe, "cost": predictor.cost(), "provenance": predictor.provenance()},
        "dataset": {**data.describe(), "n_benched": len(items), "limit": limit},
        "keep_threshold": opts.keep_threshold,
        "n_scored": len(scored.items),
        "skipped": {"count": len(scored.skipped),
                    "by_stage": {stage: sum(s["stage"] == stage for s in scored.skipped)
                                 for stage in ("decode", "predict")},
                    "examples": scored.skipped[:20], "all": "skipped.csv"},
        "metrics": metrics,
        "speed": speed_report(predictor, scored, wall, batch, describe.get("device", "cpu")),
        "notes": notes,
    }
    out = Path(out) if out else default_out_dir(dataset, model)
    report["files"] = write_report(report, columns, scored.skipped, out)
    return report
