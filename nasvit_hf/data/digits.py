"""The built-in demo data: scikit-learn's handwritten digits (UCI ML hand-written digits, 1,797 real 8×8 grayscale
scans of 10 classes) as a `datasets.DatasetDict`. It ships inside scikit-learn, so it is available offline.

Splits (deterministic for a given seed, stratified by class):
- `train`: what supernet training uses;
- `search`: `search_per_class` images per class held out of the training images (the paper holds out 5 per class
  of ImageNet's train set) to rank subnets during search; training never sees them;
- `validation`: `validation_fraction` of all images, for end-of-epoch validation and final reports.
"""

from __future__ import annotations

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage

__all__ = ["DIGITS_SPLITS", "load_digits_dataset"]

DIGITS_SPLITS = ["train", "search", "validation"]


def load_digits_dataset(seed: int = 0, validation_fraction: float = 0.2, search_per_class: int = 10) -> DatasetDict:
    """The digits as a DatasetDict with `image` (PIL, mode "L", 8×8) and `label` (ClassLabel "0".."9") columns."""
    from sklearn.datasets import load_digits

    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}.")
    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    splits: dict[str, list[int]] = {name: [] for name in DIGITS_SPLITS}
    for label in range(10):
        indices = rng.permutation(np.flatnonzero(labels == label))
        num_validation = int(round(len(indices) * validation_fraction))
        if len(indices) - num_validation <= search_per_class:
            raise ValueError(f"search_per_class={search_per_class} leaves no training images of class {label}.")
        splits["validation"].extend(indices[:num_validation].tolist())
        splits["search"].extend(indices[num_validation : num_validation + search_per_class].tolist())
        splits["train"].extend(indices[num_validation + search_per_class :].tolist())
    features = Features({"image": Image(), "label": ClassLabel(names=[str(i) for i in range(10)])})
    result = {}
    for name, indices in splits.items():
        indices = sorted(indices)
        result[name] = Dataset.from_dict(
            {"image": [PILImage.fromarray(images[i], mode="L") for i in indices], "label": labels[indices].tolist()},
            features=features,
        )
    return DatasetDict(result)
