"""The graph `export_onnx` traces for a classification subnet: the subnet's function, laid out for onnxruntime.

Exported as they are, the modules give onnxruntime a graph it fuses poorly (docs/benchmarks.md): token stages in
(B, L, C) with a Transpose pair around every stage and every value conv, linear biases and layer scales as separate
Add / Mul nodes on 3-D tensors (onnxruntime fuses MatMul + Add into Gemm for 2-D inputs only), the relative position
bias added to the scores before the talking-heads map and again after it. `NASViTOnnxGraph` computes the same
function from the same tensors, prepared once, in the shapes onnxruntime's CPU provider runs best:

- every conv + BatchNorm is one Conv with the BN folded in (`NASViTInferencePlan`'s folding), its swish a Sigmoid ·
  Mul pair that onnxruntime fuses into one QuickGelu node, squeeze-excite as 1×1 Convs on the pooled map (fused with
  their ReLU / HardSigmoid), residual Adds directly after the projection Conv (fused into onnxruntime's NCHWc Conv);
- transformer stages keep the conv stages' NCHW layout: tokens are the (B, C, H, W) map, the token norm (over
  tokens and channels jointly) is one LayerNormalization over (C, H, W), every linear layer is a 1×1 Conv with its
  bias (and the norm's affine parameters, 1/√d and the layer scales folded into its weights), so no layout
  Transpose is needed, and each head's q, k, v are free reshapes of the Conv output, (B, h, d, H·W);
- attention: scores qᵀk (the graph's only Transposes swap the last two axes of a MatMul input, which onnxruntime
  fuses into the MatMul), one MatMul with the first talking-heads map and one
  Add of a constant (its bias plus the relative position bias pushed through it, `W·(S + P) + b = W·S + (W·P + b)`),
  Softmax, the second talking-heads map (its bias applied to the context as `b·Σv`, a (B, h, dv, 1) term, instead
  of to the (B, h, L, L) scores), and the context v·Pᵀ lands in the NCHW layout the next Conv reads.

The file holds only standard ONNX operators. `export_onnx` uses it for `NASViTForImageClassification` and
`NASViTModel` subnets with global attention; windowed attention and dense-prediction models export their modules.
The exported graph is verified against the modules (`inference_fast_path = False`) like every export.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.inference_nasvit import NASViTInferencePlan, _Conv, _MBConv, _TransformerLayer
from ..models.modeling_nasvit import NASViTForImageClassification, NASViTModel, NASViTPreTrainedModel

__all__ = ["NASViTOnnxGraph", "onnx_graph_for"]


def _body(model: NASViTPreTrainedModel) -> NASViTModel | None:
    if isinstance(model, NASViTForImageClassification):
        return model.nasvit
    return model if type(model) is NASViTModel else None


def onnx_graph_for(model: NASViTPreTrainedModel) -> NASViTOnnxGraph | None:
    """`NASViTOnnxGraph(model)`, or None where it does not apply: models other than `NASViTForImageClassification`
    and `NASViTModel` (segmentation, backbones) and windowed attention, which export their modules."""
    if _body(model) is None:
        return None
    try:
        return NASViTOnnxGraph(model)
    except _WindowedAttention:
        return None


class _WindowedAttention(ValueError):
    pass


class _GraphConv(nn.Module):
    """A folded convolution (weight and bias as buffers: the exporter writes them as initializers)."""

    def __init__(self, conv: _Conv):
        super().__init__()
        self.register_buffer("weight", conv.weight.detach().contiguous().clone(), persistent=False)
        bias = None if conv.bias is None else conv.bias.detach().clone()
        self.register_buffer("bias", bias, persistent=False)
        self.stride, self.padding, self.groups = conv.stride, conv.padding, conv.groups
        self.swish = conv.activation == "silu"

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        hidden_states = F.conv2d(hidden_states, self.weight, self.bias, self.stride, self.padding, 1, self.groups)
        if self.swish:
            hidden_states = F.silu(hidden_states)
        return hidden_states if residual is None else hidden_states + residual


def _conv_1x1(weight: torch.Tensor, bias: torch.Tensor | None) -> _GraphConv:
    """A linear layer's (out, in) weight as a 1×1 convolution."""
    return _GraphConv(_Conv(weight.detach()[:, :, None, None], bias, 1, 0, 1, None))


