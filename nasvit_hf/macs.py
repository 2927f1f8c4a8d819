"""Analytic multiply-accumulate and parameter counts of NASViT subnets.

The paper's "FLOPs" are multiply-accumulates (MACs) of convolutions, linear layers and the two attention matmuls;
normalisation, activations, softmax, pooling and additions are not counted. Counting from the arch alone (no forward
pass) makes it cheap enough for the inner loop of evolutionary search (well over 10,000 archs per second).
"""

from __future__ import annotations

from typing import Any

from .models.configuration_nasvit import (
    BODY_STAGES,
    TRANSFORMER_STAGES,
    NASViTConfig,
    make_divisible,
)

__all__ = ["count_macs", "count_parameters", "stage_macs"]


def _out_size(size: int, stride: int) -> int:
    # A k×k conv with padding k//2 and stride s maps n to ceil(n / s) for odd k.
    return -(-size // stride)


def _mbconv_macs(
    c_in: int,
    c_out: int,
    kernel: int,
    expand: int,
    has_expansion: bool,
    se: bool,
    stride: int,
    height: int,
    width: int,
) -> tuple[int, int, int]:
    out_h, out_w = _out_size(height, stride), _out_size(width, stride)
    macs = 0
    if has_expansion:
        mid = make_divisible(round(c_in * expand), 8)
        macs += height * width * c_in * mid
    else:
        mid = c_in
    macs += out_h * out_w * mid * kernel * kernel
    if se:
        macs += 2 * mid * make_divisible(mid // 4, 8)
    macs += out_h * out_w * mid * c_out
    if c_in != c_out:
        macs += out_h * out_w * c_in * c_out
    return macs, out_h, out_w


def _transformer_macs(channels: int, tokens: int, head_dim: int, value_expansion: int) -> int:
    heads = channels // head_dim
    value_channels = value_expansion * channels
    linear = tokens * (2 * channels * channels + 2 * channels * value_channels + 4 * channels * channels)
    value_conv = tokens * value_channels * 9
    talking_heads = 2 * tokens * tokens * heads * heads
    matmuls = tokens * tokens * (heads * head_dim + value_channels)
    return linear + value_conv + talking_heads + matmuls


def stage_macs(
    config: NASViTConfig, arch: dict[str, Any] | None = None, image_size: tuple[int, int] | None = None
) -> list[tuple[str, int, tuple[int, int]]]:
    """MACs of the stem and of every body stage, with each one's output feature-map size: `[(name, macs, (h, w))]`.

    `image_size` overrides the arch's square resolution (e.g. for dense prediction on larger inputs).
    """
    arch = config.validate_arch(arch) if arch is not None else config.arch
    space = config.search_space
    height, width = image_size if image_size is not None else (arch["resolution"], arch["resolution"])
    stride = space["first_conv"]["s"]
    height, width = _out_size(height, stride), _out_size(width, stride)
    channels = arch["width"][0]
    result = [("first_conv", height * width * channels * config.num_channels * 9, (height, width))]
    for index, name in enumerate(BODY_STAGES):
        spec = space[name]
        c_out, depth = arch["width"][index + 1], arch["depth"][index]
        kernel, expand = arch["kernel_size"][index], arch["expand_ratio"][index]
        has_expansion = max(spec["t"]) != 1
        macs, height, width = _mbconv_macs(
            channels, c_out, kernel, expand, has_expansion, spec["se"], spec["s"], height, width
        )
        channels = c_out
        if name in TRANSFORMER_STAGES:
            macs += (depth - 1) * _transformer_macs(channels, height * width, config.head_dim, config.value_expansion)
        else:
            for _ in range(depth - 1):
                macs += _mbconv_macs(channels, channels, kernel, expand, has_expansion, spec["se"], 1, height, width)[
                    0
                ]
        result.append((name, macs, (height, width)))
    return result


def count_macs(config: NASViTConfig, arch: dict[str, Any] | None = None, num_labels: int | None = None) -> int:
    """Multiply-accumulates per image of the subnet `arch` (default: the config's active arch), the paper's
    convention, including the MBPool head and the classifier (`num_labels` defaults to the config's)."""
    arch = config.validate_arch(arch) if arch is not None else config.arch
    stages = stage_macs(config, arch)
    height, width = stages[-1][2]
    c7, c_last = arch["width"][-2], arch["width"][-1]
    num_labels = config.num_labels if num_labels is None else num_labels
    head = height * width * c7 * 6 * c7 + 6 * c7 * c_last + c_last * num_labels
    return sum(macs for _, macs, _ in stages) + head


def count_parameters(config: NASViTConfig, arch: dict[str, Any] | None = None, num_labels: int | None = None) -> int:
    """Number of parameters of the standalone subnet `arch` (what `extract_subnet` keeps), buffers excluded."""
    arch = config.validate_arch(arch) if arch is not None else config.arch
    space = config.search_space
    channels = arch["width"][0]
    total = config.num_channels * channels * 9 + 2 * channels
    table_cells = 8 * config.layer_scale_depth_slots if config.layer_scale in ("tokens", "width") else 1
    side = 2 * config.max_relative_position - 1
    for index, name in enumerate(BODY_STAGES):
        spec = space[name]
        c_out, depth = arch["width"][index + 1], arch["depth"][index]
        kernel, expand = arch["kernel_size"][index], arch["expand_ratio"][index]
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
            layer += 2 * 2 * (c * c + c)  # two MLPs
            if config.layer_scale != "none":
                layer += 2 * table_cells * c
            total += (depth - 1) * layer
        channels = c_out
    c_last = arch["width"][-1]
    num_labels = config.num_labels if num_labels is None else num_labels
    total += channels * 6 * channels + 2 * 6 * channels + 6 * channels * c_last
    if num_labels > 0:
        total += c_last * num_labels + num_labels
    return total
