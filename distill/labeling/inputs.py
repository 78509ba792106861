"""Freeze a source's enumeration into inputs.parquet, once, streaming.

The list is never held whole: the source's item batches (`Source.batches`: a manifest's
come straight from Arrow) are cut into one row group per shard and written as they come,
so a worker later reads only its own shard's rows (`run_folder.read_shard_inputs`). Keys
must be distinct; that is checked before the file takes its name, on 8 bytes a row (the
image ids as integers, sorted by numpy: no Python object per key), so a source that repeats
a key leaves no inputs.parquet behind.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from distill import run_folder
from distill.errors import ConfigError
from distill.sources import BATCH_ROWS, Source, absolute_source


def freeze_inputs(out: Path, source: Source, source_config: dict, shard_size: int,
                  progress: bool = False) -> int:
    """Enumerate once and keep the list: resumes and other workers see exactly these inputs.
    Returns how many there are; a run that has the list already is checked, not relisted."""
    path = Path(out) / run_folder.INPUTS_FILE
    fingerprint = _fingerprint(source_config)
    if path.exists():
        schema = run_folder.read_schema(path)
        if not _same_source((schema.metadata or {}).get(b"source"), fingerprint):
            raise ConfigError(f"{out} was labeled from another source; use a new --out")
        return pq.read_metadata(path).num_rows
    ids: list[np.ndarray] = []
    with tqdm(desc="listing inputs", unit="img", leave=False, disable=not progress) as bar:
        return run_folder.write_inputs(
            out, _whole_shards(source, shard_size, bar, ids), shard_size, {b"source": fingerprint},
            check=lambda partial: _refuse_repeated_keys(partial, source, ids, shard_size))


def _whole_shards(source: Source, shard_size: int, bar: tqdm,
                  ids: list[np.ndarray]) -> Iterator[pa.Table]:
    """The source's items as INPUT_SCHEMA tables of whole shards (the last: the rest),
    about BATCH_ROWS rows each, with their image ids; `ids` receives those as integers."""
    pending: list[pa.Table] = []
    held = 0
    whole = max(1, BATCH_ROWS // shard_size) * shard_size
    for batch in source.batches(min(whole, BATCH_ROWS)):
        pending.append(batch)
        held += batch.num_rows
        bar.update(batch.num_rows)
        if held >= whole:
            table = pa.concat_tables(pending)
            cut = held - held % shard_size
            yield _with_ids(source.name, table.slice(0, cut), ids)
            pending, held = [table.slice(cut)], held - cut
    if held:
        yield _with_ids(source.name, pa.concat_tables(pending), ids)


def _with_ids(source_name: str, items: pa.Table, ids: list[np.ndarray]) -> pa.Table:
    digests = run_folder.image_id_bytes(source_name, items.column("key").to_pylist())
    ids.append(digests.copy().view(">u8").ravel())
    return items.add_column(0, "image_id", run_folder.image_id_texts(digests))


def _refuse_repeated_keys(partial: Path, source: Source, ids: list[np.ndarray],
                          shard_size: int) -> None:
    """Distinct keys have distinct image ids (64 bits of a hash of source and key), so repeats
    are found by sorting 8 bytes a row, not by hashing every key's text. An id met twice is
    reported with the two rows' key and paths."""
    every = np.concatenate(ids) if ids else np.empty(0, ">u8")
    ordered = np.sort(every)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if not len(repeated):
        return
    first, second = np.flatnonzero(every == repeated[0])[:2]
    inputs = pq.ParquetFile(partial)
    rows = [inputs.read_row_group(int(row) // shard_size).slice(int(row) % shard_size, 1)
            .to_pylist()[0] for row in (first, second)]
    if rows[0]["key"] != rows[1]["key"]:  # 64 bits collide once in ~10^19 pairs
        raise ConfigError(f"source {source.name!r}: the keys {rows[0]['key']!r} and "
                          f"{rows[1]['key']!r} share the image id {rows[0]['image_id']}; "
                          "give the source another name")
    raise ConfigError(f"source {source.name!r} yields the key {rows[1]['key']!r} twice "
                      f"({rows[0]['path']} and {rows[1]['path']}); each input needs its own key")


def _fingerprint(source_config: dict) -> bytes:
    return repr(sorted(source_config.items())).encode()


def _same_source(recorded: bytes | None, fingerprint: bytes) -> bool:
    """Whether inputs.parquet was listed from this source; a run that recorded a relative
    path is compared with that path made absolute."""
    if recorded == fingerprint:
        return True
    try:
        old = dict(ast.literal_eval(recorded.decode()))
    except (ValueError, SyntaxError, TypeError, AttributeError, UnicodeDecodeError):
        return False
    return _fingerprint(absolute_source(old)) == fingerprint
