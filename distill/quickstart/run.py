"""`distill quickstart`: the whole engine, offline and seeded, on photos installed packages ship.

sample pool → label (offline teachers) → dedup (with a leakage guard against the benchmark)
→ distill a small student → bench it on a held-out AVA-format set built from *different*
source photos, whose ground truth falls with the degradation applied.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from distill import run_folder
from distill.benchmarking import run_bench
from distill.config import LabelConfig, from_mapping
from distill.deduplication import run_dedup
from distill.labeling import run_label
from distill.quickstart.samples import (
    make_set,
    plant_duplicates,
    source_photos,
    split_sources,
    write_ava,
)
from distill.scoring import offline_teachers
from distill.training import TrainConfig, run_train


@dataclass(frozen=True)
class Size:
    train_views: int  # views per training source photo
    bench_views: int  # views per held-out source photo
    duplicates: int  # planted near duplicates in the pool
    steps: int  # optimizer steps of the student
    image_size: int  # student input side
    side: int  # long side of the generated photos


SIZES = {
    # 2000 steps: measured on 2 idle cores, the student's held-out SRCC against the ground
    # truth went 0.12 → 0.29 from 600 steps (0.63 since students crop at the teachers' scale
    # and learn from 20 photos), for a run of about 7 minutes in all
    "full": Size(train_views=24, bench_views=10, duplicates=24, steps=2000, image_size=160, side=384),
    "small": Size(train_views=6, bench_views=5, duplicates=8, steps=120, image_size=128, side=320),
}
MARK = ".distill-quickstart"  # what makes a workdir quickstart's own, to remove and redo
HELD_OUT_PHOTOS = ("I04", "astronaut", "coffee", "gravel", "motorcycle_left")
DEDUP_THRESHOLD = 0.9


def run_quickstart(workdir: Path, size: str = "full", seed: int = 0, progress: bool = True) -> dict:
    """Every stage in order, each timed; returns the figures the command prints."""
    plan, workdir = SIZES[size], Path(workdir)
    if (workdir / MARK).is_file():
        shutil.rmtree(workdir)  # deterministic: every run starts from nothing
    run_folder.refuse_unless_empty(workdir, "--workdir")  # never a folder of the user's files
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARK).touch()
    stages, started = {}, time.perf_counter()

    def timed(name, function):
        clock = time.perf_counter()
        result, figures = function()
        stages[name] = {"seconds": round(time.perf_counter() - clock, 1), **figures}
        return result

    data = timed("samples", lambda: build_samples(workdir, plan, seed))
    timed("label", lambda: label_pool(workdir, progress))
    timed("dedup", lambda: dedup_pool(workdir, progress))
    timed("train", lambda: train_student(workdir, plan, seed, progress))
    timed("bench", lambda: bench_student(workdir, seed))
    return {"workdir": str(workdir), "size": size, "seed": seed, "data": data, "stages": stages,
            "seconds": round(time.perf_counter() - started, 1),
            "report": str(workdir / "report" / "report.md")}


def build_samples(workdir: Path, plan: Size, seed: int) -> tuple[dict, dict]:
    train_photos, bench_photos = split_sources(source_photos(), HELD_OUT_PHOTOS)
    pool = make_set(workdir / "pool", train_photos, plan.train_views, seed, plan.side)
    duplicates = plant_duplicates(workdir / "pool", pool, plan.duplicates, seed + 1)
    bench = make_set(workdir / "bench" / "images", bench_photos, plan.bench_views, seed + 2,
                     plan.side)
    write_ava(workdir / "bench", bench, seed + 3)
    data = {"pool": len(pool) + len(duplicates), "planted_duplicates": len(duplicates),
            "bench": len(bench), "train_photos": sorted(train_photos),
            "bench_photos": sorted(bench_photos)}
    return data, {"images": data["pool"], "bench": data["bench"]}


def label_pool(workdir: Path, progress: bool) -> tuple[dict, dict]:
    config = from_mapping(LabelConfig, {
        "source": {"kind": "folder", "root": str(workdir / "pool"), "name": "quickstart"},
        "out": str(workdir / "labels"), "teachers": offline_teachers(), "shard_size": 64})
    labeled = run_label(config, progress=progress)
    return labeled, {k: labeled[k] for k in ("labeled", "errors", "keep")}


def dedup_pool(workdir: Path, progress: bool) -> tuple[dict, dict]:
    # The pool is many views of few scenes, and a degraded view of a scene is what the student
    # must learn from: τ 0.9 still catches the planted copies (re-encodes, resizes, flips score
    # ≥ 0.95) without merging different crops of one photo, as the default 0.65 does.
    deduped = run_dedup(workdir / "labels", against=workdir / "bench" / "images",
                        threshold=DEDUP_THRESHOLD, progress=progress)
    return deduped, {k: deduped[k] for k in ("exact_duplicates", "near_duplicates",
                                             "dropped_by_leakage_guard") if k in deduped}


def train_student(workdir: Path, plan: Size, seed: int, progress: bool) -> tuple[dict, dict]:
    config = from_mapping(TrainConfig, {
        "labels": str(workdir / "labels"), "out": str(workdir / "student"), "seed": seed,
        "student": {"name": "tiny", "init": "random", "dropout": 0.0},
        "eval_every": max(20, plan.steps // 10), "checkpoint_every": plan.steps,
        "early_stopping_patience": None, "tensorboard": False,
        "data": {"image_size": plan.image_size, "cache": True, "workers": 0},
        "optim": {"batch_size": 32, "lr": 3e-3, "warmup_steps": plan.steps // 10,
                  "max_steps": plan.steps, "ema_decay": 0.98}})
    card = run_train(config, progress_bar=progress)
    return card, {"steps": card["training"]["steps"],
                  "val_srcc": (card.get("val_metrics") or {}).get("srcc")}


def bench_student(workdir: Path, seed: int) -> tuple[dict, dict]:
    report = run_bench(str(workdir / "student" / "student.pt"), "ava", workdir / "bench", "all",
                       workdir / "report", latency_samples=20, n_resamples=500, seed=seed)
    metrics = report["metrics"]
    return report, {"srcc": metrics["srcc"], "plcc": metrics["plcc"],
                    "acc_at_keep": metrics["binary_at_keep"]["accuracy"]}
