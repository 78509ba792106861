"""The one owner of a labeling run's folder: its file names, its manifest and run.json, the
atomic writers of its shards, and the readers every later stage uses.

    out/
      inputs.parquet                 the enumerated input list, frozen at the first run
      run.json                       what shapes the rows (source, teachers, shard size, …)
      manifest.json                  config, teacher provenance, counts, timing
      errors.parquet                 every input that could not be labeled: path, stage, reason
      shards/labels-NNNNN.parquet    one row per labeled image of input shard NNNNN
      shards/embeddings-NNNNN.npy    float16 CLIP embeddings, row-aligned with labels-NNNNN
      shards/errors-NNNNN.parquet    that shard's failures (merged into errors.parquet)
      human.parquet                  human labels (source = human) that override pseudo-labels
      dedup.parquet                  `distill dedup`: duplicates that training skips
      dedup_summary.json             `distill dedup`: what it found

Shard NNNNN always covers inputs [NNNNN * shard_size, (NNNNN + 1) * shard_size): ownership is
a pure function of the input list, so any process can tell which shards are done.
A shard's files are written under temporary names and renamed, labels last: a labels file
that exists is complete. Only files named exactly as `shard_name` spells them are shards (a
copied `labels-00002-backup.parquet` is not). A run whose writer has not finished (run.json
or inputs.parquet but no manifest.json yet) is half-written, and every reader says so; a
file of the run damaged afterwards (truncated, emptied) is a one-line error naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distill.errors import DistillError, first_line
from distill.safefs import atomic_write

SHARD_DIR = "shards"
INPUTS_FILE = "inputs.parquet"
RUN_FILE = "run.json"
MANIFEST_FILE = "manifest.json"
ERRORS_FILE = "errors.parquet"
HUMAN_FILE = "human.parquet"  # human labels merged by `distill import-labels`
DEDUP_FILE = "dedup.parquet"
DEDUP_SUMMARY = "dedup_summary.json"
DEDUP_PAIRS = "dedup_pairs.parquet"
IDENTITY_COLUMNS = ("image_id", "source", "path", "sha1", "width", "height")
FUSED_COLUMNS = ("quality", "keep_prob", "label", "tier", "confidence")
INPUT_SCHEMA = pa.schema([("image_id", pa.string()), ("key", pa.string()), ("path", pa.string()),
                          ("locator", pa.string()), ("refused", pa.string())])
ERROR_SCHEMA = pa.schema([("image_id", pa.string()), ("source", pa.string()), ("path", pa.string()),
                          ("stage", pa.string()), ("reason", pa.string()), ("shard", pa.int32())])


def image_id(source_name: str, key: str) -> str:
    """An input's id: stable for the same source and key, on every machine: the first
    `ID_BYTES` of sha1("source:key"), in hex."""
    return hashlib.sha1(f"{source_name}:{key}".encode()).digest()[:ID_BYTES].hex()


def image_id_bytes(source_name: str, keys: list[str]) -> np.ndarray:
    """The `image_id` of many keys as an (n, ID_BYTES) uint8 array: one sha1 call a key and
    nothing else in Python (10 M keys are listed in one such loop)."""
    prefix = f"{source_name}:".encode()
    digests = b"".join([hashlib.sha1(prefix + key.encode()).digest() for key in keys])
    return np.frombuffer(digests, np.uint8).reshape(-1, 20)[:, :ID_BYTES]


def image_id_texts(ids: np.ndarray) -> pa.Array:
    """`image_id_bytes` as the hex strings `image_id` spells, built in numpy."""
    chars = _HEX_DIGITS[ids].reshape(-1)
    offsets = np.arange(0, chars.size + 1, 2 * ID_BYTES, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), len(ids), [None, pa.py_buffer(offsets),
                                                          pa.py_buffer(chars)])


ID_BYTES = 8
_HEX_DIGITS = np.frombuffer("".join(f"{i:02x}" for i in range(256)).encode(),
                            np.uint8).reshape(256, 2)


def shard_name(kind: str, index: int, suffix: str = "parquet") -> str:
    return f"{kind}-{index:05d}.{suffix}"


def shard_index(path: Path, kind: str) -> int | None:
    """The index of a `kind` shard file, or None for any other name."""
    match = re.fullmatch(rf"{kind}-(\d{{5,}})\.(parquet|npy)", Path(path).name)
    suffix = "npy" if kind == "embeddings" else "parquet"
    index = int(match.group(1)) if match else None
    return index if index is not None and Path(path).name == shard_name(kind, index, suffix) else None


def shard_files(out: Path, kind: str = "labels") -> dict[int, Path]:
    """index → file of every `kind` shard of the run, in index order."""
    folder = Path(out) / SHARD_DIR
    found = {shard_index(p, kind): p for p in folder.iterdir()} if folder.is_dir() else {}
    return {index: found[index] for index in sorted(i for i in found if i is not None)}


def labels_path(out: Path, index: int) -> Path:
    return Path(out) / SHARD_DIR / shard_name("labels", index)


def embeddings_path(out: Path, index: int) -> Path:
    return Path(out) / SHARD_DIR / shard_name("embeddings", index, "npy")


def errors_path(out: Path, index: int) -> Path:
    return Path(out) / SHARD_DIR / shard_name("errors", index)


def write_table(path: Path, table: pa.Table) -> None:
    with atomic_write(path) as partial:
        pq.write_table(table, partial)


def write_json(path: Path, payload: dict) -> None:
    with atomic_write(path) as partial:
        partial.write_text(json.dumps(payload, indent=2, default=str))


def read_json(path: Path) -> dict:
    """A JSON file of the run, or {} when it is not there."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:  # truncated, emptied, not UTF-8
        raise DistillError(f"{path} is damaged: not valid JSON ({exc})") from None


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A parquet file of the run; a damaged one (truncated, emptied) is one line naming it."""
    try:
        return pq.read_table(path, columns=columns)
    except pa.ArrowInvalid as exc:
        raise _damaged(path, exc) from None


def read_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except pa.ArrowInvalid as exc:
        raise _damaged(path, exc) from None


def _damaged(path: Path, exc: Exception) -> DistillError:
    path = Path(path)
    hint = ("; delete it and run the same `distill label` command to label that shard again"
            if shard_index(path, "labels") is not None and
            (path.parent.parent / INPUTS_FILE).exists() else "")
    return DistillError(f"{path} is damaged: not a readable parquet file ({first_line(exc)}){hint}")


def read_manifest(out: Path) -> dict:
    return read_json(Path(out) / MANIFEST_FILE)


def write_manifest(out: Path, manifest: dict) -> None:
    write_json(Path(out) / MANIFEST_FILE, manifest)


def manifest_config(out: Path, key: str, default=None):
    """One section of the config the run was labeled with (`fusion`, `source`, `decode`)."""
    return read_manifest(out).get("config", {}).get(key, default)


def read_run_shape(out: Path) -> dict | None:
    """run.json: what shaped the run's rows, or None for a run that predates it."""
    path = Path(out) / RUN_FILE
    return read_json(path) if path.exists() else None


