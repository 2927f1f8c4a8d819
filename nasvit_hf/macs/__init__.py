"""Analytic multiply-accumulates (the paper's "FLOPs") and parameter counts of NASViT archs.

`classification` counts a subnet of the classification model from its arch alone (fast enough for a search loop);
`segmentation` adds windowed attention and the Segformer decode head. Both agree with a traced count of the model.
"""

from .classification import OPERATOR_COUNT_NAMES, count_macs, count_parameters, operator_counts, stage_macs
from .segmentation import count_segmentation_macs, window_grid

__all__ = [
    "OPERATOR_COUNT_NAMES",
    "count_macs",
    "count_parameters",
    "count_segmentation_macs",
    "operator_counts",
    "stage_macs",
    "window_grid",
]
