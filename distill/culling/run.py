"""Cull stage: a trained student decides keep, pending or trash for every photo in a folder.

Three passes, each resumable:
1. **score**: each photo is decoded (JPEG, PNG, HEIC, camera RAW) and scored by the student,
   described for similar-shot search and measured by the technical heuristics; a RAW with a
   JPEG of the same name is scored once, through the JPEG, and travels with it;
2. **decide** (`distill.culling.decide`), once every photo is scored: similar-shot groups with a best
   pick, a keep threshold or a keep rate, and a reason for every decision;
3. **act**: `--link` / `--move` sort photos into DEST/keep, DEST/pending and DEST/trash;
   `--xmp` writes rating, pick label and reason keywords to sidecars.

Photo bytes are never modified, and every placement goes through `distill.safefs`: nothing
is replaced, a copy is verified by sha256 before the original is removed, and a name already
taken gets a new one (`IMG_0001-1.jpg`). Only regular files are culled: a link, FIFO, device
or sparse file under a photo's name is that photo's error row, in every action. Every score,
decision and action goes to an append-only journal (`distill.culling.journal`) keyed by the
photo's absolute path, before the next pass; all of a pass's decisions are one line, so a
kill never leaves half of them. Where each file goes and which sidecar is whose is planned in
`distill.culling.act`. The journal's first line holds the options that shape decisions; a run
with other options is refused rather than mixed in. One run at a time holds DEST.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from distill import safefs, xmp
from distill.culling.act import SidecarClaims, finish, plan
from distill.culling.decide import DECISIONS, DecideOptions, decide
from distill.culling.journal import Journal
from distill.culling.report import refuse_unless_a_report, write_html, write_report
from distill.decode import RAW_EXTENSIONS, DecodeError, decode_named, find_images, read_bytes
from distill.errors import ConfigError
from distill.scoring import TIER_BOUNDARIES, tier
from distill.similar import offline_descriptor
from students import load_model
from teachers.faces import FaceModels
from teachers.focus import measure_focus
from teachers.technical import WORKING_SIDE, measure

JOURNAL = ".distill-cull.jsonl"
# Scoring threads decode ahead of the student, two photos each: enough to keep them busy while
# the student scores a batch, few enough that memory stays about one batch of decoded photos.
PREFETCH_PER_THREAD = 2
SCORING_THREADS_MAX = 8  # as offline_descriptors; each thread holds up to two decoded photos
# JPEG drafts at least this large: photos up to ~1536 px (and 1920 x 1080) decode whole, a
# 24 MP one at a quarter, as labeling's decode.max_side (benchmarks/cull_throughput.py times
# 1600 too, which decodes 24 MP at half size)
FOCUS_SIDE = 768


@dataclass
class CullOptions:
    action: str = "dry"  # dry | link | move
    xmp: bool = False
    decide: DecideOptions = field(default_factory=DecideOptions)
    tier_boundaries: tuple[float, float] = TIER_BOUNDARIES
    batch_size: int = 16
    max_images: int | None = None  # score at most this many new photos now (a re-run continues)
    faces: bool = False  # find faces, their eyes and their focus (teachers.faces)
    # JPEGs decode to at least this many px per side (the student's own size if larger), so
    # focus is measured at or near native resolution: a 1.5 px defocus vanishes in a 4x draft
    focus_side: int = FOCUS_SIDE
    weights_dir: str | None = None  # where the faces teacher's weights are (teachers.weights)

    def __post_init__(self):
        if self.action not in ("dry", "link", "move"):
            raise ConfigError(f"action must be dry, link or move, got {self.action!r}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be ≥ 1, got {self.batch_size}")
        if self.max_images is not None and self.max_images < 0:
            raise ConfigError(f"--max-images must be ≥ 0, got {self.max_images}")
        if self.focus_side < 0:
            raise ConfigError(f"--focus-side must be ≥ 0, got {self.focus_side}")

    def settings(self, model_sha256: str) -> dict:
        """What shapes a destination's decisions and files: a resume must not change it."""
        return {"action": self.action, "xmp": self.xmp, **asdict(self.decide),
                "tier_boundaries": list(self.tier_boundaries), "model_sha256": model_sha256,
                "faces": self.faces, "focus_side": self.focus_side}


def resolve_dest(folder: Path, dest: Path | None) -> Path:
    dest = Path(dest).resolve() if dest else folder / "culled"
    if dest == folder:
        raise ConfigError(f"--dest {dest} is the folder being culled; give another folder "
                          "(default FOLDER/culled)")
    return dest


