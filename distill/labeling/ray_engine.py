"""`distill label --engine ray`: shards as Ray tasks on a cluster's workers.

Each shard still left is one task calling `label_shard` (the function every engine calls),
so the rows are byte for byte those of `--engine local`. Ray does the rest: its scheduler
hands the next queued shard to whichever worker is idle (a worker runs one task at a time,
so a slow one holds one shard, not a fixed share), and retries a task whose worker process
or node died, elsewhere (`max_retries`: a dead worker costs that one shard). A worker keeps
its teachers between shards (`shard_work` makes them once per process). The driver (this
process) freezes the input list first and finalizes last, as the local engine does; a dead
driver loses nothing: the same command resumes with the shards not yet written.

Why tasks rather than Ray Data's `map_batches` over an actor pool: the same pull and
retries, and a retried task may run on any free CPU, whereas a retried actor call waits for
its own actor to restart, which on a full cluster (a node lost, the rest busy) it cannot.
This module imports Ray; nothing imports it until `--engine ray` is asked for.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import ray
from tqdm import tqdm

from distill import remote_run, run_folder
from distill.config import LabelConfig
from distill.errors import ConfigError, DistillError
from distill.labeling import leases
from distill.labeling.run import finalize, open_run, remote_url, run_out
from distill.labeling.shard_work import LabelRun, ShardRecord, label_shard
from distill.labeling.shard_work import provenance as teachers_provenance
from distill.labeling.workers import limit_threads

MAX_RETRIES = 3  # a shard whose worker (or node) died this often is an error, not a retry


def parse_workers(spec: str | None) -> tuple[int, int | None]:
    """"MIN:MAX" (either may be left out) or "N" (= N:N) → (min, max or None)."""
    if not spec:
        return 0, None
    low, sep, high = str(spec).partition(":")
    try:
        least = int(low) if low.strip() else 0
        most = (int(high) if high.strip() else None) if sep else least
    except ValueError:
        raise ConfigError(f"--ray-workers {spec!r}: give MIN:MAX (e.g. 2:8), or N") from None
    if least < 0 or (most is not None and (most < 1 or most < least)):
        raise ConfigError(f"--ray-workers {spec!r}: need 0 <= MIN <= MAX and MAX >= 1")
    return least, most


def _label_task(run: LabelRun, shard: int, cpus: int) -> tuple[dict, list[dict]]:
    limit_threads(cpus)  # Ray reserved this many cores for the task: as many threads, no more
    return label_shard(run, shard).as_dict(), teachers_provenance(run)


def label_on_ray(config: LabelConfig, progress: bool = True, max_shards: int | None = None,
                 address: str | None = None, workers: str | None = None,
                 gpus_per_worker: float = 0, cpus_per_worker: int = 1) -> dict | None:
    """Label `config` on the Ray cluster at `address` (None: $RAY_ADDRESS, else a Ray started
    here; a Ray this process already joined is used as it is). `workers` "MIN:MAX": MIN
    workers asked of the autoscaler up front, at most MAX shards in flight. Returns the
    summary once the run is complete, else None."""
    least, most = parse_workers(workers)
    seconds = leases.lease_seconds()  # a bad DISTILL_LEASE_SECONDS: refused before any work
    device = "cuda" if gpus_per_worker else "cpu"
    if config.device not in ("auto", device):
        raise ConfigError(f"--device {config.device} with --engine ray: the workers' device "
                          "follows --gpus-per-worker (0: cpu, more: cuda)")
    config, _source, inputs = open_run(config, progress, device, main=True)
    out, url = run_out(config), remote_url(config)
    total = run_folder.shard_count(inputs, config.shard_size)
    done = run_folder.completed_shards(out)
    todo = [k for k in range(total) if k not in done][:max_shards]
    joined = not ray.is_initialized()
    if joined:
        # Ray's own default joins any cluster `ray start` left on this host (another
        # user's, on a shared machine); "local" starts one of our own, as documented
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local",
                 logging_level=logging.WARNING,
                 configure_logging=True, include_dashboard=False)
    try:
        started = time.perf_counter()
        ledger, teachers = _run_tasks(config, out, todo, least, most, gpus_per_worker,
                                      cpus_per_worker, progress, inputs)
        if url:  # shards that workers on other nodes labeled are on the remote only
            remote_run.pull(url, out)
        if len(run_folder.completed_shards(out)) < total:
            return None  # --max-shards left work for the next call
        final = leases.claim(out, leases.FINAL, seconds)
        if final is None:
            return None  # another driver of this run is finalizing it
        try:
            if teachers is None:  # nothing was left to label: ask a worker what it would use
                remote = ray.remote(teachers_provenance).options(num_cpus=cpus_per_worker,
                                                                 num_gpus=gpus_per_worker)
                teachers = ray.get(remote.remote(LabelRun(out, config, device, remote=url)))
            return finalize(out, config, teachers, inputs, time.perf_counter() - started,
                            len({(r.host, r.pid) for r in ledger}), ledger, engine="ray")
        finally:
            final.release()
    finally:
        if joined:
            ray.shutdown()


def _run_tasks(config: LabelConfig, out: Path, todo: list[int], least: int, most: int | None,
               gpus: float, cpus: int, progress: bool, inputs: int
               ) -> tuple[list[ShardRecord], list[dict] | None]:
    if least:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[{"CPU": cpus, **({"GPU": gpus} if gpus else {})}] * least)
    run = ray.put(LabelRun(out, config, "cuda" if gpus else "cpu", remote=remote_url(config)))
    task = ray.remote(_label_task).options(num_cpus=cpus, num_gpus=gpus,
                                           max_retries=MAX_RETRIES)
    queue, pending, ledger, provenance = iter(todo), {}, [], None
    images = sum(run_folder.shard_rows(inputs, config.shard_size, k) for k in todo)
    with tqdm(total=images, unit="img", desc="labeling (ray)", disable=not progress,
              dynamic_ncols=True) as bar:
        while True:
            while most is None or len(pending) < most:
                shard = next(queue, None)
                if shard is None:
                    break
                pending[task.remote(run, shard, cpus)] = shard
            if not pending:
                return ledger, provenance
            ready, _ = ray.wait(list(pending), num_returns=1)
            shard = pending.pop(ready[0])
            try:
                record, provenance = ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                for ref in pending:
                    ray.cancel(ref)
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
                raise DistillError(f"shard {shard} failed on Ray ({first}); the shards written so "
                                   "far are kept: run the same command again to resume") from None
            ledger.append(ShardRecord(**record))
            bar.update(record["rows"] + record["errors"])
