"""The ImageNet recipe's data augmentation through timm's data pipeline, as the reference ran it.

The reference trains with timm's `create_transform` (random resized crop, flip, RandAugment from a spec string such
as `"rand-n1-m1-mstd0.5-inc1"`: one op per image, magnitude 1 of 10 with Gaussian noise of std 0.5, each op applied
with probability 0.5, magnitudes that increase the distortion), timm's RandomErasing, and timm's `Mixup` (mixup or
cutmix per batch, chosen with `switch_prob`). Using timm itself keeps those strings meaning what they meant there.
torchvision's `RandAugment(1, 1)` (`augment.py`, the digits default) is another operation: magnitude 1 of 30 bins,
always applied.

timm's transforms draw from Python's `random` and NumPy's global generators (and torch's for erasing):
`ImageClassificationDataset` seeds all three per item, so runs and resumes stay reproducible.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch

from .augment import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["ToNormalizedTensor", "build_timm_mixup", "build_timm_train_transform", "find_rand_augment"]


def _to_rgb(image):
    """PIL images of any mode (L, RGBA, CMYK, P: ImageNet has all of them) as RGB."""
    return image if getattr(image, "mode", "RGB") == "RGB" else image.convert("RGB")


def build_timm_train_transform(
    image_size: int,
    auto_augment: str | None = "rand-n1-m1-mstd0.5-inc1",
    crop_scale: Sequence[float] = (0.08, 1.0),
    hflip: float = 0.5,
    random_erasing: float = 0.0,
    random_erasing_mode: str = "pixel",
    random_erasing_count: int = 1,
    interpolation: str = "bicubic",
    color_jitter: float | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Callable:
    """PIL image → normalised float tensor (3, image_size, image_size) through `timm.data.create_transform`
    (is_training=True): RandomResizedCrop(scale) with `interpolation`, flip, the `auto_augment` policy (a timm spec
    string: "rand-...", "augmix-...", "original", ...; None = none), normalisation, RandomErasing(random_erasing,
    mode, count). Images of any PIL mode are converted to RGB first. `color_jitter` is off by default (timm turns it
    off whenever a RandAugment policy is set)."""
    from timm.data import create_transform
    from torchvision import transforms

    low, high = crop_scale
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {list(crop_scale)}.")
    if auto_augment is not None and not isinstance(auto_augment, str):
        raise ValueError(
            f"auto_augment must be a timm policy string like 'rand-n1-m1-mstd0.5-inc1', got {auto_augment!r}."
        )
    if auto_augment and auto_augment.startswith("rand"):
        _check_rand_augment_spec(auto_augment)
    if random_erasing_mode not in ("const", "rand", "pixel"):
        raise ValueError(
            f"random_erasing_mode must be one of ['const', 'rand', 'pixel'], got {random_erasing_mode!r}."
        )
    try:
        transform = create_transform(
            image_size,
            is_training=True,
            scale=(float(low), float(high)),
            hflip=hflip,
            color_jitter=color_jitter,
            auto_augment=auto_augment or None,
            interpolation=interpolation,
            mean=tuple(mean),
            std=tuple(std),
            re_prob=random_erasing,
            re_mode=random_erasing_mode,
            re_count=random_erasing_count,
        )
    except (AssertionError, KeyError, ValueError) as error:
        raise ValueError(
            f"timm cannot build the training transform (auto_augment={auto_augment!r}, interpolation="
            f"{interpolation!r}): {error!r}. RandAugment specs look like 'rand-n1-m1-mstd0.5-inc1' (see timm's "
            "rand_augment_transform)."
        ) from None
    return transforms.Compose([transforms.Lambda(_to_rgb), _fuse_to_tensor_and_normalize(transform)])


class ToNormalizedTensor:
    """timm's `MaybeToTensor` followed by torchvision's `Normalize`, in one pass: an RGB PIL image → float32 tensor
    (3, H, W) computed with the same float32 operations in the same order (`x / 255`, then `- mean`, then `/ std`), so
    the values are identical, without the intermediate copies of the pair (a permuted uint8 copy, a float copy, a
    divided copy and `Normalize`'s clone). Other inputs go through the pair itself."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        from timm.data.transforms import MaybeToTensor
        from torchvision import transforms

        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self._pair = transforms.Compose([MaybeToTensor(), transforms.Normalize(mean, std)])

    def __call__(self, picture) -> torch.Tensor:
        import numpy as np

        if getattr(picture, "mode", None) != "RGB" or torch.get_default_dtype() != torch.float32:
            return self._pair(picture)
        pixels = torch.from_numpy(np.array(picture))  # (H, W, 3) uint8, writable
        tensor = torch.empty((3, pixels.shape[0], pixels.shape[1]), dtype=torch.float32)
        tensor.copy_(pixels.permute(2, 0, 1))  # uint8 -> float32: exact
        return tensor.div_(255).sub_(self.mean).div_(self.std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def _fuse_to_tensor_and_normalize(transform):
    """`transform` (a torchvision Compose from timm) with its MaybeToTensor + Normalize pair as `ToNormalizedTensor`."""
    from timm.data.transforms import MaybeToTensor
    from torchvision import transforms

    steps = list(getattr(transform, "transforms", []))
    for index in range(len(steps) - 1):
        first, second = steps[index], steps[index + 1]
        if isinstance(first, MaybeToTensor) and isinstance(second, transforms.Normalize) and not second.inplace:
            steps[index : index + 2] = [ToNormalizedTensor(second.mean, second.std)]
            return transforms.Compose(steps)
    return transform


def _check_rand_augment_spec(spec: str) -> None:
    """timm skips RandAugment sections it cannot read (e.g. "nX"); reject them instead of training without them."""
    sections = spec.split("-")
    bad = [
        section
        for section in sections[1:]
        if not (section.startswith("t") or re.fullmatch(r"(mstd|mmax|inc|m|n|p)\d+(\.\d+)?", section))
    ]
    if sections[0] != "rand" or bad:
        raise ValueError(
            f"auto_augment {spec!r} is not a RandAugment spec timm reads fully (sections {bad} are not understood): "
            "write it like 'rand-n1-m1-mstd0.5-inc1' (n = ops per image, m = magnitude, mstd = magnitude noise, "
            "inc1 = increasing ops, p = op probability, mmax = magnitude cap)."
        )


def find_rand_augment(transform: Callable):
    """The timm RandAugment inside a (nested) torchvision Compose, or None."""
    from timm.data.auto_augment import RandAugment

    if isinstance(transform, RandAugment):
        return transform
    for inner in getattr(transform, "transforms", []) or []:
        found = find_rand_augment(inner)
        if found is not None:
            return found
    return None


def build_timm_mixup(
    mixup_alpha: float,
    cutmix_alpha: float,
    num_classes: int,
    prob: float = 1.0,
    switch_prob: float = 0.5,
    mode: str = "batch",
    label_smoothing: float = 0.0,
) -> Callable | None:
    """timm's `Mixup`: (images, labels) → (mixed images, soft targets); per batch (mode "batch"), with probability
    `prob`, mixup or — with probability `switch_prob` when both are on — cutmix. None when both alphas are 0. The
    batch size must be even (timm mixes a batch with its flipped self)."""
    from timm.data import Mixup

    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha} and {cutmix_alpha}.")
    if not (0.0 <= prob <= 1.0 and 0.0 <= switch_prob <= 1.0):
        raise ValueError(f"mixup_prob and mixup_switch_prob must be probabilities, got {prob} and {switch_prob}.")
    if mode not in ("batch", "pair", "elem"):
        raise ValueError(f"mixup_mode must be one of ['batch', 'pair', 'elem'], got {mode!r}.")
    if mixup_alpha == 0 and cutmix_alpha == 0:
        return None
    mixup = Mixup(
        mixup_alpha=mixup_alpha,
        cutmix_alpha=cutmix_alpha,
        prob=prob,
        switch_prob=switch_prob,
        mode=mode,
        label_smoothing=label_smoothing,
        num_classes=num_classes,
    )

    def apply(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.shape[0] % 2:
            raise ValueError(
                f"timm Mixup needs an even batch, got {images.shape[0]} images: use an even per-device batch size."
            )
        return mixup(images, labels)

    apply.mixup = mixup
    return apply
