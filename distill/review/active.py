"""Active learning: pick the images a person should label next, and take their labels back.

Informativeness = mean of
- uncertainty  = 1 - |2 * keep_prob - 1|   (1 at keep_prob 0.5, 0 when sure), and
- disagreement = 1 - confidence            (how far the teachers split).
Diversity: the pool is clustered with FAISS k-means (on CLIP embeddings when the run stored
them, else on the standardised teacher scores), and the queue takes the most informative
image of each cluster in turn, so 200 picks are not 200 near-copies of one hard scene.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from distill import run_folder
from distill.decode import read_input
from distill.errors import DistillError
from distill.scoring import tier as tier_of
from distill.sheet import write_sheet

QUEUE_FIELDS = ["image_id", "path", "quality", "keep_prob", "confidence", "uncertainty",
                "disagreement", "informativeness", "cluster"]


def informativeness(table: pa.Table) -> dict[str, np.ndarray]:
    keep_prob = table.column("keep_prob").to_numpy(zero_copy_only=False)
    confidence = table.column("confidence").to_numpy(zero_copy_only=False)
    uncertainty = 1.0 - np.abs(2.0 * keep_prob - 1.0)
    disagreement = 1.0 - confidence
    return {"uncertainty": uncertainty, "disagreement": disagreement,
            "informativeness": 0.5 * (uncertainty + disagreement)}


def diversity_features(table: pa.Table, embeddings: np.ndarray | None) -> np.ndarray:
    if embeddings is not None:
        return np.ascontiguousarray(embeddings, dtype=np.float32)
    columns = [c for c in table.column_names if c.startswith(("norm_", "tech_"))]
    features = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in columns], axis=1)
    features = np.nan_to_num(features.astype(np.float64))
    features = (features - features.mean(0)) / (features.std(0) + 1e-9)
    return np.ascontiguousarray(features, dtype=np.float32)


def cluster(features: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    if clusters <= 1:
        return np.zeros(len(features), dtype=np.int64)
    kmeans = faiss.Kmeans(features.shape[1], clusters, niter=20, seed=seed, verbose=False,
                          min_points_per_centroid=1)
    kmeans.train(features)
    return kmeans.index.search(features, 1)[1].ravel()


def select(table: pa.Table, embeddings: np.ndarray | None, budget: int, seed: int = 0) -> dict:
    """Indices of the chosen rows (in pick order) plus the per-row measures."""
    measures = informativeness(table)
    clusters = min(budget, max(1, table.num_rows // 4))
    assignment = cluster(diversity_features(table, embeddings), clusters, seed)
    order = np.argsort(-measures["informativeness"], kind="stable")
    queues = {c: [i for i in order if assignment[i] == c] for c in np.unique(assignment)}
    # Clusters take turns, the cluster holding the most informative image first.
    turn = sorted(queues, key=lambda c: -measures["informativeness"][queues[c][0]])
    chosen: list[int] = []
    while len(chosen) < min(budget, table.num_rows):
        for c in turn:
            if queues[c] and len(chosen) < budget:
                chosen.append(queues[c].pop(0))
    return {"chosen": chosen, "cluster": assignment, **measures}


def already_labeled(out: Path) -> set[str]:
    path = Path(out) / run_folder.HUMAN_FILE
    return (set(run_folder.read_parquet(path, columns=["image_id"]).column(0).to_pylist())
            if path.exists() else set())


def build_queue(out: Path, budget: int, review_dir: Path | None = None, seed: int = 0) -> dict:
    out = Path(out)
    table = run_folder.read_labels(out)
    embeddings = run_folder.read_embeddings(out)
    pending = np.array([i not in already_labeled(out) for i in table.column("image_id").to_pylist()])
    if not pending.any():
        raise DistillError(f"every image in {out} already has a human label")
    table = table.filter(pending)
    embeddings = embeddings[pending] if embeddings is not None else None
    picked = select(table, embeddings, budget, seed)
    rows = table.to_pylist()
    teacher_fields = [c for c in table.column_names if c.startswith("score_")]
    queue = []
    for i in picked["chosen"]:
        row = {f: rows[i].get(f) for f in ("image_id", "path", "quality", "keep_prob", "confidence")}
        row.update({m: float(picked[m][i]) for m in ("uncertainty", "disagreement", "informativeness")},
                   cluster=int(picked["cluster"][i]), label=rows[i]["label"],
                   **{f: rows[i][f] for f in teacher_fields})
        queue.append(row)
    review_dir = Path(review_dir or out / "review")
    review_dir.mkdir(parents=True, exist_ok=True)
    refuse_filled_queue(review_dir / "queue.csv", out)
    with (review_dir / "queue.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=QUEUE_FIELDS + teacher_fields + ["human_label", "human_score"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(queue)
    write_sheet(review_dir, f"Review queue: {len(queue)} images", [("most informative first", queue)],
                ["quality", "keep_prob", "confidence", "informativeness", "cluster", *teacher_fields],
                intro="Fill human_label (keep/trash) or human_score (1-10) in queue.csv, then run "
                      "`distill import-labels queue.csv --labels OUT`.")
    return {"queued": len(queue), "clusters": len({int(picked["cluster"][i]) for i in picked["chosen"]}),
            "pool": table.num_rows, "queue": str(review_dir / "queue.csv"),
            "sheet": str(review_dir / "index.html")}


def refuse_filled_queue(queue: Path, out: Path) -> None:
    """A queue a person has begun to fill in is their work: a new queue never replaces it."""
    if not queue.exists():
        return
    text = read_input(queue, "review queue").decode("utf-8", "replace")
    filled = [row for row in csv.DictReader(io.StringIO(text, newline=""))
              if (row.get("human_label") or "").strip() or (row.get("human_score") or "").strip()]
    if filled:
        raise DistillError(f"{queue} holds {len(filled)} human labels: import them first "
                           f"(`distill import-labels {queue} --labels {out}`), or move it away")


def import_labels(out: Path, labels_csv: Path, keep_threshold: float = 6.0) -> dict:
    """Merge human keep/trash or 1–10 labels into OUT/human.parquet (source = human)."""
    out = Path(out)
    table = run_folder.read_labels(out)
    by_id = {r["image_id"]: r for r in table.select(["image_id", "path", "sha1", "width", "height"]).to_pylist()}
    by_path = {r["path"]: r for r in by_id.values()}
    text = read_input(labels_csv, "labels CSV").decode("utf-8", "replace")
    entries = list(csv.DictReader(io.StringIO(text, newline="")))
    human, skipped = {}, []
    for line, entry in enumerate(entries, start=2):
        base = by_id.get(entry.get("image_id", "")) or by_path.get(entry.get("path", ""))
        score_text = (entry.get("human_score") or entry.get("score") or "").strip()
        label_text = (entry.get("human_label") or "").strip().lower()
        if base is None:
            skipped.append(f"line {line}: no labeled image with that image_id/path")
            continue
        if not score_text and not label_text:
            continue  # a queue row nobody filled in yet
        if label_text and label_text not in ("keep", "trash"):
            raise DistillError(f"{labels_csv}:{line}: human_label must be keep or trash, got {label_text!r}")
        score = float(score_text) if score_text else float("nan")
        if score_text and not 1 <= score <= 10:
            raise DistillError(f"{labels_csv}:{line}: human_score must be within 1-10, got {score}")
        keep = label_text == "keep" if label_text else score >= keep_threshold
        tier = (2 if keep else 0) if np.isnan(score) else tier_of(score)
        human[base["image_id"]] = {**base, "source": "human", "quality": score,
                                   "keep_prob": 1.0 if keep else 0.0,
                                   "label": "keep" if keep else "trash", "tier": tier, "confidence": 1.0}
    imported = len(human)
    path = out / run_folder.HUMAN_FILE
    if path.exists():  # earlier imports stay unless relabeled now
        for row in run_folder.read_parquet(path).to_pylist():
            human.setdefault(row["image_id"], row)
    if human:
        run_folder.write_table(path, pa.Table.from_pylist(list(human.values())))
    return {"imported": imported, "human_total": len(human), "skipped": skipped, "file": str(path)}
