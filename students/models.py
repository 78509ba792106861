"""Student architectures: a backbone, ImageNet normalisation inside, and three small heads.

    quality       1–10 (the fused teacher scale), one linear unit
    keep_logit    log-odds of "keep", one linear unit
    rating_logits 10-bin rating histogram (NIMA-style), only when `rating_bins` > 0
    aux           auxiliary targets (label-shard columns such as face_min_eyes_open), one linear
                  unit each, only when `aux_targets` is given; standardised by the buffers
                  aux_mean and aux_std (the training rows' statistics): `aux_native` undoes it

Backbones come from timm, built without its hub. ImageNet-pretrained initialisation is read
from the weights folder (`teachers.weights.weights_dir()`) when a file is there:

    <weights_dir>/students/<backbone>.safetensors | .pth          e.g. students/resnet18.pth
    <weights_dir>/students/<timm_name>[._-]*.safetensors | .pth   e.g. students/
        mobilenetv3_small_100.lamb_in1k.safetensors (timm's hub file renamed), or
        mobilenetv3_small_100_lamb-266a294c.pth (timm's legacy release file)

and otherwise the backbone starts from random weights; `model.init` says which, and the
training log and model card repeat it. Nothing is ever downloaded. To make such a file on a
machine with internet:

    import timm, torch
    torch.save(timm.create_model("resnet18", pretrained=True).state_dict(), "resnet18.pth")
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from distill.errors import ConfigError
from students.preprocess import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

TIMM_NAMES = {
    "mobilenetv3_small": "mobilenetv3_small_100",
    "mobilenetv3_large": "mobilenetv3_large_100",
    "efficientnet_b0": "efficientnet_b0",
    "resnet18": "resnet18",
}
INITS = ("auto", "imagenet", "random")


class StudentNet(nn.Module):
    """Backbone → pooled features → quality, keep logit and (optionally) rating logits.

    Takes RGB in [0, 1] (N, 3, H, W); the ImageNet normalisation is a buffer here so that
    every exported runtime is fed the same simple input.
    """

    def __init__(self, backbone: nn.Module, features: int, rating_bins: int = 0,
                 dropout: float = 0.0, aux_targets: tuple[str, ...] | list[str] = ()):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.quality = nn.Linear(features, 1)
        self.keep = nn.Linear(features, 1)
        self.rating = nn.Linear(features, rating_bins) if rating_bins else None
        self.aux_targets = list(aux_targets)
        self.aux = nn.Linear(features, len(aux_targets)) if aux_targets else None
        if aux_targets:  # a student without aux targets has exactly its old state_dict
            self.register_buffer("aux_mean", torch.zeros(len(aux_targets)))
            self.register_buffer("aux_std", torch.ones(len(aux_targets)))
            nn.init.zeros_(self.aux.weight)  # starts at the training rows' mean
            nn.init.zeros_(self.aux.bias)
        nn.init.zeros_(self.quality.weight)
        nn.init.constant_(self.quality.bias, 5.5)  # start at the middle of the 1–10 scale
        self.init: dict = {"kind": "random"}  # set by the factory: what the backbone started from

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.dropout(self.backbone((images - self.mean) / self.std))
        out = {"quality": self.quality(features).squeeze(1),
               "keep_logit": self.keep(features).squeeze(1)}
        if self.rating is not None:
            out["rating_logits"] = self.rating(features)
        if self.aux is not None:
            out["aux"] = self.aux(features)
        return out

    def set_aux_scale(self, mean, std) -> None:
        """The training rows' mean and std of each aux target: the head predicts in their units."""
        with torch.no_grad():
            self.aux_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            self.aux_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def aux_native(self, aux: torch.Tensor) -> torch.Tensor:
        """Standardised aux predictions → the label columns' own units."""
        return aux * self.aux_std + self.aux_mean


