"""Top-1 and top-k accuracy as a local `evaluate` module (Hub metrics cannot be downloaded offline).

Load it with `evaluate.load(nasvit_hf.metrics.accuracy_metric_path())`. `predictions` are either class indices or
rows of logits/scores (one per example); `references` are class indices. With logits, `top_k` (an int or a list of
ints, default [1, 5]) gives one entry per k: `accuracy` (top-1) and `top{k}_accuracy`; with class indices only
`accuracy` is computed. k larger than the number of classes counts every example as correct for that k.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Top-1 and top-k classification accuracy from predicted class indices or from logits."

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`, or `list` of `list` of `float`): predicted labels or per-class scores (logits).
    references (`list` of `int`): ground-truth labels.
    top_k (`int` or `list` of `int`, *optional*, defaults to [1, 5]): the k values to report (logits only).
    normalize (`bool`, *optional*, defaults to True): fractions when True, counts when False.
Returns:
    accuracy (`float`): top-1 accuracy; top{k}_accuracy (`float`) for each other k (logits only).
Examples:
    >>> metric = evaluate.load(accuracy_metric_path())
    >>> metric.compute(predictions=[[0.1, 0.9], [0.8, 0.2]], references=[1, 1], top_k=[1, 2])
    {'accuracy': 0.5, 'top2_accuracy': 1.0}
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("float32")),
                        "references": datasets.Value("int64"),
                    }
                ),
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            ],
        )

    def _compute(self, predictions, references, top_k=(1, 5), normalize=True):
        references = np.asarray(references, dtype=np.int64)
        predictions = np.asarray(predictions)
        count = len(references)
        if count == 0:
            raise ValueError("accuracy needs at least one example.")
        scale = 1.0 / count if normalize else 1.0
        if predictions.ndim == 1:
            return {"accuracy": float((predictions.astype(np.int64) == references).sum() * scale)}
        if predictions.ndim != 2:
            raise ValueError(f"predictions must be labels (N,) or logits (N, C), got shape {predictions.shape}.")
        ks = [top_k] if isinstance(top_k, int) else list(top_k)
        if any(int(k) < 1 for k in ks):
            raise ValueError(f"top_k values must be >= 1, got {ks}.")
        num_classes = predictions.shape[1]
        if references.min() < 0 or references.max() >= num_classes:
            raise ValueError(f"references must be class indices in [0, {num_classes}).")
        # Rank of the true class: how many classes score strictly higher (ties resolved in the true class' favour).
        true_scores = predictions[np.arange(count), references][:, None]
        rank = (predictions > true_scores).sum(axis=1)
        result = {}
        for k in sorted(set(int(k) for k in ks)):
            name = "accuracy" if k == 1 else f"top{k}_accuracy"
            result[name] = float((rank < k).sum() * scale)
        return result
