"""What the training loop eats: labels, images, a balanced sampler, teacher targets.

- `load_labels`: the label shards, minus `dedup.parquet` duplicates, with human rows
  overriding pseudo-labels of the same image_id, and the aux targets' columns (NaN where a
  row has none); `split` by a hash of image_id; `AuxScale` standardises the aux targets.
- `LabeledImages`: decoded photos, resized and cropped by the student's preprocessing policy
  (`students.preprocess`); in training a random crop and flip, nothing else: blur, noise and
  colour jitter would change the quality the label describes.
- `EpochSampler`: a fixed-length, seeded epoch; weights = inverse score-bin frequency, so a
  pool where most photos sit near the mean still shows the tails as often as the centre.
- `build_data`: all of it as the loaders one training process iterates.
- `TeacherTargets`: function matching, the teachers rescoring the very crops being trained on.

The loss is `students.losses.distillation_loss`.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from distill import run_folder, scoring
from distill.config import from_mapping
from distill.decode import ORIGINAL_SIZE_KEY, DecodeError, decode_named, read_bytes
from distill.errors import ConfigError, DistillError
from distill.names import as_path
from distill.sources import create_source
from distill.training.config import TrainConfig
from students import preprocess

RATING_COLUMNS = ("dist_human", "dist_nima")  # human vote histograms first
RATING_BINS = 10


@dataclass
class LabelSet:
    image_id: list[str]
    path: list[str | None]
    locator: list[str | None]  # how the run's source reads it when `path` is not a file
    quality: np.ndarray  # (N,) float32, 1–10
    keep_prob: np.ndarray  # (N,) float32
    confidence: np.ndarray  # (N,) float32, 0–1
    rating: np.ndarray  # (N, 10) float32 histogram, zeros where has_rating is False
    has_rating: np.ndarray  # (N,) bool
    original_size: np.ndarray  # (N, 2) int, width and height of the file
    summary: dict = field(default_factory=dict)
    aux: np.ndarray | None = None  # (N, A) float32 aux targets, NaN where a row has none

    def __len__(self) -> int:
        return len(self.image_id)

    def subset(self, index: np.ndarray) -> LabelSet:
        pick = [int(i) for i in index]
        return LabelSet([self.image_id[i] for i in pick], [self.path[i] for i in pick],
                        [self.locator[i] for i in pick], self.quality[index],
                        self.keep_prob[index], self.confidence[index], self.rating[index],
                        self.has_rating[index], self.original_size[index], dict(self.summary),
                        None if self.aux is None else self.aux[index])


def load_labels(labels_dir: str | Path, aux_targets: list[str] = ()) -> LabelSet:
    """A labeling run as training rows: the label shards and OUT/human.parquet (written by
    `distill import-labels`), one row per image_id with `source == human` rows winning, minus
    the duplicates `dedup.parquet` marks. A human keep/trash without a score keeps its row:
    its quality is missing (`has_quality` False) and only the keep term learns from it.
    An aux target that no row has is an error naming it."""
    labels_dir = Path(labels_dir)
    summary: dict = {}
    try:
        table = run_folder.read_training_labels(labels_dir, summary)
    except FileNotFoundError as exc:
        raise DistillError(f"--labels {labels_dir}: {exc}") from None
    fusion = run_folder.manifest_config(labels_dir, "fusion", {})
    threshold, temperature = fusion.get("keep_threshold", 6.0), fusion.get("temperature", 0.5)
    rows, merged = [], table.to_pylist()
    for row in merged:
        quality, keep_prob = _finite(row.get("quality")), _finite(row.get("keep_prob"))
        if keep_prob is None and quality is not None:  # as the fusion would have computed it
            keep_prob = scoring.keep_prob(quality, threshold, temperature)
        if keep_prob is not None:
            rows.append({**row, "quality": quality, "keep_prob": keep_prob})
    summary["human_labels"] = sum(r.get("source") == "human" for r in rows)
    summary["unlabeled_dropped"] = len(merged) - len(rows)
    rating = np.zeros((len(rows), RATING_BINS), np.float32)
    has_rating = np.zeros(len(rows), bool)
    for i, row in enumerate(rows):
        histogram = next((row[c] for c in RATING_COLUMNS if row.get(c) is not None), None)
        if histogram is not None and len(histogram) == RATING_BINS and sum(histogram) > 0:
            rating[i], has_rating[i] = np.asarray(histogram) / sum(histogram), True

    def column(name, default):
        return np.array([default if r.get(name) is None else r[name] for r in rows], np.float32)

    absent = [name for name in aux_targets if all(_finite(r.get(name)) is None for r in rows)]
    if absent:
        raise ConfigError(f"--labels {labels_dir}: no row has {', '.join(absent)} (aux targets "
                          "are label-shard columns; face_* come from labeling with the faces "
                          "teacher)")
    aux = np.array([[np.nan if _finite(r.get(name)) is None else r[name] for name in aux_targets]
                    for r in rows], np.float32).reshape(len(rows), len(aux_targets))
    summary["aux_rows"] = {name: int(np.isfinite(aux[:, i]).sum())
                           for i, name in enumerate(aux_targets)}
    locators = run_folder.read_locators(labels_dir)
    return LabelSet(
        [r["image_id"] for r in rows], [r.get("path") for r in rows],
        [locators.get(r["image_id"]) for r in rows], column("quality", np.nan),
        column("keep_prob", 0.5), column("confidence", 1.0), rating, has_rating,
        np.array([[r.get("width") or 0, r.get("height") or 0] for r in rows],
                 np.int64).reshape(-1, 2),
        summary, aux if aux_targets else None)


def _finite(value) -> float | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None  # a missing cell, or a column that is not a number
    return None if not math.isfinite(value) else float(value)


@dataclass
class AuxScale:
    """Mean and std of each aux target over the training rows that have it: the aux head
    learns standardised targets (a face count and an eye ratio weigh alike in the loss), and
    the student keeps the scale as buffers, so it predicts in the columns' units."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, aux: np.ndarray) -> AuxScale:
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a target absent from the train split
            mean, std = np.nanmean(aux, axis=0), np.nanstd(aux, axis=0)
        return cls(np.nan_to_num(mean).astype(np.float32),
                   np.where(np.isfinite(std) & (std > 1e-6), std, 1.0).astype(np.float32))

    def standardise(self, aux: np.ndarray) -> np.ndarray:
        return (aux - self.mean) / self.std


