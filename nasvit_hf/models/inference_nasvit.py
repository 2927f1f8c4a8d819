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
its own graph: `nasvit_hf.deploy.graph`). This file builds on the model: it imports torch and its sibling model
files (the modules, `WindowGrid`, `cached_on_equal` and `fast_path_context_allows` live in modeling_nasvit.py), and
the model imports it only when `NASViTInferencePlanMixin.inference_plan` first runs in eval mode; it is Hub-portable
(save_pretrained copies it beside the model files).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import modeling_nasvit
from .modeling_nasvit import WindowGrid, cached_on_equal, fast_path_context_allows
from .search_space_nasvit import centre_crop_kernel, make_divisible

__all__ = [
    "NASViTInferencePlan",
    "fold_batchnorm",
    "folded_layer_linears",
    "inference_plan_for",
    "talking_heads_pre_bias",
]

# Below this many tokens·batch rows, MKL's GEMM + a separate swish beats oneDNN's fused linear + swish.
_FUSED_LINEAR_MIN_ROWS = 1024
# Where oneDNN's fused convolution + swish beats ATen's convolution + a separate in-place swish on CPU (oneDNN has a
# fixed cost per call that dominates small convs; reordering its weights once, as a frozen plan does, lowers it):
# per-conv timings of an A1-sized subnet at batch 1 and 16, `python benchmarks/bench_conv_kernels.py`.
_ONEDNN_MIN_POINTWISE_MACS = {False: 8_000_000, True: 4_000_000}  # 1×1 convs, by whether the weight is reordered
_ONEDNN_MIN_SPATIAL_PIXELS = 8192  # depthwise / k×k convs with a plain weight (a reordered one always wins)


def onednn_conv(pointwise: bool, out_pixels: int, macs: int, reordered: bool) -> bool:
    """Whether the plan runs a conv (`pointwise`: 1×1, ungrouped) with `out_pixels` output pixels (batch · height ·
    width) and `macs` multiply-adds through oneDNN (its weight `reordered` into oneDNN's layout) rather than ATen."""
    if pointwise:
        return macs >= _ONEDNN_MIN_POINTWISE_MACS[reordered]
    return reordered or out_pixels > _ONEDNN_MIN_SPATIAL_PIXELS


def _mkldnn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _can_reorder_weights() -> bool:
    return hasattr(torch.ops.mkldnn, "_reorder_convolution_weight")


def inference_plan_for(model, pixel_values: torch.Tensor, frozen: dict | None = None) -> NASViTInferencePlan | None:
    """The plan to run `model` (a `NASViTModel` or `NASViTBackbone`) on `pixel_values` now, or None for the modules'
    own path: training mode, the switch off, a gradient that could flow to a parameter, `torch.compile` /
    `torch.export` / `torch.jit` tracing, a global forward hook or a dispatch mode (`fast_path_context_allows`).
    `frozen`: the model's store of derived tensors once `freeze_inference_plan()` was called (None: derive them every
    call)."""
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
    return NASViTInferencePlan(model, fused_kernels=fused, channels_last=True, frozen=frozen)


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


# The modules a plan knows how to run: exactly these classes (an adapter or a wrapper runs as modules).
_PLANNED_TYPES = {
    modeling_nasvit.NASViTConvBN,
    modeling_nasvit.NASViTDynamicConv2d,
    modeling_nasvit.NASViTDynamicBatchNorm2d,
    modeling_nasvit.NASViTDynamicLinear,
    modeling_nasvit.NASViTSqueezeExcite,
    modeling_nasvit.NASViTMBConvBlock,
    modeling_nasvit.NASViTTokenNorm,
    modeling_nasvit.NASViTMLP,
    modeling_nasvit.NASViTAttention,
    modeling_nasvit.NASViTTransformerLayer,
    modeling_nasvit.NASViTStage,
    modeling_nasvit.NASViTHead,
    torch.nn.ModuleList,
}


def _runs_as_planned(module) -> bool:
    """Whether the plan may run `module`'s subtree: every submodule is NASViT's own (by exact class: an adapter, a
    quantization wrapper or a parametrization is not), none has a forward hook, every BatchNorm has running
    statistics. Checked at every call (an explicit walk: `nn.Module.modules()` costs several times more)."""
    planned = _PLANNED_TYPES
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


def _norm_then_linear(norm, linear, channels: int, out_features: int, scale=None):
    """Weight and bias of linear(norm_affine(x)) as one linear on the affine-free normalised x, times `scale`."""
    weight, bias = linear.weight[:out_features, :channels], linear.bias[:out_features]
    gain, shift = norm.weight[:channels], norm.bias[:channels]
    bias = bias + weight @ shift
    weight = weight * gain
    if scale is not None:
        weight, bias = weight * scale.view(-1, 1), bias * scale
    return weight, bias


