"""Label stage: teachers over a pool into a resumable run folder, re-fusing and calibrating its
labels, and ad-hoc scores of files (`distill score`)."""

from distill.labeling.calibrate import calibrate, fit_fusion, save_fusion
from distill.labeling.fusion import apply_fusion, fuse, fuse_run
from distill.labeling.run import decode_workers, label, run_label, score_workers
from distill.labeling.score import ScoreResult, build_teachers, score, score_paths
from distill.labeling.shards import threaded_batches

__all__ = ["ScoreResult", "apply_fusion", "build_teachers", "calibrate", "decode_workers",
           "fit_fusion", "fuse", "fuse_run", "label", "run_label", "save_fusion", "score",
           "score_paths", "score_workers", "threaded_batches"]
