"""Datasets: the built-in demo data (scikit-learn's handwritten digits, offline) and helpers."""

from .digits import DIGITS_SPLITS, load_digits_dataset

__all__ = ["DIGITS_SPLITS", "load_digits_dataset"]
