"""A shard labeled by groups of teachers on different workers, then merged.

With `gpu_teachers` (`--engine ray --gpus-per-worker G --gpu-teachers nima,clip_aesthetic`)
each group of teachers labels a shard in a `label_part` of its own (the GPU group's on a GPU
worker, the rest on a CPU worker): it decodes the shard as `label_shard` does and returns,
as an object rather than a file, where each input failed to decode and its teachers' outputs
over the shard. `merge_parts` then assembles the rows with the one rule every engine uses
(`shards.decode_failures` and `shards.assemble`, teachers in the run's order) and writes the
shard as `label_shard` does, under its lease. It replays the shard's batches of `batch_size`
positions (an error row's place in the errors file follows its batch, and each part fed its
teachers those same batches), so the shard is byte for byte what one process running every
teacher writes, on the same devices.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from dataclasses import dataclass

from distill import run_folder
from distill.config import LabelConfig
from distill.labeling import leases
from distill.labeling.shard_work import (
    LabelRun,
    ShardRecord,
    commit,
    done_record,
    is_done,
    stage,
    tools,
)
from distill.labeling.shards import (
    ShardResult,
    assemble,
    decode_failures,
    decoded_batches,
    teacher_outputs,
)
from teachers import TeacherOutput


@dataclass(frozen=True)
class Identity:
    """What assembly needs of a decoded image (not its pixels)."""
    sha1: str
    width: int
    height: int


@dataclass
class ShardPart:
    """One group of teachers' work on one shard, and where it ran."""
    teachers: list[str]  # the group's names in the run's config, in the run's order
    source: str  # the source's name: the rows' `source`
    failed: dict[int, str]  # position in the shard → why it did not decode
    decoded: dict[int, Identity]  # the rest, in order: the positions the outputs' rows are
    outputs: list[tuple[str, TeacherOutput]]  # per teacher of `teachers`: (column name, outputs)
    provenance: list[dict]  # per teacher of `teachers`
    where: dict  # teachers, device, host, pid, seconds (and what an engine adds: its node)


def group_run(run: LabelRun, teachers: list[str]) -> LabelRun:
    """`run` as one group of its teachers sees it: a config with only those teachers."""
    config = dataclasses.replace(run.config, gpu_teachers=None, teachers={
        name: run.config.teachers[name] for name in teachers})
    return dataclasses.replace(run, config=config)


def label_part(run: LabelRun, shard: int, teachers: list[str]) -> ShardPart:
    """Decode shard `shard` of `run` and score it with `teachers` only (this process's, on
    `run.device`), in the batches `label_shard` scores it in."""
    started = time.perf_counter()
    run = stage(run)
    source, made = tools(group_run(run, teachers))
    config = run.config
    rows = run_folder.read_shard_inputs(run.out, shard, config.shard_size).to_pylist()
    failed, decoded, batches = {}, {}, []
    for batch in decoded_batches(rows, source, config, run.decode_workers, run.device):
        images = []
        for position, image, reason in batch:
            if reason is not None:
                failed[position] = reason
            else:
                decoded[position] = Identity(image.sha1, image.width, image.height)
                images.append(image.image)
        if images:
            batches.append(teacher_outputs(made, images))
    outputs = [(teacher.name, TeacherOutput.concat([outs[teacher.name] for outs in batches]))
               for teacher in made]
    where = {"teachers": list(teachers), "device": run.device, "host": socket.gethostname(),
             "pid": os.getpid(), "seconds": round(time.perf_counter() - started, 3)}
    return ShardPart(list(teachers), source.name, failed, decoded, outputs,
                     [teacher.provenance() for teacher in made], where)


def merge_parts(run: LabelRun, shard: int, parts: list[ShardPart]) -> ShardRecord:
    """Assemble shard `shard` from every group's part and write it as `label_shard` does
    (a shard already done is not written again). The record's seconds are the parts' and
    the merge's together: the work the shard cost, not its wall time."""
    started = time.perf_counter()
    run = stage(run)
    if is_done(run, shard):
        return done_record(run.out, shard)
    lease = leases.take(run.out, leases.lease_name(shard))
    try:
        rows = run_folder.read_shard_inputs(run.out, shard, run.config.shard_size).to_pylist()
        result = assemble_parts(run.config, shard, rows, parts)
        seconds = time.perf_counter() - started + sum(part.where["seconds"] for part in parts)
        record = commit(run, lease, result, seconds, [part.where for part in parts])
    except BaseException:
        lease.release(every_attempt=False)  # free for another attempt at once
        raise
    lease.release()
    return record


def assemble_parts(config: LabelConfig, shard: int, rows: list[dict],
                   parts: list[ShardPart]) -> ShardResult:
    """The shard's rows from its parts, batch by batch as one process makes them. An input
    any part could not decode is a decode error row (the first such part's reason); the
    decoders agree unless the groups decode on different devices (`jpeg_decoder:
    torchvision`)."""
    missing = [name for name in config.teachers if not any(name in p.teachers for p in parts)]
    if missing:
        raise ValueError(f"shard {shard}: no part scored {', '.join(missing)}")
    teachers = []  # (column name, outputs, position → their row) per teacher of each part
    for part in parts:
        row_of = {position: row for row, position in enumerate(part.decoded)}
        teachers.append((part.teachers, [(column, output, row_of)
                                         for column, output in part.outputs]))
    teachers = in_run_order(config, teachers)
    result = ShardResult()
    for start in range(0, len(rows), config.batch_size):
        batch = []
        for position in range(start, min(start + config.batch_size, len(rows))):
            reason = next((part.failed[position] for part in parts if position in part.failed),
                          None)
            batch.append((position, None, reason) if reason is not None
                         else (position, parts[0].decoded[position], None))
        scored = decode_failures(parts[0].source, shard, rows, batch, result)
        if scored:
            positions = [position for position, _, reason in batch if reason is None]
            outputs = {column: output.take([row_of[position] for position in positions])
                       for column, output, row_of in teachers}
            assemble(outputs, scored, result)
    return result


def in_run_order(config: LabelConfig, groups: list[tuple[list[str], list]]) -> list:
    """Per-teacher values of each group ((its teachers, their values)) in the run's order."""
    by_name = {name: value for names, values in groups
               for name, value in zip(names, values, strict=True)}
    return [by_name[name] for name in config.teachers]