def _output_linear(linear, in_features: int, channels: int, scale):
    """Weight and bias of linear(x) · scale (a layer-scale vector, or 1.0)."""
    weight, bias = linear.weight[:channels, :in_features], linear.bias[:channels]
    if isinstance(scale, torch.Tensor):
        return weight * scale.view(-1, 1), bias * scale
    return weight, bias


def folded_layer_linears(layer, channels: int, length: int, query_scale=None):
    """The linears of a transformer layer at `channels` wide and `length` tokens with its token norms' affines and
    its layer scales folded in: ((weight, bias) of q / k / v as one, with `query_scale` on q; proj; [(fc1, fc2) of
    mlp2, then of mlp1]: their run order)."""
    attention = layer.attention
    value_channels = attention.value_expansion * channels
    hidden = layer.active_mlp_ratio * channels
    scale_attn = layer._scale(layer.layer_scale_attn, length, channels)
    scale_mlp = layer._scale(layer.layer_scale_mlp, length, channels)
    norm = layer.norm1
    query = _norm_then_linear(norm, attention.q, channels, channels, query_scale)
    key = _norm_then_linear(norm, attention.k, channels, channels)
    value = _norm_then_linear(norm, attention.v, channels, value_channels)
    qkv = (torch.cat([query[0], key[0], value[0]]), torch.cat([query[1], key[1], value[1]]))
    proj = _output_linear(attention.proj, value_channels, channels, scale_attn)
    mlps = [
        (_norm_then_linear(mlp_norm, mlp.fc1, channels, hidden), _output_linear(mlp.fc2, hidden, channels, scale_mlp))
        for mlp, mlp_norm in ((layer.mlp2, layer.norm3), (layer.mlp1, layer.norm2))
    ]
    return qkv, proj, mlps


class _LayerTensors:
    """What a transformer layer's plan multiplies with, at one geometry: either views of the modules' tensors
    (`folded=False`: norms keep their affine, q / k / v are three linears, layer scales apply in the residual adds) or
    the frozen plan's folded copies (norm affines and layer scales folded into the linears, q / k / v as one)."""

    def __init__(self, layer, channels: int, length: int, heads: int, grid: tuple[int, int], folded: bool):
        attention = layer.attention
        head_dim = attention.head_dim
        value_channels = attention.value_expansion * channels
        hidden = layer.active_mlp_ratio * channels
        self.eps, self.split = layer.norm1.eps, (channels, channels, value_channels)
        self.value_conv = attention.value_conv.weight[:value_channels]
        pre_bias = talking_heads_pre_bias(attention, heads, *grid).unsqueeze(0)
        # 1/√d of q·kᵀ folded into the first talking-heads map (it is linear in the scores).
        pre_weight = attention.talking_heads_pre.weight[:heads, :heads] * head_dim**-0.5
        post = attention.talking_heads_post
        self.talking = (pre_weight, pre_bias, post.weight[:heads, :heads], post.bias[:heads].view(1, heads, 1))
        if folded:
            qkv, self.proj, mlps = folded_layer_linears(layer, channels, length)
            self.norm1, self.qkv = None, [qkv]
            self.mlps = [(None, fc1, fc2) for fc1, fc2 in mlps]
            self.scale_attn = self.scale_mlp = 1.0
            self.value_conv = self.value_conv.contiguous()
        else:
            norm = layer.norm1
            self.norm1 = (norm.weight[:channels], norm.bias[:channels])
            self.qkv = [
                (linear.weight[:out, :channels], linear.bias[:out])
                for linear, out in zip((attention.q, attention.k, attention.v), self.split)
            ]
            self.proj = (attention.proj.weight[:channels, :value_channels], attention.proj.bias[:channels])
            self.mlps = [
                (
                    (norm.weight[:channels], norm.bias[:channels]),
                    (mlp.fc1.weight[:hidden, :channels], mlp.fc1.bias[:hidden]),
                    (mlp.fc2.weight[:channels, :hidden], mlp.fc2.bias[:channels]),
                )
                for mlp, norm in ((layer.mlp2, layer.norm3), (layer.mlp1, layer.norm2))
            ]
            self.scale_attn = layer._scale(layer.layer_scale_attn, length, channels)
            self.scale_mlp = layer._scale(layer.layer_scale_mlp, length, channels)


