"""The eval-mode inference plan (nasvit_hf/models/inference_nasvit.py) computes what the modules compute, is used only
where it may be, and is rebuilt whenever what it was built from changes."""

from __future__ import annotations

import contextlib

import pytest
import torch

import nasvit_hf
from nasvit_hf import NASViTConfig, NASViTForImageClassification
from tests.conftest import randomize_batchnorm_and_scales

ATOL = 1e-5


@contextlib.contextmanager
def plain_path(model):
    """Run `model` through its modules (the path before the inference plan existed)."""
    model.nasvit.inference_fast_path = False
    try:
        yield model
    finally:
        model.nasvit.inference_fast_path = True


def plain_and_fast(model, pixel_values, **kwargs):
    with torch.no_grad():
        with plain_path(model):
            plain = model(pixel_values, **kwargs)
        fast = model(pixel_values, **kwargs)
    assert model.nasvit._inference_cache.plan is not None, "the inference plan was not used"
    return plain, fast


def assert_same_outputs(plain, fast):
    torch.testing.assert_close(fast.logits, plain.logits, atol=ATOL, rtol=0)
    if plain.hidden_states is not None:
        for fast_state, plain_state in zip(fast.hidden_states, plain.hidden_states, strict=True):
            torch.testing.assert_close(fast_state, plain_state, atol=ATOL, rtol=0)
            assert fast_state.is_contiguous()


@pytest.fixture
def random_tiny_model(tiny_config):
    torch.manual_seed(0)
    model = NASViTForImageClassification(tiny_config).eval()
    randomize_batchnorm_and_scales(model, seed=1)
    return model


@pytest.mark.parametrize("switchable_scaling", ["tokens", "width", "shared", "none"])
def test_plan_matches_the_modules_on_random_tiny_archs(tiny_config, switchable_scaling):
    tiny_config.switchable_scaling = switchable_scaling
    torch.manual_seed(0)
    model = NASViTForImageClassification(tiny_config).eval()
    randomize_batchnorm_and_scales(model, seed=1)
    generator = torch.Generator().manual_seed(2)
    for arch in [model.config.smallest_arch(), model.config.largest_arch()] + [None] * 3:
        arch = model.set_active_subnet(arch) if arch is not None else model.sample_active_subnet(generator)
        pixel_values = torch.randn(3, 3, arch["resolution"], arch["resolution"])
        assert_same_outputs(*plain_and_fast(model, pixel_values, output_hidden_states=True))
        subnet = model.extract_subnet(arch).eval()
        assert_same_outputs(*plain_and_fast(subnet, pixel_values))


def test_plan_matches_the_modules_on_random_reference_archs():
    torch.manual_seed(0)
    model = NASViTForImageClassification(NASViTConfig(num_labels=17)).eval()
    randomize_batchnorm_and_scales(model, seed=3)
    generator = torch.Generator().manual_seed(4)
    for arch in [model.config.smallest_arch(), None]:
        arch = model.set_active_subnet(arch) if arch is not None else model.sample_active_subnet(generator)
        subnet = model.extract_subnet(arch).eval()
        pixel_values = torch.randn(1, 3, arch["resolution"], arch["resolution"])
        assert_same_outputs(*plain_and_fast(subnet, pixel_values, output_hidden_states=True))


@pytest.mark.parametrize("num_windows", [4, "auto", [1, 4, 1, 4]])  # k: total windows (4 = 2x2)
def test_plan_matches_the_modules_with_windowed_attention(random_tiny_model, num_windows):
    random_tiny_model.set_num_windows(num_windows)
    arch = random_tiny_model.sample_max_subnet()
    pixel_values = torch.randn(2, 3, arch["resolution"], arch["resolution"])
    assert_same_outputs(*plain_and_fast(random_tiny_model, pixel_values))


