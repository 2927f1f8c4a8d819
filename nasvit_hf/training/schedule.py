"""The optimiser's parameter groups (`build_param_groups`, timm's weight-decay rule; both training recipes) and
learning-rate schedules through transformers' `get_scheduler`, including the reference's warm-up from a small lr
and cosine decay to a minimum lr (`"cosine_warmup_with_min_lr"`: `warmup_lr_rate` and `min_lr_rate` are fractions
of the peak lr; `"cosine_with_min_lr"` warms up from lr / warm-up steps)."""

from __future__ import annotations

import logging
import numbers
from typing import Any

import torch
from torch import nn
from transformers import get_scheduler

__all__ = ["MIN_LR_SCHEDULERS", "build_lr_scheduler", "build_param_groups", "schedule_length"]

logger = logging.getLogger(__name__)

MIN_LR_SCHEDULERS = ("cosine_with_min_lr", "cosine_warmup_with_min_lr")


def schedule_length(num_warmup_steps: int, num_training_steps: int) -> int:
    """The length to give transformers' schedules: `num_training_steps`, or one step past the warm-up when the run
    ends inside it (`--max_steps` at or below the warm-up: transformers' polynomial decay then divides by zero). The
    run keeps its length and ends during the warm-up, which a warning says."""
    if num_warmup_steps < num_training_steps:
        return num_training_steps
    logger.warning(
        "the warm-up (%d steps) is not shorter than the run (%d steps): the learning rate only rises, the run ends "
        "before any decay; lower warmup_steps / warmup_epochs to have one.",
        num_warmup_steps,
        num_training_steps,
    )
    return num_warmup_steps + 1


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    num_warmup_steps: int,
    num_training_steps: int,
    min_lr_rate: float | None = None,
    warmup_lr_rate: float | None = None,
) -> torch.optim.lr_scheduler.LRScheduler:
    """`transformers.get_scheduler(name, ...)`, passing `min_lr_rate` (and, for "cosine_warmup_with_min_lr",
    `warmup_lr_rate`) to the schedules that take them; errors name a rate given to a schedule that ignores it."""
    for key, value, low in (("num_warmup_steps", num_warmup_steps, 0), ("num_training_steps", num_training_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{key} must be an integer >= {low}, got {value!r}.")
    kwargs: dict[str, float] = {}
    if name in MIN_LR_SCHEDULERS:
        if min_lr_rate is None:
            raise ValueError(
                f"lr_scheduler_type {name!r} needs min_lr_rate (the final lr as a fraction of the peak lr)."
            )
        if not 0.0 <= min_lr_rate < 1.0:
            raise ValueError(f"min_lr_rate must be in [0, 1), got {min_lr_rate}.")
        kwargs["min_lr_rate"] = float(min_lr_rate)
    elif min_lr_rate is not None:
        raise ValueError(f"min_lr_rate applies to lr_scheduler_type {list(MIN_LR_SCHEDULERS)}, not {name!r}.")
    if warmup_lr_rate is not None:
        if name != "cosine_warmup_with_min_lr":
            raise ValueError(f"warmup_lr_rate applies to lr_scheduler_type 'cosine_warmup_with_min_lr', not {name!r}.")
        if not 0.0 <= warmup_lr_rate <= 1.0:
            raise ValueError(f"warmup_lr_rate must be in [0, 1], got {warmup_lr_rate}.")
        kwargs["warmup_lr_rate"] = float(warmup_lr_rate)
    return get_scheduler(
        name, optimizer, num_warmup_steps=num_warmup_steps,
        num_training_steps=schedule_length(num_warmup_steps, num_training_steps),
        scheduler_specific_kwargs=kwargs or None,
    )  # fmt: skip


def build_param_groups(
    model: nn.Module,
    weight_decay: float,
    lr_multipliers: dict[str, float] | None = None,
    learning_rate: float | None = None,
    no_decay_for_norms_and_tables: bool = True,
) -> list[dict[str, Any]]:
    """Optimiser parameter groups, timm's way: parameters with one dimension (norms, biases) and those the model
    names in `no_weight_decay()` get no weight decay. `lr_multipliers` ({name prefix: factor}, with `learning_rate`)
    puts the parameters under a prefix in their own groups at `factor * learning_rate` (e.g. a decode head at 10x).
    Groups come in a fixed order (the rest first, then each prefix; decay before no decay); empty ones are dropped.
    With `no_decay_for_norms_and_tables=False` every parameter is decayed."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    multipliers = dict(lr_multipliers or {})
    if multipliers and learning_rate is None:
        raise ValueError("lr_multipliers need learning_rate (the base rate they multiply).")
    buckets: dict[tuple[str | None, bool], list[nn.Parameter]] = {}
    order = [None, *multipliers]
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        prefix = next((p for p in multipliers if name.startswith(p)), None)
        decayed = not no_decay_for_norms_and_tables or not (parameter.ndim <= 1 or name in skip)
        buckets.setdefault((prefix, decayed), []).append(parameter)
    groups = []
    for prefix in order:
        for decayed in (True, False):
            params = buckets.get((prefix, decayed))
            if not params:
                continue
            group: dict[str, Any] = {"params": params, "weight_decay": weight_decay if decayed else 0.0}
            if learning_rate is not None:
                group["lr"] = learning_rate * (multipliers[prefix] if prefix is not None else 1.0)
            groups.append(group)
    return groups
