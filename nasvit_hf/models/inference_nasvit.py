"""Inference fast path for NASViT models in eval mode: the same arithmetic as the modules, with weights prepared once.

When a `NASViTModel` runs in eval mode with nothing that needs gradients, its forward computes exactly what the
modules compute, reorganised for speed; the prepared tensors are cached on the model and rebuilt whenever anything
they were made from changes (see `NASViTInferenceCache`):

- every convolution + BatchNorm is one convolution with the BN folded into its weight and bias (running statistics:
  eval mode only), and its swish runs fused in the oneDNN kernel on CPU (`mkldnn._convolution_pointwise`);
- at small batches (up to 4) on CPU, convolution weights are packed once per input shape into oneDNN's blocked
  layout and the transformer layers' linear weights into MKL's packed GEMM format (`mkl._mkl_linear`), so no call
  re-packs them (a few per cent of a batch-1 forward; up to half of a 1×1 convolution's time on a 4×4 map);
- activations stay in channels_last memory (the layout oneDNN's convolutions and a transformer stage's tokens share,
  so the stage's (B, C, H, W) ↔ (B, H·W, C) conversions are free views);
- in a transformer layer the token norms' affine parameters are folded into the linear layer that follows, q, k and
  v are one matmul with q's 1/√d folded in, the relative position bias is pushed through the first talking-heads
  map once (W·(S + P) + b = W·S + (W·P + b)), and the layer-scale vectors are folded into the output projections.

Nothing here changes the stored parameters, their names or what they mean: training, `state_dict` and
`save_pretrained` see the modules only. Under `torch.export` (ONNX export) the same plan is built inside the traced
graph from the parameters (exporters fold those constants), with standard operators in place of the oneDNN kernels.
This file is Hub-portable: it imports only torch and its sibling configuration file.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils._python_dispatch

from .configuration_nasvit import make_divisible

__all__ = ["NASViTInferenceCache", "NASViTInferencePlan", "fast_path_context_allows"]

# Below this many tokens·batch rows, MKL's GEMM + a separate swish beats oneDNN's fused linear + swish.
_FUSED_LINEAR_MIN_ROWS = 1024
# Batch sizes up to this get convolution weights pre-packed into oneDNN's blocked layout for their input shape (and
# linear weights into MKL's packed GEMM format for their row count), once per shape: at small batches re-packing the
# weights on every call is a large share of a convolution's time. At most this many shapes are packed per weight.
_PACK_MAX_BATCH = 4
_PACK_MAX_SHAPES = 4


def _mkldnn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _mkl_packing_available() -> bool:
    return torch._C.has_mkl and hasattr(torch.ops.mkl, "_mkl_linear")


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


def _centre_crop(weight: torch.Tensor, kernel_size: int) -> torch.Tensor:
    full = weight.shape[-1]
    if kernel_size == full:
        return weight
    start = (full - kernel_size) // 2
    return weight[:, :, start : start + kernel_size, start : start + kernel_size]


def _fold_batchnorm(weight: torch.Tensor, bias: torch.Tensor | None, norm, channels: int):
    """(weight, bias) of conv → BN(eval) as one conv; `norm` is a BatchNorm2d whose first `channels` entries apply."""
    scale = norm.weight[:channels] * torch.rsqrt(norm.running_var[:channels] + norm.eps)
    shift = norm.bias[:channels] - norm.running_mean[:channels] * scale
    if bias is not None:
        shift = shift + bias * scale
    return weight * scale.view(-1, 1, 1, 1), shift


class _Conv:
    """A convolution (BN folded in) with an optional fused activation ("silu" or None)."""

    __slots__ = ("weight", "bias", "stride", "padding", "groups", "activation", "_mkldnn_args", "_packed")

    def __init__(self, weight, bias, stride: int, padding: int, groups: int, activation: str | None):
        self.weight, self.bias = weight, bias
        self.stride, self.padding, self.groups, self.activation = stride, padding, groups, activation
        self._mkldnn_args = (
            [padding, padding],
            [stride, stride],
            [1, 1],
            groups,
            "swish" if activation == "silu" else "none",
            [],
            "",
        )
        self._packed: dict[tuple[int, ...], torch.Tensor] = {}

    def _weight_for(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The weight in oneDNN's layout for this input shape (packed on first use), or the plain weight."""
        if hidden_states.shape[0] > _PACK_MAX_BATCH:
            return self.weight
        shape = tuple(hidden_states.shape)
        packed = self._packed.get(shape)
        if packed is None:
            if len(self._packed) >= _PACK_MAX_SHAPES:
                return self.weight
            padding, stride, dilation = self._mkldnn_args[:3]
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, padding, stride, dilation, self.groups, list(shape)
            )
            self._packed[shape] = packed
        return packed

    def __call__(self, hidden_states: torch.Tensor, fused: bool) -> torch.Tensor:
        if fused:
            weight = self._weight_for(hidden_states)
            return torch.ops.mkldnn._convolution_pointwise(hidden_states, weight, self.bias, *self._mkldnn_args)
        hidden_states = F.conv2d(hidden_states, self.weight, self.bias, self.stride, self.padding, 1, self.groups)
        return F.silu(hidden_states, inplace=True) if self.activation == "silu" else hidden_states


