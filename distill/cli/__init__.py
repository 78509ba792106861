"""The `distill` command: one click group, one module per command family. Each command parses
its arguments, calls one stage's face and prints; the stages hold the logic."""

from __future__ import annotations

import logging

import click

from distill.cli import bench, cull, dedup, label, quickstart, review, score, train, weights
from distill.cli._common import CONTEXT
from distill.errors import DistillGroup


@click.group(cls=DistillGroup, context_settings=CONTEXT)
@click.version_option(package_name="distill")
def main():
    """Pseudo-label photos with quality teachers, dedup them with FAISS, and distill a
    compact keep/trash student with Accelerate."""
    # pyiqa and timm log model creation at INFO; the user asked for scores, not that.
    logging.getLogger().setLevel(logging.WARNING)


for command in (score.score, score.list_teachers_command, label.label, label.fuse,
                label.calibrate, review.ava, review.active, review.import_labels, review.audit,
                dedup.dedup, train.train, train.export, bench.bench, cull.cull,
                quickstart.quickstart, weights.weights):
    main.add_command(command)

__all__ = ["main"]
