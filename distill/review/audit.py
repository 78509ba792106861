"""Audit gallery: look at the pseudo-labels before training on them.

A static HTML page sampling images per tier (rejected / pending / accepted) and the images
the teachers disagree on most (lowest confidence), each with every teacher's score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distill import run_folder
from distill.scoring import TIER_NAMES as TIERS
from distill.sheet import write_sheet

TIER_NAMES = {tier: f"{name} (tier {tier})" for tier, name in enumerate(TIERS)}


def build_audit(out: Path, per_section: int = 24, audit_dir: Path | None = None, seed: int = 0) -> dict:
    out = Path(out)
    table = run_folder.read_labels(out)
    rows = table.to_pylist()
    rng = np.random.default_rng(seed)
    sections = []
    for tier, name in TIER_NAMES.items():
        members = [r for r in rows if r["tier"] == tier]
        picks = rng.choice(len(members), size=min(per_section, len(members)), replace=False) if members else []
        chosen = sorted((members[i] for i in picks), key=lambda r: r["quality"])
        sections.append((f"{name}, a random sample", chosen))
    disagreeing = sorted(rows, key=lambda r: r["confidence"])[:per_section]
    sections.append(("teachers disagree most (lowest confidence)", disagreeing))
    fields = ["quality", "keep_prob", "tier", "confidence",
              *[c for c in table.column_names if c.startswith(("score_", "norm_"))]]
    counts = {name: sum(1 for r in rows if r["tier"] == tier) for tier, name in TIER_NAMES.items()}
    intro = (f"{len(rows)} labeled images in {out}: "
             + ", ".join(f"{n} {name.split(' ')[0]}" for name, n in counts.items()))
    index = write_sheet(Path(audit_dir or out / "audit"), "Pseudo-label audit", sections, fields, intro)
    return {"sheet": str(index), "shown": sum(len(s[1]) for s in sections), "tiers": counts}