class _Linear:
    """A linear layer; at small batches on CPU its weight is packed once per row count into MKL's GEMM format."""

    __slots__ = ("weight", "bias", "_packed")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight, self.bias = weight, bias
        self._packed: dict[int, torch.Tensor] = {}

    def __call__(self, hidden_states: torch.Tensor, pack: bool) -> torch.Tensor:
        if pack and hidden_states.shape[0] <= _PACK_MAX_BATCH:
            rows = hidden_states.numel() // hidden_states.shape[-1]
            packed = self._packed.get(rows)
            if packed is None and len(self._packed) < _PACK_MAX_SHAPES:
                packed = torch.ops.mkl._mkl_reorder_linear_weight(self.weight.contiguous(), rows)
                self._packed[rows] = packed
            if packed is not None:
                return torch.ops.mkl._mkl_linear(hidden_states, packed, self.weight, self.bias, rows)
        return F.linear(hidden_states, self.weight, self.bias)


@dataclass
class _MBConv:
    expansion: _Conv | None
    depthwise: _Conv
    squeeze_excite: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None
    projection: _Conv
    stride: int
    shortcut: torch.Tensor | None  # 1×1 conv weight where the channel count changes


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


@dataclass
class _TransformerLayer:
    eps: float
    qkv: _Linear
    channels: int
    heads: int
    head_dim: int
    value_conv: _Conv
    talking_pre_weight: torch.Tensor
    talking_pre_bias: torch.Tensor  # (1, heads, L·L): b + W·relative_position_bias
    talking_post_weight: torch.Tensor
    talking_post_bias: torch.Tensor
    proj: _Linear
    mlp: tuple[tuple[_Linear, _Linear], ...]  # (fc1, fc2) of mlp2, then of mlp1: the run order
    windows: WindowGrid | None  # windowed attention (the talking-heads biases are then the window's), or global


@dataclass
class _Stage:
    first: _MBConv
    blocks: list[Any]  # _MBConv or _TransformerLayer
    is_transformer: bool


