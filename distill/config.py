"""Configs are data: YAML files mapped onto dataclasses, with errors that name the bad key."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from distill import remote
from distill.decode import read_input
from distill.errors import ConfigError
from distill.scoring import FusionConfig, offline_teachers

# A config is a page of settings: bigger files, or aliases that expand into more nodes than
# this (a 900-byte "billion laughs" expands to 10^9), are refused before anything is built.
MAX_CONFIG_BYTES = 16 * 1024**2
MAX_YAML_NODES = 100_000

T = TypeVar("T")
JPEG_DECODERS = ("pillow", "torchvision")


@dataclasses.dataclass
class DecodeConfig:
    max_side: int | None = 768  # long side the teachers see; labels are defined at this scale
    draft: bool = True  # let JPEG decode straight to about max_side (much faster)
    min_side: int = 32
    max_pixels: int = 200_000_000
    # DataLoader processes decoding ahead of the teachers; None = auto: none on ≤ 2 cores per
    # process (measured: a decode process beside 2 OpenMP teacher threads on 2 cores stalls
    # the threads' barriers), else a quarter of the cores, at most 8.
    workers: int | None = None
    # with no worker processes: threads decoding ahead inside the labeling process (Pillow
    # releases the GIL). 0 (inline, between teacher batches) is the default: on 2 cores the
    # teachers' OpenMP threads use both, and a decode thread beside them measured 0.78 of the
    # compute-alone rate against inline's 0.83 (benchmarks/label_throughput.py). A thread pays
    # off when a core is left free for it, e.g. OMP_NUM_THREADS=cores-1.
    threads: int = 0
    prefetch: int = 4  # batches each worker (or the thread pool) keeps ready
    # "pillow": every image through Pillow (draft-mode JPEGs) on the CPU. "torchvision": JPEGs
    # decode in batches on the labeling device (nvJPEG on CUDA; libjpeg-turbo on a CPU) and
    # stay there for the teachers; others still go through Pillow. Its drafted pixels differ
    # slightly from Pillow's (distill/decode_device.py), so it is part of a run's shape.
    jpeg_decoder: str = "pillow"

    def __post_init__(self):
        if self.jpeg_decoder not in JPEG_DECODERS:
            raise ConfigError(f"decode.jpeg_decoder must be one of {', '.join(JPEG_DECODERS)}, "
                              f"got {self.jpeg_decoder!r}")
        for key in ("threads", "prefetch", "workers"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ConfigError(f"decode.{key} must be ≥ 0, got {value}")
        for key in ("max_side", "min_side", "max_pixels"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"decode.{key} must be ≥ 1 (max_side: null for no cap), got {value}")
        if self.max_side is not None and self.max_side < self.min_side:
            raise ConfigError(f"decode.max_side ({self.max_side}) is below decode.min_side "
                              f"({self.min_side}): every image would be refused")


@dataclasses.dataclass
class LabelConfig:
    source: dict[str, Any]
    out: str
    teachers: dict[str, dict[str, Any]] = dataclasses.field(default_factory=offline_teachers)
    shard_size: int = 1000
    batch_size: int = 16
    weights_dir: str | None = None
    # processes that each decode and score whole batches on one thread, each with its own copy
    # of the teachers; None = auto: one per core on a CPU when every teacher is per-image CPU
    # arithmetic (BRISQUE, PIQE, NIQE, technical; none on one core), else none: the teachers
    # run in the labeling process (GPU, or networks' intra-op threads) and `decode` says how
    # images reach them. Threads survive a busy machine worse than processes
    # (benchmarks/label_throughput.py).
    score_workers: int | None = None
    # where the teachers run: "cpu", "cuda" (this process's GPU under torchrun / accelerate),
    # "cuda:N", or "auto": a GPU when torch sees one, else the CPU. On a GPU the classical
    # teachers run batched there (teachers.batched) next to NIMA and CLIP.
    device: str = "auto"
    decode: DecodeConfig = dataclasses.field(default_factory=DecodeConfig)
    fusion: FusionConfig = dataclasses.field(default_factory=FusionConfig)
    # with a remote `out`: the local folder the run is staged in (default: one under the
    # user's cache named from the URL's hash, `remote_run.default_staging`)
    staging: str | None = None
    # with --engine ray and --gpus-per-worker: the teachers that run on GPU workers; the
    # others run on CPU workers (`labeling/parts.py`). None (or every teacher): no split.
    gpu_teachers: list[str] | str | None = None

    def __post_init__(self):
        if self.shard_size < 1:
            raise ConfigError("shard_size must be ≥ 1")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be ≥ 1")
        # Path() would make "s3://b/run" a local folder "s3:/b/run": a URL is either one
        # `remote_run` stages, or an error
        if "://" in str(self.out) and not remote.holds_runs(self.out):
            raise ConfigError(f"--out {self.out}: give a local folder, or an s3:// or gs:// "
                              "prefix (a run on object storage)")
        if self.staging is not None and not remote.holds_runs(self.out):
            raise ConfigError("--staging is for a remote --out (s3://…): a local --out is "
                              "the run folder itself")
        if self.score_workers is not None and self.score_workers < 0:
            raise ConfigError(f"score_workers must be ≥ 0 (0: score in this process), "
                              f"got {self.score_workers}")
        if isinstance(self.teachers, list | tuple):
            self.teachers = {name: {} for name in self.teachers}
        self.gpu_teachers = self._split_teachers()
        if self.score_workers and self.decode.jpeg_decoder != "pillow":
            raise ConfigError(f"decode.jpeg_decoder {self.decode.jpeg_decoder} decodes in the "
                              "labeling process for its teachers: use score_workers 0")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    def _split_teachers(self) -> list[str] | None:
        """`gpu_teachers` as names in the teachers' order; None when it splits nothing."""
        given = self.gpu_teachers
        names = [n.strip() for n in given.split(",")] if isinstance(given, str) else given or []
        names = [name for name in names if name]
        unknown = [name for name in names if name not in self.teachers]
        if unknown:
            raise ConfigError(f"gpu_teachers names {', '.join(unknown)}, not a teacher of this "
                              f"run (its teachers: {', '.join(self.teachers)})")
        ordered = [name for name in self.teachers if name in names]
        return ordered if 0 < len(ordered) < len(self.teachers) else None


