"""The classical teachers on a torch device: same-size images stacked in one tensor.

On a CUDA device BRISQUE, PIQE, NIQE and the technical measures run here, next to NIMA and
CLIP, instead of one image at a time on the CPU. A batch is split into groups of one size
(the arithmetic needs equal sizes; a pool of camera photos has few), each group is stacked as
(n, 3, H, W) uint8 on the device and scored in one pass. An image's score does not depend on
the other images of its group beyond float64 summation order.

What computes each score (`provenance()["computed_by"]` says it with the device):
- BRISQUE, PIQE: `teachers._torch_iqa`, the fast path's arithmetic in torch;
- NIQE: pyiqa's own torch module, which batches correctly (measured: a batch of the
  calibration images gives each image's one-at-a-time score bit for bit) and computes in
  float64, where its results do not depend on the convolution's summation order (measured:
  three orders agree to 3e-13);
- technical: `teachers._torch_technical`, the same exact integer sums as the OpenCV path.
A CPU device runs the same code (that is how the tests check it against the CPU paths).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from distill.decode import ORIGINAL_SIZE_KEY
from teachers import _fast_iqa, _torch_iqa, _torch_technical, technical
from teachers.base import Teacher, TeacherOutput, TeacherSpec, library_versions


@dataclass
class GroupScores:
    scores: np.ndarray  # (n,) float64, NaN where undefined
    reasons: list[str | None]  # why an image has no score (the CPU path's exception text)
    extras: dict[str, np.ndarray] = field(default_factory=dict)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def pixels_on(image, device: torch.device) -> torch.Tensor:
    """(3, H, W) uint8 RGB of a Pillow image or a `decode_device.DeviceImage`, on `device`."""
    pixels = getattr(image, "pixels", None)
    if pixels is None:
        rgb = np.array(image if image.mode == "RGB" else image.convert("RGB"))
        pixels = torch.from_numpy(rgb).permute(2, 0, 1)
    return pixels.to(device, non_blocking=True)


class BatchedTeacher(Teacher):
    """A teacher whose `score_group(batch, images)` scores (n, 3, H, W) uint8 on `device`."""

    batch_size = 256  # the label stage's batch arrives whole; groups are what is stacked
    per_process = False  # one process feeds the device
    takes_device_images = True
    parameter_count = 0  # as the CPU implementations count (BRISQUE's SVR is data)

    def __init__(self, spec: TeacherSpec, device: str | torch.device,
                 score_group: Callable[[torch.Tensor, Sequence], GroupScores],
                 weight_files: list[dict], computed_by: str, libraries: tuple[str, ...],
                 details: dict | None = None):
        self.spec = spec
        self.device = torch.device(device)
        self._score_group = score_group
        self._weights = weight_files
        self._computed_by = computed_by
        self._libraries = libraries
        self._details = details or {}

    @torch.inference_mode()
    def _score_batch(self, images: Sequence) -> TeacherOutput:
        pixels = [pixels_on(image, self.device) for image in images]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for index, tensor in enumerate(pixels):
            groups[tuple(tensor.shape)].append(index)
        scores = np.full(len(images), np.nan)
        errors: dict[int, str] = {}
        extras: dict[str, np.ndarray] = {}
        for members in groups.values():
            batch = torch.stack([pixels[i] for i in members])
            result = self._score_group(batch, [images[i] for i in members])
            scores[members] = result.scores
            for name, values in result.extras.items():
                extras.setdefault(name, np.full(len(images), np.nan))[members] = values
            for index, reason in zip(members, result.reasons):
                if reason is not None:
                    errors[index] = f"{self.name}: ValueError: {reason}"
        return TeacherOutput(scores=scores, extras=extras, errors=errors)

    def provenance(self) -> dict:
        return {
            "teacher": self.name,
            "weights": self._weights,
            "libraries": library_versions(*self._libraries),
            "implementation": "torch",
            "device": device_name(self.device),
            "computed_by": f"{self._computed_by}; batched by image size on "
                           f"{device_name(self.device)}",
            **self._details,
        }


def brisque_scorer(model: _torch_iqa.BrisqueBatch):
    def score(batch, images) -> GroupScores:
        return GroupScores(*model.score(batch))
    return score


def piqe_scorer(batch, images) -> GroupScores:
    return GroupScores(*_torch_iqa.piqe(batch))


def pyiqa_scorer(net: torch.nn.Module):
    """pyiqa's module on a batch: its input is to_tensor's [0, 1] floats, made with the fast
    path's table of the 256 levels (so on every device the same floats as on the CPU)."""
    def score(batch, images) -> GroupScores:
        levels = torch.from_numpy(_fast_iqa._LEVELS).to(batch.device)
        scores = net(levels[batch.int()]).reshape(-1).double().cpu().numpy()
        return GroupScores(scores, [None] * len(scores))
    return score


def technical_scorer(batch, images) -> GroupScores:
    working = _torch_technical.working_pixels(batch)
    rows, cols = working.shape[-2:]
    sums = _torch_technical.pixel_sums(working).cpu().tolist()
    raw = []
    for image, image_sums in zip(images, sums):
        width, height = image.info.get(ORIGINAL_SIZE_KEY, image.size)
        raw.append({**technical.measures_from_sums(dict(zip(technical.SUMS, image_sums)),
                                                    rows, cols),
                    "megapixels": width * height / 1e6})
    scores = [sum(technical.SUBSCORE_WEIGHTS[k] * v for k, v in technical.subscores(m).items())
              for m in raw]
    extras = {f"tech_{name}": np.array([m[name] for m in raw]) for name in technical.MEASURES}
    return GroupScores(np.asarray(scores, dtype=np.float64), [None] * len(raw), extras)
