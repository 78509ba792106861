"""Cull stage: a trained student decides keep or trash for every photo in a folder.

Dry run by default (a report, nothing else). `--link` / `--move` sort photos into
DEST/keep and DEST/trash; `--xmp` writes rating + digiKam pick-label sidecars. Photo bytes
are never modified, and every placement goes through `distill.safefs`: nothing is replaced,
a copy is verified by sha256 before the original is removed, and a name already taken in
keep/ or trash/ gets a new one (`IMG_0001-1.jpg`).

Resumable with no photo done twice and none lost: every decision goes to an append-only
journal (DEST/.distill-cull.jsonl), keyed by the photo's absolute path and holding its
sha256, target and sidecar, before its action; a "done" entry follows the action. A re-run
first finishes half-done decisions, then skips photos whose done entry matches the file on
disk (size and mtime). The journal's first line holds the options that shape decisions; a
run with other options is refused rather than mixed in. One run at a time holds DEST.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from distill import safefs, xmp
from distill.decode import DecodeError, decode_bytes, find_images, read_bytes
from distill.errors import ConfigError, DistillError

JOURNAL = ".distill-cull.jsonl"
DECISIONS = ("keep", "trash")
REPORT_FIELDS = ["image", "quality", "keep_prob", "decision", "tier", "rating", "pick_label",
                 "action", "target", "error", "xmp_error"]


@dataclass
class CullOptions:
    action: str = "dry"  # dry | link | move
    xmp: bool = False
    keep_threshold: float = 0.5  # on keep_prob
    tier_boundaries: tuple[float, float] = (5.0, 6.0)
    batch_size: int = 16
    max_images: int | None = None  # stop after this many new photos (a re-run continues)

    def __post_init__(self):
        if self.action not in ("dry", "link", "move"):
            raise ConfigError(f"action must be dry, link or move, got {self.action!r}")
        if not 0.0 <= self.keep_threshold <= 1.0:
            raise ConfigError(f"--keep-threshold is a keep_prob in [0, 1], got {self.keep_threshold}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be ≥ 1, got {self.batch_size}")
        if self.max_images is not None and self.max_images < 0:
            raise ConfigError(f"--max-images must be ≥ 0, got {self.max_images}")

    def settings(self, model_sha256: str) -> dict:
        """What shapes a destination's decisions and files: a resume must not change it."""
        return {"action": self.action, "xmp": self.xmp, "keep_threshold": self.keep_threshold,
                "tier_boundaries": list(self.tier_boundaries), "model_sha256": model_sha256}


