"""Human labels in the pseudo-label schema, so `distill train` can mix them (the seed's Phase 1).

`ava_to_labels` converts AVA's vote counts into label shards with `source = human`:
- `quality` is the mean vote (1–10), `tier` uses the same 5 / 6 boundaries as the fusion;
- `label` is keep when the mean ≥ `threshold`, or (with `percentile`) when the mean is in the
  top (100 - percentile) % of AVA — the seed's "scores ≥ 6" and "top 50 %" conversions;
- `keep_prob = sigmoid((mean - threshold) / temperature)`, as the fusion computes it;
- `confidence = 1 - 2 * std of the votes on 0–1`, the fusion's agreement measure with the
  raters in place of the teachers;
- `dist_human` is the normalised vote histogram (10 bins), the target of the EMD loss.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from distill import run_folder, xmp
from distill.decode import DecodeError, find_images, header_size, read_bytes
from distill.errors import DistillError
from distill.human_scores import load_ava, read_text
from distill.names import as_text
from distill.run_folder import image_id
from distill.scoring import FusionConfig, keep_prob, tier

HUMAN = "human"


def _identity(path: Path) -> dict:
    data = read_bytes(path)
    width, height = header_size(data, path)  # no pixels decoded
    return {"sha1": hashlib.sha1(data).hexdigest(), "width": width, "height": height}


def ava_to_labels(root: Path, out: Path, threshold: float | None = 6.0,
                  percentile: float | None = None, fusion: FusionConfig | None = None,
                  shard_size: int = 1000, progress: bool = True) -> dict:
    if (threshold is None) == (percentile is None):
        raise DistillError("give exactly one of --threshold or --percentile")
    fusion = fusion or FusionConfig()
    labels = load_ava(Path(root), None)
    start_run(Path(out), {"kind": "ava", "root": str(root)}, shard_size)
    votes = {item.id: item for item in labels.items}
    means = np.array([item.score for item in labels.items])
    cutoff = float(np.percentile(means, percentile)) if percentile is not None else threshold
    counts = _vote_histograms(labels.file)

    rows, errors = [], []
    for item in tqdm(labels.items, desc="AVA", unit="img", disable=not progress):
        identity = {"image_id": image_id("ava", item.id), "source": HUMAN, "path": str(item.path)}
        try:
            identity.update(_identity(item.path))
        except DecodeError as exc:
            errors.append({**identity, "stage": "decode", "reason": str(exc), "shard": None})
            continue
        histogram = counts[item.id] / counts[item.id].sum()
        rows.append({
            **identity,
            "quality": item.score,
            "keep_prob": keep_prob(item.score, cutoff, fusion.temperature),
            "label": "keep" if item.score >= cutoff else "trash",
            "tier": tier(item.score, fusion.tier_boundaries),
            "confidence": float(np.clip(1 - 2 * votes[item.id].score_std / 9.0, 0, 1)),
            "dist_human": histogram.tolist(),
        })
    merged = write_rows(out, rows, errors, shard_size)
    keep = sum(1 for row in rows if row["label"] == "keep")
    summary = {"inputs": len(labels.items), "labeled": len(rows), "errors": merged.num_rows,
               "keep": keep, "keep_threshold": round(cutoff, 4), "notes": labels.notes}
    run_folder.write_manifest(out, {
        "config": {"source": {"kind": "ava", "root": str(root)}, "threshold": threshold,
                   "percentile": percentile, "fusion": {"temperature": fusion.temperature,
                                                        "tier_boundaries": fusion.tier_boundaries}},
        "teachers": [{"teacher": HUMAN, "file": str(labels.file)}],
        "summary": summary,
    })
    return summary


def start_run(out: Path, source: dict, shard_size: int) -> None:
    """A human label run goes into a new or empty folder, and says from its first file on
    that it is being written (run.json before the shards, the manifest last)."""
    run_folder.refuse_unless_empty(out)
    run_folder.write_run_shape(out, {"source": source, "shard_size": shard_size})


def write_rows(out: Path, rows: list[dict], errors: list[dict], shard_size: int) -> pa.Table:
    """Human rows as label shards (errors in the first shard); returns the merged errors."""
    for index, start in enumerate(range(0, max(len(rows), 1), shard_size)):
        chunk = rows[start:start + shard_size]
        shard_errors = errors if index == 0 else []
        table = pa.Table.from_pylist(chunk) if chunk else pa.table({"image_id": pa.array([], pa.string())})
        run_folder.write_shard(out, index, table, pa.Table.from_pylist(shard_errors, schema=run_folder.ERROR_SCHEMA), None)
    return run_folder.merge_errors(out)


def pick_from_sidecar(properties: dict[str, str], keep_stars: int) -> tuple[str, float] | None:
    """(keep | trash, quality 1–10 or NaN) from a sidecar's rating and pick label, or None
    when the photographer left no opinion. A pick label (digiKam: 1 rejected, 3 accepted)
    decides; else a rating of -1 (rejected, as Lightroom and darktable write it) is trash and
    1–5 stars are keep from `keep_stars` up. Stars map onto 1–10 as cull's rating inverts."""
    try:
        rating = int(float(properties.get(xmp.RATING, "0")))
        pick = int(properties.get(xmp.PICK_LABEL, "0"))
    except ValueError:
        return None
    quality = 1 + (rating - 1) * 9 / 4 if 1 <= rating <= 5 else (1.0 if rating < 0 else np.nan)
    if pick in (1, 3):
        return ("keep" if pick == 3 else "trash"), quality
    if rating < 0:
        return "trash", quality
    if 1 <= rating <= 5:
        return ("keep" if rating >= keep_stars else "trash"), quality
    return None


