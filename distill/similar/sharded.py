"""Near-duplicate pairs by a plan that can leave one machine: partition, then search each part.

    centroids = train_centroids(vectors, rows, C)       # spherical k-means on a sample (driver)
    assign_chunk(chunk, centroids, top=2)                # task: each vector's top-2 centroids
    pairs_in_block(block, bounds, floor)                 # task: exact all-pairs inside clusters
    union on the driver: unique pairs, exact re-score, τ  (then `clusters` joins them)

The tasks are pure functions of the arrays they are given, so a local process pool or Ray
tasks (`engine="ray"`, where ray is installed) run them unchanged. Inside a cluster the search
is exact (IndexFlatIP range search: no k, every pair over the floor), and every candidate is
re-scored from the vectors by `pair_similarity`, as the single-machine plan does, so both
plans apply τ with the same arithmetic.

What it can miss: a pair is seen only if its two vectors share one of their top-`assign`
centroids. Two vectors over τ are close, so they nearly always share their first centroid;
a pair lying across a boundary between cells, each vector's second choice not being the
other's cell, is lost. benchmarks/dedup_scale.py --compare counts such pairs at 1 M vectors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise

import faiss
import numpy as np

from distill.errors import ConfigError, DistillError
from distill.similar.search import CANDIDATE_MARGIN, TRAIN_POINTS_PER_LIST, rescore_candidates

ASSIGN_CHUNK = 65536  # vectors per assignment task
TASK_ENTRIES = 65536  # cluster members per search task (small clusters share a task)
KMEANS_ITERATIONS = 10  # the centroids only route vectors: balance, not accuracy, needs more


@dataclass
class ShardSpec:
    """The sharded plan: how many k-means cells, how many cells each vector joins, who runs
    the tasks (`workers` local processes, or Ray tasks with `engine="ray"`)."""

    clusters: int | None = None  # default: about 2·sqrt(N), a power of two
    assign: int = 2  # cells per vector (top-`assign` centroids)
    workers: int = 1  # local processes; 1 runs the tasks in this process
    engine: str = "local"  # local | ray
    address: str | None = None  # ray.init address when engine is ray and ray is not started
    seed: int = 0

    def __post_init__(self):
        if self.engine not in ("local", "ray"):
            raise ConfigError(f"unknown engine {self.engine!r}; use local or ray")
        if (self.clusters is not None and self.clusters < 1) or self.assign < 1 \
                or self.workers < 1:
            raise ConfigError("clusters, assign and workers must be positive")


def default_clusters(n: int) -> int:
    """Balances the two costs: assignment grows with N·C, the searches with (assign·N)²/C."""
    wanted = 1 << round(np.log2(max(1.0, 2 * np.sqrt(n))))
    return max(1, min(wanted, n // TRAIN_POINTS_PER_LIST))


def train_centroids(vectors: np.ndarray, rows: np.ndarray, clusters: int,
                    seed: int = 0) -> np.ndarray:
    """Spherical k-means on a seeded sample of vectors[rows] (TRAIN_POINTS_PER_LIST per cell)."""
    dim = vectors.shape[1]
    sample = np.random.default_rng(seed).permutation(len(rows))[:TRAIN_POINTS_PER_LIST * clusters]
    points = np.ascontiguousarray(vectors[rows[np.sort(sample)]], dtype=np.float32)
    if clusters == 1:
        centroid = points.mean(axis=0, keepdims=True)
        return centroid / max(float(np.linalg.norm(centroid)), 1e-12)
    kmeans = faiss.Kmeans(dim, clusters, niter=KMEANS_ITERATIONS, spherical=True, seed=seed,
                          verbose=False, min_points_per_centroid=1)
    kmeans.train(points)
    return kmeans.centroids


def assign_chunk(chunk: np.ndarray, centroids: np.ndarray, top: int) -> np.ndarray:
    """Task: the `top` most similar centroids of each vector in `chunk` (rows × top ids)."""
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, ids = index.search(np.ascontiguousarray(chunk, dtype=np.float32),
                          min(top, len(centroids)))
    return ids


def pairs_in_block(block: np.ndarray, bounds: np.ndarray, floor: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Task: every pair (i < j) inside each cluster of `block` with inner product ≥ floor, as
    positions in `block`. Cluster c is block[bounds[c]:bounds[c + 1]]; exact, with no k."""
    found_i, found_j = [], []
    for start, stop in pairwise(bounds.tolist()):
        if stop - start < 2:
            continue
        members = np.ascontiguousarray(block[start:stop], dtype=np.float32)
        index = faiss.IndexFlatIP(members.shape[1])
        index.add(members)
        # Inner-product range search keeps results over the radius.
        lims, _, ids = index.range_search(members, floor - 1e-6)
        query = np.repeat(np.arange(len(members)), np.diff(lims.astype(np.int64)))
        ahead = ids > query
        found_i.append(start + query[ahead])
        found_j.append(start + ids[ahead])
    if not found_i:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(found_i).astype(np.int64), np.concatenate(found_j).astype(np.int64)


def _set_threads(count: int) -> None:
    faiss.omp_set_num_threads(count)


