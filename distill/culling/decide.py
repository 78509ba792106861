"""Decide stage of culling: the student's scores, the technical measures and the similar-shot
groups of a folder → one decision per photo, each with the reason a photographer reads.

1. **Similar shots.** Near-duplicate photos (bursts, re-takes) are joined into groups with the
   dedup stage's machinery (`distill.similar`): the offline DCT descriptor, a FAISS
   inner-product search (`near_duplicate_pairs`) and connected components (`clusters`); with
   `burst_seconds`, two photos are only joined when their EXIF capture times are that close.
   In each group the photo with the best student quality (the sharpest, on a tie) is kept
   for the next step; the others become `trash` (or `pending`) "similar to <best>".
2. **Keep or not.** Of the group bests, `keep_rate` keeps the best fraction of the whole
   folder by keep_prob; otherwise each is kept at keep_prob ≥ `keep_threshold`.
3. **Why.** The technical measures (`teachers.technical.measure`) flag blurry, under-exposed,
   over-exposed and noisy photos; a trashed photo's reason starts with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from distill.errors import ConfigError
from distill.similar import IndexSpec, clusters, keepers, near_duplicate_pairs

DECISIONS = ("keep", "pending", "trash")
MODES = {"aggressive": 0.15, "moderate": 0.30, "conservative": 0.50}  # --mode → keep rate


@dataclass
class DecideOptions:
    keep_threshold: float = 0.5  # on keep_prob; unused when keep_rate is set
    keep_rate: float | None = None  # keep this fraction of the folder, best first
    group: bool = True  # group similar shots and keep the best of each
    # cosine of the offline descriptors joining two shots: the middle of the plateau where
    # benchmarks/burst_groups.py keeps precision 1.0 (0.65-0.75; 0.6 joins different shots)
    similarity: float = 0.70
    burst_seconds: float | None = None  # also require capture times this close (EXIF)
    similar_decision: str = "trash"  # what the rest of a group becomes: trash | pending
    # Technical flags, on `teachers.technical.measure` at its 512 px working size:
    blurry_below: float = 30.0  # Laplacian variance; defocus blur falls below ~30
    dark_below: float = 0.20  # mean luma / 255
    bright_above: float = 0.80
    clipped_above: float = 0.25  # fraction of pixels clipped at either end
    noisy_above: float = 12.0  # Immerkær sigma, of 255

    def __post_init__(self):
        if not 0.0 <= self.keep_threshold <= 1.0:
            raise ConfigError(f"--keep-threshold is a keep_prob in [0, 1], got {self.keep_threshold}")
        if self.keep_rate is not None and not 0.0 < self.keep_rate <= 1.0:
            raise ConfigError(f"--keep-rate is a fraction in (0, 1], got {self.keep_rate}")
        if not -1.0 <= self.similarity <= 1.0:
            raise ConfigError(f"--similarity is a cosine in [-1, 1], got {self.similarity}")
        if self.burst_seconds is not None and self.burst_seconds < 0:
            raise ConfigError(f"--burst-seconds must be ≥ 0, got {self.burst_seconds}")
        if self.similar_decision not in ("trash", "pending"):
            raise ConfigError(f"--similar must be trash or pending, got {self.similar_decision!r}")


def flags(measures: dict, options: DecideOptions) -> list[str]:
    """The technical problems a photographer names, from the technical teacher's measures."""
    found = []
    if measures["sharpness"] < options.blurry_below:
        found.append("blurry")
    if measures["exposure"] < options.dark_below or measures["clipped_shadows"] > options.clipped_above:
        found.append("under-exposed")
    if measures["exposure"] > options.bright_above or (
            measures["clipped_highlights"] > options.clipped_above):
        found.append("over-exposed")
    if measures["noise"] > options.noisy_above:
        found.append("noisy")
    return found


