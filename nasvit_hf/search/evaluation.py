"""Subnet evaluation for search and extraction: BN recalibration on held-out training images, then top-1 on a split
that training never saw (paper, Appendix C.1: 5 images per class of the ImageNet train set; here the digits
`search` split by default).

Images are preprocessed once per resolution with the supernet's own image processor moved to that resolution
(`processor.at_resolution(r)`: the evaluation protocol the extracted subnets will carry, e.g. the reference's
resize 256 → crop 224 → resize to r), or `NASViTImageProcessor.for_resolution(r)` without one, and kept as tensors for
the resolution in use, so ranking many subnets costs only their forward passes (evaluate candidates grouped by
resolution). Supernet BN statistics are restored after each candidate, so evaluation never changes the supernet.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..calibration import calibrate_batchnorm, preserved_batchnorm_statistics
from ..config_system import check_field_ranges
from ..models.image_processing_nasvit import NASViTImageProcessor
from .runtimes import torch_threads

__all__ = [
    "DataConfig",
    "EvaluationData",
    "ImageSet",
    "evaluate_subnet",
    "calibration_transform_of",
    "load_evaluation_data",
    "preserved_batchnorm_statistics",
    "resolve_calibration_transform",
    "resolve_evaluation_data",
    "top1_accuracy",
    "torch_threads",
]

logger = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """Where the calibration and ranking images come from.

    `dataset`: "digits" / "mnist_5k" (the bundled demo data), "imagefolder" (with `data_dir`), or any
    `datasets.load_dataset` name or local path (`dataset_config` is its config name). `calibration_split` feeds BN
    recalibration (training images), `evaluation_split` ranks subnets (held out of training). `max_evaluation_samples`
    caps the ranking split (a seeded, class-stratified-by-shuffle subset), `calibration_batches * batch_size` images
    are drawn for calibration.

    `holdout`: the `holdout.json` of a supernet trained with `holdout_per_class` (`resolve_evaluation_data` finds it
    beside the supernet). With it the ranking images are exactly its held-out rows of the training split, the
    calibration images are drawn from the other training rows, and `evaluation_split` is not used.
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
    holdout: str | None = None  # a holdout.json written by training (default: found beside the supernet)
    # BN recalibration images: "evaluation" (the evaluation processor) | "training" (the supernet's training
    # augmentation, as the reference); None = what the supernet's training record says, else "evaluation"
    calibration_transform: str | None = None
    training_augmentation: dict[str, Any] | None = None  # for "training": default, the training record's settings

    CONFIG_SECTION: ClassVar[str] = "data"
    FIELD_RANGES: ClassVar[dict[str, str]] = {
        "batch_size": "[1, 65536]",
        "calibration_batches": "[1, 1000000]",  # calibration.num_batches in a search config
        "max_evaluation_samples": "[1, inf)",
        "seed": "[0, 4294967295]",
    }

    def __post_init__(self):
        check_field_ranges(self)
        if self.calibration_transform not in (None, "evaluation", "training"):
            raise ValueError(
                f"data.calibration_transform must be 'evaluation', 'training' or null, got {self.calibration_transform!r}."
            )


class ImageSet:
    """A dataset split as preprocessed tensors, re-made (and cached) per resolution. With `transform` (image ->
    tensor, e.g. the training augmentation) the images go through it instead, once for every resolution (the model
    resizes them to each arch's), image i under RNGs seeded from (`seed`, i): the same tensors every time."""

    def __init__(
        self,
        dataset,
        image_column: str,
        label_column: str,
        batch_size: int,
        processor: NASViTImageProcessor | None = None,
        transform: Any = None,
        seed: int = 0,
    ):
        self.transform = transform
        self.seed = seed
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
        if self.transform is not None:
            if self._pixels is None:
                from ..training.data import seeded_rngs

                tensors = []
                for index in range(len(self.dataset)):
                    with seeded_rngs((self.seed * 1_000_003 + index) % (2**63 - 1)):
                        tensors.append(self.transform(self.dataset[index][self.image_column]))
                self._pixels = torch.stack(tensors)
            return self._pixels
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
    calibration_transform: str = "the evaluation preprocessing"  # what the calibration images went through


