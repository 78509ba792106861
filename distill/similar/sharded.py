"""Near-duplicate pairs by a plan that can leave one machine: partition, then search each part.

    centroids = train_centroids(vectors, rows, C)       # spherical k-means on a sample (driver)
    route_chunk(chunk, centroids, margin)                # task: the cells each vector joins
    pairs_in_block(block, bounds, floor)                 # task: exact all-pairs inside cells
    union on the driver: unique pairs, exact re-score, τ  (then `clusters` joins them)

The tasks are pure functions of the arrays they are given, so a local process pool or Ray
tasks (`engine="ray"`, where ray is installed) run them unchanged. Inside a cell the search
is exact (IndexFlatIP range search: no k, every pair over the floor), and every candidate is
re-scored from the vectors by `pair_similarity`, as the single-machine plan does, so both
plans apply τ with the same arithmetic.

Which cells a vector joins (the routing rule). For unit vectors x, y at distance ≤ t (cosine
≥ the floor) and unit centroids, |x·c − y·c| ≤ t for every centroid c. So if y's home cell is
h, x's similarity to c_h is at most 2t below x's best: a vector that joins every cell within
margin 2t of its best shares a cell with each of its pairs, and the plan is exact (`reach` 1).
That bound assumes the pair's difference points straight at a centroid; in 512-d it points
mostly elsewhere, and a small fraction of the margin (`reach`) does: on the 1 M benchmark
(benchmarks/dedup_scale.py --coverage) reach 0.015 missed 46 of 10 000 planted pairs, 0.03
none, with 1.7 cells per vector; the default, REACH, keeps half as much again in hand (2.6
cells per vector there). Each found pair tells the reach it needed to share a home cell
(`pair_reach_max`, an upper bound: a pair may meet in another cell), so a run on other data
can see how close its pairs came to the margin.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise

import faiss
import numpy as np

from distill.errors import ConfigError, DistillError
from distill.similar.search import CANDIDATE_MARGIN, TRAIN_POINTS_PER_LIST, rescore_candidates

ROUTE_CHUNK = 65536  # vectors per routing task
TASK_ENTRIES = 65536  # cell members per search task (small cells share a task)
KMEANS_ITERATIONS = 10  # the centroids only route vectors: balance, not accuracy, needs more
REACH = 0.045  # of the exact margin 2t; the module docstring, dedup_scale.json "cell_coverage"
FIRST_CELLS = 8  # centroids looked at per vector; a vector with more within its margin looks again


@dataclass
class ShardSpec:
    """The sharded plan: how many k-means cells, how far past its best cell a vector reaches
    (a fraction of the margin that finds every pair; 1.0 is exact), who runs the tasks
    (`workers` local processes, or Ray tasks with `engine="ray"`)."""

    clusters: int | None = None  # default: about 2·sqrt(N), a power of two
    reach: float = REACH
    workers: int = 1  # local processes; 1 runs the tasks in this process
    engine: str = "local"  # local | ray
    address: str | None = None  # engine ray, not started: a cluster's (else $RAY_ADDRESS, else a new one)
    seed: int = 0

    def __post_init__(self):
        if self.engine not in ("local", "ray"):
            raise ConfigError(f"unknown engine {self.engine!r}; use local or ray")
        if (self.clusters is not None and self.clusters < 1) or self.workers < 1:
            raise ConfigError("clusters and workers must be positive")
        if not 0 <= self.reach <= 1:
            raise ConfigError(f"reach {self.reach} must be within [0, 1] (1: exact)")


def default_clusters(n: int) -> int:
    """Balances the two costs: routing grows with N·C, the searches with N²/C."""
    wanted = 1 << round(np.log2(max(1.0, 2 * np.sqrt(n))))
    return max(1, min(wanted, n // TRAIN_POINTS_PER_LIST))


def exact_margin(floor: float) -> float:
    """2t: t is the distance between unit vectors whose cosine is `floor`."""
    return 2 * float(np.sqrt(max(0.0, 2 - 2 * floor)))


def train_centroids(vectors: np.ndarray, rows: np.ndarray, clusters: int,
                    seed: int = 0) -> np.ndarray:
    """Spherical k-means (unit centroids) on a seeded sample of vectors[rows]
    (TRAIN_POINTS_PER_LIST per cell)."""
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


def route_chunk(chunk: np.ndarray, centroids: np.ndarray, margin: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Task: the cells each vector of `chunk` joins: every centroid within `margin` of its most
    similar one. Returns each membership as (position in chunk, cell), and each vector's home
    cell and its similarity to it."""
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    chunk = np.ascontiguousarray(chunk, dtype=np.float32)
    top = min(FIRST_CELLS, len(centroids))
    sims, ids = index.search(chunk, top)
    home, best = ids[:, 0].copy(), sims[:, 0].copy()
    positions, cells = [], []
    looking = np.arange(len(chunk))
    while True:
        joined = best[looking, None] - sims <= margin
        more = joined[:, -1] & (top < len(centroids))  # its margin may hold cells not looked at
        rows, columns = np.nonzero(joined[~more])
        positions.append(looking[~more][rows])
        cells.append(ids[~more][rows, columns])
        if not more.any():
            break
        looking, top = looking[more], min(4 * top, len(centroids))
        sims, ids = index.search(chunk[looking], top)
    return np.concatenate(positions), np.concatenate(cells), home, best


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


