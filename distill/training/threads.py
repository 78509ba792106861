"""How many torch intra-op threads a training process takes on a CPU (`cpu_threads: null`).

Measured by `benchmarks/train_under_load.py` (results/train_under_load.json, 2-core EPYC):
beside two busy processes, OpenMP threads that outnumber the free cores wait for each other at
every barrier, and the tiny student ran several times slower on 2 threads than on 1; on an idle
machine 2 threads are faster. So: this host's cores shared between the training processes, but
never more threads than the cores the other running processes leave free when training starts.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

LOADAVG = "/proc/loadavg"
TASKS = "/proc/self/task"


def host_cores() -> int:
    """The cores this process may run on. Not torch.get_num_threads(): an earlier stage in the
    same process (the label stage's scoring workers leave the labeler at 1) may have set it."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def running_elsewhere(samples: int = 10, interval: float = 0.02) -> int | None:
    """Threads of other processes running or waiting for a CPU now: the median of `samples`
    reads of /proc/loadavg's running count (its 4th field, "R/T"), less this process's own
    running threads (the reader, and e.g. a pool still spinning from an earlier stage in the
    same process), so a steadily busy process counts and a passing one does not. None
    without /proc/loadavg."""
    counts = []
    try:
        for index in range(samples):
            if index:
                time.sleep(interval)
            own = _own_running_threads()
            with open(LOADAVG) as handle:
                counts.append(int(handle.read().split()[3].split("/")[0]) - own)
    except (OSError, ValueError, IndexError):
        return None
    return max(0, statistics.median_low(counts))


def _own_running_threads() -> int:
    running = 1  # the reader, whatever its state file says in between
    for stat in Path(TASKS).glob("*/stat"):
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # a thread that ended while we looked
        running += state == "R" and stat.parent.name != str(threading.get_native_id())
    return running


def choose_threads(configured: int | None, cores: int, processes: int,
                   busy: int | None) -> int:
    """`configured` if set; else cores / processes, capped at the cores left free by `busy`
    running threads that are not this run's other processes (None: not known, no cap)."""
    if configured:
        return configured
    share = max(1, cores // processes)
    if busy is None:
        return share
    others = max(0, busy - (processes - 1))  # sibling ranks are already counted in `share`
    return max(1, min(share, cores - others))