class _GraphMBConv(nn.Module):
    def __init__(self, block: _MBConv):
        super().__init__()
        self.expansion = None if block.expansion is None else _GraphConv(block.expansion)
        self.depthwise = _GraphConv(block.depthwise)
        self.squeeze_excite = None
        if block.squeeze_excite is not None:
            reduce_weight, reduce_bias, expand_weight, expand_bias = block.squeeze_excite
            self.squeeze_excite = nn.ModuleList(
                [_conv_1x1(reduce_weight, reduce_bias), _conv_1x1(expand_weight, expand_bias)]
            )
        self.projection = _GraphConv(block.projection)
        self.stride = block.stride
        self.shortcut = None if block.shortcut is None else _conv_1x1(block.shortcut.flatten(1), None)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = hidden_states
        if self.expansion is not None:
            hidden_states = self.expansion(hidden_states)
        hidden_states = self.depthwise(hidden_states)
        if self.squeeze_excite is not None:
            reduce, expand = self.squeeze_excite
            scale = F.relu(reduce(F.adaptive_avg_pool2d(hidden_states, 1)))
            hidden_states = hidden_states * F.hardsigmoid(expand(scale))
        if self.stride == 2:
            padding = (residual.shape[-2] % 2, residual.shape[-1] % 2)
            residual = F.avg_pool2d(residual, kernel_size=2, stride=2, padding=padding, count_include_pad=True)
        if self.shortcut is not None:
            residual = self.shortcut(residual)
        return self.projection(hidden_states, residual)


