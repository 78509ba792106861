"""Re-fuse a labeling run from its stored raw scores, without running a teacher again."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pyarrow as pa

from distill import run_folder, scoring
from distill.config import from_mapping, load_yaml


def fuse_run(out: Path, fusion: scoring.FusionConfig) -> pa.Table:
    """Recompute norm_* and the fused columns of every shard from its stored raw scores;
    returns image_id and the fused columns of every row, in shard order.

    Reference normalisation is a function of one row, so each shard is fused alone and only
    one is held at a time (10 M rows are 10 k shards read, fused and written one by one);
    rank normalisation and `keep_top_percent` rank a row among the whole run, the one case
    that reads every shard at once."""
    files = run_folder.label_files(out)
    if fusion.normalisation == "reference" and fusion.keep_top_percent is None:
        summaries = [_fuse_shard(path, fusion) for path in files]
    else:
        tables = [run_folder.read_parquet(f) for f in files]
        nonempty = [t for t in tables if t.num_rows]
        fused = (scoring.apply(pa.concat_tables(nonempty, promote_options="default"), fusion)
                 if nonempty else None)
        summaries, offset = [], 0
        for path, table in zip(files, tables):
            if table.num_rows:
                shard = fused.slice(offset, table.num_rows)
                run_folder.write_table(path, shard)
                summaries.append(_summary(shard))
                offset += table.num_rows
    summaries = [table for table in summaries if table is not None]
    if not summaries:
        return pa.table({"image_id": pa.array([], pa.string()), "tier": pa.array([], pa.int8()),
                         "label": pa.array([], pa.string())})
    return pa.concat_tables(summaries, promote_options="default")


_SUMMARY_COLUMNS = ["image_id", *run_folder.FUSED_COLUMNS]


def _fuse_shard(path: Path, fusion: scoring.FusionConfig) -> pa.Table | None:
    table = run_folder.read_parquet(path)
    if not table.num_rows:
        return None
    fused = scoring.apply(table, fusion)
    run_folder.write_table(path, fused)
    return _summary(fused)


def _summary(fused: pa.Table) -> pa.Table:
    return fused.select([c for c in _SUMMARY_COLUMNS if c in fused.column_names])


def apply_fusion(labels_dir: str | Path, fusion: scoring.FusionConfig) -> pa.Table:
    """Re-fuse every shard with `fusion` and record it in the run (manifest and run.json)."""
    fused = fuse_run(Path(labels_dir), fusion)
    run_folder.record_fusion(Path(labels_dir), asdict(fusion))
    return fused


def fuse(labels_dir: str | Path, config: str | Path | None = None, *,
         keep_threshold: float | None = None, keep_top_percent: float | None = None,
         normalisation: str | None = None) -> dict:
    """`distill fuse`: the run's fusion (or the `fusion:` section of the YAML `config`) with
    the given keys changed, applied to every shard. Returns the keep / trash counts."""
    run_folder.require_complete(Path(labels_dir))  # rank normalisation needs the whole pool
    fusion = (load_yaml(config).get("fusion") if config
              else run_folder.manifest_config(Path(labels_dir), "fusion")) or {}
    overrides = {"keep_threshold": keep_threshold, "keep_top_percent": keep_top_percent,
                 "normalisation": normalisation}
    fusion.update({k: v for k, v in overrides.items() if v is not None})
    fused = apply_fusion(labels_dir, from_mapping(scoring.FusionConfig, fusion, "fusion."))
    keep = sum(1 for value in fused.column("label").to_pylist() if value == "keep")
    return {"rows": fused.num_rows, "keep": keep, "trash": fused.num_rows - keep}
