"""Labeling throughput against decoding: the offline teachers, `distill label`, idle and busy.

Two pools: camera-sized JPEGs (long side 2400 px) made from the packaged sample photos, and
real 1-15 MP photos (benchmarks/real_photos.py: KDE Plasma's wallpapers from Debian). For each
pool, in paired rounds (every variant back to back, ratios taken within a round, medians over
rounds), the benchmark times
- decoding alone, draft mode to 768 px, on one process and on one process per core;
- each teacher's compute alone on the decoded images, one thread: the fast (numpy/OpenCV)
  BRISQUE and PIQE, pyiqa's modules, and the technical measures; and the offline set
  (brisque + piqe + technical) on one process per core;
- `distill label` with the offline set: one scoring worker per core (the default), one worker,
  and the old way (teachers in the labeling process, OpenMP threads on every core);
- decoding alone and `label` again beside BUSY competing processes (CPU-burning loops the
  benchmark starts and stops itself);
and, once, how far the fast teachers' scores are from pyiqa's on the same images.

    python benchmarks/label_throughput.py [--images 48] [--rounds 3] [--busy 2]

Writes benchmarks/results/label_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.real_photos import real_photos
from distill.decode import DecodeError, decode_bytes, decode_path
from distill.labeling import label
from distill.labeling.workers import start_early
from distill.sources import packaged_photos
from teachers import create_teacher
from teachers.base import library_versions

CAMERA_SIDE = 2400
MAX_SIDE = 768  # the label stage's default
OFFLINE = ("brisque", "piqe", "technical")
RESULTS = Path(__file__).parent / "results" / "label_throughput.json"
CORES = os.cpu_count() or 1


def camera_pool(folder: Path, count: int) -> list[Path]:
    sources = []
    for path in packaged_photos():
        try:
            image = decode_path(path).image
        except DecodeError:
            continue
        if min(image.size) >= 256 and image.getbands() == ("R", "G", "B"):
            sources.append(image)
    paths = []
    for index in range(count):
        image = sources[index % len(sources)]
        scale = CAMERA_SIDE / max(image.size)
        big = image.resize((round(image.width * scale), round(image.height * scale)),
                           Image.Resampling.BICUBIC)
        if index >= len(sources):  # distinct files, not byte copies
            big = big.transpose(Image.Transpose.FLIP_LEFT_RIGHT).rotate(index % 7)
        path = folder / f"photo{index:04d}.jpg"
        big.save(path, quality=90)
        paths.append(path)
    return paths


def real_pool(folder: Path, count: int) -> list[Path]:
    photos = real_photos()
    paths = []
    for index, photo in enumerate(photos[:count]):
        paths.append(folder / f"photo{index:04d}{photo.suffix.lower()}")
        shutil.copyfile(photo, paths[-1])
    return paths


def _decode_all(blobs: list[bytes]) -> list[Image.Image]:
    return [decode_bytes(b, draft_size=MAX_SIDE, max_side=MAX_SIDE).image for b in blobs]


def _single_thread() -> None:
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def _teacher_set():
    return [create_teacher(name) for name in OFFLINE]


def _work(job: tuple[str, list[bytes]]) -> float:
    """Seconds one single-threaded process takes to decode (or score) its blobs."""
    kind, blobs = job
    _single_thread()
    images = _decode_all(blobs) if kind == "score" else None
    teachers = _teacher_set() if kind == "score" else None
    started = time.perf_counter()
    if kind == "decode":
        _decode_all(blobs)
    else:
        for teacher in teachers:
            teacher.score(images)
    return time.perf_counter() - started


def per_core(kind: str, blobs: list[bytes], processes: int = CORES) -> float:
    """Images/s of `processes` single-threaded processes, each on its share of the blobs."""
    shares = [blobs[i::processes] for i in range(processes)]
    context = multiprocessing.get_context("forkserver")
    with context.Pool(processes) as pool:
        seconds = pool.map(_work, [(kind, share) for share in shares])
    return len(blobs) / max(seconds)


def compute_alone(images: list[Image.Image]) -> dict[str, float]:
    """Images/s of each teacher on one thread, decoded images in memory."""
    _single_thread()
    rates = {}
    for name, options in [("brisque", {}), ("brisque_pyiqa", {"impl": "pyiqa"}), ("piqe", {}),
                          ("piqe_pyiqa", {"impl": "pyiqa"}), ("technical", {})]:
        teacher = create_teacher(name.split("_")[0], **options)
        started = time.perf_counter()
        teacher.score(images)
        rates[name] = len(images) / (time.perf_counter() - started)
    rates["offline_set"] = 1 / sum(1 / rates[name] for name in OFFLINE)
    return rates


def label_rate(folder: Path, scratch: Path, score_workers: int) -> float:
    """`distill label`'s own images/s over its labeling loop (listing, fusion excluded)."""
    out = scratch / f"run-{time.perf_counter_ns()}"
    summary = label(source=str(folder), out=str(out), teachers=",".join(OFFLINE),
                    score_workers=score_workers, shard_size=16, progress=False)
    shutil.rmtree(out)
    return summary["images_per_s"]


