"""Inference fast path for NASViT models in eval mode: the modules' arithmetic, reorganised for speed, every call.

When a `NASViTModel` (or `NASViTBackbone`) runs in eval mode with nothing that needs gradients, its forward runs an
*inference plan*: the same function as the modules, computed from the modules' tensors as they are at that call.

- every convolution + BatchNorm runs as one convolution: BN folded into the weight (running statistics: eval mode
  only) where the weight is smaller than the output, else the BN applied to the output in one `addcmul`; its swish
  runs fused in the oneDNN kernel on CPU (`mkldnn._convolution_pointwise`);
- activations stay in channels_last memory (the layout oneDNN's convolutions and a transformer stage's tokens share,
  so the stage's (B, C, H, W) ↔ (B, H·W, C) conversions are free views);
- in a transformer layer the token norms run with their affine parameters in one `layer_norm`, 1/√d is folded into
  the first talking-heads map, the relative position bias is pushed through that map (W·(S + P) + b = W·S + (W·P +
  b)), the layer scales are applied in the residual add (`addcmul_`), and large token counts use oneDNN's fused
  linear + swish.

Nothing weight-sized is kept between calls: the plan reads the parameters and buffers at every call, so it can never
answer with stale weights, however they were changed (optimizer steps, `load_state_dict`, `param.data.copy_(...)`,
`bn.running_mean.data.add_(...)`, numpy views). The only values kept are small ones derived from small tensors (the
talking-heads bias W·P + b, the relative position bias), each stored with a copy of what it was made from and reused
only while those tensors are *equal* to the copy (an exact comparison, microseconds). Keying a cache of folded
weights on the tensors' version counters missed edits through `.data`; checking weight-sized tensors for equality
would cost more than the plan saves (docs/benchmarks.md). Each block is checked at every call: a block holding a
module that is not NASViT's own (an adapter, a quantization wrapper, a parametrization), a forward hook or a
BatchNorm without running statistics runs as modules, the rest of the model stays fast. Nothing is registered
process-wide.

Nothing here changes the stored parameters, their names or what they mean: training, `state_dict` and
`save_pretrained` see the modules only. `torch.compile` and `torch.export` trace the modules (ONNX export lays out
its own graph: `nasvit_hf.deploy.graph`). This file is Hub-portable: it imports only torch and its sibling
configuration file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils._python_dispatch

from .search_space_nasvit import make_divisible

__all__ = [
    "NASViTInferencePlan",
    "WindowGrid",
    "cached_on_equal",
    "fast_path_context_allows",
    "fold_batchnorm",
    "inference_plan_for",
    "talking_heads_pre_bias",
]

# Below this many tokens·batch rows, MKL's GEMM + a separate swish beats oneDNN's fused linear + swish.
_FUSED_LINEAR_MIN_ROWS = 1024


def _mkldnn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


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


def inference_plan_for(model, pixel_values: torch.Tensor) -> NASViTInferencePlan | None:
    """The plan to run `model` (a `NASViTModel` or `NASViTBackbone`) on `pixel_values` now, or None for the modules'
    own path: training mode, the switch off, a gradient that could flow to a parameter, `torch.compile` /
    `torch.export` / `torch.jit` tracing, a global forward hook or a dispatch mode (`fast_path_context_allows`)."""
    if not fast_path_context_allows(model) or torch.compiler.is_compiling():
        return None
    if torch.is_grad_enabled() and any(parameter.requires_grad for parameter in model.parameters()):
        return None
    weight = model.stem.conv.weight
    fused = (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and pixel_values.device.type == "cpu"
        and _mkldnn_available()
    )
    return NASViTInferencePlan(model, fused_kernels=fused, channels_last=True)


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


def _centre_crop(weight: torch.Tensor, kernel_size: int) -> torch.Tensor:
    full = weight.shape[-1]
    if kernel_size == full:
        return weight
    start = (full - kernel_size) // 2
    return weight[:, :, start : start + kernel_size, start : start + kernel_size]


def _batchnorm_scale_shift(norm, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of a BatchNorm in eval mode over its first `channels` channels: BN(x) = x·scale + shift."""
    weight, bias, mean, var = norm.weight, norm.bias, norm.running_mean, norm.running_var
    if channels != weight.shape[0]:
        weight, bias, mean, var = weight[:channels], bias[:channels], mean[:channels], var[:channels]
    scale = var.add(norm.eps).rsqrt_().mul_(weight)
    return scale, torch.addcmul(bias, mean, scale, value=-1)


