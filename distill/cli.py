"""The `distill` command: parses arguments and calls the stage modules, nothing else."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
from functools import wraps

import click

from distill.errors import DistillError

WEIGHTS_DIR_OPTION = click.option(
    "--weights-dir", type=click.Path(file_okay=False), default=None,
    help="Folder holding teacher weights. Default: $DISTILL_WEIGHTS_DIR, else "
    "~/.cache/distill/weights.",
)


def one_line_errors(command):
    """Known failures print one line on stderr and exit 2: no traceback for the user."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except DistillError as exc:
            click.echo(f"distill: error: {exc}", err=True)
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
@one_line_errors
def score(paths, teacher_names, options, fmt, embeddings, embedding_column, draft_size,
          weights_dir, no_progress):
    """Print raw teacher scores for images or folders (recursively).

    With no PATHS, scores the sample photos that installed packages ship (offline).

    Each input gets one row; inputs that cannot be decoded or scored get an `error`
    column saying why, and the run goes on.
    """
    from distill import label

    names, teacher_options = label.expand_teacher_sets(
        [n.strip() for n in teacher_names.split(",") if n.strip()])
    for teacher, opts in label.parse_teacher_options(options).items():
        teacher_options.setdefault(teacher, {}).update(opts)
    if embeddings:
        if names != ["clip_aesthetic"]:
            raise DistillError("--embeddings is scored by --teachers clip_aesthetic alone")
        teacher_options.setdefault("clip_aesthetic", {})["embeddings_only"] = True
        (teacher,) = label.build_teachers(names, teacher_options, weights_dir)
        ids, matrix = label.read_embeddings(embeddings, embedding_column)
        scores = teacher.score_embeddings(matrix).scores
        rows = [{"id": i, "score_clip_aesthetic": float(s)} for i, s in zip(ids, scores)]
    else:
        if not paths:
            from distill.sources import packaged_photos

            paths = packaged_photos()
            click.echo(f"distill: no paths given; scoring the {len(paths)} sample photos that "
                       "scikit-image, matplotlib and pyiqa ship", err=True)
        teachers = label.build_teachers(names, teacher_options, weights_dir)
        result = label.score_paths(paths, teachers, draft_size=draft_size,
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
@one_line_errors
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


if __name__ == "__main__":
    main()