def split(labels: LabelSet, val_fraction: float, salt: str) -> tuple[LabelSet, LabelSet]:
    """Train/val by a hash of image_id: stable across runs, processes and added images."""
    def bucket(image_id: str) -> float:
        return int(hashlib.sha1(f"{salt}:{image_id}".encode()).hexdigest()[:8], 16) / 2**32

    is_val = np.array([bucket(i) < val_fraction for i in labels.image_id], bool)
    return labels.subset(np.flatnonzero(~is_val)), labels.subset(np.flatnonzero(is_val))


class ImageReader:
    """Reads a labeled image from `path`, or through the labeling run's source (tar shards,
    HF datasets) when `path` is not a file on this machine."""

    def __init__(self, labels_dir: Path):
        self.source_config = run_folder.manifest_config(labels_dir, "source")
        self._source = None

    def read(self, path: str | None, locator: str | None) -> bytes:
        if path and os.path.isfile(as_path(path)):
            return read_bytes(as_path(path))
        if locator is not None and self.source_config:
            if self._source is None:
                self._source = create_source(self.source_config)
            return self._source.read(locator)
        raise DistillError(f"labeled image {path} is not readable here (no file, no source)")


class LabeledImages(Dataset):
    """Items are `index` or `(index, augmentation seed)` (what `EpochSampler` yields): the
    seed makes every crop and flip reproducible, across resumes and DataLoader workers."""

    def __init__(self, labels: LabelSet, reader: ImageReader, preprocessing: dict,
                 train: bool, hflip: bool = True, random_crop: bool = True):
        self.labels, self.reader, self.preprocessing = labels, reader, preprocessing
        self.train, self.hflip, self.random_crop = train, hflip, random_crop
        self.cache: list | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> np.ndarray:
        """The photo at the policy's scale (preprocess.resize_for), as uint8 HWC."""
        if self.cache is not None:
            return self.cache[index]
        path = self.labels.path[index]
        try:
            data = self.reader.read(path, self.labels.locator[index])
            decoded = decode_named(data, path, draft_size=self.preprocessing["resize_size"])
        except DecodeError as exc:
            raise DistillError(f"labeled image {path}: {exc}") from None
        return preprocess.resize_for(decoded.image, self.preprocessing)

    def preload(self, progress: bool = True) -> None:
        """Decode and resize every image once, into memory (small pools, tests)."""
        self.cache = [self.load(i) for i in tqdm(range(len(self)), desc="caching images",
                                                 unit="img", disable=not progress, leave=False)]

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        pixels = self.load(index)
        size = self.preprocessing["image_size"]
        rng = np.random.default_rng(seed) if self.train else None
        left, top, right, bottom = preprocess.crop_box(
            pixels.shape[1], pixels.shape[0], size, rng if self.random_crop else None)
        crop = pixels[top:bottom, left:right]
        if rng is not None and self.hflip and rng.random() < 0.5:
            crop = crop[:, ::-1]
        labels = self.labels
        return {
            # np.array copies: the cached pixels are shared and PIL's are read-only
            "image": torch.from_numpy(np.array(crop)).permute(2, 0, 1),
            "quality": torch.tensor(np.nan_to_num(labels.quality[index], nan=0.0)),
            "has_quality": torch.tensor(not np.isnan(labels.quality[index])),
            "keep_prob": torch.tensor(labels.keep_prob[index]),
            "confidence": torch.tensor(labels.confidence[index]),
            "rating": torch.from_numpy(labels.rating[index]),
            "has_rating": torch.tensor(labels.has_rating[index]),
            "original_size": torch.from_numpy(labels.original_size[index]),
            **({} if labels.aux is None else {  # standardised by build_data
                "aux": torch.from_numpy(np.nan_to_num(labels.aux[index], nan=0.0)),
                "has_aux": torch.from_numpy(np.isfinite(labels.aux[index]))}),
        }


