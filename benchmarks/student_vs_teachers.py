"""A distilled student vs the teacher set it learned from, on this CPU, in one run.

1. Pool: crops of the real photos installed packages ship (scikit-image, matplotlib,
   scikit-learn, pyiqa's ResultsCalibra references and speed-test photos), each degraded by
   0–3 of blur, noise, JPEG, exposure and downscaling at random strengths, so quality
   varies. The base photos are split in two: the held-out pool shares no photo with the
   training pool (crops of one photo are too alike to count as held out). Content variety
   is what generalises: with 11 training photos the students learned those scenes (in-pool
   SRCC 0.85–0.90, held out 0.79–0.83); 17 photos and 720 views are the default.
2. `distill label` (brisque, piqe, technical) labels both pools.
3. `distill train` distills the training pool into the student (`--student`, default patch_cnn).
4. On the held-out pool, on decoded images in memory, 1 thread (--threads): images/s of the
   teacher set (the three teachers, as labeling runs them) and of the student (its resize +
   crop + forward) in PyTorch and, exported, in onnxruntime, timed back to back in each
   round so all see the same load; parameters and FLOPs of each; the student's SRCC / PLCC
   with the fused teacher quality, beside the SRCC the teachers themselves reach when they
   score only the crop the student sees (the ceiling its view allows).

    python benchmarks/student_vs_teachers.py [--work runs/bench-student] [--student patch_cnn]
        [--steps 4000] [--image-size 224] [--resize-mode teacher_scale|shorter] [--seed 0]
        [--no-early-stop] [--train-images 720] [--held-out-images 120] [--repeats 5]
        [--speed-images 40] [--threads 1] [--fresh] [--note TEXT]

Steps 1–3 are reused from --work when present (the student from
WORK/student-<name>-<resize mode>[-seed<N>][-nostop]-<size>px-<steps>steps; --fresh redoes all);
step 4 always runs. Writes
benchmarks/results/student_vs_teachers-<student>-<resize mode>[-seed<N>][-nostop]-<training
photos>photos-<training views>views.json, with os.getloadavg() before and after:
other jobs on a shared machine slow both sides, not necessarily equally.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill import run_folder, scoring
from distill.config import from_mapping
from distill.decode import decode_path
from distill.run_folder import read_manifest
from distill.sources import packaged_photos
from distill.training import export_student, quality_metrics
from students import load_student, preprocess
from students.models import count_flops
from students.onnx_runtime import load_onnx_student
from teachers import OFFLINE_TEACHERS, create_teachers
from teachers.base import library_versions

RESULTS = Path(__file__).parent / "results"  # student_vs_teachers-<variant>-<pool>.json
# Real photographs only (no charts, logos, micrographs); motorcycle_right is the stereo twin
# of motorcycle_left and dist_dir holds distorted twins of ref_dir, so both are left out.
BASES = ("astronaut", "camera", "chelsea", "coffee", "grace_hopper", "hubble_deep_field",
         "moon", "motorcycle_left", "retina", "rocket", "I03", "I04", "I06", "I08", "I19",
         "china", "flower", "SPAQ_10241", "frame_4wrwr48cdk6rbcjl", "frame_7gzdcz9sif0ekg31",
         "frame_9ogwhvvy7gfj6jzh")
HELD_OUT = ("coffee", "grace_hopper", "I08", "rocket")
# One torch thread per side by default: on a shared 2-core machine two threads make BRISQUE's
# many small ops stall at every OpenMP barrier while the other core runs someone else's job
# (measured: 0.6 images/s with 2 threads vs 22 with 1, same process, same images).
DEFAULT_THREADS = 1


def base_photos() -> dict[str, Image.Image]:
    found = {}
    for path in packaged_photos():
        if path.stem in BASES and path.stem not in found and path.parent.name != "dist_dir":
            found[path.stem] = Image.open(path).convert("RGB")
    missing = sorted(set(BASES) - set(found))
    if missing:
        raise SystemExit(f"sample photos missing: {', '.join(missing)}")
    return found


def degrade(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, list[str]]:
    """0–3 degradations at random strengths; returns the image and what was done."""
    done = []
    for kind in rng.choice(["blur", "noise", "jpeg", "exposure", "downscale"],
                           size=rng.integers(0, 4), replace=False):
        if kind == "blur":
            strength = rng.uniform(0.5, 3.0)
            image = image.filter(ImageFilter.GaussianBlur(strength))
        elif kind == "noise":
            strength = rng.uniform(3, 30)
            noise = rng.normal(0, strength, (image.height, image.width, 3))
            pixels = np.asarray(image, np.float64) + noise
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        elif kind == "jpeg":
            from io import BytesIO

            strength = int(rng.integers(5, 50))
            buffer = BytesIO()
            image.save(buffer, "JPEG", quality=strength)
            image = Image.open(BytesIO(buffer.getvalue())).convert("RGB")
        elif kind == "exposure":
            strength = float(rng.choice([rng.uniform(0.3, 0.65), rng.uniform(1.5, 2.5)]))
            pixels = 255.0 * (np.asarray(image, np.float64) / 255.0) ** (1.0 / strength)
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        else:
            strength = rng.uniform(2, 5)
            reduced = tuple(max(16, round(side / strength)) for side in image.size)
            small = image.resize(reduced, Image.Resampling.BILINEAR)
            image = small.resize(image.size, Image.Resampling.BILINEAR)
        done.append(f"{kind}={strength:.2f}")
    return image, done


def make_pool(folder: Path, bases: dict[str, Image.Image], count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    names = sorted(bases)
    log = []
    for index in range(count):
        name = names[index % len(names)]
        base = bases[name]
        width, height = (round(side * rng.uniform(0.6, 1.0)) for side in base.size)
        left = rng.integers(0, base.width - width + 1)
        top = rng.integers(0, base.height - height + 1)
        crop = base.crop((left, top, left + width, top + height))
        crop.thumbnail((int(rng.integers(384, 513)),) * 2, Image.Resampling.LANCZOS)
        image, done = degrade(crop, rng)
        file = folder / f"{name}-{index:04d}.png"
        image.save(file)
        log.append({"file": file.name, "base": name, "degradations": done})
    (folder.parent / f"{folder.name}.json").write_text(json.dumps(log, indent=1))


def run(*command: str) -> None:
    started = time.perf_counter()
    print("$", " ".join(command), flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    subprocess.run([sys.executable, *command], check=True, env=env)
    print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)


def images_per_s(score, images: list) -> float:
    started = time.perf_counter()
    score(images)
    return len(images) / (time.perf_counter() - started)


def paired_throughput(scorers: dict, images: list, rounds: int) -> dict:
    """Every scorer timed back to back in each round, so all see the same machine load;
    images/s is the median over rounds, and so is each student's per-round speed-up."""
    for score in scorers.values():
        score(images[:4])  # warm-up: lazy init, caches
    rounds_run = [{name: images_per_s(score, images) for name, score in scorers.items()}
                  for _ in range(rounds)]
    result = {name: statistics.median(r[name] for r in rounds_run) for name in scorers}
    for name in (n for n in scorers if n != "teachers"):
        ratios = [r[name] / r["teachers"] for r in rounds_run]
        result[f"speedup_{name}"] = statistics.median(ratios)
    result["rounds"] = [{k: round(v, 2) for k, v in r.items()} for r in rounds_run]
    return result


