"""How many intra-op threads `train` takes on a CPU (distill/training/threads.py)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from distill.training.threads import choose_threads, running_elsewhere

BURN = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end:\n    pass\n"


@pytest.mark.parametrize("configured, cores, processes, busy, threads", [
    (3, 2, 1, 5, 3),        # a configured count is taken as it is
    (None, 8, 1, None, 8),  # load unknown: every core
    (None, 8, 2, None, 4),  # two ranks on the host share its cores
    (None, 2, 1, 0, 2),     # idle
    (None, 2, 1, 1, 1),     # one busy process: the free core only
    (None, 2, 1, 6, 1),     # never fewer than one
    (None, 8, 2, 1, 4),     # the busy thread is the sibling rank, already in the share
    (None, 8, 2, 5, 4),     # 4 others: 4 cores free, each rank keeps its share of 4
    (None, 8, 2, 7, 2),     # 6 others: 2 cores free
])
def test_choose_threads(configured, cores, processes, busy, threads):
    assert choose_threads(configured, cores, processes, busy) == threads


def test_running_elsewhere_counts_busy_processes():
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(2)]
    try:
        time.sleep(1.0)  # past interpreter start-up, into the loop
        assert running_elsewhere() >= 1
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