def test_bare_model_and_resized_inputs_match(tiny_config):
    torch.manual_seed(0)
    model = nasvit_hf.NASViTModel(tiny_config).eval()
    randomize_batchnorm_and_scales(model, seed=1)
    pixel_values = torch.randn(2, 3, 40, 40)  # resized to the active resolution first, as on the plain path
    with torch.no_grad():
        model.inference_fast_path = False
        plain = model(pixel_values)
        model.inference_fast_path = True
        fast = model(pixel_values)
    assert model._inference_cache.plan is not None
    torch.testing.assert_close(fast.pooler_output, plain.pooler_output, atol=ATOL, rtol=0)
    torch.testing.assert_close(fast.last_hidden_state, plain.last_hidden_state, atol=ATOL, rtol=0)


def test_plan_is_not_used_in_training_mode_and_training_is_unchanged(random_tiny_model):
    pixel_values = torch.randn(4, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        random_tiny_model(pixel_values)
    assert random_tiny_model.nasvit._inference_cache.plan is not None
    random_tiny_model.train()
    assert random_tiny_model.nasvit._inference_cache.plan is None  # train() drops it
    state = {name: tensor.clone() for name, tensor in random_tiny_model.state_dict().items()}
    torch.manual_seed(5)
    loss = random_tiny_model(pixel_values, labels=labels).loss
    loss.backward()
    assert random_tiny_model.nasvit._inference_cache.plan is None
    gradients = {name: p.grad.clone() for name, p in random_tiny_model.named_parameters() if p.grad is not None}

    random_tiny_model.load_state_dict(state)
    random_tiny_model.zero_grad()
    with plain_path(random_tiny_model):
        torch.manual_seed(5)
        reference_loss = random_tiny_model(pixel_values, labels=labels).loss
        reference_loss.backward()
    assert loss.item() == reference_loss.item()
    for name, parameter in random_tiny_model.named_parameters():
        if name in gradients:
            assert torch.equal(parameter.grad, gradients[name]), name


def test_plan_is_not_used_when_gradients_can_flow(random_tiny_model):
    pixel_values = torch.randn(2, 3, 32, 32)
    logits = random_tiny_model(pixel_values).logits  # eval mode, grad enabled: the modules run, autograd works
    assert random_tiny_model.nasvit._inference_cache.plan is None
    logits.sum().backward()
    assert random_tiny_model.nasvit.stem.conv.weight.grad is not None
    random_tiny_model.requires_grad_(False)  # frozen: nothing to differentiate, the plan may run
    random_tiny_model(pixel_values)
    assert random_tiny_model.nasvit._inference_cache.plan is not None


def test_plan_is_rebuilt_after_a_weight_change(random_tiny_model):
    pixel_values = torch.randn(2, 3, 32, 32)
    plain, fast = plain_and_fast(random_tiny_model, pixel_values)
    first_plan = random_tiny_model.nasvit._inference_cache.plan
    optimizer = torch.optim.SGD(random_tiny_model.parameters(), lr=0.01)
    random_tiny_model(pixel_values).logits.square().sum().backward()
    optimizer.step()
    plain_after, fast_after = plain_and_fast(random_tiny_model, pixel_values)
    assert random_tiny_model.nasvit._inference_cache.plan is not first_plan
    assert (plain_after.logits - plain.logits).abs().max() > 1e-3
    assert_same_outputs(plain_after, fast_after)


def test_plan_is_rebuilt_after_a_buffer_change_and_load_state_dict(random_tiny_model):
    pixel_values = torch.randn(2, 3, 32, 32)
    state = {name: tensor.clone() for name, tensor in random_tiny_model.state_dict().items()}
    plain_and_fast(random_tiny_model, pixel_values)
    with torch.no_grad():
        random_tiny_model.nasvit.stem.norm.running_mean.add_(1.0)
    assert_same_outputs(*plain_and_fast(random_tiny_model, pixel_values))
    random_tiny_model.load_state_dict(state)
    plain, fast = plain_and_fast(random_tiny_model, pixel_values)
    assert_same_outputs(plain, fast)


def test_plan_is_rebuilt_after_set_active_subnet(random_tiny_model):
    config = random_tiny_model.config
    pixel_values = torch.randn(2, 3, 32, 32)
    random_tiny_model.set_active_subnet(config.largest_arch())
    plain_and_fast(random_tiny_model, pixel_values)
    random_tiny_model.set_active_subnet(config.smallest_arch())
    assert random_tiny_model.nasvit._inference_cache.plan is None
    assert_same_outputs(*plain_and_fast(random_tiny_model, pixel_values))


def test_plan_is_rebuilt_after_train_then_eval(random_tiny_model):
    pixel_values = torch.randn(4, 3, 32, 32)
    plain_and_fast(random_tiny_model, pixel_values)
    random_tiny_model.train()
    random_tiny_model(pixel_values)  # BN running statistics move
    random_tiny_model.eval()
    assert_same_outputs(*plain_and_fast(random_tiny_model, pixel_values))


def test_saved_weights_and_keys_are_unchanged_and_the_loaded_model_uses_the_plan(random_tiny_model, tmp_path):
    subnet = random_tiny_model.extract_subnet(random_tiny_model.config.largest_arch()).eval()
    keys_before = list(subnet.state_dict())
    pixel_values = torch.randn(2, 3, 32, 32)
    plain, fast = plain_and_fast(subnet, pixel_values)
    assert list(subnet.state_dict()) == keys_before
    subnet.save_pretrained(tmp_path)
    loaded = NASViTForImageClassification.from_pretrained(tmp_path).eval()
    for name, tensor in subnet.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    with torch.inference_mode():
        logits = loaded(pixel_values).logits
    assert loaded.nasvit._inference_cache.plan is not None
    torch.testing.assert_close(logits, plain.logits, atol=ATOL, rtol=0)


def test_batchnorm_without_running_statistics_keeps_the_modules(random_tiny_model):
    norm = random_tiny_model.nasvit.stem.norm
    norm.track_running_stats = False
    norm.running_mean = norm.running_var = None
    with torch.no_grad():
        random_tiny_model(torch.randn(2, 3, 32, 32))
    assert random_tiny_model.nasvit._inference_cache.plan is None


def test_forward_hooks_on_submodules_are_honoured(random_tiny_model):
    pixel_values = torch.randn(2, 3, 32, 32)
    plain_and_fast(random_tiny_model, pixel_values)
    seen = []
    handle = random_tiny_model.nasvit.stages[1].register_forward_hook(lambda module, args, output: seen.append(output))
    with torch.no_grad():
        random_tiny_model(pixel_values)
    assert len(seen) == 1  # the modules ran, so the hook saw the stage output
    handle.remove()
    with torch.no_grad():
        random_tiny_model(pixel_values)
    assert len(seen) == 1 and random_tiny_model.nasvit._inference_cache.plan is not None


def test_a_swapped_in_foreign_layer_is_run_not_bypassed(random_tiny_model):
    class Doubled(torch.nn.Module):  # what an adapter library does: wrap a layer in a module of its own
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, hidden_states, out_features=None):
            return 2 * self.inner(hidden_states, out_features)

    arch = random_tiny_model.sample_max_subnet()
    pixel_values = torch.randn(2, 3, arch["resolution"], arch["resolution"])
    before = plain_and_fast(random_tiny_model, pixel_values)[1].logits
    layer = next(stage for stage in random_tiny_model.nasvit.stages if stage.is_transformer).blocks[1]
    layer.mlp1.fc2 = Doubled(layer.mlp1.fc2)
    with torch.no_grad():
        after = random_tiny_model(pixel_values).logits
        with plain_path(random_tiny_model):
            expected = random_tiny_model(pixel_values).logits
    assert random_tiny_model.nasvit._inference_cache.plan is None
    assert torch.equal(after, expected) and not torch.allclose(after, before)


