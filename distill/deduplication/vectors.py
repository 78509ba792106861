"""The vectors a labeling run is deduplicated on, and the benchmark's for the leakage guard."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from distill import run_folder
from distill.decode import find_images
from distill.errors import ConfigError, DistillError
from distill.names import as_path
from distill.similar import (
    NORMALISE_CHUNK,
    OFFLINE_NAME,
    mirror_signs,
    normalise_rows,
    offline_descriptors,
    read_embeddings,
)


def load_bench(against: str | os.PathLike, descriptor: str, dim: int, *, progress: bool = True
               ) -> tuple[list[str], np.ndarray, list[str]]:
    """Benchmark images for the leakage guard: (names, descriptors, sha1s or [] for vectors).

    A folder is described like the training images (offline descriptor only: embedding
    benchmark photos with CLIP is the labeling stage's job); a .npy or .parquet file holds
    precomputed vectors in the training descriptor's space.
    """
    path = Path(against)
    if path.is_dir():
        if descriptor != "offline":
            raise DistillError(
                f"--against {path} is a folder, which is described with the offline descriptor, "
                f"but this run dedups on {descriptor} embeddings: pass --descriptor offline, or "
                "the benchmark's CLIP embeddings as a .npy file")
        files = find_images([path])
        if not files:
            raise DistillError(f"--against {path}: no images found in the folder")
        matrix, hashes, failures = offline_descriptors(files, progress=progress)
        keep = [i for i in range(len(files)) if i not in failures]
        names = [str(files[i].relative_to(path)) for i in keep]
        return names, matrix[keep], [hashes[i] for i in keep]
    if not path.is_file():
        raise DistillError(f"--against {path}: no such file or folder")
    if path.suffix.lower() not in (".npy", ".parquet"):
        raise DistillError(f"--against {path}: expected a folder of images, a .npy or a .parquet")
    ids, matrix = read_embeddings(path)
    matrix = np.asarray(matrix, dtype=np.float32).reshape(len(matrix), -1)
    if matrix.shape[1] != dim:
        raise DistillError(f"--against {path}: vectors are {matrix.shape[1]}-d but the "
                           f"{descriptor} descriptor of this run is {dim}-d")
    return [str(i) for i in ids], normalise_rows(matrix), []


def run_descriptors(out: Path, table, descriptor: str, progress: bool = True):
    """A run's vectors for dedup: (vectors, "clip"|"offline", detail, mirror signs or None,
    {row: why it has no vector}). `auto` takes the stored CLIP embeddings when there are any."""
    if descriptor not in ("auto", "clip", "offline"):
        raise ConfigError(f"unknown descriptor {descriptor!r}; use auto, clip or offline")
    embeddings = run_folder.read_embeddings(out) if descriptor != "offline" else None
    if descriptor == "clip" and embeddings is None:
        raise DistillError(f"{out} stored no CLIP embeddings (the run did not use clip_aesthetic); "
                           "use --descriptor offline")
    if embeddings is not None:
        missing = []
        for start in range(0, len(embeddings), NORMALISE_CHUNK):  # in place: no float32 copy
            block = normalise_rows(embeddings[start:start + NORMALISE_CHUNK])
            embeddings[start:start + len(block)] = block
            missing += (start + np.flatnonzero(~block.any(axis=1))).tolist()
        return (embeddings, "clip", f"stored CLIP embeddings, {embeddings.shape[1]}-d", None,
                dict.fromkeys(missing, "no finite embedding"))
    if "path" not in table.column_names:
        raise DistillError(f"{out} has neither CLIP embeddings nor a path column to describe")
    paths = [p and as_path(p) for p in table.column("path").to_pylist()]
    matrix, _, failures = offline_descriptors(paths, progress=progress)
    flat = np.flatnonzero(~np.any(matrix != 0, axis=1))
    failures.update({int(r): "flat image (no detail to compare)" for r in flat
                     if r not in failures})
    return matrix, "offline", OFFLINE_NAME, mirror_signs(), failures
