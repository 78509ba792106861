"""Descriptors for near-duplicate search: CLIP embeddings read from files, or an offline one
from pixels.

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

from distill.decode import DecodeError, decode_path, open_regular
from distill.errors import ConfigError

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


def read_embeddings(path: str | os.PathLike, column: str | None = None) -> tuple[list[str], np.ndarray]:
    """Load CLIP embeddings from .npy (N, D) or parquet, as clip-retrieval and LAION dumps hold them.

    Parquet: the vector column is `column`, else the first of embedding/img_emb/emb/clip_emb;
    ids come from key/image_path/url/path when present, else the row number.
    """
    path = Path(path)
    if path.suffix not in (".npy", ".parquet"):
        raise ConfigError(f"{path}: embeddings must be .npy or .parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with open_regular(path, max_bytes=None) as handle:  # the read rule, without a size cap
            if path.suffix == ".npy":
                matrix = np.load(handle, allow_pickle=False)
                return [str(i) for i in range(len(matrix))], np.asarray(matrix, dtype=np.float32)
            table = pq.read_table(handle)
    except DecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except (ValueError, EOFError, pa.ArrowException) as exc:
        raise ConfigError(f"{path}: not readable embeddings ({type(exc).__name__}: {exc})") from None
    names = table.column_names
    column = column or next((c for c in ("embedding", "img_emb", "emb", "clip_emb") if c in names), None)
    if column not in names:
        raise ConfigError(f"{path}: no embedding column (have {', '.join(names)}); use --embedding-column")
    matrix = np.asarray(table.column(column).to_pylist(), dtype=np.float32)
    id_column = next((c for c in ("key", "image_path", "url", "path") if c in names), None)
    ids = [str(v) for v in table.column(id_column).to_pylist()] if id_column else [
        str(i) for i in range(len(matrix))]
    return ids, matrix
