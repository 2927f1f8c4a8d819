"""The sandwich step of NASViT supernet training (paper Section 3 and Appendix C.1, Algorithm 1).

Each optimizer step:
1. the largest subnet is trained on the labels (hard, or soft mixup/cutmix labels), or on an external teacher's soft
   labels when one is given; its gradient g_sup is kept aside;
2. the smallest subnet and `num_random_subnets` random subnets are distilled from the largest subnet's *detached*
   logits (adaptive α-divergence by default); their gradients are summed into g_sub;
3. with several processes, g_sup and g_sub are all-reduced separately (the backward passes run without DDP's own
   synchronisation), so every rank combines the same averaged gradients; BN running statistics are averaged too;
4. g_sub is clipped to a global norm (the reference clips the subnet gradient), the conflict ratio is measured, the
   two are combined (`combine_gradients`: projection "sub" / "sup" or plain sum) and the optimizer steps.

Regularisation (drop path, DropConnect, dropout) applies to the largest subnet only, as in AlphaNet and the
reference. A step whose losses or gradients are not finite is skipped: weights and optimizer state stay untouched.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import nn

from ..config_system import check_field_ranges
from ..models.search_space_nasvit import sample_arch
from .gradients import (
    AFTER_COMBINATION_TOLERANCE,
    GRANULARITIES,
    PRIORITIES,
    _dots_and_norms,
    all_reduce_gradients,
    combine_gradients,
    combined_pair_stats,
    conflict_ratio,
    gradient_cosines,
)
from .losses import adaptive_alpha_divergence, kl_distillation, soft_target_cross_entropy

__all__ = [
    "SUBNET_SAMPLING",
    "ArchSampler",
    "GradientConflicts",
    "SandwichConfig",
    "SandwichStepOutput",
    "SandwichTrainer",
    "sample_arch",
    "set_regularization",
    "unwrap_model",
]

DISTILL_LOSSES = ("alpha_divergence", "kl")


@dataclass
class SandwichConfig:
    """Settings of the sandwich step (defaults: the reference recipe)."""

    num_random_subnets: int = 2
    distill_loss: str = "alpha_divergence"
    alpha_min: float = -1.0
    alpha_max: float = 1.0
    iw_clip: float = 5.0
    kd_temperature: float = 1.0
    priority: str = "sub"
    granularity: str = "tensor"
    max_projection_coefficient: float | None = 2.0
    projection_eps: float = 1e-6
    max_grad_norm: float | None = 1.0
    drop_path_rate: float = 0.0
    drop_connect_rate: float = 0.0
    dropout: float = 0.0

    # The training config's keys for the fields it names differently; every other field is read under its own name.
    TRAINING_CONFIG_KEYS: ClassVar[dict[str, str]] = {
        "priority": "gradient_priority",
        "granularity": "gradient_granularity",
    }

    @classmethod
    def from_training_config(cls, config: Any) -> SandwichConfig:
        """The sandwich settings of a `TrainingConfig` (derived from its fields, never copied by hand)."""
        values = {}
        for item in fields(cls):
            key = cls.TRAINING_CONFIG_KEYS.get(item.name, item.name)
            if hasattr(config, key):
                values[item.name] = getattr(config, key)
        return cls(**values)

    # The range of every number field (`nasvit_hf.config_system.check_field_ranges`; floats must also be finite).
    FIELD_RANGES: ClassVar[dict[str, str]] = {
        "num_random_subnets": "[0, 1024]",
        "iw_clip": "(0, inf)",
        "kd_temperature": "(0, inf)",
        "max_projection_coefficient": "[0, inf)",
        "projection_eps": "[0, inf)",
        "max_grad_norm": "(0, inf)",
        "drop_path_rate": "[0, 1)",
        "drop_connect_rate": "[0, 1)",
        "dropout": "[0, 1)",
    }

    def __post_init__(self):
        check_field_ranges(self)
        if self.distill_loss not in DISTILL_LOSSES:
            raise ValueError(f"distill_loss must be one of {list(DISTILL_LOSSES)}, got {self.distill_loss!r}.")
        if self.priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {list(PRIORITIES)}, got {self.priority!r}.")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {list(GRANULARITIES)}, got {self.granularity!r}.")
        if self.alpha_min > self.alpha_max:
            raise ValueError(f"alpha_min must not exceed alpha_max, got {self.alpha_min} > {self.alpha_max}.")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DDP / accelerate / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


SUBNET_SAMPLING = ("synchronized", "per_rank")


class ArchSampler:
    """Draws the archs of each sandwich step: largest, smallest, then `num_random` random archs. Checkpointable.

    `sampling="synchronized"`: one generator seeded with `seed`, the same on every rank, so all ranks train the same
    random subnets in a step. `"per_rank"` (the reference: its workers draw from unsynchronised RNGs): process `rank`
    draws its own archs, the n-th draw from a generator seeded with (seed, rank, n), so the ranks train different
    random subnets and their gradients are averaged. Either way the state (the generator, or the draw count, the same
    on every rank) is all a resume needs, whichever process saves it."""

    def __init__(self, config, num_random: int = 2, seed: int = 0, sampling: str = "synchronized", rank: int = 0):
        for name, value in (("num_random", num_random), ("seed", seed), ("rank", rank)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"ArchSampler {name} must be a non-negative integer, got {value!r}.")
        if sampling not in SUBNET_SAMPLING:
            raise ValueError(f"subnet sampling must be one of {list(SUBNET_SAMPLING)}, got {sampling!r}.")
        self.search_space = config.search_space
        self.largest = config.largest_arch()
        self.smallest = config.smallest_arch()
        self.num_random = num_random
        self.seed = seed
        self.sampling = sampling
        self.rank = rank
        self.draws = 0
        self.generator = torch.Generator().manual_seed(seed)

    def _generator(self) -> torch.Generator:
        if self.sampling == "synchronized":
            return self.generator
        import numpy as np

        state = np.random.SeedSequence([self.seed, self.rank, self.draws]).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(state) % (2**63 - 1))

    def sample(self) -> list[tuple[str, dict[str, Any]]]:
        generator = self._generator()
        self.draws += 1
        archs = [("largest", self.largest), ("smallest", self.smallest)]
        archs += [(f"random{i}", sample_arch(self.search_space, generator)) for i in range(self.num_random)]
        return archs

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "num_random": self.num_random,
            "generator": self.generator.get_state(),
            "sampling": self.sampling,
            "draws": self.draws,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sampling = state.get("sampling", "synchronized")  # checkpoints before the choice existed: synchronized
        if sampling != self.sampling:
            raise ValueError(
                f"the checkpoint's arch sampler drew {sampling!r} subnets, this run asks for {self.sampling!r}: resume "
                f"with subnet_sampling: {sampling}."
            )
        self.seed = state["seed"]
        self.num_random = state["num_random"]
        self.generator.set_state(state["generator"])
        self.draws = int(state.get("draws", 0))


def set_regularization(model: nn.Module, drop_path_rate: float, drop_connect_rate: float, dropout: float) -> None:
    """Set drop path (transformer branches), DropConnect (MBConv branches) and classifier dropout in place."""
    from ..models.modeling_nasvit import NASViTMBConvBlock, NASViTTransformerLayer

    for module in unwrap_model(model).modules():
        if isinstance(module, NASViTTransformerLayer):
            module.drop_prob = drop_path_rate
        elif isinstance(module, NASViTMBConvBlock):
            module.drop_prob = drop_connect_rate
        elif isinstance(module, nn.Dropout):
            module.p = dropout


@dataclass
class SandwichStepOutput:
    """What one optimizer step did (all floats are plain Python numbers, identical on every rank)."""

    losses: dict[str, float]
    archs: list[tuple[str, dict[str, Any]]]
    conflict_ratio: float
    sup_grad_norm: float
    sub_grad_norm: float
    projected: bool
    skipped: bool
    skip_reason: str = ""
    conflict_ratio_after: float = float("nan")  # between the two gradients as combined (0 where projection removed it)


@dataclass
class GradientConflicts:
    """Per-parameter-tensor cosines between the supernet and the subnet gradient of one sandwich step, before and
    after combination (NaN where a tensor has no or a zero gradient). `names[i]` is parameter i's name."""

    names: list[str]
    before: torch.Tensor
    after: torch.Tensor