def teacher_cost(teachers, image: Image.Image) -> dict:
    """Parameters (tensors the teachers hold) and torch-counted FLOPs on one image."""
    from torch.utils.flop_counter import FlopCounterMode
    from torchvision.transforms.functional import to_tensor

    cost = {}
    for teacher in teachers:
        net = getattr(teacher, "net", None)
        if net is None:  # `technical` is numpy / scipy: nothing torch can count
            cost[teacher.name] = {"parameters": 0, "flops": None}
            continue
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            net(to_tensor(image).unsqueeze(0))
        # pyiqa keeps BRISQUE's SVR (support vectors, coefficients) as plain tensor attributes
        tensors = [*net.parameters(), *net.buffers(),
                   *(v for v in vars(net).values() if isinstance(v, torch.Tensor))]
        cost[teacher.name] = {"parameters": int(sum(t.numel() for t in tensors)),
                              "flops": int(counter.get_total_flops())}
    return cost


def teachers_on_student_view(teachers, images: list, student, labels: Path) -> np.ndarray:
    """The fused teacher quality of exactly the crop the student sees: how much of what the
    teachers scored survives the student's view (its SRCC with the labels caps the student's)."""
    views = [Image.fromarray(preprocess.prepare(image, student.preprocessing)) for image in images]
    fusion = read_manifest(labels)["config"]["fusion"]
    raw = {teacher.name: teacher.score(views).scores for teacher in teachers}
    return scoring.fuse_columns(raw, from_mapping(scoring.FusionConfig, fusion))["quality"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench-student"))
    parser.add_argument("--student", default="patch_cnn")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--image-size", type=int, default=224, help="the student's input side")
    parser.add_argument("--resize-mode", default="teacher_scale", choices=["teacher_scale", "shorter"],
                        help="data.resize_mode: crop at the teachers' scale, or shrink first")
    parser.add_argument("--train-images", type=int, default=720)
    parser.add_argument("--held-out-images", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=5, help="timing rounds")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="torch intra-op threads for both sides")
    parser.add_argument("--speed-images", type=int, default=40,
                        help="held-out images timed per round (all are used for SRCC)")
    parser.add_argument("--seed", type=int, default=0, help="the student's training seed")
    parser.add_argument("--no-early-stop", action="store_true",
                        help="train all --steps (the config stops when val SRCC stalls)")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--note", default="", help="what else ran on the machine, if anything")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    work = args.work
    if args.fresh and work.exists():
        shutil.rmtree(work)
    bases = base_photos()
    pools = {"train": {k: v for k, v in bases.items() if k not in HELD_OUT},
             "held_out": {k: v for k, v in bases.items() if k in HELD_OUT}}
    sizes = {"train": args.train_images, "held_out": args.held_out_images}
    for split, seed in (("train", 0), ("held_out", 1)):
        if not (work / "pool" / split).exists():
            make_pool(work / "pool" / split, pools[split], sizes[split], seed)
        # a reused pool may predate photos added to BASES: report the photos it was made from
        made_from = {row["base"] for row in json.loads((work / "pool" / f"{split}.json").read_text())}
        pools[split] = {name: bases[name] for name in sorted(made_from)}
        if not (work / "labels" / split / "manifest.json").exists():
            run("-m", "distill.cli", "label", "--source", str(work / "pool" / split),
                "--out", str(work / "labels" / split), "--teachers", ",".join(OFFLINE_TEACHERS),
                "--no-progress")
    variant = (f"{args.student}-{args.resize_mode}" + (f"-seed{args.seed}" if args.seed else "")
               + ("-nostop" if args.no_early_stop else ""))
    run_dir = work / f"student-{variant}-{args.image_size}px-{args.steps}steps"
    if not (run_dir / "student.pt").exists():
        config = Path(__file__).resolve().parents[1] / "configs" / f"distill_{args.student}.yaml"
        run("-m", "distill.cli", "train", "--config", str(config),
            "--labels", str(work / "labels" / "train"), "--out", str(run_dir),
            "--max-steps", str(args.steps), "--set", f"data.image_size={args.image_size}",
            "--set", f"data.resize_mode={args.resize_mode}", "--set", f"seed={args.seed}",
            *(("--set", "early_stopping_patience=null") if args.no_early_stop else ()),
            "--no-progress",
            *(("--resume",) if (run_dir / "checkpoints").exists() else ()))

    held_out = run_folder.read_labels(work / "labels" / "held_out").to_pylist()
    images = [decode_path(row["path"], max_side=768).image for row in held_out]  # as labeled
    truth = np.array([row["quality"] for row in held_out])
    student = load_student(run_dir / "student.pt")
    predicted = student.predict(images)["quality"]
    teachers = create_teachers({name: {} for name in OFFLINE_TEACHERS})

    def score_with_teachers(batch):
        for teacher in teachers:
            teacher.score(batch)

    def score_with_student(batch):
        with torch.inference_mode():
            student.predict(batch, batch_size=32)

    exported = export_student(run_dir / "student.pt", "onnx")  # parity-checked
    onnx_student = load_onnx_student(exported["model"], threads=args.threads)
    speed = paired_throughput({"student_pytorch": score_with_student,
                               "student_onnxruntime": lambda batch: onnx_student.predict(batch),
                               "teachers": score_with_teachers},
                              images[:args.speed_images], args.repeats)
    card, size = student.card, student.preprocessing["image_size"]
    costs = teacher_cost(teachers, images[0])
    on_view = teachers_on_student_view(teachers, images, student, work / "labels" / "held_out")
    held_out_metrics = quality_metrics(predicted, truth) | {
        "teachers_on_student_view_srcc": quality_metrics(on_view, truth)["srcc"],
        "keep_agreement": float(np.mean((predicted >= 6) == (truth >= 6)))}
    result = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": args.threads, "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg(), "note": args.note},
        "libraries": library_versions("pyiqa", "timm", "numpy"),
        "pool": {"train_images": len(run_folder.read_labels(work / "labels" / "train")),
                 "held_out_images": len(held_out), "held_out_bases": list(HELD_OUT),
                 "train_bases": sorted(pools["train"]),
                 "held_out_quality_mean": round(float(truth.mean()), 3),
                 "held_out_quality_std": round(float(truth.std()), 3)},
        "teachers": {"names": list(OFFLINE_TEACHERS), "images_per_s": round(speed["teachers"], 2),
                     "per_teacher": costs,
                     "parameters": sum(c["parameters"] for c in costs.values()),
                     "flops_per_image": sum(c["flops"] or 0 for c in costs.values()),
                     "flops_note": "torch FlopCounterMode on the first held-out image at its "
                     "labeled size: convolutions and matmuls only; elementwise work and the "
                     "numpy `technical` teacher are not counted, so this is a lower bound"},
        "student": {"name": card["student"],
                    "images_per_s_pytorch": round(speed["student_pytorch"], 1),
                    "images_per_s_onnxruntime": round(speed["student_onnxruntime"], 1),
                    "parameters": card["parameters"],
                    "flops_per_image": count_flops(student.model, size),
                    "image_size": size, "preprocessing": student.preprocessing,
                    "init": card["init"],
                    "training_steps": card["training"]["steps"], "seed": args.seed,
                    "val_metrics_on_train_pool_split": card["val_metrics"]},
        "speedup_pytorch": round(speed["speedup_student_pytorch"], 1),
        "speedup_onnxruntime": round(speed["speedup_student_onnxruntime"], 1),
        "speed_rounds_images_per_s": speed["rounds"],
        "held_out": {name: round(value, 4) for name, value in held_out_metrics.items()},
        "targets": {"speedup_at_least": 20, "held_out_srcc_at_least": 0.85},
    }
    result["targets"]["met"] = {"speedup_pytorch": result["speedup_pytorch"] >= 20,
                                "speedup_onnxruntime": result["speedup_onnxruntime"] >= 20,
                                "srcc": result["held_out"]["srcc"] >= 0.85}
    RESULTS.mkdir(parents=True, exist_ok=True)
    pool = f"{len(pools['train'])}photos-{result['pool']['train_images']}views"
    (RESULTS / f"student_vs_teachers-{variant}-{pool}.json").write_text(json.dumps(result, indent=2))
    shown = ("speedup_pytorch", "speedup_onnxruntime", "held_out", "targets")
    print(json.dumps({k: result[k] for k in shown}, indent=2))


if __name__ == "__main__":
    main()
