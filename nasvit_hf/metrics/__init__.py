"""Local `evaluate` modules shipped with the package (nothing is downloaded at run time).

`evaluate.load(metric_path("accuracy"))` loads `nasvit_hf/metrics/accuracy/accuracy.py` (top-1/top-k), and
`evaluate.load(metric_path("mean_iou"))` loads `nasvit_hf/metrics/mean_iou/mean_iou.py`.

With `evaluate.evaluator("image-classification")`, pass the model folder (or Hub name) as `model_or_pipeline`, not a
`pipeline(...)` object: under transformers 5 evaluate's pipeline check reads the removed `TFPreTrainedModel` and fails
with an AttributeError (docs/model.md, "Upstream workarounds").
"""

from __future__ import annotations

import os

__all__ = ["accuracy_metric_path", "available_metrics", "load_accuracy_metric", "metric_path"]

_HERE = os.path.dirname(os.path.abspath(__file__))


def available_metrics() -> list[str]:
    """Names of the metrics shipped in this folder."""
    return sorted(name for name in os.listdir(_HERE) if os.path.isfile(os.path.join(_HERE, name, f"{name}.py")))


def metric_path(name: str) -> str:
    """The folder of the local evaluate module `name`, for `evaluate.load(metric_path(name))`."""
    path = os.path.join(_HERE, name)
    if not os.path.isfile(os.path.join(path, f"{name}.py")):
        raise ValueError(f"no local metric {name!r}; available: {available_metrics()}.")
    return path


def accuracy_metric_path() -> str:
    """Path of the top-1/top-k accuracy module, for `evaluate.load(accuracy_metric_path())`."""
    return os.path.join(metric_path("accuracy"), "accuracy.py")


def load_accuracy_metric(**kwargs):
    """`evaluate.load` of the bundled accuracy module (kwargs go to `evaluate.load`, e.g. process_id, num_process)."""
    import evaluate

    return evaluate.load(accuracy_metric_path(), **kwargs)
