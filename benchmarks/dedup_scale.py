"""Scale of `distill dedup`: a million clustered 512-d "CLIP-like" vectors on this machine.

Synthetic data: `--centres` random unit centres in 512-d, each vector a centre plus Gaussian
noise (cosine ≈ 0.64 between two vectors of one centre, ≈ 0 across centres), L2-normalised and
stored float16 as `distill label` stores CLIP embeddings; `--planted` of the rows are near
copies of another row (cosine 0.97-0.995, a few exactly equal). The run is written as label
shards and `run_dedup` runs on it in a fresh process, which reports its wall time and peak
memory (ru_maxrss); then recall@1 of the approximate index against exact search is measured
on `--queries` rows, and the planted pairs against the clusters dedup found.

    python benchmarks/dedup_scale.py                      # 1,000,000 vectors, index auto
    python benchmarks/dedup_scale.py --n 100000 --index hnsw
    python benchmarks/dedup_scale.py --crossover          # exact vs approximate by size
    python benchmarks/dedup_scale.py --compare            # single vs sharded plan, same data
    python benchmarks/dedup_scale.py --coverage           # planted pairs sharing a cell, top-m

--compare runs `run_dedup` twice on one run folder, each in a fresh process: the default
single-machine plan (`--index`) and the sharded plan (`--clusters`, `--assign`, `--workers`);
it reports the pairs over τ found by both, by one only, each plan's wall time and peak memory,
the planted pairs each found, and each plan's recall of the exact pairs among `--queries` rows.

Writes benchmarks/results/dedup_scale.json (or the file --out names).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.similar.sharded import REACH

RESULTS = Path(__file__).parent / "results" / "dedup_scale.json"
DIM = 512
NOISE = 0.75  # |noise| / |centre|: same-centre cosine ≈ 1 / (1 + NOISE²) ≈ 0.64
SHARD_ROWS = 65536
CHUNK = 65536


def synthetic_vectors(n: int, centres: int, planted: float, dim: int = DIM, seed: int = 0,
                      noise: float = NOISE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n x dim float16 unit vectors, planted copy rows, the rows they copy)."""
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal((centres, dim), dtype=np.float32)
    centre /= np.linalg.norm(centre, axis=1, keepdims=True)
    vectors = np.empty((n, dim), dtype=np.float16)
    for start in range(0, n, CHUNK):
        rows = min(CHUNK, n - start)
        block = centre[rng.integers(0, centres, rows)]
        block += rng.standard_normal((rows, dim), dtype=np.float32) * (noise / np.sqrt(dim))
        vectors[start:start + rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    copies = rng.choice(n, int(n * planted), replace=False)
    originals = rng.choice(np.setdiff1d(np.arange(n), copies), len(copies), replace=False)
    # Edit strength: cosine 1/sqrt(1 + s²) from 0.995 (s = 0.1) to 0.97 (s = 0.25); 5 % exact.
    strength = np.where(rng.random(len(copies)) < 0.05, 0.0, rng.uniform(0.1, 0.25, len(copies)))
    for start in range(0, len(copies), CHUNK):
        part = slice(start, start + CHUNK)
        block = vectors[originals[part]].astype(np.float32)
        noise = rng.standard_normal(block.shape, dtype=np.float32) / np.sqrt(dim)
        block += noise * strength[part, None]
        vectors[copies[part]] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return vectors, copies, originals


def write_run(out: Path, vectors: np.ndarray) -> None:
    """Label shards for the vectors: unique sha1s (no exact file duplicates), random quality."""
    import pyarrow as pa

    from distill import run_folder

    rng = np.random.default_rng(1)
    errors = run_folder.ERROR_SCHEMA.empty_table()
    for index, start in enumerate(range(0, len(vectors), SHARD_ROWS)):
        rows = range(start, min(start + SHARD_ROWS, len(vectors)))
        quality = rng.uniform(1, 10, len(rows))
        labels = pa.table({
            "image_id": [f"img{r:08d}" for r in rows],
            "source": ["synthetic"] * len(rows),
            "path": [""] * len(rows),
            "sha1": [hashlib.sha1(str(r).encode()).hexdigest() for r in rows],
            "quality": quality,
        })
        run_folder.write_shard(out, index, labels, errors, vectors[start:start + len(rows)])


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner products of vectors[queries] over all vectors, block by block."""
    import faiss

    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    block_queries = vectors[queries].astype(np.float32)
    for start in range(0, len(vectors), 131072):
        block = vectors[start:start + 131072].astype(np.float32)
        sims, ids = faiss.knn(block_queries, block, k, metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(sims, ids + start)
    heap.finalize()
    return heap.D, heap.I


def _nearest_other(sims: np.ndarray, ids: np.ndarray, queries: np.ndarray):
    """Top-1 neighbour that is not the query itself (columns 0 and 1 of a k ≥ 2 search)."""
    self_first = ids[:, 0] == queries
    return (np.where(self_first, ids[:, 1], ids[:, 0]),
            np.where(self_first, sims[:, 1], sims[:, 0]))


def worker(run: Path, args) -> dict:
    """In a fresh process: time run_dedup, read its peak memory, then measure recall."""
    import faiss
    import pyarrow.parquet as pq

    from distill import run_folder
    from distill.deduplication import run_dedup
    from distill.run_folder import DEDUP_FILE
    from distill.similar import IndexSpec, build_index, descriptors

    spec = IndexSpec(kind=args.index, nlist=args.nlist, nprobe=args.nprobe, k=args.k,
                     ef_search=args.ef_search, hnsw_m=args.hnsw_m)
    started = time.perf_counter()
    summary = run_dedup(run, threshold=args.threshold, index=spec, progress=False)
    wall = time.perf_counter() - started
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB
    result = {"run_dedup_wall_s": round(wall, 1), "peak_rss_gb": round(peak_gb, 3),
              "summary": summary, "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads()}

    # Recall@1 of the same index (rebuilt the same way: seeded sample, faiss's seeded k-means)
    # against exact search, on a sample of rows as queries.
    vectors = run_folder.read_embeddings(run)
    vectors[:] = descriptors.normalise_rows(vectors)
    queries = np.sort(np.random.default_rng(2).choice(len(vectors), args.queries, replace=False))
    started = time.perf_counter()
    exact_sims, exact_ids = exact_top(vectors, queries, 32)
    result["exact_search_s"] = round(time.perf_counter() - started, 1)
    handle = build_index(vectors, np.arange(len(vectors)), spec, progress=False)
    approx_sims, approx_ids = handle.index.search(vectors[queries].astype(np.float32), 2)
    true_id, true_sim = _nearest_other(exact_sims, exact_ids, queries)
    found_id, found_sim = _nearest_other(approx_sims, approx_ids, queries)
    # A different id at the same similarity (an exact copy) is a tie, not a miss.
    hit = (found_id == true_id) | (found_sim >= true_sim - 1e-6)
    result["recall_at_1"] = round(float(hit.mean()), 4)

    # Pairs over τ among the queries' exact neighbours: did dedup put them in one cluster?
    cluster = pq.read_table(run / DEDUP_FILE, columns=["cluster_id"]).column(0).to_numpy()
    tau = summary["threshold"]
    rows, cols = np.nonzero((exact_sims >= tau) & (exact_ids != queries[:, None]))
    pair_a, pair_b = queries[rows], exact_ids[rows, cols]
    result["pairs_over_tau_among_queries"] = len(pair_a)
    result["pair_recall_vs_exact"] = round(float(np.mean(cluster[pair_a] == cluster[pair_b])), 4) \
        if len(pair_a) else None
    return result


def plan_worker(run: Path, args) -> dict:
    """In a fresh process: run_dedup with one plan; its pairs are kept as pairs-<plan>.parquet."""
    import shutil

    from distill.deduplication import run_dedup
    from distill.run_folder import DEDUP_PAIRS
    from distill.similar import IndexSpec, ShardSpec

    spec = IndexSpec(kind=args.index, nlist=args.nlist, nprobe=args.nprobe, k=args.k,
                     ef_search=args.ef_search, hnsw_m=args.hnsw_m)
    plan = ShardSpec(clusters=args.clusters, reach=args.reach, workers=args.workers) \
        if args.plan == "sharded" else "single"
    started = time.perf_counter()
    summary = run_dedup(run, threshold=args.threshold, index=spec, plan=plan, progress=False)
    wall = time.perf_counter() - started
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB
    # The pool's children (workers > 1) are measured apart from the driver.
    children_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
    shutil.copy(run / DEDUP_PAIRS, run / f"pairs-{args.plan}.parquet")
    return {"run_dedup_wall_s": round(wall, 1), "peak_rss_gb": round(peak_gb, 3),
            "largest_child_peak_rss_gb": round(children_gb, 3), "index": summary["index"],
            "timings_s": summary["timings_s"], "near_duplicates": summary["near_duplicates"],
            "clusters": summary["clusters"]}


def _pair_keys(path: Path, n: int) -> np.ndarray:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["image_id", "other_id", "reason"])
    near = np.array(table.column("reason").to_pylist()) == "near"
    row = [np.array([int(i[3:]) for i in table.column(c).to_pylist()], dtype=np.int64)[near]
           for c in ("image_id", "other_id")]
    return np.unique(np.minimum(*row) * n + np.maximum(*row))


def compare_plans(run: Path, args, copies: np.ndarray, originals: np.ndarray) -> dict:
    """Both plans on one run folder, then their pairs side by side and against exact search."""
    from distill import run_folder
    from distill.similar import descriptors, pair_similarity

    plans = {}
    for plan in ("single", "sharded"):
        command = [sys.executable, __file__, f"--worker={run}", f"--plan={plan}", "--compare"]
        child = subprocess.run([*command, *_forwarded(args)], capture_output=True, text=True,
                               check=False)
        if child.returncode:
            raise SystemExit(f"{plan} worker failed:\n{child.stderr[-4000:]}")
        plans[plan] = json.loads(child.stdout.strip().splitlines()[-1])
        print(plan, json.dumps(plans[plan]), flush=True)
    n = args.n
    single, sharded = (_pair_keys(run / f"pairs-{p}.parquet", n) for p in ("single", "sharded"))
    only_single, only_sharded = np.setdiff1d(single, sharded), np.setdiff1d(sharded, single)
    vectors = run_folder.read_embeddings(run)
    vectors[:] = descriptors.normalise_rows(vectors)

    def sims(keys):
        return pair_similarity(vectors, keys // n, keys % n).round(4).tolist()[:20]

    planted = np.unique(np.minimum(copies, originals) * n + np.maximum(copies, originals))
    # Exact pairs over τ among the query rows' 32 nearest: what each plan should contain.
    queries = np.sort(np.random.default_rng(2).choice(n, args.queries, replace=False))
    started = time.perf_counter()
    exact_sims, exact_ids = exact_top(vectors, queries, 32)
    rows, cols = np.nonzero((exact_sims >= args.threshold) & (exact_ids != queries[:, None]))
    a, b = queries[rows], exact_ids[rows, cols]
    exact = np.unique(np.minimum(a, b) * n + np.maximum(a, b))
    return {
        "plans": plans,
        "pairs": {"single": len(single), "sharded": len(sharded),
                  "both": len(np.intersect1d(single, sharded)),
                  "only_single": len(only_single), "only_sharded": len(only_sharded),
                  "identical": bool(np.array_equal(single, sharded)),
                  "only_single_similarity_examples": sims(only_single),
                  "only_sharded_similarity_examples": sims(only_sharded)},
        "planted_pairs_found": {"planted": len(planted),
                                "single": int(np.isin(planted, single).sum()),
                                "sharded": int(np.isin(planted, sharded).sum())},
        "exact_check": {"queries": args.queries, "exact_pairs_over_tau": len(exact),
                        "single": int(np.isin(exact, single).sum()),
                        "sharded": int(np.isin(exact, sharded).sum()),
                        "exact_search_s": round(time.perf_counter() - started, 1)},
        "wall_ratio_sharded_over_single": round(plans["sharded"]["run_dedup_wall_s"]
                                                / plans["single"]["run_dedup_wall_s"], 3),
    }


def cell_coverage(args) -> dict:
    """Which planted pairs share a cell under each routing rule, with the centroids the sharded
    plan trains on these vectors (same sample, same seed). In-cell search is exact, so a planted
    pair sharing a cell is a pair the plan finds: this prices --reach without running the
    searches. `search_work` is Σ cell size² / 2, the pairs the searches score."""
    from distill.similar import descriptors
    from distill.similar.search import CANDIDATE_MARGIN
    from distill.similar.sharded import (
        default_clusters,
        exact_margin,
        route_chunk,
        train_centroids,
    )

    vectors, copies, originals = synthetic_vectors(args.n, args.centres, args.planted, args.dim,
                                                   noise=args.noise)
    vectors[:] = descriptors.normalise_rows(vectors)  # as run_dedup does to stored embeddings
    cells = args.clusters or default_clusters(args.n)
    started = time.perf_counter()
    centroids = train_centroids(vectors, np.arange(args.n), cells)
    row = {"clusters": cells, "pairs": len(copies), "train_s": round(time.perf_counter() - started, 1)}
    full = exact_margin(args.threshold - CANDIDATE_MARGIN)
    for reach in (0.0, 0.015, 0.03, 0.045, 0.06):
        started = time.perf_counter()
        members = [set() for _ in range(args.n)]
        sizes = np.zeros(cells, dtype=np.int64)
        for start in range(0, args.n, CHUNK):
            positions, joined, _, _ = route_chunk(vectors[start:start + CHUNK], centroids,
                                                  reach * full)
            sizes += np.bincount(joined, minlength=cells)
            for position, cell in zip((positions + start).tolist(), joined.tolist()):
                members[position].add(cell)
        missed = sum(not members[c] & members[o] for c, o in zip(copies, originals))
        row[f"reach{reach}"] = {"margin": round(reach * full, 4), "missed": missed,
                                "cells_per_vector": round(float(sizes.sum()) / args.n, 3),
                                "search_work": float(np.sum(sizes.astype(float) ** 2) / 2),
                                "route_s": round(time.perf_counter() - started, 1)}
        print(reach, row[f"reach{reach}"], flush=True)
    return row


def _forwarded(args) -> list[str]:
    names = ("index", "nprobe", "k", "hnsw_m", "ef_search", "threshold", "queries", "reach",
             "workers")
    forwarded = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in names]
    return forwarded + [f"--{name}={getattr(args, name)}" for name in ("nlist", "clusters")
                        if getattr(args, name)]


def planted_scores(run: Path, copies: np.ndarray, originals: np.ndarray) -> dict:
    """Planted near-copy pairs vs the pairs dedup's clusters imply."""
    import pyarrow.parquet as pq

    from distill.run_folder import DEDUP_FILE

    cluster = pq.read_table(run / DEDUP_FILE, columns=["cluster_id"]).column(0).to_numpy()
    sizes = np.bincount(cluster)
    predicted = int(np.sum(sizes * (sizes - 1) // 2))
    found = int(np.sum(cluster[copies] == cluster[originals]))
    return {"planted_pairs": len(copies), "clustered_pairs": predicted,
            "planted_recall": round(found / len(copies), 4) if len(copies) else None,
            "planted_precision": round(found / predicted, 4) if predicted else None}


def crossover(sizes: list[int], dim: int, threshold: float, nprobe: int,
              noise: float = NOISE) -> list[dict]:
    """All-vs-all near-duplicate search time, exact flat index vs IVF, per collection size."""
    from distill.similar import IndexSpec, near_duplicate_pairs

    rows = []
    for n in sizes:
        vectors, _, _ = synthetic_vectors(n, max(1, n // 50), 0.01, dim=dim, seed=n, noise=noise)
        valid = np.ones(n, dtype=bool)
        row = {"n": n, "dim": dim, "threshold": threshold, "noise": noise,
               "loadavg_before": os.getloadavg()[0]}
        found = {}
        for kind in ("flat", "ivf"):
            started = time.perf_counter()
            a, b, _, info = near_duplicate_pairs(vectors, valid, threshold,
                                                 IndexSpec(kind=kind, nprobe=nprobe),
                                                 progress=False)
            row[f"{kind}_s"] = round(time.perf_counter() - started, 2)
            found[kind] = set(zip(a.tolist(), b.tolist()))
            if kind == "ivf":
                row["ivf_nlist"], row["ivf_nprobe"] = info["nlist"], info["nprobe"]
        row["ivf_pair_recall_vs_flat"] = round(len(found["ivf"] & found["flat"])
                                               / max(1, len(found["flat"])), 4)
        row["faster"] = "flat" if row["flat_s"] <= row["ivf_s"] else "ivf"
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _machine() -> dict:
    import faiss

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "faiss": faiss.__version__,
            "faiss_threads": faiss.omp_get_max_threads(), "faiss_gpus": faiss.get_num_gpus(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)}


def _save(out: Path, key: str, name: str, payload) -> None:
    """Merge into the results file: the scale runs and the crossover are measured separately."""
    report = json.loads(out.read_text()) if out.exists() else {"benchmark": "dedup_scale"}
    report.setdefault(key, {})[name] = payload
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out} [{key}][{name}]")


def main():
    from distill.deduplication import DEFAULT_THRESHOLD

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--centres", type=int, default=20_000)
    parser.add_argument("--planted", type=float, default=0.01, help="fraction of near copies")
    parser.add_argument("--index", default="auto", choices=["auto", "flat", "ivf", "hnsw"])
    parser.add_argument("--nlist", type=int, default=None)
    parser.add_argument("--nprobe", type=int, default=8)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-search", type=int, default=128)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD["clip"])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--crossover", action="store_true", help="flat vs IVF time by size")
    parser.add_argument("--sizes", default="2000,5000,10000,20000,50000,100000")
    parser.add_argument("--dim", type=int, default=DIM)
    parser.add_argument("--noise", type=float, default=NOISE,
                        help="noise/centre norm ratio: same-centre cosine ≈ 1/(1+noise²)")
    parser.add_argument("--compare", action="store_true", help="single vs sharded plan")
    parser.add_argument("--coverage", action="store_true",
                        help="planted pairs sharing a cell at several --reach values")
    parser.add_argument("--plan", default="single", choices=["single", "sharded"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--clusters", type=int, default=None, help="sharded plan: k-means cells")
    parser.add_argument("--reach", type=float, default=REACH,
                        help="sharded plan: margin past the best cell, a fraction of the exact one")
    parser.add_argument("--workers", type=int, default=1, help="sharded plan: local processes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        work = plan_worker if args.compare or args.plan != "single" else worker
        print(json.dumps(work(args.worker, args), default=float))
        return
    if args.crossover:
        rows = crossover([int(s) for s in args.sizes.split(",")], args.dim, args.threshold,
                         args.nprobe, args.noise)
        faster = [row["n"] for row in rows if row["faster"] == "ivf"]
        _save(args.out, "crossover", f"dim{args.dim}", {
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": _machine(),
            "rows": rows, "smallest_n_where_ivf_is_faster": min(faster) if faster else None})
        return

    if args.coverage:
        load_before = os.getloadavg()
        row = cell_coverage(args)
        row.update(loadavg_before=load_before, loadavg_after=os.getloadavg())
        print(json.dumps(row), flush=True)
        _save(args.out, "cell_coverage", f"n{args.n}-c{row['clusters']}", {
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": _machine(),
            "data": {"n": args.n, "dim": args.dim, "centres": args.centres, "noise": args.noise,
                     "planted_fraction": args.planted}, **row})
        return

    load_before = os.getloadavg()
    started = time.perf_counter()
    vectors, copies, originals = synthetic_vectors(args.n, args.centres, args.planted, args.dim,
                                                   noise=args.noise)
    generate_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="dedup-scale-") as tmp:
        run = Path(tmp)
        write_run(run, vectors)
        del vectors
        if args.compare:
            result = compare_plans(run, args, copies, originals)
        else:
            child = subprocess.run([sys.executable, __file__, f"--worker={run}",
                                    *_forwarded(args)], capture_output=True, text=True,
                                   check=False)
            if child.returncode:
                raise SystemExit(f"worker failed:\n{child.stderr[-4000:]}")
            result = json.loads(child.stdout.strip().splitlines()[-1])
            result.update(planted_scores(run, copies, originals))
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": _machine(),
              "data": {"n": args.n, "dim": args.dim, "centres": args.centres, "noise": args.noise,
                       "planted_fraction": args.planted, "generate_s": round(generate_s, 1)},
              "queries": args.queries, "loadavg_before": load_before,
              "loadavg_after": os.getloadavg(), **result}
    print(json.dumps({k: v for k, v in result.items() if k != "summary"}, indent=2))
    if args.compare:
        result["sharded_plan"] = {"clusters": args.clusters, "reach": args.reach,
                                  "workers": args.workers}
        _save(args.out, "plans", f"n{args.n}", result)
    else:
        _save(args.out, "scale", f"n{args.n}-{args.index}", result)


if __name__ == "__main__":
    main()
