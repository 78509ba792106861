"""Dedup stage: exact and near duplicates of a labeling run, and the benchmark leakage guard."""

from distill.deduplication.run import DEFAULT_THRESHOLD, dedup, run_dedup

__all__ = ["DEFAULT_THRESHOLD", "dedup", "run_dedup"]
