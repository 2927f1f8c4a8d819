"""NASViT backbone, windowed attention, Segformer head, segmentation model, processor, pipeline and MACs."""

from __future__ import annotations

import ast

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

import nasvit_hf
from nasvit_hf import (
    NASViTBackbone,
    NASViTConfig,
    NASViTForImageClassification,
    NASViTForSemanticSegmentation,
    NASViTModel,
    NASViTSegmentationImageProcessor,
)
from nasvit_hf.macs import count_segmentation_macs
from nasvit_hf.models.modeling_nasvit import NASViTAttention, NASViTTransformerLayer
from nasvit_hf.presets import get_search_space


def tiny_config(**kwargs) -> NASViTConfig:
    kwargs.setdefault("num_labels", 5)
    return NASViTConfig(search_space=get_search_space("tiny"), **kwargs)


def boost_layer_scale(model: torch.nn.Module) -> None:
    """The scaling tables start at 1e-4, which makes transformer layers nearly identities; make them count."""
    for module in model.modules():
        if isinstance(module, NASViTTransformerLayer):
            module.layer_scale_attn.data.fill_(1.0)
            module.layer_scale_mlp.data.fill_(1.0)


def seeded(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):  # the 0.02 init makes attention nearly uniform
                module.weight.normal_(0, 0.2)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
    boost_layer_scale(model)
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------
# Windowed attention
# ----------------------------------------------------------------------------------------------------------------
def per_window_reference(attention: NASViTAttention, tokens: torch.Tensor, height: int, width: int, windows):
    """Attention computed window by window over the REAL tokens of each window (no padding at all)."""
    batch, length, channels = tokens.shape
    heads, head_dim = channels // attention.head_dim, attention.head_dim
    value_channels = attention.value_expansion * channels
    query = attention.q(tokens, channels).transpose(1, 2).reshape(batch, channels, height, width)
    key = attention.k(tokens, channels).transpose(1, 2).reshape(batch, channels, height, width)
    value = attention.v(tokens, value_channels).transpose(1, 2).reshape(batch, value_channels, height, width)
    value = F.conv2d(value, attention.value_conv.weight[:value_channels], padding=1, groups=value_channels)
    window_h, window_w = -(-height // windows[0]), -(-width // windows[1])
    context = torch.zeros(batch, value_channels, height, width)
    for top in range(0, height, window_h):
        for left in range(0, width, window_w):
            rows, cols = slice(top, top + window_h), slice(left, left + window_w)
            q = query[:, :, rows, cols].flatten(2).view(batch, heads, head_dim, -1).transpose(-2, -1)
            k = key[:, :, rows, cols].flatten(2).view(batch, heads, head_dim, -1).transpose(-2, -1)
            v = value[:, :, rows, cols].flatten(2).view(batch, heads, value_channels // heads, -1).transpose(-2, -1)
            sub_h, sub_w = min(window_h, height - top), min(window_w, width - left)
            scores = (q * head_dim**-0.5) @ k.transpose(-2, -1) + attention.relative_position_bias(sub_h, sub_w, heads)
            scores = attention._talking_heads(scores, attention.talking_heads_pre).softmax(-1)
            scores = attention._talking_heads(scores, attention.talking_heads_post)
            out = (scores @ v).transpose(-2, -1).reshape(batch, value_channels, sub_h, sub_w)
            context[:, :, rows, cols] = out
    return attention.proj(F.silu(context.flatten(2).transpose(1, 2)), channels)


@pytest.mark.parametrize(
    ("height", "width", "num_windows", "windows"),
    [(8, 8, 4, (2, 2)), (7, 5, 4, (2, 2)), (9, 13, 9, (3, 3)), (15, 22, "auto", (2, 3))],
)
def test_windowed_attention_equals_attention_inside_each_window(height, width, num_windows, windows):
    torch.manual_seed(0)
    attention = NASViTAttention(tiny_config(), 32)
    with torch.no_grad():
        for parameter in attention.parameters():
            parameter.normal_(0, 0.3)
    attention.num_windows = num_windows
    assert attention.window_grid(height, width) == windows
    tokens = torch.randn(2, height * width, 24)  # an active width below the maximum: sliced weights
    with torch.no_grad():
        got = attention(tokens, height, width)
        expected = per_window_reference(attention, tokens, height, width, windows)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_backbone_with_one_window_equals_the_classification_model():
    config = tiny_config()
    classifier = seeded(NASViTModel(config))
    # Bit equality is a property of the modules: the classifier's eval-mode inference plan (BN folding, fused
    # kernels) is checked against them separately, within float tolerance (tests/test_inference_fast_path.py).
    classifier.inference_fast_path = False
    backbone = NASViTBackbone(tiny_config(out_features=["stem", "mb1", "mb2", "mb3", "mb4", "mb5", "mb6", "mb7"]))
    backbone.load_state_dict(classifier.state_dict(), strict=False)
    backbone.set_num_windows(1)
    backbone.eval()
    backbone.inference_fast_path = False  # (the backbone's plan: tests/test_inference_fast_path.py)
    pixel_values = torch.randn(2, 3, 64, 64)  # the arch's resolution: the classifier does not resize
    with torch.no_grad():
        expected = classifier(pixel_values, output_hidden_states=True).hidden_states
        got = backbone(pixel_values).feature_maps
    assert len(got) == len(expected) == 8
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # "auto" on the same input differs only where a stage's grid has at least 14 tokens per side: none here.
    backbone.set_num_windows(4)  # k = 4 windows in total: 2x2
    with torch.no_grad():
        windowed = backbone(pixel_values).feature_maps
    assert not torch.allclose(windowed[4], expected[4], atol=1e-4)  # mb4 (4x4 grid) now uses 2x2 windows


def test_large_inputs_need_windows_and_the_error_says_so():
    backbone = seeded(NASViTBackbone(tiny_config(num_windows=1, out_features=["mb4"])))
    pixel_values = torch.randn(1, 3, 320, 300)  # mb4 grid 20x19 > the 18x18 relative position table
    with pytest.raises(ValueError, match="num_windows='auto'"):
        backbone(pixel_values)
    backbone.set_num_windows("auto")
    with torch.no_grad():
        (features,) = backbone(pixel_values).feature_maps
    assert features.shape == (1, 40, 20, 19) and torch.isfinite(features).all()


def test_num_windows_is_validated():
    with pytest.raises(ValueError, match="num_windows"):
        tiny_config(num_windows=0)
    with pytest.raises(ValueError, match="one entry per transformer stage"):
        tiny_config(num_windows=[1, 4])
    with pytest.raises(ValueError, match="perfect square"):
        tiny_config(num_windows=2)
    assert tiny_config(num_windows=[4, "auto", 1, 1]).num_windows == [4, "auto", 1, 1]


def test_classification_model_is_unchanged_by_default():
    model = NASViTForImageClassification(tiny_config())
    assert model.config.num_windows is None
    assert all(
        block.attention.num_windows == 1
        for stage in model.nasvit.stages
        for block in stage.blocks[1:]
        if stage.is_transformer
    )


# ----------------------------------------------------------------------------------------------------------------
# Backbone
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("height", "width"), [(64, 64), (67, 45), (33, 97)])
def test_backbone_feature_maps_keep_the_input_size(height, width):
    backbone = NASViTBackbone(tiny_config(out_features=["mb2", "mb3", "mb4", "mb6"])).eval()
    assert backbone.out_features == ["mb2", "mb3", "mb4", "mb6"]
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, height, width)).feature_maps
    for feature_map, stride, channels in zip(maps, [4, 8, 16, 32], backbone.channels):
        assert feature_map.shape == (1, channels, -(-height // stride), -(-width // stride))


def test_backbone_out_indices_and_active_arch():
    backbone = NASViTBackbone(tiny_config(out_indices=[0, -1])).eval()
    assert backbone.out_features == ["stem", "mb7"]
    arch = backbone.sample_min_subnet()
    assert backbone.channels == [arch["width"][0], arch["width"][7]]
    with torch.no_grad():
        stem, last = backbone(torch.randn(1, 3, 48, 48)).feature_maps
    assert stem.shape[1] == arch["width"][0] and last.shape[1] == arch["width"][7]
    with pytest.raises(ValueError, match="out_features must be a subset"):
        tiny_config(out_features=["mb9"])


def test_supernet_with_active_arch_equals_extracted_subnet():
    model = seeded(NASViTForSemanticSegmentation(tiny_config()))
    arch = model.sample_active_subnet(torch.Generator().manual_seed(3))
    subnet = model.extract_subnet().eval()
    assert not subnet.config.is_supernet
    pixel_values = torch.randn(2, 3, 71, 58)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values).logits, subnet(pixel_values).logits, rtol=1e-5, atol=1e-5)
    assert subnet.active_arch == arch


