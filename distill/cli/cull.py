"""`distill cull`: parse arguments, call `distill.culling`."""

from __future__ import annotations

import click

from distill.cli._common import CONTEXT, NO_PROGRESS_OPTION, WEIGHTS_DIR_OPTION
from distill.errors import DistillCommand


@click.command("cull", cls=DistillCommand, context_settings=CONTEXT)
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="A trained student: student.pt, or student.onnx from `distill export`.")
@click.option("--link", "action", flag_value="link",
              help="Hard-link photos into DEST/keep, DEST/pending and DEST/trash.")
@click.option("--move", "action", flag_value="move",
              help="Move photos (and their sidecars and RAW companions) into DEST/keep, "
              "DEST/pending and DEST/trash, verified, never replacing a file.")
@click.option("--xmp", is_flag=True, help="Write xmp:Rating (1-5), digiKam's pick label "
              "(rejected / pending / accepted, as the folder) and reason keywords "
              "(distill/blurry, distill/similar, distill/eyes-closed, distill/face-blurry, ...) to "
              "sidecars, merging any existing one.")
@click.option("--dest", type=click.Path(file_okay=False), default=None,
              help="Where keep/, pending/, trash/, the journal and the report go "
              "(default FOLDER/culled).")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Report file, .csv or .json (default DEST/cull.csv).")
@click.option("--keep-threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="keep_prob at which a photo (the best of its group) is kept.")
@click.option("--keep-rate", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Instead of a threshold: keep this fraction of the folder, best first "
              "(after grouping), e.g. 0.3.")
@click.option("--mode", type=click.Choice(["aggressive", "moderate", "conservative"]),
              default=None, help="A keep rate by name: aggressive 0.15, moderate 0.30, "
              "conservative 0.50.")
@click.option("--groups/--no-groups", default=True, show_default=True,
              help="Group similar shots (bursts, re-takes) and keep only the best of each.")
@click.option("--similarity", type=click.FloatRange(-1, 1), default=None,
              help="Cosine of the offline descriptors that makes two shots similar "
              "(default 0.70; benchmarks/burst_groups.py).")
@click.option("--burst-seconds", type=click.FloatRange(min=0), default=None,
              help="Also require EXIF capture times at most this far apart (e.g. 2).")
@click.option("--similar", "similar_decision", type=click.Choice(["trash", "pending"]),
              default="trash", show_default=True,
              help="What the other shots of a group become.")
@click.option("--html", is_flag=True,
              help="Also write DEST/review/index.html: the groups, the kept photo marked, "
              "each photo's reason, as thumbnails.")
@click.option("--faces/--no-faces", default=False, show_default=True,
              help="Find faces (teacher 'faces': distill weights fetch face-detection-short-range "
              "face-detection-full-range face-landmark iris-landmark): closed eyes and soft "
              "faces are flagged, and in a group the frame with every eye open wins.")
@click.option("--focus-side", type=click.IntRange(min=0), default=None,
              help="Decode JPEGs to at least this many px per side to measure focus "
              "(default 768: photos up to ~1536 px decode whole; 0: the student's size, fastest).")
@WEIGHTS_DIR_OPTION
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--max-images", type=click.IntRange(min=0), default=None,
              help="Score at most this many new photos now; the same command continues, and "
              "decides once every photo is scored.")
@NO_PROGRESS_OPTION
def cull(folder, model_path, action, xmp, dest, report, keep_threshold, keep_rate, mode, groups,
         similarity, burst_seconds, similar_decision, html, faces, focus_side, weights_dir,
         batch_size, max_images, no_progress):
    """Decide keep, pending or trash for every photo in FOLDER with a trained student.

    Photos are JPEG, PNG, TIFF, WebP, HEIC or camera RAW (CR2, CR3, NEF, ARW, RAF, ORF, DNG,
    RW2; a RAW beside a JPEG of the same name is decided and moved with it). Similar shots are
    grouped and the best of each kept (the sharpest, when the student cannot tell them
    apart); every decision comes with a reason (blurry, under-exposed, over-exposed, noisy,
    with --faces eyes closed or face out of focus, similar to X, below the threshold or keep
    rate).

    A dry run by default: only the report is written. Photo bytes are never modified. An
    interrupted run, started again, finishes the job without doing any photo twice or
    losing one. Examples:

    \b
      distill cull ~/Pictures/wedding --model student.onnx --keep-rate 0.3 --html
      distill cull /media/card/DCIM --model student.pt --move --xmp --burst-seconds 2
    """
    from distill.culling import MODES, CullOptions, DecideOptions
    from distill.culling import cull as run_cull
    from distill.errors import ConfigError
    from distill.names import as_text

    if keep_rate is not None and mode is not None:
        raise ConfigError("give --keep-rate or --mode, not both")
    decide = DecideOptions(keep_threshold=keep_threshold,
                           keep_rate=MODES[mode] if mode else keep_rate, group=groups,
                           burst_seconds=burst_seconds, similar_decision=similar_decision,
                           **({"similarity": similarity} if similarity is not None else {}))
    options = CullOptions(action=action or "dry", xmp=xmp, decide=decide, batch_size=batch_size,
                          max_images=max_images, faces=faces, weights_dir=weights_dir,
                          **({"focus_side": focus_side} if focus_side is not None else {}))
    result = run_cull(folder, model_path, dest, options, report, progress=not no_progress,
                      html=html)
    click.echo(f"keep {result['keep']}  pending {result['pending']}  trash {result['trash']}  "
               f"errors {result['error']}  groups {result['groups']}  "
               f"xmp errors {result['xmp_errors']}  ({result['remaining']} not yet scored, "
               f"{result['undecided']} not yet decided)\nreport: {as_text(result['report'])}"
               + (f"\nreview page: {as_text(result['html'])}" if result["html"] else ""))
