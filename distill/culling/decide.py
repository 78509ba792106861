"""Decide stage of culling: the student's scores, the technical measures and the similar-shot
groups of a folder → one decision per photo, each with the reason a photographer reads.

1. **Similar shots.** Near-duplicate photos (bursts, re-takes) are joined into groups with the
   dedup stage's machinery (`distill.similar`): the offline DCT descriptor, a FAISS
   inner-product search (`near_duplicate_pairs`) and connected components (`clusters`); with
   `burst_seconds`, two photos are only joined when their EXIF capture times are that close.
   In each group one frame goes on to the next step; the others become `trash` (or
   `pending`) "similar to <best>". The frame: where faces were measured, only frames in which
   every face has open eyes compete, if there is one; of those, only frames in focus (within
   `blurry_relative` of the sharpest); of those, the best student quality, unless other frames
   are within the student's noise of it (`quality_noise`): then the frame whose subject is
   sharpest wins, "sharpest of 4: focus 0.82 vs 0.41". The frames of a burst show one scene,
   so their focus values compare where an absolute threshold would not.
2. **Keep or not.** Of the group bests, `keep_rate` keeps the best fraction of the whole
   folder by keep_prob; otherwise each is kept at keep_prob ≥ `keep_threshold`.
3. **Why.** The technical measures (`teachers.technical.measure`) flag under-exposed,
   over-exposed and noisy photos; the focus (`teachers.focus`, at the decoded resolution)
   flags blurry ones, below an absolute floor or well below the sharpest frame of its group;
   with faces, "eyes closed (2 of 5 faces)" and "face out of focus" (the least sharp face).
   A trashed photo's reason starts with them; a photo that would be kept but has closed eyes
   or a soft face goes to `pending`, for a person to look at.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from distill.errors import ConfigError
from distill.similar import IndexSpec, clusters, near_duplicate_pairs

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
    # Within a group, frames whose quality is this close to the best one's are told apart by
    # their subject's focus (the student's quality is on 1-10)
    quality_noise: float = 0.3
    # Focus (teachers.focus, 0-1) flags, chosen on benchmarks/burst_focus.py's seed-0 bursts:
    blurry_below: float = 0.40  # any photo's focus
    blurry_relative: float = 0.85  # in a group, below this share of its sharpest frame
    face_blurry_below: float = 0.40  # the least sharp face's focus
    # Technical flags, on `teachers.technical.measure` at its 512 px working size:
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


def face_focus(measures: dict) -> float:
    """The least sharp face's focus; NaN without a measured face."""
    sharpness = [f["sharpness"] for f in measures.get("faces") or []
                 if np.isfinite(f["sharpness"])]
    return min(sharpness) if sharpness else float("nan")


def closed_eyes(measures: dict) -> int:
    return sum(1 for f in measures.get("faces") or [] if f["eyes_closed"])


def flags(measures: dict, options: DecideOptions, group_focus: float = float("nan")) -> list[str]:
    """The problems a photographer names: from the focus (against `group_focus`, the sharpest
    frame of the photo's group, where it has one), the technical measures and the faces."""
    found = []
    focus = measures.get("focus", float("nan"))
    if focus < options.blurry_below or focus < options.blurry_relative * group_focus:
        found.append("blurry")
    if closed_eyes(measures):
        found.append("eyes-closed")
    if face_focus(measures) < options.face_blurry_below:
        found.append("face-blurry")
    if measures["exposure"] < options.dark_below or measures["clipped_shadows"] > options.clipped_above:
        found.append("under-exposed")
    if measures["exposure"] > options.bright_above or (
            measures["clipped_highlights"] > options.clipped_above):
        found.append("over-exposed")
    if measures["noise"] > options.noisy_above:
        found.append("noisy")
    return found


def flag_text(flag: str, measures: dict) -> str:
    """A flag as the reason says it."""
    if flag == "eyes-closed":
        return f"eyes closed ({closed_eyes(measures)} of {len(measures['faces'])} faces)"
    return {"face-blurry": "face out of focus"}.get(flag, flag)


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