def photos_to_cull(folder: Path, dest: Path) -> list[tuple[Path, list[Path]]]:
    """(photo, companions) for the folder's photos, without what earlier runs sorted into
    DEST (all of DEST when it lies inside the folder). A RAW beside a JPEG or HEIC of the
    same name is that photo's companion: scored through it, decided and moved with it."""
    skipped = [dest] if folder in dest.parents else [dest / d for d in DECISIONS]
    found = [p for p in find_images([folder])
             if not any(s == q for q in p.resolve().parents for s in skipped)]
    by_stem: dict[tuple[Path, str], list[Path]] = {}
    for photo in found:
        by_stem.setdefault((photo.parent, photo.stem.lower()), []).append(photo)
    units = []
    for photo in found:
        siblings = by_stem[(photo.parent, photo.stem.lower())]
        rendered = [p for p in siblings if p.suffix.lower() not in RAW_EXTENSIONS]
        # only a regular file travels with another: a link or a FIFO is its own error row
        raws = [p for p in siblings if p.suffix.lower() in RAW_EXTENSIONS and _regular(p)]
        if len(rendered) == 1 and raws:  # RAW+JPEG: the JPEG speaks for the pair
            if photo == rendered[0]:
                units.append((photo, raws))
        else:
            units.append((photo, []))
    return units


def _regular(path: Path) -> bool:
    try:
        safefs.regular_file(path)
    except (DecodeError, OSError):
        return False
    return True


def cull(folder: Path, model_path: Path, dest: Path | None = None,
         options: CullOptions | None = None, report: Path | None = None,
         progress: bool = True, html: bool = False) -> dict:
    options = options or CullOptions()
    folder = Path(folder).resolve()
    dest = resolve_dest(folder, dest)
    report = Path(report or dest / "cull.csv")
    refuse_unless_a_report(report)  # before any work: never a photo, never a stranger's file
    dest.mkdir(parents=True, exist_ok=True)
    settings = options.settings(safefs.sha256_file(Path(model_path)))
    with safefs.DestinationLock(dest):
        journal = Journal(dest / JOURNAL, settings)
        try:
            # Half-done photos first: their decision is journaled, their action may not be.
            for entry in list(journal.entries.values()):
                if entry.get("decision") in DECISIONS and not entry.get("done"):
                    finish(entry, journal)
            units = [u for u in photos_to_cull(folder, dest) if not journal.is_scored(u[0])]
            todo = units[: options.max_images] if options.max_images is not None else units
            _score(todo, folder, load_model(model_path) if todo else None, options, journal,
                   progress)
            if len(todo) == len(units):  # every photo is scored: decide them together
                _decide_and_act(folder, dest, options, journal, progress)
        finally:
            journal.close()
        entries = [e for e in journal.entries.values() if Path(e["source"]).is_relative_to(folder)]
        write_report(entries, report)
        page = write_html(entries, dest / "review") if html else None
    # a photo that could not be placed is an error, not the keep or trash it was meant to be:
    # keep + pending + trash + error + undecided = total
    counts = {d: sum(1 for e in entries if e.get("decision") == d and not e.get("error"))
              for d in DECISIONS}
    counts["error"] = sum(1 for e in entries if e.get("error") or e.get("decision") == "error")
    return {**counts, "total": len(entries), "report": str(report), "dest": str(dest),
            "html": str(page) if page else None, "remaining": len(units) - len(todo),
            "undecided": sum(1 for e in entries if "decision" not in e),
            "groups": len({e["group_id"] for e in entries if e.get("group_size", 1) > 1}),
            "xmp_errors": sum(1 for e in entries if e.get("xmp_error"))}


def _score(units: list[tuple[Path, list[Path]]], folder: Path, model, options: CullOptions,
           journal: Journal, progress: bool) -> None:
    """Score the photos a batch at a time, journaling each in the order given.

    Reading, hashing, decoding and describing run in a few threads (Pillow, hashlib and
    OpenCV release the GIL), ahead of the student, which scores one batch while the threads
    decode the next photos: at most `PREFETCH_PER_THREAD` per thread beyond the batch held,
    so memory stays bounded. The journal gets the same lines, in the same order, as in one
    thread; a photo that cannot be read or decoded is an error line where it comes.
    """
    threads = scoring_threads()
    faces = FaceModels(options.weights_dir) if options.faces and units else None
    prepare = partial(_prepare, folder=folder, faces=faces, draft_size=max(
        model.preprocessing["resize_size"], options.focus_side) if units else None)
    pool = ThreadPoolExecutor(threads, thread_name_prefix="cull-score")
    try:
        prepared = _in_order(pool, prepare, units, ahead=PREFETCH_PER_THREAD * threads)
        with tqdm(total=len(units), unit="img", desc="scoring", disable=not progress) as bar:
            for start in range(0, len(units), options.batch_size):
                batch = list(islice(prepared, options.batch_size))
                images, scored = [], []
                for entry, image in batch:
                    if image is None:
                        journal.record(entry)
                    else:
                        images.append(image)
                        scored.append(entry)
                if images:
                    predicted = model.predict(images)
                    for row, (entry, quality, keep_prob) in enumerate(zip(
                            scored, predicted["quality"], predicted["keep_prob"])):
                        if row in predicted["errors"]:  # NaN or inf: no score to decide on
                            journal.record(_failed(entry, predicted["errors"][row]))
                        else:
                            journal.record({**entry, "quality": round(float(quality), 4),
                                            "keep_prob": round(float(keep_prob), 4)})
                bar.update(len(batch))
    finally:  # on an error, photos not yet started are not decoded in vain
        pool.shutdown(wait=True, cancel_futures=True)