def _global_norm(grads, grad_scale: float = 1.0) -> float:
    norms = [g.detach().float().norm() for g in grads if g is not None]
    return float(torch.stack(norms).norm()) / grad_scale if norms else 0.0


class SandwichTrainer:
    """Runs sandwich steps on a NASViT supernet (optionally wrapped in DDP), one optimizer step over one or more
    micro-batches: call `accumulate` once per micro-batch, then `step`.

    Args:
        model: the supernet, or its DDP wrapper (its backward passes then run under `no_sync`; the two gradient
            sums are all-reduced explicitly in `step`).
        config: a `SandwichConfig`.
        backward: how to back-propagate a loss (e.g. `accelerator.backward`, which applies fp16 loss scaling).
    """

    def __init__(
        self, model: nn.Module, config: SandwichConfig, backward: Callable[[torch.Tensor], None] | None = None
    ):
        self.model = model
        self.module = unwrap_model(model)
        self.config = config
        self.backward = backward or (lambda loss: loss.backward())
        self.parameters = [p for p in self.module.parameters() if p.requires_grad]
        self._reset_buffers()

    def _reset_buffers(self) -> None:
        self.sup_grads: list[torch.Tensor | None] = [None] * len(self.parameters)
        self.sub_grads: list[torch.Tensor | None] = [None] * len(self.parameters)
        self.num_micro_batches = 0
        self.loss_sums: dict[str, torch.Tensor] = {}
        self.archs: list[tuple[str, dict[str, Any]]] = []

    def _sync_context(self):
        no_sync = getattr(self.model, "no_sync", None)
        return no_sync() if callable(no_sync) else contextlib.nullcontext()

    def _harvest(self, into: list[torch.Tensor | None]) -> None:
        """Move the parameters' .grad into a gradient buffer (adding) and clear .grad."""
        for index, param in enumerate(self.parameters):
            grad = param.grad
            if grad is None:
                continue
            # The buffer takes the .grad tensor itself (no copy); later micro-batches add into it.
            into[index] = grad.detach() if into[index] is None else into[index].add_(grad)
            param.grad = None

    def distillation_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        config = self.config
        if config.distill_loss == "kl":
            return kl_distillation(student_logits, teacher_logits, config.kd_temperature)
        return adaptive_alpha_divergence(
            student_logits, teacher_logits, config.alpha_min, config.alpha_max, config.iw_clip
        )

    def _record(self, name: str, loss: torch.Tensor) -> torch.Tensor:
        # Kept on the device: one host sync per optimizer step (in `step`), not one per forward.
        value = loss.detach().float()
        self.loss_sums[name] = self.loss_sums[name] + value if name in self.loss_sums else value
        return value

    def accumulate(
        self,
        pixel_values: torch.Tensor,
        targets: torch.Tensor,
        archs: list[tuple[str, dict[str, Any]]],
        teacher_probs: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Forward and backward every arch of the sandwich on one micro-batch; gradients go to the two buffers.

        `archs`: [(name, arch)], the largest first (e.g. from `ArchSampler.sample`). `targets`: class indices or
        soft labels (mixup/cutmix). `teacher_probs`: an external teacher's probabilities for the largest subnet.
        Returns this micro-batch's losses (detached 0-d tensors).
        """
        if not archs or archs[0][0] != "largest":
            raise ValueError("archs must start with the largest subnet, named 'largest' (use ArchSampler.sample()).")
        config, module = self.config, self.module
        self.archs = archs
        losses: dict[str, torch.Tensor] = {}
        if any(param.grad is not None for param in self.parameters):
            raise RuntimeError("parameters hold gradients from outside the sandwich step; zero them first.")
        with self._sync_context():
            module.set_active_subnet(archs[0][1])
            set_regularization(module, config.drop_path_rate, config.drop_connect_rate, config.dropout)
            logits = self.model(pixel_values=pixel_values).logits
            target = teacher_probs if teacher_probs is not None else targets
            loss = soft_target_cross_entropy(logits, target)
            losses["largest"] = self._record("largest", loss)
            self.backward(loss)
            self._harvest(self.sup_grads)
            teacher_logits = logits.detach()
            del logits, loss
            set_regularization(module, 0.0, 0.0, 0.0)
            for name, arch in archs[1:]:
                module.set_active_subnet(arch)
                student_logits = self.model(pixel_values=pixel_values).logits
                loss = self.distillation_loss(student_logits, teacher_logits)
                losses[name] = self._record(name, loss)
                self.backward(loss)
                del student_logits, loss
            self._harvest(self.sub_grads)
        module.set_active_subnet(archs[0][1])
        self.num_micro_batches += 1
        return losses

    @torch.no_grad()
    def _average_buffers(self) -> None:
        """Average floating-point buffers (BN running statistics) over processes, so every rank holds the same
        model state after each step (DDP only broadcasts rank 0's buffers at the next forward)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        world = torch.distributed.get_world_size()
        buffers = [b for b in self.module.buffers() if b.is_floating_point()]
        if world == 1 or not buffers:
            return
        flat = torch.cat([b.reshape(-1).float() for b in buffers])
        torch.distributed.all_reduce(flat)
        flat /= world
        offset = 0
        for buffer in buffers:
            buffer.copy_(flat[offset : offset + buffer.numel()].view_as(buffer))
            offset += buffer.numel()

    def _reduce(self) -> tuple[dict[str, float], bool, list, list, list]:
        """All-reduce and average the accumulated gradients and losses; empties the buffers. Returns (losses,
        non-finite loss on some rank, sup grads, sub grads, archs)."""
        if self.num_micro_batches == 0:
            raise RuntimeError("step() called before accumulate().")
        count = self.num_micro_batches
        names = list(self.loss_sums)
        values = (torch.stack([self.loss_sums[name] for name in names]) / count).tolist()
        losses = dict(zip(names, values))
        losses["total"] = sum(values)
        nonfinite = torch.tensor([float(not all(math.isfinite(v) for v in values))], device=self.parameters[0].device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(nonfinite)
        sup_grads, sub_grads = all_reduce_gradients([self.sup_grads, self.sub_grads], self.parameters)
        self._average_buffers()
        if count > 1:
            sup_grads = [g / count if g is not None else None for g in sup_grads]
            sub_grads = [g / count if g is not None else None for g in sub_grads]
        archs = self.archs
        self._reset_buffers()
        return losses, float(nonfinite) > 0, sup_grads, sub_grads, archs

    def _clip_sub(self, sub_grads: list, sub_norm: float) -> list:
        """Clip the subnet gradient to `max_grad_norm` (the reference clips the subnet gradient only)."""
        max_norm = self.config.max_grad_norm
        if max_norm is not None and sub_norm > max_norm:
            factor = max_norm / (sub_norm + 1e-6)
            sub_grads = [g.mul_(factor) if g is not None else None for g in sub_grads]
        return sub_grads

    def _combine(self, sup_grads, sub_grads, priority: str, stats):
        """`combine_gradients` with the config's settings and the pair's statistics `stats`; returns the combined
        gradients and the statistics of the pair as combined (`projected_pair`'s), for which only the projected
        tensors are read again (`combined_pair_stats`)."""
        coefficients: list[float] = []
        combined = combine_gradients(
            sup_grads,
            sub_grads,
            priority,
            self.config.granularity,
            self.config.max_projection_coefficient,
            self.config.projection_eps,
            _stats=stats,
            _coefficients_out=coefficients,
        )
        return combined, combined_pair_stats(stats, coefficients, sup_grads, sub_grads, combined, priority)

    @torch.no_grad()
    def measure_conflicts(self, project: bool = True, grad_scale: float = 1.0) -> GradientConflicts:
        """Instead of `step`: reduce and clip the accumulated gradients as `step` would, and return the per-tensor
        cosines before and after combination, without touching the weights (the gradient-conflict sweep of the
        paper's Table 4). Buffers are emptied; no optimizer step."""
        _, _, sup_grads, sub_grads, _ = self._reduce()
        sub_norm = _global_norm(sub_grads, grad_scale)
        if math.isfinite(sub_norm):
            sub_grads = self._clip_sub(sub_grads, sub_norm)
        priority = self.config.priority if project else "none"
        stats = _dots_and_norms(sup_grads, sub_grads)
        combined, after = self._combine(sup_grads, sub_grads, priority, stats)
        names = {id(param): name for name, param in self.module.named_parameters()}
        return GradientConflicts(
            names=[names[id(param)] for param in self.parameters],
            before=gradient_cosines(sup_grads, sub_grads, _stats=stats),
            after=gradient_cosines(sup_grads, sub_grads, _stats=after),
        )

    @torch.no_grad()
    def step(
        self,
        optimizer: torch.optim.Optimizer,
        project: bool = True,
        grad_scale: float = 1.0,
    ) -> SandwichStepOutput:
        """Reduce, clip, combine and apply the accumulated gradients; `optimizer.step()` unless not finite.

        `project=False` forces the plain sum (before the projection's start epoch). `grad_scale`: the loss scale
        of fp16 training (the gradients are still scaled; the clip threshold is scaled with them). The conflict
        ratio is reported before (`conflict_ratio`) and after (`conflict_ratio_after`) combination."""
        config = self.config
        losses, nonfinite, sup_grads, sub_grads, archs = self._reduce()
        sup_norm, sub_norm = _global_norm(sup_grads, grad_scale), _global_norm(sub_grads, grad_scale)
        reason = ""
        if nonfinite:
            reason = "non-finite loss"
        elif not (math.isfinite(sup_norm) and math.isfinite(sub_norm)):
            reason = "non-finite gradient"
        if reason == "non-finite gradient" and grad_scale != 1.0:
            # fp16: hand the overflowing gradients to the optimizer so its GradScaler skips the update and lowers
            # the loss scale (otherwise the scale would never come down).
            for param, sup, sub in zip(self.parameters, sup_grads, sub_grads):
                param.grad = sup if sub is None else (sub if sup is None else sup + sub)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return SandwichStepOutput(losses, archs, float("nan"), sup_norm, sub_norm, False, True, "fp16 overflow")
        if reason:
            optimizer.zero_grad(set_to_none=True)
            return SandwichStepOutput(losses, archs, float("nan"), sup_norm, sub_norm, False, True, reason)
        sub_grads = self._clip_sub(sub_grads, sub_norm)
        stats = _dots_and_norms(sup_grads, sub_grads)  # shared by the conflict ratio and the projection
        ratio = conflict_ratio(sup_grads, sub_grads, _stats=stats)
        priority = config.priority if project else "none"
        combined, after = self._combine(sup_grads, sub_grads, priority, stats)
        ratio_after = (
            ratio
            if priority == "none"
            else conflict_ratio(sup_grads, sub_grads, _stats=after, tolerance=AFTER_COMBINATION_TOLERANCE)
        )
        for param, grad in zip(self.parameters, combined):
            param.grad = grad
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return SandwichStepOutput(
            losses, archs, ratio, sup_norm, sub_norm, priority != "none", False, conflict_ratio_after=ratio_after
        )