def seconds(taken_at: str | None) -> float | None:
    """EXIF "YYYY:MM:DD HH:MM:SS[.sub]" as POSIX seconds (local time; only differences matter)."""
    if not taken_at:
        return None
    stamp, _, fraction = taken_at.partition(".")
    try:
        whole = datetime.strptime(stamp.strip(), "%Y:%m:%d %H:%M:%S").timestamp()
    except ValueError:
        return None
    return whole + (float(f"0.{fraction}") if fraction.isdigit() else 0.0)


def similar_groups(descriptors: np.ndarray, times: list[float | None],
                   options: DecideOptions) -> np.ndarray:
    """Group id per photo: connected components of the similar-shot graph."""
    n = len(descriptors)
    if n < 2 or not options.group:
        return np.arange(n)
    valid = np.linalg.norm(descriptors, axis=1) > 0  # flat frames match nothing
    a, b, _, _ = near_duplicate_pairs(descriptors.astype(np.float32), valid,
                                            options.similarity, IndexSpec(), progress=False)
    if options.burst_seconds is not None and len(a):
        stamps = np.array([np.nan if t is None else t for t in times])
        gap = np.abs(stamps[a] - stamps[b])
        close = np.isnan(gap) | (gap <= options.burst_seconds)  # no time: the pixels decide
        a, b = a[close], b[close]
    return clusters(n, a, b)


def decide(photos: list[dict], options: DecideOptions) -> list[dict]:
    """photos: dicts with image, quality, keep_prob, descriptor, taken_at, measures.
    Returns, in the same order, decision, reason, flags and the group columns."""
    n = len(photos)
    if not n:
        return []
    quality = np.array([p["quality"] for p in photos], dtype=np.float64)
    keep_prob = np.array([p["keep_prob"] for p in photos], dtype=np.float64)
    descriptors = np.array([p["descriptor"] for p in photos], dtype=np.float32)
    group = similar_groups(descriptors, [seconds(p.get("taken_at")) for p in photos], options)
    # equal quality (a student that cannot tell two frames apart): the sharper frame wins
    sharpness = np.array([p["measures"]["sharpness"] for p in photos], dtype=np.float64)
    best = keepers(group, quality, tiebreak=sharpness)
    sizes = np.bincount(group)
    bests = np.flatnonzero(best == np.arange(n))

    keep = np.zeros(n, dtype=bool)
    if options.keep_rate is not None:
        wanted = min(len(bests), round(options.keep_rate * n))
        ranked = bests[np.lexsort((bests, -keep_prob[bests]))]
        keep[ranked[:wanted]] = True
        rank = {int(row): place + 1 for place, row in enumerate(ranked)}
    else:
        keep[bests] = keep_prob[bests] >= options.keep_threshold

    decided = []
    for row, photo in enumerate(photos):
        problems = flags(photo["measures"], options)
        in_group = sizes[group[row]] > 1
        if best[row] != row:
            decision = options.similar_decision
            why = f"similar to {photos[best[row]]['image']} (quality {quality[best[row]]:.2f})"
        elif keep[row]:
            decision = "keep"
            why = (f"in the best {options.keep_rate:.0%} (rank {rank[row]})"
                   if options.keep_rate is not None
                   else f"keep_prob {keep_prob[row]:.2f} ≥ {options.keep_threshold}")
            if in_group:
                why += f"; best of {sizes[group[row]]} similar"
        else:
            decision = "trash"
            why = (f"below the best {options.keep_rate:.0%} (rank {rank[row]} of {len(bests)})"
                   if options.keep_rate is not None
                   else f"keep_prob {keep_prob[row]:.2f} < {options.keep_threshold}")
        if problems and decision != "keep":
            why = f"{', '.join(problems)}; {why}"
        decided.append({"decision": decision, "reason": why, "flags": problems,
                        "group_id": int(group[row]), "group_size": int(sizes[group[row]]),
                        "best_in_group": bool(best[row] == row),
                        "similar_to": photos[best[row]]["image"] if best[row] != row else None})
    return decided
