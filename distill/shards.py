"""Shards stage: the on-disk layout of a labeling run, written atomically, read back whole.

    out/
      inputs.parquet                 the enumerated input list, frozen at the first run
      manifest.json                  config, teacher provenance, counts, timing
      errors.parquet                 every input that could not be labeled: path, stage, reason
      shards/labels-NNNNN.parquet    one row per labeled image of input shard NNNNN
      shards/embeddings-NNNNN.npy    float16 CLIP embeddings, row-aligned with labels-NNNNN
      shards/errors-NNNNN.parquet    that shard's failures (merged into errors.parquet)
      human.parquet                  human labels (source = human) that override pseudo-labels

Shard NNNNN always covers inputs [NNNNN * shard_size, (NNNNN + 1) * shard_size): ownership is
a pure function of the input list, so any process can tell which shards are done.
A shard's files are written under temporary names and renamed, labels last: a labels file
that exists is complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SHARD_DIR = "shards"
HUMAN_FILE = "human.parquet"  # human labels merged by `distill import-labels`
IDENTITY_COLUMNS = ("image_id", "source", "path", "sha1", "width", "height")
FUSED_COLUMNS = ("quality", "keep_prob", "label", "tier", "confidence")
ERROR_SCHEMA = pa.schema([("image_id", pa.string()), ("source", pa.string()), ("path", pa.string()),
                          ("stage", pa.string()), ("reason", pa.string()), ("shard", pa.int32())])


def shard_name(kind: str, index: int, suffix: str = "parquet") -> str:
    return f"{kind}-{index:05d}.{suffix}"


def labels_path(out: Path, index: int) -> Path:
    return Path(out) / SHARD_DIR / shard_name("labels", index)


def embeddings_path(out: Path, index: int) -> Path:
    return Path(out) / SHARD_DIR / shard_name("embeddings", index, "npy")


def errors_path(out: Path, index: int) -> Path:
    return Path(out) / SHARD_DIR / shard_name("errors", index)


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        write(partial)
        os.replace(partial, path)
    except OSError as exc:  # a full disk: leave no partial file, and name the file
        Path(partial).unlink(missing_ok=True)
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def write_table(path: Path, table: pa.Table) -> None:
    _atomic(path, lambda tmp: pq.write_table(table, tmp))


def write_json(path: Path, payload: dict) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2, default=str)))


def write_shard(out: Path, index: int, labels: pa.Table, errors: pa.Table,
                embeddings: np.ndarray | None) -> None:
    """Embeddings and errors first, labels last: the labels file is the completion mark."""
    if embeddings is not None:
        if len(embeddings) != labels.num_rows:
            raise ValueError(f"shard {index}: {len(embeddings)} embeddings for {labels.num_rows} rows")
        def save(tmp):
            with open(tmp, "wb") as handle:  # a handle: np.save would append ".npy" to a name
                np.save(handle, embeddings.astype(np.float16))

        _atomic(embeddings_path(out, index), save)
    write_table(errors_path(out, index), errors.cast(ERROR_SCHEMA))
    write_table(labels_path(out, index), labels)


def completed_shards(out: Path) -> set[int]:
    folder = Path(out) / SHARD_DIR
    return {int(p.stem.split("-")[1]) for p in folder.glob("labels-*.parquet")} if folder.is_dir() else set()


def label_files(out: Path) -> list[Path]:
    return sorted((Path(out) / SHARD_DIR).glob("labels-*.parquet"))


def read_labels(out: Path, columns: list[str] | None = None) -> pa.Table:
    """All label shards as one table, in shard order (= input order)."""
    files = label_files(out)
    if not files:
        raise FileNotFoundError(f"no label shards under {Path(out) / SHARD_DIR}")
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files],
                            promote_options="default")


def read_training_labels(out: Path) -> pa.Table:
    """Label rows with human labels (OUT/human.parquet, from `distill import-labels`) in place
    of the pseudo-labels of the same image_id: a person's word overrides the teachers'."""
    labels = read_labels(out)
    human_file = Path(out) / HUMAN_FILE
    if not human_file.exists():
        return labels
    human = pq.read_table(human_file)
    for name in set(human.column_names) & set(labels.column_names):  # e.g. tier int64 → int8
        position = human.schema.get_field_index(name)
        human = human.set_column(position, name, human.column(name).cast(labels.schema.field(name).type))
    overridden = set(human.column("image_id").to_pylist())
    keep = pa.array([i not in overridden for i in labels.column("image_id").to_pylist()])
    return pa.concat_tables([labels.filter(keep), human], promote_options="default")


def read_embeddings(out: Path) -> np.ndarray | None:
    """All embeddings row-aligned with `read_labels`, or None if the run stored none."""
    files = label_files(out)
    arrays = []
    for labels in files:
        index = int(labels.stem.split("-")[1])
        path = embeddings_path(out, index)
        if not path.exists():
            return None
        arrays.append(np.load(path))
    return np.concatenate(arrays) if arrays else None


def merge_errors(out: Path) -> pa.Table:
    files = sorted((Path(out) / SHARD_DIR).glob("errors-*.parquet"))
    tables = [pq.read_table(f) for f in files]
    merged = pa.concat_tables(tables) if tables else ERROR_SCHEMA.empty_table()
    write_table(Path(out) / "errors.parquet", merged)
    return merged
