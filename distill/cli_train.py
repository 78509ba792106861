"""`distill train` and `distill export`: parse arguments, call `distill.train` / `distill.export`.

Registered on the `distill` group by distill.cli (`main.add_command(train)`); also runnable
alone as `python -m distill.cli_train train|export ...`.
"""

from __future__ import annotations

import click

from distill.errors import DistillCommand, DistillError, DistillGroup

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _set(mapping: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        mapping = mapping.setdefault(key, {}) if isinstance(mapping.get(key, {}), dict) else {}
    mapping[leaf] = value


def build_train_config(config_file, flags: dict, overrides: tuple[str, ...]):
    """YAML (optional) ← --set KEY=VALUE ← the named flags; then `from_mapping`."""
    import yaml

    from distill.config import from_mapping, load_yaml
    from distill.train import TrainConfig

    mapping = load_yaml(config_file) if config_file else {}
    for override in overrides:
        key, sep, value = override.partition("=")
        if not (sep and key.strip()):
            raise DistillError(f"--set {override!r}: expected KEY.PATH=VALUE, e.g. optim.lr=3e-4")
        _set(mapping, key.strip(), yaml.safe_load(value))
    for dotted, value in flags.items():
        if value is not None:
            _set(mapping, dotted, value)
    for key, flag in (("labels", "--labels"), ("out", "--out")):
        if key not in mapping:
            raise DistillError(f"give {flag} (or `{key}:` in --config)")
    return from_mapping(TrainConfig, mapping)


@click.command(cls=DistillCommand, context_settings=CONTEXT)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML training config (see configs/distill_*.yaml). The options below "
              "override it; without it, --labels, --out and the defaults suffice.")
@click.option("--labels", type=click.Path(exists=True, file_okay=False), default=None,
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
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Any config key, repeatable; values parse as YAML, e.g. --set loss.rank=0 "
              "--set data.cache=true --set optim.ema_decay=0.99.")
@click.option("--weights-dir", type=click.Path(file_okay=False), default=None,
              help="Weights folder (default $DISTILL_WEIGHTS_DIR, else ~/.cache/distill/weights); "
              "ImageNet student weights are read from its students/ subfolder.")
@click.option("--finetune", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Start from this trained student.pt (its architecture and preprocessing), "
              "e.g. to adapt it to a photographer's own picks (`import-labels --from-xmp`).")
@click.option("--resume", is_flag=True,
              help="Continue RUN_DIR from its latest complete checkpoint (same final step "
              "count as an uninterrupted run). Without it, a RUN_DIR with checkpoints is refused.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def train(config_file, labels, student, out, init, max_steps, batch_size, grad_accum, lr,
          mixed_precision, function_matching, overrides, weights_dir, finetune, resume,
          no_progress):
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
    from distill.train import run_train

    flags = {"labels": labels, "student.name": student, "out": out, "student.init": init,
             "optim.max_steps": max_steps, "optim.batch_size": batch_size,
             "optim.grad_accum": grad_accum, "optim.lr": lr, "mixed_precision": mixed_precision,
             "function_matching.enabled": function_matching, "weights_dir": weights_dir}
    if finetune:  # the base student's architecture and the pixels it was trained on
        from students.checkpoint import load_student
        from students.preprocess import RESIZE_MODES

        base = load_student(finetune)
        modes = {description: mode for mode, description in RESIZE_MODES.items()}
        flags.update({"student.finetune": finetune, "student.name": student or base.name,
                      "data.image_size": base.preprocessing["image_size"],
                      "data.resize_mode": modes[base.preprocessing["resize"]],
                      "data.resize_size": base.preprocessing["resize_size"]})
    config = build_train_config(config_file, flags, overrides)
    card = run_train(config, resume=resume, progress_bar=not no_progress)
    if card:
        metrics = card["val_metrics"]
        shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()) or "no val split"
        click.echo(f"{card['student']} ({card['parameters']:,} params, "
                   f"{card['flops_at_224'] / 1e9:.3f} GFLOPs, {card['init']['kind']} init) after "
                   f"{card['training']['steps']} steps: {shown}\n  -> {config.out}/student.pt")


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
    from distill.export import export_student

    report = export_student(model_path, fmt, out, opset=opset)
    parity = "  ".join(f"{runtime} {diff:.2e}" for runtime, diff in report["max_abs_diff"].items())
    click.echo(f"exported {report['model']}  ({report['bytes'] / 1e6:.1f} MB)\n"
               f"  max abs diff vs PyTorch: {parity}\n  preprocessing: {report['preprocessing']}")


@click.group(cls=DistillGroup, context_settings=CONTEXT)
def cli():
    """distill train / export, runnable without the main `distill` group."""


cli.add_command(train)
cli.add_command(export)

if __name__ == "__main__":
    cli()
