"""The fault and bad-input table: runs the suite's fault cases and records each one's outcome.

Every case in tests/test_cull.py, test_faults.py, test_cull_groups.py, test_picks.py,
test_inputs.py, test_cull_faults.py and test_label_engines.py asserts that nothing is lost: the
culling cases check that each original is byte-identical (sha256) and in exactly one place,
the labeling cases that no rows are missing, mixed in or written twice, and the error cases
that the user gets one line naming the file or key, never a traceback. So a passing case is
a fault survived with zero photos or rows lost, and a failing one is listed as such.

It also runs the random-kill trial of issue 19: `cull --move --xmp` on a card with RAW
companions and every kind of sidecar, killed with SIGKILL at a random moment of its act pass
(after the decisions are journaled), then resumed; half the trials with DEST on the card's
file system, half on another (tmpfs).

    python benchmarks/fault_table.py             # -> benchmarks/results/faults.json (about 6 min)
    python benchmarks/fault_table.py --no-suite --kills 30   # only the kill trial
    python benchmarks/fault_table.py --kills 0               # only the suite
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = ("tests/test_cull.py", "tests/test_faults.py", "tests/test_cull_groups.py",
          "tests/test_picks.py", "tests/test_inputs.py", "tests/test_cull_faults.py",
          "tests/test_label_engines.py")


def run_suite() -> dict:
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
    print(f"{counts['survived']} survived, {counts['failed']} failed, {counts['skipped']} skipped "
          f"in {seconds:.0f} s")
    return {"seconds": round(seconds, 1), **counts,
            "photos_or_rows_lost": 0 if counts["failed"] == 0 else "see failed cases",
            "cases": cases}


# ---------------------------------------------------------------- random kill -9 in cull's act pass

# A card with every kind of sidecar the act pass merges or moves: a RAW companion with its own
# sidecar, a Lightroom NAME.xmp, a NAME.xmp two photos claim, photos that get fresh sidecars.
USER_SIDECAR = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"
 xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="1" xmp:CreatorTool="darktable">
<dc:subject><rdf:Bag><rdf:li>holiday</rdf:li></rdf:Bag></dc:subject>
</rdf:Description></rdf:RDF></x:xmpmeta>
<?xpacket end="w"?>"""
CARD_SIDECARS = ("IMG_0001.jpg.xmp", "IMG_0001.dng.xmp", "IMG_0002.xmp", "IMG_0007.xmp")
CARD_PHOTOS = [f"IMG_000{i}.jpg" for i in range(1, 8)] + ["IMG_0007.png"]
CARD_UNITS = len(CARD_PHOTOS)  # the DNG travels with IMG_0001.jpg
CARD_SIDECARS_AFTER = len(CARD_SIDECARS) + 5  # + fresh: IMG_0003..6, one IMG_0007


def _in_child(work) -> int:
    """Run `work` in a forked child (the parent imported torch but never ran it, so a fork is
    safe and skips the interpreter's start); its pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()
            code = 0
        except BaseException:  # noqa: BLE001 - a child reports and leaves, whatever it was
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _exit_code(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _make_card(template: Path) -> None:
    import skimage
    from PIL import Image

    from benchmarks.camera_files import write_dng

    data = Path(skimage.__file__).parent / "data"
    sources = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png"]
    images = [Image.open(data / name).convert("RGB") for name in sources]
    images = [im.resize((200, 200 * im.height // im.width)) for im in images]
    template.mkdir(parents=True)
    for index, name in enumerate(CARD_PHOTOS):
        # a quality of its own: no two photos have the same bytes
        images[index % len(images)].save(template / name, quality=90 - index)
    write_dng(images[0], template / "IMG_0001.dng", preview_side=200)
    for name in CARD_SIDECARS:
        (template / name).write_text(USER_SIDECAR, encoding="utf-8")


def _make_student(path: Path) -> None:
    import torch

    from students import create_student
    from students.checkpoint import save_student
    from students.preprocess import policy

    torch.manual_seed(0)
    save_student(path, create_student("tiny").eval(), "tiny", {}, policy(64), {"note": "random"})


def _cull(card: Path, student: Path, dest: Path) -> None:
    from distill.culling import CullOptions, cull

    import torch

    torch.set_num_threads(1)  # as the machine's other work leaves it: the same speed each trial
    cull(card, student, dest=dest, options=CullOptions(action="move", xmp=True), progress=False)


def _journal_state(journal: Path) -> tuple[bool, int, int]:
    """Whether the decisions are journaled, and how many photos are placed and done since."""
    try:
        text = journal.read_text(errors="surrogateescape")
    except FileNotFoundError:
        return False, 0, 0
    if '"decisions"' not in text:
        return False, 0, 0
    acted = text.split('"decisions"', 1)[1]
    return True, acted.count('"moved": true'), acted.count('"done": true')


def _moved_sidecars(journal: Path) -> list[Path]:
    """Where the decisions send the card's own sidecars, in the order they are handled."""
    for line in journal.read_text(errors="surrogateescape").splitlines():
        if '"decisions"' in line:
            return [Path(s["target"]) for entry in json.loads(line)["decisions"]
                    for s in entry.get("sidecars", [])]
    return []


