"""Focus in bursts: does `distill cull` keep the sharp frame, and does its `blurry` flag catch
the defocused ones? Beside cleanvision's blurry check and imagededup's grouping.

Two sets of bursts made from real photos (`burst_groups.build_bursts`), each burst one sharp
frame and defocused others (Gaussian σ, px at the frame's size), the camera drifting between
frames, EXIF capture times in the frames:
- `readme`: the README's own bursts: packaged photos at 640 px, 4-6 frames, σ 1.2-2.5,
  drift 1-4 %, 0.3 s apart (the frames of `benchmarks/burst_groups.py`);
- `photos_1440`: the issue's, on photos the project never trains on: the 12 photographs
  among KDE's wallpapers (`real_photos.py`; its drawings and renders left out), 2560-5120 px,
  at 1440 px, 4 frames, σ 1.6-3.0, drift 1-3 %, 1 s apart.
Each folder is culled as a photographer would (`distill cull --keep-rate 0.3`, a dry run)
with a trained student (`--model`, e.g. the quickstart's), at the default `--focus-side`
(768: these frames decode whole, at their full resolution). Reported per set: how often the
sharp frame is the one kept, how many bursts also kept a defocused frame (a burst the
grouping split), grouping pair precision/recall, and the `blurry` flag's precision and recall on defocus
σ ≥ 1.5 px (frames with 0 < σ < 1.5 count for neither); the same for the flag of before
(Laplacian variance < 30 at 512 px), cleanvision's blurry issue and imagededup's PHash groups.

    python benchmarks/burst_focus.py --model quickstart/student/student.pt [--seed 0]
    # the peers need: pip install -e '.[peers]'
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.burst_groups import (
    build_bursts,
    burst_sources,
    cleanvision_groups,
    imagededup_groups,
    pair_scores,
)
from benchmarks.real_photos import real_photos
from distill.culling.run import FOCUS_SIDE

RESULTS = Path(__file__).parent / "results"
SIDE = 1440
LEGACY_BLURRY_BELOW = 30.0  # the flag of before: Laplacian variance at 512 px
# Wallpapers that are drawings or renders, and a fundus micrograph: no camera's bursts
NOT_PHOTOS = {"Autumn", "Flow", "Honeywave", "PastelHills", "SafeLanding", "Shell", "retina"}


def large_photos() -> dict[str, tuple[Path, tuple]]:
    """Burst name → (photo, whole frame): the real photos of at least `SIDE` px, less
    renders and micrographs."""
    large = {}
    for path in real_photos():
        # KDE's wallpapers are NAME/contents/images/WxH.jpg
        name = path.parts[-4] if path.parent.name == "images" else path.stem
        with Image.open(path) as image:
            if max(image.size) >= SIDE and name not in NOT_PHOTOS:
                large[f"{name}-whole"] = (path, (0, 0, 1, 1))
    return large


def sets(seed: int) -> dict[str, dict]:
    large = large_photos()
    return {
        "readme": {"sources": burst_sources(), "frames": (4, 6), "seed": seed},
        "photos_1440": {"sources": large, "frames": (4, 4), "side": SIDE, "sigma": (1.6, 3.0),
                        "drift": (0.01, 0.03), "interval": 1.0, "seed": seed},
    }


def flag_scores(truth: list[dict], flagged: set[str], min_sigma: float = 1.5) -> dict:
    """Precision / recall of a blurry flag: positives σ ≥ min_sigma, negatives sharp frames;
    frames blurred less than min_sigma count for neither."""
    positives = {t["file"] for t in truth if t["sigma"] >= min_sigma}
    negatives = {t["file"] for t in truth if t["sigma"] == 0}
    hits = len(flagged & positives)
    false = len(flagged & negatives)
    return {"precision": round(hits / (hits + false), 4) if hits + false else None,
            "recall": round(hits / len(positives), 4) if positives else None,
            "true_positives": hits, "false_positives": false, "positives": len(positives),
            "negatives": len(negatives)}


def run_cull(folder: Path, truth: list[dict], model: Path, dest: Path, focus_side: int) -> dict:
    from distill.culling import CullOptions, DecideOptions, cull

    started = time.perf_counter()
    cull(folder, model, dest=dest, progress=False,
         options=CullOptions(decide=DecideOptions(keep_rate=0.3), focus_side=focus_side))
    seconds = time.perf_counter() - started
    with (dest / "cull.csv").open() as handle:
        rows = {row["image"]: row for row in csv.DictReader(handle)}
    journal = [json.loads(line) for line in (dest / ".distill-cull.jsonl").read_text().splitlines()]
    measures = {Path(e["source"]).name: e["measures"] for e in journal if "measures" in e}
    sharp = {t["burst"]: t["file"] for t in truth if t["sharp"]}
    bursts = {t["burst"] for t in truth}
    kept_sharp = sum(1 for b in bursts if rows[sharp[b]]["decision"] == "keep")
    kept_blurred = {t["burst"] for t in truth if not t["sharp"]
                    and rows[t["file"]]["decision"] == "keep"}
    best_sharp = sum(1 for b in bursts if rows[sharp[b]]["best_in_group"] == "True"
                     and int(rows[sharp[b]]["group_size"]) > 1)
    focus_reasons = sum(1 for r in rows.values()
                        if "sharpest of" in r["reason"] or "in focus (" in r["reason"])
    flagged = {image for image, row in rows.items() if "blurry" in row["flags"].split(",")}
    legacy = {image for image, m in measures.items() if m["sharpness"] < LEGACY_BLURRY_BELOW}
    return {"sharp_frame_kept": round(kept_sharp / len(bursts), 4),
            "sharp_frame_best_of_group": round(best_sharp / len(bursts), 4),
            "bursts_keeping_a_defocused_frame": len(kept_blurred),
            "bursts_decided_by_focus": focus_reasons,
            **{f"pair_{k}": v for k, v in pair_scores(
                truth, {i: int(r["group_id"]) for i, r in rows.items()}).items()
               if k in ("precision", "recall", "groups")},
            "blurry_flag": flag_scores(truth, flagged),
            "blurry_flag_before_laplacian_512": flag_scores(truth, legacy),
            "seconds_per_photo": round(seconds / len(truth), 4),
            "missed": sorted(b for b in bursts if rows[sharp[b]]["decision"] != "keep")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a trained student.pt (or .onnx)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpu_count": os.cpu_count(),
                          "load_average_before": [round(v, 2) for v in os.getloadavg()]},
              "model": args.model, "seed": args.seed, "sets": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for name, spec in sets(args.seed).items():
            folder = Path(scratch) / name / "DCIM"
            truth = build_bursts(folder, **spec)
            entry = {"frames": len(truth), "bursts": len({t["burst"] for t in truth}),
                     "build": {k: v for k, v in spec.items() if k != "sources"}}
            entry["distill"] = run_cull(folder, truth, Path(args.model),
                                        Path(scratch) / name / "out", FOCUS_SIDE)
            if not args.no_peers:
                groups, blurry = cleanvision_groups(folder)
                entry["cleanvision"] = {
                    **{f"pair_{k}": v for k, v in pair_scores(truth, groups).items()
                       if k in ("precision", "recall", "groups")},
                    "blurry_flag": flag_scores(truth, blurry)}
                entry["imagededup PHash d<=10"] = {
                    f"pair_{k}": v for k, v in pair_scores(truth, imagededup_groups(folder, 10)
                                                           ).items()
                    if k in ("precision", "recall", "groups")}
            result["sets"][name] = entry
            for method, scores in entry.items():
                if isinstance(scores, dict) and "pair_precision" in scores:
                    flag = scores.get("blurry_flag", {})
                    print(f"{name:12s} {method:26s} kept {scores.get('sharp_frame_kept', '-')}  "
                          f"pairs P {scores['pair_precision']} R {scores['pair_recall']}  "
                          f"blurry P {flag.get('precision', '-')} R {flag.get('recall', '-')}")
    result["machine"]["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    out = Path(args.out or RESULTS / f"burst_focus-seed{args.seed}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
