"""Train stage: distill a labeling run into a compact keep/trash student with Accelerate, and
export it (ONNX, TorchScript) with parity checks."""

from distill.training.config import (
    DataConfig,
    FunctionMatchingConfig,
    OptimConfig,
    StudentConfig,
    TrainConfig,
)
from distill.training.export import export_student
from distill.training.loop import quality_metrics, run_train
from distill.training.options import build_train_config, train

__all__ = ["DataConfig", "FunctionMatchingConfig", "OptimConfig", "StudentConfig",
           "TrainConfig", "build_train_config", "export_student", "quality_metrics",
           "run_train", "train"]
