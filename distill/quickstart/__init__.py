"""`distill quickstart`: the whole engine, offline and seeded, on photos installed packages ship."""

from distill.quickstart.run import SIZES, run_quickstart

__all__ = ["SIZES", "run_quickstart"]
