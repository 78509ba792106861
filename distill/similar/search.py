"""Neighbour search for near duplicates, shared by dedup and cull: a FAISS inner-product
index over L2-normalised vectors (so inner product is cosine), every pair over a threshold,
connected components of those pairs, and each component's keeper.

Neighbours come from a k-NN search in batches (never an N×N matrix): exact `IndexFlatIP` up
to `FLAT_LIMIT` vectors, IVF above, HNSW on request; each candidate pair is then re-scored
exactly from the vectors, so every index type applies the same threshold.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import faiss
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from distill.errors import ConfigError, DistillError

# (benchmarks/dedup_scale.py --crossover): IVF is faster from ~5k vectors at 512-d (CLIP) and
# from ~20k at 129-d (offline). 10k sits between: either way it costs under a second more,
# and the flat index is exact.
FLAT_LIMIT = 10_000
SEARCH_BATCH = 8192
MAX_K = 1024  # the GPU k-NN limit is 2048; a row with more neighbours than this is reported
# Candidates this far under τ are re-scored exactly: covers fp16 storage and float error.
CANDIDATE_MARGIN = 0.005
TRAIN_POINTS_PER_LIST = 40  # k-means training sample per IVF list (faiss warns under 39)


@dataclass
class IndexSpec:
    """Which FAISS index answers the neighbour search, and its search parameters."""

    kind: str = "auto"  # auto | flat | ivf | hnsw
    nlist: int | None = None  # IVF lists; default ~4·sqrt(N), a power of two
    nprobe: int = 8  # IVF lists searched per query
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    k: int = 16  # neighbours per query; rows with k neighbours over τ are searched again with 4k
    gpu: str = "auto"  # auto (when faiss has GPUs) | on | off
    flat_limit: int = FLAT_LIMIT

    def __post_init__(self):
        if self.kind not in ("auto", "flat", "ivf", "hnsw"):
            raise ConfigError(f"unknown index {self.kind!r}; use auto, flat, ivf or hnsw")
        if self.gpu not in ("auto", "on", "off"):
            raise ConfigError(f"unknown gpu setting {self.gpu!r}; use auto, on or off")
        if self.k < 1 or self.nprobe < 1 or (self.nlist is not None and self.nlist < 1):
            raise ConfigError("k, nprobe and nlist must be positive")


@dataclass
class NeighbourIndex:
    index: faiss.Index
    rows: np.ndarray  # index id → row of the vectors it holds
    info: dict = field(default_factory=dict)
    gpu_resources: object = None  # keeps the GPU memory alive as long as the index


def default_nlist(n: int) -> int:
    """About 4·sqrt(n) as a power of two, and never more lists than k-means can train."""
    nearest = 1 << round(np.log2(max(1.0, 4 * np.sqrt(n))))
    trainable = 1 << int(np.log2(max(1, n // TRAIN_POINTS_PER_LIST)))
    return min(nearest, trainable)


def _rows(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def _use_gpu(setting: str, kind: str) -> bool:
    gpus = faiss.get_num_gpus()  # 0 in faiss-cpu
    if setting == "on" and not gpus:
        raise DistillError("--gpu on, but faiss sees no GPU (pip install -e '.[gpu]' for faiss-gpu)")
    # faiss has no GPU HNSW; flat and IVF move over as they are.
    return setting != "off" and gpus > 0 and kind in ("flat", "ivf")


def build_index(vectors: np.ndarray, rows: np.ndarray, spec: IndexSpec,
                progress: bool = True) -> NeighbourIndex:
    """A FAISS inner-product index over `vectors[rows]` (L2-normalised: IP is cosine)."""
    n, dim = len(rows), vectors.shape[1]
    kind = spec.kind if spec.kind != "auto" else ("flat" if n <= spec.flat_limit else "ivf")
    info = {"kind": kind, "vectors": n, "dim": dim, "k": spec.k}
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        nlist = min(spec.nlist or default_nlist(n), max(1, n))
        # fp16 storage: half of IVF-Flat's memory, and lossless for the float16 CLIP embeddings.
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, nlist,
                                              faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_INNER_PRODUCT)
        info.update(nlist=nlist, nprobe=min(spec.nprobe, nlist), storage="fp16")
    else:
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.ef_construction
        info.update(m=spec.hnsw_m, ef_construction=spec.ef_construction, ef_search=spec.ef_search)
    resources = None
    info["gpu"] = _use_gpu(spec.gpu, kind)
    if info["gpu"]:  # code path present, untested: this machine has no GPU build of faiss
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, 0, index)
    if kind == "ivf" and n:
        sample = np.random.default_rng(0).permutation(n)[:TRAIN_POINTS_PER_LIST * info["nlist"]]
        index.train(_rows(vectors, rows[np.sort(sample)]))
    batches = range(0, n, SEARCH_BATCH * 8)
    for start in tqdm(batches, desc=f"indexing ({kind})", unit="batch", disable=not progress,
                      leave=False):
        index.add(_rows(vectors, rows[start:start + SEARCH_BATCH * 8]))
    if kind == "ivf":
        index.nprobe = info["nprobe"]  # CPU IndexIVF and GpuIndexIVF both expose nprobe
    elif kind == "hnsw":
        index.hnsw.efSearch = spec.ef_search
    return NeighbourIndex(index, rows, info, resources)


def _search(handle: NeighbourIndex, vectors: np.ndarray, queries: np.ndarray, k: int,
            signs: np.ndarray | None, desc: str, progress: bool):
    """Yield (query rows, similarities, neighbour rows) per batch; -1 marks no neighbour."""
    k = min(k, handle.index.ntotal)
    for start in tqdm(range(0, len(queries), SEARCH_BATCH), desc=desc, unit="batch",
                      disable=not progress or len(queries) <= SEARCH_BATCH, leave=False):
        batch = queries[start:start + SEARCH_BATCH]
        block = _rows(vectors, batch)
        if signs is not None:
            block *= signs
        sims, ids = handle.index.search(block, k)
        yield batch, sims, np.where(ids >= 0, handle.rows[np.maximum(ids, 0)], -1)


def pair_similarity(vectors: np.ndarray, a: np.ndarray, b: np.ndarray,
                    signs: np.ndarray | None = None, other: np.ndarray | None = None) -> np.ndarray:
    """Exact cosine of vectors[a] with (other or vectors)[b]; with `signs`, the max over the mirror."""
    other = vectors if other is None else other
    out = np.empty(len(a), dtype=np.float32)
    for start in range(0, len(a), SEARCH_BATCH * 8):
        part = slice(start, start + SEARCH_BATCH * 8)
        left, right = _rows(vectors, a[part]), _rows(other, b[part])
        sims = np.einsum("ij,ij->i", left, right)
        if signs is not None:
            sims = np.maximum(sims, np.einsum("ij,ij->i", left * signs, right))
        out[part] = sims
    return np.minimum(out, 1.0)  # fp16 rounding can put a self-similarity a hair over 1


def near_duplicate_pairs(vectors: np.ndarray, valid: np.ndarray, threshold: float,
                         spec: IndexSpec, signs: np.ndarray | None = None,
                         progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """All row pairs (a < b) with cosine ≥ threshold, as (a, b, similarity, index info).

    k-NN with adaptive k: a query whose k-th neighbour is still over τ may have more, so those
    rows are searched again with 4k (up to MAX_K); the rest are complete.
    """
    rows = np.flatnonzero(valid)
    empty = np.empty(0, dtype=np.int64)
    if len(rows) < 2:
        return empty, empty, np.empty(0, dtype=np.float32), {"kind": "none", "vectors": len(rows)}
    started = time.perf_counter()
    handle = build_index(vectors, rows, spec, progress)
    handle.info["build_s"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    floor = threshold - CANDIDATE_MARGIN
    found_a, found_b = [], []
    for query_signs in ([None] if signs is None else [None, signs]):
        pending, k = rows, spec.k
        while len(pending):
            saturated = []
            for batch, sims, ids in _search(handle, vectors, pending, k, query_signs,
                                            f"near-duplicate search (k={k})", progress):
                hit = (sims >= floor) & (ids >= 0)
                where = np.nonzero(hit)
                found_a.append(batch[where[0]])
                found_b.append(ids[where])
                saturated.append(batch[hit[:, -1]])
            pending = np.concatenate(saturated)
            if k >= min(MAX_K, len(rows)) or not len(pending):
                break
            k = min(4 * k, MAX_K)
        # Rows still saturated when k covers the whole index are complete, not cut short.
        cut_short = len(pending) if k < len(rows) else 0
        handle.info["rows_over_max_k"] = handle.info.get("rows_over_max_k", 0) + cut_short
    a, b, sims, handle.info["candidate_pairs"] = rescore_candidates(
        vectors, np.concatenate(found_a), np.concatenate(found_b), threshold, signs)
    handle.info["search_s"] = round(time.perf_counter() - started, 3)
    return a, b, sims, handle.info


def rescore_candidates(vectors: np.ndarray, a: np.ndarray, b: np.ndarray, threshold: float,
                       signs: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Candidate row pairs, however found, as the unique pairs (a < b) whose exact cosine is
    ≥ threshold, sorted, with that cosine and the number of distinct candidates: every search
    plan applies τ through this one rule."""
    a, b = np.minimum(a, b), np.maximum(a, b)
    n = len(vectors)
    keys = np.unique(a[a != b] * n + b[a != b])
    a, b = keys // n, keys % n
    sims = pair_similarity(vectors, a, b, signs)
    keep = sims >= threshold
    return a[keep], b[keep], sims[keep], len(keys)


