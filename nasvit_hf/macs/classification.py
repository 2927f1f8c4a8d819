"""Analytic multiply-accumulate and parameter counts of NASViT subnets.

The paper's "FLOPs" are multiply-accumulates (MACs) of convolutions, linear layers and the two attention matmuls;
normalisation, activations, softmax, pooling and additions are not counted. Counting from the arch alone (no forward
pass) makes it cheap enough for the inner loop of evolutionary search (well over 10,000 archs per second).
"""

from __future__ import annotations

import numbers
from typing import Any

from ..models.configuration_nasvit import NASViTConfig
from ..models.search_space_nasvit import (
    BODY_STAGES,
    TRANSFORMER_STAGES,
    arch_per_stage,
    make_divisible,
    normalize_num_windows,
    resolve_num_windows,
    window_grid,
)

__all__ = ["OPERATOR_COUNT_NAMES", "count_macs", "count_parameters", "operator_counts", "stage_macs"]


def _out_size(size: int, stride: int) -> int:
    # A k×k conv with padding k//2 and stride s maps n to ceil(n / s) for odd k.
    return -(-size // stride)


# Operator classes of a forward pass, per image: MACs by kind of operator (they add up to `count_macs`), the
# activation elements the element-wise and normalisation operators touch (memory traffic, not counted as MACs), and
# the block counts (each block is a fixed number of operator calls: per-call overhead). `operator_counts` returns them
# for a whole subnet; the latency model of search regresses measured latency on them.
OPERATOR_COUNT_NAMES = (
    "stem_conv_macs",  # the dense 3x3 stem convolution
    "pointwise_macs",  # 1x1 convolutions (MBConv expansion / projection / shortcut, MBPool) and the head's linears
    "depthwise_macs",  # depth-wise kxk convolutions (MBConv, and the transformer layers' value convolution)
    "linear_macs",  # the transformer layers' q, k, v, output projection and MLPs
    "attention_macs",  # the transformer layers' q·kᵀ, scores·v and talking-heads maps (grow with tokens²)
    "conv_activations",  # elements of the MBConv (and stem, MBPool) feature maps: swish, SE, residual adds
    "token_activations",  # elements of the transformer layers' token tensors: norms, swish, residual adds
    "attention_scores",  # elements of the attention score maps: bias add, softmax, talking heads
    "conv_blocks",  # MBConv blocks (the stem and the MBPool head counted as one each)
    "transformer_layers",
)
_MACS_KINDS = OPERATOR_COUNT_NAMES[:5]


# Counts are sparse while they are summed (an operator class a block lacks has no key): `count_macs` runs in search's
# inner loop, and filling and adding ten keys per block cost it a third of its throughput. `operator_counts` returns
# every class, in `OPERATOR_COUNT_NAMES` order.
def _counts(**values: int) -> dict[str, int]:
    return values


def _add(total: dict[str, int], part: dict[str, int], times: int = 1) -> dict[str, int]:
    for name, value in part.items():
        total[name] = total.get(name, 0) + times * value
    return total


def _macs(counts: dict[str, int]) -> int:
    return sum(counts.get(name, 0) for name in _MACS_KINDS)


def _mbconv_ops(
    c_in: int,
    c_out: int,
    kernel: int,
    expand: int,
    has_expansion: bool,
    se: bool,
    stride: int,
    height: int,
    width: int,
) -> tuple[dict[str, int], int, int]:
    out_h, out_w = _out_size(height, stride), _out_size(width, stride)
    pointwise = 0
    activations = out_h * out_w * c_out
    if has_expansion:
        mid = make_divisible(round(c_in * expand), 8)
        pointwise += height * width * c_in * mid
        activations += height * width * mid
    else:
        mid = c_in
    depthwise = out_h * out_w * mid * kernel * kernel
    activations += out_h * out_w * mid
    if se:
        pointwise += 2 * mid * make_divisible(mid // 4, 8)
    pointwise += out_h * out_w * mid * c_out
    if c_in != c_out:
        pointwise += out_h * out_w * c_in * c_out
    ops = _counts(pointwise_macs=pointwise, depthwise_macs=depthwise, conv_activations=activations, conv_blocks=1)
    return ops, out_h, out_w


def _attention_ops(channels: int, tokens: int, head_dim: int, value_expansion: int) -> tuple[int, int]:
    """(MACs, score elements) of the terms of one transformer layer that grow with tokens²: talking heads and the
    two matmuls."""
    heads = channels // head_dim
    macs = 2 * tokens * tokens * heads * heads + tokens * tokens * (heads * head_dim + value_expansion * channels)
    return macs, heads * tokens * tokens


def _transformer_ops(
    channels: int,
    height: int,
    width: int,
    head_dim: int,
    value_expansion: int,
    mlp_ratio: int = 1,
    num_windows: int | str = 1,
) -> dict[str, int]:
    """One transformer layer on an height×width token grid: q, k, v, proj and the two MLPs (each C → r·C → C), the
    value's 3×3 depthwise conv, and the attention terms, per window over the padded window grid the model computes
    when `num_windows` partitions the grid."""
    tokens = height * width
    value_channels = value_expansion * channels
    linear = tokens * (2 * channels * channels + 2 * channels * value_channels + 4 * mlp_ratio * channels * channels)
    value_conv = tokens * value_channels * 9
    windows_h, windows_w = window_grid(num_windows, height, width)
    if (windows_h, windows_w) == (1, 1):
        attention, scores = _attention_ops(channels, tokens, head_dim, value_expansion)
    else:
        window_h, window_w = -(-height // windows_h), -(-width // windows_w)
        count = -(-height // window_h) * -(-width // window_w)
        attention, scores = _attention_ops(channels, window_h * window_w, head_dim, value_expansion)
        attention, scores = count * attention, count * scores
    # Token tensors per layer: 3 norms + 3 residual adds on C, the value branch on value_channels, and the two MLPs'
    # hidden activations on r·C each.
    token_activations = tokens * (6 * channels + 2 * value_channels + 2 * mlp_ratio * channels)
    return _counts(
        linear_macs=linear,
        depthwise_macs=value_conv,
        attention_macs=attention,
        token_activations=token_activations,
        attention_scores=scores,
        transformer_layers=1,
    )


def check_config(config: Any, function: str) -> NASViTConfig:
    """`config` if it is a NASViTConfig; a TypeError naming what to pass otherwise (a model: its `.config`)."""
    if isinstance(config, NASViTConfig):
        return config
    if isinstance(getattr(config, "config", None), NASViTConfig):
        raise TypeError(f"{function} takes a NASViTConfig, got a {type(config).__name__}: pass model.config.")
    raise TypeError(
        f"{function} takes a NASViTConfig (e.g. model.config or NASViTConfig(search_space=...)), got "
        f"{type(config).__name__}."
    )


def check_label_count(num_labels: Any, default: int) -> int:
    """`num_labels` (None: the config's `default`) checked to be an int in [0, 1000000], the config's own bound."""
    if num_labels is None:
        return default
    if isinstance(num_labels, bool) or not isinstance(num_labels, numbers.Integral):
        raise TypeError(f"num_labels must be an int (or None: the config's), got {num_labels!r}.")
    if not 0 <= num_labels <= 1_000_000:
        raise ValueError(f"num_labels must be in [0, 1000000] (0: no classifier), got {num_labels}.")
    return int(num_labels)


def check_image_size(image_size: Any) -> tuple[int, int]:
    """(height, width) of an `image_size` given as a positive int side or a (height, width) pair of them."""
    pair = (image_size, image_size) if not isinstance(image_size, (tuple, list)) else tuple(image_size)
    if len(pair) != 2:
        raise ValueError(f"image_size must be a side or a (height, width) pair, got {image_size!r}.")
    for side in pair:
        if isinstance(side, bool) or not isinstance(side, numbers.Integral):
            raise TypeError(
                f"image_size must be a positive int or a (height, width) pair of them, got {image_size!r}."
            )
        if side < 1:
            raise ValueError(f"image_size must be positive, got {image_size!r}.")
    return int(pair[0]), int(pair[1])


class _SpaceLayout:
    """The stage layout the counters need from a search space (strides, expansion, SE, which stages are transformers),
    precomputed once per space (search calls them ~10^4 times)."""

    def __init__(self, space: dict[str, Any]):
        self.space = space  # held so the id used as cache key stays unique
        self.stem_stride = space["first_conv"]["s"]
        self.stages = [
            (name, max(space[name]["t"]) != 1, space[name]["se"], space[name]["s"], name in TRANSFORMER_STAGES)
            for name in BODY_STAGES
        ]


_LAYOUTS: dict[int, _SpaceLayout] = {}


def _layout(config: NASViTConfig) -> _SpaceLayout:
    space = config.search_space
    layout = _LAYOUTS.get(id(space))
    if layout is None or layout.space is not space:
        if len(_LAYOUTS) > 64:
            _LAYOUTS.clear()
        layout = _LAYOUTS[id(space)] = _SpaceLayout(space)
    return layout


def _stage_ops(
    config: NASViTConfig,
    arch: dict[str, Any] | None,
    image_size: tuple[int, int] | None,
    validate: bool,
    num_windows: int | str | list[int | str] | None,
) -> tuple[dict[str, Any], list[tuple[str, dict[str, int], tuple[int, int]]]]:
    """(the arch, [(stage name, operator counts, output (h, w))] for the stem and every body stage)."""
    if arch is None:
        arch = config.arch
    elif validate:
        arch = config.validate_arch(arch)
    layout = _layout(config)
    height, width = check_image_size(image_size) if image_size is not None else (arch["resolution"],) * 2
    height, width = _out_size(height, layout.stem_stride), _out_size(width, layout.stem_stride)
    per_stage = arch_per_stage(arch)
    override = config.num_windows if num_windows is None else normalize_num_windows(num_windows)
    windows = dict(zip(TRANSFORMER_STAGES, resolve_num_windows(arch, override)))
    head_dim, value_expansion = config.head_dim, config.value_expansion
    channels = per_stage["first_conv"]["width"]
    stem = _counts(
        stem_conv_macs=height * width * channels * config.num_channels * 9,
        conv_activations=height * width * channels,
        conv_blocks=1,
    )
    result = [("first_conv", stem, (height, width))]
    for name, has_expansion, se, stride, is_transformer in layout.stages:
        values = per_stage[name]
        c_out, depth, kernel, expand = values["width"], values["depth"], values["kernel_size"], values["expand_ratio"]
        ops, height, width = _mbconv_ops(channels, c_out, kernel, expand, has_expansion, se, stride, height, width)
        channels = c_out
        if depth > 1:
            if is_transformer:
                layer = _transformer_ops(
                    channels, height, width, head_dim, value_expansion, values["mlp_ratio"], windows[name]
                )
            else:
                layer = _mbconv_ops(channels, channels, kernel, expand, has_expansion, se, 1, height, width)[0]
            _add(ops, layer, depth - 1)
        result.append((name, ops, (height, width)))
    return arch, result


def stage_macs(
    config: NASViTConfig,
    arch: dict[str, Any] | None = None,
    image_size: tuple[int, int] | None = None,
    validate: bool = True,
    num_windows: int | str | list[int | str] | None = None,
) -> list[tuple[str, int, tuple[int, int]]]:
    """MACs of the stem and of every body stage, with each one's output feature-map size: `[(name, macs, (h, w))]`.

    `image_size` overrides the arch's square resolution (e.g. for dense prediction on larger inputs). `validate=False`
    skips checking the arch against the search space (for callers that generated it from the space themselves).
    The attention windows are the model's: `num_windows` (k or "auto", one or one per transformer stage) where
    given, else the config's runtime `num_windows` where set, else the arch's.
    """
    check_config(config, "stage_macs")
    _, stages = _stage_ops(config, arch, image_size, validate, num_windows)
    return [(name, _macs(ops), size) for name, ops, size in stages]


def _head_ops(config: NASViTConfig, arch: dict[str, Any], size: tuple[int, int], num_labels: int) -> dict[str, int]:
    """The MBPool head (1x1 expansion to 6·C, pooling, feature mix) and the classifier."""
    height, width = size
    c7, c_last = arch["width"][-2], arch["width"][-1]
    pointwise = height * width * c7 * 6 * c7 + 6 * c7 * c_last + c_last * num_labels
    return _counts(pointwise_macs=pointwise, conv_activations=height * width * 6 * c7, conv_blocks=1)


def count_macs(
    config: NASViTConfig, arch: dict[str, Any] | None = None, num_labels: int | None = None, validate: bool = True
) -> int:
    """Multiply-accumulates per image of the subnet `arch` (default: the config's active arch), the paper's
    convention, including the MBPool head and the classifier (`num_labels` defaults to the config's).
    `validate=False` skips checking the arch against the search space (for archs generated from the space)."""
    return _macs(_subnet_counts(config, arch, num_labels, validate, "count_macs"))


def operator_counts(
    config: NASViTConfig, arch: dict[str, Any] | None = None, num_labels: int | None = None, validate: bool = True
) -> dict[str, int]:
    """Per-image counts of the subnet `arch` by operator class (`OPERATOR_COUNT_NAMES`): MACs by kind of operator
    (their sum is `count_macs`), the activation elements element-wise and normalisation operators touch, and the
    number of blocks. What search's latency model is fitted on (`nasvit_hf.search.latency_features`)."""
    total = _subnet_counts(config, arch, num_labels, validate, "operator_counts")
    return {name: total.get(name, 0) for name in OPERATOR_COUNT_NAMES}


def _subnet_counts(
    config: NASViTConfig, arch: dict[str, Any] | None, num_labels: int | None, validate: bool, function: str
) -> dict[str, int]:
    """The sparse operator counts of the whole subnet: its stages and the head (`function` names the caller in a
    bad-argument error)."""
    num_labels = check_label_count(num_labels, check_config(config, function).num_labels)
    arch, stages = _stage_ops(config, arch, None, validate, None)
    total = _head_ops(config, arch, stages[-1][2], num_labels)
    for _, ops, _ in stages:
        _add(total, ops)
    return total


def count_parameters(config: NASViTConfig, arch: dict[str, Any] | None = None, num_labels: int | None = None) -> int:
    """Number of parameters of the standalone subnet `arch` (what `extract_subnet` keeps), buffers excluded."""
    num_labels = check_label_count(num_labels, check_config(config, "count_parameters").num_labels)
    arch = config.validate_arch(arch) if arch is not None else config.arch
    space = config.search_space
    per_stage = arch_per_stage(arch)
    channels = per_stage["first_conv"]["width"]
    total = config.num_channels * channels * 9 + 2 * channels
    table_cells = 8 * config.switchable_scaling_depth_slots if config.switchable_scaling in ("tokens", "width") else 1
    side = 2 * config.max_relative_position - 1
    for name in BODY_STAGES:
        spec, values = space[name], per_stage[name]
        c_out, depth, kernel, expand = values["width"], values["depth"], values["kernel_size"], values["expand_ratio"]
        blocks = [(channels, c_out)] + ([] if name in TRANSFORMER_STAGES else [(c_out, c_out)] * (depth - 1))
        for c_in, c_o in blocks:
            mid = make_divisible(round(c_in * expand), 8) if max(spec["t"]) != 1 else c_in
            if max(spec["t"]) != 1:
                total += c_in * mid + 2 * mid
            total += mid * kernel * kernel + 2 * mid
            if spec["se"]:
                se_mid = make_divisible(mid // 4, 8)
                total += 2 * mid * se_mid + se_mid + mid
            total += mid * c_o + 2 * c_o + (c_in * c_o if c_in != c_o else 0)
        if name in TRANSFORMER_STAGES:
            c, heads, vc = c_out, c_out // config.head_dim, config.value_expansion * c_out
            layer = 3 * 2 * c  # norms
            layer += 2 * (c * c + c) + (c * vc + vc) + vc * 9 + (vc * c + c)  # q, k, v, value conv, proj
            layer += 2 * (heads * heads + heads) + side * side * heads  # talking heads, relative position table
            hidden = values["mlp_ratio"] * c
            layer += 2 * ((c * hidden + hidden) + (hidden * c + c))  # two MLPs, C -> r·C -> C
            if config.switchable_scaling != "none":
                layer += 2 * table_cells * c
            total += (depth - 1) * layer
        channels = c_out
    c_last = per_stage["last_conv"]["width"]
    total += channels * 6 * channels + 2 * 6 * channels + 6 * channels * c_last
    if num_labels > 0:
        total += c_last * num_labels + num_labels
    return total
