"""Re-fuse a labeling run from its stored raw scores, without running a teacher again."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pyarrow as pa

from distill import run_folder, scoring
from distill.config import from_mapping, load_yaml


def fuse_run(out: Path, fusion: scoring.FusionConfig) -> pa.Table:
    """Recompute norm_* and the fused columns of every shard from its stored raw scores."""
    files = run_folder.label_files(out)
    tables = [run_folder.read_parquet(f) for f in files]
    nonempty = [t for t in tables if t.num_rows]
    if not nonempty:
        return pa.table({"tier": pa.array([], pa.int8()), "label": pa.array([], pa.string())})
    fused = scoring.apply(pa.concat_tables(nonempty, promote_options="default"), fusion)
    offset = 0
    for path, table in zip(files, tables):
        if table.num_rows:
            run_folder.write_table(path, fused.slice(offset, table.num_rows))
            offset += table.num_rows
    return fused


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
