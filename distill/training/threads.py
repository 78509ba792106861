"""How many torch intra-op threads a training process takes on a CPU (`cpu_threads: null`).

Measured by `benchmarks/train_under_load.py` (results/train_under_load.json, 2-core EPYC):
beside two busy processes, OpenMP threads that outnumber the free cores wait for each other at
every barrier, and the tiny student ran several times slower on 2 threads than on 1; on an idle
machine 2 threads are faster. So: this host's cores shared between the training processes, but
never more threads than the cores the other running processes leave free when training starts.
"""

from __future__ import annotations

import statistics
import time

LOADAVG = "/proc/loadavg"


def running_elsewhere(samples: int = 10, interval: float = 0.02) -> int | None:
    """Threads of other processes running or waiting for a CPU now: the median of `samples`
    reads of /proc/loadavg's running count (its 4th field, "R/T"; R counts the reader too), so
    a steadily busy process counts and a passing one does not. None without /proc/loadavg."""
    counts = []
    try:
        for index in range(samples):
            if index:
                time.sleep(interval)
            with open(LOADAVG) as handle:
                counts.append(int(handle.read().split()[3].split("/")[0]) - 1)
    except (OSError, ValueError, IndexError):
        return None
    return max(0, statistics.median_low(counts))


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
