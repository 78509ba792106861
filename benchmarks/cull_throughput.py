"""Cull throughput on camera-size files, as a ratio to decoding them alone, in paired rounds.

Two folders: 24-megapixel JPEGs (6000x4000, real photos upscaled, with sensor-like noise so
they compress like camera files), and 24-megapixel DNGs with a 1920 px embedded JPEG preview,
as cameras write them (benchmarks/camera_files.py). For each, every round times
1. decoding alone: `decode_named` at the student's draft size, as cull decodes, in one
   thread (`ratio`, the issue's measure) and in one thread per core (`ratio_all_cores`: cull
   reads, hashes, decodes and describes in threads, so this is the ceiling it works against);
2. `distill cull` (dry run): decode, student, similar-shot descriptor, technical measures,
   focus, decide, report; with the default student architecture (patch_cnn at 224 px,
   teacher-scale crop; random weights: the speed is the same): at the default
   `--focus-side` (768: a 24 MP JPEG decodes at a quarter, as decoding alone does here), at
   `--focus-side 1600` (half size), at `--focus-side 0` (the student's draft size, as before
   the focus measure) and, with `--weights-dir` holding the face models, with `--faces`.
A first, untimed round warms the file cache and the imports (FAISS, the student); then
medians over rounds; the ratios are taken within each round, then their median. The load
average before and after is recorded: a busy machine moves every figure.

    python benchmarks/cull_throughput.py [--photos 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.burst_groups import burst_sources
from benchmarks.camera_files import write_dng

RESULTS = Path(__file__).parent / "results" / "cull_throughput.json"
SIZE = (6000, 4000)


def camera_photos(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sources = [path for path, _ in list(burst_sources().values())]
    sources = [sources[i % len(sources)] for i in range(count)]
    photos = []
    for path in sources:
        image = Image.open(path).convert("RGB").resize(SIZE, Image.Resampling.BICUBIC)
        noise = rng.normal(0, 3, (SIZE[1], SIZE[0], 3))
        photos.append(Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8)))
    return photos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--weights-dir", default=None,
                        help="with the faces teacher's models: also time `cull --faces`")
    args = parser.parse_args()

    import torch

    from distill.culling import CullOptions, cull
    from distill.culling.run import scoring_threads
    from distill.decode import decode_named, read_bytes
    from students import create_student
    from students.checkpoint import save_student
    from students.preprocess import policy

    def decode(path):
        return decode_named(read_bytes(path), path, draft_size=768)

    cores = len(os.sched_getaffinity(0))
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "cull_scoring_threads": scoring_threads(),
                          "load_average_before": [round(v, 2) for v in os.getloadavg()]},
              "photos": args.photos, "rounds": args.rounds, "megapixels": SIZE[0] * SIZE[1] / 1e6,
              "student": "patch_cnn, 224 px teacher-scale crop (random weights)", "kinds": {}}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        torch.manual_seed(0)
        student = scratch / "student.pt"
        save_student(student, create_student("patch_cnn").eval(), "patch_cnn", {}, policy(224),
                     {"note": "random weights, for timing"})
        photos = camera_photos(args.photos)
        folders = {"jpeg_24mp": scratch / "jpeg", "dng_24mp_with_preview": scratch / "dng"}
        for folder in folders.values():
            folder.mkdir()
        for index, photo in enumerate(photos):
            photo.save(folders["jpeg_24mp"] / f"IMG_{index:04d}.JPG", quality=92)
            write_dng(photo, folders["dng_24mp_with_preview"] / f"IMG_{index:04d}.DNG",
                      preview_side=1920)
        variants = {"cull": CullOptions(), "cull_focus_side_1600": CullOptions(focus_side=1600),
                    "cull_focus_side_0": CullOptions(focus_side=0)}
        if args.weights_dir:
            variants["cull_faces"] = CullOptions(faces=True, weights_dir=args.weights_dir)
        for kind, folder in folders.items():
            files = sorted(folder.iterdir())
            rounds = []
            for round_index in range(args.rounds + 1):
                started = time.perf_counter()
                for path in files:
                    decode(path)
                decode_s = time.perf_counter() - started
                started = time.perf_counter()
                with ThreadPoolExecutor(cores) as pool:
                    list(pool.map(decode, files))
                decode_all_cores_s = time.perf_counter() - started
                timings = {}
                for variant, options in variants.items():
                    started = time.perf_counter()
                    cull(folder, student, dest=scratch / f"out-{kind}-{variant}-{round_index}",
                         progress=False, options=options)
                    timings[variant] = time.perf_counter() - started
                if round_index == 0:
                    continue  # the warm-up
                one = {"decode_photos_per_s": len(files) / decode_s,
                       "decode_all_cores_photos_per_s": len(files) / decode_all_cores_s}
                for variant, cull_s in timings.items():
                    one.update({f"{variant}_photos_per_s": len(files) / cull_s,
                                f"{variant}_ratio": decode_s / cull_s,
                                f"{variant}_ratio_all_cores": decode_all_cores_s / cull_s})
                rounds.append(one)
            sizes = [p.stat().st_size / 1e6 for p in files]
            result["kinds"][kind] = {
                "mean_file_mb": round(statistics.mean(sizes), 1),
                **{k: round(statistics.median(r[k] for r in rounds), 3)
                   for k in rounds[0]},
                "rounds": [{k: round(v, 3) for k, v in r.items()} for r in rounds]}
            print(kind, result["kinds"][kind])
    result["machine"]["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
