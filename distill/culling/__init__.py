"""Cull stage: a trained student sorts a folder of photos into keep, pending and trash."""

from distill.culling.decide import DECISIONS, MODES, DecideOptions, decide
from distill.culling.run import JOURNAL, CullOptions, cull, describe

__all__ = ["DECISIONS", "JOURNAL", "MODES", "CullOptions", "DecideOptions", "cull", "decide",
           "describe"]