def test_auto_backbone_from_config():
    from transformers import AutoBackbone

    backbone = AutoBackbone.from_config(tiny_config(out_features=["mb3", "mb5"]))
    assert isinstance(backbone, NASViTBackbone) and backbone.out_features == ["mb3", "mb5"]


# ----------------------------------------------------------------------------------------------------------------
# Head and segmentation model
# ----------------------------------------------------------------------------------------------------------------
def test_decode_head_equals_transformers_segformer_head():
    from transformers import SegformerConfig
    from transformers.models.segformer.modeling_segformer import SegformerDecodeHead

    config = tiny_config(decoder_hidden_size=32, num_labels=7)
    model = NASViTForSemanticSegmentation(config).eval()
    channels = [24, 32, 40, 56]  # the largest widths of mb2, mb3, mb4, mb6 in the tiny space
    segformer = SegformerDecodeHead(
        SegformerConfig(num_encoder_blocks=4, hidden_sizes=channels, decoder_hidden_size=32, num_labels=7)
    ).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.decode_head.parameters():
            parameter.normal_()
    segformer.load_state_dict(model.decode_head.state_dict())
    features = [torch.randn(2, c, s, s + 1) for c, s in zip(channels, [16, 8, 4, 2])]
    model.decode_head.inference_fast_path = False  # the modules (the fast path: tests/test_inference_fast_path.py)
    with torch.no_grad():
        torch.testing.assert_close(model.decode_head(features), segformer(features), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("height", "width"), [(64, 64), (65, 47)])