@contextmanager
def busy(count: int):
    """`count` competing processes, each burning one core until stopped (at most 20 min)."""
    burn = "import time\nend = time.time() + 1200\nwhile time.time() < end: pass"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(count)]
    try:
        time.sleep(1.0)  # let the scheduler see them
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def deviation(images: list[Image.Image]) -> dict:
    """Fast teachers against pyiqa's modules on the same images (absolute, score units)."""
    result = {}
    for name in ("brisque", "piqe"):
        fast = create_teacher(name).score(images).scores
        ref = create_teacher(name, impl="pyiqa").score(images).scores
        diff = np.abs(fast - ref)
        result[name] = {"max_abs": float(diff.max()), "median_abs": float(np.median(diff)),
                        "max_relative": float((diff / np.maximum(np.abs(ref), 1.0)).max()),
                        "images": len(images)}
    return result


def label_folder(paths: list[Path], folder: Path, copies: int) -> Path:
    """The pool `copies` times under new names (the same bytes, so the same decoding work), so
    that the scoring workers' one-off start (about 0.3 s) weighs about as little in the rate as
    it does on a large pool."""
    folder.mkdir()
    for copy in range(copies):
        for path in paths:
            shutil.copyfile(path, folder / f"copy{copy}_{path.name}")
    return folder


def measure_pool(name: str, paths: list[Path], scratch: Path, rounds: int, busy_count: int,
                 copies: int) -> dict:
    folder = label_folder(paths, scratch / f"{name}_label", copies)
    blobs = [p.read_bytes() for p in paths]
    images = _decode_all(blobs)
    records = []
    for _ in range(rounds):
        record = {"loadavg_before": os.getloadavg()[0],
                  "decode_1": per_core("decode", blobs, 1), "decode_all": per_core("decode", blobs),
                  **{f"compute_{k}": v for k, v in compute_alone(images).items()},
                  "compute_offline_set_all": per_core("score", blobs)}
        for workers in (CORES, 1, 0):
            record[f"label_workers_{workers}"] = label_rate(folder, scratch, workers)
        with busy(busy_count):
            record["busy_decode_all"] = per_core("decode", blobs)
            record[f"busy_label_workers_{CORES}"] = label_rate(folder, scratch, CORES)
            record["busy_label_workers_0"] = label_rate(folder, scratch, 0)
        record["pipeline_bound"] = 1 / (1 / record["decode_all"]
                                        + 1 / record["compute_offline_set_all"])
        for workers in (CORES, 1, 0):
            record[f"label_workers_{workers}_over_decode_all"] = (
                record[f"label_workers_{workers}"] / record["decode_all"])
        record[f"label_workers_{CORES}_over_pipeline_bound"] = (
            record[f"label_workers_{CORES}"] / record["pipeline_bound"])
        for workers in (CORES, 0):
            record[f"busy_over_idle_label_workers_{workers}"] = (
                record[f"busy_label_workers_{workers}"] / record[f"label_workers_{workers}"])
        records.append(record)
        print(name, {k: round(v, 2) for k, v in record.items()}, flush=True)
    median = {key: round(statistics.median(r[key] for r in records), 3) for key in records[0]}
    megapixels = [Image.open(p).width * Image.open(p).height / 1e6 for p in paths]
    return {
        "images": len(paths),
        "images_labeled": len(paths) * copies,
        "megapixels": {"min": round(min(megapixels), 1), "median": round(
            statistics.median(megapixels), 1), "max": round(max(megapixels), 1)},
        "median_over_rounds": median,
        "rounds": [{k: round(v, 3) for k, v in r.items()} for r in records],
        "fast_vs_pyiqa": deviation(images[:16]),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy", type=int, default=2, help="competing busy processes")
    parser.add_argument("--label-copies", type=int, default=3,
                        help="`distill label` runs on this many copies of each pool")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    start_early(OFFLINE)  # the label stage's fork server, with its preloads, before any other pool
    scratch = Path(tempfile.mkdtemp(prefix="distill-bench-"))
    pools = {}
    try:
        for name, make in (("camera_2400px", camera_pool), ("real_photos", real_pool)):
            (scratch / name).mkdir()
            paths = make(scratch / name, args.images)
            if paths:
                pools[name] = measure_pool(name, paths, scratch, args.rounds, args.busy,
                                           args.label_copies)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    report = {
        "benchmark": "label_throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": CORES, "device": "cpu", "loadavg_at_end": os.getloadavg()},
        "libraries": library_versions("pyiqa", "pillow", "numpy", "opencv-python-headless"),
        "statistic": f"images/s, medians over {args.rounds} paired rounds; ratios within rounds",
        "teacher_long_side_px": MAX_SIDE,
        "busy_processes": args.busy,
        "keys": {
            "decode_1 / decode_all": "draft decode to 768 px, one process / one per core",
            "compute_*": "one teacher on one thread, images decoded in memory",
            "compute_offline_set": "brisque + piqe + technical on one thread",
            "compute_offline_set_all": "the same on one process per core",
            "label_workers_N": "distill label's loop on images_labeled (the pool's copies), "
                               "N scoring workers (0: teachers in the labeling process with "
                               "OpenMP threads on every core)",
            "pipeline_bound": "1 / (1/decode_all + 1/compute_offline_set_all): the most a "
                              "label run that decodes and scores on every core can reach",
            "busy_*": f"the same beside {args.busy} CPU-burning processes",
        },
        "targets": {"compute_offline_set_all": ">= 20", "label_workers_N_over_decode_all": ">= 0.6",
                    "busy_over_idle_label": ">= 0.35"},
        "pools": pools,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v["median_over_rounds"] for k, v in pools.items()}, indent=2))


if __name__ == "__main__":
    main()