def _check(card: Path, dest: Path, before: dict[str, str]) -> list[str]:
    """What is wrong after the resume (empty: nothing lost, nothing left half-done)."""
    import csv

    from distill.xmp import read_sidecar

    problems = []
    found: dict[str, list[Path]] = {}
    for root in (card, dest):
        for path in root.rglob("*"):
            if path.name.endswith(".distill-partial"):
                problems.append(f"temporary file left: {path}")
            elif path.is_file() and path.suffix in (".jpg", ".png", ".dng"):
                found.setdefault(sha256_of(path), []).append(path)
    for name, digest in before.items():
        if not name.endswith(".xmp") and len(found.get(digest, [])) != 1:
            problems.append(f"{name} is in {found.get(digest)}")
    if list(card.iterdir()):
        problems.append(f"left on the card: {sorted(p.name for p in card.iterdir())}")
    with (dest / "cull.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    problems += [f"{r['image']}: {r['error'] or r['xmp_error']}" for r in rows
                 if r["error"] or r["xmp_error"]]
    if sum(r["decision"] in ("keep", "pending", "trash") for r in rows) != CARD_UNITS:
        problems.append(f"{len(rows)} rows, not {CARD_UNITS} decided photos")
    sidecars = list(dest.rglob("*.xmp"))
    if len(sidecars) != CARD_SIDECARS_AFTER:
        problems.append(f"{len(sidecars)} sidecars in DEST, not {CARD_SIDECARS_AFTER}")
    users = sum("holiday" in read_sidecar(s).get("Xmp.dc.subject", "") for s in sidecars)
    if users != len(CARD_SIDECARS):
        problems.append(f"{users} sidecars keep the user's keyword, not {len(CARD_SIDECARS)}")
    for row in rows:
        target = Path(row["target"])
        owned = [target] + [target.with_suffix(".dng")] * bool(row["companions"])
        for photo in owned:
            mine = [s for s in (photo.with_name(photo.name + ".xmp"), photo.with_suffix(".xmp"))
                    if s.exists() and read_sidecar(s).get("Xmp.xmp.Rating") == row["rating"]]
            if not mine:
                problems.append(f"{photo.name} has no sidecar with its rating {row['rating']}")
    return problems


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def kill_trials(per_file_system: int, seed: int) -> dict:
    """`per_file_system` trials with DEST on the card's file system and on another (tmpfs):
    `cull --move --xmp` killed with SIGKILL at a random moment of its act pass (a random
    delay after a random photo's `moved` line: in its sidecar writes or after), then resumed
    to the end; each trial checks every photo is in one place byte for byte, every sidecar
    has its photo's rating and the user's keyword, no error row and no temporary file."""
    import random
    import shutil

    # imported once, here, so each forked run starts at once (nothing of torch runs here)
    import benchmarks.camera_files  # noqa: F401
    import distill.culling  # noqa: F401
    import distill.xmp  # noqa: F401
    import students.checkpoint  # noqa: F401

    rng = random.Random(seed)
    scratch = Path(tempfile.mkdtemp(prefix="distill-kills-"))
    other = Path(tempfile.mkdtemp(prefix="distill-kills-", dir="/dev/shm"))
    try:
        template, student = scratch / "template", scratch / "student.pt"
        for work in (partial(_make_card, template), partial(_make_student, student)):
            assert _exit_code(_in_child(work)) == 0
        before = {p.name: sha256_of(p) for p in template.iterdir()}

        def trial(name: str, dest_root: Path, when: tuple | None) -> dict:
            """when: ("time", k, delay): the kill lands `delay` seconds after the k-th photo's
            `moved` line (k = 0: after the decisions); ("merge", i): as soon as the i-th
            moved sidecar is seen merged in DEST (the issue's point: before its done line)."""
            card, dest = scratch / f"card-{name}", dest_root / f"dest-{name}"
            shutil.copytree(template, card)
            started = time.perf_counter()
            pid = _in_child(partial(_cull, card, student, dest))
            while not _journal_state(dest / ".distill-cull.jsonl")[0]:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    raise RuntimeError(f"trial {name}: cull ended before deciding")
                time.sleep(0.001)
            decided = time.perf_counter()
            if when is None:  # the calibration run: how long the act pass takes
                while _journal_state(dest / ".distill-cull.jsonl")[2] < CARD_UNITS:
                    time.sleep(0.001)
                act = time.perf_counter() - decided
                assert _exit_code(pid) == 0 and not _check(card, dest, before)
                return {"act_seconds": act, "seconds": time.perf_counter() - started}
            if when[0] == "time":
                while _journal_state(dest / ".distill-cull.jsonl")[1] < when[1]:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        raise RuntimeError(f"trial {name}: cull ended before placing {when[1]}")
                    time.sleep(0.0005)
                time.sleep(when[2])
            else:
                merged = _moved_sidecars(dest / ".distill-cull.jsonl")[when[1]]
                while not (merged.exists() and b"PickLabel" in merged.read_bytes()):
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        break  # it finished first: a kill after the end
                    time.sleep(0.0002)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            _, moved_at_kill, done_at_kill = _journal_state(dest / ".distill-cull.jsonl")
            code = _exit_code(_in_child(partial(_cull, card, student, dest)))
            problems = ([f"resume exited {code}"] if code else []) + _check(card, dest, before)
            return {"trial": name, "kill": list(when),
                    "placed_at_kill": moved_at_kill, "done_at_kill": done_at_kill,
                    "between_place_and_done": moved_at_kill > done_at_kill,
                    "survived": not problems, "problems": problems}

        results = {}
        for file_systems, root in (("one", scratch), ("two", other)):
            act = trial(f"{file_systems}-calibrate", root, None)["act_seconds"]
            per_photo = act / CARD_UNITS
            trials = [trial(f"{file_systems}-{n}", root, (
                ("time", rng.randrange(CARD_UNITS), round(rng.uniform(0, 2 * per_photo), 4))
                if n % 2 else ("merge", rng.randrange(len(CARD_SIDECARS)))))
                for n in range(per_file_system)]
            results[file_systems] = {
                "act_pass_seconds": round(act, 3), "trials": len(trials),
                "survived": sum(t["survived"] for t in trials),
                "killed_mid_act": sum(0 < t["done_at_kill"] < CARD_UNITS for t in trials),
                "killed_between_a_placement_and_its_done_line": sum(
                    t["between_place_and_done"] for t in trials),
                "killed_before_any_done": sum(t["done_at_kill"] == 0 for t in trials),
                "killed_after_all_done": sum(t["done_at_kill"] >= CARD_UNITS for t in trials),
                "failures": [t for t in trials if not t["survived"]]}
            print(f"kill -9 in the act pass, {file_systems} file system(s): "
                  f"{results[file_systems]['survived']} of {len(trials)} resumed with nothing "
                  f"lost ({results[file_systems]['killed_mid_act']} mid-act)", flush=True)
        return {"seed": seed, "photos_per_card": CARD_UNITS, **results}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(other, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30, help="kill trials per file-system setup")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-suite", action="store_true", help="only the kill trial")
    args = parser.parse_args()
    out = ROOT / "benchmarks" / "results" / "faults.json"
    result = json.loads(out.read_text()) if out.exists() else {}  # keeps what is not rerun
    run = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
           "machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "cpu_count": os.cpu_count(), "load_average_at_start": list(os.getloadavg())},
           "python": platform.python_version()}
    if not args.no_suite:
        result.update({**run, **run_suite()})
    if args.kills:
        started = time.perf_counter()
        result["kill_trials"] = {**run, **kill_trials(args.kills, args.seed),
                                 "seconds": round(time.perf_counter() - started, 1)}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
