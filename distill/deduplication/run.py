"""Dedup stage: exact and near-duplicate images of a labeling run, and benchmark leakage.

    run_dedup(OUT)  →  OUT/dedup.parquet (one row per labeled image) + OUT/dedup_summary.json

1. Exact duplicates: identical sha1 of the file bytes.
2. Near duplicates: cosine similarity ≥ τ between descriptors: the run's stored CLIP embeddings,
   else the offline descriptor (`distill.similar`), which is also compared mirrored so that
   horizontal flips match. Neighbours come from a FAISS k-NN search in batches (never an N×N
   matrix): exact `IndexFlatIP` up to `FLAT_LIMIT` vectors, IVF above; each candidate pair is
   then re-scored exactly from the vectors, so every index type applies the same τ.
3. Pairs are joined into clusters (connected components, i.e. union-find); each cluster keeps
   its highest-`quality` member, the others get is_duplicate, dup_of and the similarity to it.
   Clusters chain: a member may be under τ from the kept image but over τ from another member.
4. Leakage guard (`against`): a cluster with any member within τ of a benchmark image (or with
   the same sha1 as a benchmark file) is dropped whole, since its members are near copies of
   each other; dup_of is then "bench:<name>" and similarity is the member's own to that image.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from distill import run_folder
from distill.deduplication.vectors import load_bench, run_descriptors
from distill.errors import ConfigError, DistillError
from distill.similar import (
    IndexSpec,
    ShardSpec,
    bench_matches,
    clusters,
    exact_duplicate_pairs,
    keepers,
    near_duplicate_pairs,
    pair_similarity,
    sharded_pairs,
)

# Offline: measured on benchmarks/dedup_accuracy.py (the highest τ whose duplicate-pair recall
# on that set is ≥ 0.95). CLIP: common practice for CLIP image embeddings (0.9-0.98 are used);
# it cannot be measured here without real CLIP weights: calibrate on your own data.
DEFAULT_THRESHOLD = {"offline": 0.65, "clip": 0.95}


def _load_run(out: Path) -> pa.Table:
    run_folder.require_complete(out)  # dedup over part of a pool would miss duplicates
    files = run_folder.label_files(out)
    if not files:
        raise DistillError(f"no label shards under {out / run_folder.SHARD_DIR}; run `distill label` first")
    present = set(run_folder.read_schema(files[0]).names)
    if "image_id" not in present:
        raise DistillError(f"{files[0]} has no image_id column: not a labeling run")
    wanted = [c for c in ("image_id", "sha1", "quality", "path") if c in present]
    return run_folder.read_labels(out, columns=wanted)


def _column(table: pa.Table, name: str, default) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [default] * len(table)


def run_dedup(labels_dir, against=None, threshold: float | None = None, descriptor: str = "auto",
              index: str | IndexSpec = "auto", *, plan: str | ShardSpec = "single",
              progress: bool = True) -> dict:
    """Dedup a labeling run in place: writes dedup.parquet, dedup_pairs.parquet and
    dedup_summary.json, returns the summary. `index` is a kind (auto/flat/ivf/hnsw) or an
    IndexSpec with search parameters. `plan` "single" searches one index in this process;
    "sharded" or a ShardSpec partitions by k-means and searches each cell exactly in tasks
    (local processes or Ray), the plan that can outgrow one machine."""
    out = Path(labels_dir)
    spec = index if isinstance(index, IndexSpec) else IndexSpec(kind=index)
    if plan not in ("single", "sharded") and not isinstance(plan, ShardSpec):
        raise ConfigError(f"unknown plan {plan!r}; use single or sharded")
    shards = ShardSpec() if plan == "sharded" else plan if isinstance(plan, ShardSpec) else None
    timings, clock = {}, time.perf_counter()

    def lap(name):
        nonlocal clock
        timings[name] = round(time.perf_counter() - clock, 3)
        clock = time.perf_counter()

    table = _load_run(out)
    n = table.num_rows
    ids, sha1 = table.column("image_id").to_pylist(), _column(table, "sha1", None)
    quality = np.array(_column(table, "quality", np.nan), dtype=np.float64)
    lap("load_s")
    vectors, kind, detail, signs, no_vector = run_descriptors(out, table, descriptor, progress)
    tau = DEFAULT_THRESHOLD[kind] if threshold is None else float(threshold)
    if not 0.0 < tau <= 1.0:
        raise ConfigError(f"--threshold {tau} is outside (0, 1]")
    valid = np.ones(n, dtype=bool)
    valid[list(no_vector)] = False
    lap("descriptors_s")

    exact_a, exact_b = exact_duplicate_pairs(sha1)
    if shards is None:
        near_a, near_b, near_sim, index_info = near_duplicate_pairs(vectors, valid, tau, spec,
                                                                    signs, progress)
    else:
        near_a, near_b, near_sim, index_info = sharded_pairs(vectors, valid, tau, shards, signs,
                                                             progress)
    lap("near_duplicate_search_s")
    labels = clusters(n, np.r_[exact_a, near_a], np.r_[exact_b, near_b])
    reason, dup_of, similarity = _mark_duplicates(labels, quality, ids, sha1, vectors, valid,
                                                  signs)
    sizes = np.bincount(labels) if n else np.zeros(0, dtype=np.int64)
    lap("cluster_s")

    guard = _leakage_guard(against, vectors, valid, sha1, labels, spec, signs, tau, kind,
                           progress) if against is not None else None
    if guard is not None:
        dropped, names, sims = guard["rows"], guard.pop("names"), guard.pop("similarity")
        reason[dropped], dup_of[dropped], similarity[dropped] = "bench", names, sims
        lap("leakage_guard_s")

    is_duplicate = np.array([r is not None for r in reason], dtype=bool)
    result = _dedup_table(ids, labels, is_duplicate, dup_of, similarity, reason)
    # The pairs first: dedup.parquet, which training reads, is written only after them.
    run_folder.write_table(out / run_folder.DEDUP_PAIRS,
                           _pairs_table(ids, exact_a, exact_b, near_a, near_b, near_sim))
    run_folder.write_table(out / run_folder.DEDUP_FILE, result)
    lap("write_s")
    summary = {
        "labels_dir": str(out), "images": n,
        "exact_duplicates": int(np.sum(reason == "exact")),
        "near_duplicates": int(np.sum(reason == "near")),
        "clusters": int(np.sum(sizes > 1)), "largest_cluster": int(sizes.max()) if n else 0,
        "dropped_by_leakage_guard": int(np.sum(reason == "bench")),
        "kept": int(n - is_duplicate.sum()), "dropped": int(is_duplicate.sum()),
        "threshold": tau, "threshold_source": "given" if threshold is not None else "default",
        "descriptor": kind, "descriptor_detail": detail,
        "no_descriptor": len(no_vector),
        "no_descriptor_examples": {ids[r]: why for r, why in list(no_vector.items())[:5]},
        "keep_rule": "highest quality" if "quality" in table.column_names else "first row",
        "pairs": {"exact": len(exact_a), "near": len(near_a)},
        "index": index_info,
        "leakage_guard": guard and {k: v for k, v in guard.items() if k != "rows"},
        "timings_s": {**timings, "total_s": round(sum(timings.values()), 3)},
    }
    run_folder.write_json(out / run_folder.DEDUP_SUMMARY, summary)
    return summary


def _mark_duplicates(labels, quality, ids, sha1, vectors, valid, signs):
    """Each cluster keeps its best member; the others get a reason (exact | near), the id
    they duplicate and their similarity to it."""
    n = len(labels)
    keep = keepers(labels, quality)
    members = np.flatnonzero(keep != np.arange(n))
    exact = np.array([bool(sha1[m]) and sha1[m] == sha1[keep[m]] for m in members], dtype=bool)
    similarity = np.full(n, np.nan, dtype=np.float32)
    similarity[members[exact]] = 1.0
    scored = members[~exact & valid[members] & valid[keep[members]]]
    similarity[scored] = pair_similarity(vectors, scored, keep[scored], signs)
    reason = np.full(n, None, dtype=object)
    reason[members] = np.where(exact, "exact", "near")
    dup_of = np.full(n, None, dtype=object)
    dup_of[members] = [ids[k] for k in keep[members]]
    return reason, dup_of, similarity


def _dedup_table(ids, labels, is_duplicate, dup_of, similarity, reason) -> pa.Table:
    return pa.table({
        "image_id": pa.array(ids, pa.string()),
        "cluster_id": pa.array(labels, pa.int64()),
        "is_duplicate": pa.array(is_duplicate, pa.bool_()),
        "dup_of": pa.array(dup_of.tolist(), pa.string()),
        "similarity": pa.array(similarity, pa.float32(), mask=~is_duplicate),
        "reason": pa.array(reason.tolist(), pa.string()),
    })


def _pairs_table(ids, exact_a, exact_b, near_a, near_b, near_sim) -> pa.Table:
    """The graph the clusters come from: every pair over τ (near) or with one sha1 (exact)."""
    a, b = np.r_[exact_a, near_a].astype(np.int64), np.r_[exact_b, near_b].astype(np.int64)
    return pa.table({
        "image_id": pa.array([ids[r] for r in a], pa.string()),
        "other_id": pa.array([ids[r] for r in b], pa.string()),
        "similarity": pa.array(np.r_[np.ones(len(exact_a)), near_sim], pa.float32()),
        "reason": pa.array(["exact"] * len(exact_a) + ["near"] * len(near_a), pa.string()),
    })


def _leakage_guard(against, vectors, valid, sha1, labels, spec, signs, tau, kind,
                   progress) -> dict:
    """Rows to drop for being in a cluster that touches the benchmark, with names and sims."""
    names, bench, bench_sha1 = load_bench(against, kind, vectors.shape[1], progress=progress)
    best, best_sim = bench_matches(vectors, valid, bench, spec, signs, progress)
    by_hash = {h: i for i, h in enumerate(bench_sha1)}
    same_file = np.array([by_hash.get(h, -1) if h else -1 for h in sha1], dtype=np.int64)
    best = np.where(same_file >= 0, same_file, best)
    best_sim = np.where(same_file >= 0, 1.0, best_sim).astype(np.float32)
    direct = np.flatnonzero(best_sim >= tau)
    # Each touched cluster is named after its strongest benchmark match.
    order = direct[np.argsort(-best_sim[direct], kind="stable")]
    match_of = {}
    for row in order:
        match_of.setdefault(int(labels[row]), int(best[row]))
    rows = np.flatnonzero(np.isin(labels, list(match_of)))
    target = np.array([match_of[int(labels[r])] for r in rows], dtype=np.int64)
    # A member's own best match is already scored; the others are scored against the target.
    sims = np.where(best[rows] == target, best_sim[rows], np.nan).astype(np.float32)
    todo = np.isnan(sims) & valid[rows] & np.any(bench[target] != 0, axis=1)
    sims[todo] = pair_similarity(vectors, rows[todo], target[todo], signs, other=bench)
    return {"against": str(against), "bench_images": len(names), "direct_matches": len(direct),
            "clusters_dropped": len(match_of), "rows": rows,
            "names": [f"bench:{names[t]}" for t in target], "similarity": sims}


def dedup(labels_dir, *, against=None, threshold: float | None = None, descriptor: str = "auto",
          index: str = "auto", gpu: str = "auto", plan: str = "single", clusters: int | None = None,
          reach: float | None = None, workers: int = 1, engine: str = "local",
          address: str | None = None, progress: bool = True, **search) -> dict:
    """`distill dedup`: `search` holds the index's parameters (flat_limit, nlist, nprobe,
    hnsw_m, ef_search, k); unset ones keep IndexSpec's defaults. clusters, reach, workers,
    engine and address shape the sharded plan."""
    known = {field.name for field in dataclasses.fields(IndexSpec)} - {"kind", "gpu"}
    unknown = sorted(search.keys() - known)
    if unknown:
        raise ConfigError(f"dedup: unknown option {unknown[0]!r}; the index's are "
                          f"{', '.join(sorted(known))}")
    spec = IndexSpec(kind=index, gpu=gpu, **{k: v for k, v in search.items() if v is not None})
    shards = ShardSpec(clusters=clusters, workers=workers, engine=engine, address=address,
                       **({"reach": reach} if reach is not None else {})
                       ) if plan == "sharded" else plan
    return run_dedup(labels_dir, against=against, threshold=threshold, descriptor=descriptor,
                     index=spec, plan=shards, progress=progress)
