"""The `distill` command: parses arguments and calls the stage modules, nothing else."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys

import click

from distill.errors import DistillError, DistillGroup

WEIGHTS_DIR_OPTION = click.option(
    "--weights-dir", type=click.Path(file_okay=False), default=None,
    help="Folder holding teacher weights. Default: $DISTILL_WEIGHTS_DIR, else "
    "~/.cache/distill/weights.",
)


@click.group(cls=DistillGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="distill")
def main():
    """Pseudo-label photos with quality teachers, dedup them with FAISS, and distill a
    compact keep/trash student with Accelerate."""
    # pyiqa and timm log model creation at INFO; the user asked for scores, not that.
    logging.getLogger().setLevel(logging.WARNING)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--teachers", "teacher_names", default="offline", show_default=True,
              help="Comma-separated teachers (see `distill teachers`) or named sets from "
              "configs/teachers.yaml: offline = brisque,piqe,technical; full = all six.")
@click.option("--option", "-o", "options", multiple=True, metavar="TEACHER.KEY=VALUE",
              help="Teacher option, repeatable, e.g. -o nima.backbone=vgg16 "
              "-o clip_aesthetic.variant=vit_b_32.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.option("--embeddings", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Score precomputed CLIP embeddings (.npy or parquet) with clip_aesthetic "
              "instead of images.")
@click.option("--embedding-column", default=None, help="Parquet column holding the vectors.")
@click.option("--draft-size", type=int, default=None,
              help="Let JPEGs decode straight to about this many px per side (faster; "
              "changes resolution-dependent scores).")
@WEIGHTS_DIR_OPTION
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def score(paths, teacher_names, options, fmt, embeddings, embedding_column, draft_size,
          weights_dir, no_progress):
    """Print raw teacher scores for images or folders (recursively).

    With no PATHS, scores the sample photos that installed packages ship (offline).

    Each input gets one row; inputs that cannot be decoded or scored get an `error`
    column saying why, and the run goes on.
    """
    from distill import score as scoring

    names, teacher_options = scoring.expand_teacher_sets(
        [n.strip() for n in teacher_names.split(",") if n.strip()])
    for teacher, opts in scoring.parse_teacher_options(options).items():
        teacher_options.setdefault(teacher, {}).update(opts)
    if embeddings:
        if names != ["clip_aesthetic"]:
            raise DistillError("--embeddings is scored by --teachers clip_aesthetic alone")
        teacher_options.setdefault("clip_aesthetic", {})["embeddings_only"] = True
        (teacher,) = scoring.build_teachers(names, teacher_options, weights_dir)
        ids, matrix = scoring.read_embeddings(embeddings, embedding_column)
        scores = teacher.score_embeddings(matrix).scores
        rows = [{"id": i, "score_clip_aesthetic": float(s)} for i, s in zip(ids, scores)]
    else:
        if not paths:
            from distill.sources import packaged_photos

            paths = packaged_photos()
            click.echo(f"distill: no paths given; scoring the {len(paths)} sample photos that "
                       "scikit-image, matplotlib, scikit-learn and pyiqa ship", err=True)
        teachers = scoring.build_teachers(names, teacher_options, weights_dir)
        result = scoring.score_paths(paths, teachers, draft_size=draft_size,
                                   progress=not no_progress and sys.stderr.isatty())
        rows = result.rows
        if result.errors:
            click.echo(f"distill: {len(result.errors)} of {len(rows)} inputs not scored "
                       "(see the error column)", err=True)
    _print_rows(rows, fmt)


def _print_rows(rows: list[dict], fmt: str) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    if fmt == "json":
        clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                  for k, v in row.items()} for row in rows]
        click.echo(json.dumps(clean, indent=2))
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        shown = [c for c in columns if c not in ("sha1", "notes", "stage")]
        paths = [row["path"] for row in rows if "path" in row]
        root = os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else ""
        if root:
            click.echo(f"under {root}/")
            rows = [{**row, "path": os.path.relpath(row["path"], root)} for row in rows]
        cells = [[_cell(row.get(c)) for c in shown] for row in rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(shown)]
        for line in [shown, *cells]:
            click.echo("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip())


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


@main.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML config (see configs/label_*.yaml); the flags below override it.")
@click.option("--source", default=None,
              help="A folder, file list (.txt/.csv), parquet or tar shards; the kind is guessed.")
@click.option("--teachers", "teacher_names", default=None,
              help="Comma-separated teachers or a named set (default: offline).")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--shard-size", type=int, default=None, help="Inputs per shard (default 1000).")
@click.option("--batch-size", type=int, default=None, help="Images per teacher batch (default 16).")
@click.option("--workers", type=int, default=None,
              help="DataLoader processes decoding ahead of the teachers (default: none on "
              "<= 2 cores per process, else cores/4).")
@click.option("--decode-threads", type=int, default=None,
              help="Without worker processes: threads decoding ahead in the labeling process "
              "(default 0: decode between teacher batches, fastest when the teachers use every core).")
@click.option("--max-side", type=int, default=None,
              help="Long side the teachers see, px (default 768; JPEGs decode in draft mode).")
@click.option("--max-shards", type=click.IntRange(min=1), default=None,
              help="Label at most this many shards now and stop; the same command resumes.")
@WEIGHTS_DIR_OPTION
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def label(config_file, source, teacher_names, out, shard_size, batch_size, workers,
          decode_threads, max_side, max_shards, weights_dir, no_progress):
    """Pseudo-label a pool of images into resumable parquet shards.

    Writes OUT/shards/labels-NNNNN.parquet (+ embeddings-NNNNN.npy for CLIP teachers),
    OUT/errors.parquet and OUT/manifest.json. Killed runs resume exactly with the same
    command. Under `torchrun --nproc_per_node N` or `accelerate launch` each process labels
    its own shards. Example:

        distill label --source ~/photos --teachers brisque,piqe --out runs/photos
    """
    from distill import label as labeling
    from distill import score as scoring
    from distill.config import LabelConfig, from_mapping, load_yaml

    mapping = load_yaml(config_file) if config_file else {}
    if source:
        from distill.sources import guess_source

        mapping["source"] = guess_source(source)
    if teacher_names:
        names, options = scoring.expand_teacher_sets(teacher_names.split(","))
        mapping["teachers"] = {name: options.get(name, {}) for name in names}
    flags = {"out": out, "shard_size": shard_size, "batch_size": batch_size,
             "weights_dir": weights_dir}
    mapping.update({k: v for k, v in flags.items() if v is not None})
    decode = dict(mapping.get("decode") or {})
    overrides = {"workers": workers, "threads": decode_threads, "max_side": max_side}
    decode.update({k: v for k, v in overrides.items() if v is not None})
    mapping["decode"] = decode
    for key in ("source", "out"):
        if key not in mapping:
            raise DistillError(f"give --{key} (or `{key}:` in --config)")
    config = from_mapping(LabelConfig, mapping)
    summary = labeling.run_label(config, progress=not no_progress, max_shards=max_shards)
    if summary:
        _print_summary(summary, config.out)


def _print_summary(summary: dict, out: str) -> None:
    tiers = summary["tiers"]
    ratio = "n/a" if summary["keep_ratio"] is None else f"{summary['keep_ratio']:.1%}"
    click.echo(
        f"inputs {summary['inputs']}  labeled {summary['labeled']}  errors {summary['errors']}  "
        f"keep {summary['keep']} ({ratio})\n"
        f"tiers: rejected {tiers['rejected']}  pending {tiers['pending']}  accepted {tiers['accepted']}\n"
        f"{summary['images_per_s']} images/s over {summary['seconds']} s  ->  {out}"
    )


@main.command()
@click.option("--labels", "labels_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Output folder of `distill label`.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML whose `fusion:` section replaces the run's (else the manifest's).")
@click.option("--keep-threshold", type=float, default=None, help="Quality at which to keep.")
@click.option("--keep-top-percent", type=float, default=None, help="Also keep the top P %.")
@click.option("--normalisation", type=click.Choice(["reference", "rank"]), default=None)
def fuse(labels_dir, config_file, keep_threshold, keep_top_percent, normalisation):
    """Recompute norm_*, quality, keep_prob, label, tier and confidence from the stored raw
    teacher scores, without running any teacher again."""
    import json
    from pathlib import Path

    from distill import label as labeling
    from distill import shards
    from distill.config import from_mapping, load_yaml
    from distill.fuse import FusionConfig

    manifest_path = Path(labels_dir) / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    fusion = (load_yaml(config_file).get("fusion") if config_file
              else manifest.get("config", {}).get("fusion")) or {}
    overrides = {"keep_threshold": keep_threshold, "keep_top_percent": keep_top_percent,
                 "normalisation": normalisation}
    fusion.update({k: v for k, v in overrides.items() if v is not None})
    config = from_mapping(FusionConfig, fusion, "fusion.")
    fused = labeling.fuse_run(Path(labels_dir), config)
    if manifest:
        from dataclasses import asdict

        manifest["config"]["fusion"] = asdict(config)
        shards.write_json(manifest_path, manifest)
    labeling.record_fusion(Path(labels_dir), config)
    keep = sum(1 for value in fused.column("label").to_pylist() if value == "keep")
    click.echo(f"fused {fused.num_rows} rows: keep {keep}, trash {fused.num_rows - keep}")


@main.command()
@click.option("--labels", "labels_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Output folder of `distill label`.")
@click.option("--reference", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Human scores: an AVA.txt (image id = file stem of each labeled path).")
@click.option("--save", "save_to", type=click.Path(dir_okay=False), default=None,
              help="YAML to write the fitted `fusion:` section into (default "
              "LABELS/fusion_calibrated.yaml); other keys of an existing file are kept.")
@click.option("--apply", "apply_now", is_flag=True, help="Also re-fuse the shards with it now.")
def calibrate(labels_dir, reference, save_to, apply_now):
    """Fit fusion weights, keep threshold and temperature against human scores.

    Then `distill fuse --labels LABELS --config FILE` applies them (or pass --apply).
    """
    import json
    from pathlib import Path

    from distill import calibrate as calibration
    from distill import label as labeling
    from distill.config import from_mapping
    from distill.fuse import FusionConfig

    manifest = Path(labels_dir) / "manifest.json"
    fusion = json.loads(manifest.read_text())["config"]["fusion"] if manifest.exists() else {}
    base = from_mapping(FusionConfig, fusion, "fusion.")
    fitted, report = calibration.calibrate(Path(labels_dir), Path(reference), base)
    target = Path(save_to) if save_to else Path(labels_dir) / "fusion_calibrated.yaml"
    calibration.save_fusion(target, fitted)
    click.echo(json.dumps(report, indent=2))
    click.echo(f"saved fusion config to {target}")
    if apply_now:
        labeling.fuse_run(Path(labels_dir), fitted)
        labeling.record_fusion(Path(labels_dir), fitted)
        click.echo("re-fused the shards with it")


@main.group()
def ava():
    """AVA helpers: turn its human votes into label shards."""


@ava.command("to-labels")
@click.option("--root", required=True, type=click.Path(exists=True, file_okay=False),
              help="AVA folder: AVA.txt and images/<id>.jpg.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--threshold", type=float, default=None,
              help="Keep when the mean vote is at least this (the seed's 6).")
@click.option("--percentile", type=float, default=None,
              help="Keep the images above this percentile of mean votes (the seed's 50).")
@click.option("--shard-size", type=int, default=1000, show_default=True)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def ava_to_labels(root, out, threshold, percentile, shard_size, no_progress):
    """Write AVA as label shards (source=human) in the pseudo-label schema.

    `distill train` can then mix human AVA labels with pseudo-labels.
    """
    from pathlib import Path

    from distill.human import ava_to_labels as convert

    if threshold is None and percentile is None:
        threshold = 6.0
    summary = convert(Path(root), Path(out), threshold, percentile, shard_size=shard_size,
                      progress=not no_progress)
    click.echo(f"inputs {summary['inputs']}  labeled {summary['labeled']}  errors {summary['errors']}  "
               f"keep {summary['keep']} (mean >= {summary['keep_threshold']})  ->  {out}")


@main.command()
@click.option("--labels", "labels_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Output folder of `distill label`.")
@click.option("--budget", type=int, default=200, show_default=True, help="Images to queue.")
@click.option("--out", "review_dir", type=click.Path(file_okay=False), default=None,
              help="Where to write queue.csv and index.html (default LABELS/review).")
@click.option("--seed", type=int, default=0, show_default=True)
def active(labels_dir, budget, review_dir, seed):
    """Queue the images a person should label next: uncertain keep_prob, teacher
    disagreement, spread across embedding clusters. Writes a CSV and an HTML contact sheet."""
    from distill.active import build_queue

    result = build_queue(labels_dir, budget, review_dir, seed)
    click.echo(f"queued {result['queued']} of {result['pool']} images from {result['clusters']} "
               f"clusters\n  {result['queue']}\n  {result['sheet']}")


@main.command("import-labels")
@click.argument("labels_csv", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--labels", "labels_dir", type=click.Path(exists=True, file_okay=False),
              help="Output folder of `distill label` to merge the CSV into.")
@click.option("--from-xmp", "xmp_folder", type=click.Path(exists=True, file_okay=False),
              help="Instead of a CSV: read the ratings and pick labels in FOLDER's sidecars "
              "(digiKam, darktable, Lightroom) as human labels.")
@click.option("--out", type=click.Path(file_okay=False),
              help="With --from-xmp: the label run to write (train on it, or --finetune).")
@click.option("--keep-stars", type=click.IntRange(1, 5), default=4, show_default=True,
              help="With --from-xmp: stars from which a rated photo counts as keep (a pick "
              "label, or a -1 reject, decides first).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def import_labels(labels_csv, labels_dir, xmp_folder, out, keep_stars, no_progress):
    """Take a person's labels: a review CSV (image_id or path, and human_label keep/trash
    and/or human_score 1-10) merged into --labels as source=human, overriding the
    pseudo-labels in training; or, with --from-xmp, a photographer's past picks as a label
    run of their own. Examples:

    \b
      distill import-labels runs/photos/review/queue.csv --labels runs/photos
      distill import-labels --from-xmp ~/Pictures/2025 --out runs/my-picks
      distill train --labels runs/my-picks --finetune student.pt --out runs/mine
    """
    if xmp_folder:
        if labels_csv or labels_dir or not out:
            raise DistillError("--from-xmp FOLDER takes --out RUN (and no CSV or --labels)")
        from distill.human import xmp_to_labels

        result = xmp_to_labels(xmp_folder, out, keep_stars=keep_stars, progress=not no_progress)
        click.echo(f"{result['labeled']} of {result['photos']} photos carry a pick "
                   f"(keep {result['keep']}, trash {result['labeled'] - result['keep']}; "
                   f"{result['unrated']} unrated, {result['errors']} unreadable)  ->  {out}")
        return
    if not (labels_csv and labels_dir):
        raise DistillError("give LABELS_CSV and --labels RUN, or --from-xmp FOLDER --out RUN")
    from distill.active import import_labels as merge

    result = merge(labels_dir, labels_csv)
    click.echo(f"imported {result['imported']} human labels ({result['human_total']} in total) "
               f"into {result['file']}")
    for problem in result["skipped"]:
        click.echo(f"skipped {problem}", err=True)


@main.command()
@click.option("--labels", "labels_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Output folder of `distill label`.")
@click.option("--per-section", type=int, default=24, show_default=True)
@click.option("--out", "audit_dir", type=click.Path(file_okay=False), default=None,
              help="Where to write index.html (default LABELS/audit).")
def audit(labels_dir, per_section, audit_dir):
    """Write a static HTML gallery of the pseudo-labels: a sample per tier and the images the
    teachers disagree on most, with every teacher's score."""
    from distill.audit import build_audit

    result = build_audit(labels_dir, per_section, audit_dir)
    click.echo(f"audit of {result['shown']} images: {result['sheet']}")


