"""One shard's work: decode its inputs, score them with every teacher, write the shard.

The same two steps, `decode_item` and `score_batch`, run in this process (teachers here,
decoding inline, in threads or in DataLoader processes ahead of them) or inside the scoring
worker processes of `distill.labeling.workers`; either way a shard's rows are the same. With
`decode.jpeg_decoder: torchvision` the readers only read, and each batch is decoded on the
teachers' device (`decode_on_device`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from distill import run_folder
from distill.config import DecodeConfig, LabelConfig
from distill.decode import Decoded, DecodeError, decode_named
from distill.sources import Source, SourceItem
from teachers import Teacher, TeacherOutput


def _decode_options(decode: DecodeConfig) -> dict:
    return {"draft_size": decode.max_side if decode.draft else None, "max_side": decode.max_side,
            "min_side": decode.min_side, "max_pixels": decode.max_pixels}


def read_item(source: Source, item: SourceItem) -> tuple[bytes | None, str | None]:
    """(the input's bytes, None) or (None, the reason it is an error row)."""
    if item.refused:
        return None, item.refused
    try:
        return source.read(item.locator), None
    except DecodeError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - any reader failure is this input's error row
        return None, f"unreadable: {type(exc).__name__}: {exc}"


def decode_item(source: Source, item: SourceItem, decode: DecodeConfig) -> tuple[Decoded | None, str | None]:
    """(the decoded image, None) or (None, the reason it is an error row)."""
    data, reason = read_item(source, item)
    if reason is not None:
        return None, reason
    try:
        return decode_named(data, item.path, **_decode_options(decode)), None
    except DecodeError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this input's error row
        return None, f"unreadable: {type(exc).__name__}: {exc}"


class ShardImages(Dataset):
    """Decodes one shard's inputs (or, `raw`, only reads their bytes); runs inside DataLoader
    workers or decode threads."""

    def __init__(self, source: Source, items: list[SourceItem], decode: DecodeConfig,
                 raw: bool = False):
        self.source, self.items, self.decode, self.raw = source, items, decode, raw

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index: int):
        if self.raw:
            return (index, *read_item(self.source, self.items[index]))
        return (index, *decode_item(self.source, self.items[index], self.decode))


def decode_on_device(batch: list[tuple[int, bytes | None, str | None]], inputs: list[dict],
                     decode: DecodeConfig, device: str) -> list[tuple[int, Decoded | None, str | None]]:
    """A batch of read inputs decoded by `decode_device` on `device`, in the shape the Pillow
    path's batches have: (position, decoded, None) or (position, None, reason)."""
    from distill.decode_device import decode_batch

    readable = [(position, data) for position, data, reason in batch if reason is None]
    decoded = dict(zip((position for position, _ in readable), decode_batch(
        [(data, inputs[position]["path"]) for position, data in readable], device,
        **_decode_options(decode))))
    return [(position, *decoded[position]) if reason is None else (position, None, reason)
            for position, _, reason in batch]


@dataclass
class ShardResult:
    rows: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)

    def extend(self, other: ShardResult) -> None:
        self.rows += other.rows
        self.errors += other.errors
        self.embeddings += other.embeddings


def score_decoded(teachers: list[Teacher], source_name: str, shard: int, inputs: list[dict],
                  decoded: list[tuple[int, Decoded | None, str | None]], result: ShardResult):
    """Rows for one decoded batch: an error row per decode failure, teachers on the rest."""
    batch = decode_failures(source_name, shard, inputs, decoded, result)
    if batch:
        score_batch(teachers, batch, result)


def decode_failures(source_name: str, shard: int, inputs: list[dict],
                    decoded: list[tuple[int, Decoded | None, str | None]],
                    result: ShardResult) -> list[tuple[dict, Decoded]]:
    """An error row in `result` per decode failure of a decoded batch; returns the rest,
    each with its row begun, for the teachers."""
    batch = []
    for position, image, reason in decoded:
        row = {"image_id": inputs[position]["image_id"], "source": source_name,
               "path": inputs[position]["path"], "shard": shard}
        if reason is not None:
            result.errors.append({**row, "stage": "decode", "reason": reason})
        else:
            batch.append((row, image))
    return batch


def score_batch(teachers: list[Teacher], batch: list[tuple[dict, Decoded]], result: ShardResult):
    """Run every teacher on a batch; an image any teacher failed on becomes an error row."""
    assemble(teacher_outputs(teachers, [decoded.image for _, decoded in batch]), batch, result)


def teacher_outputs(teachers: list[Teacher], images: list) -> dict[str, TeacherOutput]:
    """Each teacher's outputs for `images`, by teacher name, in the teachers' order."""
    return {teacher.name: teacher.score(images) for teacher in teachers}