def test_plan_follows_a_dtype_change(random_tiny_model):
    pixel_values = torch.randn(2, 3, 32, 32)
    plain_and_fast(random_tiny_model, pixel_values)
    random_tiny_model.to(torch.float64)
    plain, fast = plain_and_fast(random_tiny_model, pixel_values.double())
    assert fast.logits.dtype == torch.float64
    torch.testing.assert_close(fast.logits, plain.logits, atol=1e-10, rtol=0)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="packed weights need oneDNN")
def test_packed_weights_match_the_modules_at_every_batch_size(random_tiny_model, monkeypatch):
    """Small batches run on weights packed once per input shape (oneDNN convolution layout, MKL GEMM format); larger
    ones on the plain weights; beyond the per-weight shape limit the plain weights serve. All match the modules."""
    from nasvit_hf.models import inference_nasvit

    arch = random_tiny_model.sample_max_subnet()
    monkeypatch.setattr(inference_nasvit, "_PACK_MAX_SHAPES", 2)
    plan = None
    for batch_size in (1, 2, 3, 1, 6):  # 3: a third small shape, over the limit of 2; 6: above _PACK_MAX_BATCH
        pixel_values = torch.randn(batch_size, 3, arch["resolution"], arch["resolution"])
        assert_same_outputs(*plain_and_fast(random_tiny_model, pixel_values, output_hidden_states=True))
        if plan is not None:
            assert random_tiny_model.nasvit._inference_cache.plan is plan  # one plan serves every batch size
        plan = random_tiny_model.nasvit._inference_cache.plan
    packables = list(_iter_packables(plan))
    convs = [p for p in packables if isinstance(p, inference_nasvit._Conv)]
    linears = [p for p in packables if isinstance(p, inference_nasvit._Linear)]
    assert convs and linears, "the tiny max subnet has MBConv and transformer layers"
    assert all(len(conv._packed) == 2 for conv in convs), "each convolution: packed for batch 1 and 2, not 3 or 6"
    if inference_nasvit._mkl_packing_available():
        assert all(len(linear._packed) == 2 for linear in linears)


