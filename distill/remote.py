"""Objects on remote storage (s3://, gs://, hf://, https://) through fsspec: is a name remote,
read an object (whole or a byte range) under the read rule, list a prefix, open a manifest.

The read rule for remote objects is the local one's (`decode.read_bytes`): only a file, of
sane size, and what was checked is what is read. The size comes from the object's info
before a byte is fetched, and a read that returns another length is refused. A tar shard's
info is fetched once per process for all its members, and a shard whose server answers a
range request with the whole object is refused once, for all its members, without
downloading it. Each protocol needs its fsspec implementation installed (`s3fs` for s3://:
the `[s3]` extra; `gcsfs`; `huggingface_hub` for hf://; `aiohttp` for https://); a missing
one is a one-line error.
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


def _file_info(fs, path: str) -> dict:
    info = _info(fs, path)
    if info.get("type") not in ("file", None):
        raise RemoteError(f"is a {info.get('type')}, not a regular file")
    return info


def read_object(url: str, max_bytes: int, offset: int | None = None,
                size: int | None = None) -> bytes:
    """The bytes of the object at `url` (or `size` bytes from `offset`: a tar member,
    `_read_range`), if it is a file of at most `max_bytes`; else a RemoteError saying why."""
    if offset is not None:
        return _read_range(url, max_bytes, offset, size)
    fs, path = filesystem(url)
    length = _file_info(fs, path).get("size")
    if length is None:
        raise RemoteError("unreadable: the server does not say how large it is")
    if length > max_bytes:
        raise RemoteError(f"too large: {length} bytes > {max_bytes} (max_bytes)")
    # asked for one byte more than it declared: an object that grew is refused
    data = _fetch(lambda: fs.cat_file(path, start=0, end=length + 1) if length else b"")
    return _same_length(data, length)


class _Shard:
    """What this process knows of a tar shard its members are read from."""

    def __init__(self, info: dict):
        self.info, self.length = info, info.get("size")
        self.refused: str | None = None  # why every member is refused (its server's ranges)


_SHARDS: dict[str, _Shard] = {}
_SHARDS_KEPT = 4096  # tar shards remembered per process (a 10 M-image set has ~1000)


def _shard(fs, path: str, url: str) -> _Shard:
    """The shard at `url`, its info fetched once per process (one HEAD for all its members,
    not one each); a failure is not kept: the next member asks again."""
    shard = _SHARDS.get(url)
    if shard is None:
        shard = _Shard(_file_info(fs, path))
        while len(_SHARDS) >= _SHARDS_KEPT:
            _SHARDS.pop(next(iter(_SHARDS)))
        _SHARDS[url] = shard
    return shard


def _read_range(url: str, max_bytes: int, offset: int, size: int) -> bytes:
    """`size` bytes from `offset` of the tar shard at `url`, by one range request.

    A server that answers with the whole object instead (200, not 206) is found from the
    response's headers before its body is read (fsspec's HTTP file checks them), or, from
    a store whose client reads the body anyway, by its length; either way the shard is
    refused then, for this and every later member, with no more requests."""
    if size > max_bytes:
        raise RemoteError(f"too large: {size} bytes > {max_bytes} (max_bytes)")
    fs, path = filesystem(url)
    shard = _shard(fs, path, url)
    if shard.refused:
        raise RemoteError(shard.refused)
    if shard.length is not None and offset + size > shard.length:
        raise RemoteError(f"truncated: {offset + size} bytes asked of {shard.length}")
    if not size:
        return b""

    def read() -> bytes | None:
        # a file object reading exactly the range ("none": no read-ahead), given the
        # shard's info so that neither opening nor reading it asks for it again (s3fs would)
        with fs.open(path, "rb", size=shard.length, cache_type="none") as handle:
            if shard.length is not None:  # (setting details sets the size too)
                handle.details = shard.info
            handle.seek(offset)
            try:
                return handle.read(size)
            except ValueError as exc:  # fsspec's HTTP file: a 200 for a range, unread
                if "range" not in str(exc).lower():
                    raise
                return None

    data = _fetch(read)
    if data is None or (len(data) != size and len(data) == shard.length):
        shard.refused = (f"the server ignores range requests (it sends all of the shard for "
                         f"a member: {url} is refused whole); serve the shards from one that "
                         "honours them")
        raise RemoteError(shard.refused)
    return _same_length(data, size)


def _fetch(read):
    try:
        return read()
    except FileNotFoundError:
        raise RemoteError("file not found (vanished or never existed)") from None
    except (OSError, ValueError) as exc:
        raise RemoteError(f"unreadable: {type(exc).__name__}: {exc}") from None


def _same_length(data: bytes, size: int) -> bytes:
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
    _file_info(fs, path)
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
