"""`distill label --engine ray`: shards as Ray tasks on a cluster's workers.

Each shard still left is one task calling `label_shard` (the function every engine calls),
so the rows are byte for byte those of `--engine local`. Ray does the rest: its scheduler
hands the next queued shard to whichever worker is idle (a worker runs one task at a time,
so a slow one holds one shard, not a fixed share), and retries a task whose worker process
or node died, elsewhere (`max_retries`: a dead worker costs that one shard). A worker keeps
its teachers between shards (`shard_work` makes them once per process). The driver (this
process) freezes the input list first and finalizes last, as the local engine does; a dead
driver loses nothing: the same command resumes with the shards not yet written.

With `gpu_teachers` a shard is one part task per group of teachers (the GPU teachers on GPU
workers, the rest on CPU workers) and a merge task that writes it (`parts.py`); the merge
gets the parts' ObjectRefs as arguments, so Ray resolves them, and rebuilds one whose node
was lost from its lineage.

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
from distill.labeling.parts import ShardPart, group_run, in_run_order, label_part, merge_parts
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


def _part_task(run: LabelRun, shard: int, teachers: list[str], cpus: int) -> ShardPart:
    limit_threads(cpus)
    part = label_part(run, shard, teachers)
    part.where["node"] = ray.get_runtime_context().get_node_id()
    return part


def _merge_task(run: LabelRun, shard: int, *parts: ShardPart) -> tuple[dict, list[dict]]:
    return (merge_parts(run, shard, list(parts)).as_dict(),
            in_run_order(run.config, [(part.teachers, part.provenance) for part in parts]))


def _group_provenance(run: LabelRun, teachers: list[str]) -> list[dict]:
    return teachers_provenance(group_run(run, teachers))


def teacher_groups(config: LabelConfig, gpus: float, gpu_device: str = "cuda"
                   ) -> list[tuple[list[str], str, float]]:
    """(teachers, device, GPUs per worker) of each kind of worker: one kind for every teacher
    (on `gpu_device` with GPUs, else the CPU), or with `config.gpu_teachers` those on GPU
    workers and the rest on CPU workers."""
    if config.gpu_teachers and not gpus:
        raise ConfigError("--gpu-teachers (gpu_teachers) needs --gpus-per-worker: the GPU "
                          "teachers' workers need a GPU")
    if not config.gpu_teachers:
        return [(list(config.teachers), gpu_device if gpus else "cpu", gpus)]
    cpu = [name for name in config.teachers if name not in config.gpu_teachers]
    return [(cpu, "cpu", 0), (list(config.gpu_teachers), gpu_device, gpus)]


def label_on_ray(config: LabelConfig, progress: bool = True, max_shards: int | None = None,
                 address: str | None = None, workers: str | None = None,
                 gpus_per_worker: float = 0, cpus_per_worker: int = 1,
                 gpu_device: str = "cuda") -> dict | None:
    """Label `config` on the Ray cluster at `address` (None: $RAY_ADDRESS, else a Ray started
    here; a Ray this process already joined is used as it is). `workers` "MIN:MAX": MIN
    workers asked of the autoscaler up front, at most MAX shards in flight. `gpu_device`:
    where the GPU workers' teachers run (no user's option: a test on a machine without a GPU
    gives "cpu", the GPU being a node's declared resource). Returns the summary once the run
    is complete, else None."""
    least, most = parse_workers(workers)
    seconds = leases.lease_seconds()  # a bad DISTILL_LEASE_SECONDS: refused before any work
    groups = teacher_groups(config, gpus_per_worker, gpu_device)
    device = gpu_device if gpus_per_worker else "cpu"
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
        ledger, teachers = _run_tasks(config, out, todo, least, most, groups,
                                      cpus_per_worker, progress, inputs)
        if url:  # shards that workers on other nodes labeled are on the remote only
            remote_run.pull(url, out)
        if len(run_folder.completed_shards(out)) < total:
            return None  # --max-shards left work for the next call
        final = leases.claim(out, leases.FINAL, seconds)
        if final is None:
            return None  # another driver of this run is finalizing it
        try:
            if teachers is None:  # nothing was left to label: ask workers what they would use
                remote = ray.remote(_group_provenance)
                teachers = in_run_order(config, [(names, ray.get(remote.options(
                    num_cpus=cpus_per_worker, num_gpus=gpus).remote(
                        LabelRun(out, config, on, remote=url), names)))
                    for names, on, gpus in groups])
            return finalize(out, config, teachers, inputs, time.perf_counter() - started,
                            len({(r.host, r.pid) for r in ledger}
                                | {(p["host"], p["pid"]) for r in ledger for p in r.parts}),
                            ledger, engine="ray")
        finally:
            final.release()
    finally:
        if joined:
            ray.shutdown()


def _submitter(config: LabelConfig, out: Path, groups: list[tuple[list[str], str, float]],
               cpus: int):
    """A function submitting shard k's work: (the ref whose value is (its record, the
    teachers' provenance), the refs to cancel with it)."""
    url = remote_url(config)
    if len(groups) == 1:
        _names, device, gpus = groups[0]
        run = ray.put(LabelRun(out, config, device, remote=url))
        task = ray.remote(_label_task).options(num_cpus=cpus, num_gpus=gpus,
                                               max_retries=MAX_RETRIES)
        return lambda shard: (task.remote(run, shard, cpus), [])
    # A merge reserves no core: it runs as soon as its parts are done, where one waiting for
    # a core would queue behind every part still queued and the shards would be written only
    # at the end (all lost with the driver); it is cheap (assembling rows, writing parquet).
    merge = ray.remote(_merge_task).options(num_cpus=0, max_retries=MAX_RETRIES)
    main = ray.put(LabelRun(out, config, "cpu", remote=url))
    parts = [(ray.remote(_part_task).options(num_cpus=cpus, num_gpus=gpus,
                                             max_retries=MAX_RETRIES),
              ray.put(LabelRun(out, config, device, remote=url)), names)
             for names, device, gpus in groups]

    def submit(shard: int):
        refs = [task.remote(run, shard, names, cpus) for task, run, names in parts]
        return merge.remote(main, shard, *refs), refs  # Ray resolves (and rebuilds) the parts

    return submit


