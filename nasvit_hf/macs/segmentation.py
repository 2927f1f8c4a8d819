"""Analytic multiply-accumulates of NASViT semantic segmentation models (backbone + Segformer all-MLP head).

Same convention as `nasvit_hf.macs` (the paper's "FLOPs"): convolutions, linear layers and the two attention
matmuls (plus the talking-heads mixes); normalisation, activations, softmax, pooling, bilinear upsampling and
additions are not counted. With windowed attention the attention terms are counted per window, over the padded
window grid the model actually computes.
"""

from __future__ import annotations

from typing import Any

from ..models.configuration_nasvit import (
    BACKBONE_STAGE_NAMES,
    TRANSFORMER_STAGES,
    NASViTConfig,
    normalize_num_windows,
    segmentation_out_features,
)
from .classification import _transformer_macs, stage_macs

__all__ = ["count_segmentation_macs", "window_grid"]


def window_grid(num_windows: int | str, height: int, width: int) -> tuple[int, int]:
    """Windows along each axis of an height×width token grid (as `NASViTAttention.window_grid` computes it)."""
    if num_windows == "auto":
        return max(1, height // 7), max(1, width // 7)
    return min(num_windows, height), min(num_windows, width)


def _attention_macs(channels: int, tokens: int, head_dim: int, value_expansion: int) -> int:
    """The terms of one transformer layer that grow with tokens²: talking heads and the two matmuls."""
    heads = channels // head_dim
    return 2 * tokens * tokens * heads * heads + tokens * tokens * (heads * head_dim + value_expansion * channels)


def _windowed_transformer_macs(
    channels: int, height: int, width: int, num_windows: int | str, head_dim: int, value_expansion: int
) -> int:
    tokens = height * width
    macs = _transformer_macs(channels, tokens, head_dim, value_expansion)
    windows_h, windows_w = window_grid(num_windows, height, width)
    if (windows_h, windows_w) == (1, 1):
        return macs
    window_h, window_w = -(-height // windows_h), -(-width // windows_w)
    count = -(-height // window_h) * -(-width // window_w)
    macs -= _attention_macs(channels, tokens, head_dim, value_expansion)
    return macs + count * _attention_macs(channels, window_h * window_w, head_dim, value_expansion)


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
    arch = config.validate_arch(arch) if arch is not None else config.arch
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be positive, got {(height, width)}.")
    decoder_hidden_size = config.decoder_hidden_size if decoder_hidden_size is None else decoder_hidden_size
    num_labels = config.num_labels if num_labels is None else num_labels
    out_features = list(segmentation_out_features(config) if out_features is None else out_features)
    unknown = [name for name in out_features if name not in BACKBONE_STAGE_NAMES]
    if unknown or not out_features:
        raise ValueError(f"out_features must be a non-empty subset of {BACKBONE_STAGE_NAMES}, got {out_features}.")
    num_windows = normalize_num_windows(config.num_windows if num_windows is None else num_windows)
    num_windows = "auto" if num_windows is None else num_windows
    per_stage = num_windows if isinstance(num_windows, list) else [num_windows] * len(TRANSFORMER_STAGES)

    stages = stage_macs(config, arch, image_size=(height, width))  # [(name, macs, (h, w))] for stem, mb1..mb7
    last = max(BACKBONE_STAGE_NAMES.index(name) for name in out_features)
    depths = dict(zip(BACKBONE_STAGE_NAMES[1:], arch["depth"]))
    widths = dict(zip(BACKBONE_STAGE_NAMES, arch["width"]))
    total = 0
    for name, macs, (stage_h, stage_w) in stages[: last + 1]:
        if name in TRANSFORMER_STAGES:
            channels, layers = widths[name], depths[name] - 1
            windows = per_stage[TRANSFORMER_STAGES.index(name)]
            tokens = stage_h * stage_w
            macs -= layers * _transformer_macs(channels, tokens, config.head_dim, config.value_expansion)
            macs += layers * _windowed_transformer_macs(
                channels, stage_h, stage_w, windows, config.head_dim, config.value_expansion
            )
        total += macs

    sizes = {BACKBONE_STAGE_NAMES[i]: size for i, (_, _, size) in enumerate(stages)}
    finest_h, finest_w = sizes[out_features[0]]
    for name in out_features:  # per-scale Linear(C -> D) on that scale's tokens
        stage_h, stage_w = sizes[name]
        total += stage_h * stage_w * widths[name] * decoder_hidden_size
    fused = finest_h * finest_w
    total += fused * len(out_features) * decoder_hidden_size * decoder_hidden_size  # linear_fuse 1x1 conv
    total += fused * decoder_hidden_size * num_labels  # classifier 1x1 conv
    return total