def scoring_threads() -> int:
    """One thread per core this process may run on, at most SCORING_THREADS_MAX."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(SCORING_THREADS_MAX, cores or 1))


def _in_order(pool: ThreadPoolExecutor, work, items, ahead: int):
    """work(item) for each item, yielded in order; at most `ahead` items run or wait beside
    the one being handed out, so a slow consumer holds the threads back."""
    items = iter(items)
    running = deque(pool.submit(work, item) for item in islice(items, ahead))
    while running:
        done = running.popleft().result()
        running.extend(pool.submit(work, item) for item in islice(items, 1))
        yield done


def _prepare(unit: tuple[Path, list[Path]], folder: Path, draft_size: int | None,
             faces: FaceModels | None = None) -> tuple[dict, Image.Image | None]:
    """One photo's score line without the student's scores, and its decoded image; or its
    error line and None."""
    photo, companions = unit
    entry = {"source": str(photo), "image": str(photo.relative_to(folder)), "scored": True}
    try:
        status = os.lstat(photo)
        entry.update(size=status.st_size, mtime_ns=status.st_mtime_ns)
        # cull moves files: a symbolic link (whose target lies elsewhere, and which would
        # dangle in its new folder) is refused like a FIFO or a device, in every action
        data = read_bytes(photo, follow_symlinks=False)
        # a JPEG decodes straight to about the student's scale, as labeling does
        decoded = decode_named(data, photo, draft_size=draft_size)
        entry["companions"] = [_companion(c) for c in companions]
    except (DecodeError, OSError) as exc:
        return _failed(entry, str(exc)), None
    descriptor, measures = describe(decoded.image, faces)
    return {**entry, "sha256": safefs.sha256_bytes(data), "taken_at": decoded.taken_at,
            "descriptor": [round(float(v), 5) for v in descriptor],
            "measures": measures}, decoded.image


def _failed(entry: dict, reason: str) -> dict:
    return {**entry, "decision": "error", "error": reason, "done": True, "action": "none"}


def describe(image: Image.Image, faces: FaceModels | None = None) -> tuple[np.ndarray, dict]:
    """The similar-shot descriptor and the technical measures, both from one copy at the
    technical teacher's working size (one resize instead of two, on the hot path); the focus
    (and the faces) at the decoded resolution."""
    working = image.copy()
    working.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.LANCZOS)
    measures = {k: round(v, 5) for k, v in {**measure(working), **measure_focus(image)}.items()}
    if faces is not None:
        measures["faces"] = faces.records(image)
    return offline_descriptor(working), measures


def _companion(path: Path) -> dict:
    return {"source": str(path), "sha256": safefs.sha256_file(path, follow_symlinks=False)}


def _decide_and_act(folder: Path, dest: Path, options: CullOptions, journal: Journal,
                    progress: bool) -> None:
    waiting = [e for e in journal.entries.values() if "quality" in e and "decision" not in e
               and Path(e["source"]).is_relative_to(folder)]
    waiting.sort(key=lambda e: e["image"])
    decided, claims = [], SidecarClaims()
    for entry, decision in zip(waiting, decide(waiting, options.decide)):
        quality = entry["quality"]
        decided.append({
            "source": entry["source"], **decision,
            "tier": tier(quality, options.tier_boundaries),
            "rating": xmp.rating_from_quality(quality),
            "pick_label": xmp.PICK_LABELS[decision["decision"]],
            "action": options.action, "xmp": options.xmp,
            **plan(entry, dest / decision["decision"] / entry["image"], options.action,
                   options.xmp, claims)})
    if decided:
        journal.record_decisions(decided)  # every intent, with every path, before any action
    for entry in tqdm(decided, unit="img", desc=options.action, disable=not progress):
        finish(journal.entries[entry["source"]], journal)
