"""The one shard function every engine calls: `label_shard(run, k)`.

Shard k's rows are a pure function of its slice of inputs.parquet and of what run.json
records (source, teachers, shard size, decode): `label_shards` reads that slice, decodes and
scores it (teachers in this process, or a pool of single-threaded scoring processes that
batches of several shards flow through), writes the shard atomically (temporary names with
host, pid and a random part, labels last) and returns a ledger record. The local engine
(one process, or torchrun ranks claiming shards through leases) and the Ray engine's tasks
call it alike, so every engine writes the same bytes.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from tqdm import tqdm

from distill import remote_run, run_folder
from distill.config import LabelConfig, to_dict
from distill.labeling import leases
from distill.labeling.shards import ShardResult, score_here, write_result
from distill.labeling.workers import score_shards
from distill.sources import Source, create_source
from teachers import Teacher, create_teachers


@dataclass(frozen=True)
class LabelRun:
    """A run as a shard sees it: its folder and config, and how this process scores."""
    out: Path
    config: LabelConfig
    device: str = "cpu"
    score_workers: int = 0  # single-threaded scoring processes; 0: the teachers run here
    decode_workers: int = 0  # with teachers here: DataLoader processes decoding ahead
    remote: str | None = None  # the object-storage prefix `out` stages (`remote_run`)


@dataclass(frozen=True)
class ShardRecord:
    """The ledger's line for one labeled shard."""
    shard: int
    rows: int
    errors: int
    host: str
    pid: int
    seconds: float
    attempt: int  # 1, or n when n - 1 earlier attempts died (or were taken over)
    # with teacher groups on other workers (`parts.py`): where each group ran
    parts: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


_MADE: dict[tuple, tuple[Source, list[Teacher]]] = {}  # this process's source and teachers


def _key(run: LabelRun) -> tuple:
    return str(run.out), repr(to_dict(run.config)), run.device


def keep_teachers(run: LabelRun, source: Source, teachers: list[Teacher]) -> None:
    """Use these (already made) for `run` in this process."""
    _MADE[_key(run)] = source, teachers


def tools(run: LabelRun) -> tuple[Source, list[Teacher]]:
    """This process's source and teachers for `run`, made once: a Ray worker labels many
    shards, and making the teachers (weights, libraries) costs seconds."""
    key = _key(run)
    if key not in _MADE:
        teachers = create_teachers(run.config.teachers, run.config.weights_dir, device=run.device)
        for other in [made for made in _MADE if made[0] != key[0]]:
            del _MADE[other]  # one run per process at a time: drop another run's teachers
        _MADE[key] = create_source(run.config.source), teachers  # (or one of its groups')
    return _MADE[key]


def provenance(run: LabelRun) -> list[dict]:
    """What this process's teachers for `run` are (weights and their sha256, versions)."""
    return [teacher.provenance() for teacher in tools(run)[1]]


def label_shard(run: LabelRun, shard: int) -> ShardRecord:
    """Label shard `shard` of `run` whatever else holds it: for an engine whose scheduler
    decided this process labels it now (Ray). A shard already done is not labeled again.
    A remote run's staging folder (on another node: one of its own) gets run.json and
    inputs.parquet first, pulled only when they changed."""
    run = stage(run)
    if is_done(run, shard):
        return done_record(run.out, shard)
    shards = label_shards(run, [leases.take(run.out, leases.lease_name(shard))])
    try:
        return next(shards)
    finally:
        shards.close()  # gives the lease up


def stage(run: LabelRun) -> LabelRun:
    """`run` as this process works on it. A remote run is staged in this process's own
    folder (`--staging`, else the default under this user's cache: on another node, not the
    driver's path), with run.json and inputs.parquet pulled there if they changed; a local
    run is as it is."""
    if not run.remote:
        return run
    run = dataclasses.replace(run, out=remote_run.claim_staging(run.remote, run.config.staging))
    remote_run.pull(run.remote, run.out, [run_folder.RUN_FILE, run_folder.INPUTS_FILE])
    return run


def is_done(run: LabelRun, shard: int) -> bool:
    """Whether shard `shard` is done: its labels file exists; a remote run's, its labels
    object (a shard staged here whose push never finished is labeled again)."""
    if run.remote:
        return remote_run.shard_done(run.remote, run.out, shard)
    return run_folder.labels_path(run.out, shard).exists()


def commit(run: LabelRun, lease: leases.Lease, result: ShardResult, seconds: float,
           parts: list[dict] | None = None) -> ShardRecord:
    """Write the shard of `lease` (held) and return its record; a remote run's shard is
    pushed while the lease is still held, so it is done (remotely) before it is free."""
    write_result(run.out, lease.shard, result)
    if run.remote:
        remote_run.push_shard(run.remote, run.out, lease.shard)
    return ShardRecord(lease.shard, len(result.rows), len(result.errors), socket.gethostname(),
                       os.getpid(), round(seconds, 3), lease.attempt, parts or [])


def done_record(out: Path, shard: int) -> ShardRecord:
    """The record of a shard some earlier attempt wrote (attempt 0: not labeled now)."""
    rows = pq.read_metadata(run_folder.labels_path(out, shard)).num_rows
    errors_file = run_folder.errors_path(out, shard)
    errors = pq.read_metadata(errors_file).num_rows if errors_file.exists() else 0
    return ShardRecord(shard, rows, errors, socket.gethostname(), os.getpid(), 0.0, 0)


def label_shards(run: LabelRun, held: Iterable[leases.Lease],
                 bar: tqdm | None = None) -> Iterator[ShardRecord]:
    """Label the shard of each lease in `held` (read lazily: a shard is asked for when the
    scorers need its first batch), writing each as it completes and yielding its record
    while its lease is still held; the lease is given up when the caller asks for the next
    (so a caller can check "was this the last shard?" before anyone else may)."""
    source, teachers = tools(run)
    config = run.config
    started: dict[int, float] = {}
    claimed: list[leases.Lease] = []

    def inputs():
        for lease in held:
            claimed.append(lease)
            started[lease.shard] = time.perf_counter()
            rows = run_folder.read_shard_inputs(run.out, lease.shard, config.shard_size).to_pylist()
            yield lease, lease.shard, rows

    if run.score_workers:
        results = score_shards(config, inputs(), run.score_workers, bar)
    else:
        results = ((lease, score_here(shard, rows, source, teachers, config, bar,
                                      run.decode_workers, run.device))
                   for lease, shard, rows in inputs())
    try:
        for lease, result in results:
            yield commit(run, lease, result, time.perf_counter() - started.pop(lease.shard))
            claimed.remove(lease)
            lease.release()
    finally:  # an error, Ctrl-C or close(): shards begun here are free for others at once
        for lease in claimed:
            lease.release(every_attempt=False)
