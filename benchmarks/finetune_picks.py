"""How much a student's agreement with one photographer improves when it is fine-tuned on
their own past picks (`import-labels --from-xmp` + `train --finetune`), on held-out scenes.

The photographer here has a taste the teachers do not share: they love dark, moody frames
(5 stars) and throw away bright, washed-out ones (1 star); blur is always out (1), noise is
tolerated but not kept (3), a clean frame is kept (4). Every scene (real photos that packages
ship) appears in those five versions. The base student is distilled from the offline teachers
(brisque + piqe + technical), as `distill quickstart` does; it is then fine-tuned on the
sidecar picks of 14 scenes; a control trains on the teachers' labels alone for as many steps
in all. All are scored on the other 10 scenes' picks:
- keep agreement: share of photos where keep_prob ≥ 0.5 matches the photographer's keep;
- SRCC between the student's quality and the stars.

Each seed (training seed and pool noise) is a full run; medians over seeds are reported.

    python benchmarks/finetune_picks.py [--steps 600] [--finetune-steps 300] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.burst_groups import burst_sources

RESULTS = Path(__file__).parent / "results" / "finetune_picks.json"
STARS = {"clean": 4, "dark": 5, "bright": 1, "blurry": 1, "noisy": 3}
SIDE = 384


def versions(image: Image.Image, rng: np.random.Generator) -> dict[str, Image.Image]:
    pixels = np.asarray(image, dtype=np.float64)
    return {
        "clean": image,
        "dark": Image.fromarray((pixels * 0.35).astype(np.uint8)),
        "bright": Image.fromarray((255 - (255 - pixels) * 0.25).astype(np.uint8)),
        "blurry": image.filter(ImageFilter.GaussianBlur(3)),
        "noisy": Image.fromarray(np.clip(pixels + rng.normal(0, 18, pixels.shape), 0, 255)
                                 .astype(np.uint8)),
    }


def build(folder: Path, held_out: Path, seed: int = 0) -> list[dict]:
    from distill.xmp import write_sidecar

    rng = np.random.default_rng(seed)
    scenes = sorted(burst_sources().items())
    truth = []
    for index, (name, (path, box)) in enumerate(scenes):
        base = Image.open(path).convert("RGB")
        base = base.crop(tuple(round(f * s) for f, s in zip(box, base.size * 2)))
        base.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)
        target = held_out if index % 12 in (1, 4, 6, 9, 11) else folder
        for version, image in versions(base, rng).items():
            file = target / f"{name}-{version}.jpg"
            image.save(file, quality=92)
            write_sidecar(file.with_name(file.name + ".xmp"), STARS[version], 0)
            truth.append({"file": str(file), "stars": STARS[version], "keep": STARS[version] >= 4,
                          "held_out": target == held_out})
    return truth


def distill(*args) -> None:
    subprocess.run([sys.executable, "-m", "distill.cli", *map(str, args), "--no-progress"],
                   check=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))


def agreement(model_path: Path, rows: list[dict]) -> dict:
    from students import load_model

    model = load_model(model_path)
    predicted = model.predict([Image.open(r["file"]).convert("RGB") for r in rows])
    keep = predicted["keep_prob"] >= 0.5
    truth = np.array([r["keep"] for r in rows])
    return {"keep_agreement": round(float((keep == truth).mean()), 4),
            "srcc_with_stars": round(float(stats.spearmanr(predicted["quality"],
                                                           [r["stars"] for r in rows])[0]), 4)}


def run_once(seed: int, steps: int, finetune_steps: int) -> dict:
    train_set = ["--student", "patch_cnn", "--batch-size", "16", "--set", "data.image_size=128",
                 "--set", "tensorboard=false", "--set", "data.cache=true",
                 "--set", "early_stopping_patience=null", "--set", f"seed={seed}"]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        picked, held_out = scratch / "picked", scratch / "held_out"
        picked.mkdir()
        held_out.mkdir()
        truth = build(picked, held_out, seed)
        distill("label", "--source", picked, "--out", scratch / "teacher-labels",
                "--teachers", "brisque,piqe,technical")
        distill("train", "--labels", scratch / "teacher-labels", "--out", scratch / "base",
                "--max-steps", steps, *train_set)
        # the control: as many steps in all, on the teachers' labels only
        distill("train", "--labels", scratch / "teacher-labels", "--out", scratch / "control",
                "--max-steps", steps + finetune_steps, *train_set)
        distill("import-labels", "--from-xmp", picked, "--out", scratch / "picks")
        distill("train", "--labels", scratch / "picks", "--out", scratch / "tuned",
                "--finetune", scratch / "base" / "student.pt", "--max-steps", finetune_steps,
                *train_set[2:])
        rows = [r for r in truth if r["held_out"]]
        return {"seed": seed, "train_photos": len(truth) - len(rows), "held_out_photos": len(rows),
                "base": agreement(scratch / "base" / "student.pt", rows),
                "control": agreement(scratch / "control" / "student.pt", rows),
                "tuned": agreement(scratch / "tuned" / "student.pt", rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    started = time.perf_counter()
    runs = [run_once(seed, args.steps, args.finetune_steps) for seed in range(args.seeds)]

    def median(which: str, metric: str) -> float:
        return round(float(np.median([run[which][metric] for run in runs])), 4)

    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count()},
        "stars_by_version": STARS, "steps": args.steps, "finetune_steps": args.finetune_steps,
        "median over seeds": {
            label: {metric: median(which, metric) for metric in ("keep_agreement",
                                                                 "srcc_with_stars")}
            for which, label in (("base", "base (teachers only)"),
                                 ("control", "teachers only, as many steps as base + tuning"),
                                 ("tuned", "fine-tuned on the picks"))},
        "runs": runs, "seconds": round(time.perf_counter() - started, 1)}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median over seeds"], indent=2))


if __name__ == "__main__":
    main()
