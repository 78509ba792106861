"""Errors the CLI turns into one line on stderr instead of a traceback, and the CLI's one
error boundary that does it."""

import sys

import click


class DistillError(Exception):
    """A failure the user can act on; its message is the whole story, on one line."""


class WeightsMissingError(DistillError):
    """A teacher's weights file is not on disk; the message names the fetch command."""


class ConfigError(DistillError):
    """A bad option or config key; the message names the key."""


def first_line(exc: BaseException, default: str | None = None) -> str:
    """The first line of an exception's text (a library's message may run to a traceback's
    length), else `default`, else the exception's type name."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__ if default is None else default


# Where a command writes, for an OS error that names no file (a full disk seen on close()).
OUTPUT_PARAMS = ("out", "dest", "workdir", "labels_dir", "review_dir", "audit_dir")


def error_line(exc: BaseException, writing_under: str | None = None) -> str | None:
    """The one line a user sees for a failure they can act on; None for a real bug."""
    if isinstance(exc, DistillError):
        return str(exc)
    if isinstance(exc, OSError):
        # Read-only folders, full disks, missing permissions: name the file and what happened.
        what = exc.strerror or str(exc)
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f)
        if not where and writing_under:
            where = f"writing under {writing_under}"
        return f"{where}: {what}" if where else what
    return None


# ctx.meta keys a parameter type may fill, run inside the boundary below: PREPARE maps a
# parameter's name to a function of its value giving what the command takes (a remote run
# mirrored into a local folder: slow, and failing as one line); FINISH lists what to do once
# the command succeeded (push back what it wrote).
PREPARE = "distill.prepare"
FINISH = "distill.finish"


class DistillCommand(click.Command):
    """The CLI's one error boundary: a command's known failures print one line on stderr
    and exit 2, with no traceback for the user; anything else is a bug and keeps its own."""

    def invoke(self, ctx):
        try:
            for name, prepare in ctx.meta.pop(PREPARE, {}).items():
                ctx.params[name] = prepare(ctx.params[name])
            result = super().invoke(ctx)
            for finish in ctx.meta.pop(FINISH, []):
                finish()
            return result
        except (DistillError, OSError) as exc:
            output = next((ctx.params[k] for k in OUTPUT_PARAMS if ctx.params.get(k)), None)
            click.echo(f"distill: error: {error_line(exc, output)}", err=True)
            sys.exit(2)


class DistillGroup(click.Group):
    """A group whose commands (and subgroups' commands) all get that boundary."""

    command_class = DistillCommand
    group_class = type  # subgroups are DistillGroups too
