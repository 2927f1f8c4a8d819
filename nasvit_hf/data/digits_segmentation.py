"""The built-in segmentation demo data: real handwritten digits pasted onto crops of real photos, with pixel masks.

Everything comes from scikit-learn, so it is available offline: the digits are the UCI handwritten digits (real 8×8
scans, `sklearn.datasets.load_digits`) and the backgrounds are crops of scikit-learn's two sample photographs
(`china.jpg`, `flower.jpg`, `sklearn.datasets.load_sample_images`). Each scene pastes 1-3 digits, upscaled to 14-30
px with a random bright colour, onto a darkened photo crop; the mask gives each digit's stroke pixels (upscaled
intensity >= half) its class and everything else background.

Labels (`label_mode="digits"`, default): 0 = background, 1 + d = digit d (11 classes). `label_mode="foreground"`:
0 = background, 1 = digit (2 classes). Train scenes use only 80 % of the 1,797 digits and
validation scenes only those of the other 20 % (a seeded split), so no handwritten digit appears in both.
"""

from __future__ import annotations

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage

__all__ = ["digits_segmentation_labels", "load_digits_segmentation_dataset"]

_LABEL_MODES = ["digits", "foreground"]


def digits_segmentation_labels(label_mode: str = "digits") -> dict[int, str]:
    """`id2label` of the demo data."""
    if label_mode not in _LABEL_MODES:
        raise ValueError(f"label_mode must be one of {_LABEL_MODES}, got {label_mode!r}.")
    if label_mode == "foreground":
        return {0: "background", 1: "digit"}
    return {0: "background", **{1 + digit: f"digit {digit}" for digit in range(10)}}


def _scene(
    rng: np.random.Generator,
    photos: list[np.ndarray],
    digits: list[np.ndarray],
    digit_labels: list[int],
    size: int,
    label_mode: str,
) -> tuple[np.ndarray, np.ndarray]:
    photo = photos[rng.integers(len(photos))]
    crop = int(rng.integers(size, min(photo.shape[:2]) + 1))
    top, left = rng.integers(photo.shape[0] - crop + 1), rng.integers(photo.shape[1] - crop + 1)
    background = PILImage.fromarray(photo[top : top + crop, left : left + crop]).resize(
        (size, size), PILImage.BILINEAR
    )
    image = np.asarray(background, dtype=np.float32) * rng.uniform(0.3, 0.6)
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        index = int(rng.integers(len(digits)))
        side = int(rng.integers(14, min(30, size) + 1))
        glyph = PILImage.fromarray(digits[index]).resize((side, side), PILImage.BICUBIC)
        alpha = np.clip(np.asarray(glyph, dtype=np.float32) / 255.0, 0.0, 1.0)
        top, left = rng.integers(size - side + 1), rng.integers(size - side + 1)
        colour = rng.uniform(170, 255, size=3).astype(np.float32)
        region = image[top : top + side, left : left + side]
        region[:] = region * (1 - alpha[..., None]) + colour * alpha[..., None]
        label = 1 if label_mode == "foreground" else 1 + digit_labels[index]
        mask[top : top + side, left : left + side][alpha >= 0.5] = label
    return np.clip(image, 0, 255).astype(np.uint8), mask


def load_digits_segmentation_dataset(
    num_train: int = 512,
    num_validation: int = 128,
    size: int = 64,
    label_mode: str = "digits",
    seed: int = 0,
) -> DatasetDict:
    """A `DatasetDict` with `train` and `validation` splits of `size`×`size` scenes: columns `image` (PIL RGB) and
    `annotation` (PIL "L", class ids; see `digits_segmentation_labels(label_mode)`). Deterministic for a seed."""
    from sklearn.datasets import load_digits, load_sample_images

    digits_segmentation_labels(label_mode)  # validates label_mode
    if num_train < 1 or num_validation < 1:
        raise ValueError(f"num_train and num_validation must be >= 1, got {num_train} and {num_validation}.")
    photos = list(load_sample_images().images)
    largest = min(min(photo.shape[:2]) for photo in photos)  # backgrounds are crops of the photos, never upscaled
    if not 32 <= size <= largest:
        raise ValueError(
            f"size must be in [32, {largest}] pixels (digits are pasted at 14-30 px on crops of {largest}-px photos), "
            f"got {size}."
        )
    digits = load_digits()
    all_glyphs = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(all_glyphs))
    cut = int(round(0.8 * len(order)))
    split_indices = {"train": np.sort(order[:cut]), "validation": np.sort(order[cut:])}
    features = Features({"image": Image(), "annotation": Image()})
    result = {}
    for split, count in (("train", num_train), ("validation", num_validation)):
        glyphs = list(all_glyphs[split_indices[split]])
        labels = digits.target[split_indices[split]].tolist()
        images, masks = [], []
        for _ in range(count):
            image, mask = _scene(rng, photos, glyphs, labels, size, label_mode)
            images.append(PILImage.fromarray(image, mode="RGB"))
            masks.append(PILImage.fromarray(mask, mode="L"))
        result[split] = Dataset.from_dict({"image": images, "annotation": masks}, features=features)
    return DatasetDict(result)
