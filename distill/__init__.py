"""distill: pseudo-label photos with quality teachers, dedup with FAISS, distill a keep/trash
student. The Python API beside the CLI, with the commands' options:

    >>> import distill
    >>> distill.label(source="~/Pictures", teachers="offline", out="runs/photos")
    >>> distill.dedup("runs/photos")
    >>> distill.train(labels="runs/photos", student="tiny", out="runs/student")
    >>> distill.cull("~/Pictures/2026", "runs/student/student.pt", options=distill.CullOptions())

Names load on first use, so `import distill` (and `distill --help`) stays light.
"""

__version__ = "0.1.0"

_API = {
    "label": "distill.labeling", "fuse": "distill.labeling", "calibrate": "distill.labeling",
    "score": "distill.labeling", "dedup": "distill.deduplication", "train": "distill.training",
    "export": ("distill.training", "export_student"), "bench": ("distill.benchmarking", "run_bench"),
    "BenchOptions": "distill.benchmarking", "cull": "distill.culling",
    "CullOptions": "distill.culling", "DecideOptions": "distill.culling",
}
__all__ = ["BenchOptions", "CullOptions", "DecideOptions", "__version__", "bench", "calibrate",
           "cull", "dedup", "export", "fuse", "label", "score", "train"]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'distill' has no attribute {name!r}")
    import importlib

    module, attribute = _API[name] if isinstance(_API[name], tuple) else (_API[name], name)
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value
