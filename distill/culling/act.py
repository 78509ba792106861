"""Act pass of culling: where every photo, its RAW companions and its sidecars go, planned for
all of them before anything moves (and journaled with the decisions), then carried out in a
way that is safe to repeat after a kill at any point.

Sidecars have one owner each. A photo's own `photo.jpg.xmp` is its own; a `NAME.xmp` that
several photos of one name could claim (`IMG_0007.jpg`, `IMG_0007.png`, `IMG_0007.CR2`)
belongs to the photo the sidecar itself names (`crs:RawFileName`, `xmpMM:DerivedFrom`), else
to the RAW, else to the first by name; the others get their own `photo.ext.xmp`. In the
destination a photo never lands where another photo's `NAME.xmp` already lies (a second
card's `IMG_0001.jpg` beside the first card's `IMG_0001.DNG` + `IMG_0001.xmp`): it gets a
new name instead, so no tool, and no later write, mistakes one photo's sidecar for another's.
A sidecar that is not a regular file (a directory, a FIFO, a link) is left where it is and
reported; its photo is still sorted.

Order, each step journaled before the next: the plan (with the decisions), the placements
(`safefs.move` / `link`, each idempotent by the photo's sha256), a `moved` line, the sidecar
writes (idempotent merges: the same rating, pick label and keywords again), a `done` line.
Once `moved` is recorded the moves are never tried again, so a sidecar merged before a kill
is not mistaken for another file on resume.
"""

from __future__ import annotations

import os
from pathlib import Path

from distill import safefs, xmp
from distill.decode import IMAGE_EXTENSIONS, RAW_EXTENSIONS, DecodeError


class SidecarClaims:
    """Which existing sidecar belongs to which photo, for the photos of a folder."""

    def __init__(self):
        self._stems: dict[Path, dict[str, list[Path]]] = {}

    def _siblings(self, photo: Path) -> list[Path]:
        """The photos in `photo`'s folder with its exact stem (the claimants of `stem.xmp`)."""
        folder = photo.parent
        if folder not in self._stems:
            by_stem: dict[str, list[Path]] = {}
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                names = []
            for name in names:
                path = folder / name
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    by_stem.setdefault(path.stem, []).append(path)
            self._stems[folder] = by_stem
        return self._stems[folder].get(photo.stem, [photo])

    def owned(self, photo: Path) -> tuple[Path | None, Path | None]:
        """`photo`'s own existing sidecar (or None), and the photo a `NAME.xmp` it could have
        claimed belongs to instead (or None)."""
        long = xmp.long_form(photo)
        if safefs.fits(long) and os.path.lexists(long):
            return long, None
        short = photo.with_suffix(".xmp")
        if not os.path.lexists(short):
            return None, None
        claimants = [p for p in self._siblings(photo)
                     if not (safefs.fits(xmp.long_form(p)) and os.path.lexists(xmp.long_form(p)))]
        owner = _owner(short, claimants or [photo])
        return (short, None) if owner == photo else (None, owner)


def _owner(sidecar: Path, claimants: list[Path]) -> Path:
    if len(claimants) == 1:
        return claimants[0]
    named = {name.lower() for name in xmp.named_photos(sidecar)}
    chosen = [p for p in claimants if p.name.lower() in named]
    raws = [p for p in claimants if p.suffix.lower() in RAW_EXTENSIONS]
    return sorted(chosen or raws or claimants)[0]


def plan(entry: dict, wanted: Path, action: str, write_xmp: bool, claims: SidecarClaims) -> dict:
    """Free target names for the photo and its companions, where its sidecars go, which
    sidecar files `--xmp` writes, notes for the report, and what cannot be done
    (`sidecar_errors`: a sidecar that is not a regular file stays where it is)."""
    photo = Path(entry["source"])
    companions = [Path(c["source"]) for c in entry.get("companions", [])]
    owners = [photo, *companions]
    own, notes, problems, sidecars = _own_sidecars(owners, claims, action)

    def layout(candidate: Path | None) -> tuple[list[Path], dict[str, Path], dict[Path, str]]:
        """Where the photo and its companions, the moved sidecars and the written ones go."""
        placed = [] if candidate is None else [
            candidate, *[candidate.with_suffix(c.suffix) for c in companions]]
        home = dict(zip(owners, placed)) if action == "move" and placed else {}
        moved = {s["source"]: xmp.sidecar_after_move(Path(s["source"]), Path(s["owner"]),
                                                     home[Path(s["owner"])])
                 for s in sidecars} if home else {}
        written: dict[Path, str] = {}  # sidecar file → a note on its name, or ""
        for owner in owners if write_xmp else []:
            if own[owner] is False:
                continue  # not a regular file: reported, never written
            if own[owner]:
                written[moved.get(str(own[owner]), own[owner])] = ""
            else:
                written.update([_fresh_sidecar(home.get(owner, owner))])
        return placed, moved, written

    def free(candidate: Path) -> bool:
        placed, moved, written = layout(candidate)
        ours = {*placed[1:], *moved.values(), *(written if action == "move" else ())}
        strangers = [p.with_suffix(".xmp") for p in placed]  # another photo's NAME.xmp
        return not any(os.path.lexists(n) for n in ours) and not any(
            os.path.lexists(s) and s not in ours for s in strangers)

    result: dict = {}
    if action == "dry":
        placed, moved, written = layout(None)
    else:
        target = safefs.free_name(wanted, accept=free)
        placed, moved, written = layout(target)
        result["target"] = str(target)
        for companion, where in zip(entry.get("companions", []), placed[1:]):
            companion["target"] = str(where)
        result["companions"] = entry.get("companions", [])
        for sidecar in sidecars if action == "move" else []:
            sidecar["target"] = str(moved[sidecar["source"]])
    for path, note in written.items():
        if note and action != "move" and os.path.lexists(path) and path not in own.values():
            problems.append(f"{path} belongs to another photo, and {note}: no sidecar written")
            written[path] = None
    notes += [note for note in written.values() if note]
    result.update(sidecars=sidecars, notes=notes,
                  xmp_sidecars=[str(p) for p, note in written.items() if note is not None],
                  sidecar_errors=problems if write_xmp or action == "move" else [])
    return result