@main.command()
@click.option("--workdir", type=click.Path(file_okay=False), default="quickstart", show_default=True,
              help="Where the sample pool, labels, student and report go (recreated each run).")
@click.option("--size", type=click.Choice(["full", "small"]), default="full", show_default=True,
              help="small: a reduced pool for smoke tests.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
def quickstart(workdir, size, seed, no_progress):
    """Run the whole engine offline on photos installed packages ship: build a degraded
    sample pool, label it, dedup it, distill a student, benchmark it on held-out photos."""
    from distill.quickstart import run_quickstart

    result = run_quickstart(workdir, size, seed, progress=not no_progress)
    click.echo(f"\nquickstart ({size}, seed {seed}) in {result['seconds']} s, in {result['workdir']}")
    click.echo(f"{'stage':8s} {'seconds':>8s}  result")
    for name, stage in result["stages"].items():
        details = "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in stage.items() if k != "seconds")
        click.echo(f"{name:8s} {stage['seconds']:8.1f}  {details}")
    click.echo(f"report: {result['report']}")


@main.command("teachers")
def list_teachers_command():
    """List the registered teachers and what they measure."""
    from teachers.registry import TEACHERS

    for name in TEACHERS.names():
        click.echo(f"{name:16s} {TEACHERS.describe(name)}")


@main.group()
def weights():
    """List, fetch and verify teacher weights files."""


@weights.command("list")
@WEIGHTS_DIR_OPTION
def weights_list(weights_dir):
    """Show each weights file, its expected sha256, its size and whether it is present."""
    from teachers import weights as catalog

    click.echo(f"weights folder: {catalog.weights_dir(weights_dir)}")
    for row in catalog.status(weights_dir):
        size = f"{row['size'] / 1e6:8.1f} MB" if row["size"] else "    ? MB"
        mark = "present" if row["present"] else "missing"
        click.echo(f"{mark:8s} {row['name']:30s} {size}  sha256 {row['sha256'][:16]:16s}  "
                   f"{row['file']}")


@weights.command("fetch")
@click.argument("names", nargs=-1)
@WEIGHTS_DIR_OPTION
def weights_fetch(names, weights_dir):
    """Download (or convert) weights into the weights folder; all of them by default."""
    from teachers import weights as catalog

    unknown = [n for n in names if n not in catalog.CATALOG]
    if unknown:
        raise DistillError(f"unknown weights {', '.join(unknown)}; see `distill weights list`")
    for name in names or list(catalog.CATALOG):
        path = catalog.fetch(name, weights_dir)
        click.echo(f"fetched  {name:30s} {path}")


@weights.command("verify")
@click.argument("names", nargs=-1)
@WEIGHTS_DIR_OPTION
def weights_verify(names, weights_dir):
    """Re-hash each present weights file against its declared sha256 (exit 1 on a mismatch)."""
    from teachers import weights as catalog

    bad = False
    for name in names or list(catalog.CATALOG):
        state, detail = catalog.verify(name, weights_dir)
        bad |= state == "MISMATCH"
        click.echo(f"{state:8s} {name:30s} {detail}")
    sys.exit(1 if bad else 0)


def _register_stage_commands() -> None:
    """Stage commands that live beside their stage, each in its own cli_* module."""
    from distill.cli_bench import bench
    from distill.cli_cull import cull
    from distill.cli_dedup import dedup
    from distill.cli_train import export, train

    for command in (dedup, train, export, bench, cull):
        main.add_command(command)


_register_stage_commands()

if __name__ == "__main__":
    main()
