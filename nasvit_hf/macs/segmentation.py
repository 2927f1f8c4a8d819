"""Analytic multiply-accumulates of NASViT semantic segmentation models (backbone + Segformer all-MLP head).

Same convention as `nasvit_hf.macs` (the paper's "FLOPs"): convolutions, linear layers and the two attention
matmuls (plus the talking-heads mixes); normalisation, activations, softmax, pooling, bilinear upsampling and
additions are not counted. With windowed attention the attention terms are counted per window, over the padded
window grid the model actually computes.
"""

from __future__ import annotations

from typing import Any

from ..models.configuration_nasvit import NASViTConfig, segmentation_out_features
from ..models.search_space_nasvit import BACKBONE_STAGE_NAMES, normalize_num_windows, window_grid
from .classification import check_config, check_image_size, check_label_count, stage_macs

__all__ = ["count_segmentation_macs", "window_grid"]


def count_segmentation_macs(
    config: NASViTConfig,
    arch: dict[str, Any] | None = None,
    image_size: tuple[int, int] | int = 512,
    decoder_hidden_size: int | None = None,
    num_labels: int | None = None,
    num_windows: int | str | list[int | str] | None = None,
    out_features: list[str] | None = None,
) -> int:
    """MACs per image of `NASViTForSemanticSegmentation` for the subnet `arch` (default: the config's active arch)
    at input `image_size` ((height, width) or a side).

    Defaults come from the config: `decoder_hidden_size`, `num_labels`, `out_features`, and `num_windows`
    (`None` in the config means `"auto"`, the segmentation default). Stages after the last output feature do not
    run and are not counted; the MBPool head and classifier are not part of the segmentation model.
    """
    check_config(config, "count_segmentation_macs")
    arch = config.validate_arch(arch) if arch is not None else config.arch
    height, width = check_image_size(image_size)
    decoder_hidden_size = config.decoder_hidden_size if decoder_hidden_size is None else decoder_hidden_size
    if isinstance(decoder_hidden_size, bool) or not isinstance(decoder_hidden_size, int) or decoder_hidden_size < 1:
        raise ValueError(f"decoder_hidden_size must be a positive int, got {decoder_hidden_size!r}.")
    num_labels = check_label_count(num_labels, config.num_labels)
    out_features = list(segmentation_out_features(config) if out_features is None else out_features)
    unknown = [name for name in out_features if name not in BACKBONE_STAGE_NAMES]
    if unknown or not out_features:
        raise ValueError(f"out_features must be a non-empty subset of {BACKBONE_STAGE_NAMES}, got {out_features}.")
    num_windows = normalize_num_windows(config.num_windows if num_windows is None else num_windows)
    num_windows = "auto" if num_windows is None else num_windows

    # [(name, macs, (h, w))] for stem, mb1..mb7, with the windows the backbone runs
    stages = stage_macs(config, arch, image_size=(height, width), num_windows=num_windows)
    last = max(BACKBONE_STAGE_NAMES.index(name) for name in out_features)
    widths = dict(zip(BACKBONE_STAGE_NAMES, arch["width"]))
    total = sum(macs for _, macs, _ in stages[: last + 1])

    sizes = {BACKBONE_STAGE_NAMES[i]: size for i, (_, _, size) in enumerate(stages)}
    finest_h, finest_w = sizes[out_features[0]]
    for name in out_features:  # per-scale Linear(C -> D) on that scale's tokens
        stage_h, stage_w = sizes[name]
        total += stage_h * stage_w * widths[name] * decoder_hidden_size
    fused = finest_h * finest_w
    total += fused * len(out_features) * decoder_hidden_size * decoder_hidden_size  # linear_fuse 1x1 conv
    total += fused * decoder_hidden_size * num_labels  # classifier 1x1 conv
    return total
