"""Labeling on a torch device against the CPU path, in one run: decode + classical teachers.

On a pool of camera-sized JPEGs (long side 2400 px, made from the packaged sample photos, as
in label_throughput.py), with the teachers at 768 px, in paired rounds (medians over rounds,
ratios within a round) it times
- the CPU path: Pillow's draft-mode decode and the CPU teachers (fast BRISQUE / PIQE /
  technical, pyiqa's NIQE), on one single-threaded process and on one process per core;
- the device path: the bytes decoded on `--device` in batches (`distill.decode_device`, nvJPEG
  on CUDA), the teachers batched there (`impl="torch"`, `teachers.batched`); decoding alone,
  the teachers alone on the decoded batch, and both, the device synchronised after each;
- `distill label` end to end on the same files both ways: the default (score workers on a
  CPU) and `--device DEVICE --jpeg-decoder torchvision`;
and, once, how far the device path's scores are from the CPU path's on the same files (at
2400 px the device averages 2x2 blocks where Pillow's draft mode scales the DCT, so they differ
by the decode as well: tests/test_decode_device.py states that tolerance).

    python benchmarks/gpu_label_throughput.py --device cuda [--images 512] [--batch 64] [--rounds 3]
    python benchmarks/gpu_label_throughput.py --device cpu --images 4 --rounds 1

The second line proves the script on a machine without a GPU: on a CPU the device path is
the GPU's code run by torch's CPU kernels, and slow (its exact Gaussian is 49 float64
multiply-adds a pixel). NIQE's parameters come from the package index (`distill weights fetch
niqe-pristine`); where they cannot be had, NIQE is left out and the JSON says why.
Writes benchmarks/results/gpu_label_throughput.json (or --out) with the device named.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.label_throughput import MAX_SIDE, _single_thread, camera_pool
from distill.decode import decode_bytes
from distill.decode_device import DeviceImage, decode_batch
from distill.errors import DistillError
from distill.labeling import label
from distill.labeling.run import check_device
from teachers import create_teacher, weights
from teachers.base import library_versions
from teachers.batched import device_name

RESULTS = Path(__file__).parent / "results" / "gpu_label_throughput.json"
CORES = os.cpu_count() or 1
TEACHERS = ("brisque", "piqe", "niqe", "technical")
DECODE = {"draft_size": MAX_SIDE, "max_side": MAX_SIDE}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_teachers(names: tuple[str, ...]):
    return [create_teacher(name) for name in names]


def _cpu_work(job: tuple[list[bytes], tuple[str, ...]]) -> tuple[float, dict[str, list[float]]]:
    """Seconds one single-threaded process takes to decode and score its blobs, and the
    scores."""
    blobs, names = job
    _single_thread()
    teachers = _cpu_teachers(names)
    started = time.perf_counter()
    images = [decode_bytes(blob, **DECODE).image for blob in blobs]
    scores = {teacher.name: teacher.score(images).scores.tolist() for teacher in teachers}
    return time.perf_counter() - started, scores


def cpu_path(blobs: list[bytes], names: tuple[str, ...], processes: int):
    """Images/s of `processes` single-threaded processes each decoding and scoring its share,
    and every blob's scores (in blob order)."""
    shares = [blobs[i::processes] for i in range(processes)]
    with multiprocessing.get_context("forkserver").Pool(processes) as pool:
        results = pool.map(_cpu_work, [(share, names) for share in shares])
    scores = {name: np.empty(len(blobs)) for name in names}
    for start, (_, share_scores) in enumerate(results):
        for name, values in share_scores.items():
            scores[name][start::processes] = values
    return len(blobs) / max(seconds for seconds, _ in results), scores


def device_path(blobs: list[bytes], teachers, device: torch.device, batch: int):
    """Images/s decoding alone, teachers alone and both on `device`, batch by batch, with the
    device synchronised between the steps; and every blob's scores."""
    decode_s = teachers_s = 0.0
    on_host = 0
    scores = {teacher.name: [] for teacher in teachers}
    for start in range(0, len(blobs), batch):
        items = [(blob, f"{start + i}.jpg") for i, blob in enumerate(blobs[start:start + batch])]
        began = time.perf_counter()
        decoded = decode_batch(items, device, **DECODE)
        _sync(device)
        decoded_at = time.perf_counter()
        images = [d.image for d, _ in decoded]
        for teacher in teachers:
            scores[teacher.name] += teacher.score(images).scores.tolist()
        _sync(device)
        decode_s += decoded_at - began
        teachers_s += time.perf_counter() - decoded_at
        on_host += sum(not isinstance(image, DeviceImage) for image in images)
    count = len(blobs)
    rates = {"device_decode": count / decode_s, "device_teachers": count / teachers_s,
             "device_decode_and_teachers": count / (decode_s + teachers_s)}
    return rates, {name: np.asarray(values) for name, values in scores.items()}, on_host


