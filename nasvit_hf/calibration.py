"""BatchNorm recalibration: running statistics shared by all subnets are wrong for any single subnet, so before a
subnet is evaluated or extracted its statistics are reset and re-estimated on training images (the reference: 64
batches, cumulative average, model in train mode, no gradients)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping

import torch
from torch import nn

__all__ = ["calibrate_batchnorm", "preserved_batchnorm_statistics"]

logger = logging.getLogger(__name__)


def _pixel_values(batch) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        if "pixel_values" not in batch:
            raise ValueError(f"calibration batches must hold 'pixel_values', got keys {sorted(batch)}.")
        return batch["pixel_values"]
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise TypeError(f"cannot find pixel values in a batch of type {type(batch).__name__}.")


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, dataloader: Iterable, num_batches: int = 64) -> int:
    """Reset every BatchNorm's running statistics and re-estimate them as the cumulative average over
    `num_batches` batches of `dataloader` (dicts with `pixel_values`, tensors, or (images, labels) tuples) with the
    model's *current* active subnet. Drop path is off during calibration (train mode otherwise). The model's
    train/eval mode is restored. Returns the number of batches used.
    """
    if num_batches <= 0:
        raise ValueError(f"num_batches must be positive, got {num_batches}.")
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError("the model has no BatchNorm layers to calibrate.")
    was_training = model.training
    momenta = [norm.momentum for norm in norms]
    device = next(model.parameters()).device
    drop_states = []
    for module in model.modules():
        for attr in ("drop_prob",):
            if hasattr(module, attr):
                drop_states.append((module, attr, getattr(module, attr)))
                setattr(module, attr, 0.0)
    try:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative moving average
        model.train()
        used = 0
        for batch in dataloader:
            if used >= num_batches:
                break
            model(pixel_values=_pixel_values(batch).to(device))
            used += 1
        if used == 0:
            raise ValueError("the calibration dataloader yielded no batches.")
        if used < num_batches:
            logger.warning("BN calibration used %d batches (%d requested): the dataloader ran out", used, num_batches)
        return used
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        for module, attr, value in drop_states:
            setattr(module, attr, value)
        model.train(was_training)


@contextlib.contextmanager
def preserved_batchnorm_statistics(model: nn.Module):
    """Restore every BatchNorm's running statistics on exit: recalibrating a subnet to evaluate it (during training,
    in search or extraction) leaves the supernet's statistics as they were."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
        for m in norms
        if m.running_mean is not None
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip([m for m in norms if m.running_mean is not None], saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