def _run_tasks(function: Callable, payloads: Iterable[tuple], spec: ShardSpec) -> Iterator:
    """Results of function(*payload) in payload order: here, in local processes, or on Ray."""
    if spec.engine == "ray":
        try:
            import ray
        except ImportError as exc:
            raise DistillError(f"--engine ray needs ray ({exc}): pip install -e '.[ray]'") from None
        if not ray.is_initialized():
            ray.init(address=spec.address, log_to_driver=False)
        remote = ray.remote(function)
        yield from ray.get([remote.remote(*payload) for payload in payloads])
        return
    if spec.workers == 1:
        for payload in payloads:
            yield function(*payload)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: forking a process whose OpenMP (faiss) threads have run can hang the child.
    threads = max(1, faiss.omp_get_max_threads() // spec.workers)
    with ProcessPoolExecutor(spec.workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_set_threads, initargs=(threads,)) as pool:
        pending = []
        for payload in payloads:  # at most 2 tasks per worker in flight: bounded memory
            pending.append(pool.submit(function, *payload))
            if len(pending) >= 2 * spec.workers:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


def _entries(rows: np.ndarray, signs: np.ndarray | None):
    """The vectors that join cells: each row, and with mirror signs also its mirror image."""
    if signs is None:
        return rows, np.zeros(len(rows), dtype=bool)
    return np.r_[rows, rows], np.r_[np.zeros(len(rows), bool), np.ones(len(rows), bool)]


def _gather(vectors: np.ndarray, rows: np.ndarray, mirrored: np.ndarray,
            signs: np.ndarray | None) -> np.ndarray:
    block = vectors[rows]
    if signs is not None and mirrored.any():
        block = block.astype(np.float32)
        block[mirrored] *= signs
    return block


def sharded_pairs(vectors: np.ndarray, valid: np.ndarray, threshold: float, spec: ShardSpec,
                  signs: np.ndarray | None = None, progress: bool = True
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """All row pairs (a < b) with cosine ≥ threshold that share a cell, as (a, b, similarity,
    plan info): the same answer as `near_duplicate_pairs` except pairs split across cells."""
    rows = np.flatnonzero(valid)
    empty = np.empty(0, dtype=np.int64)
    if len(rows) < 2:
        return empty, empty, np.empty(0, dtype=np.float32), {"kind": "none", "vectors": len(rows)}
    cells = min(spec.clusters or default_clusters(len(rows)), len(rows))
    info = {"kind": "sharded", "vectors": len(rows), "dim": vectors.shape[1], "clusters": cells,
            "assign": min(spec.assign, cells), "engine": spec.engine,
            "workers": spec.workers if spec.engine == "local" else None, "mirrored": signs is not None}
    started = time.perf_counter()
    centroids = train_centroids(vectors, rows, cells, spec.seed)
    info["train_s"] = round(time.perf_counter() - started, 3)

    started = time.perf_counter()
    entry_rows, mirrored = _entries(rows, signs)
    chunks = ((_gather(vectors, entry_rows[s:s + ASSIGN_CHUNK], mirrored[s:s + ASSIGN_CHUNK],
                       signs), centroids, spec.assign)
              for s in range(0, len(entry_rows), ASSIGN_CHUNK))
    cell = np.concatenate(list(_run_tasks(assign_chunk, chunks, spec)))
    # One entry per (vector, cell); cells with fewer than two entries have nothing to search.
    member = np.repeat(np.arange(len(entry_rows)), cell.shape[1])
    cell = cell.ravel()
    order = np.argsort(cell, kind="stable")
    member, cell = member[order], cell[order]
    sizes = np.bincount(cell, minlength=cells)
    info.update(assign_s=round(time.perf_counter() - started, 3),
                largest_cell=int(sizes.max()), empty_cells=int(np.sum(sizes == 0)))

    started = time.perf_counter()
    floor = threshold - CANDIDATE_MARGIN
    tasks = _search_tasks(sizes, TASK_ENTRIES)
    info["tasks"] = len(tasks)

    offsets = np.r_[0, np.cumsum(sizes)]

    def payloads():
        for first, last in tasks:
            part = member[offsets[first]:offsets[last]]
            yield (_gather(vectors, entry_rows[part], mirrored[part], signs),
                   offsets[first:last + 1] - offsets[first], floor)

    found_a, found_b = [], []
    for (first, _), (i, j) in zip(tasks, _run_tasks(pairs_in_block, payloads(), spec)):
        found_a.append(entry_rows[member[offsets[first] + i]])
        found_b.append(entry_rows[member[offsets[first] + j]])
    a, b = (np.concatenate(found_a), np.concatenate(found_b)) if found_a else (empty, empty)
    a, b, sims, info["candidate_pairs"] = rescore_candidates(vectors, a, b, threshold, signs)
    info["search_s"] = round(time.perf_counter() - started, 3)
    return a, b, sims, info


def _search_tasks(sizes: np.ndarray, entries: int) -> list[tuple[int, int]]:
    """Consecutive cell ranges [first, last) of about `entries` members each; a big cell is a
    task of its own."""
    tasks, first, total = [], 0, 0
    for c, size in enumerate(sizes):
        if total and total + size > entries:
            tasks.append((first, c))
            first, total = c, 0
        total += size
    if total:
        tasks.append((first, len(sizes)))
    return tasks
