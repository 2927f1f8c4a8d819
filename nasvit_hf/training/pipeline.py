"""Training-pipeline choices shared by `recipes/train.py` and `recipes/conflict_ratio.py`: which augmentation
pipeline (torchvision's Table-5 knobs or timm's, as the reference ran), how labels become the largest subnet's
targets (mixup/cutmix, label smoothing) and the evaluation protocol's processor."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

from ..models.image_processing_nasvit import CROP_MODES, NASViTImageProcessor
from .augment import build_batch_mixing, build_train_transform
from .timm_data import build_timm_mixup, build_timm_train_transform

__all__ = [
    "CALIBRATION_TRANSFORMS",
    "DATA_PIPELINES",
    "TRAINING_TRANSFORM_KEYS",
    "build_eval_processor",
    "build_target_transform",
    "build_training_transform",
    "describe_training_transform",
    "smooth_targets",
    "training_transform_of",
]

logger = logging.getLogger(__name__)
DATA_PIPELINES = ("torchvision", "timm")
# Which images BN recalibration sees: "evaluation" = training images through the evaluation processor; "training" =
# training images through the training augmentation (the reference recalibrates on its augmented training loader).
CALIBRATION_TRANSFORMS = ("evaluation", "training")
# The training config's keys that make up its per-image training augmentation (`training_transform_of`).
TRAINING_TRANSFORM_KEYS = (
    "data_pipeline",
    "auto_augment",
    "randaugment_num_ops",
    "randaugment_magnitude",
    "crop_scale",
    "hflip",
    "random_erasing",
    "random_erasing_mode",
    "image_size",
)


def build_training_transform(
    pipeline: str,
    image_size: int,
    *,
    auto_augment: str | None = None,
    randaugment_num_ops: int = 1,
    randaugment_magnitude: int = 1,
    crop_scale: Sequence[float] = (0.08, 1.0),
    hflip: float = 0.5,
    random_erasing: float = 0.0,
    random_erasing_mode: str = "pixel",
) -> Callable:
    """PIL image → normalised tensor. `"torchvision"`: `build_train_transform` (RandAugment(n, m) of torchvision;
    `auto_augment` must be unset). `"timm"`: `build_timm_train_transform` with the `auto_augment` spec (e.g.
    "rand-n1-m1-mstd0.5-inc1"; the n/m knobs are not used)."""
    if pipeline not in DATA_PIPELINES:
        raise ValueError(f"data_pipeline must be one of {list(DATA_PIPELINES)}, got {pipeline!r}.")
    if pipeline == "timm":
        return build_timm_train_transform(
            image_size,
            auto_augment,
            crop_scale=crop_scale,
            hflip=hflip,
            random_erasing=random_erasing,
            random_erasing_mode=random_erasing_mode,
        )
    if auto_augment:
        raise ValueError(
            f"auto_augment {auto_augment!r} is a timm policy: set data_pipeline: timm (the torchvision pipeline uses "
            "randaugment_num_ops / randaugment_magnitude)."
        )
    return build_train_transform(
        image_size, randaugment_num_ops, randaugment_magnitude, crop_scale, hflip, random_erasing
    )


def training_transform_of(config, image_size: int) -> Callable:
    """The per-image training augmentation of a `TrainingConfig` (its `TRAINING_TRANSFORM_KEYS`) at `image_size`:
    what training, the conflict-ratio sweep and the "training" BN recalibration all feed the model."""
    return build_training_transform(
        config.data_pipeline,
        image_size,
        auto_augment=config.auto_augment,
        randaugment_num_ops=config.randaugment_num_ops,
        randaugment_magnitude=config.randaugment_magnitude,
        crop_scale=config.crop_scale,
        hflip=config.hflip,
        random_erasing=config.random_erasing,
        random_erasing_mode=config.random_erasing_mode,
    )


def describe_training_transform(config, image_size: int) -> str:
    """One line naming a `TrainingConfig`'s training augmentation, for logs and model cards."""
    low, high = config.crop_scale
    policy = (
        f"RandAugment {config.auto_augment}"
        if config.data_pipeline == "timm" and config.auto_augment
        else f"RandAugment(n={config.randaugment_num_ops}, m={config.randaugment_magnitude})"
        if config.data_pipeline == "torchvision" and config.randaugment_num_ops > 0
        else "no RandAugment"
    )
    erasing = f", random erasing {config.random_erasing:g}" if config.random_erasing else ""
    return (
        f"the training augmentation ({config.data_pipeline}: random resized crop {image_size} px, scale "
        f"[{low:g}, {high:g}], flip {config.hflip:g}, {policy}{erasing})"
    )


def smooth_targets(targets: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """Class indices or soft labels → (1 − smoothing) · one-hot/soft + smoothing / K (for mixed labels this equals
    mixing the smoothed one-hots, as timm's Mixup does)."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {smoothing}.")
    if targets.ndim == 1:
        targets = torch.nn.functional.one_hot(targets.long(), num_classes).float()
    return targets.float() * (1.0 - smoothing) + smoothing / num_classes


def build_target_transform(
    pipeline: str,
    num_classes: int,
    *,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    mixup_prob: float = 1.0,
    mixup_switch_prob: float = 0.5,
    label_smoothing: float = 0.0,
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None:
    """A batch transform (pixel values, labels) → (pixel values, targets) for the largest subnet: mixup/cutmix
    (timm's `Mixup` with its apply and switch probabilities, or torchvision's MixUp/CutMix) then label smoothing.
    None when it would do nothing (targets stay class indices)."""
    if pipeline not in DATA_PIPELINES:
        raise ValueError(f"data_pipeline must be one of {list(DATA_PIPELINES)}, got {pipeline!r}.")
    if pipeline == "timm":
        mixing = build_timm_mixup(mixup_alpha, cutmix_alpha, num_classes, mixup_prob, mixup_switch_prob)
    else:
        if (mixup_prob, mixup_switch_prob) != (1.0, 0.5):
            raise ValueError("mixup_prob and mixup_switch_prob are timm Mixup settings: set data_pipeline: timm.")
        mixing = build_batch_mixing(mixup_alpha, cutmix_alpha, num_classes)
    smooth_targets(torch.zeros(1, dtype=torch.long), num_classes, label_smoothing)  # validates the value
    if mixing is None and label_smoothing == 0.0:
        return None

    def apply(pixel_values: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        targets = labels
        if mixing is not None:
            pixel_values, targets = mixing(pixel_values, labels)
        if label_smoothing > 0:
            targets = smooth_targets(targets, num_classes, label_smoothing)
        return pixel_values, targets

    return apply


def build_eval_processor(crop_mode: str, resolution: int) -> NASViTImageProcessor:
    """The evaluation processor a run validates with and saves with its supernet (`crop_mode`: "resolution" or
    "reference"), at `resolution`; `.at_resolution(r)` gives each arch's."""
    if crop_mode not in CROP_MODES:
        raise ValueError(f"eval_crop_mode must be one of {list(CROP_MODES)}, got {crop_mode!r}.")
    return NASViTImageProcessor.for_resolution(resolution, crop_mode=crop_mode)