def _iter_packables(plan):
    from nasvit_hf.models.inference_nasvit import _MBConv, _TransformerLayer

    yield plan.stem
    yield plan.final_expand
    for stage in plan.stages:
        for block in [stage.first, *stage.blocks]:
            if isinstance(block, _MBConv):
                yield from (conv for conv in (block.expansion, block.depthwise, block.projection) if conv is not None)
            elif isinstance(block, _TransformerLayer):
                yield from (block.qkv, block.value_conv, block.proj)
                for fc1, fc2 in block.mlp:
                    yield from (fc1, fc2)


def test_a_model_with_a_built_plan_can_be_copied_and_pickled(random_tiny_model):
    """Packed oneDNN/MKL weights cannot be copied: a copy (deepcopy, pickle) starts with no plan and builds its own."""
    import copy
    import pickle

    arch = random_tiny_model.sample_max_subnet()
    pixel_values = torch.randn(1, 3, arch["resolution"], arch["resolution"])
    _, fast = plain_and_fast(random_tiny_model, pixel_values)
    for clone in (copy.deepcopy(random_tiny_model), pickle.loads(pickle.dumps(random_tiny_model))):
        assert clone.nasvit._inference_cache.plan is None
        with torch.no_grad():
            torch.testing.assert_close(clone(pixel_values).logits, fast.logits, atol=0, rtol=0)
        assert clone.nasvit._inference_cache.plan is not None


# ---------------------------------------------------------------------------------------------------------------------
# The backbone and the segmentation model (any input size, windowed attention, early stop)
# ---------------------------------------------------------------------------------------------------------------------
ALL_STAGES = ["stem", "mb1", "mb2", "mb3", "mb4", "mb5", "mb6", "mb7"]


def _random_backbone(tiny_config, out_features, seed=0):
    tiny_config.out_features = out_features
    torch.manual_seed(seed)
    backbone = nasvit_hf.NASViTBackbone(tiny_config).eval()
    randomize_batchnorm_and_scales(backbone, seed=seed + 1)
    return backbone