class NASViTInferencePlan:
    """Runs the active subnet of a `NASViTModel` (or `NASViTBackbone`) from its tensors as they are now (see the
    module docstring); made per call by `inference_plan_for`, it holds no tensors of its own.

    Args:
        model: the `NASViTModel` or `NASViTBackbone` (eval mode).
        fused_kernels: run convolutions (and large linear + swish) through oneDNN's fused kernels (CPU, float32).
        channels_last: keep activations in channels_last memory.
        frozen: the model's store of derived tensors after `freeze_inference_plan()`: every folded weight is
            derived once, on first use, and reused until the store is cleared (`train()`, `load_state_dict`, `.to()`,
            `set_active_subnet`); None: derived from the modules at every call.
    """

    def __init__(self, model, fused_kernels: bool, channels_last: bool, frozen: dict | None = None):
        self.model = model
        self.fused_kernels = fused_kernels
        self.channels_last = channels_last
        self.frozen = frozen

    def _derived(self, module, key, compute):
        """`compute()`: at every call, or in a frozen plan once per (module, key)."""
        if self.frozen is None:
            return compute()
        value = self.frozen.get((module, key))  # modules hash by identity (a copy of the model maps to its copies)
        if value is None:
            value = self.frozen[(module, key)] = compute()
        return value

    def _weight(self, module, weight: torch.Tensor, *sizes: int) -> torch.Tensor:
        """`weight[:sizes[0], :sizes[1], ...]` (a view; a contiguous copy in a frozen plan)."""
        index = tuple(slice(size) for size in sizes)
        if self.frozen is None:
            return weight[index] if weight.shape[: len(sizes)] != sizes else weight
        return self._derived(module, ("weight", sizes), lambda: weight[index].contiguous())

    # ---------------------------------------------------------------------------------------------------------------
    def _conv_bn(self, module, hidden_states: torch.Tensor, out_channels: int, kernel_size: int) -> torch.Tensor:
        """A `NASViTConvBN` at the given active sizes: conv → BN (eval) → swish as one convolution (+ one addcmul
        where folding the BN into the weight would touch more numbers than applying it to the output: never in a
        frozen plan, which folds once)."""
        conv, in_channels = module.conv, hidden_states.shape[1]
        groups = in_channels if conv.depthwise else 1
        if conv.depthwise:
            out_channels = in_channels
        padding, stride = kernel_size // 2, conv.stride
        outputs = hidden_states.shape[0] * out_channels * hidden_states.shape[2] * hidden_states.shape[3]
        fold = self.frozen is not None or out_channels * (in_channels // groups) * kernel_size**2 <= outputs // (
            stride * stride
        )
        weight, scale, shift = self._derived(
            module, ("conv", in_channels, out_channels, kernel_size, fold),
            lambda: self._conv_bn_tensors(module, in_channels, out_channels, kernel_size, fold),
        )  # fmt: skip
        if fold:
            return self._conv(hidden_states, weight, shift, stride, padding, groups, module.activation, module)
        hidden_states = self._conv(hidden_states, weight, None, stride, padding, groups, False, module)
        hidden_states = hidden_states.mul_(scale.view(1, -1, 1, 1)).add_(shift.view(1, -1, 1, 1))
        return F.silu(hidden_states, inplace=True) if module.activation else hidden_states

    @staticmethod
    def _conv_bn_tensors(module, in_channels: int, out_channels: int, kernel_size: int, fold: bool):
        """(weight, scale, shift) of a conv → BN at these sizes: the weight with the BN folded in (`fold`, scale then
        unused) or as it is."""
        conv = module.conv
        weight = conv.weight
        if conv.depthwise:
            if in_channels != weight.shape[0]:
                weight = weight[:in_channels]
        elif weight.shape[:2] != (out_channels, in_channels):
            weight = weight[:out_channels, :in_channels]
        weight = centre_crop_kernel(weight, kernel_size)
        scale, shift = _batchnorm_scale_shift(module.norm, out_channels)
        if conv.bias is not None:
            shift = torch.addcmul(shift, conv.bias[:out_channels], scale)
        if fold:
            return weight * scale.view(-1, 1, 1, 1), None, shift
        return weight.contiguous(), scale, shift

    def _conv(self, hidden_states, weight, bias, stride: int, padding: int, groups: int, swish: bool, module=None):
        """conv2d (+ swish): oneDNN's fused kernel where it is faster (`onednn_conv`; in a frozen plan with the weight
        reordered once into oneDNN's layout for this input, keyed on `module`), else ATen's convolution and a separate
        in-place swish."""
        batch, _, height, width = hidden_states.shape
        kernel_size = weight.shape[-1]
        pixels = (
            batch
            * ((height + 2 * padding - kernel_size) // stride + 1)
            * ((width + 2 * padding - kernel_size) // stride + 1)
        )
        reordered = self.frozen is not None and module is not None and _can_reorder_weights()
        macs = pixels * weight.shape[0] * weight.shape[1] * kernel_size * kernel_size
        if self.fused_kernels and onednn_conv(kernel_size == 1 and groups == 1, pixels, macs, reordered):
            if reordered:
                shape = tuple(hidden_states.shape)
                weight = self._derived(
                    module, ("onednn", shape, tuple(weight.shape)),
                    lambda: torch.ops.mkldnn._reorder_convolution_weight(
                        weight, [padding, padding], [stride, stride], [1, 1], groups, list(shape)
                    ),
                )  # fmt: skip
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
            reduce_weight = self._weight(reduce, reduce.weight.flatten(1), hidden, mid)
            scale = F.relu(F.linear(scale, reduce_weight, reduce.bias[:hidden]), True)
            expand_weight = self._weight(expand, expand.weight.flatten(1), mid, hidden)
            scale = F.hardsigmoid(F.linear(scale, expand_weight, expand.bias[:mid]), True)
            hidden_states = hidden_states.mul_(scale.view(*scale.shape, 1, 1))
        hidden_states = self._conv_bn(block.projection, hidden_states, out_channels, 1)
        if block.stride == 2:
            padding = (residual.shape[-2] % 2, residual.shape[-1] % 2)
            residual = F.avg_pool2d(residual, kernel_size=2, stride=2, padding=padding, count_include_pad=True)
        if residual.shape[1] != out_channels:
            if block.shortcut is None:
                raise RuntimeError(f"no shortcut conv for {residual.shape[1]} -> {out_channels} channels")
            weight = self._weight(block.shortcut, block.shortcut.weight, out_channels, residual.shape[1])
            residual = self._conv(residual, weight, None, 1, 0, 1, False, block.shortcut)
        return hidden_states.add_(residual)

    @staticmethod
    def _token_norm(tokens: torch.Tensor, eps: float, affine) -> torch.Tensor:
        """`NASViTTokenNorm`: layer norm over (tokens, channels), then the per-channel `affine` (weight, bias) in
        place (None: folded into the next linear)."""
        normed = F.layer_norm(tokens, tokens.shape[1:], eps=eps)
        return normed if affine is None else normed.mul_(affine[0]).add_(affine[1])

    def _linear_silu(self, hidden_states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
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
        grid = attention.window_grid(height, width)
        windows = None if grid == (1, 1) else WindowGrid.for_grid(height, width, grid, tokens.device)
        grid_size = (height, width) if windows is None else (windows.window_h, windows.window_w)
        key = ("layer", channels, length, grid_size, layer.active_depth, layer.active_mlp_ratio)
        folded = self.frozen is not None
        tensors = self._derived(layer, key, lambda: _LayerTensors(layer, channels, length, heads, grid_size, folded))
        normed = self._token_norm(tokens, tensors.eps, tensors.norm1)
        if len(tensors.qkv) == 1:
            query, key, value = F.linear(normed, *tensors.qkv[0]).split(tensors.split, dim=-1)
            value = value.contiguous()
        else:
            query, key, value = (F.linear(normed, weight, bias) for weight, bias in tensors.qkv)
        value_channels = value.shape[-1]
        value = value.view(batch, height, width, value_channels).permute(0, 3, 1, 2)
        if not self.channels_last:
            value = value.contiguous()
        value = self._conv(value, tensors.value_conv, None, 1, 1, value_channels, False, attention.value_conv)
        value = value.permute(0, 2, 3, 1).reshape(batch, length, value_channels)
        if windows is None:
            query = query.view(batch, length, heads, head_dim).transpose(1, 2)
            key_t = key.view(batch, length, heads, head_dim).permute(0, 2, 3, 1)
            value = value.view(batch, length, heads, value_channels // heads).transpose(1, 2)
            context = self._attention_core(tensors.talking, query, key_t, value)
            context = context.transpose(1, 2).reshape(batch, length, value_channels)
        else:
            context = self._windowed_attention_core(tensors.talking, windows, heads, query, key, value, height, width)
        context = F.silu(context, inplace=True)
        tokens = self._residual(tokens, F.linear(context, *tensors.proj), tensors.scale_attn)
        for norm, fc1, fc2 in tensors.mlps:
            hidden = self._linear_silu(self._token_norm(tokens, tensors.eps, norm), *fc1)
            tokens = self._residual(tokens, F.linear(hidden, *fc2), tensors.scale_mlp)
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
            pooled = F.linear(pooled, self._weight(mix, mix.weight.flatten(1), out_channels, 6 * channels), mix_bias)
            pooled = F.silu(pooled, inplace=True)
        else:
            pooled = head(hidden_states)
        if all_hidden_states is not None:
            # Callers get the modules' (contiguous) layout; the tensors are fresh, never updated in place later.
            all_hidden_states = [state.contiguous() for state in all_hidden_states]
            return all_hidden_states[-1], pooled, tuple(all_hidden_states)
        return hidden_states.contiguous(), pooled, None
