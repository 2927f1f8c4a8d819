"""Mean Intersection-over-Union for semantic segmentation, as a local `evaluate` module.

Same inputs and outputs as the Hub's `evaluate-metric/mean_iou` (mmsegmentation's definition), computed from one
confusion matrix per call with `np.bincount` (fast on large masks):

    metric = evaluate.load(nasvit_hf.metrics.metric_path("mean_iou"))
    metric.add_batch(predictions=[pred_map, ...], references=[mask, ...])
    metric.compute(num_labels=150, ignore_index=255)
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
IoU of a class = |prediction ∩ reference| / |prediction ∪ reference| over all pixels of all images (pixels whose
reference is `ignore_index` are skipped). mean_iou averages it over the classes that occur in the predictions or the
references (a class in neither is NaN and left out); mean_accuracy averages per-class pixel accuracy (recall);
overall_accuracy is the share of correctly labelled pixels.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of 2-D integer arrays (height, width) of predicted class ids.
    references: list of 2-D integer arrays of ground-truth class ids, each of its prediction's size.
    num_labels (`int`): number of classes.
    ignore_index (`int`, defaults to 255): reference value to skip.
    reduce_labels (`bool`, defaults to False): map reference 0 to ignore_index and subtract 1 from the others
        (ADE20K's convention: 0 is "other").
    nan_to_num (`float`, optional): replace NaN per-class values by this number before averaging.
Returns:
    mean_iou, mean_accuracy, overall_accuracy (floats) and per_category_iou, per_category_accuracy (arrays of
    num_labels values).
Example:
    >>> metric = evaluate.load(nasvit_hf.metrics.metric_path("mean_iou"))
    >>> metric.compute(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [0, 1]]], num_labels=2)["mean_iou"]
    0.5833333333333333
"""

_CITATION = """
@software{mmseg2020,
  title={MMSegmentation, an Open Source Semantic Segmentation Toolbox},
  author={MMSegmentation Contributors},
  howpublished={\\url{https://github.com/open-mmlab/mmsegmentation}},
  year={2020}
}
"""


def confusion_matrix(
    predictions: list, references: list, num_labels: int, ignore_index: int = 255, reduce_labels: bool = False
) -> np.ndarray:
    """(num_labels, num_labels) counts, rows = reference class, columns = predicted class."""
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references.")
    for index, (prediction, reference) in enumerate(zip(predictions, references)):
        prediction = np.asarray(prediction, dtype=np.int64)
        reference = np.asarray(reference, dtype=np.int64)
        if prediction.shape != reference.shape:
            raise ValueError(
                f"prediction {index} has shape {prediction.shape} but its reference has {reference.shape}; resize the "
                "prediction to the reference's size (e.g. post_process_semantic_segmentation(target_sizes=...))."
            )
        if reduce_labels:
            reference = np.where(reference == 0, ignore_index, reference - 1)
            reference = np.where(reference == ignore_index - 1, ignore_index, reference)
        valid = reference != ignore_index
        prediction, reference = prediction[valid], reference[valid]
        for name, values in (("prediction", prediction), ("reference", reference)):
            if values.size and (values.min() < 0 or values.max() >= num_labels):
                raise ValueError(
                    f"{name} {index} has class ids in [{values.min()}, {values.max()}], outside [0, {num_labels}) "
                    f"(ignore_index={ignore_index} is skipped in references)."
                )
        matrix += np.bincount(reference * num_labels + prediction, minlength=num_labels * num_labels).reshape(
            num_labels, num_labels
        )
    return matrix


def mean_iou_from_confusion(matrix: np.ndarray, nan_to_num: float | None = None) -> dict:
    intersection = np.diag(matrix).astype(np.float64)
    area_reference = matrix.sum(axis=1).astype(np.float64)
    area_prediction = matrix.sum(axis=0).astype(np.float64)
    union = area_reference + area_prediction - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = intersection / union
        accuracy = intersection / area_reference
        overall = intersection.sum() / area_reference.sum()
    if nan_to_num is not None:
        iou, accuracy = np.nan_to_num(iou, nan=nan_to_num), np.nan_to_num(accuracy, nan=nan_to_num)
    return {
        "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "mean_accuracy": float(np.nanmean(accuracy)) if np.isfinite(accuracy).any() else float("nan"),
        "overall_accuracy": float(overall),
        "per_category_iou": iou,
        "per_category_accuracy": accuracy,
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIoU(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("uint16"))),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("uint16"))),
                }
            ),
            reference_urls=["https://github.com/open-mmlab/mmsegmentation"],
        )

    def _compute(
        self,
        predictions,
        references,
        num_labels: int,
        ignore_index: int = 255,
        reduce_labels: bool = False,
        nan_to_num: float | None = None,
    ) -> dict:
        if not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive int, got {num_labels!r}.")
        matrix = confusion_matrix(predictions, references, num_labels, ignore_index, reduce_labels)
        return mean_iou_from_confusion(matrix, nan_to_num)
