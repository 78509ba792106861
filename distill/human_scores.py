"""Benchmark datasets: AVA, EVA, KonIQ-10k, a generic `path,score` CSV and a labeling run, as
ground-truth items.

Each loader reads the dataset's own label file and returns every labelled image as a
`BenchItem` (id, path, native mean score, vote std), then keeps the test split. Paths are not
checked here: a missing or corrupt image is found by the decode stage, which records why and
the benchmark skips it, so every way an image can fail is reported the same way.

Scales. Correlations are computed against the dataset's native score; thresholded metrics
(accuracy at 5, keep at 6, the three tiers) need the 1–10 culling scale. `BenchDataset.to_culling`
maps native → 1–10 linearly through two anchor points:

| dataset | native score                      | to the 1–10 culling scale                   |
|---------|-----------------------------------|---------------------------------------------|
| ava     | mean of 1–10 votes                | as is                                       |
| eva     | mean of 0–10 votes (EVA's readme) | as is: thresholds 5 and 6 read the same; a  |
|         |                                   | 0→1 stretch would lift every image ≤ 0.9    |
| koniq   | MOS, 1–5                          | linear, 1 → 1 and 5 → 10                    |
| csv     | `score` column, 1–10 unless told  | linear from `--score-scale LO HI` to 1–10   |
| run     | the run's fused teacher quality   | as is; its face_* columns (the faces        |
|         |                                   | teacher's) ride along as `BenchItem.extras` |

Splits (`split=`):
- None: the dataset's official test split where the files hold one (AVA's `generic_test.jpgl`
  found under the root, KonIQ's `set` column, a CSV `split` column), else the hash split.
- "official": the official split, or an error when the dataset has none (EVA never does).
- "hash": an image is in the test split when the first 8 bytes of sha1(id), as a big-endian
  integer, mod 100 are below `HASH_TEST_PERCENT` (10): stable across machines, row orders and
  dataset versions, since it depends on the id alone.
- "all": every labelled image.
- a FILE: one image id per line (AVA ids, KonIQ image names, CSV paths as written); a
  trailing `.jpg` is ignored.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.decode import read_input
from distill.errors import DistillError

DATASETS = ("ava", "eva", "koniq", "csv", "run")
HASH_TEST_PERCENT = 10
AVA_OFFICIAL_LISTS = ("generic_test.jpgl", "generic_ls_test.jpgl", "test.jpgl")
KONIQ_LABEL_FILES = ("koniq10k_scores_and_distributions.csv", "koniq10k_distributions_sets.csv")
KONIQ_IMAGE_DIRS = ("1024x768", "512x384")
EVA_IMAGE_DIR = "images/EVA_category/EVA_together"  # where a missing image is reported


@dataclass(frozen=True)
class BenchItem:
    id: str
    path: Path
    score: float  # ground truth on the dataset's native scale
    score_std: float = float("nan")  # spread of the votes, native scale; NaN where unknown
    extras: dict = field(default_factory=dict, compare=False)  # a run's face_* columns


@dataclass
class Labels:
    """What a loader read: every labelled item, and the official test ids if the files hold them."""

    file: Path
    items: list[BenchItem]
    official: set[str] | None = None  # None: the dataset ships no test split here
    official_source: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class BenchDataset:
    name: str
    root: Path
    labels: Path
    items: list[BenchItem]  # the test split only
    native_range: tuple[float, float]
    culling_anchors: tuple[float, float]  # native scores that map to 1 and to 10
    split: dict = field(default_factory=dict)  # kind, source, counts
    notes: list[str] = field(default_factory=list)

    def to_culling(self, native: np.ndarray) -> np.ndarray:
        low, high = self.culling_anchors
        return 1.0 + (np.asarray(native, dtype=np.float64) - low) * 9.0 / (high - low)

    def describe(self) -> dict:
        return {
            "name": self.name, "root": str(self.root), "labels": str(self.labels),
            "native_range": list(self.native_range),
            "culling_scale": f"linear: native {self.culling_anchors[0]:g} -> 1, "
                             f"{self.culling_anchors[1]:g} -> 10",
            "split": self.split, "n_test": len(self.items), "notes": self.notes,
        }


def in_hash_test_split(image_id: str) -> bool:
    digest = hashlib.sha1(image_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100 < HASH_TEST_PERCENT


def id_key(image_id: str) -> str:
    """Ids compare without a trailing .jpg: AVA's lists write `953619.jpg` or `953619`."""
    return image_id.strip().removesuffix(".jpg")


def read_text(path: Path) -> str:
    """A label or id file, through the read rule (a FIFO or a device is one line, not a hang)."""
    return read_input(path, "labels file").decode("utf-8", "replace")


def read_id_list(path: Path) -> set[str]:
    lines = (line.strip() for line in read_text(path).splitlines())
    return {id_key(line) for line in lines if line and not line.startswith("#")}


