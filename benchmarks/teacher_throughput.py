"""Per-teacher scoring throughput on this machine, on real photos, in one run.

NIMA and clip_aesthetic run at full size with randomly initialised networks (the weights are
not downloadable here): compute cost does not depend on the weights' values.

    python benchmarks/teacher_throughput.py [--images 16] [--repeats 3] [--skip-large]

Writes benchmarks/results/teacher_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.decode import DecodeError, decode_path
from distill.sources import packaged_photos
from teachers import create_teacher
from teachers.base import library_versions

LONG_SIDE = 512  # photos are brought to one size so teachers are compared on equal work
RESULTS = Path(__file__).parent / "results" / "teacher_throughput.json"


def load_photos(count: int):
    photos = []
    for path in packaged_photos():
        try:
            image = decode_path(path).image
        except DecodeError:
            continue
        image.thumbnail((LONG_SIDE, LONG_SIDE))
        if min(image.size) >= 128:
            photos.append(image)
        if len(photos) == count:
            return photos
    raise SystemExit(f"only {len(photos)} usable sample photos, wanted {count}")


def random_large_teachers():
    """NIMA (InceptionResNetV2, 299 px) and CLIP ViT-L/14 + MLP, randomly initialised."""
    import open_clip

    from teachers.clip_aesthetic import ClipAestheticTeacher, build_head
    from teachers.nima import NimaTeacher, OfflineNIMA

    torch.manual_seed(0)
    started = time.perf_counter()
    nima = NimaTeacher(OfflineNIMA("inception_resnet_v2"), "inception_resnet_v2", 299, [])
    yield "nima (random init)", nima, time.perf_counter() - started
    started = time.perf_counter()
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-L-14", pretrained=None,
                                                                 force_quick_gelu=True)
    clip = ClipAestheticTeacher("vit_l_14", model, preprocess, build_head("mlp", 768), [])
    yield "clip_aesthetic vit_l_14 (random init)", clip, time.perf_counter() - started


def offline_teachers():
    for name in ("brisque", "piqe", "technical"):
        started = time.perf_counter()
        teacher = create_teacher(name)
        yield name, teacher, time.perf_counter() - started


def measure(teacher, photos, repeats: int) -> dict:
    teacher.score(photos[: teacher.batch_size])  # warm-up: lazy init, allocator, caches
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        output = teacher.score(photos)
        seconds.append(time.perf_counter() - started)
        assert not output.errors, output.errors
    median = statistics.median(seconds)
    return {"images_per_s": round(len(photos) / median, 3),
            "ms_per_image": round(1000 * median / len(photos), 2),
            "seconds_per_repeat": [round(s, 3) for s in seconds]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-large", action="store_true", help="only the offline teachers")
    args = parser.parse_args()

    photos = load_photos(args.images)
    sources = [offline_teachers()] + ([] if args.skip_large else [random_large_teachers()])
    rows = {}
    for source in sources:
        for name, teacher, create_s in source:
            rows[name] = {"create_s": round(create_s, 3), **measure(teacher, photos, args.repeats)}
            print(f"{name:40s} {rows[name]['images_per_s']:8.2f} img/s  "
                  f"{rows[name]['ms_per_image']:8.1f} ms/img", flush=True)
    report = {
        "benchmark": "teacher_throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "device": "cpu"},
        "libraries": library_versions("pyiqa", "open_clip_torch", "timm", "numpy"),
        "images": {"count": len(photos), "long_side_px": LONG_SIDE,
                   "source": "sample photos shipped by scikit-image/matplotlib/pyiqa"},
        "repeats": args.repeats,
        "statistic": "median over repeats",
        "teachers": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
