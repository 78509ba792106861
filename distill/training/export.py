"""Export stage: student.pt → ONNX (onnxruntime, OpenCV DNN) or TorchScript, parity-checked.

The exported graph is `students.checkpoint.ScoresHead`: input `image`, float32 RGB in [0, 1],
N x 3 x S x S (normalisation inside); output `scores`, N x K: quality (1–10), keep_prob and,
if the student has one, the 10-bin rating histogram. A student trained with aux targets has a
second output `aux`, N x A, in the label columns' units (e.g. face_min_eyes_open), its columns
in the metadata `distill.aux_outputs`; `scores` is the same as without it. The batch axis is
dynamic, the spatial size static (S, 224 by default), which every OpenCV DNN version handles.

Parity: the export and the PyTorch student run on the same batch of real photos (the sample
photos installed packages ship, preprocessed by the student's own policy, plus a synthetic
gradient); any output differing by more than `TOLERANCE` fails the export and deletes the file.
Beside the model, `<stem>.preprocessing.json` says how to feed it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from distill import run_folder
from distill.errors import DistillError
from distill.safefs import atomic_write
from students import preprocess
from students.checkpoint import LoadedStudent, load_student

TOLERANCE = 1e-4
DEFAULT_OPSET = 17  # loads in OpenCV 4.8+ and 5.x and in every current onnxruntime
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}


def sample_batch(preprocessing: dict, count: int = 4) -> torch.Tensor:
    """Real photos (what the model will see) plus a smooth synthetic image, preprocessed."""
    from distill.sources import packaged_photos

    images = []
    for path in packaged_photos():
        try:
            image = Image.open(path).convert("RGB")
        except OSError:
            continue
        if min(image.size) >= 64:
            images.append(image)
        if len(images) == count - 1:
            break
    ramp = np.linspace(0, 255, 256, dtype=np.float32)
    gradient = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (256, 1)),
                         np.tile(ramp[:, None], (1, 256))], axis=2).astype(np.uint8)
    images.append(Image.fromarray(gradient, "RGB"))
    return preprocess.batch(images, preprocessing)


def default_output(model_path: Path, fmt: str) -> Path:
    return Path(model_path).with_name(Path(model_path).stem + SUFFIXES[fmt])


def preprocessing_path(model_file: Path) -> Path:
    return model_file.with_suffix(".preprocessing.json")


def export_student(model_path: str | Path, fmt: str, out: str | Path | None = None,
                   opset: int = DEFAULT_OPSET) -> dict:
    """Export, check parity in every runtime, write the preprocessing JSON; returns a report."""
    if fmt not in SUFFIXES:
        raise DistillError(f"--format must be one of {', '.join(SUFFIXES)}, got {fmt!r}")
    loaded = load_student(model_path)
    out = Path(out) if out else default_output(Path(model_path), fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    head = loaded.scores_head()
    sample = sample_batch(loaded.preprocessing)
    names = output_names(loaded)
    with torch.no_grad():
        expected = _arrays(head(sample))
    if fmt == "onnx":
        write_onnx(head, sample, out, opset, loaded)
        diffs = {"onnxruntime": _max_diff(run_onnxruntime(out, sample.numpy(), names), expected),
                 "opencv": _max_diff(run_opencv(out, sample.numpy(), names), expected)}
    else:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's "use torch.export"
            torch.jit.trace(head, sample[:1]).save(str(out))
            diffs = {"torchscript": _max_diff(_arrays(torch.jit.load(str(out))(sample)),
                                              expected)}
    failed = {runtime: diff for runtime, diff in diffs.items() if not diff <= TOLERANCE}
    if failed:
        out.unlink(missing_ok=True)
        raise DistillError(f"export parity failed: max abs diff {failed} > {TOLERANCE} on "
                           f"{len(sample)} sample images; {out} removed")
    description = describe(loaded, out, fmt, opset, diffs)
    run_folder.write_json(preprocessing_path(out), description)
    return {"model": str(out), "bytes": out.stat().st_size, "max_abs_diff": diffs,
            "preprocessing": str(preprocessing_path(out)), "sample_images": len(sample)}


def output_names(loaded: LoadedStudent) -> list[str]:
    return ["scores", "aux"] if loaded.aux_outputs else ["scores"]


def _arrays(outputs) -> list[np.ndarray]:
    """The head's output (scores, or scores and aux) as numpy arrays, in output order."""
    return [np.asarray(o) for o in (outputs if isinstance(outputs, (tuple, list)) else [outputs])]