def exact_duplicate_pairs(sha1: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Each row whose sha1 was seen before, paired with the first row holding it."""
    hashes = np.array([h or "" for h in sha1], dtype=object)
    rows = np.flatnonzero(hashes != "")
    if not len(rows):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    _, first, inverse = np.unique(hashes[rows].astype(str), return_index=True,
                                  return_inverse=True)
    firsts = rows[first[inverse]]
    repeat = firsts != rows
    return firsts[repeat], rows[repeat]


def clusters(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label per row of the duplicate graph (union-find's answer)."""
    if n == 0:
        return np.empty(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def keepers(labels: np.ndarray, quality: np.ndarray,
            tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Row kept for each row's cluster: highest quality (NaN lowest), then highest tiebreak,
    then earliest row."""
    n = len(labels)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    score = np.where(np.isfinite(quality), quality, -np.inf)
    second = np.zeros(n) if tiebreak is None else np.nan_to_num(tiebreak, nan=-np.inf)
    order = np.lexsort((np.arange(n), -second, -score, labels))
    first = order[np.r_[True, labels[order][1:] != labels[order][:-1]]]
    keeper_of = np.empty(labels.max() + 1, dtype=np.int64)
    keeper_of[labels[first]] = first
    return keeper_of[labels]


def bench_matches(vectors: np.ndarray, valid: np.ndarray, bench: np.ndarray, spec: IndexSpec,
                  signs: np.ndarray | None, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per training row: its most similar benchmark vector and the exact similarity (-1: none)."""
    best = np.full(len(vectors), -1, dtype=np.int64)
    best_sim = np.full(len(vectors), -np.inf, dtype=np.float32)
    bench_rows = np.flatnonzero(np.linalg.norm(bench, axis=1) > 0)
    queries = np.flatnonzero(valid)
    if not len(bench_rows) or not len(queries):
        return best, best_sim
    # A benchmark set up to the flat limit is searched exactly, whatever --index says.
    kind = spec.kind if len(bench_rows) > spec.flat_limit else "flat"
    handle = build_index(bench, bench_rows, IndexSpec(**{**asdict(spec), "k": 1, "kind": kind}),
                         progress)
    for query_signs in ([None] if signs is None else [None, signs]):
        for batch, _, ids in _search(handle, vectors, queries, 1, query_signs,
                                     "benchmark search", progress):
            found = ids[:, 0] >= 0
            batch, ids = batch[found], ids[found, 0]
            sims = pair_similarity(vectors, batch, ids, signs, other=bench)
            better = sims > best_sim[batch]
            best[batch[better]], best_sim[batch[better]] = ids[better], sims[better]
    return best, best_sim


