"""The distillation objective on a student's three heads, as a configurable weighted mix.

- quality: Huber (or MSE) to the fused teacher quality (1–10);
- keep: BCE with soft targets on keep_prob, both logits softened by a temperature;
- rating: EMD (r = 2) between rating histograms, on rows that have one (NIMA's `dist_nima`);
- rank: a pairwise hinge that orders the batch by label quality;
- aux: Huber on the auxiliary targets (e.g. the faces teacher's face_* columns), standardised,
  each on the rows that have it (a photo without faces has no face_min_eyes_open).

Every term is weighted per sample by teacher agreement (`confidence`). The ranking term is
what stops a regressor on AVA-like labels (most scores near the mean) from collapsing to the
mean: see `rank_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distill.errors import ConfigError


@dataclass
class LossConfig:
    regression: str = "huber"  # huber | mse, on quality (1–10)
    huber_delta: float = 1.0
    quality: float = 1.0  # weight of the regression term
    keep: float = 0.5  # weight of soft-target BCE on keep_prob
    keep_temperature: float = 2.0  # softens both logits (Hinton et al.); the term is scaled by T²
    rating: float = 0.5  # weight of EMD on rating histograms (rows that have one)
    rank: float = 1.0  # weight of the pairwise ranking hinge
    # weight of the aux-target Huber; 0.2 beat 0.5 on eyes and quality on two seeds
    # (benchmarks/student_faces.py)
    aux: float = 0.2
    rank_min_gap: float = 0.05  # pairs closer than this in label quality are ties: skipped
    confidence_weighting: bool = True  # weight samples by teacher agreement
    min_weight: float = 0.1  # floor, so no sample is ignored entirely

    def __post_init__(self):
        if self.regression not in ("huber", "mse"):
            raise ConfigError(f"loss.regression must be huber or mse, got {self.regression!r}")
        if self.keep_temperature <= 0:
            raise ConfigError("loss.keep_temperature must be > 0")



def sample_weights(confidence: torch.Tensor, config: LossConfig) -> torch.Tensor:
    if not config.confidence_weighting:
        return torch.ones_like(confidence)
    return confidence.clamp(min=config.min_weight, max=1.0)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).sum() / weights.sum().clamp(min=1e-8)


def keep_loss(logit: torch.Tensor, keep_prob: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample BCE between temperature-softened student and teacher keep probabilities."""
    teacher_logit = torch.logit(keep_prob.clamp(1e-4, 1 - 1e-4))
    soft_target = torch.sigmoid(teacher_logit / temperature)
    bce = F.binary_cross_entropy_with_logits(logit / temperature, soft_target, reduction="none")
    return bce * temperature**2


def emd_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample EMD (r = 2) between rating histograms, as NIMA (Talebi & Milanfar 2018)."""
    cdf_gap = torch.cumsum(torch.softmax(logits, dim=1), 1) - torch.cumsum(target, 1)
    return cdf_gap.pow(2).mean(dim=1).clamp(min=1e-12).sqrt()


def rank_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
              min_gap: float) -> torch.Tensor:
    """Pairwise hinge: for every pair whose labels differ by Δ > min_gap, the prediction of
    the better one must exceed the other's by at least Δ. It pays the same per mis-ordered
    pair wherever the pair sits on the scale, so the crowded middle is ordered too, and it
    resists shrinking predictions towards the mean (a collapsed model pays Δ on every pair)."""
    label_gap = target[:, None] - target[None, :]
    pred_gap = pred[:, None] - pred[None, :]
    pairs = (label_gap > min_gap).float() * weights[:, None] * weights[None, :]
    return (F.relu(label_gap - pred_gap) * pairs).sum() / pairs.sum().clamp(min=1e-8)


def distillation_loss(out: dict, batch: dict, config: LossConfig):
    """The weighted mix; returns (total, {term: value}). Every head enters the graph (with
    weight 0 if unused), so DDP never sees parameters without gradients."""
    weights = sample_weights(batch["confidence"], config)
    quality_weights = weights * batch["has_quality"].float()  # a human keep/trash has no score
    quality = out["quality"].float()
    if config.regression == "huber":
        regression = F.huber_loss(quality, batch["quality"], delta=config.huber_delta,
                                  reduction="none")
    else:
        regression = F.mse_loss(quality, batch["quality"], reduction="none")
    terms = {
        "quality": weighted_mean(regression, quality_weights),
        "keep": weighted_mean(keep_loss(out["keep_logit"].float(), batch["keep_prob"],
                                        config.keep_temperature), weights),
        "rank": rank_loss(quality, batch["quality"], quality_weights, config.rank_min_gap),
    }
    if "rating_logits" in out:
        has = batch["has_rating"].float() * weights
        emd = emd_loss(out["rating_logits"].float(), batch["rating"])
        terms["rating"] = weighted_mean(emd, has)
    if "aux" in out:  # not confidence-weighted: teacher agreement is about quality
        has = batch["has_aux"].float()
        huber = F.huber_loss(out["aux"].float(), batch["aux"], reduction="none")
        terms["aux"] = (huber * has).sum() / has.sum().clamp(min=1.0)
    total = sum(getattr(config, name) * value for name, value in terms.items())
    return total, {name: float(value.detach()) for name, value in terms.items()}
