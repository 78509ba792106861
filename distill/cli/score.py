"""`distill score` and `distill teachers`: raw teacher scores of files, and the zoo."""

from __future__ import annotations

import csv
import json
import math
import os
import sys

import click

from distill.cli._common import CONTEXT, NO_PROGRESS_OPTION, WEIGHTS_DIR_OPTION, show_progress
from distill.errors import DistillCommand


@click.command(cls=DistillCommand, context_settings=CONTEXT)
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--teachers", "teacher_names", default="offline", show_default=True,
              help="Comma-separated teachers (see `distill teachers`) or named sets: "
              "offline = brisque,piqe,technical; full = all six.")
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
@NO_PROGRESS_OPTION
def score(paths, teacher_names, options, fmt, embeddings, embedding_column, draft_size,
          weights_dir, no_progress):
    """Print raw teacher scores for images or folders (recursively).

    With no PATHS, scores the sample photos that installed packages ship (offline).

    Each input gets one row; inputs that cannot be decoded or scored get an `error`
    column saying why, and the run goes on.
    """
    from distill.labeling import score as run

    if not (paths or embeddings):
        click.echo("distill: no paths given; scoring the sample photos that scikit-image, "
                   "matplotlib, scikit-learn and pyiqa ship", err=True)
    result = run(paths, teachers=teacher_names, options=options, embeddings=embeddings,
                 embedding_column=embedding_column, draft_size=draft_size,
                 weights_dir=weights_dir, progress=show_progress(no_progress))
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


@click.command("teachers", cls=DistillCommand, context_settings=CONTEXT)
def list_teachers_command():
    """List the registered teachers and what they measure."""
    from teachers.registry import TEACHERS

    for name in TEACHERS.names():
        click.echo(f"{name:16s} {TEACHERS.describe(name)}")
