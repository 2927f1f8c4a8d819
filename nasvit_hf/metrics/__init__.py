"""Local `evaluate` metric modules shipped with the package (usable offline with `evaluate.load(<path>)`)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["accuracy_metric_path", "load_accuracy_metric"]


def accuracy_metric_path() -> str:
    """Path of the top-1/top-k accuracy module, for `evaluate.load(accuracy_metric_path())`."""
    return str(Path(__file__).resolve().parent / "accuracy" / "accuracy.py")


def load_accuracy_metric(**kwargs):
    """`evaluate.load` of the bundled accuracy module (kwargs go to `evaluate.load`, e.g. process_id, num_process)."""
    import evaluate

    return evaluate.load(accuracy_metric_path(), **kwargs)
