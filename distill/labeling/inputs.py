"""Freeze a source's enumeration into inputs.parquet, once, streaming.

The list is never held whole: the source's item batches (`Source.batches`: a manifest's
come straight from Arrow) are cut into one row group per shard and written as they come,
so a worker later reads only its own shard's rows (`run_folder.read_shard_inputs`). Keys
must be distinct; that is checked in Arrow on the written key column before the file takes
its name, so a source that repeats a key leaves no inputs.parquet behind.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from distill import run_folder
from distill.errors import ConfigError
from distill.sources import Source, absolute_source


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
    with tqdm(desc="listing inputs", unit="img", leave=False, disable=not progress) as bar:
        return run_folder.write_inputs(out, _shards(source, shard_size, bar),
                                       {b"source": fingerprint},
                                       check=lambda partial: _refuse_repeated_keys(partial, source))


def _shards(source: Source, shard_size: int, bar: tqdm) -> Iterator[pa.Table]:
    """The source's items as INPUT_SCHEMA tables of exactly `shard_size` rows (the last: the
    rest), each with its image ids."""
    pending: list[pa.Table] = []
    held = 0
    for batch in source.batches(min(shard_size, 65536)):
        pending.append(batch)
        held += batch.num_rows
        bar.update(batch.num_rows)
        if held >= shard_size:
            table = pa.concat_tables(pending)
            start = 0
            while table.num_rows - start >= shard_size:
                yield _with_ids(source.name, table.slice(start, shard_size))
                start += shard_size
            pending, held = [table.slice(start)], table.num_rows - start
    if held:
        yield _with_ids(source.name, pa.concat_tables(pending))


def _with_ids(source_name: str, items: pa.Table) -> pa.Table:
    ids = run_folder.image_ids(source_name, items.column("key").to_pylist())
    return items.add_column(0, "image_id", pa.array(ids, pa.string()))


def _refuse_repeated_keys(partial: Path, source: Source) -> None:
    keys = pq.read_table(partial, columns=["key"]).column("key")
    if pc.count_distinct(keys).as_py() == len(keys):
        return
    counts = pc.value_counts(keys)
    key = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
    paths = pq.read_table(partial, columns=["path"], filters=pc.field("key") == key)
    first, second = paths.column("path").to_pylist()[:2]
    raise ConfigError(f"source {source.name!r} yields the key {key!r} twice ({first} and "
                      f"{second}); each input needs its own key")


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
