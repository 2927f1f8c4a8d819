"""Losses of sandwich supernet training.

- `AdaptiveAlphaDivergence` / `adaptive_alpha_divergence`: AlphaNet's adaptive α-divergence for in-place
  distillation (Wang et al., "AlphaNet: Improved Training of Supernets with Alpha-Divergence", ICML 2021;
  https://github.com/facebookresearch/AlphaNet `loss_ops.py`). For each sample it evaluates the α-divergence
  D_α(p‖q) of the student q from the teacher p at α_min and α_max and keeps the larger one; importance weights
  (p/q)^α are clipped at `iw_clip` in the gradient, exactly as the reference's surrogate does.
- `kl_distillation`: KL(p‖q) with an optional temperature (the plain in-place KD baseline).
- `soft_target_cross_entropy`: cross entropy against soft targets (teacher probabilities, mixup/cutmix labels).
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AdaptiveAlphaDivergence",
    "adaptive_alpha_divergence",
    "alpha_divergence",
    "kl_distillation",
    "soft_target_cross_entropy",
]


def _check_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise ValueError(
            "student and teacher logits must both have shape (batch, num_classes), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}."
        )


def alpha_divergence(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, alpha: float, iw_clip: float = 5.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample α-divergence D_α(p‖q) of the student `q` from the (detached) teacher `p`.

    Returns `(value, surrogate)`: `value` is the divergence (the reference's `loss`, no gradient), `surrogate` is a
    per-sample term whose gradient w.r.t. the student logits is the reference's clipped α-divergence gradient
    (the reference's `grad_loss`). α = 0 is KL(q‖p) and α = 1 is KL(p‖q).
    """
    _check_logits(student_logits, teacher_logits)
    if not (isinstance(iw_clip, numbers.Real) and math.isfinite(iw_clip) and iw_clip > 0):
        raise ValueError(f"iw_clip must be a finite positive number, got {iw_clip!r}.")
    if not (isinstance(alpha, numbers.Real) and math.isfinite(alpha)):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}.")
    student_logits = student_logits.float()
    q_log_prob = F.log_softmax(student_logits, dim=-1)
    with torch.no_grad():
        q_prob = q_log_prob.exp()
        p_prob = F.softmax(teacher_logits.detach().float(), dim=-1)
        importance_ratio = p_prob / q_prob
        if abs(alpha) < 1e-3:
            importance_ratio = importance_ratio.clamp(0, iw_clip)
            f = -importance_ratio.log()
            f_base = 0.0
            rho_f = importance_ratio.log() - 1.0
        elif abs(alpha - 1.0) < 1e-3:
            f = importance_ratio * importance_ratio.log()
            f_base = 0.0
            rho_f = importance_ratio
        else:
            iw_alpha = importance_ratio.pow(alpha).clamp(0, iw_clip)
            f = iw_alpha / alpha / (alpha - 1.0)
            f_base = 1.0 / alpha / (alpha - 1.0)
            rho_f = iw_alpha / alpha + f_base
        value = torch.sum(q_prob * (f - f_base), dim=-1)
        weight = q_prob * rho_f
    surrogate = -torch.sum(weight * q_log_prob, dim=-1)
    return value, surrogate


def adaptive_alpha_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    alpha_min: float = -1.0,
    alpha_max: float = 1.0,
    iw_clip: float = 5.0,
) -> torch.Tensor:
    """AlphaNet's adaptive α-divergence (mean over the batch): per sample, the larger of D_{α_min} and D_{α_max}.

    The returned scalar *equals* the mean selected divergence and *back-propagates* the reference's clipped
    gradient (its surrogate), so logged values are real divergences while training matches the reference.
    """
    _check_logits(student_logits, teacher_logits)
    if alpha_min > alpha_max:
        raise ValueError(f"alpha_min must not exceed alpha_max, got {alpha_min} > {alpha_max}.")
    if iw_clip <= 0:
        raise ValueError(f"iw_clip must be positive, got {iw_clip}.")
    value_left, surrogate_left = alpha_divergence(student_logits, teacher_logits, alpha_min, iw_clip)
    value_right, surrogate_right = alpha_divergence(student_logits, teacher_logits, alpha_max, iw_clip)
    pick_left = value_left > value_right
    value = torch.where(pick_left, value_left, value_right).mean()
    surrogate = torch.where(pick_left, surrogate_left, surrogate_right).mean()
    return value.detach() + (surrogate - surrogate.detach())


class AdaptiveAlphaDivergence(nn.Module):
    """Module form of `adaptive_alpha_divergence` (defaults: α in [−1, 1], importance-weight clip 5)."""

    def __init__(self, alpha_min: float = -1.0, alpha_max: float = 1.0, iw_clip: float = 5.0):
        super().__init__()
        if alpha_min > alpha_max:
            raise ValueError(f"alpha_min must not exceed alpha_max, got {alpha_min} > {alpha_max}.")
        self.alpha_min, self.alpha_max, self.iw_clip = alpha_min, alpha_max, iw_clip

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        return adaptive_alpha_divergence(student_logits, teacher_logits, self.alpha_min, self.alpha_max, self.iw_clip)

    def extra_repr(self) -> str:
        return f"alpha_min={self.alpha_min}, alpha_max={self.alpha_max}, iw_clip={self.iw_clip}"


def kl_distillation(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(p‖q) between the temperature-softened (detached) teacher p and student q, mean over the batch, scaled by
    T² (Hinton et al.) so gradients keep their magnitude across temperatures."""
    _check_logits(student_logits, teacher_logits)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    student_log_prob = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log_prob = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    kl = F.kl_div(student_log_prob, teacher_log_prob, reduction="batchmean", log_target=True)
    return kl * temperature**2


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross entropy −Σ t·log softmax(logits) against soft `targets` (rows summing to 1), mean over the batch.
    Integer class `targets` of shape (batch,) are accepted and one-hot encoded."""
    if targets.ndim == 1 and not targets.is_floating_point():
        return F.cross_entropy(logits.float(), targets)
    if targets.shape != logits.shape:
        raise ValueError(
            f"soft targets must have the logits' shape {tuple(logits.shape)}, got {tuple(targets.shape)}."
        )
    return torch.sum(-targets.float() * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