def label_rate(folder: Path, scratch: Path, teachers: dict[str, dict], **options) -> float:
    out = Path(tempfile.mkdtemp(dir=scratch)) / "run"
    summary = label({"teachers": teachers}, source=str(folder), out=str(out),
                    max_side=MAX_SIDE, progress=False, **options)
    shutil.rmtree(out.parent)
    return summary["inputs"] / summary["seconds"]


def available_teachers(names: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, str]]:
    """The teachers that can run here, and why the others cannot."""
    left_out = {}
    if "niqe" in names:
        try:
            weights.resolve("niqe-pristine")
        except DistillError:
            try:
                weights.fetch("niqe-pristine")
            except DistillError as exc:
                left_out["niqe"] = f"no NIQE parameters: {exc}"
    return tuple(n for n in names if n not in left_out), left_out


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in lines
                 if line.startswith("model name")), platform.processor())


def machine(device: torch.device) -> dict:
    return {"platform": platform.platform(), "processor": cpu_model(),
            "cpu_count": CORES, "device": device_name(device),
            "cuda": torch.version.cuda, "loadavg_at_start": os.getloadavg()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64, help="images per device batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--teachers", default=",".join(TEACHERS))
    parser.add_argument("--note", default="", help="what else ran on the machine, in words")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    check_device(args.device)  # a GPU asked for and not here: an error, not a CPU run
    device = torch.device(args.device)
    names, left_out = available_teachers(tuple(args.teachers.split(",")))
    about = machine(device)
    scratch = Path(tempfile.mkdtemp(prefix="distill-gpu-bench-"))
    try:
        (scratch / "pool").mkdir()
        paths = camera_pool(scratch / "pool", args.images)
        blobs = [path.read_bytes() for path in paths]
        teachers = [create_teacher(name, impl="torch", device=str(device)) for name in names]
        device_path(blobs[: min(len(blobs), 2)], teachers, device, args.batch)  # warm-up
        records, agreement = [], {}
        for _ in range(args.rounds):
            record = {"loadavg_before": os.getloadavg()[0]}
            record["cpu_path_1"], cpu_scores = cpu_path(blobs, names, 1)
            record["cpu_path_all"], _ = cpu_path(blobs, names, CORES)
            torch.set_num_threads(CORES)  # the device path on a CPU: every core, as label does
            rates, device_scores, on_host = device_path(blobs, teachers, device, args.batch)
            record.update(rates)
            record["label_cpu_default"] = label_rate(scratch / "pool", scratch,
                                                     dict.fromkeys(names, {}))
            record["label_device"] = label_rate(
                scratch / "pool", scratch, {name: {"impl": "torch"} for name in names},
                device=args.device, jpeg_decoder="torchvision", score_workers=0)
            for key in ("device_decode_and_teachers", "label_device"):
                record[f"{key}_over_cpu_path_all"] = record[key] / record["cpu_path_all"]
            records.append(record)
            agreement = {name: float(np.nanmax(np.abs(device_scores[name] - cpu_scores[name])))
                         for name in names}
            print({k: round(v, 3) for k, v in record.items()}, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    median = {key: round(statistics.median(r[key] for r in records), 3) for key in records[0]}
    report = {
        "benchmark": "gpu_label_throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**about, "loadavg_at_end": os.getloadavg(), "note": args.note},
        "libraries": library_versions("torchvision", "pyiqa", "pillow", "numpy"),
        "statistic": f"images/s, medians over {args.rounds} paired rounds; ratios within rounds",
        "pool": f"{len(blobs)} JPEGs, long side 2400 px (benchmarks/label_throughput.py)",
        "teacher_long_side_px": MAX_SIDE,
        "teachers": list(names),
        "teachers_left_out": left_out,
        "device_batch": args.batch,
        "decoded_on_host_by_pillow": on_host,
        "keys": {
            "cpu_path_1 / cpu_path_all": "Pillow draft decode + the CPU teachers, one "
                                         "single-threaded process / one per core",
            "device_decode": "decode_device.decode_batch on the device, bytes in memory",
            "device_teachers": "the torch teachers on the decoded batch",
            "device_decode_and_teachers": "both, one after the other, batch by batch",
            "label_cpu_default": "distill label with its defaults (score workers on a CPU)",
            "label_device": "distill label --device DEVICE --jpeg-decoder torchvision, the "
                            "teachers' impl: torch (the default on a GPU)",
        },
        "targets": {"device_decode_and_teachers on an H100/H200 (brisque, piqe, niqe, "
                    "technical at 768 px)": ">= 2000"},
        "max_abs_score_difference_device_vs_cpu_path": agreement,
        "median_over_rounds": median,
        "rounds": [{k: round(v, 3) for k, v in r.items()} for r in records],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(median, indent=2))


if __name__ == "__main__":
    main()
