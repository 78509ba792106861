"""Cull stage: a trained student decides keep or trash for every photo in a folder.

Dry run by default (a report, nothing else). `--link` / `--move` sort photos into
DEST/keep and DEST/trash; `--xmp` writes rating + digiKam pick-label sidecars. Photo bytes
are never modified: a link is a hard link (a symlink across file systems), a move is a rename.

Resumable with no photo done twice and none lost: every decision goes to an append-only
journal (DEST/.distill-cull.jsonl) before its action, and a "done" entry after it. A re-run
skips done photos and redoes or confirms half-done ones (a move whose target exists is done).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from distill.decode import DecodeError, decode_path, find_images
from distill.errors import DistillError
from distill.xmp import sidecar_for, write_sidecar

JOURNAL = ".distill-cull.jsonl"
REPORT_FIELDS = ["image", "quality", "keep_prob", "decision", "tier", "action", "error"]


@dataclass
class CullOptions:
    action: str = "dry"  # dry | link | move
    xmp: bool = False
    keep_threshold: float = 0.5  # on keep_prob
    tier_boundaries: tuple[float, float] = (5.0, 6.0)
    batch_size: int = 16
    max_images: int | None = None  # stop after this many new photos (a re-run continues)


class Journal:
    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill mid-write: its photo is simply redone
                self.entries.setdefault(entry["image"], {}).update(entry)
        self._handle = path.open("a")

    def record(self, entry: dict) -> None:
        self.entries.setdefault(entry["image"], {}).update(entry)
        self._handle.write(json.dumps(entry) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self):
        self._handle.close()


def load_model(path: Path):
    """A student.pt or student.onnx, as an object with predict(images) -> quality, keep_prob."""
    if Path(path).suffix == ".onnx":
        from students.onnx_runtime import load_onnx_student

        return load_onnx_student(path)
    from students.checkpoint import load_student

    return load_student(path)


def tier_of(quality: float, boundaries: tuple[float, float]) -> int:
    return 0 if quality <= boundaries[0] else (1 if quality <= boundaries[1] else 2)


def _place(photo: Path, target: Path, action: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        return
    if action == "move":
        sidecar = sidecar_for(photo)
        shutil.move(photo, target)
        if sidecar.exists():  # a sidecar travels with its photo
            shutil.move(sidecar, target.with_name(target.name + sidecar.name[len(photo.name):]))
        return
    try:
        os.link(photo, target)
    except OSError:  # another file system: a symlink still points at the original
        target.symlink_to(photo.resolve())


def _finish(entry: dict, folder: Path, dest: Path, options: CullOptions, journal: Journal) -> None:
    """Carry out a journaled decision; safe to call again after a kill at any point."""
    photo = folder / entry["image"]
    where = photo
    if options.action in ("link", "move") and entry["decision"] in ("keep", "trash"):
        target = dest / entry["decision"] / entry["image"]
        if options.action == "move":
            if not photo.exists() and not target.exists():
                raise DistillError(f"{photo} vanished and is not in {target}: stopping to lose nothing")
            where = target
        if photo.exists():
            _place(photo, target, options.action)
    if options.xmp and entry["decision"] in ("keep", "trash"):
        write_sidecar(where, entry["quality"], entry["tier"])
    journal.record({"image": entry["image"], "done": True, "action": options.action})


def cull(folder: Path, model_path: Path, dest: Path | None = None, options: CullOptions | None = None,
         report: Path | None = None, progress: bool = True) -> dict:
    options = options or CullOptions()
    folder, dest = Path(folder).resolve(), Path(dest or Path(folder) / "culled").resolve()
    dest.mkdir(parents=True, exist_ok=True)
    journal = Journal(dest / JOURNAL)
    try:
        # Half-done photos first: their decision is journaled, their action may not be.
        for entry in list(journal.entries.values()):
            if "decision" in entry and not entry.get("done"):
                _finish(entry, folder, dest, options, journal)
        done = set(journal.entries)
        photos = [p for p in find_images([folder]) if dest not in p.resolve().parents
                  and str(p.relative_to(folder)) not in done]
        photos = photos[: options.max_images] if options.max_images is not None else photos
        model = load_model(model_path) if photos else None
        with tqdm(total=len(photos), unit="img", desc="culling", disable=not progress) as bar:
            for start in range(0, len(photos), options.batch_size):
                _cull_batch(photos[start:start + options.batch_size], folder, dest, model,
                            options, journal)
                bar.update(len(photos[start:start + options.batch_size]))
    finally:
        journal.close()
    entries = list(Journal(dest / JOURNAL).entries.values())
    report = Path(report or dest / "cull.csv")
    _write_report(entries, report)
    counts = {d: sum(1 for e in entries if e.get("decision") == d) for d in ("keep", "trash", "error")}
    return {**counts, "total": len(entries), "report": str(report), "dest": str(dest),
            "remaining": len([p for p in find_images([folder]) if dest not in p.resolve().parents
                              and str(p.relative_to(folder)) not in {e["image"] for e in entries}])}


def _cull_batch(photos: list[Path], folder: Path, dest: Path, model, options: CullOptions,
                journal: Journal) -> None:
    images, decodable = [], []
    for photo in photos:
        name = str(photo.relative_to(folder))
        try:
            # a JPEG decodes straight to about the student's scale, as labeling decodes it
            images.append(decode_path(photo, draft_size=model.preprocessing["resize_size"]).image)
            decodable.append(name)
        except DecodeError as exc:
            journal.record({"image": name, "decision": "error", "error": str(exc), "done": True,
                            "action": "none"})
    if not images:
        return
    predicted = model.predict(images)
    for name, quality, keep_prob in zip(decodable, predicted["quality"], predicted["keep_prob"]):
        entry = {"image": name, "quality": round(float(quality), 4),
                 "keep_prob": round(float(keep_prob), 4),
                 "decision": "keep" if keep_prob >= options.keep_threshold else "trash",
                 "tier": tier_of(float(quality), options.tier_boundaries)}
        journal.record(entry)  # the intent, before any action touches the disk
        _finish(entry, folder, dest, options, journal)


def _write_report(entries: list[dict], path: Path) -> None:
    rows = sorted(entries, key=lambda e: e["image"])
    if path.suffix == ".json":
        path.write_text(json.dumps([{k: e.get(k) for k in REPORT_FIELDS} for e in rows], indent=2))
        return
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=REPORT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
