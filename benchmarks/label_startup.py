"""How long a small `distill label` takes from the shell, this tree against a baseline commit:
the fixed cost every run pays (imports in the labeling process and in its scoring workers'
fork server), which dominates a folder of a few photos and every CLI call in the tests.

Rounds alternate baseline and tree, so a machine whose load changes treats both alike; with
`--busy N`, N processes spin on the CPU throughout ("a real machine is busy").

    python benchmarks/label_startup.py [--baseline REF] [--rounds 5] [--busy 1]

The README's figures compare with `--baseline cee2772`, the commit before the fork server
preloaded only the run's teachers (the default, HEAD, compares a clean tree with itself).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "label_startup.json"


def photos(folder: Path) -> Path:
    from PIL import Image
    from skimage import data

    folder.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins"):
        Image.fromarray(getattr(data, name)()).convert("RGB").save(folder / f"{name}.jpg")
    return folder


def seconds(tree: Path, source: Path, out: Path) -> float:
    """Wall seconds of one `distill label` run from a neutral folder, importing `tree`'s code."""
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(tree))
    imported = subprocess.run([sys.executable, "-c", "import distill; print(distill.__file__)"],
                              cwd=out.parent, env=env, check=True, capture_output=True,
                              text=True).stdout.strip()
    assert Path(imported).is_relative_to(tree), (imported, tree)  # not the installed copy
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "distill.cli", "label", "--source", str(source),
                    "--out", str(out), "--teachers", "technical", "--no-progress"],
                   cwd=out.parent, env=env, check=True, capture_output=True)
    return time.perf_counter() - began


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="HEAD", help="git ref to compare the tree with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--busy", type=int, default=0, help="CPU-spinning processes beside it")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="label_startup_"))
    baseline = work / "baseline"
    subprocess.run(["git", "worktree", "add", "--detach", str(baseline), args.baseline],
                   cwd=ROOT, check=True, capture_output=True)
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(args.busy)]
    try:
        source, times = photos(work / "photos"), {"baseline": [], "tree": []}
        load_start = os.getloadavg()
        for _round in range(args.rounds):
            for which, tree in (("baseline", baseline), ("tree", ROOT)):
                times[which].append(round(seconds(tree, source, work / f"run-{which}"), 2))
        load_end = os.getloadavg()
    finally:
        for spinner in spinners:
            spinner.kill()
        subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT,
                       check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    medians = {which: statistics.median(values) for which, values in times.items()}
    result = {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "baseline": subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=ROOT,
                                   check=True, capture_output=True, text=True).stdout.strip(),
        "busy_processes": args.busy, "load_start": load_start, "load_end": load_end,
        "seconds": times, "median_seconds": medians,
        "ratio_tree_to_baseline": round(medians["tree"] / medians["baseline"], 3),
    }
    key = f"busy{args.busy}"
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    stored[key] = result
    RESULTS.write_text(json.dumps(stored, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