def group_bests(group: np.ndarray, quality: np.ndarray, measures: list[dict],
                options: DecideOptions) -> tuple[np.ndarray, dict[int, str]]:
    """The frame kept for each photo's group, and why, where it was not simply the best
    quality: eyes open first (where faces were measured); then frames in focus, those whose
    subject is within `blurry_relative` of the group's sharpest (the student's quality hardly
    moves with a defocus that ruins a frame); then the best quality, unless others are within
    `quality_noise` of it; then the sharpest subject."""
    best = np.arange(len(group))
    why: dict[int, str] = {}
    score = np.where(np.isfinite(quality), quality, -np.inf)
    faces = np.array([face_focus(m) for m in measures], dtype=np.float64)
    photo = np.array([m.get("focus", np.nan) for m in measures], dtype=np.float64)
    open_eyes = np.array([bool(m.get("faces")) and not closed_eyes(m) for m in measures])
    some_closed = np.array([closed_eyes(m) > 0 for m in measures])
    for members in _members(group):
        if len(members) == 1:
            continue
        eyes_open = members
        if some_closed[members].any() and open_eyes[members].any():
            eyes_open = members[open_eyes[members]]
        # the subject: every frame's faces where each has one, else the detailed tiles
        focus = faces if np.isfinite(faces[eyes_open]).all() else photo
        sharp = np.nan_to_num(focus, nan=-np.inf)
        pool = eyes_open
        if np.isfinite(sharp[pool]).any():
            pool = pool[sharp[pool] >= options.blurry_relative * sharp[pool].max()]
        contenders = pool[score[pool] >= score[pool].max() - options.quality_noise]
        chosen = contenders[np.lexsort((contenders, -score[contenders], -sharp[contenders]))[0]]
        others = sharp[eyes_open[eyes_open != chosen]]  # those it won against
        if np.isfinite(sharp[chosen]) and np.isfinite(others).any() and (
                len(contenders) > 1 or len(pool) < len(eyes_open)):
            why[int(chosen)] = (
                f"sharpest of {len(members)}: focus {focus[chosen]:.2f} vs {others.max():.2f}"
                if sharp[chosen] >= others.max() else
                f"in focus ({len(eyes_open) - len(pool)} of {len(members)} soft)")
        if some_closed[members].any() and open_eyes[members].any():
            why[int(chosen)] = "; ".join(filter(None, [
                f"eyes open (closed in {int(some_closed[members].sum())} of {len(members)})",
                why.get(int(chosen))]))
        best[members] = chosen
    return best, why


def _members(group: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(group, kind="stable")
    cuts = np.flatnonzero(np.diff(group[order])) + 1
    return np.split(order, cuts)


def decide(photos: list[dict], options: DecideOptions) -> list[dict]:
    """photos: dicts with image, quality, keep_prob, descriptor, taken_at, measures (with
    focus, and faces where they were measured). Returns, in the same order, decision,
    reason, flags and the group columns."""
    n = len(photos)
    if not n:
        return []
    quality = np.array([p["quality"] for p in photos], dtype=np.float64)
    keep_prob = np.array([p["keep_prob"] for p in photos], dtype=np.float64)
    descriptors = np.array([p["descriptor"] for p in photos], dtype=np.float32)
    group = similar_groups(descriptors, [seconds(p.get("taken_at")) for p in photos], options)
    measures = [p["measures"] for p in photos]
    best, best_why = group_bests(group, quality, measures, options)
    sizes = np.bincount(group)
    bests = np.flatnonzero(best == np.arange(n))
    focus = np.array([m.get("focus", np.nan) for m in measures], dtype=np.float64)
    group_focus = np.full(group.max() + 1, np.nan)
    for members in _members(group):
        if len(members) > 1 and np.isfinite(focus[members]).any():
            group_focus[group[members[0]]] = np.nanmax(focus[members])

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
        problems = flags(photo["measures"], options, group_focus[group[row]])
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
                why += f"; {best_why.get(row, f'best of {sizes[group[row]]} similar')}"
            if {"eyes-closed", "face-blurry"} & set(problems):
                decision = "pending"  # a person decides whether the moment is worth it
        else:
            decision = "trash"
            why = (f"below the best {options.keep_rate:.0%} (rank {rank[row]} of {len(bests)})"
                   if options.keep_rate is not None
                   else f"keep_prob {keep_prob[row]:.2f} < {options.keep_threshold}")
        if problems and decision != "keep":
            why = f"{', '.join(flag_text(f, photo['measures']) for f in problems)}; {why}"
        decided.append({"decision": decision, "reason": why, "flags": problems,
                        "group_id": int(group[row]), "group_size": int(sizes[group[row]]),
                        "best_in_group": bool(best[row] == row),
                        "similar_to": photos[best[row]]["image"] if best[row] != row else None})
    return decided