class TinyCNN(nn.Module):
    """Strided conv blocks and a global average pool.

    `patch` is the first block's kernel and stride: 2 means a 3x3 stride-2 convolution like
    the others (`tiny`); 4 means non-overlapping 4x4 patches (`patch_cnn`), which keeps the
    pixel-level cues of sharpness and noise in a learned 48-tap filter bank while the
    full-resolution work, most of a small CNN's time on a CPU, drops 4x."""

    def __init__(self, widths=(16, 32, 64, 96), patch: int = 2):
        super().__init__()
        layers, channels = [], 3
        for index, width in enumerate(widths):
            kernel, stride, padding = (patch, patch, 0) if index == 0 and patch != 2 else (3, 2, 1)
            layers += [nn.Conv2d(channels, width, kernel, stride, padding, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = channels

    def forward(self, x):
        return self.features(x)


def pretrained_file(backbone: str, weights_dir: str | None = None) -> Path | None:
    """The ImageNet weights file for `backbone` in the weights folder, or None."""
    from teachers.weights import weights_dir as resolve_weights_dir

    folder = resolve_weights_dir(weights_dir) / "students"
    timm_name = TIMM_NAMES[backbone]
    candidates = [folder / f"{backbone}.{ext}" for ext in ("safetensors", "pth")]
    for pattern in (f"{timm_name}[._-]*.safetensors", f"{timm_name}[._-]*.pth"):
        candidates += sorted(folder.glob(pattern)) if folder.is_dir() else []
    return next((path for path in candidates if path.is_file()), None)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def load_imagenet(backbone_net: nn.Module, path: Path) -> dict:
    """Load a classifier checkpoint into a headless backbone; the classifier is dropped."""
    from teachers.weights import sha256_of

    own = backbone_net.state_dict()
    state = {k.removeprefix("module."): v for k, v in _read_state_dict(path).items()}
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = sorted(set(own) - set(usable))
    if missing:
        raise ConfigError(f"{path} does not fit this backbone: {len(missing)} tensors missing "
                          f"or mis-shaped, e.g. {missing[0]!r}")
    backbone_net.load_state_dict(usable)
    return {"kind": "imagenet", "file": str(path), "sha256": sha256_of(path)}


def build_student(backbone: str, *, init: str = "auto", rating_bins: int = 0,
                  dropout: float = 0.2, weights_dir: str | None = None,
                  aux_targets: tuple[str, ...] | list[str] = ()) -> StudentNet:
    """A timm backbone with the student heads. `init`: auto (ImageNet file if present, else
    random), imagenet (the file must exist), random."""
    import timm

    if init not in INITS:
        raise ConfigError(f"student init must be one of {', '.join(INITS)}, got {init!r}")
    net = timm.create_model(TIMM_NAMES[backbone], pretrained=False, num_classes=0)
    path = pretrained_file(backbone, weights_dir) if init != "random" else None
    if path is not None:
        record = load_imagenet(net, path)
        log.warning("student %s: ImageNet init from %s", backbone, path)
    elif init == "imagenet":
        from teachers.weights import weights_dir as resolve_weights_dir

        folder = resolve_weights_dir(weights_dir) / "students"
        raise ConfigError(f"student init imagenet: no {backbone}.pth/.safetensors or "
                          f"{TIMM_NAMES[backbone]}.*.pth/.safetensors in {folder}")
    else:
        reason = "asked for" if init == "random" else "no ImageNet file in the weights folder"
        record = {"kind": "random", "reason": reason}
        (log.info if init == "random" else log.warning)("student %s: RANDOM init (%s)",
                                                          backbone, reason)
    with torch.no_grad():  # timm's num_features is pre-head for MobileNetV3: ask the net
        features = net.eval()(torch.zeros(1, 3, 64, 64)).shape[1]
    model = StudentNet(net.train(), features, rating_bins, dropout, aux_targets)
    model.init = record
    return model


def _small_cnn(name: str, backbone: TinyCNN, rating_bins: int, dropout: float,
               init: str, aux_targets) -> StudentNet:
    if init == "imagenet":
        raise ConfigError(f"student {name} has no ImageNet weights; use init: random")
    model = StudentNet(backbone, backbone.num_features, rating_bins, dropout, aux_targets)
    model.init = {"kind": "random", "reason": f"{name} has no pretrained weights"}
    return model


def create_tiny(*, rating_bins: int = 0, dropout: float = 0.0, init: str = "random",
                weights_dir: str | None = None, aux_targets=()) -> StudentNet:
    """The tiny CNN student; it has no pretrained weights, so `init` must be random/auto."""
    return _small_cnn("tiny", TinyCNN(), rating_bins, dropout, init, aux_targets)


def create_patch_cnn(*, rating_bins: int = 0, dropout: float = 0.0, init: str = "random",
                     weights_dir: str | None = None, aux_targets=()) -> StudentNet:
    """A 4x4-patch stem and three 3x3 stride-2 blocks: the fastest student on a CPU."""
    return _small_cnn("patch_cnn", TinyCNN(widths=(24, 48, 96, 128), patch=4), rating_bins,
                      dropout, init, aux_targets)


def create_mobilenetv3_small(**opts) -> StudentNet:
    return build_student("mobilenetv3_small", **opts)


def create_mobilenetv3_large(**opts) -> StudentNet:
    return build_student("mobilenetv3_large", **opts)


def create_efficientnet_b0(**opts) -> StudentNet:
    return build_student("efficientnet_b0", **opts)


def create_resnet18(**opts) -> StudentNet:
    return build_student("resnet18", **opts)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, image_size: int = 224) -> int:
    """FLOPs of one forward pass at image_size² (torch's counter: 2 per multiply-add,
    convolutions and matmuls only)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, image_size, image_size))
    model.train(was_training)
    return int(counter.get_total_flops())
