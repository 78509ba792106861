"""Training steps/s on an idle CPU and beside competing busy processes, per torch thread policy.

A small labeled run is written the way tests/test_train.py writes one (the quickstart's sample
views of the packaged photos, labels from their known degradation, no teachers), then
`run_train` on configs/distill_<student>.yaml, timed by the loop itself (metrics.csv's
session_seconds, logged every step): the median step after `--warmup` steps, the last step
(evaluation, checkpoint) left out. Variants:

    cores    cpu_threads = the cores (today's `null` on one process)
    one      cpu_threads = 1
    passive  cpu_threads = the cores, OMP_WAIT_POLICY=PASSIVE (threads sleep at barriers)
    default  cpu_threads = null: whatever distill.training chooses (training/threads.py)

Each variant runs in a long-lived worker process (one per environment; torch imported once),
restored to torch's default thread count before every run. A round measures every variant
back to back idle, then again beside `--busy` bounded pure-Python CPU burners that the
benchmark starts and kills itself; ratios are taken within a round, medians over rounds.

    python benchmarks/train_under_load.py [--rounds 3] [--students tiny,patch_cnn]

Writes benchmarks/results/train_under_load.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = Path(__file__).parent / "results" / "train_under_load.json"
VARIANTS = ("cores", "one", "passive", "default")
BURNER = "import time\ndeadline = time.monotonic() + {seconds}\nwhile time.monotonic() < deadline:\n    pass\n"


# ---------------------------------------------------------------- the labeled run

def write_label_run(out: Path, photos: int, seed: int = 0) -> Path:
    """`photos` degraded views (384 px) of the packaged photos, labeled with their true quality."""
    import numpy as np
    import pyarrow as pa

    from distill import run_folder
    from distill.quickstart.samples import make_set, source_photos

    sources = source_photos()
    per_photo = -(-photos // len(sources))
    samples = make_set(out / "pool", sources, per_photo, seed, side=384)[:photos]
    rows = []
    for sample in samples:
        quality = sample.true_quality
        rows.append({"image_id": sample.name, "source": "benchmark",
                     "path": str(out / "pool" / f"{sample.name}.jpg"), "quality": quality,
                     "keep_prob": float(1 / (1 + np.exp(-(quality - 6) / 0.5))),
                     "confidence": 1.0, "label": "keep" if quality >= 6 else "trash",
                     "tier": 1})
    labels = out / "labels"
    run_folder.write_table(run_folder.labels_path(labels, 0), pa.Table.from_pylist(rows))
    run_folder.write_json(labels / run_folder.MANIFEST_FILE, {
        "config": {"fusion": {"keep_threshold": 6.0, "temperature": 0.5},
                   "decode": {"max_side": 768}},
        "teachers": [{"teacher": "known degradation", "weights": []}]})
    return labels


# ---------------------------------------------------------------- the worker side

def worker() -> None:
    """Read one JSON request a line, train, answer one JSON line; run_train's prints go to stderr."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    import torch

    from distill.training import build_train_config, run_train

    default_threads = torch.get_num_threads()
    for line in sys.stdin:
        request = json.loads(line)
        torch.set_num_threads(default_threads)  # what a fresh `distill train` starts from
        out = Path(request["out"])
        shutil.rmtree(out, ignore_errors=True)
        config = build_train_config(ROOT / "configs" / f"distill_{request['student']}.yaml", {
            "labels": request["labels"], "out": str(out), "cpu_threads": request["threads"],
            "tensorboard": False, "log_every": 1, "eval_every": 10**6,
            "checkpoint_every": 10**6, "early_stopping_patience": None,
            "optim.max_steps": request["steps"]})
        started = time.perf_counter()
        run_train(config, progress_bar=False)
        with (out / "metrics.csv").open(newline="") as handle:
            clock = [float(row["session_seconds"]) for row in csv.DictReader(handle)]
        shutil.rmtree(out, ignore_errors=True)
        replies.write(json.dumps({"step_seconds": [b - a for a, b in zip(clock, clock[1:])],
                                  "threads": torch.get_num_threads(),
                                  "wall_seconds": time.perf_counter() - started}) + "\n")