def _own_sidecars(owners: list[Path], claims: SidecarClaims, action: str):
    """Each owner's existing sidecar (None: none, False: one that is not a regular file), the
    notes and problems found, and the sidecars to carry, each once (with its sha256 for a
    move, which verifies it like a photo)."""
    own: dict[Path, Path | None | bool] = {}
    notes, problems, sidecars = [], [], []
    for owner in owners:
        found, other = claims.owned(owner)
        if other is not None and other not in owners:
            notes.append(f"{other.with_suffix('.xmp').name} is {other.name}'s sidecar; "
                         f"{owner.name} has its own")
        own[owner] = found
        if found is None or any(s["source"] == str(found) for s in sidecars):
            continue
        try:  # never read unless it is a regular file: a FIFO or /dev/zero would never end
            safefs.regular_file(found)
            digest = safefs.sha256_file(found, follow_symlinks=False) if action == "move" else None
        except (DecodeError, OSError) as exc:
            problems.append(f"{found}: {exc}; left where it is")
            own[owner] = False
            continue
        sidecars.append({"source": str(found), "sha256": digest, "owner": str(owner)})
    return own, notes, problems, sidecars


def _fresh_sidecar(home: Path) -> tuple[Path, str]:
    """digiKam's `photo.jpg.xmp`; `photo.xmp`, noted, when that name is too long for the file
    system (a photo named with 252-255 bytes)."""
    long = xmp.long_form(home)
    if safefs.fits(long):
        return long, ""
    short = home.with_suffix(".xmp")
    return short, (f"sidecar name {long.name} would be {len(os.fsencode(long.name))} bytes, "
                   f"more than its file system's {safefs.name_max(home.parent)}: written as "
                   f"{short.name}")


def finish(entry: dict, journal) -> None:
    """Carry out a journaled decision; safe to call again after a kill at any point."""
    photo = Path(entry["source"])
    outcome: dict = {}
    if entry["action"] != "dry" and not entry.get("moved"):
        try:
            _place(entry)
        except safefs.PlacementError as exc:
            outcome["error"] = str(exc)
            if isinstance(exc, safefs.ChangedError):
                outcome["changed"] = True  # the next score of it says why it was redone
        else:
            journal.record({"source": entry["source"], "moved": True})
    problems = list(entry.get("sidecar_errors", []))
    if entry["xmp"] and "error" not in outcome:
        keywords = entry["flags"] + (["similar"] if entry.get("similar_to") else [])
        for sidecar in entry.get("xmp_sidecars", []):  # the photo's, and each companion's
            try:
                xmp.write_sidecar(Path(sidecar), entry["rating"], entry["pick_label"], keywords)
            except xmp.XmpError as exc:
                problems.append(str(exc))
    if problems:
        outcome["xmp_error"] = "; ".join(problems)
    journal.record({"source": str(photo), "done": True, **outcome})


def _place(entry: dict) -> None:
    """Move or link the photo, its companions and (on a move) its sidecars to their targets."""
    files = [(Path(entry["source"]), Path(entry["target"]), entry["sha256"])] + [
        (Path(c["source"]), Path(c["target"]), c["sha256"]) for c in entry.get("companions", [])]
    if entry["action"] == "link":
        for source, target, sha256 in files:
            safefs.link(source, target, sha256)
        return
    for source, target, sha256 in files + [
            (Path(s["source"]), Path(s["target"]), s["sha256"]) for s in entry["sidecars"]]:
        if not os.path.lexists(source) and not safefs.is_placed(target, sha256):
            raise safefs.PlacementError(f"{source} vanished before it was moved, and {target} "
                                        "does not hold it")
        safefs.move(source, target, sha256)
