"""Objects on remote storage (s3://, gs://, hf://, https://) through fsspec: is a name remote,
read an object (whole or a byte range) under the read rule, list a prefix, open a manifest.

The read rule for remote objects is the local one's (`decode.read_bytes`): only a file, of
sane size, and what was checked is what is read. The size comes from the object's info
before a byte is fetched, and a read that returns another length is refused. Each protocol
needs its fsspec implementation installed (`s3fs` for s3://: the `[s3]` extra; `gcsfs`;
`huggingface_hub` for hf://; `aiohttp` for https://); a missing one is a one-line error.
"""

from __future__ import annotations

import posixpath
import re

# What `--source`, a file list's entries and a locator may name remotely. file:// is not here:
# a local name goes through the local rules (`sources.inside`, `decode.open_regular`).
REMOTE_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "hf", "https", "http")
# Where a run folder may live (`--out`, `remote_run`): object stores with atomic whole-object
# PUTs whose paths begin with a bucket (https:// cannot be written; an hf:// write is a commit).
RUN_PROTOCOLS = ("s3", "s3a", "gs", "gcs")
_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)


class RemoteError(Exception):
    """Why a remote object cannot be read; the message is its error row's reason."""


def protocol(name: str) -> str | None:
    match = _URL.match(name) if isinstance(name, str) else None
    return match.group(1).lower() if match else None


def is_remote(name) -> bool:
    return protocol(name) in REMOTE_PROTOCOLS


def holds_runs(name) -> bool:
    """Whether `name` is an object-storage prefix a run folder may live at."""
    return protocol(name) in RUN_PROTOCOLS


def filesystem(url: str):
    """(fsspec filesystem, path within it) for `url`; a protocol without its package is a
    RemoteError naming what to install."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        hint = " (pip install 'distill[s3]')" if protocol(url) in ("s3", "s3a") else ""
        raise RemoteError(f"no {protocol(url)}:// support here: {exc}{hint}") from None


def _info(fs, path: str) -> dict:
    try:
        return fs.info(path)
    except FileNotFoundError:
        raise RemoteError("file not found (vanished or never existed)") from None
    except PermissionError:
        raise RemoteError("unreadable: permission denied") from None
    except OSError as exc:
        raise RemoteError(f"unreadable: {type(exc).__name__}: {exc}") from None


def read_object(url: str, max_bytes: int, offset: int | None = None,
                size: int | None = None) -> bytes:
    """The bytes of the object at `url` (or `size` bytes from `offset`: a tar member), if it
    is a file of at most `max_bytes`; else a RemoteError saying why."""
    fs, path = filesystem(url)
    info = _info(fs, path)
    if info.get("type") not in ("file", None):
        raise RemoteError(f"is a {info.get('type')}, not a regular file")
    length = info.get("size")
    if offset is None:
        if length is None:
            raise RemoteError("unreadable: the server does not say how large it is")
        offset, size = 0, length
        if size > max_bytes:
            raise RemoteError(f"too large: {size} bytes > {max_bytes} (max_bytes)")
    elif size > max_bytes:
        raise RemoteError(f"too large: {size} bytes > {max_bytes} (max_bytes)")
    elif length is not None and offset + size > length:
        raise RemoteError(f"truncated: {offset + size} bytes asked of {length}")
    # a whole object is asked for one byte more than it declared: one that grew is refused
    end = offset + size + (1 if size == length and offset == 0 else 0)
    try:
        data = fs.cat_file(path, start=offset, end=end) if size else b""
    except FileNotFoundError:
        raise RemoteError("file not found (vanished or never existed)") from None
    except OSError as exc:
        raise RemoteError(f"unreadable: {type(exc).__name__}: {exc}") from None
    if len(data) != size and len(data) == length and size < length:
        raise RemoteError(f"the server ignores range requests (sent all {length} bytes for "
                          f"{size}); serve the shards from one that honours them")
    if len(data) != size:
        raise RemoteError(f"changed while being read ({size} bytes, then {len(data)}): "
                          "still being written?")
    return data


def find_files(url: str, suffixes) -> list[str]:
    """Every object under the prefix `url` whose name ends in one of `suffixes` (case
    ignored), as full URLs in sorted order; names starting with '.' are left out."""
    fs, path = filesystem(url)
    try:
        found = fs.find(path.rstrip("/"))
    except OSError as exc:
        raise RemoteError(f"cannot list {url}: {type(exc).__name__}: {exc}") from None
    suffixes = tuple(s.lower() for s in suffixes)
    names = [name for name in found if name.lower().endswith(suffixes)
             and not posixpath.basename(name).startswith(".")]
    return sorted(fs.unstrip_protocol(name) for name in names)


def is_folder(url: str) -> bool:
    fs, path = filesystem(url)
    try:
        return fs.isdir(path)
    except OSError:
        return False


def open_object(url: str):
    """A binary file object for a remote manifest or tar shard, read in parts."""
    fs, path = filesystem(url)
    info = _info(fs, path)
    if info.get("type") not in ("file", None):
        raise RemoteError(f"is a {info.get('type')}, not a regular file")
    return fs.open(path, "rb")


def join(root: str, entry: str) -> str | None:
    """`entry` (a relative name in a manifest) under the remote folder `root`, or None when
    it leaves it (`../other-bucket`, an absolute key)."""
    if entry.startswith("/"):
        return None
    joined = posixpath.normpath(posixpath.join(_path_part(root), entry))
    base = _path_part(root).rstrip("/")
    if joined != base and not joined.startswith(base + "/"):
        return None
    return f"{protocol(root)}://{joined}"


def _path_part(url: str) -> str:
    return _URL.sub("", url, count=1)


def parent(url: str) -> str:
    return f"{protocol(url)}://{posixpath.dirname(_path_part(url).rstrip('/'))}"
