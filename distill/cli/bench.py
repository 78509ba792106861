"""`distill bench`: parses arguments and calls `distill.benchmarking`."""

from __future__ import annotations

from pathlib import Path

import click

from distill.cli._common import (
    CONTEXT,
    NO_PROGRESS_OPTION,
    WEIGHTS_DIR_OPTION,
    parse_options,
    show_progress,
)
from distill.errors import DistillCommand, DistillError


@click.command("bench", cls=DistillCommand, context_settings=CONTEXT)
@click.argument("reports", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--model", "model", metavar="teacher:NAME|PATH",
              help="What to bench: teacher:NAME (see `distill teachers`), or a student file "
              "(student.pt from `distill train`, or student.onnx from `distill export`).")
@click.option("--dataset", type=click.Choice(["ava", "eva", "koniq", "csv", "run"]),
              help="ava: AVA.txt vote counts, images/<id>.jpg. eva: votes_filtered.csv "
              "('='-separated, one row per vote, averaged per image; 0-10 votes used as is on "
              "the 1-10 scale). koniq: koniq10k_scores_and_distributions.csv, images in "
              "1024x768/ or 512x384/; MOS 1-5 mapped 1->1, 5->10 for thresholds, native for "
              "correlations. csv: a path,score file (default ROOT/scores.csv). run: a "
              "labeling run (ROOT = `distill label`'s folder), its fused quality as the truth; "
              "a student with aux heads is also compared with the run's face_* columns.")
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
@WEIGHTS_DIR_OPTION
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
@NO_PROGRESS_OPTION
def bench(reports, compare, out, **options):
    """Benchmark a teacher or a student on AVA, EVA, KonIQ-10k, a path,score CSV or a run.

    \b
      distill bench --model teacher:piqe --dataset ava --root /data/AVA
      distill bench --model teacher:nima --dataset koniq --root /data/koniq --split all
      distill bench --compare bench-ava-*/report.json --out table.md
      distill bench --model runs/student/student.pt --dataset run --root runs/held-out

    Writes OUT/report.json, report.md (one summary row: SRCC/PLCC/KRCC with bootstrap 95%
    CIs, RMSE, accuracy at 5 and at the keep threshold, three-tier F1, ROC-AUC, img/s,
    latency p50/p95, params, FLOPs, MB), predictions.csv, skipped.csv and four PNG plots.

    Missing or undecodable images are listed in skipped.csv and counted; the run goes on.
    Teachers whose scale is not 1-10 get their thresholded metrics from quantile-matched
    scores (their ranking mapped onto the test set's own score distribution); reports say so.
    On a run labeled with the faces teacher, a student trained with `--aux faces` is also
    compared with the teacher's face_* columns (report.md: "Agreement with the faces teacher").
    """
    from distill.benchmarking import BenchOptions, compare_reports, default_out_dir, run_bench

    model, dataset, root, split = (options.pop(k) for k in ("model", "dataset", "root", "split"))
    if compare:
        if model or dataset:
            raise DistillError("--compare takes report.json files, not --model/--dataset")
        table = compare_reports(list(reports))
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
    out_dir = Path(out) if out else default_out_dir(dataset, model)
    progress = show_progress(options.pop("no_progress"))
    settings = BenchOptions(**{**options, "options": parse_options(options["options"]),
                               "progress": progress})
    report = run_bench(model, dataset, Path(root), split, out_dir, settings)
    srcc, plcc = (report["metrics"][key] for key in ("srcc", "plcc"))
    click.echo(f"{report['model']['spec']} on {dataset}: {report['n_scored']} scored, "
               f"{report['skipped']['count']} skipped; SRCC {_rounded(srcc)}, "
               f"PLCC {_rounded(plcc)}; report in {out_dir / 'report.md'}")
    faces = report["metrics"].get("faces")
    if faces:
        eyes = faces["columns"].get("face_min_eyes_open", {})
        closed = faces.get("any_eyes_closed", {})
        click.echo(f"  faces teacher: face_min_eyes_open SRCC {_rounded(eyes.get('srcc'))} "
                   f"(n {eyes.get('n', 0)}); any eyes closed: accuracy "
                   f"{_rounded(closed.get('accuracy'))} (n {closed.get('n', 0)})")


def _rounded(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