def assemble(outputs: dict[str, TeacherOutput], batch: list[tuple[dict, Decoded]],
             result: ShardResult) -> None:
    """Rows, error rows and embeddings from every teacher's `outputs` for `batch` (teachers
    in the run's order: its columns' and embeddings' order). An image any teacher failed on
    is one error row naming every failure, in that order. `batch`'s images need only their
    sha1, width and height here: the outputs may come from other processes (teacher groups
    on other workers, `labeling/parts.py`)."""
    for position, (row, decoded) in enumerate(batch):
        failures = [f"{name}: {out.errors[position]}" if position in out.errors
                    else f"{name}: no finite score ({out.scores[position]})"
                    for name, out in outputs.items()
                    if position in out.errors or not np.isfinite(out.scores[position])]
        if failures:
            result.errors.append({**_identity(row), "stage": "teacher", "reason": "; ".join(failures)})
            continue
        row.update(sha1=decoded.sha1, width=decoded.width, height=decoded.height)
        for name, out in outputs.items():
            row[f"score_{name}"] = float(out.scores[position])
            if out.distributions is not None:
                row[f"dist_{name}"] = out.distributions[position].tolist()
            for extra, values in out.extras.items():
                row[extra] = float(values[position])
            if out.embeddings is not None:
                result.embeddings.append(out.embeddings[position])
        result.rows.append(row)


def _identity(row: dict) -> dict:
    return {k: row[k] for k in ("image_id", "source", "path", "shard")}


def score_here(index: int, inputs: list[dict], source: Source, teachers: list[Teacher],
               config: LabelConfig, bar: tqdm | None, workers: int = 0,
               device: str = "cpu") -> ShardResult:
    """Shard `index` (its input rows) with the teachers in this process, decoded as
    `decoded_batches` says."""
    result = ShardResult()
    for decoded_batch in decoded_batches(inputs, source, config, workers, device):
        score_decoded(teachers, source.name, index, inputs, decoded_batch, result)
        if bar is not None:
            bar.update(len(decoded_batch))
    return result


def decoded_batches(inputs: list[dict], source: Source, config: LabelConfig, workers: int = 0,
                    device: str = "cpu") -> Iterator[list[tuple[int, Decoded | None, str | None]]]:
    """A shard's inputs decoded in batches of `config.batch_size` positions, in order:
    `workers` DataLoader processes (or `config.decode.threads` threads) decode ahead, or,
    with the torchvision JPEG decoder, read the bytes that each batch then decodes on
    `device`."""
    items = [SourceItem.from_row(r) for r in inputs]
    on_device = config.decode.jpeg_decoder == "torchvision"
    dataset = ShardImages(source, items, config.decode, raw=on_device)
    if workers:
        loader = DataLoader(dataset, batch_size=config.batch_size, num_workers=workers,
                            prefetch_factor=config.decode.prefetch, collate_fn=list)
    else:
        loader = threaded_batches(dataset, config.batch_size, config.decode.threads,
                                  config.decode.prefetch)
    for decoded_batch in loader:
        yield decode_on_device(decoded_batch, inputs, config.decode, device) if on_device \
            else decoded_batch


def threaded_batches(dataset: Dataset, batch_size: int, threads: int, prefetch: int) -> Iterator[list]:
    """Batches of `dataset` decoded by `threads` threads, `prefetch` batches ahead, in order.

    Pillow releases the GIL while it decodes, so threads overlap decoding with the teachers'
    compute without worker processes (see `DecodeConfig.threads` for when that pays off)."""
    if threads < 1:
        for start in range(0, len(dataset), batch_size):
            yield [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="distill-decode") as pool:
        pending: deque = deque()
        indices = iter(range(len(dataset)))
        while True:
            while len(pending) < batch_size * (prefetch + 1):
                index = next(indices, None)
                if index is None:
                    break
                pending.append(pool.submit(dataset.__getitem__, index))
            if not pending:
                return
            yield [pending.popleft().result() for _ in range(min(batch_size, len(pending)))]


def write_result(out: Path, index: int, result: ShardResult) -> None:
    rows = [{k: v for k, v in row.items() if k != "shard"} for row in result.rows]
    labels = pa.Table.from_pylist(rows) if rows else pa.table({c: pa.array([], pa.string())
                                                               for c in ("image_id", "source", "path")})
    errors = pa.Table.from_pylist(result.errors, schema=run_folder.ERROR_SCHEMA)
    embeddings = np.stack(result.embeddings) if result.embeddings else None
    run_folder.write_shard(out, index, labels, errors, embeddings)
