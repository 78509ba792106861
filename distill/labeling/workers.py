"""Scoring worker processes: each decodes and scores whole batches, on one thread.

Why processes and not threads: a CPU teacher spread over N OpenMP threads waits at every
barrier for its slowest thread, and on a machine that also runs other programs one
descheduled thread stalls the rest (measured on 2 cores beside busy processes: 7x slower
than one thread per process; benchmarks/label_throughput.py). N single-threaded processes
never wait for each other, and decoding needs no threads of its own beside them.

Batches of every shard this rank owns flow through the pool, a few per process in flight,
and come back in order; a shard is handed to the writer when its last batch is back, so a
shard file is still all of that shard or nothing.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

import threadpoolctl
import torch
from tqdm import tqdm

from distill.config import LabelConfig
from distill.errors import DistillError
from distill.labeling.shards import ShardResult, decode_item, score_decoded
from distill.safefs import process_alive
from distill.sources import SourceItem, create_source
from teachers import TEACHERS, create_teachers

IN_FLIGHT_PER_PROCESS = 2  # one batch computing, one queued: no process waits on the parent
PARENT_CHECK_S = 1.0
PRELOAD = [__name__]  # with the modules of the run's teachers (`_context`)

T = TypeVar("T")
_WORKER: dict = {}  # this worker process's source, teachers and config


def _start_worker(config: LabelConfig, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    limit_threads(1)
    try:
        teachers = create_teachers(config.teachers, config.weights_dir, device="cpu")
        _WORKER.update(source=create_source(config.source), teachers=teachers, config=config)
    except Exception as exc:  # noqa: BLE001 - said by every task, not as "a worker died"
        _WORKER["failed"] = f"{type(exc).__name__}: {exc}"


def limit_threads(count: int) -> None:
    """`count` threads in every pool: torch's, OpenCV's, and numpy's and scipy's OpenBLAS,
    whose threads spin after each call and would take the other workers' cores."""
    import cv2

    threadpoolctl.threadpool_limits(count)
    torch.set_num_threads(count)
    cv2.setNumThreads(count)


def _exit_with(parent: int) -> None:
    """A worker whose labeling process was killed (SIGKILL, OOM killer) would wait for work
    forever; it notices within a second and leaves (a killed process not yet reaped by its
    own parent is a zombie: gone too)."""
    while process_alive(parent):
        time.sleep(PARENT_CHECK_S)
    os._exit(1)


def _score_chunk(shard: int, inputs: list[dict]) -> ShardResult:
    if "failed" in _WORKER:
        raise DistillError(f"a scoring worker could not make its teachers: {_WORKER['failed']} "
                           "(teachers registered at run time, e.g. open_clip.add_model_config, "
                           "exist only in this process: use --score-workers 0)")
    source, config = _WORKER["source"], _WORKER["config"]
    decoded = [(position, *decode_item(source, SourceItem.from_row(r),
                                       config.decode))
               for position, r in enumerate(inputs)]
    result = ShardResult()
    score_decoded(_WORKER["teachers"], source.name, shard, inputs, decoded, result)
    return result


def _context(teacher_names: Iterable[str]) -> multiprocessing.context.BaseContext:
    """Workers fork from a clean server process, not from this one: a process whose OpenCV or
    OpenMP thread pools have run cannot safely fork (a child that touches the pool waits on
    threads it does not have; seen with cv2.setNumThreads). The server imports the teachers'
    libraries once, so each worker starts in well under a second; where there is no
    forkserver, workers spawn."""
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" not in methods:
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # The server imports the modules of the run's teachers once, so that every worker starts
    # with their libraries (pyiqa, OpenCV) and tables (the AGGD grid) in memory: making its
    # teachers takes ~0 s, not 2. Only the run's: pyiqa alone takes ~2 s to import, which a
    # technical-only run would wait for. An unknown name is left to the run to report. A
    # server already running keeps its imports: a later run in this process with other
    # teachers imports the rest in each worker.
    context.set_forkserver_preload(PRELOAD + sorted({TEACHERS.module(name)
                                                     for name in teacher_names
                                                     if name in TEACHERS}))
    return context


def start_early(teacher_names: Iterable[str]) -> None:
    """Start the fork server now, so that its imports (torch and the teachers' libraries,
    seconds on 2 cores) overlap the labeling process's own set-up instead of delaying the
    first batch."""
    context = _context(teacher_names)
    if context.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def score_shards(config: LabelConfig, shards: Iterator[tuple[T, int, list[dict]]], processes: int,
                 bar: tqdm | None = None) -> Iterator[tuple[T, ShardResult]]:
    """(tag, its result) for each (tag, shard index, its input rows) of `shards`, in order, scored by
    `processes` workers, each with its own teachers made from `config` (create them here
    first: that checks weights). `shards` is read lazily, a shard when the workers need its
    first batch, so that a shard is claimed only when work on it begins."""
    def batches():
        for tag, shard, rows in shards:
            for start in range(0, len(rows), config.batch_size):
                chunk = rows[start:start + config.batch_size]
                yield tag, shard, chunk, start + config.batch_size >= len(rows)

    pending: deque = deque()
    tasks = batches()
    current = ShardResult()
    pool = ProcessPoolExecutor(processes, mp_context=_context(config.teachers),
                               initializer=_start_worker,
                               initargs=(config, os.getpid()))
    try:
        while True:
            while len(pending) < processes * IN_FLIGHT_PER_PROCESS:
                task = next(tasks, None)
                if task is None:
                    break
                tag, shard, chunk, last = task
                pending.append((tag, len(chunk), last, pool.submit(_score_chunk, shard, chunk)))
            if not pending:
                return
            tag, count, last, future = pending.popleft()
            current.extend(future.result())
            if bar is not None:
                bar.update(count)
            if last:
                yield tag, current
                current = ShardResult()
    except BrokenProcessPool as exc:
        raise DistillError(
            f"a scoring worker process died ({exc}): the shards written so far are kept; "
            "run the same command again to resume (fewer --score-workers if memory ran out)"
        ) from exc
    finally:  # an error or Ctrl-C here drops the queued batches instead of finishing them
        pool.shutdown(wait=True, cancel_futures=True)