def write_run_shape(out: Path, shape: dict) -> None:
    write_json(Path(out) / RUN_FILE, shape)


def record_fusion(out: Path, fusion: dict) -> None:
    """The run was re-fused (`distill fuse`, `calibrate --apply`): the manifest says which
    fusion made its labels, and a later resume of `distill label` must ask for it."""
    out = Path(out)
    manifest = read_manifest(out)
    if manifest:
        manifest["config"]["fusion"] = fusion
        write_manifest(out, manifest)
    shape = read_run_shape(out)
    if shape is not None:
        shape["fusion"] = json.loads(json.dumps(fusion, default=str))
        write_run_shape(out, shape)


def write_shard(out: Path, index: int, labels: pa.Table, errors: pa.Table,
                embeddings: np.ndarray | None) -> None:
    """Embeddings and errors first, labels last: the labels file is the completion mark. A
    shard without embeddings leaves none of an earlier attempt's (of other rows) behind."""
    if embeddings is None:
        embeddings_path(out, index).unlink(missing_ok=True)
    else:
        if len(embeddings) != labels.num_rows:
            raise ValueError(f"shard {index}: {len(embeddings)} embeddings for {labels.num_rows} rows")
        with atomic_write(embeddings_path(out, index)) as partial, open(partial, "wb") as handle:
            np.save(handle, embeddings.astype(np.float16))  # a handle: np.save adds ".npy" to names
    write_table(errors_path(out, index), errors.cast(ERROR_SCHEMA))
    write_table(labels_path(out, index), labels)