def test_logits_and_loss_for_any_input_size(height, width):
    model = NASViTForSemanticSegmentation(tiny_config())
    labels = torch.randint(0, 5, (2, height, width))
    labels[:, :5] = 255
    output = model(torch.randn(2, 3, height, width), labels=labels)
    assert output.logits.shape == (2, 5, -(-height // 4), -(-width // 4))
    assert torch.isfinite(output.loss)
    output.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert all(n in grads for n, _ in model.decode_head.named_parameters(prefix="decode_head"))
    assert not any(n.startswith("nasvit.stages.6.") for n in grads)  # mb7 is not needed: it does not run
    assert any(n.startswith("nasvit.stages.5.") for n in grads) and "nasvit.stem.conv.weight" in grads


def test_loss_skips_the_ignore_index():
    model = NASViTForSemanticSegmentation(tiny_config()).eval()
    pixel_values = torch.randn(1, 3, 32, 32)
    labels = torch.full((1, 32, 32), 255)
    labels[0, :8, :8] = 3
    with torch.no_grad():
        output = model(pixel_values, labels=labels)
        upsampled = F.interpolate(output.logits, size=(32, 32), mode="bilinear", align_corners=False)
        expected = F.cross_entropy(upsampled[0, :, :8, :8].reshape(5, -1).T, torch.full((64,), 3))
        all_ignored = model(pixel_values, labels=torch.full((1, 32, 32), 255)).loss
    torch.testing.assert_close(output.loss, expected)
    assert all_ignored.item() == 0.0


def test_bad_labels_give_clear_errors():
    model = NASViTForSemanticSegmentation(tiny_config())
    pixel_values = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"class indices in \[0, 5\) or the ignore index 255"):
        model(pixel_values, labels=torch.full((1, 32, 32), 7))
    with pytest.raises(ValueError, match="must match the images"):
        model(pixel_values, labels=torch.zeros(1, 30, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="integer mask"):
        model(pixel_values, labels=torch.zeros(1, 32, 32))


def test_from_exported_classification_subnet_keeps_backbone_weights(tmp_path):
    classifier = NASViTForImageClassification(tiny_config(num_labels=10))
    subnet = seeded(classifier.extract_subnet(classifier.config.smallest_arch()))
    subnet.save_pretrained(tmp_path / "a-model")
    model = NASViTForSemanticSegmentation.from_pretrained(
        tmp_path / "a-model", num_labels=3, id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2}
    )
    state = model.state_dict()
    for name, tensor in subnet.nasvit.state_dict().items():
        if not name.startswith("head."):
            torch.testing.assert_close(state[f"nasvit.{name}"], tensor, rtol=0, atol=0)
    assert model.config.num_labels == 3 and model.config.num_windows == "auto"
    assert model.decode_head.classifier.out_channels == 3
    assert all(torch.isfinite(p).all() for p in model.decode_head.parameters())
    with torch.no_grad():
        assert torch.isfinite(model.eval()(torch.randn(1, 3, 40, 40)).logits).all()


def test_save_load_round_trip_and_pipeline(tmp_path):
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, pipeline

    model = seeded(NASViTForSemanticSegmentation(tiny_config(num_labels=3, id2label={0: "bg", 1: "x", 2: "y"})))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path).eval()
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, NASViTForSemanticSegmentation)
    assert isinstance(processor, NASViTSegmentationImageProcessor)
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        # Same weights; conv kernels may pick other vectorised paths for the loaded tensors: float-level noise.
        torch.testing.assert_close(loaded(pixel_values).logits, model(pixel_values).logits, rtol=1e-3, atol=1e-4)
    image = Image.fromarray((np.random.default_rng(0).random((45, 70, 3)) * 255).astype(np.uint8))
    segmenter = pipeline("image-segmentation", model=loaded, image_processor=processor)
    result = segmenter(image)
    assert result and all(item["mask"].size == (70, 45) for item in result)
    assert {item["label"] for item in result} <= {"bg", "x", "y"}


