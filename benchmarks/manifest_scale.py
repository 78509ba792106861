"""Freezing a 10 M-path manifest into inputs.parquet, and a worker reading its shard's slice.

A parquet manifest of `--n` synthetic relative paths (`YYYY/MM/DD/IMG_nnnnnnnn.jpg`, like a
photo library's; no image has to exist: listing never opens one) is frozen by
`labeling.inputs.freeze_inputs` in a fresh process, which reports its wall time and peak
memory (ru_maxrss, imports included: `distill.labeling` imports torch; the resident size
after the imports is reported beside it); another fresh process reads shard slices with
`run_folder.read_shard_inputs` (first call timed apart: it parses the file's footer, which
the process then keeps; the same reads with the footer parsed every time, as before it was
kept, are reported beside them). The
baseline, in the same run, is main's code at commit BASELINE (the whole list in Python, then
one table, a dict over every key; every slice a whole-file read), at `--baseline-n` paths
(10 M would not fit its memory), next to the new code at the same size.

    nice -n 5 python benchmarks/manifest_scale.py                  # 10 M, baseline at 1 M
    python benchmarks/manifest_scale.py --n 200000 --baseline-n 100000

Writes benchmarks/results/manifest_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "manifest_scale.json"
BASELINE = "6b2b43e"  # main before streaming inputs.parquet
SHARD_SIZE = 1000
CHUNK = 1_000_000

FREEZE = """
import json, resource, sys, time
from pathlib import Path
from distill.sources import create_source
if sys.argv[3] == "new":
    from distill.labeling.inputs import freeze_inputs
else:
    from distill.labeling.run import freeze_inputs
imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
config = {"kind": "filelist", "file": sys.argv[1]}
out = Path(sys.argv[2]); out.mkdir()
started = time.perf_counter()
source = create_source(config)
if sys.argv[3] == "new":
    rows = freeze_inputs(out, source, config, int(sys.argv[4]))
else:
    rows = freeze_inputs(out, source, config).num_rows
print(json.dumps({"rows": rows, "seconds": round(time.perf_counter() - started, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "rss_after_imports_mb": round(imported)}))
"""

SLICE = """
import json, resource, statistics, sys, time
from distill import run_folder
out, size, shards = sys.argv[1], int(sys.argv[2]), [int(k) for k in sys.argv[3].split(",")]
footers = getattr(run_folder, "_FOOTERS", None)  # the parsed footers kept (not in old code)

def reads(forget):
    times = []
    for k in shards:
        if forget:
            footers.clear()
        started = time.perf_counter()
        table = run_folder.read_shard_inputs(out, k, size)
        times.append(time.perf_counter() - started)
        assert table.num_rows == size, table.num_rows
        assert table.column("key")[0].as_py().endswith(f"_{k * size:08d}.jpg"), table.column("key")[0]
    return times

def summary(times):
    return {"median_s": round(statistics.median(times), 4), "max_s": round(max(times), 4)}

times = reads(False)
found = {"first_s": round(times[0], 4), **summary(times), "reads": len(times)}
if footers is not None:  # as before the footer was kept: parsed again for every read
    found["footer_parsed_every_read"] = summary(reads(True))
print(json.dumps({**found, "peak_rss_mb": round(
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def write_manifest(path: Path, n: int) -> None:
    """`n` distinct relative paths, written a million at a time."""
    import pyarrow.compute as pc

    rng = np.random.default_rng(0)
    with pq.ParquetWriter(path, pa.schema([("path", pa.string())])) as writer:
        for start in range(0, n, CHUNK):
            index = np.arange(start, min(n, start + CHUNK))
            day = rng.integers(0, 3650, len(index))
            folder = pc.strftime(pa.array(day.astype("datetime64[D]"), pa.date32()).cast(
                pa.timestamp("s")), format="%Y/%m/%d")
            names = pc.utf8_lpad(pa.array(index).cast(pa.string()), 8, "0")
            paths = pc.binary_join_element_wise(folder, pc.binary_join_element_wise(
                "IMG", names, "_"), "/")
            writer.write_table(pa.table({"path": pc.binary_join_element_wise(paths, ".jpg", "")}))


def run(script: str, args: list[str], pythonpath: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    # cwd: not this checkout, which `python -c` would put first on sys.path
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env,
                          capture_output=True, text=True, check=False, cwd=pythonpath.parent)
    if done.returncode:
        raise SystemExit(f"{script.splitlines()[1]}... failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def shards_to_read(n: int, count: int = 9) -> str:
    last = n // SHARD_SIZE - 1
    return ",".join(str(k) for k in np.linspace(0, last, count).astype(int))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--baseline-n", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_before = os.getloadavg()
    report = {"benchmark": "manifest_scale", "created": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                          "load_average_before": [round(v, 2) for v in load_before]},
              "shard_size": SHARD_SIZE, "baseline_commit": BASELINE,
              "targets": {"freeze_10m_s": 60, "freeze_10m_peak_mb": 2048, "slice_s": 1.0}}
    with tempfile.TemporaryDirectory(prefix="manifest_scale-") as tmp:
        tmp = Path(tmp)
        baseline_tree = tmp / "baseline" / "tree"
        baseline_tree.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", BASELINE, "distill",
                                  "teachers", "students"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(baseline_tree)], input=archive.stdout, check=True)
        for label, n, code in (("new", args.n, "new"), ("new_at_baseline_n", args.baseline_n, "new"),
                               ("baseline", args.baseline_n, "old")):
            manifest = tmp / f"manifest-{n}.parquet"
            if not manifest.exists():
                started = time.perf_counter()
                write_manifest(manifest, n)
                print(f"manifest of {n} paths written in {time.perf_counter() - started:.1f} s",
                      flush=True)
            out = tmp / f"run-{label}"
            tree = ROOT if code == "new" else baseline_tree
            freeze = run(FREEZE, [manifest, out, code, SHARD_SIZE], tree)
            read = run(SLICE, [out, SHARD_SIZE, shards_to_read(n)], tree)
            report[label] = {"paths": n, "manifest_mb": round(manifest.stat().st_size / 2**20, 1),
                             "inputs_mb": round((out / "inputs.parquet").stat().st_size / 2**20, 1),
                             "row_groups": pq.read_metadata(out / "inputs.parquet").num_row_groups,
                             "freeze": freeze, "slice": read}
            print(label, json.dumps(report[label]), flush=True)
    new, same, old = report["new"], report["new_at_baseline_n"], report["baseline"]
    report["ratios_at_baseline_n"] = {
        "freeze_seconds_old_over_new": round(old["freeze"]["seconds"] / same["freeze"]["seconds"], 2),
        "freeze_peak_old_over_new": round(old["freeze"]["peak_rss_mb"] / same["freeze"]["peak_rss_mb"], 2),
        "slice_median_old_over_new": round(old["slice"]["median_s"] / same["slice"]["median_s"], 1)}
    report["slice_footer_kept"] = {  # the footer parsed once per process, against every read
        label: round(report[label]["slice"]["footer_parsed_every_read"]["median_s"]
                     / report[label]["slice"]["median_s"], 1) for label in ("new", "new_at_baseline_n")}
    report["met"] = {"freeze_s": new["freeze"]["seconds"] <= 60,
                     "freeze_peak": new["freeze"]["peak_rss_mb"] <= 2048,
                     "slice_s": new["slice"]["max_s"] <= 1.0}
    report["machine"]["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
