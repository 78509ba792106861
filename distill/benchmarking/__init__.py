"""Bench stage: a teacher or a student against human scores (AVA, EVA, KonIQ-10k, a CSV) or a
labeling run's teachers (fused quality; the faces teacher's columns for a student's aux heads)."""

from distill.benchmarking.predict import TeacherPredictor, load_predictor
from distill.benchmarking.run import BenchOptions, compare_reports, default_out_dir, run_bench

__all__ = ["BenchOptions", "TeacherPredictor", "compare_reports", "default_out_dir",
           "load_predictor", "run_bench"]