def _load_dataset_dict(config: DataConfig):
    from ..data import BUNDLED_DATASETS, load_bundled_dataset

    if config.dataset in BUNDLED_DATASETS:
        # The digits' splits are seeded with 0 as in training (`load_image_classification_splits`): another seed
        # would move training images into the `search` split.
        return load_bundled_dataset(config.dataset, seed=0)
    from datasets import load_dataset

    if config.dataset == "imagefolder":
        if not config.data_dir:
            raise ValueError("data.dataset 'imagefolder' needs data.data_dir (a folder of <split>/<class>/images).")
        if not Path(config.data_dir).is_dir():
            raise ValueError(
                f"data.data_dir {config.data_dir!r} is not a folder: name the image folder (--data.data_dir)."
            )
        if not config.load_kwargs:
            from ..data.imagefolder import load_imagefolder

            return load_imagefolder(config.data_dir).splits
        return load_dataset("imagefolder", data_dir=config.data_dir, **config.load_kwargs)
    try:
        return load_dataset(config.dataset, config.dataset_config, data_dir=config.data_dir, **config.load_kwargs)
    except Exception as error:  # datasets raises many kinds (EmptyDatasetError, DatasetNotFoundError, ConnectionError)
        raise ValueError(
            f"cannot load dataset {config.dataset!r}"
            + (f" (data_dir {config.data_dir!r})" if config.data_dir else "")
            + f": {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''} Name the data for "
            "calibration and evaluation with --data.dataset / --data.data_dir."
        ) from None


def calibration_transform_of(config: DataConfig, image_size: int | None) -> tuple[Any, str]:
    """`(transform or None, description)` of `config`'s BN-recalibration images: None for the evaluation processor;
    for "training", the training augmentation of `config.training_augmentation` (validated as `TrainingConfig`
    keys) at its `image_size`, else `image_size` (the supernet's largest resolution, as training used)."""
    if config.calibration_transform != "training":
        return None, "the evaluation preprocessing"
    from ..training.config import TrainingConfig
    from ..training.pipeline import TRAINING_TRANSFORM_KEYS, describe_training_transform, training_transform_of

    settings = dict(config.training_augmentation or {})
    unknown = sorted(set(settings) - set(TRAINING_TRANSFORM_KEYS))
    if unknown:
        raise ValueError(
            f"data.training_augmentation has keys {unknown} that are not augmentation settings; allowed: "
            f"{list(TRAINING_TRANSFORM_KEYS)}."
        )
    augmentation = TrainingConfig.from_dict(settings, source="data.training_augmentation")
    size = augmentation.image_size or image_size
    if size is None:
        raise ValueError("data.calibration_transform 'training' needs an image size: set image_size in it.")
    return training_transform_of(augmentation, size), describe_training_transform(augmentation, size)


def load_evaluation_data(
    config: DataConfig, processor: NASViTImageProcessor | None = None, image_size: int | None = None
) -> EvaluationData:
    """The calibration and ranking images of `config` (seeded subsets), preprocessed by `processor` moved to each
    resolution (None: `NASViTImageProcessor.for_resolution`); with `calibration_transform: training` the calibration
    images go through the training augmentation instead (`calibration_transform_of`; `image_size`: the crop size
    when the augmentation settings do not name one)."""
    transform, transform_description = calibration_transform_of(config, image_size)
    splits = _load_dataset_dict(config)
    needed = [config.calibration_split] + ([] if config.holdout else [config.evaluation_split])
    for split in needed:
        if split not in splits:
            raise ValueError(
                f"split {split!r} is not in dataset {config.dataset!r}; it has {sorted(splits)}. Name the splits "
                "(--data.calibration_split / --data.evaluation_split), or train with holdout_per_class so that search finds "
                "its held-out split."
            )
    rng = np.random.default_rng(config.seed)
    calibration = splits[config.calibration_split]
    if config.holdout:
        from ..data.holdout import HoldoutSplit

        holdout = HoldoutSplit.load(config.holdout)
        evaluation, calibration = holdout.select(calibration)
        evaluation_name = (
            f"held out of {config.calibration_split!r} ({holdout.per_class} per class, seed {holdout.seed})"
        )
    else:
        evaluation = splits[config.evaluation_split]
        evaluation_name = f"split {config.evaluation_split!r}"
    wanted = config.calibration_batches * config.batch_size
    if len(calibration) > wanted:
        calibration = calibration.select(np.sort(rng.permutation(len(calibration))[:wanted]))
    if config.max_evaluation_samples is not None and len(evaluation) > config.max_evaluation_samples:
        evaluation = evaluation.select(np.sort(rng.permutation(len(evaluation))[: config.max_evaluation_samples]))
    feature = evaluation.features.get(config.label_column)
    names = getattr(feature, "names", None)
    id2label = {i: name for i, name in enumerate(names)} if names else None
    num_labels = len(names) if names else int(max(list(evaluation[config.label_column]))) + 1
    where = config.dataset if config.dataset != "imagefolder" else f"imagefolder:{config.data_dir}"
    return EvaluationData(
        calibration=ImageSet(
            calibration, config.image_column, config.label_column, config.batch_size, processor, transform, config.seed
        ),
        evaluation=ImageSet(evaluation, config.image_column, config.label_column, config.batch_size, processor),
        num_labels=num_labels,
        id2label=id2label,
        description=f"{where} (calibration: {len(calibration)} images of split {config.calibration_split!r}; "
        f"evaluation: {len(evaluation)} images {evaluation_name})",
        calibration_batches=config.calibration_batches,
        processor=processor,
        calibration_transform=transform_description,
    )


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


