"""What every command family shares: its context settings and the options spelled alike."""

from __future__ import annotations

import sys

import click

from distill.errors import FINISH, PREPARE, DistillError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

WEIGHTS_DIR_OPTION = click.option(
    "--weights-dir", type=click.Path(file_okay=False), default=None,
    help="Folder holding teacher weights. Default: $DISTILL_WEIGHTS_DIR, else "
    "~/.cache/distill/weights (ImageNet student weights in its students/ subfolder).",
)
NO_PROGRESS_OPTION = click.option("--no-progress", is_flag=True, help="Hide the progress bars.")


class RunFolder(click.Path):
    """A labeling run given to a later stage (`--labels RUN`): a local folder, or an
    object-storage prefix (s3://bucket/run). A remote run is mirrored into the local cache
    when the command starts (`remote_run.mirror`: only the objects that changed are
    pulled), the command works on that folder, and what it wrote into the run (dedup.parquet,
    human.parquet, re-fused shards) is pushed back once it succeeded. The one place the CLI
    resolves a run."""

    def __init__(self):
        super().__init__(exists=True, file_okay=False)

    def convert(self, value, param, ctx):
        from distill import remote

        if not (isinstance(value, str) and remote.is_remote(value)):
            return super().convert(value, param, ctx)
        if ctx is not None and param is not None:  # mirrored inside the error boundary
            ctx.meta.setdefault(PREPARE, {})[param.name] = lambda url: _mirror(url, ctx)
        return value


def _mirror(url: str, ctx: click.Context) -> str:
    from distill import remote_run

    folder = remote_run.mirror(url)
    ctx.meta.setdefault(FINISH, []).append(lambda: remote_run.push_changed(url, folder))
    return str(folder)


RUN_FOLDER = RunFolder()


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
