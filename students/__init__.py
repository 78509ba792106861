"""Compact keep/trash students: a registry, `create_student(name, **opts)` and `load_student`.

    >>> from students import create_student, load_student
    >>> model = create_student("mobilenetv3_small", rating_bins=10)   # ImageNet init if on disk
    >>> trained = load_student("runs/student/student.pt")
    >>> trained.predict([pil_image])["quality"]

Options every student takes: `rating_bins` (0 = no rating head, 10 = NIMA-style histogram),
`dropout`, `init` (auto | imagenet | random) and `weights_dir`. Where ImageNet weights are
looked for is documented in `students.models`.
"""

from __future__ import annotations

from distill.registry import Registry

STUDENTS: Registry = Registry("student")
STUDENTS.add("tiny", "students.models:create_tiny",
             "4-layer CNN, ~80 k params, ~0.09 GFLOPs at 224 px; tests; random init only")
STUDENTS.add("patch_cnn", "students.models:create_patch_cnn",
             "4x4-patch stem + 3 conv blocks, ~160 k params, ~0.05 GFLOPs at 224 px; "
             "fastest on CPU; random init only")
STUDENTS.add("mobilenetv3_small", "students.models:create_mobilenetv3_small",
             "timm mobilenetv3_small_100, ~1.5 M params, ~0.11 GFLOPs at 224 px")
STUDENTS.add("mobilenetv3_large", "students.models:create_mobilenetv3_large",
             "timm mobilenetv3_large_100, ~4.2 M params, ~0.43 GFLOPs at 224 px")
STUDENTS.add("efficientnet_b0", "students.models:create_efficientnet_b0",
             "timm efficientnet_b0, ~4.0 M params, ~0.77 GFLOPs at 224 px")
STUDENTS.add("resnet18", "students.models:create_resnet18",
             "timm resnet18, ~11.2 M params, ~3.6 GFLOPs at 224 px")


def create_student(name: str, **opts):
    return STUDENTS.create(name, **opts)


def list_students() -> list[str]:
    return STUDENTS.names()


def load_student(path):
    from students.checkpoint import load_student as load

    return load(path)


def load_model(path):
    """A student.pt or student.onnx, as an object with predict(images) -> quality, keep_prob."""
    from pathlib import Path

    if Path(path).suffix == ".onnx":
        from students.onnx_runtime import load_onnx_student

        return load_onnx_student(path)
    return load_student(path)