def completed_shards(out: Path) -> set[int]:
    return set(shard_files(out))


def label_files(out: Path) -> list[Path]:
    return list(shard_files(out).values())


def is_label_run(out: Path) -> bool:
    """Whether `out` holds a run a writer started (`distill label`, or review's writers)."""
    return (Path(out) / RUN_FILE).exists() or (Path(out) / INPUTS_FILE).exists()


def half_written(out: Path) -> str | None:
    """What is missing from a run whose writer has not finished, or None: finished, or a run
    no writer of this version started (written by hand, or before run.json existed)."""
    out = Path(out)
    if (out / MANIFEST_FILE).exists() or not is_label_run(out):
        return None
    done, shard_size = len(completed_shards(out)), (read_run_shape(out) or {}).get("shard_size")
    if (out / INPUTS_FILE).exists() and isinstance(shard_size, int) and shard_size > 0:
        try:
            total = shard_count(pq.read_metadata(out / INPUTS_FILE).num_rows, shard_size)
        except pa.ArrowInvalid as exc:
            raise _damaged(out / INPUTS_FILE, exc) from None
        return f"{done} of {total} shards labeled, no {MANIFEST_FILE} yet"
    return f"{done} shards written, no {MANIFEST_FILE} yet"


def require_complete(out: Path) -> None:
    """Refuse, naming it as such, a run its writer has not finished: its rows are a part."""
    why = half_written(out)
    if why:
        raise DistillError(f"{out} is a half-written run ({why}): finish it first (the same "
                           "`distill label` command resumes it), or use a finished run")


def refuse_unless_a_run(out: Path) -> None:
    """`refuse_unless_empty`, unless `out` holds a labeling run: then it is resumed. Seen a
    second time after a refusal, because another process of the same launch may have begun
    the run in between (its run.json is then what made the folder 'not empty')."""
    if is_label_run(out):
        return
    try:
        refuse_unless_empty(out)
    except DistillError:
        if not is_label_run(out):
            raise