def fold_batchnorm(weight: torch.Tensor, bias: torch.Tensor | None, norm, channels: int):
    """(weight, bias) of conv → BN(eval) as one conv; `norm` is a BatchNorm2d whose first `channels` entries apply."""
    scale, shift = _batchnorm_scale_shift(norm, channels)
    if bias is not None:
        shift = shift + bias * scale
    return weight * scale.view(-1, 1, 1, 1), shift


def talking_heads_pre_bias(attention, heads: int, height: int, width: int) -> torch.Tensor:
    """(heads, L·L) `W·P + b` of an attention layer for an height × width grid (or window): its first talking-heads
    map (W, b) applied to the relative position bias P, so that W·(S + P) + b = W·S + (W·P + b). Cached on the layer
    while the bias table and the map are unchanged (`cached_on_equal`)."""
    pre = attention.talking_heads_pre
    weight, bias, table = pre.weight[:heads, :heads], pre.bias[:heads], attention.relative_position_bias_table

    def compute() -> torch.Tensor:
        position_bias = attention.relative_position_bias(height, width, heads).reshape(heads, (height * width) ** 2)
        return torch.addmm(bias.view(heads, 1), weight, position_bias)

    key = (heads, height, width, table.device, table.dtype)
    return cached_on_equal(attention._derived_cache, key, (table, weight, bias), compute)


# The modules a plan knows how to run (defined in modeling_nasvit.py, which imports this file: filled on first use).
_PLANNED_TYPES: set[type] = set()


def _planned_types() -> set[type]:
    """The classes whose forward the plan reproduces, and torch's ModuleList."""
    if not _PLANNED_TYPES:
        from . import modeling_nasvit as m

        _PLANNED_TYPES.update(
            {
                m.NASViTConvBN,
                m.NASViTDynamicConv2d,
                m.NASViTDynamicBatchNorm2d,
                m.NASViTDynamicLinear,
                m.NASViTSqueezeExcite,
                m.NASViTMBConvBlock,
                m.NASViTTokenNorm,
                m.NASViTMLP,
                m.NASViTAttention,
                m.NASViTTransformerLayer,
                m.NASViTStage,
                m.NASViTHead,
                torch.nn.ModuleList,
            }
        )
    return _PLANNED_TYPES


def _runs_as_planned(module) -> bool:
    """Whether the plan may run `module`'s subtree: every submodule is NASViT's own (by exact class: an adapter, a
    quantization wrapper or a parametrization is not), none has a forward hook, every BatchNorm has running
    statistics. Checked at every call (an explicit walk: `nn.Module.modules()` costs several times more)."""
    planned = _planned_types()
    stack = [module]
    while stack:
        submodule = stack.pop()
        if type(submodule) not in planned or submodule._forward_hooks or submodule._forward_pre_hooks:
            return False
        if isinstance(submodule, torch.nn.modules.batchnorm._NormBase) and (
            submodule.running_mean is None or submodule.running_var is None
        ):
            return False
        stack.extend(submodule._modules.values())
    return True


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


