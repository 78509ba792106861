"""Label stage: a source's images → teachers → resumable, distributed label run folder.

Read top to bottom: freeze the input list, claim shards (`claims.py`), decode and score them
(on a CPU: in single-threaded worker processes; on a GPU: teachers here, batched, decoding
ahead in DataLoader processes or threads, or JPEGs decoded on the GPU; `shard_work.py`),
write each shard atomically, then (whoever wrote the last shard) fuse.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from tqdm import tqdm

from distill import __version__, remote, remote_run, run_folder, safefs
from distill.config import LabelConfig, from_mapping, load_yaml, to_dict
from distill.errors import ConfigError
from distill.labeling import inputs as input_list
from distill.labeling import leases
from distill.labeling.claims import label_claimed
from distill.labeling.fusion import fuse_run
from distill.labeling.shard_work import LabelRun, ShardRecord, keep_teachers
from distill.labeling.workers import start_early
from distill.scoring import expand_teacher_sets
from distill.sources import Source, absolute_source, create_source, guess_source
from teachers import Teacher, create_teachers

SHAPING_DECODE_KEYS = ("max_side", "draft", "min_side", "max_pixels", "jpeg_decoder")
# Shaping keys added after runs were first recorded, with what those runs did: a run.json
# without them compares as this.
BEFORE_RECORDED = {"device": "cpu", "decode.jpeg_decoder": "pillow", "gpu_teachers": None}


def run_shape(config: LabelConfig, device: str = "cpu") -> dict:
    """Everything that shapes a run's rows, as JSON: a resume must ask for exactly this.
    (Workers, threads and batch size change only the speed.) `device` is where the teachers
    run; its kind is recorded (the classical teachers compute on a GPU batched, equal to the
    CPU's to float tolerance, not to the bit), not which GPU of a multi-GPU run. With
    `config.gpu_teachers` only those teachers run there, the others on the CPU."""
    return _as_json({"source": config.source, "teachers": config.teachers,
                     "shard_size": config.shard_size,
                     "decode": {key: getattr(config.decode, key) for key in SHAPING_DECODE_KEYS},
                     "fusion": to_dict(config.fusion), "device": torch.device(device).type,
                     "gpu_teachers": config.gpu_teachers})


def _as_json(value):
    """What `value` reads back as from run.json (tuples become lists), for comparing."""
    return json.loads(json.dumps(value, default=str))


def _flatten(mapping: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resume(out: Path, config: LabelConfig, device: str = "cpu") -> None:
    """Refuse to add shards made with other settings to a run. A fresh run records its
    settings; a run from before run.json existed keeps only the source check of
    `freeze_inputs`, since what made its shards is not known."""
    shape = run_shape(config, device)
    recorded = run_folder.read_run_shape(out)
    if recorded is None:
        if not (out / run_folder.INPUTS_FILE).exists():
            run_folder.write_run_shape(out, shape)
        return
    if isinstance(recorded.get("source"), dict):  # a run that recorded a relative path
        recorded["source"] = _as_json(absolute_source(recorded["source"]))
    recorded, asked = {**BEFORE_RECORDED, **_flatten(recorded)}, _flatten(shape)
    differs = sorted(key for key in recorded.keys() | asked.keys()
                     if recorded.get(key) != asked.get(key))
    if differs:
        key = differs[0]
        more = f" (and {len(differs) - 1} more: {', '.join(differs[1:])})" if differs[1:] else ""
        hint = "; to change fusion, use `distill fuse`" if key.startswith("fusion.") else ""
        raise ConfigError(f"{config.out} was started with {key} = {recorded.get(key)!r}, this call "
                          f"asks for {asked.get(key)!r}{more}: resume with the run's options"
                          f"{hint}, or use a new --out")


def freeze_inputs(out: Path, source: Source, source_config: dict, progress: bool = False) -> int:
    """`inputs.freeze_inputs` (streaming, one row group per shard of the size run.json
    records); returns the number of inputs. No process holds the whole list: each shard
    reads its own row group (`run_folder.read_shard_inputs`)."""
    shard_size = (run_folder.read_run_shape(out) or {}).get("shard_size") or LabelConfig.shard_size
    return input_list.freeze_inputs(out, source, source_config, shard_size, progress)


def finalize(out: Path, config: LabelConfig, provenance: list[dict], inputs: int,
             seconds: float, world: int, ledger: list[ShardRecord], engine: str = "local") -> dict:
    """Fuse over the whole run, merge errors, write the manifest; returns the summary, with
    `ledger`: the records of the shards labeled by this call (all of its workers). A remote
    run's shards that other machines pushed are pulled first, and what finalizing wrote
    (fused shards, errors.parquet, the manifest last) is pushed after."""
    url = remote_url(config)
    if url:
        remote_run.pull(url, out)
    safefs.remove_stale_partials(out / run_folder.SHARD_DIR)  # a killed worker's, on this host
    leases.clear_shard_leases(out)
    fused = fuse_run(out, config.fusion)
    errors = run_folder.merge_errors(out)
    labels = fused.num_rows
    tiers = np.bincount(fused.column("tier").to_numpy(), minlength=3) if labels else np.zeros(3, int)
    keep = int(np.sum(np.asarray(fused.column("label").to_pylist()) == "keep")) if labels else 0
    workers: dict[str, int] = {}
    groups: dict[str, dict[str, int]] = {}  # with teacher groups apart: who ran each group
    for record in ledger:
        worker = f"{record.host}:{record.pid}"
        workers[worker] = workers.get(worker, 0) + 1
        for part in record.parts:
            group = groups.setdefault(",".join(part["teachers"]), {})
            worker = f"{part['host']}:{part['pid']}"
            group[worker] = group.get(worker, 0) + 1
    summary = {
        "inputs": inputs, "labeled": labels, "errors": errors.num_rows,
        "keep": keep, "keep_ratio": round(keep / labels, 4) if labels else None,
        "tiers": {"rejected": int(tiers[0]), "pending": int(tiers[1]), "accepted": int(tiers[2])},
        "seconds": round(seconds, 2),
        "images_per_s": round(inputs / seconds, 2) if seconds > 0 else None,
        "engine": {"name": engine, "shards_labeled": len(ledger),
                   "shards_retried": sum(record.attempt > 1 for record in ledger),
                   "shards_by_worker": workers,
                   **({"parts_by_worker": groups} if groups else {})},
    }
    if summary["labeled"] + summary["errors"] != summary["inputs"]:
        raise RuntimeError(f"labeled + errors != inputs: {summary}")
    run_folder.write_manifest(out, {
        "distill_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": to_dict(config),
        "teachers": provenance,
        "shard_size": config.shard_size,
        "shards": run_folder.shard_count(inputs, config.shard_size),
        "processes": world,
        "summary": summary,
    })
    if url:
        remote_run.push_changed(url, out)
    return {**summary, "ledger": [record.as_dict() for record in ledger]}


def cores_per_process(processes: int) -> int:
    return max(1, (os.cpu_count() or 1) // processes)


def score_workers(config: LabelConfig, teachers: list[Teacher], device: str,
                  processes: int = 1) -> int:
    """Scoring worker processes for this rank: the config's, else one per core on a CPU when
    every teacher scores per image on one thread (`Teacher.per_process`), else none: this
    process scores (a GPU's, or networks' intra-op threads), and on a single core too."""
    if config.score_workers is not None:
        return config.score_workers
    on_device = config.decode.jpeg_decoder != "pillow"  # images decoded here, for here
    cores = cores_per_process(processes)
    per_process = all(teacher.per_process for teacher in teachers)
    return cores if device == "cpu" and per_process and cores >= 2 and not on_device else 0


def decode_workers(config: LabelConfig, processes: int = 1) -> int:
    """DataLoader decode processes when the teachers run in this process."""
    if config.decode.workers is not None:
        return config.decode.workers
    cores = cores_per_process(processes)
    return 0 if cores <= 2 else min(8, cores // 4)


def check_device(asked: str) -> None:
    """A GPU asked for and not here is the user's error: never a quiet run on the CPU."""
    if not asked.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise ConfigError(f"device {asked}: torch sees no CUDA GPU here (torch "
                          f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); "
                          "use --device cpu or auto")
    index = int(asked.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device {asked}: torch sees {torch.cuda.device_count()} CUDA GPU(s)")


def remote_url(config: LabelConfig) -> str | None:
    """The object-storage prefix that holds the run (`--out s3://…`), or None."""
    return remote_run.normal_url(config.out) if remote.holds_runs(config.out) else None


def run_out(config: LabelConfig) -> Path:
    """The run folder this process writes: `--out`, or the local staging folder of a
    remote one (`remote_run`)."""
    url = remote_url(config)
    return remote_run.staging_folder(url, config.staging) if url else Path(config.out)


def open_run(config: LabelConfig, progress: bool, device: str,
             main: bool = True) -> tuple[LabelConfig, Source, int | None]:
    """Check a run can be started or resumed with `config` with teachers on `device`; `main`
    (one process of the run) also clears what a killed run was writing and freezes the
    input list, and returns how many inputs it holds (the others: None). A remote run is
    pulled into its staging folder first, and a fresh one's run.json and inputs.parquet are
    pushed as soon as they are frozen."""
    out, url = run_out(config), remote_url(config)
    # `--source photos` and `--source /home/me/photos` are one source, resumed alike
    config = dataclasses.replace(config, source=absolute_source(config.source))
    source = create_source(config.source)
    if url:
        remote_run.start_labeling(url, config.staging)
    run_folder.refuse_unless_a_run(out)  # never label into a folder of other files
    # Every process checks (and none waits at a barrier for one that refused); a fresh run's
    # processes all write the same run.json, atomically.
    check_resume(out, config, device)
    if main:
        for folder in (out, out / run_folder.SHARD_DIR):  # what a killed run was writing
            safefs.remove_stale_partials(folder)
        inputs = freeze_inputs(out, source, config.source, progress)
        if url:  # run.json first: a resume that finds inputs.parquet alone skips its check
            remote_run.push(url, out, remote_run.changed(out, [run_folder.RUN_FILE,
                                                               run_folder.INPUTS_FILE]))
        return config, source, inputs
    return config, source, None


def run_label(config: LabelConfig, progress: bool = True, max_shards: int | None = None,
              engine: str = "local", ray: dict | None = None) -> dict | None:
    """Label `config.source` into `config.out`. Under torchrun / accelerate launch the ranks
    claim shards through lease files; `engine="ray"` hands them to Ray workers instead
    (`ray`: that engine's options). Returns the summary from the process that finalized."""
    if engine == "ray":
        from distill.labeling.ray_engine import label_on_ray

        return label_on_ray(config, progress=progress, max_shards=max_shards, **(ray or {}))
    if engine != "local":
        raise ConfigError(f"unknown engine {engine!r}; known: local, ray")
    if config.gpu_teachers:
        raise ConfigError("--gpu-teachers (gpu_teachers) is an option of --engine ray with "
                          "--gpus-per-worker")
    began = time.time()
    check_device(config.device)
    seconds = leases.lease_seconds()  # a bad DISTILL_LEASE_SECONDS: refused before any work
    # cpu=True is what makes accelerate start a gloo group under torchrun on a CPU machine.
    state = PartialState(cpu=config.device == "cpu" or not torch.cuda.is_available())
    device = config.device if config.device not in ("auto", "cuda") else str(state.device)
    out, url = run_out(config), remote_url(config)
    if url and state.num_processes > 1:
        raise ConfigError(f"--out {config.out} with {state.num_processes} processes (torchrun "
                          "/ accelerate launch): their shard leases need an exclusive create "
                          "and a heartbeat that object storage does not give; use --engine "
                          "ray, or a folder every process shares as --out")
    if device == "cpu" and config.score_workers != 0:
        start_early(config.teachers)  # workers are likely: their fork server imports meanwhile
    config, source, inputs = open_run(config, progress, device, main=state.is_main_process)
    state.wait_for_everyone()  # the only barrier: at the start, when every rank is alive
    if inputs is None:  # how many, from the footer of the list the main process froze
        inputs = freeze_inputs(out, source, config.source)
    teachers = create_teachers(config.teachers, config.weights_dir, device=device)
    processes = score_workers(config, teachers, device, state.num_processes)
    workers = 0 if processes else decode_workers(config, state.num_processes)
    # Every busy thread gets a core of its own: OpenMP teachers on an oversubscribed CPU
    # spin at their barriers and slow down by tens of times (measured on 2 cores).
    threads = 1 if processes else cores_per_process(state.num_processes) - workers
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():  # the user's explicit cap wins
        threads = min(threads, int(os.environ["OMP_NUM_THREADS"]))
    torch.set_num_threads(max(1, threads))

    run = LabelRun(out, config, device, processes, workers, url)
    keep_teachers(run, source, teachers)
    total_shards = run_folder.shard_count(inputs, config.shard_size)
    done = run_folder.completed_shards(out)
    todo = sum(run_folder.shard_rows(inputs, config.shard_size, k)
               for k in range(total_shards) if k not in done)  # by every process of the run
    todo = todo if max_shards is None else min(todo, max_shards * config.shard_size)
    started = time.perf_counter()
    with tqdm(total=todo, unit="img", desc=f"labeling (rank {state.process_index})",
              disable=not progress, dynamic_ncols=True) as bar:
        ledger, final = label_claimed(run, total_shards, max_shards, bar, began, seconds)
    if final is None:
        return None  # another process finalizes, or --max-shards left work for the next call
    try:
        return finalize(out, config, [t.provenance() for t in teachers], inputs,
                        time.perf_counter() - started, state.num_processes, ledger)
    finally:
        final.release()


def label(config: str | Path | dict | None = None, *, source: str | None = None,
          teachers: str | list[str] | dict | None = None, out: str | None = None,
          shard_size: int | None = None, batch_size: int | None = None,
          score_workers: int | None = None, workers: int | None = None,
          decode_threads: int | None = None, device: str | None = None,
          jpeg_decoder: str | None = None,
          max_side: int | None = None, max_shards: int | None = None,
          weights_dir: str | None = None, progress: bool = True, engine: str = "local",
          address: str | None = None, ray_workers: str | None = None,
          gpus_per_worker: float | None = None, gpu_teachers: str | list[str] | None = None,
          staging: str | None = None) -> dict | None:
    """`distill label`: a YAML config (a path, or its mapping) with these options over it.
    `source` is a folder, file list, parquet or tar shards (the kind is guessed); `teachers`
    names teachers or sets ("offline", "brisque,piqe"), or maps them to their options
    ({"nima": {"backbone": "vgg16"}}, as `teachers:` in a config). `engine="ray"` labels on a
    Ray cluster (`address`, `ray_workers` "MIN:MAX", `gpus_per_worker`; `gpu_teachers`: the
    teachers that run on the GPU workers, the others on CPU workers). `out` may be an
    object-storage prefix (s3://bucket/run), staged locally in `staging`. Returns the summary
    (and `out`) from the process that completed the run, else None."""
    mapping = dict(config) if isinstance(config, dict) else load_yaml(config) if config else {}
    if source:
        mapping["source"] = guess_source(source)
    if teachers:
        given = teachers if isinstance(teachers, dict) else {}
        names, options = expand_teacher_sets(teachers.split(",") if isinstance(teachers, str)
                                              else list(teachers))
        # a set's own options first, then the caller's for that name (a set's members included)
        mapping["teachers"] = {name: {**options.get(name, {}), **(given.get(name) or {})}
                               for name in names}
    flags = {"out": out, "shard_size": shard_size, "batch_size": batch_size,
             "weights_dir": weights_dir, "score_workers": score_workers, "device": device,
             "staging": staging, "gpu_teachers": gpu_teachers}
    mapping.update({k: v for k, v in flags.items() if v is not None})
    decode = dict(mapping.get("decode") or {})
    overrides = {"workers": workers, "threads": decode_threads, "max_side": max_side,
                 "jpeg_decoder": jpeg_decoder}
    decode.update({k: v for k, v in overrides.items() if v is not None})
    mapping["decode"] = decode
    for key in ("source", "out"):
        if key not in mapping:
            raise ConfigError(f"give --{key} (or `{key}:` in --config)")
    config = from_mapping(LabelConfig, mapping)
    ray_flags = {"--address": address, "--ray-workers": ray_workers,
                 "--gpus-per-worker": gpus_per_worker}
    given = [flag for flag, value in ray_flags.items() if value is not None]
    if given and engine != "ray":
        raise ConfigError(f"{given[0]} is an option of --engine ray")
    ray = {"address": address, "workers": ray_workers, "gpus_per_worker": gpus_per_worker}
    ray = {key: value for key, value in ray.items() if value is not None}
    summary = run_label(config, progress=progress, max_shards=max_shards, engine=engine, ray=ray)
    return {**summary, "out": config.out} if summary else None
