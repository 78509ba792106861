"""Lease files: which process is labeling which shard of a run, readable by every process
that shares the run folder (one host or many).

A lease of shard k is `shards/.lease-NNNNN.A`, A its attempt, made by exclusive create
(O_EXCL), so of two processes asking for the same attempt exactly one gets it. Its holder's
heartbeat thread touches the file's mtime every quarter of the lease time; a lease is
expired when its mtime is older than the lease time, or at once when its holder was a
process of this host that is gone (SIGKILL, OOM killer). A shard is held while any of its
attempts is live: a holder thought dead (a stalled host, an NFS attribute cache showing an
old mtime) that beats again holds it again, whoever took it over since. Taking over is
creating attempt A + 1, exclusive again.

The lease time is `DISTILL_LEASE_SECONDS` (default 60 s); each lease records its holder's,
and the longer of the holder's and the observer's decides. On NFS another host sees a
lease's mtime up to the attribute-cache time late (`acregmax`, 60 s by default), so the
lease time must exceed it by a heartbeat at least: 180 s, or mount with a lower `actimeo`. The labels file stays the one mark of a done shard:
a lease only says who works on it, and a slow holder whose lease was taken over writes the
same bytes under the same name, so nothing is ever duplicated.

The same mechanism locks the finalization (`FINAL`): fusing and the manifest run once.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from distill import run_folder
from distill.errors import ConfigError
from distill.safefs import process_alive

LEASE_SECONDS = 60.0  # a holder silent this long is taken to be dead (clocks agree far better)
LEASE_SECONDS_VARIABLE = "DISTILL_LEASE_SECONDS"
FINAL = "final"  # the lease of the finalization


def lease_seconds() -> float:
    """The lease time this process uses: DISTILL_LEASE_SECONDS, else LEASE_SECONDS."""
    given = os.environ.get(LEASE_SECONDS_VARIABLE, "").strip()
    if not given:
        return LEASE_SECONDS
    try:
        seconds = float(given)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ConfigError(f"{LEASE_SECONDS_VARIABLE}={given!r}: give the lease time in seconds "
                          "(> 0; on NFS more than the attribute-cache time, e.g. 180)")
    return seconds


def lease_name(shard: int) -> str:
    return f"{shard:05d}"


@dataclass(frozen=True)
class Lease:
    out: Path
    name: str  # lease_name(shard), or FINAL
    attempt: int
    path: Path
    seconds: float

    @property
    def shard(self) -> int:
        return int(self.name)

    def release(self, every_attempt: bool = True) -> None:
        """Give the lease up; with `every_attempt`, also the expired ones before it (the
        shard is done: none of them will be looked at again)."""
        _HEARTBEAT.drop(self.path)
        paths = [path for _, path in attempts(self.out, self.name)] if every_attempt else [self.path]
        for path in paths:
            path.unlink(missing_ok=True)


def _folder(out: Path) -> Path:
    return Path(out) / run_folder.SHARD_DIR


def attempts(out: Path, name: str) -> list[tuple[int, Path]]:
    """(attempt, file) of the leases of `name`, oldest first. Attempts are made in order and
    given up together, so the files are probed 1, 2, … rather than the folder listed (a run
    of 10 000 shards has 30 000 files there); one gap is crossed (an attempt that failed gave
    only its own lease up)."""
    found, attempt, misses = [], 1, 0
    while misses < 2:
        path = _folder(out) / f".lease-{name}.{attempt}"
        if path.exists():
            found.append((attempt, path))
            misses = 0
        else:
            misses += 1
        attempt += 1
    return found


def holder(path: Path) -> dict:
    """{"host", "pid", …} of a lease, or {} while its holder is still writing it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def is_live(path: Path, seconds: float | None = None) -> bool:
    """Whether the lease file `path` is held: touched within the lease time (the longer of
    `seconds` and its holder's), and not by a process of this host that is gone."""
    try:
        touched = path.stat().st_mtime
    except FileNotFoundError:
        return False
    who = holder(path)
    if who.get("host") == socket.gethostname() and not process_alive(who.get("pid")):
        return False
    recorded = who.get("seconds")
    recorded = recorded if isinstance(recorded, int | float) else 0.0
    return time.time() - touched < max(seconds or lease_seconds(), recorded)


def is_held(out: Path, name: str, seconds: float | None = None) -> bool:
    """Whether some attempt of `name` is live: not only the newest, since a holder taken for
    dead (stalled, or seen through a stale attribute cache) may be working on it still."""
    return any(is_live(path, seconds) for _, path in attempts(out, name))


def _create(out: Path, name: str, attempt: int, seconds: float) -> Lease | None:
    path = _folder(out) / f".lease-{name}.{attempt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    with os.fdopen(descriptor, "w") as handle:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "attempt": attempt,
                   "started": time.time(), "seconds": seconds}, handle)
    lease = Lease(Path(out), name, attempt, path, seconds)
    _HEARTBEAT.add(path, seconds)
    return lease


def claim(out: Path, name: str, seconds: float | None = None) -> Lease | None:
    """The lease of `name` if no live process holds it (none ever did, or every attempt's
    lease expired), else None. Exclusive: of processes claiming at once, one gets it."""
    seconds = seconds or lease_seconds()
    held = attempts(out, name)
    if any(is_live(path, seconds) for _, path in held):
        return None
    return _create(out, name, held[-1][0] + 1 if held else 1, seconds)


def take(out: Path, name: str, seconds: float | None = None) -> Lease:
    """A lease of `name` whoever else holds one: for an engine whose own scheduler decided
    that this process labels the shard now (Ray); the attempt number still counts."""
    seconds = seconds or lease_seconds()
    while True:
        held = attempts(out, name)
        lease = _create(out, name, held[-1][0] + 1 if held else 1, seconds)
        if lease is not None:
            return lease


def any_live(out: Path, seconds: float | None = None) -> bool:
    """Whether some process holds a live lease on this run (a shard or the finalization)."""
    return any(is_live(path, seconds) for path in _folder(out).glob(".lease-*"))


def clear_shard_leases(out: Path) -> None:
    """Every shard is done: no shard lease matters any more, not even one whose holder was
    killed between writing its shard and giving the lease up."""
    for path in _folder(out).glob(".lease-[0-9]*"):
        path.unlink(missing_ok=True)


class _Heartbeat:
    """One daemon thread per process touching the mtime of every lease it holds."""

    def __init__(self):
        self._held: dict[Path, float] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._changed = threading.Event()  # a lease came: the next beat may be due sooner

    def add(self, path: Path, seconds: float) -> None:
        with self._lock:
            self._held[path] = seconds
            if self._thread is None or not self._thread.is_alive():  # none yet, or forked
                self._thread = threading.Thread(target=self._beat, name="distill-lease",
                                                daemon=True)
                self._thread.start()
        self._changed.set()

    def drop(self, path: Path) -> None:
        with self._lock:
            self._held.pop(path, None)

    def _beat(self) -> None:
        while True:
            with self._lock:
                held = dict(self._held)
            for path in held:
                try:
                    os.utime(path)
                except FileNotFoundError:  # released, or done by another process meanwhile
                    self.drop(path)
            self._changed.wait(min(held.values(), default=LEASE_SECONDS) / 4)
            self._changed.clear()


_HEARTBEAT = _Heartbeat()
