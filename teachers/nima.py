"""NIMA (Talebi & Milanfar 2018) through pyiqa, loading only the local weights file.

pyiqa's `NIMA.__init__` always builds its timm backbone with `pretrained=True`, so even when a
full checkpoint is given it first fetches ImageNet weights from the hub (pyiqa issue #195),
which hangs or fails offline. `OfflineNIMA` builds the same modules with `pretrained=False`
and then loads the full checkpoint; forward and preprocessing stay pyiqa's own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import timm
import torch
from PIL import Image
from pyiqa.archs.arch_util import load_pretrained_network
from pyiqa.archs.nima_arch import NIMA
from torch import nn
from torchvision.transforms import functional as TF

from teachers import weights
from teachers.base import Teacher, TeacherOutput, TeacherSpec, library_versions, weights_record

BACKBONES = {  # backbone → (catalog entry, input side)
    "inception_resnet_v2": ("nima-inception_resnet_v2-ava", 299),
    "vgg16": ("nima-vgg16-ava", 224),
}


class OfflineNIMA(NIMA):
    def __init__(self, base_model_name: str = "inception_resnet_v2", num_classes: int = 10,
                 checkpoint: str | os.PathLike | None = None):
        nn.Module.__init__(self)  # NIMA.__init__ would download; build the same modules here
        self.base_model = timm.create_model(base_model_name, pretrained=False, features_only=True)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.num_classes = num_classes
        in_channels = self.base_model.feature_info.channels()[-1]
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(p=0.0), nn.Linear(in_channels, num_classes), nn.Softmax(dim=-1)
        )
        self.default_mean = torch.Tensor(self.base_model.pretrained_cfg["mean"]).view(1, 3, 1, 1)
        self.default_std = torch.Tensor(self.base_model.pretrained_cfg["std"]).view(1, 3, 1, 1)
        if checkpoint is not None:
            load_pretrained_network(self, str(checkpoint), True, weight_keys="params")


class NimaTeacher(Teacher):
    batch_size = 16

    def __init__(self, net: OfflineNIMA, backbone: str, input_size: int, weight_files: list[dict],
                 device: str = "cpu"):
        self.spec = TeacherSpec(
            "nima", higher_is_better=True, score_range=(1.0, 10.0), input_size=input_size,
            description=f"NIMA ({backbone}) on AVA: mean of a 10-bin rating distribution, via pyiqa",
        )
        self.net = net.eval().to(device)
        self.device = device
        self.backbone = backbone
        self._weights = weight_files

    def _prepare(self, image: Image.Image) -> torch.Tensor:
        side = self.spec.input_size
        image = TF.center_crop(TF.resize(image, side, antialias=True), [side, side])
        return TF.to_tensor(image)

    @torch.inference_mode()
    def _score_batch(self, images: Sequence[Image.Image]) -> TeacherOutput:
        batch = torch.stack([self._prepare(image) for image in images]).to(self.device)
        mos, dist = self.net(batch, return_mos=True, return_dist=True)
        return TeacherOutput(
            scores=mos.reshape(-1).double().cpu().numpy(),
            distributions=dist.double().cpu().numpy(),
        )

    def provenance(self) -> dict:
        return {
            "teacher": self.name,
            "backbone": self.backbone,
            "weights": self._weights,
            "libraries": library_versions("pyiqa", "timm"),
        }


def create_nima(backbone: str = "inception_resnet_v2", weights_path: str | None = None,
                weights_dir: str | None = None, device: str = "cpu") -> Teacher:
    """NIMA on AVA via pyiqa (inception_resnet_v2 or vgg16); 1-10 plus a rating histogram."""
    if backbone not in BACKBONES:
        from distill.errors import ConfigError

        raise ConfigError(f"nima: unknown backbone {backbone!r}; choose from {sorted(BACKBONES)}")
    entry, input_size = BACKBONES[backbone]
    path, sha256 = weights.locate(weights_path, entry, weights_dir)
    net = OfflineNIMA(backbone, checkpoint=path)
    return NimaTeacher(net, backbone, input_size, [weights_record(path, sha256)], device)