def _training_record(supernet_dir: Path) -> dict[str, Any] | None:
    """The `training_config.json` that `recipes/train.py` writes beside the supernet's folder, if any."""
    for candidate in (supernet_dir / "training_config.json", supernet_dir.parent / "training_config.json"):
        if candidate.is_file():
            try:
                record = json.loads(candidate.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                return None
            return record if isinstance(record, dict) else None
    return None


def _same_data(dataset: str, data_dir: str | None, other_dataset: str | None, other_dir: str | None) -> bool:
    if dataset != other_dataset:
        return False
    if dataset == "imagefolder" or data_dir or other_dir:
        if not data_dir or not other_dir:
            return dataset != "imagefolder"
        return Path(data_dir).resolve() == Path(other_dir).resolve()
    return True


def resolve_calibration_transform(data: DataConfig, record: dict[str, Any] | None) -> DataConfig:
    """`data` with its calibration transform decided: the configured one, else the training record's
    `calibration_transform` (what validation during training used), else "evaluation"; for "training", the
    augmentation settings default to the record's."""
    from ..training.pipeline import TRAINING_TRANSFORM_KEYS

    mode = data.calibration_transform or (record or {}).get("calibration_transform")
    if mode is None:  # nothing says: the evaluation processor
        return data
    if mode not in ("evaluation", "training"):
        raise ValueError(f"the training record's calibration_transform {mode!r} is not 'evaluation' or 'training'.")
    augmentation = data.training_augmentation
    if mode == "training" and augmentation is None:
        if record is None:
            raise ValueError(
                "data.calibration_transform 'training' recalibrates through the supernet's training augmentation, "
                "but there is no training record (training_config.json) beside the supernet: give "
                "data.training_augmentation, or set data.calibration_transform: evaluation."
            )
        augmentation = {key: record[key] for key in TRAINING_TRANSFORM_KEYS if key in record}
    return dataclasses.replace(
        data, calibration_transform=mode, training_augmentation=augmentation if mode == "training" else None
    )


def resolve_evaluation_data(
    data: DataConfig, supernet_dir: str | Path, explicit: set[str] | None = None
) -> DataConfig:
    """`_resolve_evaluation_split`, then the calibration transform (`resolve_calibration_transform`) from the
    supernet's training record."""
    resolved = _resolve_evaluation_split(data, supernet_dir, explicit)
    return resolve_calibration_transform(resolved, _training_record(Path(supernet_dir)))


def _resolve_evaluation_split(
    data: DataConfig, supernet_dir: str | Path, explicit: set[str] | None = None
) -> DataConfig:
    """The data search and extraction use for a supernet: its held-out split when it was trained with `holdout_per_class`
    (found beside it: `nasvit_hf.data.find_holdout`), else `data` as configured, checked against the training
    record (`training_config.json`) so that subnets are never ranked on images the supernet was trained on.

    `explicit`: the `data` fields the user named on the command line; a held-out split replaces the configured data
    source, except a `data_dir` given explicitly (the same images, moved: the held-out files are checked).
    A ValueError says what is wrong and what to do."""
    from ..data.holdout import HoldoutSplit, find_holdout

    explicit = set(explicit or ())
    supernet_dir = Path(supernet_dir)
    found = None if data.holdout else find_holdout(supernet_dir)
    if data.holdout or (found is not None and "evaluation_split" not in explicit):
        path = Path(data.holdout or found)
        holdout = HoldoutSplit.load(path)
        source = holdout.source
        data_dir = data.data_dir if "data_dir" in explicit else source.get("data_dir")
        resolved = dataclasses.replace(
            data,
            dataset=source.get("dataset", data.dataset),
            dataset_config=source.get("dataset_config"),
            data_dir=data_dir,
            calibration_split=source.get("split", data.calibration_split),
            image_column=holdout.image_column,
            label_column=holdout.label_column,
            holdout=str(path),
        )
        logger.info(
            "ranking subnets on the held-out split of %s (%d images, %s)", source.get("dataset"), len(holdout), path
        )
        return resolved
    record = _training_record(supernet_dir)
    if record is not None and record.get("train_split"):
        trained = _same_data(data.dataset, data.data_dir, record.get("dataset"), record.get("data_dir"))
        if trained and data.evaluation_split == record["train_split"]:
            raise ValueError(
                f"the supernet was trained on split {record['train_split']!r} of {data.dataset!r}: ranking subnets on "
                "it would measure training images. Name a split held out of training (--data.evaluation_split), or "
                "retrain with holdout_per_class so that search finds its held-out split."
            )
    elif record is None:
        logger.warning(
            "no training record beside %s: cannot check that split %r of %s was held out of its training",
            supernet_dir,
            data.evaluation_split,
            data.dataset,
        )
    return data