def _plain_and_fast_maps(backbone, pixel_values, **kwargs):
    with torch.no_grad():
        backbone.inference_fast_path = False
        plain = backbone(pixel_values, **kwargs)
        backbone.inference_fast_path = True
        fast = backbone(pixel_values, **kwargs)
    assert backbone._inference_cache.plan is not None, "the inference plan was not used"
    return plain, fast


# Odd sizes and 9 windows give windows padded at the bottom/right (masked keys); "auto" at 224 px windows mb4 only.
@pytest.mark.parametrize("num_windows", [1, 4, 9, "auto"])
@pytest.mark.parametrize("size", [(64, 64), (100, 76), (224, 160)])
def test_backbone_plan_matches_the_modules_at_any_size_and_windows(tiny_config, num_windows, size):
    from nasvit_hf.models.inference_nasvit import _TransformerLayer

    backbone = _random_backbone(tiny_config, ALL_STAGES)
    backbone.set_num_windows(num_windows)
    backbone.set_active_subnet(backbone.sample_active_subnet(torch.Generator().manual_seed(sum(size))))
    plain, fast = _plain_and_fast_maps(backbone, torch.randn(2, 3, *size))
    for fast_map, plain_map in zip(fast.feature_maps, plain.feature_maps, strict=True):
        torch.testing.assert_close(fast_map, plain_map, atol=ATOL, rtol=0)
        assert fast_map.is_contiguous()
    plan = backbone._inference_cache.plan
    layers = [layer for stage in plan.stages for layer in stage.blocks if stage.is_transformer]
    assert layers and all(isinstance(layer, _TransformerLayer) for layer in layers)  # windows run in the plan too
    if num_windows in (4, 9):
        assert any(layer.windows is not None for layer in layers)
    if num_windows == 9 and size == (100, 76):
        assert any(layer.windows.key_mask is not None for layer in layers)  # some windows are padded


def test_backbone_plan_stops_at_the_last_requested_stage_and_returns_hidden_states(tiny_config):
    backbone = _random_backbone(tiny_config, ["mb1", "mb3"])
    pixel_values = torch.randn(1, 3, 72, 56)
    plain, fast = _plain_and_fast_maps(backbone, pixel_values)
    assert len(backbone._inference_cache.plan.stages) == 3 and backbone._inference_cache.plan.final_expand is None
    assert [m.shape[1] for m in fast.feature_maps] == [m.shape[1] for m in plain.feature_maps]
    for fast_map, plain_map in zip(fast.feature_maps, plain.feature_maps, strict=True):
        torch.testing.assert_close(fast_map, plain_map, atol=ATOL, rtol=0)
    plain, fast = _plain_and_fast_maps(backbone, pixel_values, output_hidden_states=True)
    assert len(fast.hidden_states) == len(plain.hidden_states) == 8
    for fast_state, plain_state in zip(fast.hidden_states, plain.hidden_states, strict=True):
        torch.testing.assert_close(fast_state, plain_state, atol=ATOL, rtol=0)


@pytest.mark.parametrize("out_features", [None, ["mb1", "mb4"]])
def test_decode_head_fast_path_is_the_same_function(tiny_config, out_features):
    """Projection + fuse block + BN folded per scale and applied before the upsampling: equal to the modules (checked
    in float64, where only the rounding of the reordered sums differs), with random BN statistics and odd sizes."""
    tiny_config.num_labels, tiny_config.decoder_hidden_size = 7, 32
    if out_features is not None:
        tiny_config.out_features = out_features
    model = nasvit_hf.NASViTForSemanticSegmentation(tiny_config).eval().double()
    head = model.decode_head
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.normal_()
        head.batch_norm.running_mean.normal_()
        head.batch_norm.running_var.uniform_(0.5, 2.0)
    channels = model.nasvit.num_features
    indices = [index % 8 for index in model.config.out_indices]
    sizes = [(33, 47), (17, 24), (9, 12), (5, 6)][: len(indices)]
    features = [torch.randn(2, channels[i], *size, dtype=torch.float64) for i, size in zip(indices, sizes)]
    calls = []
    handle = head.linear_fuse.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        plain = head(features)  # a hook on a submodule: the modules run
        handle.remove()
        fast = head(features)
    assert calls == [1]
    torch.testing.assert_close(fast, plain, rtol=1e-10, atol=1e-10)
    head.inference_fast_path = False
    with torch.no_grad():
        torch.testing.assert_close(head(features), plain, rtol=0, atol=0)


