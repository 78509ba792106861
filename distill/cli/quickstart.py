"""`distill quickstart`: the whole engine on its embedded offline default."""

from __future__ import annotations

import click

from distill.cli._common import CONTEXT, NO_PROGRESS_OPTION
from distill.errors import DistillCommand


@click.command(cls=DistillCommand, context_settings=CONTEXT)
@click.option("--workdir", type=click.Path(file_okay=False), default="quickstart", show_default=True,
              help="Where the sample pool, labels, student and report go (recreated each run).")
@click.option("--size", type=click.Choice(["full", "small"]), default="full", show_default=True,
              help="small: a reduced pool for smoke tests.")
@click.option("--seed", type=int, default=0, show_default=True)
@NO_PROGRESS_OPTION
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


