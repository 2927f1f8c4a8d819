"""Data augmentation knobs of the paper's Table 5 (torchvision transforms v2).

The paper's weak recipe (the default here): RandAugment with n = 1 operation at magnitude m = 1, no mixup/cutmix.
AlphaNet's stronger recipe and the DeiT/LeViT recipes of Table 3 are reachable through the same knobs
(RandAugment n=2 m=9, mixup 0.8, cutmix 1.0, random erasing 0.25).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_batch_mixing",
    "build_eval_transform",
    "build_train_transform",
]

IMAGENET_MEAN = list(IMAGENET_DEFAULT_MEAN)
IMAGENET_STD = list(IMAGENET_DEFAULT_STD)


def build_train_transform(
    image_size: int,
    randaugment_num_ops: int = 1,
    randaugment_magnitude: int = 1,
    crop_scale: Sequence[float] = (0.08, 1.0),
    hflip: float = 0.5,
    random_erasing: float = 0.0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Callable:
    """PIL image → normalised float tensor (3, image_size, image_size): random resized crop, flip, RandAugment(n, m)
    (skipped when n = 0), random erasing. Grayscale and RGBA inputs are converted to RGB."""
    if randaugment_num_ops < 0 or not 0 <= randaugment_magnitude <= 30:
        raise ValueError(
            f"RandAugment needs num_ops >= 0 and magnitude in [0, 30], got {randaugment_num_ops}, {randaugment_magnitude}."
        )
    low, high = crop_scale
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {list(crop_scale)}.")
    steps: list = [
        T.ToImage(),
        T.RGB(),
        T.RandomResizedCrop(image_size, scale=(low, high), interpolation=InterpolationMode.BICUBIC, antialias=True),
    ]
    if hflip > 0:
        steps.append(T.RandomHorizontalFlip(hflip))
    if randaugment_num_ops > 0:
        steps.append(T.RandAugment(num_ops=randaugment_num_ops, magnitude=randaugment_magnitude))
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]
    if random_erasing > 0:
        steps.append(T.RandomErasing(p=random_erasing))
    return T.Compose(steps)


def build_eval_transform(image_size: int, crop_fraction: float = 0.875) -> Callable:
    """PIL image → normalised float tensor through `NASViTImageProcessor.for_resolution` itself (short side to
    image_size / 0.875, bicubic, centre crop, ImageNet mean/std), so validation sees exactly what deployment sees."""
    from ..models.image_processing_nasvit import NASViTImageProcessor

    processor = NASViTImageProcessor.for_resolution(image_size, crop_pct=crop_fraction)

    def transform(image) -> torch.Tensor:
        return processor(image, return_tensors="pt")["pixel_values"][0]

    return transform


def build_batch_mixing(mixup_alpha: float, cutmix_alpha: float, num_classes: int) -> Callable | None:
    """A batch transform (images, labels) → (images, soft labels) applying mixup or cutmix (one of them at random
    per batch when both are on); None when both alphas are 0."""
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha} and {cutmix_alpha}.")
    choices = []
    if mixup_alpha > 0:
        choices.append(T.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        choices.append(T.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not choices:
        return None
    return choices[0] if len(choices) == 1 else T.RandomChoice(choices)