def refuse_unless_empty(folder: Path, flag: str = "--out") -> None:
    """A command that creates a run writes into a new or empty folder only, never over files
    it did not make. Hidden entries (.DS_Store, a killed writer's temporary files) do not
    count."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DistillError(f"{flag} {folder} is not a folder")
    if folder.is_dir() and any(not entry.name.startswith(".") for entry in folder.iterdir()):
        raise DistillError(f"{flag} {folder} is not empty: choose a new or empty folder")


SHARD_GROUPS_KEY = b"distill.shard_size"  # inputs.parquet's rows per row group = per shard


def write_inputs(out: Path, tables: Iterable[pa.Table], shard_size: int,
                 metadata: dict[bytes, bytes], check: Callable[[Path], None] | None = None) -> int:
    """inputs.parquet, streamed from `tables` (INPUT_SCHEMA) with one row group per shard
    (`shard_size` rows), so that a worker reads its shard alone (`read_shard_inputs`); every
    table but the last must hold whole shards. `check(partial)` runs on the written file
    before it takes its name; whatever it raises leaves no file. Returns the row count."""
    rows = 0
    schema = INPUT_SCHEMA.with_metadata({**metadata, SHARD_GROUPS_KEY: str(shard_size).encode()})
    with atomic_write(Path(out) / INPUTS_FILE) as partial:
        # Names are nearly all distinct: a dictionary would be built and thrown away, and
        # their min/max statistics would make a 10 k-shard footer slow to open.
        with pq.ParquetWriter(partial, schema, use_dictionary=["refused"],
                              write_statistics=False) as writer:
            for table in tables:
                if rows % shard_size:
                    raise ValueError(f"inputs: a table after a part-shard, at row {rows}")
                writer.write_table(table.cast(schema), row_group_size=shard_size)
                rows += table.num_rows
        if check is not None:
            check(partial)
    return rows


def shard_count(inputs: int, shard_size: int) -> int:
    """How many shards `inputs` inputs make: the last one may be short."""
    return -(-inputs // shard_size)


def shard_rows(inputs: int, shard_size: int, index: int) -> int:
    """How many inputs shard `index` covers."""
    return min(shard_size, inputs - index * shard_size)


_FOOTERS: dict[str, tuple[tuple, pq.FileMetaData]] = {}  # inputs.parquet's parsed footer, by path
_FOOTERS_KEPT = 4  # runs whose footer this process keeps (one, nearly always)


def _open_inputs(path: Path, handle: pa.NativeFile) -> pq.ParquetFile:
    """inputs.parquet, open as `handle`, with its footer parsed once per process: a 10 M-input
    list's footer (10 000 row groups) takes ~0.1 s to parse, as long as reading a shard's
    rows. The parsed footer is kept under the identity of the file read (device, inode,
    size, mtime, from the open handle): a file replaced or rewritten is parsed again."""
    status = os.fstat(handle.fileno())
    identity = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
    kept = _FOOTERS.get(str(path))
    try:
        inputs = pq.ParquetFile(handle, metadata=kept[1] if kept and kept[0] == identity else None)
    except pa.ArrowInvalid as exc:
        raise _damaged(path, exc) from None
    if not kept or kept[0] != identity:
        _FOOTERS.pop(str(path), None)
        while len(_FOOTERS) >= _FOOTERS_KEPT:
            _FOOTERS.pop(next(iter(_FOOTERS)))
        _FOOTERS[str(path)] = identity, inputs.metadata
    return inputs


def read_shard_inputs(out: Path, index: int, shard_size: int) -> pa.Table:
    """Shard `index`'s slice of inputs.parquet: rows [index * shard_size, (index + 1) * shard_size).

    Only the row groups that hold those rows are read: one, in a run whose inputs.parquet
    has a row group per shard (`write_inputs`); a few, in one written before with another
    grouping. The file's footer is parsed once per process (`_open_inputs`)."""
    path = Path(out) / INPUTS_FILE
    with pa.OSFile(str(path)) as handle:
        return _read_slice(path, _open_inputs(path, handle), index, shard_size)


def _read_slice(path: Path, inputs: pq.ParquetFile, index: int, shard_size: int) -> pa.Table:
    start, end = index * shard_size, (index + 1) * shard_size
    grouped = (inputs.schema_arrow.metadata or {}).get(SHARD_GROUPS_KEY)
    if grouped == str(shard_size).encode():  # row group k is shard k (write_inputs)
        if index >= inputs.metadata.num_row_groups:
            return inputs.schema_arrow.empty_table()
        try:
            return inputs.read_row_group(index)
        except (pa.ArrowInvalid, OSError) as exc:
            raise _damaged(path, exc) from None
    wanted, first_row, row = [], None, 0
    for group in range(inputs.metadata.num_row_groups):
        rows = inputs.metadata.row_group(group).num_rows
        if row + rows > start and row < end:
            wanted.append(group)
            first_row = row if first_row is None else first_row
        row += rows
        if row >= end:
            break
    if not wanted:
        return inputs.schema_arrow.empty_table()
    try:
        table = inputs.read_row_groups(wanted)
    except (pa.ArrowInvalid, OSError) as exc:
        raise _damaged(path, exc) from None
    return table.slice(start - first_row, shard_size)


def read_locators(out: Path) -> dict[str, str]:
    """image_id → how the run's source reads it (tar member, dataset row), from inputs.parquet."""
    inputs = Path(out) / INPUTS_FILE
    if not inputs.exists():
        return {}
    table = read_parquet(inputs, columns=["image_id", "locator"])
    return dict(zip(table.column("image_id").to_pylist(), table.column("locator").to_pylist()))


