"""`distill label`, `distill fuse` and `distill calibrate`: parse, call `distill.labeling`."""

from __future__ import annotations

import json

import click

from distill.cli._common import CONTEXT, NO_PROGRESS_OPTION, RUN_FOLDER, WEIGHTS_DIR_OPTION
from distill.errors import DistillCommand


@click.command(cls=DistillCommand, context_settings=CONTEXT)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML config (see configs/label_*.yaml); the flags below override it.")
@click.option("--source", default=None,
              help="A folder, file list (.txt/.csv), parquet or tar shards; the kind is guessed.")
@click.option("--teachers", "teacher_names", default=None,
              help="Comma-separated teachers or a named set (default: offline).")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Output folder, or an object-storage prefix (s3://bucket/run) staged locally.")
@click.option("--staging", default=None, type=click.Path(file_okay=False),
              help="With a remote --out: the local folder the run is staged in (default: one "
              "under ~/.cache/distill/runs named from the URL's hash).")
@click.option("--shard-size", type=int, default=None, help="Inputs per shard (default 1000).")
@click.option("--batch-size", type=int, default=None, help="Images per teacher batch (default 16).")
@click.option("--score-workers", type=click.IntRange(min=0), default=None,
              help="Processes that each decode and score batches on one thread (default: one "
              "per core on a CPU, 0 on a GPU; 0 = score in this process).")
@click.option("--workers", type=int, default=None,
              help="With --score-workers 0: DataLoader processes decoding ahead of the teachers "
              "(default: none on <= 2 cores per process, else cores/4).")
@click.option("--decode-threads", type=int, default=None,
              help="With --score-workers 0 and no --workers: threads decoding ahead in the "
              "labeling process (default 0: decode between teacher batches).")
@click.option("--device", default=None,
              help="Where the teachers run: auto (default: a GPU when torch sees one, else the "
              "CPU), cpu, cuda or cuda:N. On a GPU the classical teachers run batched there; "
              "cuda without one is an error.")
@click.option("--jpeg-decoder", type=click.Choice(["pillow", "torchvision"]), default=None,
              help="pillow (default: draft-mode JPEGs on the CPU) or torchvision (JPEGs decode "
              "in batches on --device: nvJPEG on a GPU; a different run shape).")
@click.option("--max-side", type=int, default=None,
              help="Long side the teachers see, px (default 768; JPEGs decode in draft mode).")
@click.option("--max-shards", type=click.IntRange(min=1), default=None,
              help="Label at most this many shards now and stop; the same command resumes.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process (or torchrun / accelerate ranks); ray: workers of a Ray "
              "cluster (pip install 'distill[ray]').")
@click.option("--address", default=None,
              help="With --engine ray: the cluster, `auto` or ray://HOST:PORT (default: "
              "$RAY_ADDRESS, else a Ray started on this machine).")
@click.option("--ray-workers", default=None, metavar="MIN:MAX",
              help="With --engine ray: workers asked of the autoscaler up front, and the most "
              "shards in flight at once (default: none asked, as many as the cluster fits).")
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=None,
              help="With --engine ray: GPUs each worker needs (default 0: CPU workers).")
@click.option("--gpu-teachers", default=None, metavar="NAMES",
              help="With --engine ray and --gpus-per-worker: the teachers that run on GPU "
              "workers (e.g. nima,clip_aesthetic); the others run on CPU workers (default: "
              "every teacher on the GPU workers).")
@WEIGHTS_DIR_OPTION
@NO_PROGRESS_OPTION
def label(config_file, teacher_names, no_progress, **options):
    """Pseudo-label a pool of images into resumable parquet shards.

    Writes OUT/shards/labels-NNNNN.parquet (+ embeddings-NNNNN.npy for CLIP teachers),
    OUT/errors.parquet and OUT/manifest.json. Killed runs resume exactly with the same
    command. Under `torchrun --nproc_per_node N` or `accelerate launch` the processes claim
    shards through lease files; `--engine ray` labels on a Ray cluster. Example:

        distill label --source ~/photos --teachers brisque,piqe --out runs/photos
    """
    from distill.labeling import label as run

    summary = run(config_file, teachers=teacher_names, **options, progress=not no_progress)
    if summary:
        _print_summary(summary, summary["out"])


def _print_summary(summary: dict, out: str) -> None:
    tiers = summary["tiers"]
    ratio = "n/a" if summary["keep_ratio"] is None else f"{summary['keep_ratio']:.1%}"
    click.echo(
        f"inputs {summary['inputs']}  labeled {summary['labeled']}  errors {summary['errors']}  "
        f"keep {summary['keep']} ({ratio})\n"
        f"tiers: rejected {tiers['rejected']}  pending {tiers['pending']}  accepted {tiers['accepted']}\n"
        f"{summary['images_per_s']} images/s over {summary['seconds']} s  ->  {out}"
    )


@click.command(cls=DistillCommand, context_settings=CONTEXT)
@click.option("--labels", "labels_dir", required=True, type=RUN_FOLDER,
              help="Output folder of `distill label`.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML whose `fusion:` section replaces the run's (else the manifest's).")
@click.option("--keep-threshold", type=float, default=None, help="Quality at which to keep.")
@click.option("--keep-top-percent", type=float, default=None, help="Also keep the top P %.")
@click.option("--normalisation", type=click.Choice(["reference", "rank"]), default=None)
def fuse(labels_dir, config_file, keep_threshold, keep_top_percent, normalisation):
    """Recompute norm_*, quality, keep_prob, label, tier and confidence from the stored raw
    teacher scores, without running any teacher again."""
    from distill.labeling import fuse as run

    result = run(labels_dir, config_file, keep_threshold=keep_threshold,
                 keep_top_percent=keep_top_percent, normalisation=normalisation)
    click.echo(f"fused {result['rows']} rows: keep {result['keep']}, trash {result['trash']}")


@click.command(cls=DistillCommand, context_settings=CONTEXT)
@click.option("--labels", "labels_dir", required=True, type=RUN_FOLDER,
              help="Output folder of `distill label`.")
@click.option("--reference", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Human scores: an AVA.txt (image id = file stem of each labeled path).")
@click.option("--save", "save_to", type=click.Path(dir_okay=False), default=None,
              help="YAML to write the fitted `fusion:` section into (default "
              "LABELS/fusion_calibrated.yaml); other keys of an existing file are kept.")
@click.option("--apply", "apply_now", is_flag=True, help="Also re-fuse the shards with it now.")
def calibrate(labels_dir, reference, save_to, apply_now):
    """Fit fusion weights, keep threshold and temperature against human scores.

    Then `distill fuse --labels LABELS --config FILE` applies them (or pass --apply).
    """
    from distill.labeling import calibrate as run

    report = run(labels_dir, reference, save_to=save_to, apply=apply_now)
    saved, applied = report.pop("saved"), report.pop("applied")
    click.echo(json.dumps(report, indent=2))
    click.echo(f"saved fusion config to {saved}")
    if applied:
        click.echo("re-fused the shards with it")
