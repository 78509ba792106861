"""The cull journal, DEST/.distill-cull.jsonl: what makes every pass resumable.

A settings line, then one line per scored photo, one line with all of a decide pass's
decisions (every intent with every path, before anything moves), a `moved` line once a
photo, its companions and its sidecars are in place (after which its sidecars may be merged,
so their hashes no longer prove where they are) and a `done` line. Lines are keyed by the
photo's absolute path, in Python's surrogate-escaped spelling (JSON escapes it, so a name
that is not UTF-8 survives the round trip).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from distill.errors import DistillError


class Journal:
    """DEST/.distill-cull.jsonl: a settings line, then score, decision and action lines."""

    def __init__(self, path: Path, settings: dict):
        self.path = path
        self.entries: dict[str, dict] = {}
        recorded = None
        if path.exists():
            for line in path.read_text(errors="surrogateescape").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill mid-write: what it held is simply redone
                if "settings" in entry:
                    recorded = entry["settings"]
                for one in entry.get("decisions", [entry]):
                    if "source" in one:
                        self._merge(one)
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

    def _merge(self, entry: dict) -> None:
        if entry.get("scored"):  # a new score starts the photo's story over
            self.entries[entry["source"]] = dict(entry)
        else:
            self.entries.setdefault(entry["source"], {}).update(entry)

    def _write(self, line: dict) -> None:
        self._handle.write(json.dumps(line) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def record(self, entry: dict) -> None:
        previous = self.entries.get(entry["source"], {})
        if entry.get("scored") and previous.get("changed"):
            # it was refused at its move because its bytes changed: say why it is here again
            entry = {**entry, "note": f"changed after it was decided ({previous['decision']}); "
                                      "scored and decided again"}
        self._merge(entry)
        self._write(entry)

    def record_decisions(self, entries: list[dict]) -> None:
        """All of a pass's decisions in one line: a kill keeps all of them or none."""
        for entry in entries:
            self._merge(entry)
        self._write({"decisions": entries})

    def is_scored(self, photo: Path) -> bool:
        """Scored (or failed), and still the same file: a new photo at an old path is new."""
        entry = self.entries.get(str(photo))
        if not entry or not ("quality" in entry or entry.get("decision") == "error"):
            return False
        try:
            status = os.lstat(photo)
        except OSError:
            return True  # gone: its row stays as it was
        return (entry.get("size"), entry.get("mtime_ns")) == (status.st_size, status.st_mtime_ns)

    def close(self):
        self._handle.close()
