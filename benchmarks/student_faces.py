"""How much of the faces teacher a compact student learns through its aux head (`train --aux
faces`), measured on faces it never saw: the student's agreement with the teacher as `distill
bench --dataset run` reports it, and what the aux head costs the main quality target.

Photos: scikit-image's `lfw_subset` (Labeled Faces in the Wild, 25×25 px grey crops, framed 4×
larger on a grey margin as in `faces_accuracy.py`; LFW is for research use): each face as it
is and with its eyes synthetically closed (`faces_accuracy.close_eyes`: what that can and
cannot show is said there), plus the subset's non-faces. Faces 0-69 and non-faces 0-69 are the
training pool, 70-99 the test pool (other people). Both pools are labeled by `distill label`
with the faces and technical teachers; the student is the quickstart's (`tiny`, random init,
batch 32, lr 3e-3), trained once with `--aux faces` and once without, same seed.

    python benchmarks/student_faces.py --weights-dir DIR [--steps 2000] [--seed 0] [--aux-weight 0.2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).parent / "results" / "student_faces.json"
TRAIN_PEOPLE = 70


def write_pools(workdir: Path, models) -> dict:
    from benchmarks.faces_accuracy import close_eyes, lfw_faces

    faces, others = lfw_faces()
    counts = {}
    for pool, people in (("train", range(TRAIN_PEOPLE)), ("test", range(TRAIN_PEOPLE, 100))):
        folder = workdir / pool
        folder.mkdir(parents=True)
        for index in people:
            faces[index].save(folder / f"face{index:03d}-open.png")
            close_eyes(faces[index], models).save(folder / f"face{index:03d}-closed.png")
            others[index].save(folder / f"other{index:03d}.png")
        counts[pool] = len(list(folder.iterdir()))
    return counts


def label(workdir: Path, pool: str, weights_dir: str | None) -> dict:
    from distill.labeling import label as run_label

    return run_label(source=str(workdir / pool), teachers="faces,technical",
                     out=str(workdir / f"labels-{pool}"), shard_size=256, score_workers=0,
                     weights_dir=weights_dir, progress=False)


def train(workdir: Path, name: str, steps: int, aux: list[str], seed: int,
          aux_weight: float) -> tuple[dict, float]:
    from distill.config import from_mapping
    from distill.training import TrainConfig, run_train

    config = from_mapping(TrainConfig, {
        "labels": str(workdir / "labels-train"), "out": str(workdir / name), "seed": seed,
        "loss": {"aux": aux_weight},
        "student": {"name": "tiny", "init": "random", "dropout": 0.0, "aux_targets": aux},
        "eval_every": max(20, steps // 10), "checkpoint_every": steps,
        "early_stopping_patience": None, "tensorboard": False,
        "data": {"image_size": 128, "cache": True, "workers": 0, "val_fraction": 0.1},
        "optim": {"batch_size": 32, "lr": 3e-3, "warmup_steps": steps // 10,
                  "max_steps": steps, "ema_decay": 0.98}})
    began = time.perf_counter()
    card = run_train(config, progress_bar=False)
    return card, time.perf_counter() - began


def bench(workdir: Path, name: str, pool: str) -> dict:
    from distill.benchmarking import run_bench

    report = run_bench(str(workdir / name / "student.pt"), "run", workdir / f"labels-{pool}",
                       "all", workdir / f"bench-{name}-{pool}", latency_samples=0,
                       n_resamples=0)
    metrics = report["metrics"]
    return {"n": report["n_scored"], "quality_srcc": metrics["srcc"],
            "faces": metrics.get("faces")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights-dir", default=None)
    parser.add_argument("--steps", type=int, default=2000)  # the quickstart's
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--aux-weight", type=float, default=0.5)  # the results without -auxW
    parser.add_argument("--out", default=None, help="default results/student_faces[-seedN].json")
    args = parser.parse_args()

    from distill.scoring import FACE_COLUMNS
    from teachers.faces import FaceModels

    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                          "load_average_before": [round(v, 2) for v in os.getloadavg()]},
              "steps": args.steps, "seed": args.seed, "aux_weight": args.aux_weight,
              "student": "tiny at 128 px, random init"}
    with tempfile.TemporaryDirectory(prefix="student-faces-") as folder:
        workdir = Path(folder)
        result["images"] = write_pools(workdir, FaceModels(args.weights_dir))
        for pool in ("train", "test"):
            labeled = label(workdir, pool, args.weights_dir)
            result[f"labeled_{pool}"] = {k: labeled[k] for k in ("labeled", "errors")}
        for name, aux in (("aux", list(FACE_COLUMNS)), ("plain", [])):
            card, seconds = train(workdir, name, args.steps, aux, args.seed, args.aux_weight)
            result[name] = {"train_seconds": round(seconds, 1), "val_metrics": card["val_metrics"],
                            "bench_test": bench(workdir, name, "test")}
            if aux:
                result[name]["bench_train"] = bench(workdir, name, "train")
    result["machine"]["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    out = args.out or RESULTS.with_stem(RESULTS.stem + (f"-seed{args.seed}" if args.seed else "")
                                        + (f"-aux{args.aux_weight:g}" if args.aux_weight != 0.5
                                           else ""))
    Path(out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: result[k] for k in ("images", "aux", "plain")}, indent=1, default=str))


if __name__ == "__main__":
    main()
