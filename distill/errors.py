"""Errors the CLI turns into one line on stderr instead of a traceback."""


class DistillError(Exception):
    """A failure the user can act on; its message is the whole story, on one line."""


class WeightsMissingError(DistillError):
    """A teacher's weights file is not on disk; the message names the fetch command."""


class ConfigError(DistillError):
    """A bad option or config key; the message names the key."""
