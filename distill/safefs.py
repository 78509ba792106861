"""Safe file-system operations: the one routine every move, link and copy of `distill cull`
goes through, the lock that keeps two runs off one destination, the one atomic write every
file distill creates goes through, the one sha256 of a file, and the one folder distill keeps
files of its own in (`cache_folder`: weights, staged and mirrored remote runs).

The rules, each one a way a photo was lost before:
- nothing ever replaces an existing file: the final step is `os.link` (or, where a file system
  has no hard links, a rename guarded by the destination lock), which fails if the name is taken;
- a copy (a move to another file system) is written under a temporary name in the destination
  folder, fsynced, and checked for size and sha256 against the source before it takes its name,
  so a full disk or a kill mid-copy leaves a temporary file, never a truncated photo;
- the source of a move is removed only after the target is in place and verified;
- a file distill writes (shards, manifests, students, exports, weights) is written
  under a temporary name beside it and renamed over it when complete (`atomic_write`);
- only regular files are hashed, moved or linked: a symbolic link, FIFO, device or directory
  under a photo's name is refused (a FIFO would block the hash forever, a relative link would
  dangle in its new folder);
- a photo whose bytes are not the decided ones (edited after its decision) is not placed, on
  one file system or across two;
- names are bytes: a name that is not UTF-8 travels as Python's surrogate-escaped `str` (and
  into reports as `distill.names.as_text`); a name the file system's limit cannot take with a
  suffix added is shortened, never failed on.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import secrets
import shutil
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import psutil

from distill.decode import DecodeError, open_regular, refuse_unless_regular
from distill.errors import DistillError

PARTIAL_SUFFIX = ".distill-partial"
_CHUNK = 1 << 20
NAME_MAX = 255  # bytes per name on ext4, XFS, btrfs, tmpfs; asked of the file system first


class PlacementError(DistillError):
    """A photo could not be put where it was meant to go; it is still at its source."""


class ChangedError(PlacementError):
    """The photo's bytes are not those it was decided on; it stays where it is."""

    def __init__(self, source: Path):
        super().__init__(f"{source} changed since it was decided (its sha256 differs); it was "
                         "left where it is, and the next run scores it again")


def cache_folder(*parts: str) -> Path:
    """$XDG_CACHE_HOME/distill/<parts> (else ~/.cache/distill/<parts>): the freedesktop rule
    other tools on the machine follow too, so one setting moves every cache."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    return cache.joinpath("distill", *parts)


def sha256_file(path: str | os.PathLike, *, follow_symlinks: bool = True) -> str:
    """The sha256 of a regular file, streamed. Anything else (a FIFO, a device, a directory,
    a large sparse file; a symbolic link when not followed) raises DecodeError with its
    reason before a byte is read (`decode.open_regular`): a FIFO would block forever."""
    digest = hashlib.sha256()
    with open_regular(path, follow_symlinks=follow_symlinks, max_bytes=None) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def regular_file(path: Path) -> os.stat_result:
    """lstat of a regular file, else DecodeError with what `path` is (no link is followed)."""
    status = os.lstat(path)
    refuse_unless_regular(status, max_bytes=None)
    return status


# ---------------------------------------------------------------- names are bytes

def name_max(folder: Path) -> int:
    """The longest name, in bytes, the file system holding `folder` (or its nearest existing
    ancestor) takes."""
    for candidate in (folder, *folder.parents):
        try:
            return os.pathconf(candidate, "PC_NAME_MAX")
        except (OSError, ValueError):
            continue
    return NAME_MAX


def fits(path: Path) -> bool:
    return len(os.fsencode(path.name)) <= name_max(path.parent)


def _shorten(stem: str, room: int) -> str:
    """`stem` cut, whole characters at a time, to at most `room` bytes."""
    while len(os.fsencode(stem)) > room:
        stem = stem[:-1]
    return stem


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary name beside `path` to write to, renamed over `path` when the block ends:
    a reader never sees half a file. On failure the temporary file is removed, and an OS
    error that names no file (a full disk seen on close) names `path`. The name carries host,
    pid and a random part, so writers on a shared file system never collide."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}."
                             f"{secrets.token_hex(3)}.partial")
    try:
        yield partial
        os.replace(partial, path)
    except OSError as exc:  # a full disk: leave no partial file, and name the file
        partial.unlink(missing_ok=True)
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def remove_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of `atomic_write` in `folder` whose writer was a process of
    this host that is gone (killed mid-write); another host's, or a live writer's, stay."""
    host, removed = socket.gethostname(), []
    for partial in Path(folder).glob(".*.partial"):
        prefix, pid, _random, _ = partial.name.rsplit(".", 3)
        if prefix.endswith(f".{host}") and pid.isdigit() and not process_alive(pid):
            partial.unlink(missing_ok=True)
            removed.append(partial)
    return removed


def process_alive(pid) -> bool:
    """Whether `pid` (a number, or its text) is a process of this host that still runs: the
    one liveness rule of partial files, leases and scoring workers. A zombie (killed, not yet
    reaped by its parent) is dead: it will never write or beat again, though `kill(pid, 0)`
    still finds it. Someone else's process is alive (we may not signal it, but it runs)."""
    try:
        pid = int(pid)
        return pid > 0 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, TypeError, ValueError):
        return False
    except psutil.AccessDenied:
        return True


def free_name(target: Path, accept=lambda candidate: True) -> Path:
    """`target`, or `stem-1.ext`, `stem-2.ext`, … : the first name not on disk that `accept`
    also agrees to (e.g. its sidecar's name is free too). A numbered name the file system
    cannot hold (a 255-byte photo name) has its stem shortened to fit."""
    candidate, number = target, 0
    limit = name_max(target.parent)
    while os.path.lexists(candidate) or not accept(candidate):
        number += 1
        tail = f"-{number}{target.suffix}"
        stem = _shorten(target.stem, limit - len(os.fsencode(tail)))
        candidate = target.with_name(f"{stem}{tail}")
    return candidate


