"""PyTorch NASViT: a weight-sharing supernet of MBConv and transformer stages, and its subnets.

NASViT: Neural Architecture Search for Efficient Vision Transformers with Gradient Conflict-Aware Supernet
Training (Gong et al., ICLR 2022). Reference code: https://github.com/facebookresearch/NASViT.

Every layer is *dynamic* in the once-for-all sense: it stores the largest weight of its search space and runs the
active sizes by slicing it (`weight[:out, :in]`, centre crop of depthwise kernels, `[:C]` of normalisation
parameters and statistics). A subnet extracted with `extract_subnet` is the same classes with a search space that
has one choice per dimension, so supernet and subnet share one code path. This file is Hub-portable: it imports only
torch, transformers and its sibling files.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils._python_dispatch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import (
    BaseModelOutputWithPoolingAndNoAttention,
    ImageClassifierOutputWithNoAttention,
)

from .configuration_nasvit import NASViTConfig
from .search_space_nasvit import (
    BODY_STAGES,
    STAGE_NAMES,
    TRANSFORMER_STAGES,
    arch_per_stage,
    centre_crop_kernel,
    make_divisible,
    normalize_num_windows,
    sample_arch,
    stage_choices,
    window_grid,
)

__all__ = [
    "WindowGrid",
    "cached_on_equal",
    "fast_path_context_allows",
    "LEGACY_KEY_MAPPING",
    "sample_arch",
    "NASViTSupernetMixin",
    "NASViTForImageClassification",
    "NASViTModel",
    "NASViTPreTrainedModel",
]

# The reference multiplies the switchable scaling tables by 8 / width (8 being its head dimension).
_LAYER_SCALE_NUMERATOR = 8.0
# Byte alignment of torch's CPU allocations (c10's `gAlignment`); see `NASViTPreTrainedModel.realign_cpu_tensors`.
_CPU_ALIGNMENT = 64
# `from_pretrained(..., key_mapping=LEGACY_KEY_MAPPING)` loads checkpoints saved by nasvit_hf 0.1.0, whose attention
# value conv was a bare parameter (`attention.value_conv`; now the NASViTDynamicConv2d `attention.value_conv.weight`).
LEGACY_KEY_MAPPING = {r"attention\.value_conv$": "attention.value_conv.weight"}


def drop_path(hidden_states: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample (residual branch dropped with probability `drop_prob`)."""
    if drop_prob == 0.0 or not training:
        return hidden_states
    keep_prob = 1.0 - drop_prob
    shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
    mask = hidden_states.new_empty(shape).bernoulli_(keep_prob)
    return hidden_states * mask / keep_prob