def xmp_to_labels(folder: Path, out: Path, keep_stars: int = 4, shard_size: int = 1000,
                  progress: bool = True) -> dict:
    """A photographer's own picks (sidecar ratings and pick labels from digiKam, darktable or
    Lightroom, read by exiv2) as human label shards, to fine-tune a student on."""
    start_run(Path(out), {"kind": "xmp", "root": str(folder)}, shard_size)
    photos = find_images([Path(folder)])
    rows, errors, unrated = [], [], 0
    for photo in tqdm(photos, desc="sidecars", unit="img", disable=not progress):
        sidecar = xmp.sidecar_for(photo)
        if not sidecar.exists():
            unrated += 1
            continue
        path = as_text(photo.resolve())
        identity = {"image_id": image_id("xmp", path), "source": HUMAN, "path": path}
        try:
            picked = pick_from_sidecar(xmp.read_sidecar(sidecar), keep_stars)
            identity.update(_identity(photo))
        except (DecodeError, xmp.XmpError, OSError) as exc:  # a sidecar that is a folder
            errors.append({**identity, "stage": "sidecar", "reason": str(exc), "shard": None})
            continue
        if picked is None:
            unrated += 1
            continue
        label, quality = picked
        rows.append({**identity, "quality": quality, "keep_prob": float(label == "keep"),
                     "label": label, "confidence": 1.0,
                     "tier": 2 if label == "keep" else 0})
    merged = write_rows(Path(out), rows, errors, shard_size)
    keep = sum(1 for row in rows if row["label"] == "keep")
    summary = {"photos": len(photos), "labeled": len(rows), "unrated": unrated,
               "errors": merged.num_rows, "keep": keep}
    run_folder.write_manifest(Path(out), {
        "config": {"source": {"kind": "xmp", "root": str(folder)}, "keep_stars": keep_stars},
        "teachers": [{"teacher": HUMAN, "file": "xmp sidecars"}], "summary": summary})
    return summary


def _vote_histograms(ava_txt: Path) -> dict[str, np.ndarray]:
    histograms = {}
    for line in read_text(ava_txt).splitlines():
        fields = line.split()
        if len(fields) == 15:
            histograms[fields[1]] = np.asarray(fields[2:12], dtype=np.float64)
    return histograms
