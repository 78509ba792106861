"""Labeling throughput, in one run on the same images: decode alone, each teacher's compute
alone, and the full `distill label` pipeline; plus the speed-up of draft-mode JPEG decoding.

The pool is camera-sized JPEGs (long side 2400 px) made from the sample photos installed
packages ship, so draft mode has real work to skip.

    python benchmarks/label_throughput.py [--images 48] [--repeats 3] [--workers 1]
        [--decode-threads 1]

Writes benchmarks/results/label_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.config import LabelConfig, from_mapping
from distill.decode import DecodeError, decode_bytes, decode_path
from distill.labeling import decode_workers, run_label
from distill.sources import packaged_photos
from teachers import create_teachers
from teachers.base import library_versions

CAMERA_SIDE = 2400
MAX_SIDE = 768  # the label stage's default
TEACHERS = {"brisque": {}, "piqe": {}, "technical": {}}
RESULTS = Path(__file__).parent / "results" / "label_throughput.json"


def make_pool(folder: Path, count: int) -> list[Path]:
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


def timed(function, repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None,
                        help="decode processes (default: the label stage's auto choice)")
    parser.add_argument("--decode-threads", type=int, default=1,
                        help="decode threads to compare with inline decoding (0)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="distill-bench-"))
    try:
        (scratch / "pool").mkdir()
        paths = make_pool(scratch / "pool", args.images)
        blobs = [p.read_bytes() for p in paths]
        n = len(paths)

        def decode(draft: bool):
            return [decode_bytes(b, draft_size=MAX_SIDE if draft else None, max_side=MAX_SIDE).image
                    for b in blobs]

        decode_draft_s = timed(lambda: decode(True), args.repeats)
        decode_full_s = timed(lambda: decode(False), args.repeats)
        images = decode(True)
        teachers = create_teachers(TEACHERS)

        loop_seconds: dict[int, float] = {}

        def pipeline(threads: int):
            out = scratch / f"run-{time.perf_counter_ns()}"
            config = from_mapping(LabelConfig, {
                "source": {"kind": "folder", "root": str(scratch / "pool")}, "out": str(out),
                "teachers": TEACHERS, "shard_size": 16,
                "decode": {"workers": args.workers, "threads": threads}})
            loop_seconds[threads] = run_label(config, progress=False)["seconds"]
            shutil.rmtree(out)

        # Each round times the teachers alone and then every pipeline variant, back to back,
        # so the ratios compare runs under the same machine load (this shared CPU drifts by
        # ±20 % over minutes); reported: medians over rounds.
        variants = sorted({0, args.decode_threads})
        rounds = []
        for _ in range(args.repeats):
            record = {f"compute_{t.name}": timed(lambda t=t: t.score(images), 1) for t in teachers}
            record["compute_set"] = sum(record.values())
            for threads in variants:
                record[f"end_to_end_{threads}"] = timed(lambda t=threads: pipeline(t), 1)
                record[f"loop_{threads}"] = loop_seconds[threads]
            rounds.append(record)
        med = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        ratio = {key: statistics.median(r["compute_set"] / r[key] for r in rounds)
                 for key in rounds[0] if key.startswith(("loop", "end_to_end"))}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    def rate(seconds: float) -> float:
        return round(n / seconds, 2)

    report = {
        "benchmark": "label_throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "device": "cpu",
                    "loadavg_at_end": os.getloadavg()},
        "libraries": library_versions("pyiqa", "pillow", "numpy"),
        "pool": {"images": n, "jpeg_long_side_px": CAMERA_SIDE, "teacher_long_side_px": MAX_SIDE},
        "statistic": f"median of {args.repeats} repeats, images/s",
        "decode_draft_images_per_s": rate(decode_draft_s),
        "decode_full_images_per_s": rate(decode_full_s),
        "draft_speedup": round(decode_full_s / decode_draft_s, 2),
        "teacher_compute_images_per_s": {t.name: rate(med[f"compute_{t.name}"]) for t in teachers},
        "teacher_set_compute_images_per_s": rate(med["compute_set"]),
        # the labeling loop (decode, teachers, shard writes) from the run's own summary, and
        # the whole call with its fixed start-up and finish (teacher creation, input listing,
        # fusion, manifest); ratios are medians of per-round ratios
        "pipeline": {f"decode_threads_{t}": {
            "loop_images_per_s": rate(med[f"loop_{t}"]),
            "end_to_end_images_per_s": rate(med[f"end_to_end_{t}"]),
            "loop_over_compute": round(ratio[f"loop_{t}"], 3),
            "end_to_end_over_compute": round(ratio[f"end_to_end_{t}"], 3)}
            for t in variants},
        "rounds_seconds": [{k: round(v, 2) for k, v in r.items()} for r in rounds],
        "pipeline_workers": args.workers if args.workers is not None else decode_workers(
            from_mapping(LabelConfig, {"source": {}, "out": ""})),
        "target_pipeline_over_compute": 0.8,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