def read_labels(out: Path, columns: list[str] | None = None) -> pa.Table:
    """All label shards of a finished run as one table, in shard order (= input order)."""
    require_complete(out)
    files = label_files(out)
    if not files:
        raise FileNotFoundError(f"no label shards under {Path(out) / SHARD_DIR}")
    return pa.concat_tables([read_parquet(f, columns=columns) for f in files],
                            promote_options="default")


def read_training_labels(out: Path, counts: dict | None = None) -> pa.Table:
    """The rows training learns from: one per image_id, the human row (OUT/human.parquet,
    from `distill import-labels`) in place of the pseudo-label of the same image (a person's
    word overrides the teachers'), minus the images `dedup.parquet` marks as duplicates.
    A human row lacking the path or size takes them from the row it replaces. `counts`, if
    given, receives the rows read and the duplicates dropped."""
    out = Path(out)
    table = read_labels(out)
    human_file = out / HUMAN_FILE
    if human_file.exists():  # after the shards: `_one_row_per_image` sees it last
        human = read_parquet(human_file)
        for name in set(human.column_names) & set(table.column_names):  # tier int64 → int8
            position = human.schema.get_field_index(name)
            human = human.set_column(position, name,
                                     human.column(name).cast(table.schema.field(name).type))
        table = pa.concat_tables([table, human], promote_options="default")
    if "image_id" not in table.column_names:
        raise DistillError(f"--labels {out}: the shards have no image_id column")
    rows = table.num_rows
    duplicates = load_dedup(out, missing_ok=True)
    if duplicates:
        table = table.filter(pa.array([i not in duplicates
                                       for i in table.column("image_id").to_pylist()]))
    if counts is not None:
        counts.update(rows=rows, duplicates_dropped=rows - table.num_rows)
    return pa.Table.from_pylist(_one_row_per_image(table.to_pylist()), schema=table.schema)


def _one_row_per_image(rows: list[dict]) -> list[dict]:
    """The last human row of an image_id, else its last row, at the place of its first; a
    human row lacking the path or size takes them from the pseudo-label row it replaces."""
    chosen: dict[str, dict] = {}
    for row in rows:
        previous = chosen.get(row["image_id"])
        human = row.get("source") == "human"
        if previous is not None and previous.get("source") == "human" and not human:
            row, previous = previous, row
        if previous is not None:
            row = {**row, **{k: previous.get(k) for k in ("path", "width", "height")
                             if row.get(k) is None}}
        chosen[row["image_id"]] = row
    return list(chosen.values())


def load_dedup(labels_dir, *, missing_ok: bool = False) -> set[str]:
    """image_ids that `distill dedup` marked as duplicates (or leaked), for training to skip."""
    path = Path(labels_dir) / DEDUP_FILE
    if not path.exists():
        if missing_ok:
            return set()
        raise DistillError(f"{path} does not exist; run `distill dedup --labels {labels_dir}`")
    table = read_parquet(path, columns=["image_id", "is_duplicate"])
    flags = table.column("is_duplicate").to_numpy(zero_copy_only=False)
    return {i for i, f in zip(table.column("image_id").to_pylist(), flags) if f}


def read_embeddings(out: Path) -> np.ndarray | None:
    """All embeddings row-aligned with `read_labels`, or None if the run stored none."""
    arrays = []
    for index in shard_files(out):
        path = embeddings_path(out, index)
        if not path.exists():
            return None
        try:
            arrays.append(np.load(path, allow_pickle=False))
        except (ValueError, EOFError, OSError) as exc:
            raise DistillError(f"{path} is damaged: not a readable .npy file ({exc})") from None
    return np.concatenate(arrays) if arrays else None


def merge_errors(out: Path) -> pa.Table:
    tables = [read_parquet(f) for f in shard_files(out, "errors").values()]
    merged = pa.concat_tables(tables) if tables else ERROR_SCHEMA.empty_table()
    write_table(Path(out) / ERRORS_FILE, merged)
    return merged
