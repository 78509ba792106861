"""`distill label --engine ray` against `distill label` (issue 18's targets), on a local Ray
cluster of N 1-CPU nodes (`ray.cluster_utils.Cluster`, the head given no CPU).

- Steady state and fixed start-up, both engines through the CLI (a fresh process, and for
  Ray a fresh job whose workers start and import), at two pool sizes in paired rounds: the
  rate is (large - small) images / (its time - small's time), so start-up cancels; start-up
  is the small run's time less its images at that rate. Per worker: Ray's rate / N; per
  process: the local engine's (N single-threaded scoring workers) rate / N.
- A straggler: one worker at 1/3 speed (SIGSTOP 20 ms of every 30 ms, from here) among N,
  both runs on the same warm workers (this process joined the cluster once); the target is
  a makespan within N/(N-2/3) of the unslowed one plus 3 shard-times (k mod N: 3x).

    python benchmarks/ray_label.py [--workers 2] [--small 48] [--large 240] [--rounds 3]

Writes benchmarks/results/ray_label.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.label_throughput import camera_pool
from distill.labeling import label

RESULTS = Path(__file__).parent / "results" / "ray_label.json"
TEACHERS = "piqe"
SHARD = 16


def _cli(source: Path, out: Path, *extra: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "distill.cli", "label", "--source", str(source),
                    "--out", str(out), "--teachers", TEACHERS, "--shard-size", str(SHARD),
                    "--no-progress", *extra], check=True, capture_output=True,
                   env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    return time.perf_counter() - started


def _fit(small: int, large: int, t_small: float, t_large: float) -> tuple[float, float]:
    rate = (large - small) / (t_large - t_small)
    return rate, t_small - small / rate


@contextmanager
def at_a_third_speed(pid: int):
    """Process `pid` runs a third of the time while the block runs: SIGSTOP for 20 of every
    30 ms, from a thread here (a busy or slower node, as its worker sees it)."""
    stop = threading.Event()

    def run():
        while not stop.is_set():
            try:
                os.kill(pid, signal.SIGSTOP)
                time.sleep(0.02)
            finally:
                os.kill(pid, signal.SIGCONT)
            time.sleep(0.01)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--small", type=int, default=48)
    parser.add_argument("--large", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import ray
    from ray.cluster_utils import Cluster

    n = args.workers
    work = Path(tempfile.mkdtemp(prefix="ray_label_"))
    load_start = os.getloadavg()
    try:
        pools = {}
        for size in (args.small, args.large):
            pools[size] = work / f"pool{size}"
            pools[size].mkdir()
            camera_pool(pools[size], size)
        began = time.perf_counter()
        cluster = Cluster(initialize_head=True,
                          head_node_args={"num_cpus": 0, "include_dashboard": False})
        for _ in range(n):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        cluster_start = time.perf_counter() - began
        rounds = []
        for _ in range(args.rounds):
            times = {}
            for size in (args.small, args.large):
                times[("local", size)] = _cli(pools[size], work / "local",
                                              "--score-workers", str(n))
                times[("ray", size)] = _cli(pools[size], work / "ray", "--engine", "ray",
                                            "--address", cluster.address)
            local_rate, local_start = _fit(args.small, args.large, times[("local", args.small)],
                                           times[("local", args.large)])
            ray_rate, ray_start = _fit(args.small, args.large, times[("ray", args.small)],
                                       times[("ray", args.large)])
            rounds.append({"seconds": {f"{e}_{s}": round(t, 2) for (e, s), t in times.items()},
                           "local_per_process": local_rate / n, "ray_per_worker": ray_rate / n,
                           "ratio": ray_rate / local_rate, "local_startup_s": local_start,
                           "ray_startup_s": ray_start})

        ray.init(address=cluster.address, logging_level="WARNING")

        def whoami(seconds):
            import distill.labeling.shard_work  # noqa: F401 - the worker's imports, done now

            time.sleep(seconds)
            return os.getpid()

        pids = ray.get([ray.remote(whoami).options(num_cpus=1).remote(1.0) for _ in range(n)])
        kwargs = {"source": str(pools[args.large]), "teachers": TEACHERS,
                  "shard_size": SHARD, "engine": "ray", "progress": False}
        label(out=str(work / "warm"), **kwargs)  # the workers make their teachers once
        stragglers = []
        for _ in range(args.rounds):
            shutil.rmtree(work / "even", ignore_errors=True)
            started = time.perf_counter()
            even = label(out=str(work / "even"), **kwargs)
            t_even = time.perf_counter() - started
            shutil.rmtree(work / "slowed", ignore_errors=True)
            started = time.perf_counter()
            with at_a_third_speed(pids[0]):
                slowed = label(out=str(work / "slowed"), **kwargs)
            t_slowed = time.perf_counter() - started
            shard_time = statistics.median(r["seconds"] for r in even["ledger"])
            bound = t_even * n / (n - 2 / 3) + 3 * shard_time
            stragglers.append({"even_s": t_even, "slowed_s": t_slowed, "shard_s": shard_time,
                               "bound_s": bound, "makespan_ratio": t_slowed / t_even,
                               "slow_worker_shards": sum(r["pid"] == pids[0]
                                                         for r in slowed["ledger"]),
                               "shards": len(slowed["ledger"])})
        ray.shutdown()
        cluster.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def median(rows, key):
        return round(statistics.median(row[key] for row in rows), 3)

    ratio, startup = median(rounds, "ratio"), median(rounds, "ray_startup_s")
    slowed, bound = median(stragglers, "slowed_s"), median(stragglers, "bound_s")
    result = {
        "benchmark": "ray_label",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "device": "cpu", "loadavg_at_start": [round(x, 2) for x in load_start],
                    "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
                    "note": "shared 2-core box; a load average above 2 means busy: other "
                            "processes took cores from both engines alike"},
        "setup": {"workers": n, "teacher": TEACHERS, "shard_size": SHARD,
                  "images": [args.small, args.large], "rounds": args.rounds,
                  "pool": "camera-sized JPEGs (2400 px) from the packaged photos"},
        "statistic": "medians over paired rounds",
        "steady_state": {"local_images_per_s_per_process": median(rounds, "local_per_process"),
                         "ray_images_per_s_per_worker": median(rounds, "ray_per_worker"),
                         "ratio": ratio},
        "startup_s": {"ray_job": startup, "local": median(rounds, "local_startup_s"),
                      "ray_cluster_start_once": round(cluster_start, 2)},
        "straggler": {"even_s": median(stragglers, "even_s"), "slowed_s": slowed,
                      "shard_s": median(stragglers, "shard_s"), "bound_s": bound,
                      "makespan_ratio": median(stragglers, "makespan_ratio"),
                      "slow_worker_shards": [s["slow_worker_shards"] for s in stragglers],
                      "shards": stragglers[0]["shards"],
                      "static_assignment_would_be": 3.0},
        "targets": {"steady_state_ratio_at_least_0.9": ratio >= 0.9,
                    "startup_at_most_30_s": startup <= 30,
                    "straggler_within_bound": slowed <= bound},
        "rounds": rounds,
        "straggler_rounds": stragglers,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("steady_state", "startup_s", "straggler",
                                              "targets")}, indent=2))


if __name__ == "__main__":
    main()
