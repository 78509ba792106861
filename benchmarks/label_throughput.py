"""Labeling throughput, in one run on the same images: decode alone, each teacher's compute
alone, and the full `distill label` pipeline; plus the speed-up of draft-mode JPEG decoding.

The pool is camera-sized JPEGs (long side 2400 px) made from the sample photos installed
packages ship, so draft mode has real work to skip.

    python benchmarks/label_throughput.py [--images 48] [--repeats 3] [--workers 1]

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
from distill.label import decode_workers, run_label
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
        compute = {t.name: timed(lambda t=t: t.score(images), args.repeats) for t in teachers}
        compute_set_s = sum(compute.values())

        def pipeline():
            out = scratch / f"run-{time.perf_counter_ns()}"
            config = from_mapping(LabelConfig, {
                "source": {"kind": "folder", "root": str(scratch / "pool")}, "out": str(out),
                "teachers": TEACHERS, "shard_size": 16, "decode": {"workers": args.workers}})
            run_label(config, progress=False)
            shutil.rmtree(out)

        pipeline_s = timed(pipeline, args.repeats)
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
        "teacher_compute_images_per_s": {name: rate(s) for name, s in compute.items()},
        "teacher_set_compute_images_per_s": rate(compute_set_s),
        "pipeline_images_per_s": rate(pipeline_s),
        "pipeline_workers": args.workers if args.workers is not None else decode_workers(
            from_mapping(LabelConfig, {"source": {}, "out": ""})),
        "pipeline_over_compute": round(compute_set_s / pipeline_s, 3),
        "target_pipeline_over_compute": 0.8,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
