"""Duplicate-pair precision and recall of `distill dedup` on real photos, per threshold τ.

The set is built from the photos that installed packages ship (scikit-image, matplotlib,
pyiqa's calibration references): each source photo gets a group of edited copies (JPEG
re-encodes at quality 30-90, resizes 0.3x-2x, crops keeping 80-95 % of the area, a horizontal
flip, ±10 % brightness, one combination), and far-apart corner crops of the large photos are
added as distinct images with no copy. Ground truth: two images are duplicates iff they come
from the same source photo.

    python benchmarks/dedup_accuracy.py [--skip-clip] [--out benchmarks/results/dedup_accuracy.json]

The CLIP path runs a randomly initialised tiny open_clip model (tests/fixtures): its figures
check the plumbing only and say nothing about real CLIP embeddings.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).parent / "results" / "dedup_accuracy.json"
TINY_CLIP = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "distill-tiny-clip.json"

# Real photographs only: the synthetic graphics that skimage ships (chessboard, colour wheel,
# logos, phantom, horse silhouette) are left out, and so is motorcycle_right, the stereo twin of
# motorcycle_left (it would be a true near duplicate the ground truth calls distinct).
SOURCE_PHOTOS = {
    "skimage": ("astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png",
                "clock_motion.png", "coffee.png", "coins.png", "grass.png", "gravel.png",
                "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png",
                "page.png", "retina.jpg", "rocket.jpg", "text.png"),
    "matplotlib": ("grace_hopper.jpg",),
    "pyiqa": ("I03.bmp", "I04.bmp", "I06.bmp", "I08.bmp", "I19.bmp"),
}
# Photos big enough that two opposite corner crops (40 % of each side, 16 % of the area, not
# overlapping) are still ≥ 150 px: they are extra distinct images with no copy in the set.
CORNER_CROPPED = ("astronaut", "camera", "cell", "coffee", "hubble_deep_field",
                  "motorcycle_left", "retina", "rocket")
CORNER_SIDE = 0.4


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    return Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations \
        else None


def source_photos() -> dict[str, Path]:
    """Name → path of every source photo that is installed (pyiqa's sit beside the package)."""
    folders = {"skimage": ("skimage", "data"), "matplotlib": ("matplotlib", "mpl-data/sample_data"),
               "pyiqa": ("pyiqa", "../ResultsCalibra/ref_dir")}
    found = {}
    for package, names in SOURCE_PHOTOS.items():
        module, sub = folders[package]
        root = _package_dir(module)
        for name in names:
            path = (root / sub / name).resolve() if root else None
            if path and path.is_file():
                found[Path(name).stem] = path
    return found


@dataclass(frozen=True)
class Item:
    path: Path
    group: str  # source photo; images of one group are duplicates of each other
    edit: str  # what was done to the source


def _crop(image: Image.Image, area: float, rng: np.random.Generator) -> Image.Image:
    """A crop keeping `area` of the pixels, with a random side split and offset."""
    split = rng.uniform(0.25, 0.75)
    fx, fy = area ** split, area ** (1 - split)
    w, h = image.size
    cw, ch = round(w * fx), round(h * fy)
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return image.crop((left, top, left + cw, top + ch))


def _resize(image: Image.Image, factor: float) -> Image.Image:
    w, h = image.size
    return image.resize((max(1, round(w * factor)), max(1, round(h * factor))),
                        Image.Resampling.LANCZOS)


def _brightness(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(factor)


# (name, edit, file format, JPEG quality). Lossless edits are stored as PNG so that the
# re-encode variants alone carry the JPEG loss.
EDITS = (
    ("jpeg30", lambda im, rng: im, "JPEG", 30),
    ("jpeg50", lambda im, rng: im, "JPEG", 50),
    ("jpeg70", lambda im, rng: im, "JPEG", 70),
    ("jpeg90", lambda im, rng: im, "JPEG", 90),
    ("resize0.3", lambda im, rng: _resize(im, 0.3), "JPEG", 90),
    ("resize0.5", lambda im, rng: _resize(im, 0.5), "PNG", None),
    ("resize1.5", lambda im, rng: _resize(im, 1.5), "JPEG", 85),
    ("resize2", lambda im, rng: _resize(im, 2.0), "JPEG", 85),
    ("crop80", lambda im, rng: _crop(im, 0.80, rng), "PNG", None),
    ("crop90", lambda im, rng: _crop(im, 0.90, rng), "JPEG", 80),
    ("crop95", lambda im, rng: _crop(im, 0.95, rng), "PNG", None),
    ("hflip", lambda im, rng: ImageOps.mirror(im), "PNG", None),
    ("bright+10", lambda im, rng: _brightness(im, 1.1), "PNG", None),
    ("bright-10", lambda im, rng: _brightness(im, 0.9), "JPEG", 75),
    ("hflip+crop88+jpeg60", lambda im, rng: _crop(ImageOps.mirror(im), 0.88, rng), "JPEG", 60),
)


def _save(image: Image.Image, stem: Path, fmt: str, quality: int | None) -> Path:
    path = stem.parent / f"{stem.name}.{'jpg' if fmt == 'JPEG' else 'png'}"
    # PNG at zlib level 1: the set is rebuilt by every test run, and the pixels are the same.
    image.save(path, fmt, **({"quality": quality} if quality else {"compress_level": 1}))
    return path


def _corner_crops(image: Image.Image) -> list[Image.Image]:
    w, h = image.size
    cw, ch = round(w * CORNER_SIDE), round(h * CORNER_SIDE)
    return [image.crop((0, 0, cw, ch)), image.crop((w - cw, h - ch, w, h))]


def build_accuracy_set(folder: Path, sources: dict[str, Path] | None = None,
                       edits=EDITS, seed: int = 0) -> list[Item]:
    """Write the set under `folder`: originals (PNG), their edited copies, corner crops."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = []
    for name, source in (sources or source_photos()).items():
        image = ImageOps.exif_transpose(Image.open(source)).convert("RGB")
        items.append(Item(_save(image, folder / f"{name}__original", "PNG", None), name, "original"))
        for edit, apply, fmt, quality in edits:
            path = _save(apply(image, rng), folder / f"{name}__{edit}", fmt, quality)
            items.append(Item(path, name, edit))
        if name in CORNER_CROPPED:
            for corner, crop in zip(("topleft", "bottomright"), _corner_crops(image)):
                path = _save(crop, folder / f"{name}-{corner}__original", "PNG", None)
                items.append(Item(path, f"{name}-{corner}", "distinct corner crop"))
    return items


def write_labels_run(out: Path, items: list[Item], quality: list[float] | None = None,
                     embeddings: np.ndarray | None = None, shard_size: int = 256) -> Path:
    """A labeling run over `items` as `distill label` lays it out (identity + fused columns)."""
    import hashlib

    import pyarrow as pa

    from distill import run_folder

    quality = quality if quality is not None else [5.0] * len(items)
    for index, start in enumerate(range(0, max(len(items), 1), shard_size)):
        chunk = items[start:start + shard_size]
        sizes = [Image.open(item.path).size for item in chunk]
        scores = quality[start:start + shard_size]
        labels = pa.table({
            "image_id": [f"{item.group}/{item.edit}" for item in chunk],
            "source": ["folder"] * len(chunk),
            "path": [str(item.path) for item in chunk],
            "sha1": [hashlib.sha1(item.path.read_bytes()).hexdigest() for item in chunk],
            "width": pa.array([w for w, _ in sizes], pa.int64()),
            "height": pa.array([h for _, h in sizes], pa.int64()),
            "quality": pa.array(scores, pa.float64()),
            "keep_prob": pa.array([q / 10 for q in scores], pa.float64()),
            "label": ["keep" if q >= 5 else "trash" for q in scores],
            "tier": pa.array([2 if q > 6 else int(q > 5) for q in scores], pa.int8()),
            "confidence": pa.array([0.5] * len(chunk), pa.float64()),
        })
        vectors = None if embeddings is None else embeddings[start:start + shard_size]
        errors = pa.table({name: pa.array([], field.type) for name, field in
                           zip(run_folder.ERROR_SCHEMA.names, run_folder.ERROR_SCHEMA)})
        run_folder.write_shard(out, index, labels, errors, vectors)
    return out


def _pairs_within(counts: np.ndarray) -> int:
    return int(np.sum(counts * (counts - 1) // 2))


def cluster_precision_recall(groups: list[str], labels: np.ndarray) -> dict:
    """Pairs put in one cluster vs pairs from one source photo (dedup's transitive answer)."""
    group_ids = np.unique(groups, return_inverse=True)[1]
    both = np.unique(labels * (group_ids.max() + 1) + group_ids, return_counts=True)[1]
    true_positive = _pairs_within(both)
    predicted = _pairs_within(np.bincount(labels))
    actual = _pairs_within(np.bincount(group_ids))
    return {"cluster_precision": round(true_positive / predicted, 4) if predicted else 1.0,
            "cluster_recall": round(true_positive / actual, 4) if actual else 1.0}


def sweep(groups: list[str], vectors: np.ndarray, signs: np.ndarray | None,
          taus: list[float]) -> list[dict]:
    """Pair and cluster precision/recall per τ, from one exact search at the lowest τ."""
    from distill.similar import IndexSpec, clusters, near_duplicate_pairs

    valid = np.any(vectors != 0, axis=1)
    a, b, sims = near_duplicate_pairs(vectors, valid, min(taus), IndexSpec(kind="flat"), signs,
                                      progress=False)[:3]
    group = np.asarray(groups)
    same = group[a] == group[b]
    actual = _pairs_within(np.unique(group, return_counts=True)[1])
    rows = []
    for tau in taus:
        over = sims >= tau
        found, right = int(over.sum()), int((over & same).sum())
        rows.append({"tau": round(tau, 3), "predicted_pairs": found, "true_pairs": actual,
                     "pair_precision": round(right / found, 4) if found else 1.0,
                     "pair_recall": round(right / actual, 4),
                     **cluster_precision_recall(groups, clusters(len(group), a[over], b[over]))})
    return rows


def end_to_end(out: Path, items: list[Item], threshold: float | None = None) -> dict:
    """`run_dedup` on a labeling run of the set; precision/recall of its clusters."""
    from distill.deduplication import run_dedup
    from distill.run_folder import DEDUP_FILE

    summary = run_dedup(out, threshold=threshold, progress=False)
    import pyarrow.parquet as pq

    table = pq.read_table(out / DEDUP_FILE)
    by_id = {f"{item.group}/{item.edit}": item.group for item in items}
    groups = [by_id[i] for i in table.column("image_id").to_pylist()]
    scores = cluster_precision_recall(groups, table.column("cluster_id").to_numpy())
    return {"threshold": summary["threshold"], "descriptor": summary["descriptor"],
            "kept": summary["kept"], "source_photos_and_distinct_images": len(set(groups)),
            **scores, "summary_timings_s": summary["timings_s"]}


def tiny_clip_embeddings(paths: list[Path], folder: Path) -> np.ndarray:
    """Embeddings from the clip_aesthetic teacher running a random tiny open_clip model."""
    import open_clip
    import torch

    from teachers import create_teacher
    from teachers.clip_aesthetic import build_head

    open_clip.add_model_config(TINY_CLIP)
    torch.manual_seed(0)
    model = open_clip.create_model("distill-tiny-clip", pretrained=None)
    torch.save(model.state_dict(), folder / "clip.pt")
    torch.save(build_head("mlp", 32).state_dict(), folder / "head.pth")
    teacher = create_teacher("clip_aesthetic", arch="distill-tiny-clip",
                             clip_weights=str(folder / "clip.pt"),
                             head_weights=str(folder / "head.pth"))
    chunks = []
    for start in range(0, len(paths), 32):
        images = [Image.open(p).convert("RGB") for p in paths[start:start + 32]]
        chunks.append(teacher.score(images).embeddings)
    return np.concatenate(chunks).astype(np.float32)


def hardest_non_duplicates(items: list[Item], vectors: np.ndarray, signs: np.ndarray | None,
                           count: int = 5) -> list[dict]:
    """The most similar pairs from different source photos: the margin under the default τ."""
    from distill.similar import IndexSpec, near_duplicate_pairs

    a, b, sims = near_duplicate_pairs(vectors, np.any(vectors != 0, axis=1), 0.3,
                                      IndexSpec(kind="flat"), signs, progress=False)[:3]
    cross = np.flatnonzero([items[i].group != items[j].group for i, j in zip(a, b)])
    top = cross[np.argsort(-sims[cross])][:count]
    return [{"a": f"{items[a[t]].group}/{items[a[t]].edit}",
             "b": f"{items[b[t]].group}/{items[b[t]].edit}",
             "similarity": round(float(sims[t]), 4)} for t in top]


def per_edit_recall(items: list[Item], vectors: np.ndarray, signs: np.ndarray | None,
                    tau: float) -> dict[str, float]:
    """Per edit: the share of source photos whose edited copy is within τ of the original."""
    from distill.similar import pair_similarity

    original = {item.group: row for row, item in enumerate(items) if item.edit == "original"}
    copies = [row for row, item in enumerate(items)
              if item.edit != "original" and item.group in original and
              item.edit != "distinct corner crop"]
    sims = pair_similarity(vectors, np.array(copies),
                           np.array([original[items[r].group] for r in copies]), signs)
    hits: dict[str, list[bool]] = {}
    for row, sim in zip(copies, sims):
        hits.setdefault(items[row].edit, []).append(bool(sim >= tau))
    return {edit: round(float(np.mean(found)), 3) for edit, found in hits.items()}


def chosen_threshold(rows: list[dict], recall: float = 0.95) -> float | None:
    """The highest τ whose pair recall is still ≥ `recall`: favours precision on big pools."""
    good = [row["tau"] for row in rows if row["pair_recall"] >= recall]
    return max(good) if good else None


def main():
    import tempfile

    from distill.deduplication import DEFAULT_THRESHOLD
    from distill.similar import descriptors

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-clip", action="store_true", help="offline descriptor only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--seeds", type=int, default=5,
                        help="also rebuild the set with seeds 1..N-1 (other crops) and score τ")
    args = parser.parse_args()
    taus = [round(t, 2) for t in np.arange(0.30, 0.96, 0.05)] + [0.97, 0.98, 0.99]
    report = {"benchmark": "dedup_accuracy", "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                          "loadavg_at_start": os.getloadavg()}}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        items = build_accuracy_set(Path(tmp) / "images")
        groups = [item.group for item in items]
        sizes = {g: groups.count(g) for g in dict.fromkeys(groups)}
        report["set"] = {
            "images": len(items), "source_photos": sum(s > 1 for s in sizes.values()),
            "distinct_corner_crops": sum(s == 1 for s in sizes.values()),
            "duplicate_pairs": _pairs_within(np.array(list(sizes.values()))),
            "non_duplicate_pairs": len(items) * (len(items) - 1) // 2
            - _pairs_within(np.array(list(sizes.values()))),
            "edits": [name for name, *_ in EDITS], "sources": sorted(source_photos()),
            "build_s": round(time.perf_counter() - started, 2)}
        paths = [item.path for item in items]
        started = time.perf_counter()
        vectors, _, failures = descriptors.offline_descriptors(paths, progress=False)
        assert not failures, failures
        offline_rows = sweep(groups, vectors, descriptors.mirror_signs(), taus)
        tau = DEFAULT_THRESHOLD["offline"]
        report["offline"] = {
            "descriptor": descriptors.OFFLINE_NAME, "sweep": offline_rows,
            "rule": "chosen τ = highest τ with pair recall ≥ 0.95",
            "chosen_threshold": chosen_threshold(offline_rows),
            "default_threshold": tau,
            "descriptor_s": round(time.perf_counter() - started, 2),
            "hardest_non_duplicates": hardest_non_duplicates(items, vectors,
                                                             descriptors.mirror_signs()),
            "per_edit_recall_vs_original_at_default": per_edit_recall(
                items, vectors, descriptors.mirror_signs(), tau),
            "other_seeds_at_default": [_other_seed(Path(tmp) / f"seed{seed}", seed, tau)
                                       for seed in range(1, args.seeds)],
            "end_to_end": end_to_end(write_labels_run(Path(tmp) / "run-offline", items), items)}
        _print("offline", offline_rows, report["offline"]["end_to_end"])
        if not args.skip_clip:
            embeddings = tiny_clip_embeddings(paths, Path(tmp))
            clip_rows = sweep(groups, embeddings / np.linalg.norm(embeddings, axis=1,
                                                                  keepdims=True), None, taus)
            run = write_labels_run(Path(tmp) / "run-clip", items, embeddings=embeddings)
            report["clip_tiny_random"] = {
                "note": "random-init 32-d tiny open_clip (tests/fixtures): checks the plumbing "
                        "of the CLIP path only; says nothing about real CLIP embeddings",
                "sweep": clip_rows, "default_threshold": DEFAULT_THRESHOLD["clip"],
                "end_to_end": end_to_end(run, items)}
            _print("clip (tiny, random)", clip_rows, report["clip_tiny_random"]["end_to_end"])
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


def _other_seed(folder: Path, seed: int, tau: float) -> dict:
    """The set rebuilt with other random crops: how much the default τ's scores move."""
    from distill.similar import descriptors

    items = build_accuracy_set(folder, seed=seed)
    vectors, _, _ = descriptors.offline_descriptors([i.path for i in items], progress=False)
    (row,) = sweep([i.group for i in items], vectors, descriptors.mirror_signs(), [tau])
    return {"seed": seed, **row}


def _print(name: str, rows: list[dict], final: dict) -> None:
    print(f"{name}: tau  pairP  pairR  clusterP  clusterR")
    for row in rows:
        print(f"  {row['tau']:.2f}  {row['pair_precision']:.3f}  {row['pair_recall']:.3f}  "
              f"{row['cluster_precision']:.3f}  {row['cluster_recall']:.3f}")
    print(f"  run_dedup at τ={final['threshold']}: cluster precision "
          f"{final['cluster_precision']:.3f}, recall {final['cluster_recall']:.3f}")


if __name__ == "__main__":
    main()