def balance_weights(quality: np.ndarray, bins: int, power: float = 1.0) -> np.ndarray:
    """Per-sample weight ∝ (count of its equal-width 1–10 score bin) ** -power; a row without
    a quality (a human keep/trash) counts in the median's bin."""
    missing = np.isnan(quality)
    quality = np.where(missing, np.median(quality[~missing]) if (~missing).any() else 5.5, quality)
    edges = np.linspace(1.0, 10.0, bins + 1)[1:-1]
    which = np.digitize(quality, edges)
    counts = np.bincount(which, minlength=bins).astype(np.float64)
    return counts[which] ** -power


class EpochSampler(Sampler):
    """`num_samples` draws per epoch as (index, augmentation seed) pairs, from a generator
    seeded by (seed, epoch): the same on every rank (accelerate shards the batches) and the
    same after a resume. With weights: with replacement, ∝ weights; without: permutations."""

    def __init__(self, num_samples: int, population: int, weights: np.ndarray | None, seed: int):
        self.num_samples, self.population, self.seed, self.epoch = num_samples, population, seed, 0
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.num_samples, True, generator=generator)
        else:
            rounds = -(-self.num_samples // self.population)
            order = torch.cat([torch.randperm(self.population, generator=generator)
                               for _ in range(rounds)])[:self.num_samples]
        seeds = torch.randint(0, 2**31 - 1, (self.num_samples,), generator=generator)
        return iter(zip(order.tolist(), seeds.tolist()))


@dataclass
class TrainData:
    train: LabeledImages
    val: LabeledImages
    train_loader: DataLoader
    val_loader: DataLoader
    steps_per_epoch: int
    rating_bins: int
    summary: dict
    aux_targets: list[str] = field(default_factory=list)
    aux_scale: AuxScale | None = None

    def aux_record(self) -> dict:
        """Per aux target, for the model card: the scale the head predicts in, rows that had it."""
        return {name: {"mean": float(mean), "std": float(std),
                       "rows": self.summary["aux_rows"][name]}
                for name, mean, std in zip(self.aux_targets, self.aux_scale.mean,
                                           self.aux_scale.std)}

    def describe(self) -> str:
        s = self.summary
        return (f"{s['train']} train / {s['val']} val images ({s['duplicates_dropped']} "
                f"duplicates dropped, {s['human_labels']} human labels), "
                f"{self.steps_per_epoch} steps per epoch")


def resize_size(config: TrainConfig) -> int | None:
    """data.resize_size, or in teacher_scale mode the long side the labels were made at."""
    if config.data.resize_size or config.data.resize_mode != "teacher_scale":
        return config.data.resize_size
    labeled_at = run_folder.manifest_config(config.labels, "decode", {}).get("max_side")
    # uncapped labeling (max_side null) saw full-size photos; the student still needs a
    # bounded input, so it takes the labeler's default scale
    return labeled_at if isinstance(labeled_at, int) else preprocess.TEACHER_SIDE


def build_data(config: TrainConfig, world: int, progress: bool) -> TrainData:
    """Labels → split → datasets → a balanced, seeded, fixed-length epoch per process."""
    aux_targets = config.student.aux_targets
    labels = load_labels(config.labels, aux_targets)
    train_labels, val_labels = split(labels, config.data.val_fraction, config.data.split_salt)
    if not len(train_labels):
        raise DistillError(f"--labels {config.labels}: no labeled images to train on")
    aux_scale = AuxScale.of(train_labels.aux) if aux_targets else None
    if aux_scale is not None:
        train_labels.aux = aux_scale.standardise(train_labels.aux)
        val_labels.aux = aux_scale.standardise(val_labels.aux)
    policy = preprocess.policy(config.data.image_size, resize_size(config),
                               config.data.resize_mode)
    reader = ImageReader(Path(config.labels))
    train = LabeledImages(train_labels, reader, policy, True, config.data.hflip,
                          config.data.random_crop)
    val = LabeledImages(val_labels, reader, policy, False)
    if config.data.cache:
        train.preload(progress)
        val.preload(progress)
    # A fixed number of samples per epoch, a multiple of the global batch: every process
    # gets the same number of whole accumulation cycles, and a step maps to (epoch, batch).
    optim = config.optim
    global_batch = optim.batch_size * optim.grad_accum * world
    steps_per_epoch = max(1, -(-len(train) // global_batch))
    weights = (balance_weights(train_labels.quality, config.data.balance_bins,
                               config.data.balance_power) if config.data.balanced else None)
    sampler = EpochSampler(steps_per_epoch * global_batch, len(train), weights, config.seed)
    loader_options = {"num_workers": config.data.workers,
                      "persistent_workers": config.data.workers > 0}
    train_loader = DataLoader(train, batch_size=optim.batch_size, sampler=sampler, drop_last=True,
                              generator=torch.Generator().manual_seed(config.seed),
                              **loader_options)
    val_loader = DataLoader(val, batch_size=optim.batch_size * 2, **loader_options)
    rating_bins = RATING_BINS if labels.has_rating.any() and config.loss.rating > 0 else 0
    summary = {**labels.summary, "train": len(train), "val": len(val)}
    return TrainData(train, val, train_loader, val_loader, steps_per_epoch, rating_bins, summary,
                     list(aux_targets), aux_scale)


class TeacherTargets:
    """Function matching: rescore each training batch's augmented crops with the teachers and
    fuse them as the labeling run did; an image a teacher fails on keeps its stored label."""

    def __init__(self, config: TrainConfig, device):
        from teachers import create_teachers

        fm = config.function_matching
        stored = run_folder.manifest_config(config.labels, "fusion") or {}
        self.fusion = from_mapping(scoring.FusionConfig, fm.fusion if fm.fusion is not None else stored,
                                   "function_matching.fusion.")
        if self.fusion.normalisation != "reference":
            raise ConfigError("function_matching needs fusion.normalisation: reference (a rank "
                              "within one batch is not the run's scale)")
        self.teachers = create_teachers(fm.teachers, config.weights_dir, device="cpu")
        self.device = device

    def __call__(self, batch: dict) -> dict:
        from PIL import Image

        images = []
        for pixels, size in zip(batch["image"].permute(0, 2, 3, 1).cpu().numpy(),
                                batch["original_size"].cpu().tolist()):
            image = Image.fromarray(pixels, "RGB")
            image.info[ORIGINAL_SIZE_KEY] = tuple(size)  # resolution is the file's, not the crop's
            images.append(image)
        raw = {teacher.name: teacher.score(images).scores for teacher in self.teachers}
        fused = scoring.fuse_columns(raw, self.fusion)
        batch = dict(batch)
        for column in ("quality", "keep_prob", "confidence"):
            fresh = torch.as_tensor(np.asarray(fused[column], np.float32), device=self.device)
            batch[column] = torch.where(torch.isnan(fresh), batch[column], fresh)
        fused_ok = torch.as_tensor(~np.isnan(fused["quality"]), device=self.device)
        batch["has_quality"] = batch["has_quality"] | fused_ok
        return batch
