"""Similar-shot grouping of `distill cull` on bursts made from real photos, beside what a user
would otherwise reach for: imagededup's PHash and cleanvision's near-duplicate check.

Each source photo (the ones installed packages ship, as in dedup_accuracy.py) becomes a burst
of 4–6 frames a fraction of a second apart (EXIF DateTimeOriginal + SubSecTimeOriginal):
the camera drifts by 1–4 % of the frame between frames, each frame is re-encoded at its own
JPEG quality, and every frame but one is slightly out of focus (Gaussian blur σ 1.2–2.5), so
each burst has exactly one truly best frame. Bursts are minutes apart. Ground truth: two
frames are similar iff they come from one burst.

Reported, per method: pair precision and recall, groups found, and (for distill) how often
the frame kept is the truly sharp one, with the technical teacher's score as the quality
(or a trained student with --model).

    python benchmarks/burst_groups.py [--model student.pt] [--peers]
    # --peers needs: pip install imagededup cleanvision (not project dependencies)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.dedup_accuracy import source_photos

RESULTS = Path(__file__).parent / "results" / "burst_groups.json"
# Graphics, micrographs and near-uniform frames are no camera's bursts.
SKIP = {"page", "text", "coins", "cell", "ihc", "moon", "hubble_deep_field", "grass", "gravel",
        "brick", "clock_motion", "retina"}
EXTRA = ("china", "flower", "SPAQ_10241", "frame_4wrwr48cdk6rbcjl", "frame_7gzdcz9sif0ekg31",
         "frame_9ogwhvvy7gfj6jzh")  # from distill.sources.packaged_photos
FRAME_SIDE = 640


# Hard negatives: the left and right 55 % of these scenes are two different shots of one place
# (they overlap by 10 %), so they make two bursts that a grouping must keep apart.
HALVED = ("china", "SPAQ_10241", "frame_4wrwr48cdk6rbcjl", "frame_7gzdcz9sif0ekg31",
          "astronaut", "coffee")
HALVES = {"left": (0.0, 0.0, 0.55, 1.0), "right": (0.45, 0.0, 1.0, 1.0)}


def burst_sources() -> dict[str, tuple[Path, tuple]]:
    """Burst name → (real photo, crop box as fractions): dedup_accuracy's photos less the
    graphics, more packaged photos, and the halves of a few scenes as hard negatives."""
    from distill.sources import packaged_photos

    photos = {k: v for k, v in source_photos().items() if k not in SKIP}
    photos.update({p.stem: p for p in packaged_photos() if p.stem in EXTRA})
    sources = {}
    for name, path in photos.items():
        for half, box in (HALVES.items() if name in HALVED else [("whole", (0, 0, 1, 1))]):
            sources[f"{name}-{half}"] = (path, box)
    return sources


def write_exif_time(taken: datetime) -> bytes:
    exif = Image.Exif()
    exif[0x8769] = {0x9003: taken.strftime("%Y:%m:%d %H:%M:%S"),
                    0x9291: f"{taken.microsecond // 10000:02d}"}
    return exif.tobytes()


def build_bursts(out: Path, seed: int = 0, sources: dict[str, tuple[Path, tuple]] | None = None,
                 frames: tuple[int, int] = (4, 6), side: int = FRAME_SIDE,
                 sigma: tuple[float, float] = (1.2, 2.5), drift: tuple[float, float] = (0.01, 0.04),
                 interval: float = 0.3) -> list[dict]:
    """Write the burst folder; returns one truth row per frame: file, burst, sharp, sigma (the
    defocus, px at the frame's size; 0 for the sharp frame)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    sources = sources or burst_sources()
    clock = datetime(2026, 6, 13, 14, 0, 0)
    truth = []
    for burst, (name, (path, box)) in enumerate(sorted(sources.items())):
        base = Image.open(path).convert("RGB")
        base = base.crop(tuple(round(f * side) for f, side in zip(box, base.size * 2)))
        scale = side / max(base.size)
        base = base.resize((round(base.width * scale * 1.1), round(base.height * scale * 1.1)),
                           Image.Resampling.LANCZOS)
        count = int(rng.integers(frames[0], frames[1] + 1))
        sharp = int(rng.integers(count))
        width, height = round(base.width / 1.1), round(base.height / 1.1)
        for frame in range(count):
            # the camera drifts 1-4 % of the frame from the burst's centre, either way
            shift = rng.uniform(*drift, 2) * (width, height) * rng.choice([-1, 1], 2)
            left = int(np.clip((base.width - width) / 2 + shift[0], 0, base.width - width))
            top = int(np.clip((base.height - height) / 2 + shift[1], 0, base.height - height))
            image = base.crop((left, top, left + width, top + height))
            blur = 0.0 if frame == sharp else float(rng.uniform(*sigma))
            if blur:
                image = image.filter(ImageFilter.GaussianBlur(blur))
            taken = clock + timedelta(seconds=interval * frame)
            file = out / f"IMG_{burst:02d}{frame:02d}.jpg"
            image.save(file, quality=int(rng.integers(80, 96)), exif=write_exif_time(taken))
            truth.append({"file": file.name, "burst": name, "sharp": frame == sharp,
                          "sigma": round(blur, 3)})
        clock += timedelta(minutes=3)
    return truth


def pair_scores(truth: list[dict], group_of: dict[str, int]) -> dict:
    """Pair precision / recall of a grouping (file → group id) against the bursts."""
    files = [t["file"] for t in truth]
    burst = {t["file"]: t["burst"] for t in truth}
    true_pairs = found_pairs = both = 0
    for i, a in enumerate(files):
        for b in files[i + 1:]:
            same_truth = burst[a] == burst[b]
            same_found = group_of.get(a, -1 - i) == group_of.get(b, -2 - i)
            true_pairs += same_truth
            found_pairs += same_found
            both += same_truth and same_found
    return {"precision": round(both / found_pairs, 4) if found_pairs else None,
            "recall": round(both / true_pairs, 4) if true_pairs else None,
            "groups": len({g for g in group_of.values()}), "pairs_found": found_pairs,
            "true_pairs": true_pairs}


def distill_groups(folder: Path, truth: list[dict], similarity: float, burst_seconds,
                   quality_of) -> tuple[dict, dict]:
    """Our grouping, as `distill cull` computes it (decode → descriptor → decide)."""
    from distill.culling import DecideOptions, decide, describe
    from distill.decode import decode_path

    photos = []
    for row in truth:
        decoded = decode_path(folder / row["file"], draft_size=768)
        descriptor, measures = describe(decoded.image)
        photos.append({"image": row["file"], "quality": quality_of(decoded.image),
                       "keep_prob": 0.5, "descriptor": descriptor,
                       "taken_at": decoded.taken_at, "measures": measures})
    options = DecideOptions(similarity=similarity, burst_seconds=burst_seconds)
    decided = decide(photos, options)
    group_of = {p["image"]: d["group_id"] for p, d in zip(photos, decided)}
    sharp = {t["file"] for t in truth if t["sharp"]}
    blurry = {p["image"] for p, d in zip(photos, decided) if "blurry" in d["flags"]}
    bursts = {t["burst"] for t in truth}
    best_ok = sum(1 for p, d in zip(photos, decided) if d["best_in_group"]
                  and d["group_size"] > 1 and p["image"] in sharp)
    return group_of, {"best_frame_accuracy": round(best_ok / len(bursts), 4),
                      "blurry_flag": flag_scores(truth, blurry)}


def flag_scores(truth: list[dict], flagged: set[str]) -> dict:
    """Precision / recall of a 'blurry' flag against the frames that were blurred."""
    blurred = {t["file"] for t in truth if not t["sharp"]}
    hits = len(flagged & blurred)
    return {"precision": round(hits / len(flagged), 4) if flagged else None,
            "recall": round(hits / len(blurred), 4) if blurred else None,
            "flagged": len(flagged), "blurred": len(blurred)}


def imagededup_groups(folder: Path, max_distance: int) -> dict:
    from imagededup.methods import PHash

    duplicates = PHash(verbose=False).find_duplicates(image_dir=str(folder),
                                                      max_distance_threshold=max_distance)
    return _components(duplicates)


def cleanvision_groups(folder: Path) -> tuple[dict, set[str]]:
    """cleanvision's near-duplicate sets as groups, and the frames its blurry check flags."""
    from cleanvision import Imagelab

    lab = Imagelab(data_path=str(folder))
    lab.find_issues({"near_duplicates": {}, "blurry": {}}, verbose=False)
    sets = lab.info["near_duplicates"]["sets"]
    blurry = {Path(p).name for p in lab.issues.index[lab.issues["is_blurry_issue"]]}
    return _components({Path(s[0]).name: [Path(x).name for x in s[1:]] for s in sets}), blurry


def _components(neighbours: dict[str, list[str]]) -> dict:
    parent: dict[str, str] = {}

    def root(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, others in neighbours.items():
        for b in others:
            parent[root(a)] = root(b)
        root(a)
    roots = sorted({root(x) for x in parent})
    return {x: roots.index(root(x)) for x in parent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a trained student.pt to rank frames (default: the "
                        "technical teacher's score)")
    parser.add_argument("--peers", action="store_true", help="also run imagededup and cleanvision")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    from teachers.technical import SUBSCORE_WEIGHTS, measure, subscores

    if args.model:
        from students import load_model

        student = load_model(Path(args.model))

        def quality_of(image):
            return float(student.predict([image])["quality"][0])
    else:
        def quality_of(image):
            return sum(SUBSCORE_WEIGHTS[k] * v for k, v in subscores(measure(image)).items())

    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "processor": platform.processor()},
              "quality": args.model or "technical teacher score", "methods": {}}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "bursts"
        truth = build_bursts(folder, args.seed)
        result["frames"], result["bursts"] = len(truth), len({t["burst"] for t in truth})
        for similarity in (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9):
            for burst_seconds in (None, 2.0):
                started = time.perf_counter()
                groups, extra = distill_groups(folder, truth, similarity, burst_seconds,
                                               quality_of)
                name = f"distill tau={similarity}" + (f" burst<={burst_seconds}s"
                                                      if burst_seconds else "")
                result["methods"][name] = {**pair_scores(truth, groups), **extra,
                                           "seconds": round(time.perf_counter() - started, 2)}
        if args.peers:
            for distance in (6, 10, 14):
                started = time.perf_counter()
                result["methods"][f"imagededup PHash d<={distance}"] = {
                    **pair_scores(truth, imagededup_groups(folder, distance)),
                    "seconds": round(time.perf_counter() - started, 2)}
            started = time.perf_counter()
            groups, blurry = cleanvision_groups(folder)
            result["methods"]["cleanvision near_duplicates + blurry"] = {
                **pair_scores(truth, groups), "blurry_flag": flag_scores(truth, blurry),
                "seconds": round(time.perf_counter() - started, 2)}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, scores in result["methods"].items():
        blur = scores.get("blurry_flag", {})
        print(f"{name:38s} P {scores['precision']}  R {scores['recall']}  "
              f"groups {scores['groups']}  best {scores.get('best_frame_accuracy', '-')}  "
              f"blurry P {blur.get('precision', '-')} R {blur.get('recall', '-')}")


if __name__ == "__main__":
    main()
