"""What every command family shares: its context settings and the options spelled alike."""

from __future__ import annotations

import sys

import click

from distill.errors import DistillError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

WEIGHTS_DIR_OPTION = click.option(
    "--weights-dir", type=click.Path(file_okay=False), default=None,
    help="Folder holding teacher weights. Default: $DISTILL_WEIGHTS_DIR, else "
    "~/.cache/distill/weights (ImageNet student weights in its students/ subfolder).",
)
NO_PROGRESS_OPTION = click.option("--no-progress", is_flag=True, help="Hide the progress bars.")


def show_progress(no_progress: bool) -> bool:
    """Bars only where a person watches: not with --no-progress, not into a pipe or a log."""
    return not no_progress and sys.stderr.isatty()


def parse_options(options: tuple[str, ...]) -> dict:
    """`backbone=vgg16` → {"backbone": "vgg16"}; values parse as YAML scalars."""
    from distill.config import parse_yaml  # on first use: `distill --help` stays light

    parsed = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not (sep and key):
            raise DistillError(f"bad option {option!r}; expected KEY=VALUE")
        parsed[key.strip()] = parse_yaml(value, f"option {key.strip()}")
    return parsed
