"""People in the loop: a review queue and its labels back, an audit gallery of the
pseudo-labels, and human labels as label runs (AVA's votes, a photographer's sidecar picks)."""

from distill.review.active import build_queue, import_labels, select
from distill.review.audit import build_audit
from distill.review.human import ava_to_labels, pick_from_sidecar, xmp_to_labels

__all__ = ["ava_to_labels", "build_audit", "build_queue", "import_labels", "pick_from_sidecar",
           "select", "xmp_to_labels"]