def _conv_bn(module, in_channels: int, out_channels: int, kernel_size: int, channels_last: bool) -> _Conv:
    """A `NASViTConvBN` at the given active sizes, folded."""
    conv = module.conv
    if conv.depthwise:
        weight, groups, out_channels = conv.weight[:in_channels], in_channels, in_channels
    else:
        weight, groups = conv.weight[:out_channels, :in_channels], 1
    weight = _centre_crop(weight, kernel_size)
    bias = conv.bias[:out_channels] if conv.bias is not None else None
    weight, bias = _fold_batchnorm(weight, bias, module.norm, out_channels)
    if channels_last:
        weight = weight.contiguous(memory_format=torch.channels_last)
    return _Conv(weight, bias, conv.stride, kernel_size // 2, groups, "silu" if module.activation else None)


def _batchnorm_foldable(norm) -> bool:
    return norm.track_running_stats and norm.running_mean is not None and norm.running_var is not None


def _mbconv(block, in_channels: int, channels_last: bool) -> tuple[_MBConv, int]:
    out_channels = block.active_out_channels
    kernel_size = block.active_kernel_size
    mid = in_channels
    expansion = None
    if block.expansion is not None:
        mid = make_divisible(round(in_channels * block.active_expand_ratio), 8)
        expansion = _conv_bn(block.expansion, in_channels, mid, 1, channels_last)
    depthwise = _conv_bn(block.depthwise, mid, mid, kernel_size, channels_last)
    squeeze_excite = None
    if block.squeeze_excite is not None:
        hidden = make_divisible(mid // 4, 8)
        reduce, expand = block.squeeze_excite.reduce, block.squeeze_excite.expand
        squeeze_excite = (
            reduce.weight[:hidden, :mid].flatten(1),
            reduce.bias[:hidden],
            expand.weight[:mid, :hidden].flatten(1),
            expand.bias[:mid],
        )
    projection = _conv_bn(block.projection, mid, out_channels, 1, channels_last)
    shortcut = None
    if in_channels != out_channels:
        if block.shortcut is None:
            raise RuntimeError(f"no shortcut conv for {in_channels} -> {out_channels} channels")
        shortcut = block.shortcut.weight[:out_channels, :in_channels]
        if channels_last:
            shortcut = shortcut.contiguous(memory_format=torch.channels_last)
    return _MBConv(expansion, depthwise, squeeze_excite, projection, block.stride, shortcut), out_channels


def _norm_then_linear(norm, linear, channels: int, out_features: int, scale=None):
    """Weight and bias of linear(norm_affine(x)) as one linear on the affine-free normalised x, times `scale`."""
    weight = linear.weight[:out_features, :channels]
    bias = linear.bias[:out_features]
    gain, shift = norm.weight[:channels], norm.bias[:channels]
    bias = bias + weight @ shift
    weight = weight * gain
    if scale is not None:
        weight, bias = weight * scale.view(-1, 1), bias * scale
    return weight, bias


def _output_linear(linear, in_features: int, channels: int, scale):
    weight, bias = linear.weight[:channels, :in_features], linear.bias[:channels]
    if isinstance(scale, torch.Tensor):
        return weight * scale.view(-1, 1), bias * scale
    return weight, bias


def _transformer_layer(layer, channels: int, height: int, width: int, channels_last: bool) -> _TransformerLayer:
    attention = layer.attention
    length = height * width  # the switchable scaling's token count: the whole grid's, windowed or not
    heads = channels // attention.head_dim
    value_channels = attention.value_expansion * channels
    scale_attn = layer._scale(layer.layer_scale_attn, length, channels)
    scale_mlp = layer._scale(layer.layer_scale_mlp, length, channels)
    norm = layer.norm1
    query_scale = torch.full((channels,), attention.head_dim**-0.5, dtype=norm.weight.dtype, device=norm.weight.device)
    query = _norm_then_linear(norm, attention.q, channels, channels, query_scale)
    key = _norm_then_linear(norm, attention.k, channels, channels)
    value = _norm_then_linear(norm, attention.v, channels, value_channels)
    value_conv = attention.value_conv.weight[:value_channels]
    if channels_last:
        value_conv = value_conv.contiguous(memory_format=torch.channels_last)
    pre, post = attention.talking_heads_pre, attention.talking_heads_post
    pre_weight, post_weight = pre.weight[:heads, :heads], post.weight[:heads, :heads]
    windows = None
    grid = attention.window_grid(height, width)
    if grid != (1, 1):
        windows = WindowGrid.for_grid(height, width, grid, pre_weight.device)
        height, width = windows.window_h, windows.window_w
    window_length = height * width
    position_bias = attention.relative_position_bias(height, width, heads).reshape(heads, window_length**2)
    pre_bias = torch.addmm(pre.bias[:heads].view(heads, 1), pre_weight, position_bias)
    mlp = []
    for mlp_module, mlp_norm in ((layer.mlp2, layer.norm3), (layer.mlp1, layer.norm2)):
        hidden = layer.active_mlp_ratio * channels  # the MLP ratio (paper space); 1 in the reference space
        fc1 = _norm_then_linear(mlp_norm, mlp_module.fc1, channels, hidden)
        fc2 = _output_linear(mlp_module.fc2, hidden, channels, scale_mlp)
        mlp.append((_Linear(*fc1), _Linear(*fc2)))
    return _TransformerLayer(
        eps=norm.eps,
        qkv=_Linear(torch.cat([query[0], key[0], value[0]]), torch.cat([query[1], key[1], value[1]])),
        channels=channels,
        heads=heads,
        head_dim=attention.head_dim,
        value_conv=_Conv(value_conv, None, 1, 1, value_channels, None),
        talking_pre_weight=pre_weight,
        talking_pre_bias=pre_bias.unsqueeze(0),
        talking_post_weight=post_weight,
        talking_post_bias=post.bias[:heads].view(1, heads, 1),
        proj=_Linear(*_output_linear(attention.proj, value_channels, channels, scale_attn)),
        mlp=tuple(mlp),
        windows=windows,
    )


def _linear_silu(hidden_states: torch.Tensor, linear: _Linear, fused: bool, pack: bool) -> torch.Tensor:
    if fused and hidden_states.shape[0] * hidden_states.shape[1] >= _FUSED_LINEAR_MIN_ROWS:
        return torch.ops.mkldnn._linear_pointwise(hidden_states, linear.weight, linear.bias, "swish", [], "")
    return F.silu(linear(hidden_states, pack), inplace=True)


class NASViTInferencePlan:
    """The active subnet of a `NASViTModel` (or `NASViTBackbone`) as prepared tensors, for one input size.

    Args:
        model: the `NASViTModel` or `NASViTBackbone` (eval mode; BatchNorm with running statistics).
        fused_kernels: run convolutions (and large linear + swish) through oneDNN's fused kernels (CPU, float32); at
            batch sizes up to 4 the convolution weights are packed into oneDNN's layout and the transformer layers'
            linear weights into MKL's packed GEMM format, once per input shape.
        channels_last: keep activations (and convolution weights) in channels_last memory.
        height, width: the input size it runs on (default: the model's active resolution, square); the relative
            position biases and the attention windows are prepared for it.
        num_stages: run only the first `num_stages` body stages (a backbone whose last requested map is earlier);
            default all. The MBPool head is prepared when the model has one and every stage runs.
    """

    def __init__(
        self,
        model,
        fused_kernels: bool,
        channels_last: bool,
        height: int | None = None,
        width: int | None = None,
        num_stages: int | None = None,
    ):
        self.fused_kernels = fused_kernels
        self.pack_linear = fused_kernels and _mkl_packing_available()
        self.channels_last = channels_last
        if height is None or width is None:
            height = width = model.active_resolution
        self.input_size = (height, width)
        in_channels = model.config.num_channels
        stem = model.stem
        self.stem = _conv_bn(stem, in_channels, model.active_stem_channels, stem.conv.kernel_size, channels_last)
        channels = model.active_stem_channels
        height, width = (height - 1) // stem.conv.stride + 1, (width - 1) // stem.conv.stride + 1
        stages = list(model.stages)[:num_stages]
        self.stages: list[_Stage] = []
        for stage in stages:
            first, channels = _mbconv(stage.blocks[0], channels, channels_last)
            if stage.blocks[0].stride == 2:
                height, width = (height - 1) // 2 + 1, (width - 1) // 2 + 1
            blocks: list[Any] = []
            for block in list(stage.blocks)[1 : stage.active_depth]:  # (slicing a ModuleList registers)
                if stage.is_transformer:
                    blocks.append(_transformer_layer(block, channels, height, width, channels_last))
                else:
                    blocks.append(_mbconv(block, channels, channels_last)[0])
            self.stages.append(_Stage(first, blocks, stage.is_transformer))
        self.final_expand = None
        head = model._modules.get("head")  # NASViTModel has the MBPool head, NASViTBackbone none
        if head is not None and len(stages) == len(model.stages):
            self.final_expand = _conv_bn(head.final_expand, channels, 6 * channels, 1, channels_last)
            out_channels = head.active_out_channels
            self.feature_mix_weight = head.feature_mix.weight[:out_channels, : 6 * channels].flatten(1)
            mix_bias = head.feature_mix.bias
            self.feature_mix_bias = mix_bias[:out_channels] if mix_bias is not None else None

    # ---------------------------------------------------------------------------------------------------------------
    def _mbconv(self, block: _MBConv, hidden_states: torch.Tensor) -> torch.Tensor:
        fused = self.fused_kernels
        residual = hidden_states
        if block.expansion is not None:
            hidden_states = block.expansion(hidden_states, fused)
        hidden_states = block.depthwise(hidden_states, fused)
        if block.squeeze_excite is not None:
            reduce_weight, reduce_bias, expand_weight, expand_bias = block.squeeze_excite
            scale = F.relu(F.linear(hidden_states.mean(dim=(2, 3)), reduce_weight, reduce_bias), inplace=True)
            scale = F.hardsigmoid(F.linear(scale, expand_weight, expand_bias), inplace=True)
            hidden_states = hidden_states.mul_(scale.view(*scale.shape, 1, 1))
        hidden_states = block.projection(hidden_states, fused)
        if block.stride == 2:
            padding = (residual.shape[-2] % 2, residual.shape[-1] % 2)
            residual = F.avg_pool2d(residual, kernel_size=2, stride=2, padding=padding, count_include_pad=True)
        if block.shortcut is not None:
            residual = F.conv2d(residual, block.shortcut)
        return hidden_states.add_(residual)

    def _transformer_layer(self, layer: _TransformerLayer, tokens: torch.Tensor, height: int, width: int):
        """One transformer layer on (B, L, C) tokens; updates `tokens` in place and returns it."""
        batch, length, channels = tokens.shape
        heads, head_dim = layer.heads, layer.head_dim
        normed = F.layer_norm(tokens, tokens.shape[1:], eps=layer.eps)
        pack = self.pack_linear
        qkv = layer.qkv(normed, pack)
        value = qkv[..., 2 * channels :].view(batch, height, width, -1).permute(0, 3, 1, 2)
        if self.channels_last:
            value = value.contiguous(memory_format=torch.channels_last)
        value = layer.value_conv(value, self.fused_kernels)
        value_channels = value.shape[1]
        value = value.permute(0, 2, 3, 1).reshape(batch, length, value_channels)
        if layer.windows is None:
            query = qkv[..., :channels].view(batch, length, heads, head_dim).transpose(1, 2)
            key_t = qkv[..., channels : 2 * channels].view(batch, length, heads, head_dim).permute(0, 2, 3, 1)
            value = value.view(batch, length, heads, value_channels // heads).transpose(1, 2)
            context = self._attention_core(layer, query, key_t, value)
            context = context.transpose(1, 2).reshape(batch, length, value_channels)
        else:
            context = self._windowed_attention_core(layer, qkv, value, height, width)
        context = F.silu(context, inplace=True)
        tokens = tokens.add_(layer.proj(context, pack))
        for fc1, fc2 in layer.mlp:
            normed = F.layer_norm(tokens, tokens.shape[1:], eps=layer.eps)
            hidden = _linear_silu(normed, fc1, self.fused_kernels, pack)
            tokens = tokens.add_(fc2(hidden, pack))
        return tokens

    @staticmethod
    def _attention_core(
        layer: _TransformerLayer, query: torch.Tensor, key_t: torch.Tensor, value: torch.Tensor, key_mask=None
    ) -> torch.Tensor:
        """softmax(talking_pre(q·kᵀ) + bias) → talking_post → ·v for (N, h, L, d) q, (N, h, d, L) kᵀ, (N, h, L, dv) v;
        `key_mask` (N / windows, windows, 1, 1, L) sets the padded keys' scores to -inf before the softmax."""
        count, heads, length = query.shape[:3]
        scores = torch.matmul(query, key_t).view(count, heads, length * length)
        scores = torch.baddbmm(layer.talking_pre_bias, layer.talking_pre_weight.expand(count, heads, heads), scores)
        if key_mask is not None:
            windows = key_mask.shape[1]
            scores = scores.view(-1, windows, heads, length, length).masked_fill_(key_mask, float("-inf"))
        scores = scores.view(count, heads, length, length).softmax(dim=-1).view(count, heads, length * length)
        scores = torch.baddbmm(layer.talking_post_bias, layer.talking_post_weight.expand(count, heads, heads), scores)
        return torch.matmul(scores.view(count, heads, length, length), value)

    def _windowed_attention_core(
        self, layer: _TransformerLayer, qkv: torch.Tensor, value: torch.Tensor, height: int, width: int
    ) -> torch.Tensor:
        """Attention inside each window (as the modules' `_windowed_attention`): the (B, L, ·) q, k (from `qkv`) and
        conv'd v are partitioned into windows, padded keys masked, and the (B, L, value channels) context returned."""
        windows, batch, channels = layer.windows, qkv.shape[0], layer.channels
        heads, head_dim = layer.heads, layer.head_dim
        query_key = windows.partition(qkv[..., : 2 * channels], height, width)
        value = windows.partition(value, height, width)
        count, window_length = query_key.shape[:2]
        query_key = query_key.view(count, window_length, 2, heads, head_dim)
        query = query_key[:, :, 0].transpose(1, 2)
        key_t = query_key[:, :, 1].permute(0, 2, 3, 1)
        value_channels = value.shape[-1]
        value = value.view(count, window_length, heads, value_channels // heads).transpose(1, 2)
        context = self._attention_core(layer, query, key_t, value, windows.key_mask)
        context = context.transpose(1, 2).reshape(count, window_length, value_channels)
        return windows.merge(context, batch, height, width)

    def _stage(self, stage: _Stage, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self._mbconv(stage.first, hidden_states)
        if not stage.is_transformer:
            for block in stage.blocks:
                hidden_states = self._mbconv(block, hidden_states)
            return hidden_states
        if not stage.blocks:
            return hidden_states
        batch, channels, height, width = hidden_states.shape
        # channels_last (B, C, H, W) memory is (B, H·W, C): a view; otherwise a copy into a fresh token tensor.
        tokens = hidden_states.flatten(2).transpose(1, 2)
        if not tokens.is_contiguous():
            tokens = tokens.contiguous()
        for layer in stage.blocks:
            tokens = self._transformer_layer(layer, tokens, height, width)
        return tokens.transpose(1, 2).reshape(batch, channels, height, width)

    def _stage_outputs(self, pixel_values: torch.Tensor):
        """The stem's output, then each stage's, in the plan's (channels_last) layout."""
        hidden_states = self.stem(pixel_values, self.fused_kernels)
        yield hidden_states
        for stage in self.stages:
            hidden_states = self._stage(stage, hidden_states)
            yield hidden_states

    def feature_maps(self, pixel_values: torch.Tensor, indices) -> dict[int, torch.Tensor]:
        """{index: map} of the stem (index 0) and stage outputs (1 = mb1, ...) named by `indices`, in the modules'
        (contiguous) layout: fresh tensors, which the next stage never updates in place."""
        wanted = set(indices)
        return {i: state.contiguous() for i, state in enumerate(self._stage_outputs(pixel_values)) if i in wanted}

    def __call__(
        self, pixel_values: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """(last_hidden_state, pooled_output, hidden_states or None), as the modules would return them."""
        if self.final_expand is None:
            raise RuntimeError(
                "this plan has no MBPool head (a backbone's, or one for fewer stages): use feature_maps"
            )
        all_hidden_states = [] if output_hidden_states else None
        for hidden_states in self._stage_outputs(pixel_values):
            if all_hidden_states is not None:
                all_hidden_states.append(hidden_states)
        pooled = self.final_expand(hidden_states, self.fused_kernels).mean(dim=(2, 3))
        pooled = F.silu(F.linear(pooled, self.feature_mix_weight, self.feature_mix_bias), inplace=True)
        if all_hidden_states is not None:
            # Callers get the modules' (contiguous) layout; the tensors are fresh, never updated in place later.
            all_hidden_states = [state.contiguous() for state in all_hidden_states]
            return all_hidden_states[-1], pooled, tuple(all_hidden_states)
        return hidden_states.contiguous(), pooled, None


# Registering a parameter, buffer or submodule on a module that a plan was built from (e.g. an adapter library
# swapping a layer) bumps this counter, so a plan built before the swap is never used after it.
_STRUCTURE_GENERATION = [0]
_PLANNED_MODULE_SET: weakref.WeakSet = weakref.WeakSet()


def _bump_generation(module, name, value) -> None:
    if module in _PLANNED_MODULE_SET:
        _STRUCTURE_GENERATION[0] += 1


torch.nn.modules.module.register_module_parameter_registration_hook(_bump_generation)
torch.nn.modules.module.register_module_buffer_registration_hook(_bump_generation)
torch.nn.modules.module.register_module_module_registration_hook(_bump_generation)

# The modules a plan knows how to run (by class name, defined in modeling_nasvit.py), and the torch containers.
_PLANNED_MODULES = {
    "NASViTConvBN",
    "NASViTDynamicConv2d",
    "NASViTDynamicBatchNorm2d",
    "NASViTDynamicLinear",
    "NASViTSqueezeExcite",
    "NASViTMBConvBlock",
    "NASViTTokenNorm",
    "NASViTMLP",
    "NASViTAttention",
    "NASViTTransformerLayer",
    "NASViTStage",
    "NASViTHead",
}


def _is_planned(module) -> bool:
    cls = type(module)
    if cls is torch.nn.ModuleList:
        return True
    return cls.__name__ in _PLANNED_MODULES and cls.__module__.rpartition(".")[2] == "modeling_nasvit"


class NASViTInferenceCache:
    """Holds a model's `NASViTInferencePlan` and says when it may be used; rebuilt when anything it depends on changes.

    The plan is used when the model is in eval mode, no gradient can flow to a parameter (`torch.no_grad`,
    `torch.inference_mode`, or frozen parameters), the model is not being compiled or traced (under `torch.export`,
    the ONNX exporter's front end, a plan is built inside the traced graph instead), every BatchNorm has running
    statistics, every submodule is one of NASViT's own (no adapter or quantization wrapper) and none has a forward hook
    (the plan would bypass it). It is keyed on every parameter and buffer's storage and version counter (so optimizer
    steps, `load_state_dict`, `.to()` and in-place edits all invalidate it), on the active arch and the attention
    windows, and on a counter of parameter/buffer/submodule registrations; `train()`, `set_active_subnet` and `_apply`
    (`.to()`, `.half()`, ...) drop it.
    """

    def __deepcopy__(self, memo) -> NASViTInferenceCache:
        # A copy of the model builds its own plan: packed oneDNN/MKL weights cannot be copied, and the plan is keyed
        # on the original's tensors anyway.
        return NASViTInferenceCache()

    def __reduce__(self):
        return (NASViTInferenceCache, ())

    def __init__(self):
        self.plan: NASViTInferencePlan | None = None
        self.key: tuple | None = None
        self._modules: list | None = None
        self._tensors: list | None = None
        self._generation = -1

    def clear(self) -> None:
        self.plan, self.key, self._modules, self._tensors = None, None, None, None

    def _refresh_structure(self, model) -> bool:
        """Re-read the submodules and tensors after a registration anywhere; False when the plan cannot run them."""
        if self._generation == _STRUCTURE_GENERATION[0] and self._modules is not None:
            return True
        self.clear()
        modules = [module for module in model.modules() if module is not model]
        if not all(_is_planned(module) for module in modules):
            return False
        if not all(
            _batchnorm_foldable(module)
            for module in modules
            if isinstance(module, torch.nn.modules.batchnorm._NormBase)
        ):
            return False
        self._modules = modules
        _PLANNED_MODULE_SET.update(modules)
        _PLANNED_MODULE_SET.add(model)
        self._tensors = [*model.parameters(), *model.buffers()]
        self._generation = _STRUCTURE_GENERATION[0]
        return True

    def _state_key(self, model) -> tuple | None:
        """What the plan is built from, or None when the modules must run (a gradient could flow, a hook is set, a
        tensor is an inference tensor with no version counter)."""
        if torch.is_grad_enabled() and any(tensor.requires_grad for tensor in self._tensors):
            return None
        for module in self._modules:
            if module._forward_hooks or module._forward_pre_hooks:
                return None
        try:
            entries = tuple([(tensor._version, tensor.data_ptr()) for tensor in self._tensors])
        except RuntimeError:  # "Inference tensors do not track version counter"
            return None
        windows = tuple(module.num_windows for module in self._modules if type(module).__name__ == "NASViTAttention")
        return (repr(model.config.arch), repr(windows), entries)

    def plan_for(self, model, pixel_values: torch.Tensor, num_stages: int | None = None) -> NASViTInferencePlan | None:
        """The plan to run `model` (its first `num_stages` body stages, default all) on `pixel_values` now, or None
        for the modules' own path. One plan is kept: a new input size rebuilds it."""
        if not fast_path_context_allows(model):
            return None
        if torch.compiler.is_compiling():  # torch.compile / torch.export trace the modules (see the class docstring)
            return None
        if not self._refresh_structure(model):
            return None
        key = self._state_key(model)
        if key is None:
            return None
        height, width = pixel_values.shape[-2:]
        key = (*key, height, width, num_stages)
        if self.plan is not None and key == self.key:
            return self.plan
        weight = model.stem.conv.weight
        on_cpu_fp32 = weight.device.type == "cpu" and weight.dtype == torch.float32
        fused = on_cpu_fp32 and pixel_values.device.type == "cpu" and _mkldnn_available()
        with torch.no_grad():
            self.plan = NASViTInferencePlan(
                model, fused_kernels=fused, channels_last=True, height=height, width=width, num_stages=num_stages
            )
        self.key = key
        return self.plan