def from_mapping(cls: type[T], mapping: dict, where: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys raise ConfigError naming them."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(mapping).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        names = ", ".join(f"{where}{key}" for key in unknown)
        raise ConfigError(f"unknown config key {names}; allowed under "
                          f"{where.rstrip('.') or 'the top level'}: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in mapping.items():
        kind = hints[key]
        if dataclasses.is_dataclass(kind) and isinstance(value, dict | None):
            values[key] = from_mapping(kind, value or {}, f"{where}{key}.")
        else:
            values[key] = _check_type(value, kind, f"{where}{key}")
    missing = [name for name, f in fields.items() if name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing config key {', '.join(where + m for m in missing)}")
    return cls(**values)


def _check_type(value, kind, key: str):
    """Light type check so `shard_size: "ten"` fails at load, naming the key."""
    origin = typing.get_origin(kind)
    options = typing.get_args(kind) if origin in (typing.Union, types.UnionType) else (kind,)
    if value is None and type(None) in options:
        return value
    for option in options:
        base = typing.get_origin(option) or option
        if base is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if base is Any or (isinstance(base, type) and isinstance(value, base)
                           and not (base is int and isinstance(value, bool))):
            return value
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"config key {key} must be {names}, got {value!r}")


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise ConfigError(f"config file {path} does not exist")
    data = parse_yaml(read_input(path, "config file", max_bytes=MAX_CONFIG_BYTES).decode(
        "utf-8", "replace"), str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def parse_yaml(text: str, where: str):
    """YAML text → Python values, safely: no tags beyond YAML's own, and aliases expanded into
    at most MAX_YAML_NODES nodes (counted on the composed graph, never expanded to count)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None:
            _expanded_nodes(root, {})
        return yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to be a config") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({exc.__class__.__name__})") from None
    except ValueError as exc:  # an alias bomb or loop; a date like 2026-13-45
        raise ConfigError(f"{where}: {exc}") from None


def _expanded_nodes(node: yaml.Node, counted: dict[int, int | None]) -> int:
    """How many nodes `node` becomes once every alias is expanded; each shared node is
    counted once and multiplied, so a bomb is measured in its few hundred bytes."""
    if id(node) in counted:
        if counted[id(node)] is None:
            raise ValueError("an alias refers to itself")
        return counted[id(node)]
    counted[id(node)] = None
    children = (node.value if isinstance(node, yaml.SequenceNode)
                else [n for pair in node.value for n in pair]
                if isinstance(node, yaml.MappingNode) else [])
    total = 1 + sum(_expanded_nodes(child, counted) for child in children)
    if total > MAX_YAML_NODES:
        raise ValueError(f"aliases expand into more than {MAX_YAML_NODES} nodes (an alias bomb?)")
    counted[id(node)] = total
    return total


def to_dict(config) -> dict:
    return dataclasses.asdict(config)
