"""`distill bench`: parses arguments and calls `distill.bench`; registered by distill.cli."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from distill.errors import DistillCommand, DistillError


def _parse_options(options: tuple[str, ...]) -> dict:
    """`backbone=vgg16` → {"backbone": "vgg16"}; values parse as YAML scalars."""
    import yaml

    parsed = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not (sep and key):
            raise DistillError(f"bad option {option!r}; expected KEY=VALUE")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


@click.command("bench", cls=DistillCommand,
               context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("reports", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--model", "model", metavar="teacher:NAME|PATH",
              help="What to bench: teacher:NAME (see `distill teachers`), or a student file "
              "(student.pt from `distill train`, or student.onnx from `distill export`).")
@click.option("--dataset", type=click.Choice(["ava", "eva", "koniq", "csv"]),
              help="ava: AVA.txt vote counts, images/<id>.jpg. eva: votes_filtered.csv "
              "('='-separated, one row per vote, averaged per image; 0-10 votes used as is on "
              "the 1-10 scale). koniq: koniq10k_scores_and_distributions.csv, images in "
              "1024x768/ or 512x384/; MOS 1-5 mapped 1->1, 5->10 for thresholds, native for "
              "correlations. csv: a path,score file (default ROOT/scores.csv).")
@click.option("--root", type=click.Path(file_okay=False), help="The dataset's folder.")
@click.option("--split", default=None, metavar="official|hash|all|FILE",
              help="Test images. official: the dataset's own list (AVA generic_test.jpgl under "
              "ROOT, KonIQ's set column, a csv split column). hash: sha1(id) mod 100 < 10, "
              "stable across machines. all: every image. FILE: one image id per line. "
              "Default: official where the files hold one, else hash.")
@click.option("--labels", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Label file, when it is not where --dataset expects it under ROOT.")
@click.option("--score-scale", type=float, nargs=2, default=None, metavar="LO HI",
              help="csv only: the score column's scale, mapped linearly onto 1-10 for the "
              "thresholded metrics. Default: 1 10.")
@click.option("--out", type=click.Path(), default=None,
              help="Bench: output folder (default ./bench-DATASET-MODEL). --compare: write the "
              "table to this file too.")
@click.option("--keep-threshold", type=float, default=6.0, show_default=True,
              help="Keep when the 1-10 score is >= this (binary-at-keep, ROC-AUC, calibration).")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="Teacher option, repeatable, e.g. -o backbone=vgg16.")
@click.option("--weights-dir", type=click.Path(file_okay=False), default=None,
              help="Folder holding teacher weights. Default: $DISTILL_WEIGHTS_DIR, else "
              "~/.cache/distill/weights.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per predict call (default: the model's own).")
@click.option("--draft-size", type=int, default=None,
              help="Let JPEGs decode straight to about this many px per side (faster; changes "
              "resolution-dependent scores).")
@click.option("--limit", type=click.IntRange(min=2), default=None,
              help="Bench only the first N test images (a quick look; recorded in the report).")
@click.option("--latency-samples", type=click.IntRange(min=0), default=50, show_default=True,
              help="Images re-run one per call to measure latency p50/p95.")
@click.option("--bootstrap", "n_resamples", type=click.IntRange(min=0), default=1000,
              show_default=True, help="Bootstrap resamples for the 95% CIs (0: none).")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option("--compare", is_flag=True,
              help="Instead of benching, print one markdown table of the REPORTS (report.json "
              "files) given as arguments.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def bench(reports, compare, out, **options):
    """Benchmark a teacher (or, later, a student) on AVA, EVA, KonIQ-10k or a path,score CSV.

    \b
      distill bench --model teacher:piqe --dataset ava --root /data/AVA
      distill bench --model teacher:nima --dataset koniq --root /data/koniq --split all
      distill bench --compare bench-ava-*/report.json --out table.md

    Writes OUT/report.json, report.md (one summary row: SRCC/PLCC/KRCC with bootstrap 95%
    CIs, RMSE, accuracy at 5 and at the keep threshold, three-tier F1, ROC-AUC, img/s,
    latency p50/p95, params, FLOPs, MB), predictions.csv, skipped.csv and four PNG plots.

    Missing or undecodable images are listed in skipped.csv and counted; the run goes on.
    Teachers whose scale is not 1-10 get their thresholded metrics from quantile-matched
    scores (their ranking mapped onto the test set's own score distribution); reports say so.
    """
    _bench(reports, compare, out, **options)


def _bench(reports, compare, out, *, model, dataset, root, split, labels, score_scale,
           keep_threshold, options, weights_dir, batch_size, draft_size, limit,
           latency_samples, n_resamples, seed, no_progress):
    from distill import bench as stage

    if compare:
        if model or dataset:
            raise DistillError("--compare takes report.json files, not --model/--dataset")
        table = stage.compare_reports(list(reports))
        click.echo(table, nl=False)
        if out:
            Path(out).write_text(table)
        return
    if reports:
        raise DistillError(f"unexpected arguments {' '.join(reports)} (did you mean --compare?)")
    missing = [name for name, value in (("--model", model), ("--dataset", dataset),
                                        ("--root", root)) if not value]
    if missing:
        raise DistillError(f"missing {', '.join(missing)} (see distill bench --help)")
    out_dir = Path(out) if out else stage.default_out_dir(dataset, model)
    report = stage.run_bench(
        model, dataset, Path(root), split, out_dir, labels=labels, score_scale=score_scale,
        keep_threshold=keep_threshold, options=_parse_options(options), weights_dir=weights_dir,
        batch_size=batch_size, draft_size=draft_size, limit=limit,
        latency_samples=latency_samples, n_resamples=n_resamples, seed=seed,
        progress=not no_progress and sys.stderr.isatty(),
    )
    srcc, plcc = (report["metrics"][key] for key in ("srcc", "plcc"))
    click.echo(f"{report['model']['spec']} on {dataset}: {report['n_scored']} scored, "
               f"{report['skipped']['count']} skipped; SRCC {_rounded(srcc)}, "
               f"PLCC {_rounded(plcc)}; report in {out_dir / 'report.md'}")


def _rounded(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