# ------------------------------------------------------------------------------------------------------------------
# The forward's geometry and small caches (the inference plan in inference_nasvit.py reads them from here)
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class WindowGrid:
    """Swin-style windows of a (height × width) token grid: (grid_h × grid_w) windows of (window_h × window_w)
    tokens, the grid zero-padded by (pad_h, pad_w) at the bottom/right; `key_mask` (1, windows, 1, 1, window tokens)
    is True at the padded keys (None when nothing is padded). The geometry of the modules' windowed attention too."""

    window_h: int
    window_w: int
    grid_h: int
    grid_w: int
    pad_h: int
    pad_w: int
    key_mask: torch.Tensor | None

    @classmethod
    def for_grid(cls, height: int, width: int, windows: tuple[int, int], device) -> WindowGrid:
        window_h, window_w = -(-height // windows[0]), -(-width // windows[1])
        grid_h, grid_w = -(-height // window_h), -(-width // window_w)
        pad_h, pad_w = grid_h * window_h - height, grid_w * window_w - width
        key_mask = None
        if pad_h or pad_w:
            padded = torch.zeros(grid_h * window_h, grid_w * window_w, dtype=torch.bool, device=device)
            padded[height:, :] = True
            padded[:, width:] = True
            padded = padded.view(grid_h, window_h, grid_w, window_w).permute(0, 2, 1, 3)
            key_mask = padded.reshape(1, grid_h * grid_w, 1, 1, window_h * window_w)
        return cls(window_h, window_w, grid_h, grid_w, pad_h, pad_w, key_mask)

    def partition(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, H·W, C) tokens → (B·windows, window tokens, C), window-major within each sample."""
        batch, _, channels = tokens.shape
        tokens = tokens.view(batch, height, width, channels)
        if self.pad_h or self.pad_w:
            tokens = F.pad(tokens, (0, 0, 0, self.pad_w, 0, self.pad_h))
        tokens = tokens.view(batch, self.grid_h, self.window_h, self.grid_w, self.window_w, channels)
        return tokens.permute(0, 1, 3, 2, 4, 5).reshape(-1, self.window_h * self.window_w, channels)

    def merge(self, windows: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
        """The inverse of `partition`, padding dropped: (B·windows, window tokens, C) → (B, H·W, C)."""
        channels = windows.shape[-1]
        tokens = windows.view(batch, self.grid_h, self.grid_w, self.window_h, self.window_w, channels)
        tokens = tokens.permute(0, 1, 3, 2, 4, 5).reshape(
            batch, self.grid_h * self.window_h, self.grid_w * self.window_w, channels
        )
        if self.pad_h or self.pad_w:
            tokens = tokens[:, :height, :width]
        return tokens.reshape(batch, height * width, channels)


def cached_on_equal(store: dict, key, sources: tuple[torch.Tensor, ...], compute: Callable[[], torch.Tensor]):
    """`compute()`, reused from `store[key]` while every tensor in `sources` (small tensors it is computed from)
    equals, exactly, the copy stored with it. Under autograd (a source that requires grad, grad enabled) or while
    compiling, nothing is stored."""
    if torch.compiler.is_compiling() or (torch.is_grad_enabled() and any(s.requires_grad for s in sources)):
        return compute()
    entry = store.get(key)
    if entry is not None and all(_same_bits(copy, source) for copy, source in zip(entry[0], sources)):
        return entry[1]
    value = compute()
    store.clear()  # one entry per store: the current size and weights
    store[key] = (tuple(_snapshot(source) for source in sources), value.detach())
    return value


def _snapshot(tensor: torch.Tensor):
    """What `cached_on_equal` keeps of a source tensor: its raw bytes on the CPU (a memcmp away from the next check;
    torch.equal is several times slower on small tensors), a copy elsewhere."""
    tensor = tensor.detach()
    if tensor.device.type == "cpu":
        return (tensor.shape, tensor.dtype, tensor.numpy().tobytes())
    return (tensor.shape, tensor.dtype, tensor.clone())


def _same_bits(snapshot, source: torch.Tensor) -> bool:
    """Whether `source` holds exactly what `_snapshot` recorded (bit for bit: a NaN matches the same NaN)."""
    shape, dtype, data = snapshot
    if source.shape != shape or source.dtype != dtype:
        return False
    source = source.detach()
    if isinstance(data, bytes):
        return source.device.type == "cpu" and source.numpy().tobytes() == data
    return source.device == data.device and torch.equal(
        source.view(-1).view(torch.uint8), data.view(-1).view(torch.uint8)
    )


def fast_path_context_allows(module) -> bool:
    """The checks every eval-mode fast path shares (the inference plan, the segmentation decode head's folded form):
    `module` is in eval mode with its `inference_fast_path` switch on, nothing traces it with `torch.jit`, no global
    forward hook is set (the fast path would bypass it), and no dispatch mode is active other than the fake-tensor
    mode that `torch.export` / `torch.compile` trace under (e.g. `FlopCounterMode` counts the modules' ops)."""
    if module.training or not module.inference_fast_path:
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    global_hooks = torch.nn.modules.module
    if global_hooks._global_forward_hooks or global_hooks._global_forward_pre_hooks:
        return False
    return not (torch.utils._python_dispatch.is_in_torch_dispatch_mode() and not torch.compiler.is_compiling())


# ------------------------------------------------------------------------------------------------------------------
# Dynamic layers: a max-size weight plus the active sizes
# ------------------------------------------------------------------------------------------------------------------
class NASViTDynamicConv2d(nn.Module):
    """A convolution whose input channels follow the input, output channels and kernel size are chosen per call."""

    def __init__(
        self,
        max_in_channels: int,
        max_out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        depthwise: bool = False,
        bias: bool = False,
    ):
        super().__init__()
        self.max_in_channels = max_in_channels
        self.max_out_channels = max_out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.depthwise = depthwise
        in_per_group = 1 if depthwise else max_in_channels
        self.weight = nn.Parameter(torch.empty(max_out_channels, in_per_group, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(max_out_channels)) if bias else None

    def forward(
        self, hidden_states: torch.Tensor, out_channels: int | None = None, kernel_size: int | None = None
    ) -> torch.Tensor:
        in_channels = hidden_states.shape[1]
        kernel_size = kernel_size or self.kernel_size
        if self.depthwise:
            out_channels, groups = in_channels, in_channels
            weight = self.weight if in_channels == self.max_out_channels else self.weight[:in_channels]
        else:
            out_channels, groups = out_channels or self.max_out_channels, 1
            weight = self.weight
            if out_channels != self.max_out_channels or in_channels != self.max_in_channels:
                weight = weight[:out_channels, :in_channels]
        weight = centre_crop_kernel(weight, kernel_size)
        bias = None
        if self.bias is not None:
            bias = self.bias if out_channels == self.max_out_channels else self.bias[:out_channels]
        return F.conv2d(hidden_states, weight, bias, self.stride, kernel_size // 2, 1, groups)

    def extra_repr(self) -> str:
        kind = "depthwise, " if self.depthwise else ""
        return f"{kind}max_in={self.max_in_channels}, max_out={self.max_out_channels}, k={self.kernel_size}, s={self.stride}"


class NASViTDynamicBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first C channels of the stored parameters and running statistics."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        channels = hidden_states.shape[1]
        if channels == self.num_features:
            return super().forward(hidden_states)
        exponential_average_factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                exponential_average_factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(
            hidden_states,
            self.running_mean[:channels] if self.running_mean is not None else None,
            self.running_var[:channels] if self.running_var is not None else None,
            self.weight[:channels],
            self.bias[:channels],
            use_batch_stats,
            exponential_average_factor,
            self.eps,
        )


class NASViTDynamicLinear(nn.Linear):
    """A linear layer whose input features follow the input and output features are chosen per call."""

    def forward(self, hidden_states: torch.Tensor, out_features: int | None = None) -> torch.Tensor:
        in_features = hidden_states.shape[-1]
        out_features = out_features or self.out_features
        if in_features == self.in_features and out_features == self.out_features:
            return F.linear(hidden_states, self.weight, self.bias)
        bias = self.bias[:out_features] if self.bias is not None else None
        return F.linear(hidden_states, self.weight[:out_features, :in_features], bias)


class NASViTConvBN(nn.Module):
    """Dynamic convolution followed by dynamic BatchNorm and an optional swish."""

    def __init__(
        self,
        config: NASViTConfig,
        max_in_channels: int,
        max_out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        depthwise: bool = False,
        activation: bool = True,
    ):
        super().__init__()
        self.conv = NASViTDynamicConv2d(max_in_channels, max_out_channels, kernel_size, stride, depthwise)
        self.norm = NASViTDynamicBatchNorm2d(
            max_out_channels, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum
        )
        self.activation = activation

    def forward(
        self, hidden_states: torch.Tensor, out_channels: int | None = None, kernel_size: int | None = None
    ) -> torch.Tensor:
        hidden_states = self.norm(self.conv(hidden_states, out_channels, kernel_size))
        return F.silu(hidden_states) if self.activation else hidden_states


class NASViTSqueezeExcite(nn.Module):
    """Squeeze-excite: mean → 1×1 conv → ReLU → 1×1 conv → hard-sigmoid → scale, hidden = make_divisible(C // 4)."""

    def __init__(self, max_channels: int):
        super().__init__()
        max_hidden = make_divisible(max_channels // 4, 8)
        self.reduce = NASViTDynamicConv2d(max_channels, max_hidden, bias=True)
        self.expand = NASViTDynamicConv2d(max_hidden, max_channels, bias=True)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        channels = hidden_states.shape[1]
        scale = hidden_states.mean(dim=(2, 3), keepdim=True)
        scale = F.relu(self.reduce(scale, make_divisible(channels // 4, 8)))
        scale = F.hardsigmoid(self.expand(scale, channels))
        return hidden_states * scale


# ------------------------------------------------------------------------------------------------------------------
# Blocks
# ------------------------------------------------------------------------------------------------------------------
class NASViTMBConvBlock(nn.Module):
    """Inverted-residual block: [1×1 expansion] → depthwise k×k → [SE] → 1×1 projection, plus a shortcut."""

    def __init__(
        self,
        config: NASViTConfig,
        in_channel_choices: list[int],
        out_channel_choices: list[int],
        kernel_sizes: list[int],
        expand_ratios: list[int],
        stride: int,
        use_se: bool,
    ):
        super().__init__()
        max_in, max_out = max(in_channel_choices), max(out_channel_choices)
        self.stride = stride
        self.has_expansion = max(expand_ratios) != 1
        max_mid = make_divisible(round(max_in * max(expand_ratios)), 8) if self.has_expansion else max_in
        self.expansion = NASViTConvBN(config, max_in, max_mid) if self.has_expansion else None
        self.depthwise = NASViTConvBN(config, max_mid, max_mid, max(kernel_sizes), stride, depthwise=True)
        self.squeeze_excite = NASViTSqueezeExcite(max_mid) if use_se else None
        self.projection = NASViTConvBN(config, max_mid, max_out, activation=False)
        # A 1×1 shortcut conv exists only where it can run: some active input width differs from the output width.
        can_differ = any(i != o for i in in_channel_choices for o in out_channel_choices)
        self.shortcut = NASViTDynamicConv2d(max_in, max_out) if can_differ else None
        self.drop_prob = config.drop_connect_rate
        self.active_out_channels = max_out
        self.active_kernel_size = max(kernel_sizes)
        self.active_expand_ratio = max(expand_ratios)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        in_channels = hidden_states.shape[1]
        out_channels = self.active_out_channels
        residual = hidden_states
        if self.expansion is not None:
            mid_channels = make_divisible(round(in_channels * self.active_expand_ratio), 8)
            hidden_states = self.expansion(hidden_states, mid_channels)
        hidden_states = self.depthwise(hidden_states, kernel_size=self.active_kernel_size)
        if self.squeeze_excite is not None:
            hidden_states = self.squeeze_excite(hidden_states)
        hidden_states = self.projection(hidden_states, out_channels)
        hidden_states = drop_path(hidden_states, self.drop_prob, self.training)
        return hidden_states + self._shortcut(residual, out_channels)

    def _shortcut(self, residual: torch.Tensor, out_channels: int) -> torch.Tensor:
        if self.stride == 2:
            # Pad an odd axis by 1 (each axis on its own, so non-square dense-prediction inputs work too).
            padding = (residual.shape[-2] % 2, residual.shape[-1] % 2)
            residual = F.avg_pool2d(residual, kernel_size=2, stride=2, padding=padding, count_include_pad=True)
        if residual.shape[1] != out_channels:
            if self.shortcut is None:
                raise RuntimeError(f"no shortcut conv for {residual.shape[1]} -> {out_channels} channels")
            residual = self.shortcut(residual, out_channels)
        return residual


class NASViTTokenNorm(nn.Module):
    """Layer norm over (tokens, channels) jointly per sample (one-group GroupNorm) with per-channel affine."""

    def __init__(self, max_channels: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(max_channels))
        self.bias = nn.Parameter(torch.zeros(max_channels))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        channels = hidden_states.shape[-1]
        hidden_states = F.layer_norm(hidden_states, hidden_states.shape[1:], eps=self.eps)
        return hidden_states * self.weight[:channels] + self.bias[:channels]


class NASViTMLP(nn.Module):
    """Linear(C→r·C) → swish → Linear(r·C→C) with the active MLP ratio r (the reference fixes r = 1; the paper's
    Table 1 searches r in {1, 2}). Both weights are stored at the largest ratio and width and sliced: the hidden units
    of a smaller ratio are the first r·C of the largest."""

    def __init__(self, max_channels: int, max_ratio: int = 1):
        super().__init__()
        self.fc1 = NASViTDynamicLinear(max_channels, max_ratio * max_channels)
        self.fc2 = NASViTDynamicLinear(max_ratio * max_channels, max_channels)

    def forward(self, hidden_states: torch.Tensor, mlp_ratio: int = 1) -> torch.Tensor:
        channels = hidden_states.shape[-1]
        return self.fc2(F.silu(self.fc1(hidden_states, mlp_ratio * channels)), channels)


class NASViTAttention(nn.Module):
    """Multi-head attention with a depthwise-convolved value, relative position bias and talking heads.

    q, k: C → C (heads of `head_dim`); v: C → value_expansion·C, then a 3×3 depthwise conv on the token grid;
    scores = q·kᵀ/√head_dim + bias → talking heads (proj_l) → softmax → talking heads (proj_w) → ·v → swish → proj.
    """

    def __init__(self, config: NASViTConfig, max_channels: int):
        super().__init__()
        self.head_dim = config.head_dim
        self.value_expansion = config.value_expansion
        self.max_heads = max_channels // config.head_dim
        self.window = config.max_relative_position
        self.q = NASViTDynamicLinear(max_channels, max_channels)
        self.k = NASViTDynamicLinear(max_channels, max_channels)
        self.v = NASViTDynamicLinear(max_channels, config.value_expansion * max_channels)
        value_channels = config.value_expansion * max_channels
        self.value_conv = NASViTDynamicConv2d(value_channels, value_channels, kernel_size=3, depthwise=True)
        self.proj = NASViTDynamicLinear(config.value_expansion * max_channels, max_channels)
        self.talking_heads_pre = NASViTDynamicLinear(self.max_heads, self.max_heads)
        self.talking_heads_post = NASViTDynamicLinear(self.max_heads, self.max_heads)
        side = 2 * self.window - 1
        self.relative_position_bias_table = nn.Parameter(torch.zeros(side * side, self.max_heads))
        self.register_buffer("relative_position_index", self._relative_position_index(self.window), persistent=False)
        self._bias_cache: dict[Any, Any] = {}  # the relative position bias of the last grid (cached_on_equal)
        self._derived_cache: dict[Any, Any] = {}  # the inference plan's talking-heads bias (inference_nasvit.py)
        # Windowed attention (paper, Sec. 3 and 4.2): k windows in total (a perfect square, sqrt(k) per side), or
        # "auto" = side // 7 per side. 1 is global attention, the reference's exact code path.
        self.num_windows: int | str = 1

    @staticmethod
    def _relative_position_index(window: int) -> torch.Tensor:
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        relative = coords[:, :, None] - coords[:, None, :] + (window - 1)
        return relative[0] * (2 * window - 1) + relative[1]

    def relative_position_bias(self, height: int, width: int, num_heads: int) -> torch.Tensor:
        """The (num_heads, L, L) bias for an height×width token grid."""
        if height > self.window or width > self.window:
            raise ValueError(
                f"a {height}x{width} token grid (or attention window) exceeds the relative position table "
                f"({self.window}x{self.window}); for large inputs use windowed attention (config.num_windows='auto' "
                "or model.set_num_windows('auto'), the paper's segmentation setting), or a smaller input."
            )
        table = self.relative_position_bias_table

        def compute() -> torch.Tensor:
            window = self.window
            index = self.relative_position_index.view(window, window, window, window)[:height, :width, :height, :width]
            length = height * width
            return table[index.reshape(-1), :num_heads].view(length, length, num_heads).permute(2, 0, 1).contiguous()

        # Reused while the table is equal to the copy it was gathered from (an exact check of a small tensor).
        return cached_on_equal(
            self._bias_cache, (height, width, num_heads, table.device, table.dtype), (table,), compute
        )

    @staticmethod
    def _talking_heads(scores: torch.Tensor, layer: NASViTDynamicLinear) -> torch.Tensor:
        """A linear map over the head axis of (B, h, L, L) scores, as one (h×h)·(h×L²) matmul per sample."""
        batch, heads, length, _ = scores.shape
        weight, bias = layer.weight[:heads, :heads], layer.bias[:heads]
        mixed = torch.baddbmm(
            bias.view(1, heads, 1), weight.expand(batch, heads, heads), scores.reshape(batch, heads, -1)
        )
        return mixed.view(batch, heads, length, length)

    def forward(self, hidden_states: torch.Tensor, height: int, width: int) -> torch.Tensor:
        batch, length, channels = hidden_states.shape
        heads = channels // self.head_dim
        value_channels = self.value_expansion * channels
        query = self.q(hidden_states, channels).view(batch, length, heads, self.head_dim).transpose(1, 2)
        key = self.k(hidden_states, channels).view(batch, length, heads, self.head_dim).transpose(1, 2)
        value = self.v(hidden_states, value_channels).transpose(1, 2).reshape(batch, value_channels, height, width)
        value = self.value_conv(value)
        windows = self.window_grid(height, width)
        if windows != (1, 1):
            return self._windowed_attention(query, key, value, height, width, windows)
        value = value.reshape(batch, heads, value_channels // heads, length).transpose(-2, -1)

        scores = (query * self.head_dim**-0.5) @ key.transpose(-2, -1)
        scores = scores.add_(self.relative_position_bias(height, width, heads))  # the matmul output is not saved
        scores = self._talking_heads(scores, self.talking_heads_pre).softmax(dim=-1)
        scores = self._talking_heads(scores, self.talking_heads_post)
        context = (scores @ value).transpose(1, 2).reshape(batch, length, value_channels)
        return self.proj(F.silu(context), channels)

    def window_grid(self, height: int, width: int) -> tuple[int, int]:
        """Windows along each axis for an height×width token grid (never more windows than tokens)."""
        return window_grid(self.num_windows, height, width)

    def _windowed_attention(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        height: int,
        width: int,
        windows: tuple[int, int],
    ) -> torch.Tensor:
        """Attention inside each window of a (windows_h × windows_w) partition of the token grid (Swin-style).

        The grid is zero-padded at the bottom/right up to a multiple of the window size; padded keys are masked out
        before the softmax and padded values are zero, so they contribute nothing; padded queries are dropped. The
        value conv already ran on the whole (unpadded) map. The relative position bias is the window's.
        """
        batch, heads, _, head_dim = query.shape
        value_channels = value.shape[1]
        grid = WindowGrid.for_grid(height, width, windows, query.device)
        window_h, window_w, grid_h, grid_w = grid.window_h, grid.window_w, grid.grid_h, grid.grid_w
        pad_h, pad_w = grid.pad_h, grid.pad_w

        def partition(tokens: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B·nW, C, window tokens)
            tokens = F.pad(tokens, (0, pad_w, 0, pad_h))
            channels = tokens.shape[1]
            tokens = tokens.view(batch, channels, grid_h, window_h, grid_w, window_w).permute(0, 2, 4, 1, 3, 5)
            return tokens.reshape(batch * grid_h * grid_w, channels, window_h * window_w)

        query = partition(query.transpose(-2, -1).reshape(batch, heads * head_dim, height, width))
        key = partition(key.transpose(-2, -1).reshape(batch, heads * head_dim, height, width))
        value = partition(value)  # the value stays head-major: channel c belongs to head c // (value_channels / h)
        count, window_length = query.shape[0], query.shape[-1]
        query = query.view(count, heads, head_dim, window_length).transpose(-2, -1)
        key = key.view(count, heads, head_dim, window_length).transpose(-2, -1)
        value = value.view(count, heads, value_channels // heads, window_length).transpose(-2, -1)

        scores = (query * self.head_dim**-0.5) @ key.transpose(-2, -1)
        scores = scores + self.relative_position_bias(window_h, window_w, heads).unsqueeze(0)
        scores = self._talking_heads(scores, self.talking_heads_pre)
        if grid.key_mask is not None:  # (1, nW, 1, 1, window tokens): the padded keys of each window
            scores = scores.view(batch, -1, heads, window_length, window_length).masked_fill(
                grid.key_mask, float("-inf")
            )
            scores = scores.view(count, heads, window_length, window_length)
        scores = self._talking_heads(scores.softmax(dim=-1), self.talking_heads_post)
        context = (scores @ value).transpose(-2, -1).reshape(batch, grid_h, grid_w, value_channels, window_h, window_w)
        context = context.permute(0, 3, 1, 4, 2, 5).reshape(
            batch, value_channels, grid_h * window_h, grid_w * window_w
        )
        context = context[:, :, :height, :width].flatten(2).transpose(1, 2)
        return self.proj(F.silu(context), query.shape[1] * head_dim)


class NASViTTransformerLayer(nn.Module):
    """x += attn(norm1(x))·s_attn; x += mlp2(norm3(x))·s_mlp; x += mlp1(norm2(x))·s_mlp (the reference's order)."""

    def __init__(self, config: NASViTConfig, width_choices: list[int], mlp_ratios: tuple[int, ...] | list[int] = (1,)):
        super().__init__()
        max_channels = max(width_choices)
        self.width_choices = list(width_choices)
        self.scaling_mode = config.switchable_scaling
        self.norm1 = NASViTTokenNorm(max_channels, config.layer_norm_eps)
        self.norm2 = NASViTTokenNorm(max_channels, config.layer_norm_eps)
        self.norm3 = NASViTTokenNorm(max_channels, config.layer_norm_eps)
        self.attention = NASViTAttention(config, max_channels)
        self.mlp1 = NASViTMLP(max_channels, max(mlp_ratios))
        self.mlp2 = NASViTMLP(max_channels, max(mlp_ratios))
        self.active_mlp_ratio = max(mlp_ratios)
        if config.switchable_scaling in ("tokens", "width"):
            table_shape = (config.switchable_scaling_depth_slots, 8, max_channels)
        else:
            table_shape = (1, 1, max_channels)
        if config.switchable_scaling == "none":
            self.layer_scale_attn = self.layer_scale_mlp = None
        else:
            self.layer_scale_attn = nn.Parameter(torch.full(table_shape, config.switchable_scaling_init))
            self.layer_scale_mlp = nn.Parameter(torch.full(table_shape, config.switchable_scaling_init))
        self.drop_prob = config.drop_path_rate
        self.active_depth = 1

    def _scale(self, table: torch.Tensor | None, length: int, channels: int) -> torch.Tensor | float:
        if table is None:
            return 1.0
        if self.scaling_mode == "tokens":
            row = table[self.active_depth, length % 8]
        elif self.scaling_mode == "width":
            row = table[self.active_depth, self.width_choices.index(channels)]
        else:
            row = table[0, 0]
        return row[:channels] * (_LAYER_SCALE_NUMERATOR / channels)

    def forward(self, hidden_states: torch.Tensor, height: int, width: int) -> torch.Tensor:
        length, channels = hidden_states.shape[1:]
        scale_attn = self._scale(self.layer_scale_attn, length, channels)
        scale_mlp = self._scale(self.layer_scale_mlp, length, channels)
        attention = self.attention(self.norm1(hidden_states), height, width)
        hidden_states = hidden_states + drop_path(attention * scale_attn, self.drop_prob, self.training)
        hidden_states = hidden_states + drop_path(
            self.mlp2(self.norm3(hidden_states), self.active_mlp_ratio) * scale_mlp, self.drop_prob, self.training
        )
        hidden_states = hidden_states + drop_path(
            self.mlp1(self.norm2(hidden_states), self.active_mlp_ratio) * scale_mlp, self.drop_prob, self.training
        )
        return hidden_states


class NASViTStage(nn.Module):
    """One body stage: its first block is an MBConv with the stage stride; the rest are MBConv blocks or, in a
    transformer stage, transformer layers over the stage's token grid. Only the first `active_depth` blocks run.
    The transformer layers attend within the arch's `num_windows` unless `num_windows_override` (the model's
    `set_num_windows`) is set."""

    def __init__(self, config: NASViTConfig, name: str, in_channel_choices: list[int]):
        super().__init__()
        spec = config.search_space[name]
        choices = stage_choices(config.search_space, name)
        self.name = name
        self.is_transformer = name in TRANSFORMER_STAGES
        max_depth = max(spec["d"])
        blocks: list[nn.Module] = [
            NASViTMBConvBlock(config, in_channel_choices, spec["c"], spec["k"], spec["t"], spec["s"], spec["se"])
        ]
        for _ in range(max_depth - 1):
            if self.is_transformer:
                blocks.append(NASViTTransformerLayer(config, spec["c"], choices["mlp_ratio"]))
            else:
                blocks.append(NASViTMBConvBlock(config, spec["c"], spec["c"], spec["k"], spec["t"], 1, spec["se"]))
        self.blocks = nn.ModuleList(blocks)
        self.active_depth = max_depth
        self.arch_num_windows = min(choices["num_windows"]) if self.is_transformer else 1
        self.num_windows_override: int | str | None = None

    def set_active(
        self, width: int, depth: int, kernel_size: int, expand_ratio: int, mlp_ratio: int = 1, num_windows: int = 1
    ) -> None:
        self.active_depth = depth
        for block in self.blocks:
            if isinstance(block, NASViTMBConvBlock):
                block.active_out_channels = width
                block.active_kernel_size = kernel_size
                block.active_expand_ratio = expand_ratio
            else:
                block.active_depth = depth
                block.active_mlp_ratio = mlp_ratio
        self.arch_num_windows = num_windows
        self.set_num_windows_override(self.num_windows_override)

    def set_num_windows_override(self, num_windows: int | str | None) -> None:
        """Windows of this stage's attention: `num_windows` (k or "auto") where given, else the arch's."""
        self.num_windows_override = num_windows
        for block in self.blocks[1:]:
            if isinstance(block, NASViTTransformerLayer):
                block.attention.num_windows = self.arch_num_windows if num_windows is None else num_windows

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.blocks[0](hidden_states)
        if self.active_depth == 1:
            return hidden_states
        if not self.is_transformer:
            for block in self.blocks[1 : self.active_depth]:
                hidden_states = block(hidden_states)
            return hidden_states
        batch, channels, height, width = hidden_states.shape
        tokens = hidden_states.flatten(2).transpose(1, 2)
        for layer in self.blocks[1 : self.active_depth]:
            tokens = layer(tokens, height, width)
        return tokens.transpose(1, 2).reshape(batch, channels, height, width)


class NASViTHead(nn.Module):
    """MBPool head: 1×1 conv to 6·C → BN → swish → global average pool → 1×1 conv (no BN) → swish."""

    def __init__(self, config: NASViTConfig, in_channel_choices: list[int]):
        super().__init__()
        max_in = max(in_channel_choices)
        self.final_expand = NASViTConvBN(config, max_in, 6 * max_in)
        self.feature_mix = NASViTDynamicConv2d(6 * max_in, max(config.search_space["last_conv"]["c"]))
        self.active_out_channels = max(config.search_space["last_conv"]["c"])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.final_expand(hidden_states, 6 * hidden_states.shape[1])
        hidden_states = hidden_states.mean(dim=(2, 3), keepdim=True)
        hidden_states = F.silu(self.feature_mix(hidden_states, self.active_out_channels))
        return hidden_states.flatten(1)


# ------------------------------------------------------------------------------------------------------------------
# Pretrained-model plumbing and the supernet API
# ------------------------------------------------------------------------------------------------------------------
class NASViTSupernetMixin:
    """The supernet API of every NASViT model (once-for-all style): run, sample and extract subnets.

    A model class mixes it in before `NASViTPreTrainedModel` and implements two hooks: `get_supernet_body()` (the
    module holding the stem and the body `stages`: the model itself or its `nasvit` body) and `_apply_arch(arch)`
    (set every layer's active sizes). The active arch is `config.arch`; it is validated against
    `config.search_space` and travels with `save_pretrained`.
    """

    config: NASViTConfig

    def get_supernet_body(self) -> nn.Module:
        """The module holding the stem and `stages` (each class says which)."""
        raise NotImplementedError(f"{type(self).__name__} must implement get_supernet_body()")

    def _apply_arch(self, arch: dict[str, Any]) -> None:
        """Set every layer to run `arch` (already validated); each class implements it."""
        raise NotImplementedError(f"{type(self).__name__} must implement _apply_arch(arch)")

    @property
    def active_arch(self) -> dict[str, Any]:
        """The architecture the model currently runs (a copy)."""
        return {key: (list(value) if isinstance(value, list) else value) for key, value in self.config.arch.items()}

    def set_active_subnet(self, arch: dict[str, Any]) -> dict[str, Any]:
        """Run the subnet `arch` (validated against the search space) from now on; returns the clean arch."""
        arch = self.config.validate_arch(arch)
        for module in _inference_plan_models(self):
            module._drop_frozen_weights()
        self._apply_arch(arch)
        self.config.arch = arch
        return self.active_arch

    def set_num_windows(self, num_windows: int | str | list[int | str] | None) -> None:
        """Override the windowed attention of the transformer layers: k, the total number of windows (a perfect
        square: 1 = global attention, 4 = 2×2 windows), `"auto"` (feature-map side // 7 windows per side, at least 1:
        the paper's segmentation setting) or a list with one of those per transformer stage mb4..mb7. `None` removes
        the override: each stage runs its arch's `num_windows` (1 in spaces without that field, the reference).
        Recorded in `config.num_windows`."""
        value = normalize_num_windows(num_windows)
        per_stage = value if isinstance(value, list) else [value] * len(TRANSFORMER_STAGES)
        for stage in self.get_supernet_body().stages:
            if stage.is_transformer:
                stage.set_num_windows_override(per_stage[TRANSFORMER_STAGES.index(stage.name)])
        self.config.num_windows = value

    def sample_max_subnet(self) -> dict[str, Any]:
        return self.set_active_subnet(self.config.largest_arch())

    def sample_min_subnet(self) -> dict[str, Any]:
        return self.set_active_subnet(self.config.smallest_arch())

    def sample_active_subnet(self, generator: torch.Generator | random.Random | None = None) -> dict[str, Any]:
        """Activate a uniformly random subnet (each stage's choices drawn independently from `generator`, see
        `sample_arch`) and return its arch."""
        return self.set_active_subnet(sample_arch(self.config.search_space, generator))

    @torch.no_grad()
    def extract_subnet(self, arch: dict[str, Any] | None = None) -> NASViTSupernetMixin:
        """A standalone model of the same class holding only the weights of `arch` (default: the active arch).

        Its config is this config with the search space collapsed to `arch`; in eval mode it computes exactly what
        this supernet computes when set to `arch`.
        """
        arch = self.config.validate_arch(arch if arch is not None else self.config.arch)
        reference = next(self.parameters())
        with torch.device("meta"):  # every tensor is overwritten below: skip initialisation
            subnet = self.__class__(self.config.subnet_config(arch))
        subnet.to_empty(device=reference.device)
        source = self.state_dict()
        target = subnet.state_dict()
        for name, tensor in target.items():
            if name not in source:
                raise RuntimeError(f"cannot extract {name!r}: it is not in the supernet's state dict")
            tensor.copy_(_slice_to_shape(source[name], tensor.shape))
        for module in subnet.modules():
            if isinstance(module, NASViTAttention):
                module.relative_position_index.copy_(module._relative_position_index(module.window))
        if self.config.switchable_scaling == "width":
            widths = dict(zip(STAGE_NAMES, arch["width"]))
            stage_pairs = zip(subnet.get_supernet_body().stages, self.get_supernet_body().stages)
            for sub_stage, sup_stage in stage_pairs:
                width = widths[sup_stage.name]
                for sub_block, sup_block in zip(sub_stage.blocks, sup_stage.blocks):
                    if isinstance(sub_block, NASViTTransformerLayer):
                        column = sup_block.width_choices.index(width)
                        sub_block.layer_scale_attn[:, 0].copy_(sup_block.layer_scale_attn[:, column, :width])
                        sub_block.layer_scale_mlp[:, 0].copy_(sup_block.layer_scale_mlp[:, column, :width])
        subnet.to(dtype=reference.dtype)
        subnet.train(self.training)
        return subnet


class NASViTPreTrainedModel(PreTrainedModel):
    config_class = NASViTConfig
    config: NASViTConfig
    base_model_prefix = "nasvit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["NASViTTransformerLayer", "NASViTMBConvBlock"]

    def freeze_inference_plan(self):
        """Make the eval-mode inference plan keep the weights it derives (BatchNorm folded into the convolutions,
        norm affines and layer scales into the linears, sliced weights made contiguous) instead of deriving them at
        every call: faster, most of all for small inputs (docs/benchmarks.md), like timm's `reparameterize_model`.

        The derived weights are a snapshot, taken on each input geometry's first eval call: in-place edits of the
        weights after that (`param.data.mul_(...)`, a numpy view) are not seen until the snapshot is dropped, which
        `train()`, `load_state_dict`, `.to()` / `.half()` / ..., `set_active_subnet` and `unfreeze_inference_plan()`
        do. Without this call (the default, and what `pipeline()` runs) the plan never answers with stale weights.
        Returns the model."""
        for module in _inference_plan_models(self):
            module._frozen_plan = {}
        return self

    def unfreeze_inference_plan(self):
        """Undo `freeze_inference_plan()`: drop the snapshot; derive the weights at every call again."""
        for module in _inference_plan_models(self):
            module._frozen_plan = None
        return self

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters kept out of weight decay besides norms and biases (timm's convention, read by
        `nasvit_hf.training.build_param_groups`): the switchable layer-scale tables and the relative-position bias
        tables, as in the reference recipe."""
        return {name for name, _ in self.named_parameters() if "layer_scale" in name or "bias_table" in name}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, NASViTDynamicConv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            if module.running_mean is not None:
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
                module.num_batches_tracked.zero_()
        elif isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, NASViTTokenNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, NASViTAttention):
            nn.init.trunc_normal_(module.relative_position_bias_table, std=std)
            module.relative_position_index.copy_(module._relative_position_index(module.window))
        elif isinstance(module, NASViTTransformerLayer):
            for table in (module.layer_scale_attn, module.layer_scale_mlp):
                if table is not None:
                    table.fill_(self.config.switchable_scaling_init)
        if isinstance(module, NASViTMBConvBlock):
            # The projection BN starts at zero so every block starts as its shortcut (as in the reference).
            nn.init.zeros_(module.projection.norm.weight)

    def tie_weights(self, *args, **kwargs) -> None:
        """`PreTrainedModel.tie_weights` (NASViT ties no weights), then `realign_cpu_tensors`.

        transformers calls `tie_weights(missing_keys=...)` once the checkpoint's tensors are in place (the last step
        of `from_pretrained`), so this is where loaded weights get their own aligned memory (as Wav2Vec2 re-purposes
        this hook to load its adapters), and where a checkpoint from nasvit_hf 0.1.0 gets a clear error."""
        super().tie_weights(*args, **kwargs)
        # A 0.1.0 checkpoint: the attention's other weights loaded, its value conv (under the old key) did not.
        missing_keys = set(kwargs.get("missing_keys") or ())
        missing = sorted(
            key
            for key in missing_keys
            if key.endswith(".attention.value_conv.weight")
            and key.replace(".value_conv.weight", ".q.weight") not in missing_keys
        )
        if missing:
            raise ValueError(
                f"the checkpoint has no {missing[0]!r} ({len(missing)} value convs missing): it was saved by nasvit_hf "
                "0.1.0, which stored them as '...attention.value_conv'. Load it with "
                f"from_pretrained(path, key_mapping={LEGACY_KEY_MAPPING!r}) and save it again."
            )
        self.realign_cpu_tensors()

    @torch.no_grad()
    def realign_cpu_tensors(self) -> int:
        """Move every CPU parameter and buffer that sits at an address not aligned to 64 bytes to fresh memory;
        returns how many moved.

        `from_pretrained` memory-maps safetensors files, so loaded tensors live at the file's byte offsets, which are
        not 64-byte aligned. CPU kernels take other vectorised paths on unaligned data, so outputs would differ from
        the saved model's in the last float bits. Fresh allocations are aligned: a save → load round trip then gives
        bit-identical outputs, and the weights no longer keep the file mapped."""
        moved = 0
        for tensor in [*self.parameters(), *self.buffers()]:
            if tensor.device.type == "cpu" and tensor.numel() and tensor.data_ptr() % _CPU_ALIGNMENT:
                tensor.data = tensor.data.clone()
                moved += 1
        return moved

    def save_pretrained(self, save_directory: str | os.PathLike, *args, save_image_processor: bool = True, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus a matching `preprocessor_config.json` when the folder has none,
        so the folder works with `pipeline("image-classification")` straight away."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if save_image_processor and not os.path.exists(os.path.join(save_directory, "preprocessor_config.json")):
            from .image_processing_nasvit import NASViTImageProcessor

            processor = NASViTImageProcessor.for_resolution(self.config.arch["resolution"])
            if self._auto_class is not None:
                processor.register_for_auto_class("AutoImageProcessor")
            processor.save_pretrained(save_directory)


def _slice_to_shape(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Top-left slice of `tensor` to `shape`; the spatial dims of 4-D (conv) weights are centre-cropped."""
    if tensor.ndim == 0:
        return tensor
    if tensor.ndim == 4:
        tensor = centre_crop_kernel(tensor[: shape[0], : shape[1]], shape[-1])
        return tensor
    return tensor[tuple(slice(0, size) for size in shape)]


def check_pixel_values(
    pixel_values: torch.Tensor | None,
    num_channels: int,
    processor: str = "NASViTImageProcessor",
    dtype: torch.dtype | None = None,
    model: nn.Module | None = None,
) -> torch.Tensor:
    """A clear error unless `pixel_values` is a non-empty float (batch, num_channels, height, width) tensor holding
    data (not on the meta device, unless `model` is); cast to `dtype` (the model's) when given, so
    float64 / half / bfloat16 inputs run on a model of another precision."""
    if pixel_values is None:
        raise ValueError("pixel_values is required: a float tensor of shape (batch, 3, height, width).")
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}.")
    if pixel_values.ndim != 4 or pixel_values.shape[1] != num_channels:
        raise ValueError(
            f"pixel_values must have shape (batch, {num_channels}, height, width), got {tuple(pixel_values.shape)}; "
            f"use the {processor} (it converts grayscale/RGBA to RGB)."
        )
    if 0 in pixel_values.shape:
        raise ValueError(
            f"pixel_values is empty (shape {tuple(pixel_values.shape)}): pass at least one image of at least one pixel."
        )
    if not pixel_values.is_floating_point():
        raise ValueError(
            f"pixel_values must be a float tensor of normalised pixels, got dtype {pixel_values.dtype}; preprocess the "
            f"images with the {processor} (return_tensors='pt')."
        )
    device = next(model.parameters()).device if model is not None and pixel_values.device.type == "meta" else None
    if device is not None and device.type != "meta":
        raise ValueError(
            f"pixel_values is on the meta device (a shape without data) but the model is on {device}: pass real "
            "pixels (e.g. from the image processor), on the model's device."
        )
    if dtype is not None and pixel_values.dtype != dtype:
        pixel_values = pixel_values.to(dtype)
    return pixel_values


def check_classification_labels(
    labels: torch.Tensor, logits: torch.Tensor, num_labels: int, problem_type: str | None
) -> torch.Tensor:
    """Labels for `NASViTForImageClassification`'s loss, with clear errors: any integer dtype (int32, uint8, ...)
    is a class index and comes back as int64; single-label classification refuses non-integer targets (a float
    class index is usually a bug: soft labels have shape (batch, num_labels))."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}.")
    if labels.ndim == 0 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must have one entry per image ({logits.shape[0]}), got shape {tuple(labels.shape)}.")
    is_integer = not labels.is_floating_point() and not labels.is_complex() and labels.dtype != torch.bool
    if is_integer:
        labels = labels.long()
    single_label = problem_type == "single_label_classification" or (
        problem_type is None and num_labels > 1 and labels.ndim == 1
    )
    if single_label and not is_integer:
        raise ValueError(
            f"single-label classification needs integer class indices as labels, got dtype {labels.dtype}; cast "
            f"them with labels.long(), or pass soft labels of shape ({logits.shape[0]}, {num_labels}) with "
            "problem_type='soft_label_classification'."
        )
    if problem_type in ("multi_label_classification", "soft_label_classification") and labels.shape != logits.shape:
        raise ValueError(
            f"{problem_type} needs labels of shape {tuple(logits.shape)} (batch, num_labels), got "
            f"{tuple(labels.shape)}."
        )
    return labels


def build_stem_and_stages(config: NASViTConfig) -> tuple[NASViTConvBN, nn.ModuleList]:
    """The stem conv and the seven body stages of `config`'s search space (shared by the model and the backbone)."""
    space = config.search_space
    stem = NASViTConvBN(config, config.num_channels, max(space["first_conv"]["c"]), 3, space["first_conv"]["s"])
    stages = []
    in_choices = space["first_conv"]["c"]
    for name in BODY_STAGES:
        stages.append(NASViTStage(config, name, in_choices))
        in_choices = space[name]["c"]
    return stem, nn.ModuleList(stages)


def apply_arch_to_stages(stages: nn.ModuleList, arch: dict[str, Any]) -> int:
    """Set every body stage to `arch` (a stage reads its values of every arch field); returns the active stem width."""
    per_stage = arch_per_stage(arch)
    for stage in stages:
        stage.set_active(**per_stage[stage.name])
    return per_stage["first_conv"]["width"]


def _inference_plan_models(model: nn.Module):
    """The modules of `model` (itself included) whose forward runs an inference plan."""
    return (module for module in model.modules() if isinstance(module, NASViTInferencePlanMixin))


class NASViTInferencePlanMixin:
    """The eval-mode inference plan's switch and its one seam, for the models whose forward runs a
    `NASViTInferencePlan` (`NASViTModel`, `NASViTBackbone`).

    The plan lives in `inference_nasvit.py`, which builds on this file (it reads the modules' tensors and the
    geometry above); this file never imports it at import time, so the reference forward reads, runs and trains
    without it. `inference_plan` imports it on the first eval-mode call (a relative import, so `save_pretrained`
    copies the plan's file beside this one and `trust_remote_code` folders run it too). By default the plan holds
    nothing between calls; after `freeze_inference_plan()` it keeps the weights it derives (`_frozen_plan`), which
    `train()`, `load_state_dict`, `.to()` / `.float()` / ... and `set_active_subnet` drop."""

    inference_fast_path: bool = True
    _frozen_plan: dict | None = None  # None: derive from the modules at every call

    def inference_plan(self, pixel_values: torch.Tensor):
        """The `NASViTInferencePlan` that `forward` would run on `pixel_values` now, or None when the modules run
        (training mode, `inference_fast_path = False`, autograd, tracing, hooks: `inference_plan_for`)."""
        if self.training or not self.inference_fast_path:  # inference_plan_for checks the rest, once
            return None
        from .inference_nasvit import inference_plan_for  # the one seam to the fast path (see the class docstring)

        return inference_plan_for(self, pixel_values, self._frozen_plan)

    def _drop_frozen_weights(self) -> None:
        if self._frozen_plan:
            self._frozen_plan = {}

    def train(self, mode: bool = True):
        if mode:
            self._drop_frozen_weights()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self._drop_frozen_weights()
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self._drop_frozen_weights()
        return super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):
        # A copy or a pickle stays frozen but takes no snapshot along (oneDNN's reordered weights cannot be copied).
        state = super().__getstate__()
        return dict(state, _frozen_plan={}) if state.get("_frozen_plan") else state


class NASViTModel(NASViTInferencePlanMixin, NASViTSupernetMixin, NASViTPreTrainedModel):
    """The NASViT backbone: stem conv → seven stages → MBPool head (pooled features).

    In eval mode with no gradient to compute, forward runs the inference plan (BatchNorm folded into the convs, fused
    activations, channels_last: `inference_nasvit.py`), which computes what the modules compute from the weights as
    they are at that call; set `inference_fast_path = False` to run the modules themselves.
    """

    def __init__(self, config: NASViTConfig):
        super().__init__(config)
        self.stem, self.stages = build_stem_and_stages(config)
        self.head = NASViTHead(config, config.search_space["mb7"]["c"])
        self.post_init()
        self._apply_arch(config.arch)
        if config.num_windows is not None:
            self.set_num_windows(config.num_windows)

    def get_supernet_body(self) -> NASViTModel:
        return self

    def _apply_arch(self, arch: dict[str, Any]) -> None:
        self.active_resolution = arch["resolution"]
        self.active_stem_channels = apply_arch_to_stages(self.stages, arch)
        self.head.active_out_channels = arch["width"][-1]

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPoolingAndNoAttention | tuple:
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        pixel_values = check_pixel_values(pixel_values, self.config.num_channels, dtype=self.dtype, model=self)
        resolution = self.active_resolution
        if pixel_values.shape[-2:] != (resolution, resolution):
            pixel_values = F.interpolate(
                pixel_values, size=(resolution, resolution), mode="bicubic", align_corners=False
            )
        plan = self.inference_plan(pixel_values)
        if plan is not None:
            hidden_states, pooled_output, all_hidden_states = plan(pixel_values, bool(output_hidden_states))
        else:
            hidden_states = self.stem(pixel_values, self.active_stem_channels)
            all_hidden_states = [hidden_states] if output_hidden_states else None
            for stage in self.stages:
                hidden_states = stage(hidden_states)
                if all_hidden_states is not None:
                    all_hidden_states.append(hidden_states)
            pooled_output = self.head(hidden_states)
        if not return_dict:
            output = (hidden_states, pooled_output)
            return output + (tuple(all_hidden_states),) if all_hidden_states is not None else output
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=hidden_states,
            pooler_output=pooled_output,
            hidden_states=tuple(all_hidden_states) if all_hidden_states is not None else None,
        )


class NASViTForImageClassification(NASViTSupernetMixin, NASViTPreTrainedModel):
    """NASViT with a linear classifier on the pooled features (identity when `num_labels == 0`)."""

    def __init__(self, config: NASViTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.nasvit = NASViTModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        last_width = max(config.search_space["last_conv"]["c"])
        self.classifier = (
            NASViTDynamicLinear(last_width, config.num_labels) if config.num_labels > 0 else nn.Identity()
        )
        self.post_init()

    def get_supernet_body(self) -> NASViTModel:
        return self.nasvit

    def _apply_arch(self, arch: dict[str, Any]) -> None:
        self.nasvit._apply_arch(arch)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutputWithNoAttention | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.nasvit(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = self._loss(logits, labels) if labels is not None else None
        if not return_dict:
            output = (logits,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss,) + output) if loss is not None else output
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=outputs.hidden_states)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """transformers' image-classification loss (`self.loss_function`) under transformers' `problem_type` rules:
        given, or when None inferred as transformers does (one label: regression; integer labels: single-label
        cross-entropy; otherwise multi-label BCE) and then set on the config by transformers' loss. Integer labels of
        any dtype are class indices. One extension: `problem_type="soft_label_classification"` takes float labels
        shaped like the logits (mixup/cutmix, distillation) as probabilities (torch's `cross_entropy`)."""
        problem_type = self.config.problem_type
        labels = check_classification_labels(labels, logits, self.num_labels, problem_type)
        if problem_type == "soft_label_classification":
            return F.cross_entropy(logits, labels.to(logits.dtype))
        if problem_type is None:  # transformers' rule (ForSequenceClassificationLoss)
            if self.num_labels == 1:
                problem_type = "regression"
            elif labels.dtype == torch.long:  # every integer dtype, as class indices
                problem_type = "single_label_classification"
            else:
                problem_type = "multi_label_classification"
        if problem_type in ("regression", "multi_label_classification"):
            labels = labels.to(logits.dtype)
        elif labels.numel() and (labels.min() < 0 or labels.max() >= self.num_labels):
            raise ValueError(
                f"labels must be class indices in [0, {self.num_labels}), got values in "
                f"[{int(labels.min())}, {int(labels.max())}]."
            )
        return self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
