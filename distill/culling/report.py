"""What `distill cull` tells the user: the report (CSV or JSON, one row per photo) and, with
`--html`, a static review page of the similar-shot groups (`distill.sheet`: thumbnails only,
with face boxes where faces were found; no JavaScript, opens offline)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from distill.sheet import write_sheet

REPORT_FIELDS = ["image", "decision", "reason", "quality", "keep_prob", "group_id", "group_size",
                 "best_in_group", "similar_to", "flags", "focus", "faces", "eyes_closed",
                 "tier", "rating", "pick_label", "taken_at", "action", "target", "companions",
                 "error", "xmp_error"]


def _row(entry: dict) -> dict:
    row = {k: entry.get(k) for k in REPORT_FIELDS}
    row["flags"] = ",".join(entry.get("flags") or [])
    row["companions"] = ",".join(Path(c["source"]).name for c in entry.get("companions") or [])
    measures = entry.get("measures") or {}
    row["focus"] = measures.get("focus")
    if "faces" in measures:  # measured (--faces): a count, 0 included
        row["faces"] = len(measures["faces"])
        row["eyes_closed"] = sum(1 for f in measures["faces"] if f["eyes_closed"])
    return row


def write_report(entries: list[dict], path: Path) -> None:
    rows = [_row(e) for e in sorted(entries, key=lambda e: e["image"])]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=2))
        return
    with path.open("w", newline="") as handle:
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
        return {"image_id": hashlib.sha1(entry["source"].encode()).hexdigest()[:16],
                "path": where_now(entry), "label": entry["decision"],
                "badge": "best" if entry["best_in_group"] and entry["group_size"] > 1 else "",
                "quality": entry["quality"], "keep_prob": entry["keep_prob"],
                "reason": entry["reason"],
                "boxes": [f["box"] for f in entry.get("measures", {}).get("faces") or []]}
    ordered = sorted(groups.values(), key=lambda g: (-len(g), min(e["image"] for e in g)))
    def heading(group: list[dict]) -> str:
        names = ", ".join(e["image"] for e in group[:3])
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