def select_split(items: list[BenchItem], split: str | None, official: set[str] | None,
                 official_source: str) -> tuple[list[BenchItem], dict]:
    """Keep the test items; `official` is the dataset's own test id set, or None if it has none."""
    if split is None:
        split = "official" if official is not None else "hash"
    if split == "official":
        if official is None:
            raise DistillError("this dataset has no official test split here; use --split hash, "
                               "--split all or --split FILE (one image id per line)")
        wanted, info = official, {"kind": "official", "source": official_source}
    elif split == "hash":
        wanted = {item.id for item in items if in_hash_test_split(item.id)}
        info = {"kind": "hash", "source": f"sha1(id) mod 100 < {HASH_TEST_PERCENT}"}
    elif split == "all":
        wanted, info = {item.id for item in items}, {"kind": "all", "source": "every image"}
    else:
        path = Path(split)
        if not path.is_file():
            raise DistillError(f"--split {split}: not official|hash|all and not a file of ids")
        wanted, info = read_id_list(path), {"kind": "file", "source": str(path)}
    wanted = {id_key(image_id) for image_id in wanted}
    chosen = [item for item in items if id_key(item.id) in wanted]
    info.update(n_labelled=len(items), n_test=len(chosen),
                n_split_ids_without_label=len(wanted - {id_key(item.id) for item in items}))
    return chosen, info


def first_existing(candidates: list[Path], what: str) -> Path:
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DistillError(f"{what} not found; looked for {', '.join(map(str, candidates))} "
                       "(or pass --labels FILE)")


