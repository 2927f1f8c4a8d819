"""The gradient-conflict sweep of the paper's Table 4 (and Table 7): for a saved supernet, go through a dataset and
count, per parameter tensor ("layer"), how often the supernet gradient and the summed subnet gradient point against
each other (negative cosine), before and after the gradient combination.

Each batch runs one sandwich step's forward and backward passes exactly as training does (same augmentation,
regularisation, teacher, archs drawn by an `ArchSampler`), then `SandwichTrainer.measure_conflicts` instead of the
optimizer step: the weights never change. BatchNorm runs on batch statistics as in training; its running statistics
are restored afterwards. After combination a cosine counts as a conflict below -1e-3 (`AFTER_COMBINATION_TOLERANCE`:
the projection with the reference's eps leaves round-off residues). The overall ratio is the share of negative cosines among all (tensor, batch) pairs where both
gradients are present and non-zero: the quantity `SandwichStepOutput.conflict_ratio` reports per step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from .gradients import AFTER_COMBINATION_TOLERANCE
from .sandwich import ArchSampler, SandwichTrainer

__all__ = ["ConflictSweep", "sweep_gradient_conflicts"]


@dataclass
class ConflictSweep:
    """Counts over the swept batches, one entry per parameter tensor."""

    names: list[str]
    negative_before: torch.Tensor
    negative_after: torch.Tensor
    defined_before: torch.Tensor
    defined_after: torch.Tensor
    num_batches: int
    num_images: int

    @staticmethod
    def _ratio(negative: torch.Tensor, defined: torch.Tensor) -> float:
        total = int(defined.sum())
        return float(negative.sum()) / total if total else float("nan")

    @property
    def ratio_before(self) -> float:
        return self._ratio(self.negative_before, self.defined_before)

    @property
    def ratio_after(self) -> float:
        return self._ratio(self.negative_after, self.defined_after)

    def per_layer(self) -> dict[str, dict[str, float]]:
        """{parameter name: {"before": ratio, "after": ratio, "batches": batches where it was defined}}, for the
        tensors that got both gradients at least once."""
        layers = {}
        for index, name in enumerate(self.names):
            defined = int(self.defined_before[index])
            if defined == 0:
                continue
            after_defined = int(self.defined_after[index])
            layers[name] = {
                "before": float(self.negative_before[index]) / defined,
                "after": float(self.negative_after[index]) / after_defined if after_defined else float("nan"),
                "batches": defined,
            }
        return layers

    def to_dict(self) -> dict[str, Any]:
        def clean(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "num_batches": self.num_batches,
            "num_images": self.num_images,
            "conflict_ratio_before": clean(self.ratio_before),
            "conflict_ratio_after": clean(self.ratio_after),
            "per_layer": {
                name: {key: clean(value) if isinstance(value, float) else value for key, value in entry.items()}
                for name, entry in self.per_layer().items()
            },
        }


def sweep_gradient_conflicts(
    trainer: SandwichTrainer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    sampler: ArchSampler,
    project: bool = True,
    teacher: torch.nn.Module | None = None,
    max_batches: int | None = None,
    batch_transform=None,
) -> ConflictSweep:
    """Sweep `batches` of (pixel_values, labels) through sandwich steps without optimizer steps.

    `sampler` draws each batch's archs (largest, smallest, random ones). `teacher` (e.g. a `TeacherEnsemble`) maps
    pixel values to the largest subnet's soft labels. `batch_transform` (e.g. timm Mixup) maps (pixels, labels) to
    (pixels, targets) first. `project=False` measures the plain sum (before the projection's start epoch: then
    "after" equals "before"). The model's weights, BN running statistics and active arch are unchanged afterwards.
    """
    module = trainer.module
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    was_training, active = module.training, module.active_arch
    size = len(trainer.parameters)
    counts = {key: torch.zeros(size, dtype=torch.long) for key in ("nb", "na", "db", "da")}
    names: list[str] = []
    num_batches = num_images = 0
    device = trainer.parameters[0].device
    combined = project and trainer.config.priority != "none"
    after_tolerance = AFTER_COMBINATION_TOLERANCE if combined else 0.0  # a plain sum: "after" is "before"
    module.train()
    try:
        for pixel_values, labels in batches:
            if max_batches is not None and num_batches >= max_batches:
                break
            pixel_values, labels = pixel_values.to(device), labels.to(device)
            targets = labels
            if batch_transform is not None:
                pixel_values, targets = batch_transform(pixel_values, labels)
            teacher_probs = teacher(pixel_values) if teacher is not None else None
            trainer.accumulate(pixel_values, targets, sampler.sample(), teacher_probs)
            conflicts = trainer.measure_conflicts(project=project)
            names = conflicts.names
            for cosines, negative, defined, tolerance in (
                (conflicts.before, "nb", "db", 0.0),
                (conflicts.after, "na", "da", after_tolerance),
            ):
                present = ~torch.isnan(cosines)
                counts[defined] += present.long()
                counts[negative] += (present & (cosines < -tolerance)).long()
            num_batches += 1
            num_images += int(pixel_values.shape[0])
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip(norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
        for param in trainer.parameters:
            param.grad = None
        module.set_active_subnet(active)
        module.train(was_training)
    if num_batches == 0:
        raise ValueError("the conflict sweep got no batches: check the dataset split and max_batches.")
    return ConflictSweep(
        names=names,
        negative_before=counts["nb"],
        negative_after=counts["na"],
        defined_before=counts["db"],
        defined_after=counts["da"],
        num_batches=num_batches,
        num_images=num_images,
    )
