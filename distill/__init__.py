"""distill: pseudo-label photos with quality teachers, dedup with FAISS, distill a keep/trash student."""

__version__ = "0.1.0"
