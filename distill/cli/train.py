"""`distill train` and `distill export`: parse arguments, call `distill.training`."""

from __future__ import annotations

import click

from distill.cli._common import CONTEXT, NO_PROGRESS_OPTION, RUN_FOLDER, WEIGHTS_DIR_OPTION
from distill.errors import DistillCommand


@click.command(cls=DistillCommand, context_settings=CONTEXT)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML training config (see configs/distill_*.yaml). The options below "
              "override it; without it, --labels, --out and the defaults suffice.")
@click.option("--labels", type=RUN_FOLDER, default=None,
              help="Output folder of `distill label` (shards/, manifest.json; dedup.parquet "
              "and human.parquet are honoured when present).")
@click.option("--student", default=None,
              help="Student architecture: tiny, mobilenetv3_small, mobilenetv3_large, "
              "efficientnet_b0, resnet18 (default mobilenetv3_small).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="RUN_DIR: receives metrics.csv, tensorboard/, checkpoints/, student.pt and "
              "model_card.json.")
@click.option("--init", type=click.Choice(["auto", "imagenet", "random"]), default=None,
              help="Backbone start: auto = ImageNet weights from WEIGHTS_DIR/students/ when the "
              "file is there, else random (said in the log and the model card).")
@click.option("--max-steps", type=int, default=None, help="Optimizer steps in total.")
@click.option("--batch-size", type=int, default=None, help="Images per process per micro-batch.")
@click.option("--grad-accum", type=int, default=None, help="Micro-batches per optimizer step.")
@click.option("--lr", type=float, default=None, help="Peak learning rate (AdamW, cosine schedule).")
@click.option("--mixed-precision", type=click.Choice(["no", "fp16", "bf16"]), default=None,
              help="Autocast precision; fp16 needs a GPU. Default: what `accelerate launch` "
              "was configured with, else no.")
@click.option("--function-matching/--no-function-matching", default=None,
              help="Online targets: the teachers score the very crop the student sees "
              "(Beyer et al. 2022). Slow on CPUs: the teachers run every step.")
@click.option("--aux", default=None, metavar="COLUMNS",
              help="Auxiliary targets: label-shard columns a small extra head learns, "
              "comma-separated; `faces` = face_count, face_eyes_closed, face_min_sharpness, "
              "face_min_eyes_open, face_exposure (a run labeled with the faces teacher). "
              "Weighed by loss.aux (default 0.2); `distill bench` reports the agreement.")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Any config key, repeatable; values parse as YAML, e.g. --set loss.rank=0 "
              "--set data.cache=true --set optim.ema_decay=0.99.")
@WEIGHTS_DIR_OPTION
@click.option("--finetune", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Start from this trained student.pt (its architecture and preprocessing), "
              "e.g. to adapt it to a photographer's own picks (`import-labels --from-xmp`).")
@click.option("--resume", is_flag=True,
              help="Continue RUN_DIR from its latest complete checkpoint (same final step "
              "count as an uninterrupted run). Without it, a RUN_DIR with checkpoints is refused.")
@NO_PROGRESS_OPTION
def train(config_file, no_progress, **options):
    """Distill a labeling run into a compact keep/trash student.

    Trains quality (1-10), a keep logit and, when the labels carry rating histograms, a
    10-bin rating head, with a configurable mix of Huber, soft-target BCE, EMD and a pairwise
    ranking loss, balanced sampling over score bins, confidence weights, EMA, cosine LR,
    checkpoints and early stopping on val SRCC. Examples:

    \b
        distill train --labels runs/photos --student tiny --out runs/student-tiny
        distill train --config configs/distill_mobilenetv3_small.yaml --resume
        accelerate launch --config_file configs/accelerate_multi_gpu.yaml \\
            -m distill.cli train --config configs/distill_mobilenetv3_small.yaml
        torchrun --nproc_per_node 2 -m distill.cli train --labels L --out R   # 2 CPU procs

    Every process of `accelerate launch` / `torchrun` runs this same command.
    """
    from distill.training import train as run

    card = run(config_file, **options, progress=not no_progress)
    if card:
        metrics = card["val_metrics"]
        shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()) or "no val split"
        click.echo(f"{card['student']} ({card['parameters']:,} params, "
                   f"{card['flops_at_224'] / 1e9:.3f} GFLOPs, {card['init']['kind']} init) after "
                   f"{card['training']['steps']} steps: {shown}\n"
                   f"  -> {card['config']['out']}/student.pt")


@click.command(cls=DistillCommand, context_settings=CONTEXT)
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False),
              help="A student.pt written by `distill train`.")
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), default="onnx",
              show_default=True, help="onnx: runs in onnxruntime and OpenCV DNN "
              "(cv2.dnn.readNetFromONNX). torchscript: torch.jit, for C++/Python without the code.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Output file (default: beside the model: student.onnx, "
              "student.torchscript.pt).")
@click.option("--opset", type=int, default=17, show_default=True,
              help="ONNX opset; 17 loads in OpenCV 4.8+/5 and onnxruntime.")
def export(model_path, fmt, out, opset):
    """Export a trained student and prove the export computes what the student does.

    The model takes one input `image`: float32 RGB in [0, 1], N x 3 x S x S (S from the
    preprocessing JSON, 224 by default; the mean/std normalisation is inside the model), and
    returns one output `scores`: N x K columns quality (1-10), keep_prob and, if trained,
    rating_1..rating_10. Parity on a batch of real photos (max abs diff <= 1e-4) is checked
    against PyTorch in onnxruntime and OpenCV DNN (onnx) or torch.jit (torchscript); a failed
    check exits 2. The preprocessing (size, resize policy, RGB order, mean, std) is written
    beside the model as FILE_STEM.preprocessing.json.
    """
    from distill.training import export_student

    report = export_student(model_path, fmt, out, opset=opset)
    parity = "  ".join(f"{runtime} {diff:.2e}" for runtime, diff in report["max_abs_diff"].items())
    click.echo(f"exported {report['model']}  ({report['bytes'] / 1e6:.1f} MB)\n"
               f"  max abs diff vs PyTorch: {parity}\n  preprocessing: {report['preprocessing']}")