class _GraphAttention(nn.Module):
    """(q, k, v) maps of one layer -> the (B, h, dv, L) context: scores, talking heads, softmax (its own module so
    that int8 quantization can keep it in float: `ATTENTION_MODULE`)."""

    def __init__(self, layer: _TransformerLayer, length: int):
        super().__init__()
        self.heads = layer.heads
        self.register_buffer("talking_pre_weight", layer.talking_pre_weight.detach().clone(), persistent=False)
        pre_bias = layer.talking_pre_bias.detach().reshape(layer.heads, length * length).clone()
        self.register_buffer("talking_pre_bias", pre_bias, persistent=False)
        self.register_buffer("talking_post_weight", layer.talking_post_weight.detach().clone(), persistent=False)
        post_bias = layer.talking_post_bias.detach().reshape(1, layer.heads, 1, 1).clone()
        self.register_buffer("talking_post_bias", post_bias, persistent=False)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = query.shape
        length, heads = height * width, self.heads
        query = query.reshape(batch, heads, channels // heads, length)
        key = key.reshape(batch, heads, channels // heads, length)
        value = value.reshape(batch, heads, value.shape[1] // heads, length)
        scores = torch.matmul(query.transpose(-1, -2), key).reshape(batch, heads, length * length)
        scores = torch.matmul(self.talking_pre_weight, scores) + self.talking_pre_bias
        scores = scores.reshape(batch, heads, length, length).softmax(dim=-1).reshape(batch, heads, length * length)
        scores = torch.matmul(self.talking_post_weight, scores).reshape(batch, heads, length, length)
        # (P + b) vᵀ = P vᵀ + b Σ_tokens v: the post-map bias on the (B, h, dv, 1) token sum of v, not on the scores.
        context = torch.matmul(value, scores.transpose(-1, -2))
        return context + self.talking_post_bias * value.sum(dim=-1, keepdim=True)


class _GraphTransformerLayer(nn.Module):
    """One transformer layer on the (B, C, H, W) token map (see the module docstring for the layout)."""

    def __init__(self, layer: _TransformerLayer, height: int, width: int):
        super().__init__()
        if layer.windows is not None:
            raise _WindowedAttention(
                "NASViTOnnxGraph lays out global attention only; windowed attention exports its modules."
            )
        self.eps, self.channels, self.heads = layer.eps, layer.channels, layer.heads
        length = height * width
        self.qkv = _conv_1x1(layer.qkv.weight, layer.qkv.bias)
        self.value_conv = _GraphConv(layer.value_conv)
        self.attention = _GraphAttention(layer, length)
        self.proj = _conv_1x1(layer.proj.weight, layer.proj.bias)
        self.mlp = nn.ModuleList(
            nn.ModuleList([_conv_1x1(fc1.weight, fc1.bias), _conv_1x1(fc2.weight, fc2.bias)]) for fc1, fc2 in layer.mlp
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = tokens.shape
        qkv = self.qkv(F.layer_norm(tokens, tokens.shape[1:], eps=self.eps))
        query, key, value = qkv[:, :channels], qkv[:, channels : 2 * channels], qkv[:, 2 * channels :]
        value = self.value_conv(value)
        context = self.attention(query, key, value).reshape(batch, value.shape[1], height, width)
        tokens = self.proj(F.silu(context), tokens)
        for fc1, fc2 in self.mlp:
            hidden = F.silu(fc1(F.layer_norm(tokens, tokens.shape[1:], eps=self.eps)))
            tokens = fc2(hidden, tokens)
        return tokens


class NASViTOnnxGraph(nn.Module):
    """`pixel_values -> (logits,)` for a `NASViTForImageClassification` subnet (`(last_hidden_state, pooler_output)`
    for a bare `NASViTModel`), the function of its modules in eval mode, prepared for onnxruntime at one input size.

    Built from the model's tensors at construction (a snapshot: build it again after changing weights); only for
    tracing by `export_onnx`, which verifies the exported file against the modules.
    """

    def __init__(self, model: NASViTPreTrainedModel):
        super().__init__()
        body = _body(model)
        if body is None:
            raise TypeError(
                f"NASViTOnnxGraph lays out NASViTForImageClassification and NASViTModel, not {type(model)}."
            )
        size = body.active_resolution
        with torch.no_grad():
            plan = NASViTInferencePlan(body, fused_kernels=False, channels_last=False, height=size, width=size)
            self.resolution = size
            self.stem = _GraphConv(plan.stem)
            height = width = (size - 1) // body.stem.conv.stride + 1
            blocks = []
            for stage in plan.stages:
                if stage.first.stride == 2:
                    height, width = (height - 1) // 2 + 1, (width - 1) // 2 + 1
                blocks.append(_GraphMBConv(stage.first))
                for block in stage.blocks:
                    if isinstance(block, _TransformerLayer):
                        blocks.append(_GraphTransformerLayer(block, height, width))
                    else:
                        blocks.append(_GraphMBConv(block))
            self.blocks = nn.ModuleList(blocks)
            self.final_expand = _GraphConv(plan.final_expand)
            self.feature_mix = nn.Linear(*reversed(plan.feature_mix_weight.shape), plan.feature_mix_bias is not None)
            self.feature_mix.weight.copy_(plan.feature_mix_weight)
            if plan.feature_mix_bias is not None:
                self.feature_mix.bias.copy_(plan.feature_mix_bias)
            self.classifier = None
            if isinstance(model, NASViTForImageClassification) and not isinstance(model.classifier, nn.Identity):
                weight = model.classifier.weight[:, : plan.feature_mix_weight.shape[0]]
                self.classifier = nn.Linear(weight.shape[1], weight.shape[0])
                self.classifier.weight.copy_(weight)
                self.classifier.bias.copy_(model.classifier.bias)
            self.logits_only = isinstance(model, NASViTForImageClassification)
        self.requires_grad_(False)
        self.eval()

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if pixel_values.shape[-2:] != (self.resolution, self.resolution):
            pixel_values = F.interpolate(
                pixel_values, size=(self.resolution, self.resolution), mode="bicubic", align_corners=False
            )
        hidden_states = self.stem(pixel_values)
        for block in self.blocks:
            hidden_states = block(hidden_states)
        pooled = F.adaptive_avg_pool2d(self.final_expand(hidden_states), 1).flatten(1)
        pooled = F.silu(self.feature_mix(pooled))
        if not self.logits_only:
            return hidden_states, pooled
        return (pooled if self.classifier is None else self.classifier(pooled),)