class Worker:
    def __init__(self, env: dict[str, str]):
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker"], env=env, text=True, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)

    def train(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker died (exit {self.process.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ---------------------------------------------------------------- the benchmark

def start_burners(count: int, seconds: float) -> list[subprocess.Popen]:
    code = BURNER.format(seconds=seconds)  # bounded: they end by themselves if we cannot kill them
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]


def stop(burners: list[subprocess.Popen]) -> None:
    for process in burners:
        process.kill()
    for process in burners:
        process.wait()


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_load() -> dict:
    """The 1/5/15-minute load averages (slow: they still hold the last busy phase) and the
    threads of other processes running now (training/threads.py's median of 10 reads)."""
    from distill.training.threads import running_elsewhere

    return {"loadavg": loadavg(), "running_elsewhere": running_elsewhere()}


def median(values) -> float:
    return round(statistics.median(values), 4)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--students", default="tiny,patch_cnn")
    parser.add_argument("--photos", type=int, default=48)
    parser.add_argument("--warmup", type=int, default=2, help="steps left out at the start")
    parser.add_argument("--steps", type=int, default=6, help="steps timed per measurement")
    parser.add_argument("--busy", type=int, default=2, help="competing busy processes")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker()
    students = args.students.split(",")
    cores = len(os.sched_getaffinity(0))
    total_steps = args.warmup + args.steps + 1  # + the last step, which evaluates
    work = Path(tempfile.mkdtemp(prefix="train-under-load-"))
    workers, burners, rounds = {}, [], []
    started = time.perf_counter()
    try:
        labels = write_label_run(work, args.photos)
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",
                                                                 "OMP_WAIT_POLICY")}
        workers = {"active": Worker(env), "passive": Worker({**env, "OMP_WAIT_POLICY": "PASSIVE"})}
        plan = {"cores": ("active", cores), "one": ("active", 1), "passive": ("passive", cores),
                "default": ("active", None)}
        for index in range(args.rounds):
            order = VARIANTS[index % len(VARIANTS):] + VARIANTS[:index % len(VARIANTS)]
            record = {"round": index, "order": list(order), "idle_load_before": machine_load(),
                      "steps_per_s": {}, "threads": {}}
            for load in ("idle", "busy"):
                if load == "busy":
                    burners = start_burners(args.busy, seconds=300)
                    time.sleep(1.0)
                    record["busy_load_before"] = machine_load()
                for student in students:
                    for variant in order:
                        side, threads = plan[variant]
                        result = workers[side].train(student=student, threads=threads,
                                                     labels=str(labels), out=str(work / "run"),
                                                     steps=total_steps)
                        timed = result["step_seconds"][args.warmup:args.warmup + args.steps]
                        key = f"{student}/{variant}/{load}"
                        record["steps_per_s"][key] = round(1 / statistics.median(timed), 3)
                        record["threads"][key] = result["threads"]
                        print(f"round {index} {key}: {record['steps_per_s'][key]} steps/s "
                              f"({result['threads']} threads, {result['wall_seconds']:.1f} s)",
                              flush=True)
                if load == "busy":
                    stop(burners)
                    burners = []
            rounds.append(record)
    finally:
        stop(burners)
        for each in workers.values():
            each.close()
        shutil.rmtree(work, ignore_errors=True)

    summary = {}
    for student in students:
        rate = {f"{v}/{load}": median(r["steps_per_s"][f"{student}/{v}/{load}"] for r in rounds)
                for v in VARIANTS for load in ("idle", "busy")}

        def ratio(top: str, bottom: str) -> float:
            return median(r["steps_per_s"][f"{student}/{top}"] /
                          r["steps_per_s"][f"{student}/{bottom}"] for r in rounds)

        summary[student] = {variant: {
            "idle_steps_per_s": rate[f"{variant}/idle"],
            "busy_steps_per_s": rate[f"{variant}/busy"],
            "busy_over_own_idle": ratio(f"{variant}/busy", f"{variant}/idle"),
            "idle_over_cores_idle": ratio(f"{variant}/idle", "cores/idle"),
            "busy_over_cores_idle": ratio(f"{variant}/busy", "cores/idle"),
            "threads_idle_busy": [rounds[-1]["threads"][f"{student}/{variant}/{load}"]
                                  for load in ("idle", "busy")]} for variant in VARIANTS}

    import torch

    result = {
        "benchmark": "train_under_load",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "usable_cores": cores, "torch": torch.__version__,
                    "python": platform.python_version()},
        "setup": {"photos": args.photos, "students": students, "rounds": args.rounds,
                  "warmup_steps": args.warmup, "timed_steps": args.steps,
                  "busy_processes": args.busy, "configs": [f"configs/distill_{s}.yaml"
                                                           for s in students],
                  "timing": "metrics.csv session_seconds per step (the loop's own clock); "
                            "steps/s = 1 / median step"},
        "variants": {"cores": f"cpu_threads={cores}", "one": "cpu_threads=1",
                     "passive": f"cpu_threads={cores}, OMP_WAIT_POLICY=PASSIVE",
                     "default": "cpu_threads=null (distill.training.threads.choose_threads)"},
        "summary": summary,
        "rounds": rounds,
        "loadavg_at_end": loadavg(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
