"""Near-duplicate machinery shared by dedup and cull: descriptors and a FAISS neighbour search."""

from distill.similar.descriptors import (
    NORMALISE_CHUNK,
    OFFLINE_DIM,
    OFFLINE_NAME,
    mirror_signs,
    normalise_rows,
    offline_descriptor,
    offline_descriptors,
    read_embeddings,
)
from distill.similar.search import (
    FLAT_LIMIT,
    IndexSpec,
    bench_matches,
    build_index,
    clusters,
    exact_duplicate_pairs,
    keepers,
    near_duplicate_pairs,
    pair_similarity,
)
from distill.similar.sharded import ShardSpec, sharded_pairs

__all__ = ["FLAT_LIMIT", "NORMALISE_CHUNK", "OFFLINE_DIM", "OFFLINE_NAME", "IndexSpec",
           "ShardSpec",           "bench_matches", "build_index", "clusters", "exact_duplicate_pairs", "keepers",
           "mirror_signs", "near_duplicate_pairs", "normalise_rows", "offline_descriptor",
           "offline_descriptors", "pair_similarity", "read_embeddings", "sharded_pairs"]