class Journal:
    """DEST/.distill-cull.jsonl: a settings line, then one line per decision and per action."""

    def __init__(self, path: Path, settings: dict):
        self.path = path
        self.entries: dict[str, dict] = {}
        recorded = None
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill mid-write: its photo is simply redone
                if "settings" in entry:
                    recorded = entry["settings"]
                elif "source" in entry:
                    self.entries.setdefault(entry["source"], {}).update(entry)
        if recorded is not None and recorded != settings:
            if recorded["action"] == "dry" and not recorded["xmp"]:
                # A dry run left nothing on disk but this journal: set it aside, start over.
                path.rename(path.with_name(f"{path.stem}.dry-{os.getpid()}{path.suffix}"))
                self.entries, recorded = {}, None
            else:
                differs = [k for k in settings if recorded.get(k) != settings[k]]
                raise DistillError(
                    f"{path.parent} was culled with other options ({', '.join(differs)}: "
                    f"{', '.join(f'{recorded.get(k)}' for k in differs)}); re-run with the same "
                    "options to continue it, or choose a new --dest")
        self._handle = path.open("a")
        if recorded is None:
            self._write({"settings": settings})

    def _write(self, entry: dict) -> None:
        self._handle.write(json.dumps(entry) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def record(self, entry: dict) -> None:
        self.entries.setdefault(entry["source"], {}).update(entry)
        self._write(entry)

    def is_done(self, photo: Path) -> bool:
        """Done, and still the same file (a new photo at an old path is a new photo)."""
        entry = self.entries.get(str(photo))
        if not entry or not entry.get("done"):
            return False
        if not photo.exists():
            return True
        stat = photo.stat()
        return (entry.get("size"), entry.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns)

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


def resolve_dest(folder: Path, dest: Path | None) -> Path:
    folder = Path(folder).resolve()
    dest = Path(dest).resolve() if dest else folder / "culled"
    if dest == folder:
        raise ConfigError(f"--dest {dest} is the folder being culled; give another folder "
                          "(default FOLDER/culled)")
    return dest


def photos_to_cull(folder: Path, dest: Path) -> list[Path]:
    """The folder's photos, without what earlier runs sorted into DEST/keep and DEST/trash
    (and without DEST altogether when it lies inside the folder)."""
    skipped = [dest / decision for decision in DECISIONS]
    if folder in dest.parents:
        skipped = [dest]
    return [p for p in find_images([folder])
            if not any(s == q for q in p.resolve().parents for s in skipped)]


def cull(folder: Path, model_path: Path, dest: Path | None = None,
         options: CullOptions | None = None, report: Path | None = None,
         progress: bool = True) -> dict:
    options = options or CullOptions()
    folder = Path(folder).resolve()
    dest = resolve_dest(folder, dest)
    dest.mkdir(parents=True, exist_ok=True)
    settings = options.settings(safefs.sha256_file(Path(model_path)))
    with safefs.DestinationLock(dest):
        journal = Journal(dest / JOURNAL, settings)
        try:
            # Half-done photos first: their decision is journaled, their action may not be.
            for entry in list(journal.entries.values()):
                if entry.get("decision") in DECISIONS and not entry.get("done"):
                    _finish(entry, journal)
            photos = [p for p in photos_to_cull(folder, dest) if not journal.is_done(p)]
            remaining = len(photos)
            photos = photos[: options.max_images] if options.max_images is not None else photos
            model = load_model(model_path) if photos else None
            with tqdm(total=len(photos), unit="img", desc="culling", disable=not progress) as bar:
                for start in range(0, len(photos), options.batch_size):
                    batch = photos[start:start + options.batch_size]
                    _cull_batch(batch, folder, dest, model, options, journal)
                    bar.update(len(batch))
        finally:
            journal.close()
        entries = [e for e in journal.entries.values() if Path(e["source"]).is_relative_to(folder)]
        report = Path(report or dest / "cull.csv")
        _write_report(entries, report)
    counts = {d: sum(1 for e in entries if e.get("decision") == d) for d in (*DECISIONS, "error")}
    return {**counts, "total": len(entries), "report": str(report), "dest": str(dest),
            "remaining": remaining - len(photos),
            "xmp_errors": sum(1 for e in entries if e.get("xmp_error"))}


def _cull_batch(photos: list[Path], folder: Path, dest: Path, model, options: CullOptions,
                journal: Journal) -> None:
    images, decided = [], []
    for photo in photos:
        entry = {"source": str(photo), "image": str(photo.relative_to(folder))}
        try:
            stat = photo.stat()
            entry.update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
            data = read_bytes(photo)
            # a JPEG decodes straight to about the student's scale, as labeling decodes it
            images.append(decode_bytes(data, draft_size=model.preprocessing["resize_size"]).image)
        except (DecodeError, OSError) as exc:
            journal.record({**entry, "decision": "error", "error": str(exc), "done": True,
                            "action": "none"})
            continue
        decided.append({**entry, "sha256": safefs.sha256_bytes(data)})
    if not images:
        return
    predicted = model.predict(images)
    for entry, quality, keep_prob in zip(decided, predicted["quality"], predicted["keep_prob"]):
        decision = "keep" if keep_prob >= options.keep_threshold else "trash"
        entry.update(quality=round(float(quality), 4), keep_prob=round(float(keep_prob), 4),
                     decision=decision, tier=tier_of(float(quality), options.tier_boundaries),
                     rating=xmp.rating_from_quality(float(quality)),
                     pick_label=xmp.PICK_LABELS[decision],
                     action=options.action, xmp=options.xmp)
        entry.update(_plan(Path(entry["source"]), dest / decision / entry["image"], options))
        journal.record(entry)  # the intent, with every path it will touch, before any action
        _finish(entry, journal)


def _plan(photo: Path, wanted: Path, options: CullOptions) -> dict:
    """The free target name, and where the photo's sidecar comes from and goes."""
    existing = next((c for c in xmp.sidecar_candidates(photo) if c.exists()), None)
    plan = {"sidecar": str(existing) if existing else None}
    if existing:
        plan["sidecar_sha256"] = safefs.sha256_file(existing)
    if options.action == "dry":
        return plan

    def target_and_sidecar_free(candidate: Path) -> bool:
        return not (existing and xmp.sidecar_after_move(existing, photo, candidate).exists())
    target = safefs.free_name(wanted, accept=target_and_sidecar_free)
    plan["target"] = str(target)
    if existing and options.action == "move":
        plan["sidecar_target"] = str(xmp.sidecar_after_move(existing, photo, target))
    return plan


def _finish(entry: dict, journal: Journal) -> None:
    """Carry out a journaled decision; safe to call again after a kill at any point."""
    photo = Path(entry["source"])
    where, outcome = photo, {}
    try:
        if entry["action"] == "move":
            target = Path(entry["target"])
            if not photo.exists() and not safefs.is_placed(target, entry["sha256"]):
                raise safefs.PlacementError(f"{photo} vanished before it was moved, and "
                                            f"{target} does not hold it")
            safefs.move(photo, target, entry["sha256"])
            if entry.get("sidecar_target"):  # a sidecar travels with its photo
                safefs.move(Path(entry["sidecar"]), Path(entry["sidecar_target"]),
                            entry["sidecar_sha256"])
            where = target
        elif entry["action"] == "link":
            safefs.link(photo, Path(entry["target"]))
    except safefs.PlacementError as exc:
        outcome["error"] = str(exc)
    if entry["xmp"] and "error" not in outcome:
        try:
            sidecar = Path(entry["sidecar_target"]) if entry.get("sidecar_target") else (
                xmp.sidecar_for(where))
            xmp.write_sidecar(sidecar, entry["rating"], entry["pick_label"])
        except xmp.XmpError as exc:
            outcome["xmp_error"] = str(exc)
    journal.record({"source": entry["source"], "done": True, **outcome})


def _write_report(entries: list[dict], path: Path) -> None:
    rows = sorted(entries, key=lambda e: e["image"])
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps([{k: e.get(k) for k in REPORT_FIELDS} for e in rows], indent=2))
        return
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=REPORT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

