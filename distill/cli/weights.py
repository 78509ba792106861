"""`distill weights list | fetch | verify`: the teachers' weights files."""

from __future__ import annotations

import sys

import click

from distill.cli._common import CONTEXT, WEIGHTS_DIR_OPTION
from distill.errors import DistillError, DistillGroup


@click.group(cls=DistillGroup, context_settings=CONTEXT)
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