def test_decode_head_fast_path_is_traced_by_torch_export_and_counted_as_defined_by_flop_counter(tiny_config):
    from torch.utils.flop_counter import FlopCounterMode

    tiny_config.num_labels = 3
    head = nasvit_hf.NASViTForSemanticSegmentation(tiny_config).eval().decode_head
    features = [torch.randn(1, c, s, s) for c, s in zip([24, 32, 40, 56], [16, 8, 4, 2])]
    with torch.no_grad():
        program = torch.export.export(head, (features,))
        expected = head(features)
        with FlopCounterMode(display=False) as counter:
            head(features)
    targets = {str(node.target) for node in program.graph.nodes}
    assert not any("cat" in target for target in targets)  # the folded form: no concatenation, no 4·width fuse conv
    torch.testing.assert_close(program.module()(features), expected, atol=ATOL, rtol=0)
    fuse_macs = (4 * 256) * 256 * 16 * 16  # the defined head's fuse conv at 16x16 (decoder width 256)
    assert counter.get_total_flops() // 2 > fuse_macs


def test_torch_export_traces_the_modules_and_a_global_hook_keeps_the_modules(random_tiny_model, tiny_config):
    """Under torch.export (the ONNX exporter's front end) and torch.compile the modules are traced, not the plan: in
    an exported graph the plan measured no faster (docs/benchmarks.md), and `export_onnx` lays out its own graph.
    A global forward hook makes every fast path stand aside (it would be bypassed), the decode head's as well."""
    arch = random_tiny_model.sample_max_subnet()
    subnet = random_tiny_model.extract_subnet(arch).eval()
    pixel_values = torch.randn(1, 3, arch["resolution"], arch["resolution"])
    with torch.no_grad():
        program = torch.export.export(subnet, (pixel_values,))
        expected = subnet(pixel_values).logits
    assert any("batch_norm" in str(node.target) for node in program.graph.nodes)
    torch.testing.assert_close(program.module()(pixel_values).logits, expected, atol=ATOL, rtol=0)

    tiny_config.num_labels = 3
    head = nasvit_hf.NASViTForSemanticSegmentation(tiny_config).eval().decode_head
    features = [torch.randn(1, c, s, s) for c, s in zip([24, 32, 40, 56], [16, 8, 4, 2])]
    calls = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, *args: calls.append(module))
    try:
        with torch.no_grad():
            head(features)
    finally:
        handle.remove()
    assert head.linear_fuse in calls  # the modules ran


def test_segmentation_plan_follows_the_input_size_and_leaves_training_alone(tiny_config):
    tiny_config.num_labels = 4
    torch.manual_seed(0)
    model = nasvit_hf.NASViTForSemanticSegmentation(tiny_config).eval()
    randomize_batchnorm_and_scales(model, seed=1)
    cache = model.nasvit._inference_cache
    for size in [(96, 96), (130, 97), (96, 96)]:
        pixel_values = torch.randn(2, 3, *size)
        with torch.no_grad():
            model.nasvit.inference_fast_path = model.decode_head.inference_fast_path = False
            plain = model(pixel_values).logits
            model.nasvit.inference_fast_path = model.decode_head.inference_fast_path = True
            fast = model(pixel_values).logits
        assert cache.plan is not None and cache.plan.input_size == size  # rebuilt for each new size
        torch.testing.assert_close(fast, plain, atol=ATOL, rtol=0)
    model.train()
    assert cache.plan is None
    labels = torch.randint(0, 4, (2, 96, 96))
    loss = model(torch.randn(2, 3, 96, 96), labels=labels).loss
    loss.backward()
    assert cache.plan is None and model.nasvit.stem.conv.weight.grad is not None