def partial_path(target: Path) -> Path:
    """Where a file is written before it takes `target`'s name: beside it, hidden, ours by its
    suffix; a digest of the name when the name itself leaves no room for the suffix."""
    name = f".{target.name}{PARTIAL_SUFFIX}"
    if len(os.fsencode(name)) > name_max(target.parent):
        name = f".{hashlib.sha256(os.fsencode(target.name)).hexdigest()[:32]}{PARTIAL_SUFFIX}"
    return target.with_name(name)


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _claim(partial: Path, target: Path) -> None:
    """Give a complete, verified file its final name without ever replacing another file."""
    try:
        os.link(partial, target)
    except FileExistsError:
        raise PlacementError(f"{target} appeared while placing it; left it alone") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        # No hard links here (FAT/exFAT cards): the destination lock makes exists+rename safe.
        if os.path.lexists(target):
            raise PlacementError(f"{target} appeared while placing it; left it alone") from None
        os.rename(partial, target)
        return
    partial.unlink()


class _HashingReader:
    """A reader that hashes what it hands on: what the copy read is what was decided."""

    def __init__(self, handle):
        self.handle, self.digest = handle, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.digest.update(chunk)
        return chunk


def verified_copy(source: Path, target: Path, sha256: str) -> None:
    """Copy `source` to the free name `target` through a temporary file, checked against
    `sha256` (the source's, taken when the decision was made) before it takes the name: bytes
    read that differ mean the source changed (ChangedError), bytes written that differ a bad
    copy."""
    partial = partial_path(target)
    partial.unlink(missing_ok=True)  # a copy a kill or a full disk interrupted: start again
    try:
        with open(source, "rb") as handle, open(partial, "xb") as writer:
            reader = _HashingReader(handle)
            shutil.copyfileobj(reader, writer, _CHUNK)
            writer.flush()
            os.fsync(writer.fileno())
        if reader.digest.hexdigest() != sha256:
            raise ChangedError(source)
        shutil.copystat(source, partial)
        if sha256_file(partial) != sha256:
            raise PlacementError(f"copy of {source} to {target} does not match its sha256; "
                                 "the source is untouched")
        _claim(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def is_placed(target: Path, sha256: str) -> bool:
    """Whether `target` is a regular file holding exactly the photo with this hash (and not a
    half copy)."""
    try:
        return stat.S_ISREG(os.lstat(target).st_mode) and sha256_file(target) == sha256
    except (OSError, DecodeError):
        return False


def _regular_source(source: Path) -> None:
    try:
        regular_file(source)
    except DecodeError as exc:
        raise PlacementError(f"{source} {exc}; it was left where it is") from None


def move(source: Path, target: Path, sha256: str) -> None:
    """Move `source` to `target` (a name that must be free), verified, never replacing anything.

    Safe to call again after a kill at any point: a target already holding the photo counts as
    placed, and the source is removed only once the target is verified. A source that is not
    the decided bytes (edited since) is refused, on one file system as across two."""
    target.parent.mkdir(parents=True, exist_ok=True)
    checked = False  # whether the source's bytes are known to be the decided ones
    if not is_placed(target, sha256):
        if os.path.lexists(target):
            raise PlacementError(f"{target} holds another file; {source} was left where it is")
        _regular_source(source)
        try:
            os.link(source, target)  # same file system: an atomic, no-replace rename in two steps
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                raise PlacementError(f"{target} appeared while placing it; left it alone") from None
            verified_copy(source, target, sha256)  # EXDEV, or no hard links on this file system
        else:
            _unlink_unless_decided(target, source, sha256)
        checked = True
        _fsync_dir(target.parent)
    if os.path.lexists(source):
        if not (checked or source.samefile(target) or sha256_file(source) == sha256):
            raise PlacementError(f"{source} changed since it was decided; it was left in place "
                                 f"and a copy of the decided version is at {target}")
        source.unlink()
        _fsync_dir(source.parent)


def _unlink_unless_decided(linked: Path, source: Path, sha256: str) -> None:
    """A hard link just made is the source's own inode: if its bytes are not the decided ones
    (edited in place, or replaced, since the decision) the link goes and the source stays."""
    if sha256_file(linked, follow_symlinks=False) != sha256:
        linked.unlink()
        raise ChangedError(source)


def link(source: Path, target: Path, sha256: str) -> None:
    """A hard link at `target` (a symlink across file systems) to the decided bytes of
    `source`; never replaces a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(target) and source.exists() and target.samefile(source):
        return
    _regular_source(source)
    try:
        try:
            os.link(source, target)
        except FileExistsError:
            raise
        except OSError:  # another file system: a symlink still points at the original
            if sha256_file(source) != sha256:
                raise ChangedError(source) from None
            target.symlink_to(source.resolve())
        else:
            _unlink_unless_decided(target, source, sha256)
    except FileExistsError:
        raise PlacementError(f"{target} holds another file; {source} was not linked") from None


class DestinationLock:
    """An exclusive, non-blocking lock on a destination folder (released when the process
    dies, so a killed run never leaves the folder locked)."""

    def __init__(self, folder: Path, name: str = ".distill.lock"):
        self.path = Path(folder) / name
        self._handle = None

    def __enter__(self) -> Self:
        self._handle = open(self.path, "a")
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.close()
            raise DistillError(f"{self.path.parent} is busy: another distill run is using it "
                               "(wait for it to finish, or choose another --dest)") from None
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
