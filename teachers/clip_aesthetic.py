"""CLIP aesthetic teacher: open_clip image embeddings, L2-normalised, into a LAION head.

Variants:
- `vit_l_14` (default): OpenAI CLIP ViT-L/14 + LAION "improved aesthetic predictor" MLP
  (`sac+logos+ava1-l14-linearMSE.pth`, trained on SAC + LAION-logos + AVA ratings).
- `vit_b_32`: OpenAI CLIP ViT-B/32 + LAION aesthetic predictor v1 linear head.

Precomputed embeddings (a LAION/clip-retrieval dump) are scored with `score_embeddings`
without loading the image tower at all.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import open_clip
import torch
from open_clip.factory import load_checkpoint
from PIL import Image
from torch import nn

from teachers import weights
from teachers.base import Teacher, TeacherOutput, TeacherSpec, library_versions, weights_record


@dataclass(frozen=True)
class Variant:
    arch: str  # open_clip model name
    clip_entry: str  # weights catalog keys
    head_entry: str
    head: str  # "mlp" | "linear"


VARIANTS = {
    "vit_l_14": Variant("ViT-L-14", "clip-vit-l-14-openai", "laion-aesthetic-mlp-l14", "mlp"),
    "vit_b_32": Variant("ViT-B-32", "clip-vit-b-32-openai", "laion-aesthetic-linear-b32", "linear"),
}


class ImprovedAestheticMLP(nn.Module):
    """The LAION improved aesthetic predictor's head, key for key (`layers.N.*`).

    It has no activations between its linear layers: that is how it was trained.
    """

    def __init__(self, dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings)


def build_head(kind: str, dim: int) -> nn.Module:
    return ImprovedAestheticMLP(dim) if kind == "mlp" else nn.Linear(dim, 1)


def load_head(kind: str, dim: int, path: str | os.PathLike) -> nn.Module:
    head = build_head(kind, dim)
    state = torch.load(path, map_location="cpu", weights_only=True)
    head.load_state_dict(state.get("params", state) if isinstance(state, dict) else state)
    return head.eval()


def l2_normalise(embeddings: torch.Tensor) -> torch.Tensor:
    return nn.functional.normalize(embeddings.float(), p=2, dim=-1)


class ClipAestheticTeacher(Teacher):
    batch_size = 16

    def __init__(self, variant: str, model: nn.Module | None, preprocess, head: nn.Module,
                 weight_files: list[dict], device: str = "cpu"):
        self.variant = variant
        self.model = None if model is None else model.eval().to(device)
        self.preprocess = preprocess
        self.head = head.eval().to(device)
        self.device = device
        self._weights = weight_files
        size = getattr(model.visual, "image_size", 224) if model is not None else 224
        self.spec = TeacherSpec(
            "clip_aesthetic", higher_is_better=True, score_range=(1.0, 10.0),
            input_size=size[0] if isinstance(size, tuple | list) else int(size),
            description=f"LAION aesthetic {('MLP' if VARIANTS.get(variant, VARIANTS['vit_l_14']).head == 'mlp' else 'linear')} "
            f"head on open_clip {variant} image embeddings",
        )

    @torch.inference_mode()
    def score_embeddings(self, embeddings: np.ndarray) -> TeacherOutput:
        """Score precomputed CLIP image embeddings (N, D); they are L2-normalised here."""
        normed = l2_normalise(torch.as_tensor(np.asarray(embeddings, dtype=np.float32)))
        scores = self.head(normed.to(self.device)).reshape(-1)
        return TeacherOutput(scores=scores.double().cpu().numpy(),
                             embeddings=normed.cpu().numpy().astype(np.float32))

    @torch.inference_mode()
    def _score_batch(self, images: Sequence[Image.Image]) -> TeacherOutput:
        if self.model is None:
            raise RuntimeError("this clip_aesthetic teacher was built for embeddings only")
        batch = torch.stack([self.preprocess(image) for image in images]).to(self.device)
        return self.score_embeddings(self.model.encode_image(batch).float().cpu().numpy())

    def provenance(self) -> dict:
        return {
            "teacher": self.name,
            "variant": self.variant,
            "weights": self._weights,
            "libraries": library_versions("open_clip_torch", "pyiqa"),
        }


def create_clip_aesthetic(
    variant: str = "vit_l_14",
    arch: str | None = None,
    head: str | None = None,
    clip_weights: str | None = None,
    head_weights: str | None = None,
    embeddings_only: bool = False,
    weights_dir: str | None = None,
    device: str = "cpu",
) -> Teacher:
    """LAION aesthetic head on open_clip embeddings (ViT-L/14 MLP or ViT-B/32 linear); ~1-10.

    `arch`/`head` override the variant (e.g. a tiny open_clip config in tests);
    `clip_weights`/`head_weights` name files directly instead of the weights catalog."""
    if variant not in VARIANTS:
        from distill.errors import ConfigError

        raise ConfigError(f"clip_aesthetic: unknown variant {variant!r}; choose from {sorted(VARIANTS)}")
    chosen = VARIANTS[variant]
    # The variants' OpenAI checkpoints were trained with QuickGELU, which open_clip only
    # switches on for its "openai" tag, not for a file path; an explicit arch is taken as is.
    quick_gelu = arch is None
    arch, head_kind = arch or chosen.arch, head or chosen.head

    head_path, head_sha = weights.locate(head_weights, chosen.head_entry, weights_dir)
    records = [weights_record(head_path, head_sha)]
    model = preprocess = None
    if embeddings_only:
        dim = torch.load(head_path, map_location="cpu", weights_only=True)
        dim = next(v for k, v in dim.items() if k.endswith("weight")).shape[1]
    else:
        clip_path, clip_sha = weights.locate(clip_weights, chosen.clip_entry, weights_dir)
        records.insert(0, weights_record(clip_path, clip_sha))
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=None, force_quick_gelu=quick_gelu, device="cpu"
        )
        # weights_only=False: the OpenAI files are TorchScript archives. Safe: sha256 recorded
        # and checked against the catalog by `distill weights verify`.
        load_checkpoint(model, str(clip_path), weights_only=False)
        dim = model.visual.output_dim
    return ClipAestheticTeacher(variant, model, preprocess, load_head(head_kind, dim, head_path),
                                records, device)
