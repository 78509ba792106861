"""What `distill cull` tells the user: the report (CSV or JSON, one row per photo) and, with
`--html`, a static review page of the similar-shot groups (`distill.sheet`: thumbnails only,
with face boxes where faces were found; no JavaScript, opens offline).

A report replaces only a previous report: a `--report` path that exists and is not one (a
photo, anyone's CSV) is refused before any work. Names are bytes: a name that is not UTF-8
is written in the escaped, reversible form of `distill.names.as_text` (`IMG_\\xff.jpg`), so
every report is valid UTF-8 and `names.as_path` gives the name back."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

from distill.decode import DecodeError, read_bytes
from distill.errors import ConfigError
from distill.names import as_text
from distill.safefs import atomic_write
from distill.sheet import write_sheet

REPORT_FIELDS = ["image", "decision", "reason", "quality", "keep_prob", "group_id", "group_size",
                 "best_in_group", "similar_to", "flags", "focus", "faces", "eyes_closed",
                 "tier", "rating", "pick_label", "taken_at", "action", "target", "companions",
                 "error", "xmp_error", "note"]
REPORT_SUFFIXES = (".csv", ".json")
# every version of the report began so; a file that does not is not ours to replace
REPORT_HEADER_START = "image,decision,reason,"
MAX_REPORT_BYTES = 1 << 30


def _row(entry: dict) -> dict:
    row = {k: entry.get(k) for k in REPORT_FIELDS}
    row["flags"] = ",".join(entry.get("flags") or [])
    row["companions"] = ",".join(Path(c["source"]).name for c in entry.get("companions") or [])
    measures = entry.get("measures") or {}
    row["focus"] = measures.get("focus")
    if "faces" in measures:  # measured (--faces): a count, 0 included
        row["faces"] = len(measures["faces"])
        row["eyes_closed"] = sum(1 for f in measures["faces"] if f["eyes_closed"])
    row["note"] = "; ".join(filter(None, [entry.get("note"), *(entry.get("notes") or [])]))
    return {k: as_text(v) if isinstance(v, str) else v for k, v in row.items()}


def _is_report(data: bytes, suffix: str) -> bool:
    if suffix == ".csv":
        return data.lstrip(b"\xef\xbb\xbf").startswith(REPORT_HEADER_START.encode())
    try:
        rows = json.loads(data)
    except ValueError:
        return False
    return isinstance(rows, list) and all(isinstance(r, dict) and {"image", "decision"} <= set(r)
                                          for r in rows)


def refuse_unless_a_report(path: Path) -> None:
    """ConfigError unless `path` is a .csv or .json name that is free or holds a report."""
    if path.suffix.lower() not in REPORT_SUFFIXES:
        raise ConfigError(f"--report {path}: a report is a .csv or .json file")
    if not os.path.lexists(path):
        return
    try:
        data = read_bytes(path, follow_symlinks=False, max_bytes=MAX_REPORT_BYTES)
    except DecodeError as exc:
        raise ConfigError(f"--report {path} {exc}; it was left as it is") from None
    if not _is_report(data, path.suffix.lower()):
        raise ConfigError(f"--report {path} exists and is not a cull report; it was left as it "
                          "is (give a new file name)")


def write_report(entries: list[dict], path: Path) -> None:
    """All rows, sorted by image, through a temporary file renamed over the old report."""
    rows = [_row(e) for e in sorted(entries, key=lambda e: e["image"])]
    with atomic_write(path) as partial:
        if path.suffix.lower() == ".json":
            partial.write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
            return
        with partial.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=REPORT_FIELDS)
            writer.writeheader()
            writer.writerows(rows)


def where_now(entry: dict) -> str:
    """The photo's current path: its target once placed by a move, else where it was."""
    target = entry.get("target")
    return target if entry.get("action") == "move" and target and Path(target).exists() \
        else entry["source"]


def write_html(entries: list[dict], folder: Path) -> Path:
    """One section per similar-shot group (largest first), then the photos shot once."""
    decided = [e for e in entries if e.get("decision") in ("keep", "pending", "trash")]
    groups: dict[int, list[dict]] = {}
    for entry in decided:
        groups.setdefault(entry["group_id"], []).append(entry)

    def card(entry: dict) -> dict:
        return {"image_id": hashlib.sha1(os.fsencode(entry["source"])).hexdigest()[:16],
                "path": as_text(where_now(entry)), "label": entry["decision"],
                "badge": "best" if entry["best_in_group"] and entry["group_size"] > 1 else "",
                "quality": entry["quality"], "keep_prob": entry["keep_prob"],
                "reason": as_text(entry["reason"]),
                "boxes": [f["box"] for f in entry.get("measures", {}).get("faces") or []]}
    ordered = sorted(groups.values(), key=lambda g: (-len(g), min(e["image"] for e in g)))
    def heading(group: list[dict]) -> str:
        names = ", ".join(as_text(e["image"]) for e in group[:3])
        return f"{len(group)} similar: {names}{' …' if len(group) > 3 else ''}"

    def best_first(entry: dict) -> tuple:
        return not entry["best_in_group"], -entry["quality"], entry["image"]

    sections = [(heading(group), [card(e) for e in sorted(group, key=best_first)])
                for group in ordered if len(group) > 1]
    singles = [card(e) for group in ordered if len(group) == 1 for e in group]
    if singles:
        sections.append(("shot once", singles))
    keep = sum(1 for e in decided if e["decision"] == "keep")
    return write_sheet(folder, "distill cull: review", sections,
                       ["quality", "keep_prob", "reason"],
                       intro=f"{len(decided)} photos, {keep} kept, "
                             f"{sum(1 for g in groups.values() if len(g) > 1)} groups of "
                             "similar shots; the best of each group is marked.")