def _in_order(submit: Callable, result: Callable, payloads: Iterable[tuple], slots: int
              ) -> Iterator:
    """Results in payload order, with at most `slots` tasks in flight: bounded memory."""
    pending: deque = deque()
    for payload in payloads:
        pending.append(submit(payload))
        if len(pending) >= slots:
            yield result(pending.popleft())
    while pending:
        yield result(pending.popleft())


@contextmanager
def _task_runner(spec: ShardSpec):
    """run(function, payloads, shared) → function(*payload, *shared) for each payload, in
    order: here, in local processes, or as Ray tasks (which get `shared` through the object
    store, put once; a local process is sent it with each task)."""
    if spec.engine == "ray":
        try:
            import ray
        except ImportError as exc:
            raise DistillError(f"--engine ray needs ray ({exc}): pip install -e '.[ray]'") from None
        started = not ray.is_initialized()
        if started:
            # not Ray's default, which joins any cluster `ray start` left on this host
            ray.init(address=spec.address or os.environ.get("RAY_ADDRESS") or "local",
                     log_to_driver=False)
        try:
            slots = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))

            def run(function, payloads, shared=()):
                remote, refs = ray.remote(function), [ray.put(value) for value in shared]
                yield from _in_order(lambda payload: remote.remote(*payload, *refs), ray.get,
                                     payloads, slots)
            yield run
        finally:
            if started:
                ray.shutdown()
    elif spec.workers == 1:
        yield lambda function, payloads, shared=(): (function(*p, *shared) for p in payloads)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: forking a process whose OpenMP (faiss) threads have run can hang the child.
        threads = max(1, faiss.omp_get_max_threads() // spec.workers)
        with ProcessPoolExecutor(spec.workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_set_threads, initargs=(threads,)) as pool:
            def run(function, payloads, shared=()):
                yield from _in_order(lambda payload: pool.submit(function, *payload, *shared),
                                     lambda future: future.result(), payloads, 2 * spec.workers)
            yield run


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
    plan info): at reach 1 the answer of an exact search; below it, see the module docstring."""
    rows = np.flatnonzero(valid)
    empty = np.empty(0, dtype=np.int64)
    if len(rows) < 2:
        return empty, empty, np.empty(0, dtype=np.float32), {"kind": "none", "vectors": len(rows)}
    cells = min(spec.clusters or default_clusters(len(rows)), len(rows))
    floor = threshold - CANDIDATE_MARGIN
    margin = spec.reach * exact_margin(floor)
    info = {"kind": "sharded", "vectors": len(rows), "dim": vectors.shape[1], "clusters": cells,
            "reach": spec.reach, "margin": round(margin, 4), "engine": spec.engine,
            "workers": spec.workers if spec.engine == "local" else None, "mirrored": signs is not None}
    started = time.perf_counter()
    centroids = train_centroids(vectors, rows, cells, spec.seed)
    info["train_s"] = round(time.perf_counter() - started, 3)

    entry_rows, mirrored = _entries(rows, signs)
    with _task_runner(spec) as run_tasks:
        started = time.perf_counter()
        starts = range(0, len(entry_rows), ROUTE_CHUNK)
        chunks = ((_gather(vectors, entry_rows[s:s + ROUTE_CHUNK], mirrored[s:s + ROUTE_CHUNK],
                           signs),) for s in starts)
        routed = list(run_tasks(route_chunk, chunks, (centroids, margin)))
        member = np.concatenate([positions + s for s, (positions, *_) in zip(starts, routed)])
        cell = np.concatenate([part[1] for part in routed])
        home = np.concatenate([part[2] for part in routed])
        best = np.concatenate([part[3] for part in routed])
        order = np.argsort(cell, kind="stable")  # one entry per (vector, cell), cell by cell
        member, cell = member[order], cell[order]
        sizes = np.bincount(cell, minlength=cells)
        info.update(route_s=round(time.perf_counter() - started, 3),
                    cells_per_vector=round(len(member) / len(entry_rows), 3),
                    largest_cell=int(sizes.max()), empty_cells=int(np.sum(sizes == 0)))

        started = time.perf_counter()
        tasks = _search_tasks(sizes, TASK_ENTRIES)
        info["tasks"] = len(tasks)
        offsets = np.r_[0, np.cumsum(sizes)]
        blocks = ((_gather(vectors, entry_rows[part], mirrored[part], signs),
                   offsets[first:last + 1] - offsets[first])
                  for first, last in tasks
                  for part in [member[offsets[first]:offsets[last]]])
        found_a, found_b = [], []
        for (first, _), (i, j) in zip(tasks, run_tasks(pairs_in_block, blocks, (floor,))):
            found_a.append(entry_rows[member[offsets[first] + i]])
            found_b.append(entry_rows[member[offsets[first] + j]])
    a, b = (np.concatenate(found_a), np.concatenate(found_b)) if found_a else (empty, empty)
    a, b, sims, info["candidate_pairs"] = rescore_candidates(vectors, a, b, threshold, signs)
    info["search_s"] = round(time.perf_counter() - started, 3)
    used = _reach_used(vectors, signs, centroids, home, best, rows, floor, a, b) / exact_margin(floor)
    info["pair_reach_max"] = round(float(used.max()), 4) if len(used) else None
    return a, b, sims, info


def _reach_used(vectors: np.ndarray, signs: np.ndarray | None, centroids: np.ndarray,
                home: np.ndarray, best: np.ndarray, rows: np.ndarray, floor: float,
                a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The margin each found pair needed at most: the smaller of the two ways it shares a home
    cell (one vector joining the other's home). A pair also meets in other cells, so this is
    an upper bound. With mirror signs a pair is found through any of its entry pairs (each
    row, or its mirror, with the other's) whose cosine is over the floor: the smallest of
    theirs."""
    entry_of = np.full(len(vectors), -1, dtype=np.int64)
    entry_of[rows] = np.arange(len(rows))
    entry_rows, mirrored = _entries(rows, signs)
    mirror = [0, len(rows)] if signs is not None else [0]
    needed = np.full(len(a), np.inf, dtype=np.float32)
    for start in range(0, len(a), ROUTE_CHUNK):
        part = slice(start, start + ROUTE_CHUNK)
        over, fallback = np.full(len(a[part]), np.inf, np.float32), np.full(len(a[part]), np.inf,
                                                                             np.float32)
        for shift_a in mirror:
            for shift_b in mirror:
                ea, eb = entry_of[a[part]] + shift_a, entry_of[b[part]] + shift_b
                vector_a = _gather(vectors, entry_rows[ea], mirrored[ea], signs).astype(np.float32)
                vector_b = _gather(vectors, entry_rows[eb], mirrored[eb], signs).astype(np.float32)
                via = np.minimum(best[eb] - np.einsum("ij,ij->i", vector_b, centroids[home[ea]]),
                                 best[ea] - np.einsum("ij,ij->i", vector_a, centroids[home[eb]]))
                close = np.einsum("ij,ij->i", vector_a, vector_b) >= floor
                over = np.where(close, np.minimum(over, via), over)
                fallback = np.minimum(fallback, via)
        needed[part] = np.where(np.isfinite(over), over, fallback)
    return np.maximum(needed, 0)


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