def test_processor_resizes_masks_with_their_images_and_rejects_mismatches():
    processor = NASViTSegmentationImageProcessor(size={"height": 32, "width": 48})
    images = [Image.new("RGB", (50, 40)), Image.new("L", (30, 20))]
    masks = [np.arange(40 * 50).reshape(40, 50) % 7, np.full((20, 30), 255, dtype=np.uint8)]
    batch = processor(images=images, segmentation_maps=masks, return_tensors="pt")
    assert batch["pixel_values"].shape == (2, 3, 32, 48)
    assert batch["labels"].shape == (2, 32, 48) and batch["labels"].dtype == torch.int64
    assert set(batch["labels"][0].unique().tolist()) <= set(range(7)) and (batch["labels"][1] == 255).all()
    reduced = processor(images=images[:1], segmentation_maps=[np.zeros((40, 50), np.uint8)], do_reduce_labels=True)
    assert (torch.as_tensor(np.asarray(reduced["labels"][0])) == 255).all()
    with pytest.raises(ValueError, match="every mask must have its image's size"):
        processor(images=images[:1], segmentation_maps=[np.zeros((41, 50), np.uint8)])
    with pytest.raises(ValueError, match="one map per image"):
        processor(images=images, segmentation_maps=masks[:1])


def test_post_process_semantic_segmentation_sizes():
    processor = NASViTSegmentationImageProcessor()
    logits = torch.randn(2, 4, 8, 10)
    maps = processor.post_process_semantic_segmentation(
        nasvit_hf.models.modeling_nasvit_segmentation.SemanticSegmenterOutput(logits=logits),
        target_sizes=[(30, 40), (7, 9)],
    )
    assert [m.shape for m in maps] == [(30, 40), (7, 9)]
    assert processor.post_process_semantic_segmentation({"logits": logits})[0].shape == (8, 10)


# ----------------------------------------------------------------------------------------------------------------
# MACs
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("num_windows", "size", "out_features"),
    [("auto", (150, 200), None), (1, (61, 45), None), ([4, "auto", 1, 9], (130, 97), ["stem", "mb3", "mb7"])],
)
def test_count_segmentation_macs_matches_a_traced_count(num_windows, size, out_features):
    extra = {"out_features": out_features} if out_features else {}
    config = tiny_config(num_labels=7, num_windows=num_windows, decoder_hidden_size=32, **extra)
    model = NASViTForSemanticSegmentation(config).eval()
    arch = model.sample_active_subnet(torch.Generator().manual_seed(1))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, *size))
    assert counter.get_total_flops() == 2 * count_segmentation_macs(model.config, arch, size)


def test_saved_segmentation_folder_loads_with_trust_remote_code_without_nasvit(tmp_path):
    from .conftest import run_without_nasvit

    model = seeded(NASViTForSemanticSegmentation(tiny_config(num_labels=3, id2label={0: "bg", 1: "x", 2: "y"})))
    folder = tmp_path / "seg"
    model.save_pretrained(folder)
    pixel_values = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        expected = model(pixel_values).logits
    torch.save(pixel_values, tmp_path / "x.pt")
    code = f"""
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, pipeline
model = AutoModelForSemanticSegmentation.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
processor = AutoImageProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
assert type(processor).__name__ == "NASViTSegmentationImageProcessor", type(processor)
with torch.no_grad():
    torch.save(model(torch.load({str(tmp_path / "x.pt")!r})).logits, {str(tmp_path / "remote.pt")!r})
segmenter = pipeline("image-segmentation", model={str(folder)!r}, trust_remote_code=True)
print(sorted(item["label"] for item in segmenter(Image.new("RGB", (40, 30), (90, 20, 200)))))
"""
    output = run_without_nasvit(code, cwd=tmp_path)
    assert set(ast.literal_eval(output.strip().splitlines()[-1])) <= {"bg", "x", "y"}
    torch.testing.assert_close(torch.load(tmp_path / "remote.pt"), expected, rtol=1e-3, atol=1e-4)


def test_the_segmentation_pipeline_takes_nasvit_without_a_not_supported_error(tmp_path):
    import logging

    from transformers import pipeline

    model = NASViTForSemanticSegmentation(tiny_config(num_labels=3))
    model.extract_subnet(model.config.smallest_arch()).save_pretrained(tmp_path)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("transformers").addHandler(handler)
    try:
        segmenter = pipeline("image-segmentation", model=str(tmp_path))
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert isinstance(segmenter.model, NASViTForSemanticSegmentation)
    assert not [r.getMessage() for r in records if "not supported" in r.getMessage()]
