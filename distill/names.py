"""File names as text, reversibly: the one rule for every path that goes into a table, a
report or a message, and comes back out to open the file.

A POSIX file name is bytes. Python hands a name that is not valid UTF-8 (an old camera card,
a zip made on Windows) to us as a str holding each undecodable byte as a lone surrogate
(`os.fsdecode`'s surrogateescape), and parquet string columns, CSV and JSON writers cannot
hold a lone surrogate. So a name is stored as `as_text(name)`: valid UTF-8 names unchanged,
except that a backslash is doubled, and every byte that is not UTF-8 written as `\\xNN`. It
is valid text everywhere, readable ("IMG_\\xe9t\\xe9.jpg"), and `as_path(text)` gives back the
exact name to open (the same bytes through `os.fsencode`).
"""

from __future__ import annotations

import os
import re

_ESCAPED = re.compile(r"\\(\\|x[0-9a-f]{2})")
_UNDECODED = re.compile("[\udc80-\udcff]")  # surrogateescape's stand-ins for bytes


def as_text(name: str | bytes | os.PathLike) -> str:
    """A file name (str, bytes or path) as text that any writer holds; reversible."""
    raw = name if isinstance(name, bytes) else _name_bytes(os.fspath(name))
    text = raw.decode("utf-8", "surrogateescape").replace("\\", "\\\\")
    return _UNDECODED.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)


def as_path(text: str) -> str:
    """The name `as_text` wrote, as the str `open` and `os` functions take."""
    if "\\" not in text:
        return text
    return _ESCAPED.sub(lambda m: "\\" if m.group(1) == "\\" else
                        chr(0xDC00 + int(m.group(1)[1:], 16)), text)


def _name_bytes(name: str | bytes) -> bytes:
    if isinstance(name, bytes):
        return name
    try:
        return os.fsencode(name)
    except UnicodeEncodeError:  # a surrogate no file system gave (e.g. "\ud800" from JSON)
        return name.encode("utf-8", "surrogatepass")