def _run_tasks(config: LabelConfig, out: Path, todo: list[int], least: int, most: int | None,
               groups: list[tuple[list[str], str, float]], cpus: int, progress: bool,
               inputs: int) -> tuple[list[ShardRecord], list[dict] | None]:
    if least:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[{"CPU": cpus, **({"GPU": gpus} if gpus else {})}
                                   for _names, _device, gpus in groups for _ in range(least)])
    submit = _submitter(config, out, groups, cpus)
    queue, pending, ledger, provenance = iter(todo), {}, [], None
    images = sum(run_folder.shard_rows(inputs, config.shard_size, k) for k in todo)
    with tqdm(total=images, unit="img", desc="labeling (ray)", disable=not progress,
              dynamic_ncols=True) as bar:
        while True:
            while most is None or len(pending) < most:
                shard = next(queue, None)
                if shard is None:
                    break
                ref, parts = submit(shard)
                pending[ref] = shard, parts
            if not pending:
                return ledger, provenance
            ready, _ = ray.wait(list(pending), num_returns=1)
            shard, _parts = pending.pop(ready[0])
            try:
                record, provenance = ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                for ref, (_shard, parts) in pending.items():
                    for task in (ref, *parts):
                        ray.cancel(task)
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
                raise DistillError(f"shard {shard} failed on Ray ({first}); the shards written so "
                                   "far are kept: run the same command again to resume") from None
            ledger.append(ShardRecord(**record))
            bar.update(record["rows"] + record["errors"])