def _max_diff(actual: list[np.ndarray], expected: list[np.ndarray]) -> float:
    if [a.shape for a in actual] != [e.shape for e in expected]:
        return float("inf")
    return max(float(np.max(np.abs(a.astype(np.float64) - e), initial=0.0))
               for a, e in zip(actual, expected))


def write_onnx(head: torch.nn.Module, sample: torch.Tensor, out: Path, opset: int,
               loaded: LoadedStudent) -> None:
    """TorchScript-based exporter (dynamo=False): plain ops OpenCV's importer knows."""
    import onnx

    names = output_names(loaded)
    metadata = [("distill.preprocessing", json.dumps(loaded.preprocessing)),
                ("distill.outputs", json.dumps(loaded.outputs)), ("distill.student", loaded.name)]
    if loaded.aux_outputs:
        metadata.append(("distill.aux_outputs", json.dumps(loaded.aux_outputs)))
    with atomic_write(out) as partial:
        torch.onnx.export(head, (sample[:1],), str(partial), dynamo=False, opset_version=opset,
                          input_names=["image"], output_names=names,
                          dynamic_axes={"image": {0: "batch"}, **{n: {0: "batch"} for n in names}})
        model = onnx.load(str(partial))
        for key, value in metadata:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(model)
        onnx.save(model, str(partial))


def run_onnxruntime(path: Path, batch: np.ndarray, names=("scores",)) -> list[np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(list(names), {"image": batch.astype(np.float32)})


def run_opencv(path: Path, batch: np.ndarray, names=("scores",)) -> list[np.ndarray]:
    import cv2

    net = cv2.dnn.readNetFromONNX(str(path))
    net.setInput(batch.astype(np.float32))
    return [np.asarray(o) for o in net.forward(list(names))]


def opencv_resize(preprocessing: dict) -> str:
    side = preprocessing["resize_size"]
    if preprocessing["resize"] == preprocess.RESIZE_MODES["shorter"]:
        return f"resize shorter side to {side} (INTER_AREA)"
    return f"shrink longer side to at most {side} (INTER_AREA; never enlarge)"


def describe(loaded: LoadedStudent, out: Path, fmt: str, opset: int, diffs: dict) -> dict:
    size = loaded.preprocessing["image_size"]
    return {
        "model": out.name, "format": fmt, "opset": opset if fmt == "onnx" else None,
        "student": loaded.name, "parameters": loaded.card.get("parameters"),
        "input": {"name": "image", "shape": ["batch", 3, size, size], "dtype": "float32"},
        "output": {"name": "scores", "shape": ["batch", len(loaded.outputs)],
                   "columns": loaded.outputs},
        **({"aux_output": {"name": "aux", "shape": ["batch", len(loaded.aux_outputs)],
                           "columns": loaded.aux_outputs}} if loaded.aux_outputs else {}),
        "preprocessing": loaded.preprocessing,
        "opencv_example": (f"net = cv2.dnn.readNetFromONNX('{out.name}'); rgb = "
                           f"{opencv_resize(loaded.preprocessing)}, centre-crop {size}; "
                           "net.setInput(cv2.dnn.blobFromImage(rgb, 1 / 255)); "
                           "quality, keep_prob = net.forward()[0][:2]"),
        "parity_max_abs_diff": diffs, "parity_tolerance": TOLERANCE,
        "val_metrics": loaded.card.get("val_metrics"),
    }
