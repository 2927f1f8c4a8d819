"""Subnet evaluation for search and export: BN recalibration on held-out training images, then top-1 on a split
that training never saw (paper, Appendix C.1: 5 images per class of the ImageNet train set; here the digits
`search` split by default).

Images are preprocessed once per resolution with the supernet's own image processor moved to that resolution
(`processor.at_resolution(r)`: the evaluation protocol the exported subnets will carry, e.g. the reference's
resize 256 → crop 224 → resize to r), or `NASViTImageProcessor.for_resolution(r)` without one, and kept as tensors for
the resolution in use, so ranking many subnets costs only their forward passes (evaluate candidates grouped by
resolution). Supernet BN statistics are restored after each candidate, so evaluation never changes the supernet.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..calibration import calibrate_batchnorm, preserved_batchnorm_statistics
from ..models.image_processing_nasvit import NASViTImageProcessor

__all__ = [
    "DataConfig",
    "EvaluationData",
    "ImageSet",
    "evaluate_subnet",
    "load_evaluation_data",
    "preserved_batchnorm_statistics",
    "top1_accuracy",
    "torch_threads",
]

logger = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """Where the calibration and ranking images come from.

    `dataset`: "digits" (the bundled demo data), "imagefolder" (with `data_dir`), or any `datasets.load_dataset`
    name or local path (`dataset_config` is its config name). `calibration_split` feeds BN recalibration (training
    images), `evaluation_split` ranks subnets (held out of training). `max_evaluation_samples` caps the ranking split
    (a seeded, class-stratified-by-shuffle subset), `calibration_batches * batch_size` images are drawn for
    calibration.
    """

    dataset: str = "digits"
    dataset_config: str | None = None
    data_dir: str | None = None
    calibration_split: str = "train"
    evaluation_split: str = "search"
    image_column: str = "image"
    label_column: str = "label"
    batch_size: int = 64
    calibration_batches: int = 64
    max_evaluation_samples: int | None = None
    seed: int = 0
    load_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.batch_size < 1 or self.calibration_batches < 1:
            raise ValueError(
                f"data.batch_size and calibration.num_batches must be >= 1, got {self.batch_size}, "
                f"{self.calibration_batches}."
            )


class ImageSet:
    """A dataset split as preprocessed tensors, re-made (and cached) per resolution."""

    def __init__(
        self,
        dataset,
        image_column: str,
        label_column: str,
        batch_size: int,
        processor: NASViTImageProcessor | None = None,
    ):
        for column in (image_column, label_column):
            if column not in dataset.column_names:
                raise ValueError(f"column {column!r} is not in the dataset; it has {dataset.column_names}.")
        self.dataset = dataset
        self.image_column = image_column
        self.labels = torch.tensor(list(dataset[label_column]), dtype=torch.long)
        self.batch_size = batch_size
        self.processor = processor
        self._resolution: int | None = None
        self._pixels: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def pixel_values(self, resolution: int) -> torch.Tensor:
        if self._resolution != resolution:
            processor = processor_for(self.processor, resolution)
            chunks = []
            for start in range(0, len(self.dataset), 256):
                images = list(self.dataset[start : start + 256][self.image_column])
                chunks.append(processor(images, return_tensors="pt")["pixel_values"])
            self._pixels, self._resolution = torch.cat(chunks), resolution
        return self._pixels

    def batches(self, resolution: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        pixels = self.pixel_values(resolution)
        for start in range(0, len(pixels), self.batch_size):
            yield pixels[start : start + self.batch_size], self.labels[start : start + self.batch_size]


def processor_for(processor: NASViTImageProcessor | None, resolution: int) -> NASViTImageProcessor:
    """`processor` moved to `resolution` (same protocol), or the default `for_resolution(resolution)`."""
    if processor is None:
        return NASViTImageProcessor.for_resolution(resolution)
    return processor.at_resolution(resolution)


@dataclass
class EvaluationData:
    calibration: ImageSet
    evaluation: ImageSet
    num_labels: int
    id2label: dict[int, str] | None
    description: str
    calibration_batches: int
    processor: NASViTImageProcessor | None = None  # the evaluation protocol (None: for_resolution's default)


def _load_dataset_dict(config: DataConfig):
    if config.dataset == "digits":
        from ..data import load_digits_dataset

        return load_digits_dataset(seed=config.seed)
    from datasets import load_dataset

    if config.dataset == "imagefolder":
        if not config.data_dir:
            raise ValueError("data.dataset 'imagefolder' needs data.data_dir (a folder of <split>/<class>/images).")
        return load_dataset("imagefolder", data_dir=config.data_dir, **config.load_kwargs)
    return load_dataset(config.dataset, config.dataset_config, data_dir=config.data_dir, **config.load_kwargs)


def load_evaluation_data(config: DataConfig, processor: NASViTImageProcessor | None = None) -> EvaluationData:
    """The calibration and ranking images of `config` (seeded subsets), preprocessed by `processor` moved to each
    resolution (None: `NASViTImageProcessor.for_resolution`)."""
    splits = _load_dataset_dict(config)
    for split in (config.calibration_split, config.evaluation_split):
        if split not in splits:
            raise ValueError(f"split {split!r} is not in dataset {config.dataset!r}; it has {sorted(splits)}.")
    rng = np.random.default_rng(config.seed)
    calibration = splits[config.calibration_split]
    wanted = config.calibration_batches * config.batch_size
    if len(calibration) > wanted:
        calibration = calibration.select(np.sort(rng.permutation(len(calibration))[:wanted]))
    evaluation = splits[config.evaluation_split]
    if config.max_evaluation_samples is not None and len(evaluation) > config.max_evaluation_samples:
        evaluation = evaluation.select(np.sort(rng.permutation(len(evaluation))[: config.max_evaluation_samples]))
    feature = evaluation.features.get(config.label_column)
    names = getattr(feature, "names", None)
    id2label = {i: name for i, name in enumerate(names)} if names else None
    num_labels = len(names) if names else int(max(list(evaluation[config.label_column]))) + 1
    where = config.dataset if config.dataset != "imagefolder" else f"imagefolder:{config.data_dir}"
    return EvaluationData(
        calibration=ImageSet(calibration, config.image_column, config.label_column, config.batch_size, processor),
        evaluation=ImageSet(evaluation, config.image_column, config.label_column, config.batch_size, processor),
        num_labels=num_labels,
        id2label=id2label,
        description=f"{where} (calibration: {len(calibration)} images of split {config.calibration_split!r}; "
        f"evaluation: {len(evaluation)} images of split {config.evaluation_split!r})",
        calibration_batches=config.calibration_batches,
        processor=processor,
    )


@contextlib.contextmanager
def torch_threads(num_threads: int | None):
    """Run with `num_threads` intra-op threads (None: leave torch's setting), restoring the previous setting.

    Tiny models are dominated by per-op overhead: on a busy CPU, extra OpenMP threads spin against other processes
    and one thread can be 10x faster."""
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@torch.no_grad()
def top1_accuracy(model: nn.Module, images: ImageSet, resolution: int) -> float:
    """Top-1 accuracy (%) of `model` in eval mode on `images` preprocessed at `resolution`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for pixel_values, labels in images.batches(resolution):
        logits = model(pixel_values=pixel_values.to(device)).logits
        correct += int((logits.argmax(-1).cpu() == labels).sum())
    model.train(was_training)
    return 100.0 * correct / len(images)


@torch.no_grad()
def evaluate_subnet(
    model: nn.Module, arch: dict[str, Any] | None, data: EvaluationData, recalibrate: bool = True
) -> float:
    """Top-1 (%) of subnet `arch` of a supernet (or of a standalone model when `arch` is None) on the ranking split,
    after recalibrating BN on the calibration images (`recalibrate=False`: with the model's current statistics).
    A supernet's own BN statistics and active arch are unchanged afterwards."""
    previous = None
    if arch is not None:
        previous = model.active_arch
        model.set_active_subnet(arch)
    resolution = model.active_arch["resolution"]
    try:
        with preserved_batchnorm_statistics(model):
            if recalibrate:
                calibration = (pixels for pixels, _ in data.calibration.batches(resolution))
                calibrate_batchnorm(model, calibration, num_batches=data.calibration_batches)
            return top1_accuracy(model, data.evaluation, resolution)
    finally:
        if previous is not None:
            model.set_active_subnet(previous)
