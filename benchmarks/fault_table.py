"""The fault and bad-input table: runs the suite's fault cases and records each one's outcome.

Every case in tests/test_cull.py, test_faults.py, test_cull_groups.py, test_picks.py,
test_inputs.py and test_label_engines.py asserts that nothing is lost: the
culling cases check that each original is byte-identical (sha256) and in exactly one place,
the labeling cases that no rows are missing, mixed in or written twice, and the error cases
that the user gets one line naming the file or key, never a traceback. So a passing case is
a fault survived with zero photos or rows lost, and a failing one is listed as such.

    python benchmarks/fault_table.py      # -> benchmarks/results/faults.json (about 3 min)
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = ("tests/test_cull.py", "tests/test_faults.py", "tests/test_cull_groups.py",
          "tests/test_picks.py", "tests/test_inputs.py", "tests/test_label_engines.py")


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        junit = Path(scratch) / "junit.xml"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        f"--junitxml={junit}", *SUITES], cwd=ROOT, check=False)
        seconds = time.perf_counter() - started
        cases = []
        for case in ET.parse(junit).getroot().iter("testcase"):
            outcome = ("failed" if case.find("failure") is not None or case.find("error") is not None
                       else "skipped" if case.find("skipped") is not None else "survived")
            cases.append({"case": case.get("name"), "file": case.get("classname"),
                          "outcome": outcome, "seconds": round(float(case.get("time", 0)), 2)})
    counts = {k: sum(1 for c in cases if c["outcome"] == k) for k in ("survived", "failed", "skipped")}
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count()}, "python": platform.python_version(),
        "seconds": round(seconds, 1), **counts,
        "photos_or_rows_lost": 0 if counts["failed"] == 0 else "see failed cases",
        "cases": cases,
    }
    out = ROOT / "benchmarks" / "results" / "faults.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{counts['survived']} survived, {counts['failed']} failed, {counts['skipped']} skipped "
          f"in {seconds:.0f} s -> {out}")


if __name__ == "__main__":
    main()
