"""A student exported by `distill export --format onnx`, run by onnxruntime without torch's
model code: the same `predict(images)` as `students.checkpoint.LoadedStudent`.

The preprocessing and output columns are read from the ONNX file's metadata
(`distill.preprocessing`, `distill.outputs`, and for a student with aux targets
`distill.aux_outputs`, the columns of its second output `aux`), which the export writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from distill.errors import DistillError
from students import preprocess
from students.predictions import as_predictions


class OnnxStudent:
    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime

        self.path = Path(path)
        if not self.path.is_file():
            raise DistillError(f"student file {self.path} does not exist")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = options.inter_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options,
                                                        providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear line
            raise DistillError(f"{self.path}: not an ONNX model ({type(exc).__name__})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if "distill.preprocessing" not in metadata:
            raise DistillError(f"{self.path}: no distill.preprocessing metadata; export it with "
                               "`distill export --format onnx`")
        try:
            self.preprocessing = json.loads(metadata["distill.preprocessing"])
            self.outputs = json.loads(metadata["distill.outputs"])
            self.aux_outputs = json.loads(metadata.get("distill.aux_outputs", "[]"))
            preprocess.check_policy(self.preprocessing)
        except (KeyError, ValueError, TypeError) as exc:
            raise DistillError(f"{self.path}: bad distill metadata ({type(exc).__name__}: {exc}); "
                               "export it again with `distill export --format onnx`") from None
        self.name = metadata.get("distill.student", "student")

    def predict(self, images: list[Image.Image], batch_size: int = 32) -> dict[str, np.ndarray]:
        """RGB photos → {"quality": (N,), "keep_prob": (N,)[, "rating": (N, bins)][, "aux":
        {target: (N,)}], "errors"}."""
        names = ["scores", "aux"] if self.aux_outputs else ["scores"]
        parts = [self.session.run(names, {"image": preprocess.batch(
            images[i:i + batch_size], self.preprocessing).numpy()})
            for i in range(0, len(images), batch_size)]

        def stacked(index: int, width: int) -> np.ndarray:
            return (np.concatenate([p[index] for p in parts]) if parts
                    else np.zeros((0, width), np.float32))

        aux = stacked(1, len(self.aux_outputs)) if self.aux_outputs else None
        return as_predictions(stacked(0, len(self.outputs)), aux, self.aux_outputs)


def load_onnx_student(path: str | Path, threads: int | None = None) -> OnnxStudent:
    """`threads`: onnxruntime's intra-op threads (default: all cores)."""
    return OnnxStudent(Path(path), threads)
