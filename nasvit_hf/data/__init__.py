"""Datasets: the built-in demo data (scikit-learn's handwritten digits, offline) and helpers."""

from .digits import DIGITS_SPLITS, load_digits_dataset
from .digits_segmentation import digits_segmentation_labels, load_digits_segmentation_dataset

__all__ = ["DIGITS_SPLITS", "digits_segmentation_labels", "load_digits_dataset", "load_digits_segmentation_dataset"]