class NASViTInferencePlan:
    """Runs the active subnet of a `NASViTModel` (or `NASViTBackbone`) from its tensors as they are now (see the
    module docstring); made per call by `inference_plan_for`, it holds no tensors.

    Args:
        model: the `NASViTModel` or `NASViTBackbone` (eval mode).
        fused_kernels: run convolutions (and large linear + swish) through oneDNN's fused kernels (CPU, float32).
        channels_last: keep activations in channels_last memory.
    """

    def __init__(self, model, fused_kernels: bool, channels_last: bool):
        self.model = model
        self.fused_kernels = fused_kernels
        self.channels_last = channels_last

    # ---------------------------------------------------------------------------------------------------------------
    def _conv_bn(self, module, hidden_states: torch.Tensor, out_channels: int, kernel_size: int) -> torch.Tensor:
        """A `NASViTConvBN` at the given active sizes: conv → BN (eval) → swish as one convolution (+ one addcmul
        where folding the BN into the weight would touch more numbers than applying it to the output)."""
        conv, in_channels = module.conv, hidden_states.shape[1]
        weight = conv.weight
        if conv.depthwise:
            groups, out_channels = in_channels, in_channels
            if in_channels != weight.shape[0]:
                weight = weight[:in_channels]
        else:
            groups = 1
            if weight.shape[:2] != (out_channels, in_channels):
                weight = weight[:out_channels, :in_channels]
        weight = _centre_crop(weight, kernel_size)
        scale, shift = _batchnorm_scale_shift(module.norm, out_channels)
        if conv.bias is not None:
            shift = torch.addcmul(shift, conv.bias[:out_channels], scale)
        padding, stride = kernel_size // 2, conv.stride
        outputs = hidden_states.shape[0] * out_channels * hidden_states.shape[2] * hidden_states.shape[3]
        if weight.numel() <= outputs // (stride * stride):
            weight = weight * scale.view(-1, 1, 1, 1)
            return self._conv(hidden_states, weight, shift, stride, padding, groups, module.activation)
        hidden_states = self._conv(hidden_states, weight.contiguous(), None, stride, padding, groups, False)
        hidden_states = hidden_states.mul_(scale.view(1, -1, 1, 1)).add_(shift.view(1, -1, 1, 1))
        return F.silu(hidden_states, inplace=True) if module.activation else hidden_states

    def _conv(self, hidden_states, weight, bias, stride: int, padding: int, groups: int, swish: bool):
        if self.fused_kernels:
            return torch.ops.mkldnn._convolution_pointwise(
                hidden_states, weight, bias, [padding, padding], [stride, stride], [1, 1], groups,
                "swish" if swish else "none", [], "",
            )  # fmt: skip
        hidden_states = F.conv2d(hidden_states, weight, bias, stride, padding, 1, groups)
        return F.silu(hidden_states, inplace=True) if swish else hidden_states

    def _mbconv(self, block, hidden_states: torch.Tensor) -> torch.Tensor:
        if not _runs_as_planned(block):
            return block(hidden_states)
        in_channels, out_channels = hidden_states.shape[1], block.active_out_channels
        residual = hidden_states
        if block.expansion is not None:
            mid = make_divisible(round(in_channels * block.active_expand_ratio), 8)
            hidden_states = self._conv_bn(block.expansion, hidden_states, mid, 1)
        hidden_states = self._conv_bn(block.depthwise, hidden_states, hidden_states.shape[1], block.active_kernel_size)
        if block.squeeze_excite is not None:
            mid = hidden_states.shape[1]
            hidden = make_divisible(mid // 4, 8)
            reduce, expand = block.squeeze_excite.reduce, block.squeeze_excite.expand
            scale = hidden_states.mean(dim=(2, 3))
            scale = F.relu(F.linear(scale, reduce.weight[:hidden, :mid].flatten(1), reduce.bias[:hidden]), True)
            scale = F.hardsigmoid(F.linear(scale, expand.weight[:mid, :hidden].flatten(1), expand.bias[:mid]), True)
            hidden_states = hidden_states.mul_(scale.view(*scale.shape, 1, 1))
        hidden_states = self._conv_bn(block.projection, hidden_states, out_channels, 1)
        if block.stride == 2:
            padding = (residual.shape[-2] % 2, residual.shape[-1] % 2)
            residual = F.avg_pool2d(residual, kernel_size=2, stride=2, padding=padding, count_include_pad=True)
        if residual.shape[1] != out_channels:
            if block.shortcut is None:
                raise RuntimeError(f"no shortcut conv for {residual.shape[1]} -> {out_channels} channels")
            residual = F.conv2d(residual, block.shortcut.weight[:out_channels, : residual.shape[1]])
        return hidden_states.add_(residual)

    @staticmethod
    def _token_norm(norm, tokens: torch.Tensor) -> torch.Tensor:
        """`NASViTTokenNorm`: layer norm over (tokens, channels), then the per-channel affine in place."""
        channels = tokens.shape[-1]
        normed = F.layer_norm(tokens, tokens.shape[1:], eps=norm.eps)
        return normed.mul_(norm.weight[:channels]).add_(norm.bias[:channels])

    def _linear_silu(self, hidden_states: torch.Tensor, linear, out_features: int) -> torch.Tensor:
        weight = linear.weight[:out_features, : hidden_states.shape[-1]]
        bias = linear.bias[:out_features]
        if self.fused_kernels and hidden_states.shape[0] * hidden_states.shape[1] >= _FUSED_LINEAR_MIN_ROWS:
            return torch.ops.mkldnn._linear_pointwise(hidden_states, weight.contiguous(), bias, "swish", [], "")
        return F.silu(F.linear(hidden_states, weight, bias), inplace=True)

    @staticmethod
    def _residual(tokens: torch.Tensor, update: torch.Tensor, scale) -> torch.Tensor:
        return tokens.add_(update) if not isinstance(scale, torch.Tensor) else tokens.addcmul_(update, scale)

    def _transformer_layer(self, layer, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """One transformer layer on (B, L, C) tokens; updates `tokens` in place and returns it."""
        if not _runs_as_planned(layer):
            return layer(tokens, height, width)
        attention = layer.attention
        batch, length, channels = tokens.shape
        heads, head_dim = channels // attention.head_dim, attention.head_dim
        value_channels = attention.value_expansion * channels
        normed = self._token_norm(layer.norm1, tokens)
        query = F.linear(normed, attention.q.weight[:channels, :channels], attention.q.bias[:channels])
        key = F.linear(normed, attention.k.weight[:channels, :channels], attention.k.bias[:channels])
        value = F.linear(normed, attention.v.weight[:value_channels, :channels], attention.v.bias[:value_channels])
        value = value.view(batch, height, width, value_channels).permute(0, 3, 1, 2)
        if not self.channels_last:
            value = value.contiguous()
        value = self._conv(value, attention.value_conv.weight[:value_channels], None, 1, 1, value_channels, False)
        value = value.permute(0, 2, 3, 1).reshape(batch, length, value_channels)
        grid = attention.window_grid(height, width)
        windows = None if grid == (1, 1) else WindowGrid.for_grid(height, width, grid, tokens.device)
        grid_height, grid_width = (height, width) if windows is None else (windows.window_h, windows.window_w)
        pre_bias = talking_heads_pre_bias(attention, heads, grid_height, grid_width).unsqueeze(0)
        # 1/√d of q·kᵀ folded into the first talking-heads map (it is linear in the scores).
        pre_weight = attention.talking_heads_pre.weight[:heads, :heads] * head_dim**-0.5
        post = attention.talking_heads_post
        talking = (pre_weight, pre_bias, post.weight[:heads, :heads], post.bias[:heads].view(1, heads, 1))
        if windows is None:
            query = query.view(batch, length, heads, head_dim).transpose(1, 2)
            key_t = key.view(batch, length, heads, head_dim).permute(0, 2, 3, 1)
            value = value.view(batch, length, heads, value_channels // heads).transpose(1, 2)
            context = self._attention_core(talking, query, key_t, value)
            context = context.transpose(1, 2).reshape(batch, length, value_channels)
        else:
            context = self._windowed_attention_core(talking, windows, heads, query, key, value, height, width)
        context = F.silu(context, inplace=True)
        scale_attn = layer._scale(layer.layer_scale_attn, length, channels)
        scale_mlp = layer._scale(layer.layer_scale_mlp, length, channels)
        proj = F.linear(context, attention.proj.weight[:channels, :value_channels], attention.proj.bias[:channels])
        tokens = self._residual(tokens, proj, scale_attn)
        hidden_features = layer.active_mlp_ratio * channels
        for mlp, norm in ((layer.mlp2, layer.norm3), (layer.mlp1, layer.norm2)):
            hidden = self._linear_silu(self._token_norm(norm, tokens), mlp.fc1, hidden_features)
            update = F.linear(hidden, mlp.fc2.weight[:channels, :hidden_features], mlp.fc2.bias[:channels])
            tokens = self._residual(tokens, update, scale_mlp)
        return tokens

    @staticmethod
    def _attention_core(talking, query: torch.Tensor, key_t: torch.Tensor, value: torch.Tensor, key_mask=None):
        """softmax(talking_pre(q·kᵀ) + bias) → talking_post → ·v for (N, h, L, d) q, (N, h, d, L) kᵀ, (N, h, L, dv) v;
        `key_mask` (N / windows, windows, 1, 1, L) sets the padded keys' scores to -inf before the softmax."""
        pre_weight, pre_bias, post_weight, post_bias = talking
        count, heads, length = query.shape[:3]
        scores = torch.matmul(query, key_t).view(count, heads, length * length)
        scores = torch.baddbmm(pre_bias, pre_weight.expand(count, heads, heads), scores)
        if key_mask is not None:
            windows = key_mask.shape[1]
            scores = scores.view(-1, windows, heads, length, length).masked_fill_(key_mask, float("-inf"))
        scores = scores.view(count, heads, length, length).softmax(dim=-1).view(count, heads, length * length)
        scores = torch.baddbmm(post_bias, post_weight.expand(count, heads, heads), scores)
        return torch.matmul(scores.view(count, heads, length, length), value)

    def _windowed_attention_core(self, talking, windows: WindowGrid, heads, query, key, value, height, width):
        """Attention inside each window (as the modules' `_windowed_attention`): the (B, L, ·) q, k and conv'd v are
        partitioned into windows, padded keys masked, and the (B, L, value channels) context returned."""
        batch, _, channels = query.shape
        head_dim = channels // heads
        query, key, value = (windows.partition(tensor, height, width) for tensor in (query, key, value))
        count, window_length = query.shape[:2]
        query = query.view(count, window_length, heads, head_dim).transpose(1, 2)
        key_t = key.view(count, window_length, heads, head_dim).permute(0, 2, 3, 1)
        value_channels = value.shape[-1]
        value = value.view(count, window_length, heads, value_channels // heads).transpose(1, 2)
        context = self._attention_core(talking, query, key_t, value, windows.key_mask)
        context = context.transpose(1, 2).reshape(count, window_length, value_channels)
        return windows.merge(context, batch, height, width)

    def _stage(self, stage, hidden_states: torch.Tensor) -> torch.Tensor:
        if type(stage).__name__ != "NASViTStage" or stage._forward_hooks or stage._forward_pre_hooks:
            return stage(hidden_states)
        hidden_states = self._mbconv(stage.blocks[0], hidden_states)
        blocks = [stage.blocks[index] for index in range(1, stage.active_depth)]
        if not stage.is_transformer:
            for block in blocks:
                hidden_states = self._mbconv(block, hidden_states)
            return hidden_states
        if not blocks:
            return hidden_states
        batch, channels, height, width = hidden_states.shape
        # channels_last (B, C, H, W) memory is (B, H·W, C): a view; otherwise a copy into a fresh token tensor.
        tokens = hidden_states.flatten(2).transpose(1, 2)
        if not tokens.is_contiguous():
            tokens = tokens.contiguous()
        for layer in blocks:
            tokens = self._transformer_layer(layer, tokens, height, width)
        return tokens.transpose(1, 2).reshape(batch, channels, height, width)

    def _stage_outputs(self, pixel_values: torch.Tensor, num_stages: int | None = None):
        """The stem's output, then each of the first `num_stages` stages' (default all), in the plan's layout."""
        model = self.model
        if self.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        stem = model.stem
        if _runs_as_planned(stem):
            hidden_states = self._conv_bn(stem, pixel_values, model.active_stem_channels, stem.conv.kernel_size)
        else:
            hidden_states = stem(pixel_values, model.active_stem_channels)
        yield hidden_states
        for stage in list(model.stages)[:num_stages]:
            hidden_states = self._stage(stage, hidden_states)
            yield hidden_states

    def feature_maps(self, pixel_values: torch.Tensor, indices, num_stages: int | None = None) -> dict:
        """{index: map} of the stem (index 0) and stage outputs (1 = mb1, ...) named by `indices`, running the first
        `num_stages` stages, in the modules' (contiguous) layout: fresh tensors, never updated in place later."""
        wanted = set(indices)
        outputs = enumerate(self._stage_outputs(pixel_values, num_stages))
        return {index: state.contiguous() for index, state in outputs if index in wanted}

    def __call__(
        self, pixel_values: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """(last_hidden_state, pooled_output, hidden_states or None) of a `NASViTModel`, as its modules return them."""
        all_hidden_states = [] if output_hidden_states else None
        for hidden_states in self._stage_outputs(pixel_values):
            if all_hidden_states is not None:
                all_hidden_states.append(hidden_states)
        head = self.model.head
        if _runs_as_planned(head):
            channels = hidden_states.shape[1]
            pooled = self._conv_bn(head.final_expand, hidden_states, 6 * channels, 1).mean(dim=(2, 3))
            out_channels, mix = head.active_out_channels, head.feature_mix
            mix_bias = mix.bias[:out_channels] if mix.bias is not None else None
            pooled = F.linear(pooled, mix.weight[:out_channels, : 6 * channels].flatten(1), mix_bias)
            pooled = F.silu(pooled, inplace=True)
        else:
            pooled = head(hidden_states)
        if all_hidden_states is not None:
            # Callers get the modules' (contiguous) layout; the tensors are fresh, never updated in place later.
            all_hidden_states = [state.contiguous() for state in all_hidden_states]
            return all_hidden_states[-1], pooled, tuple(all_hidden_states)
        return hidden_states.contiguous(), pooled, None