def load_ava(root: Path, labels: Path | None) -> Labels:
    """AVA.txt: index, image id, votes for 1..10, semantic tag 1, tag 2, challenge id."""
    labels = labels or first_existing([root / "AVA.txt", root / "AVA_dataset" / "AVA.txt"],
                                      "AVA.txt")
    image_dir = root / "images" if (root / "images").is_dir() else root
    ratings = np.arange(1, 11, dtype=np.float64)
    items, notes = [], []
    for line_number, line in enumerate(read_text(labels).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 15:
            raise DistillError(f"{labels}:{line_number}: expected 15 columns, got {len(fields)}")
        counts = np.asarray(fields[2:12], dtype=np.float64)
        if counts.sum() == 0:
            notes.append(f"AVA id {fields[1]} has no votes: left out")
            continue
        mean = float(np.average(ratings, weights=counts))
        std = float(np.sqrt(np.average((ratings - mean) ** 2, weights=counts)))
        items.append(BenchItem(fields[1], image_dir / f"{fields[1]}.jpg", mean, std))
    lists = [root / "aesthetics_image_lists" / name for name in AVA_OFFICIAL_LISTS]
    lists += [root / name for name in AVA_OFFICIAL_LISTS]
    official_file = next((path for path in lists if path.is_file()), None)
    official = read_id_list(official_file) if official_file else None
    return Labels(labels, items, official, str(official_file or ""), notes)


def sniff_delimiter(header: str) -> str:
    # EVA's votes files are '='-separated; copies re-saved by spreadsheets use ',' or ';'.
    return max("=,;\t", key=header.count)


def load_eva(root: Path, labels: Path | None) -> Labels:
    """EVA votes (votes_filtered.csv): one row per vote; the image's score is the mean vote."""
    labels = labels or first_existing(
        [root / "votes_filtered.csv", root / "data" / "votes_filtered.csv",
         *sorted(root.rglob("votes_filtered.csv"))], "EVA votes_filtered.csv")
    with io.StringIO(read_text(labels), newline="") as handle:
        delimiter = sniff_delimiter(handle.readline())
        handle.seek(0)
        reader = csv.DictReader(handle, delimiter=delimiter)
        header = {name.strip().lower(): name for name in reader.fieldnames or []}
        if "image_id" not in header or "score" not in header:
            raise DistillError(f"{labels}: need image_id and score columns, have "
                               f"{', '.join(header) or 'none'}")
        votes: dict[str, list[float]] = defaultdict(list)
        bad = 0
        for row in reader:
            try:
                votes[row[header["image_id"]].strip()].append(float(row[header["score"]]))
            except (TypeError, ValueError):
                bad += 1  # a blank or non-numeric score: one vote lost, not the image
    # EVA ships its images as EVA_together/<id>.jpg, inside EVA_category/ or not depending on
    # the archive; one walk of the root finds them wherever they were unpacked.
    found = {path.stem: path for path in sorted(root.rglob("*.jpg"))}
    items = [BenchItem(image_id, found.get(image_id, root / EVA_IMAGE_DIR / f"{image_id}.jpg"),
                       float(np.mean(scores)), float(np.std(scores)))
             for image_id, scores in votes.items()]
    notes = ["EVA votes are 0-10; the per-image mean vote is used as is on the 1-10 culling scale"]
    if bad:
        notes.append(f"{bad} votes with a non-numeric score ignored")
    return Labels(labels, items, None, "", notes)


def _optional_float(row: dict, column: str) -> float:
    value = (row.get(column) or "").strip()
    return float(value) if value else float("nan")


def read_labelled_csv(labels: Path, required: set[str], make_item: Callable[[dict], BenchItem],
                      split_column: str) -> Labels:
    """A comma-separated label file, one image a row; `split_column` == test marks the test set."""
    with io.StringIO(read_text(labels), newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = required - set(columns)
        if missing:
            raise DistillError(f"{labels}: missing columns {', '.join(sorted(missing))}")
        rows = list(reader)
    items = [make_item(row) for row in rows]
    official = None
    if split_column in columns:
        official = {item.id for item, row in zip(items, rows)
                    if row[split_column].strip().lower() == "test"}
    return Labels(labels, items, official, f"{labels.name}: {split_column} == test")


def load_koniq(root: Path, labels: Path | None) -> Labels:
    """KonIQ-10k: image_name, c1..c5, c_total, MOS (1-5), SD, MOS_zscore[, set]."""
    labels = labels or first_existing([root / name for name in KONIQ_LABEL_FILES],
                                      "KonIQ-10k scores csv")
    image_dir = next((root / d for d in KONIQ_IMAGE_DIRS if (root / d).is_dir()), root)

    def item(row: dict) -> BenchItem:
        name = row["image_name"].strip()
        return BenchItem(name.removesuffix(".jpg"), image_dir / name, float(row["MOS"]),
                         _optional_float(row, "SD"))

    read = read_labelled_csv(labels, {"image_name", "MOS"}, item, "set")
    read.notes.append("KonIQ MOS is 1-5: correlations use it as is; thresholds use "
                      "1 + (MOS - 1) * 9 / 4")
    return read


def load_score_csv(root: Path, labels: Path | None) -> Labels:
    """A generic CSV: path,score[,std][,split]; a relative path is taken under the root."""
    labels = labels or first_existing([root / "scores.csv"], "scores.csv")

    def item(row: dict) -> BenchItem:
        written = row["path"].strip()  # root / an absolute path is that absolute path
        return BenchItem(written, root / written, float(row["score"]), _optional_float(row, "std"))

    return read_labelled_csv(labels, {"path", "score"}, item, "split")


def load_run(root: Path, labels: Path | None) -> Labels:
    """A labeling run (`distill label`'s folder): its fused quality as the truth, and the faces
    teacher's face_* columns, where the run has them, as `extras`."""
    from distill import run_folder
    from distill.scoring import FACE_COLUMNS

    if labels is not None:
        raise DistillError("--labels does not apply to --dataset run: its labels are ROOT's shards")
    try:
        rows = run_folder.read_labels(root).to_pylist()
    except FileNotFoundError as exc:
        raise DistillError(f"--root {root}: {exc}") from None

    def number(value) -> float:
        return float(value) if isinstance(value, int | float) else float("nan")

    items = [BenchItem(row["image_id"], Path(row["path"]), number(row.get("quality")),
                       extras={c: number(row.get(c)) for c in FACE_COLUMNS if c in row})
             for row in rows if row.get("path") and np.isfinite(number(row.get("quality")))]
    notes = [(f"truth: the run's fused teacher quality (1-10); {len(rows) - len(items)} rows "
              "without a file path or a quality left out"),
             ("a student is only held out from the rows it did not train on: bench a run it "
              "never saw, or one whose test split it was not trained on")]
    if not any(item.extras for item in items):
        notes.append("the run has no face_* columns (label it with the faces teacher to "
                     "measure agreement with it)")
    return Labels(root / run_folder.SHARD_DIR, items, notes=notes)


LOADERS: dict[str, Callable] = {
    "ava": load_ava, "eva": load_eva, "koniq": load_koniq, "csv": load_score_csv, "run": load_run}
NATIVE_RANGES = {"ava": (1.0, 10.0), "eva": (0.0, 10.0), "koniq": (1.0, 5.0)}
CULLING_ANCHORS = {"ava": (1.0, 10.0), "eva": (1.0, 10.0), "koniq": (1.0, 5.0)}


def load_dataset(name: str, root: str | Path, split: str | None = None, *,
                 labels: str | Path | None = None,
                 score_scale: tuple[float, float] | None = None) -> BenchDataset:
    """Read a dataset's labels and keep its test split (see the module docstring)."""
    if name not in LOADERS:
        raise DistillError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if score_scale is not None and name != "csv":
        raise DistillError("--score-scale applies to --dataset csv only")
    root = Path(root)
    if not root.is_dir():
        raise DistillError(f"--root {root}: not a folder")
    read = LOADERS[name](root, Path(labels) if labels else None)
    if not read.items:
        raise DistillError(f"{read.file}: no labelled images")
    chosen, split_info = select_split(read.items, split, read.official, read.official_source)
    if not chosen:
        raise DistillError(f"{name}: the {split_info['kind']} split holds none of the "
                           f"{len(read.items)} labelled images")
    scale = score_scale or (1.0, 10.0)
    return BenchDataset(
        name=name, root=root, labels=read.file, items=chosen,
        native_range=NATIVE_RANGES.get(name, scale),
        culling_anchors=CULLING_ANCHORS.get(name, scale), split=split_info, notes=read.notes,
    )

