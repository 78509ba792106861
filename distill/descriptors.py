"""Descriptors for near-duplicate search: stored CLIP embeddings, or an offline one from pixels.

The offline descriptor needs no weights. It is computed from a 32x32 thumbnail (box filter, so
any resize or JPEG re-encode lands on nearly the same pixels):

- luma: the 2-D DCT's low-frequency 10x10 block minus DC (removing DC is mean-centring, so
  an additive brightness change vanishes), each coefficient scaled by sqrt(its frequency
  radius), because natural images put most energy in the lowest frequencies and unweighted
  the first few coefficients (the overall gradient) decide the similarity alone;
- chroma: the same, 4x4 block minus DC, of Cb and Cr, at half weight: colour separates photos
  whose luma layouts agree (sky crops of different scenes);
- each part L2-normalised, then the whole: a multiplicative brightness change vanishes too.

It is 99 + 15 + 15 = 129 floats. Mirroring the image only flips the sign of the coefficients
with an odd horizontal frequency (the DCT basis is (-1)^v symmetric), so the descriptor of the
mirror is `descriptor * mirror_signs()`; dedup queries both to catch horizontal flips.
The settings were picked on `benchmarks/dedup_accuracy.py` (see its JSON for the sweep).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.fft import dctn
from tqdm import tqdm

from distill import shards
from distill.decode import DecodeError, decode_path, find_images
from distill.errors import ConfigError, DistillError

THUMB_SIDE = 32
LUMA_BLOCK = 10
CHROMA_BLOCK = 4
CHROMA_WEIGHT = 0.5
# JPEG draft decoding stops at >= 2x the thumbnail: the box filter still has pixels to average.
DRAFT_SIZE = 2 * THUMB_SIDE
OFFLINE_NAME = f"offline-dct{THUMB_SIDE}-y{LUMA_BLOCK}-c{CHROMA_BLOCK}"
OFFLINE_DIM = (LUMA_BLOCK**2 - 1) + 2 * (CHROMA_BLOCK**2 - 1)
# Below this much AC energy (8-bit grey levels) an image is flat: its normalised descriptor
# would be pure noise, so it is left at zero and matches nothing by descriptor.
FLAT_ENERGY = 1.0
NORMALISE_CHUNK = 65536


def _block_mask(block: int) -> np.ndarray:
    keep = np.ones((block, block), dtype=bool)
    keep[0, 0] = False  # DC: the mean brightness
    return keep


def _frequency_weights(block: int) -> np.ndarray:
    u = np.arange(block)
    return np.sqrt(np.hypot(u[:, None], u[None, :]))[_block_mask(block)]


def _mirror_block(block: int) -> np.ndarray:
    odd_columns = np.tile((-1.0) ** np.arange(block), (block, 1))
    return odd_columns[_block_mask(block)]


_LUMA_WEIGHTS = _frequency_weights(LUMA_BLOCK).astype(np.float32)


def mirror_signs() -> np.ndarray:
    """Multiply an offline descriptor by this to get the descriptor of the mirrored image."""
    return np.concatenate([_mirror_block(LUMA_BLOCK), _mirror_block(CHROMA_BLOCK),
                           _mirror_block(CHROMA_BLOCK)]).astype(np.float32)


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _low_frequencies(channel: np.ndarray, block: int) -> np.ndarray:
    return dctn(channel, norm="ortho")[:block, :block][_block_mask(block)]


def offline_descriptor(image: Image.Image) -> np.ndarray:
    """The 129-float offline descriptor of one image (all zeros for a flat image)."""
    thumb = image.convert("YCbCr").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)
    luma, cb, cr = np.moveaxis(np.asarray(thumb, dtype=np.float32), -1, 0)
    luma_ac = _low_frequencies(luma, LUMA_BLOCK)
    if float(np.linalg.norm(luma_ac)) < FLAT_ENERGY * THUMB_SIDE:
        return np.zeros(OFFLINE_DIM, dtype=np.float32)
    parts = [_unit(luma_ac * _LUMA_WEIGHTS)]
    parts += [CHROMA_WEIGHT * _unit(_low_frequencies(c, CHROMA_BLOCK)) for c in (cb, cr)]
    return _unit(np.concatenate(parts)).astype(np.float32)


def _describe_file(path) -> tuple[np.ndarray | None, str, str]:
    """(descriptor or None, sha1 or "", failure reason or "")."""
    try:
        decoded = decode_path(path, draft_size=DRAFT_SIZE)
    except DecodeError as exc:
        return None, "", str(exc)
    return offline_descriptor(decoded.image), decoded.sha1, ""


def offline_descriptors(paths: Sequence[str | os.PathLike | None], *, progress: bool = True,
                        workers: int | None = None) -> tuple[np.ndarray, list[str], dict[int, str]]:
    """Descriptors of image files: (N x OFFLINE_DIM float32, sha1 per file, {row: reason}).

    Rows that cannot be decoded stay all-zero and are listed with the reason. Decoding runs
    in threads: Pillow releases the GIL while it decodes and resizes.
    """
    matrix = np.zeros((len(paths), OFFLINE_DIM), dtype=np.float32)
    hashes = [""] * len(paths)
    failures: dict[int, str] = {}
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        jobs = pool.map(lambda p: _describe_file(p) if p else (None, "", "no path"), paths)
        bar = tqdm(jobs, total=len(paths), desc="offline descriptors", unit="img",
                   disable=not progress, leave=False)
        for row, (descriptor, sha1, reason) in enumerate(bar):
            if descriptor is None:
                failures[row] = reason
            else:
                matrix[row], hashes[row] = descriptor, sha1
    return matrix, hashes, failures


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """L2-normalise rows in float32; rows that are zero or not finite become zero (no match)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    matrix = np.where(np.isfinite(matrix).all(axis=1, keepdims=True), matrix, 0.0)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


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
    from distill.score import read_embeddings

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
    embeddings = shards.read_embeddings(out) if descriptor != "offline" else None
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
    matrix, _, failures = offline_descriptors(table.column("path").to_pylist(),
                                                          progress=progress)
    flat = np.flatnonzero(~np.any(matrix != 0, axis=1))
    failures.update({int(r): "flat image (no detail to compare)" for r in flat
                     if r not in failures})
    return matrix, "offline", OFFLINE_NAME, mirror_signs(), failures
