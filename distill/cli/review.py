"""`distill ava to-labels`, `active`, `import-labels` and `audit`: people in the loop."""

from __future__ import annotations

from pathlib import Path

import click

from distill.cli._common import CONTEXT, NO_PROGRESS_OPTION, RUN_FOLDER
from distill.errors import DistillCommand, DistillError, DistillGroup


@click.group(cls=DistillGroup, context_settings=CONTEXT)
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
@NO_PROGRESS_OPTION
def ava_to_labels(root, out, threshold, percentile, shard_size, no_progress):
    """Write AVA as label shards (source=human) in the pseudo-label schema.

    `distill train` can then mix human AVA labels with pseudo-labels.
    """
    from distill.review import ava_to_labels as convert

    if threshold is None and percentile is None:
        threshold = 6.0
    summary = convert(Path(root), Path(out), threshold, percentile, shard_size=shard_size,
                      progress=not no_progress)
    click.echo(f"inputs {summary['inputs']}  labeled {summary['labeled']}  errors {summary['errors']}  "
               f"keep {summary['keep']} (mean >= {summary['keep_threshold']})  ->  {out}")


@click.command(cls=DistillCommand, context_settings=CONTEXT)
@click.option("--labels", "labels_dir", required=True, type=RUN_FOLDER,
              help="Output folder of `distill label`.")
@click.option("--budget", type=int, default=200, show_default=True, help="Images to queue.")
@click.option("--out", "review_dir", type=click.Path(file_okay=False), default=None,
              help="Where to write queue.csv and index.html (default LABELS/review).")
@click.option("--seed", type=int, default=0, show_default=True)
def active(labels_dir, budget, review_dir, seed):
    """Queue the images a person should label next: uncertain keep_prob, teacher
    disagreement, spread across embedding clusters. Writes a CSV and an HTML contact sheet."""
    from distill.review import build_queue

    result = build_queue(labels_dir, budget, review_dir, seed)
    click.echo(f"queued {result['queued']} of {result['pool']} images from {result['clusters']} "
               f"clusters\n  {result['queue']}\n  {result['sheet']}")


@click.command("import-labels", cls=DistillCommand, context_settings=CONTEXT)
@click.argument("labels_csv", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--labels", "labels_dir", type=RUN_FOLDER,
              help="Output folder of `distill label` to merge the CSV into.")
@click.option("--from-xmp", "xmp_folder", type=click.Path(exists=True, file_okay=False),
              help="Instead of a CSV: read the ratings and pick labels in FOLDER's sidecars "
              "(digiKam, darktable, Lightroom) as human labels.")
@click.option("--out", type=click.Path(file_okay=False),
              help="With --from-xmp: the label run to write (train on it, or --finetune).")
@click.option("--keep-stars", type=click.IntRange(1, 5), default=4, show_default=True,
              help="With --from-xmp: stars from which a rated photo counts as keep (a pick "
              "label, or a -1 reject, decides first).")
@NO_PROGRESS_OPTION
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
        from distill.review import xmp_to_labels

        result = xmp_to_labels(xmp_folder, out, keep_stars=keep_stars, progress=not no_progress)
        click.echo(f"{result['labeled']} of {result['photos']} photos carry a pick "
                   f"(keep {result['keep']}, trash {result['labeled'] - result['keep']}; "
                   f"{result['unrated']} unrated, {result['errors']} unreadable)  ->  {out}")
        return
    if not (labels_csv and labels_dir):
        raise DistillError("give LABELS_CSV and --labels RUN, or --from-xmp FOLDER --out RUN")
    from distill.review import import_labels as merge

    result = merge(labels_dir, labels_csv)
    click.echo(f"imported {result['imported']} human labels ({result['human_total']} in total) "
               f"into {result['file']}")
    for problem in result["skipped"]:
        click.echo(f"skipped {problem}", err=True)


@click.command(cls=DistillCommand, context_settings=CONTEXT)
@click.option("--labels", "labels_dir", required=True, type=RUN_FOLDER,
              help="Output folder of `distill label`.")
@click.option("--per-section", type=int, default=24, show_default=True)
@click.option("--out", "audit_dir", type=click.Path(file_okay=False), default=None,
              help="Where to write index.html (default LABELS/audit).")
def audit(labels_dir, per_section, audit_dir):
    """Write a static HTML gallery of the pseudo-labels: a sample per tier and the images the
    teachers disagree on most, with every teacher's score."""
    from distill.review import build_audit

    result = build_audit(labels_dir, per_section, audit_dir)
    click.echo(f"audit of {result['shown']} images: {result['sheet']}")


