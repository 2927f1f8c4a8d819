"""The eval-mode inference plan (nasvit_hf/models/inference_nasvit.py) computes what the modules compute, is used only
where it may be, and follows every change of what it reads, however it was made (it keeps nothing weight-sized)."""

from __future__ import annotations

import collections
import contextlib

import pytest
import torch

import nasvit_hf
from nasvit_hf import NASViTConfig, NASViTForImageClassification
from nasvit_hf.models.inference_nasvit import NASViTInferencePlan
from tests.conftest import randomize_batchnorm_and_scales

ATOL = 1e-5
_SPIED = ("_stage_outputs", "_stage", "_mbconv", "_transformer_layer", "_windowed_attention_core")


@contextlib.contextmanager
def spy_plan():
    """Count the calls of the plan's methods (`_stage_outputs` once per forward that runs the plan)."""
    calls: collections.Counter = collections.Counter()
    originals = {name: NASViTInferencePlan.__dict__[name] for name in _SPIED}

    def spy(name, original):
        def wrapper(self, *args, **kwargs):
            calls[name] += 1
            return original(self, *args, **kwargs)

        return wrapper

    for name, original in originals.items():
        setattr(NASViTInferencePlan, name, spy(name, original))
    try:
        yield calls
    finally:
        for name, original in originals.items():
            setattr(NASViTInferencePlan, name, original)


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
        with spy_plan() as calls:
            fast = model(pixel_values, **kwargs)
    assert calls["_stage_outputs"] == 1, "the inference plan was not used"
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


def check_random_tiny_archs(tiny_config, switchable_scaling: str, batch_sizes=(3,), frozen: bool = False) -> None:
    """The plan (`frozen`: after `freeze_inference_plan()`) matches the modules on the smallest, largest and three
    random archs of the tiny space, as a supernet at each of `batch_sizes` in turn and as an extracted subnet."""
    tiny_config.switchable_scaling = switchable_scaling
    torch.manual_seed(0)
    model = NASViTForImageClassification(tiny_config).eval()
    randomize_batchnorm_and_scales(model, seed=1)
    if frozen:
        model.freeze_inference_plan()
    generator = torch.Generator().manual_seed(2)
    for arch in [model.config.smallest_arch(), model.config.largest_arch()] + [None] * 3:
        arch = model.set_active_subnet(arch) if arch is not None else model.sample_active_subnet(generator)
        for batch_size in batch_sizes:
            pixel_values = torch.randn(batch_size, 3, arch["resolution"], arch["resolution"])
            assert_same_outputs(*plain_and_fast(model, pixel_values, output_hidden_states=True))
        subnet = model.extract_subnet(arch).eval()
        if frozen:
            subnet.freeze_inference_plan()
        assert_same_outputs(*plain_and_fast(subnet, pixel_values))


@pytest.mark.parametrize("switchable_scaling", ["tokens", "width", "shared", "none"])
def test_plan_matches_the_modules_on_random_tiny_archs(tiny_config, switchable_scaling):
    check_random_tiny_archs(tiny_config, switchable_scaling)


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
        assert model.inference_plan(pixel_values) is not None
        fast = model(pixel_values)
    torch.testing.assert_close(fast.pooler_output, plain.pooler_output, atol=ATOL, rtol=0)
    torch.testing.assert_close(fast.last_hidden_state, plain.last_hidden_state, atol=ATOL, rtol=0)


def test_plan_is_not_used_in_training_mode_and_training_is_unchanged(random_tiny_model):
    pixel_values = torch.randn(4, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        assert random_tiny_model.nasvit.inference_plan(pixel_values) is not None
        random_tiny_model.train()
        assert random_tiny_model.nasvit.inference_plan(pixel_values) is None
    state = {name: tensor.clone() for name, tensor in random_tiny_model.state_dict().items()}
    torch.manual_seed(5)
    with spy_plan() as calls:
        loss = random_tiny_model(pixel_values, labels=labels).loss
    loss.backward()
    assert not calls
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
    with spy_plan() as calls:
        logits = random_tiny_model(pixel_values).logits  # eval mode, grad enabled: the modules run, autograd works
    assert not calls
    logits.sum().backward()
    assert random_tiny_model.nasvit.stem.conv.weight.grad is not None
    random_tiny_model.requires_grad_(False)  # frozen: nothing to differentiate, the plan may run
    with spy_plan() as calls:
        random_tiny_model(pixel_values)
    assert calls["_stage_outputs"] == 1


def test_plan_follows_an_optimizer_step(random_tiny_model):
    pixel_values = torch.randn(2, 3, 32, 32)
    plain, fast = plain_and_fast(random_tiny_model, pixel_values)
    optimizer = torch.optim.SGD(random_tiny_model.parameters(), lr=0.01)
    random_tiny_model(pixel_values).logits.square().sum().backward()
    optimizer.step()
    plain_after, fast_after = plain_and_fast(random_tiny_model, pixel_values)
    assert (plain_after.logits - plain.logits).abs().max() > 1e-3
    assert_same_outputs(plain_after, fast_after)


def test_plan_follows_a_buffer_change_and_load_state_dict(random_tiny_model):
    pixel_values = torch.randn(2, 3, 32, 32)
    state = {name: tensor.clone() for name, tensor in random_tiny_model.state_dict().items()}
    plain_and_fast(random_tiny_model, pixel_values)
    with torch.no_grad():
        random_tiny_model.nasvit.stem.norm.running_mean.add_(1.0)
    assert_same_outputs(*plain_and_fast(random_tiny_model, pixel_values))
    random_tiny_model.load_state_dict(state)
    plain, fast = plain_and_fast(random_tiny_model, pixel_values)
    assert_same_outputs(plain, fast)


def test_plan_follows_set_active_subnet(random_tiny_model):
    config = random_tiny_model.config
    pixel_values = torch.randn(2, 3, 32, 32)
    random_tiny_model.set_active_subnet(config.largest_arch())
    plain_and_fast(random_tiny_model, pixel_values)
    random_tiny_model.set_active_subnet(config.smallest_arch())
    assert_same_outputs(*plain_and_fast(random_tiny_model, pixel_values))


def test_plan_follows_train_then_eval(random_tiny_model):
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
    with torch.inference_mode(), spy_plan() as calls:
        logits = loaded(pixel_values).logits
    assert calls["_stage_outputs"] == 1
    torch.testing.assert_close(logits, plain.logits, atol=ATOL, rtol=0)


def test_a_batchnorm_without_running_statistics_runs_its_block_as_modules(random_tiny_model):
    block = random_tiny_model.nasvit.stages[1].blocks[0]
    norm = block.depthwise.norm
    norm.track_running_stats = False
    norm.running_mean = norm.running_var = None
    pixel_values = torch.randn(2, 3, 32, 32)
    seen = []
    block.register_forward_hook(lambda module, args, output: seen.append(output))
    assert_same_outputs(*plain_and_fast(random_tiny_model, pixel_values))  # the rest of the model runs the plan
    assert len(seen) == 2  # plain and fast: the block ran as modules both times


def test_forward_hooks_on_submodules_are_honoured(random_tiny_model):
    pixel_values = torch.randn(2, 3, 32, 32)
    plain_and_fast(random_tiny_model, pixel_values)
    seen = []
    handle = random_tiny_model.nasvit.stages[1].register_forward_hook(lambda module, args, output: seen.append(output))
    with torch.no_grad(), spy_plan() as calls:
        random_tiny_model(pixel_values)
    assert len(seen) == 1  # the stage ran as modules, so the hook saw its output; the other stages ran the plan
    assert calls["_stage_outputs"] == 1 and calls["_stage"] == len(random_tiny_model.nasvit.stages)
    handle.remove()
    with torch.no_grad():
        random_tiny_model(pixel_values)
    assert len(seen) == 1


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
    plain, after = plain_and_fast(random_tiny_model, pixel_values)  # the layer runs as modules, the rest as the plan
    assert_same_outputs(plain, after)
    assert not torch.allclose(after.logits, before)


def test_plan_follows_a_dtype_change(random_tiny_model):
    pixel_values = torch.randn(2, 3, 32, 32)
    plain_and_fast(random_tiny_model, pixel_values)
    random_tiny_model.to(torch.float64)
    plain, fast = plain_and_fast(random_tiny_model, pixel_values.double())
    assert fast.logits.dtype == torch.float64
    torch.testing.assert_close(fast.logits, plain.logits, atol=1e-10, rtol=0)


def test_plan_matches_the_modules_at_every_batch_size(random_tiny_model):
    arch = random_tiny_model.sample_max_subnet()
    for batch_size in (1, 2, 6, 1):
        pixel_values = torch.randn(batch_size, 3, arch["resolution"], arch["resolution"])
        assert_same_outputs(*plain_and_fast(random_tiny_model, pixel_values, output_hidden_states=True))


def test_a_model_that_ran_the_plan_can_be_copied_and_pickled(random_tiny_model):
    import copy
    import pickle

    arch = random_tiny_model.sample_max_subnet()
    pixel_values = torch.randn(1, 3, arch["resolution"], arch["resolution"])
    _, fast = plain_and_fast(random_tiny_model, pixel_values)
    for clone in (copy.deepcopy(random_tiny_model), pickle.loads(pickle.dumps(random_tiny_model))):
        with torch.no_grad():
            torch.testing.assert_close(clone(pixel_values).logits, fast.logits, atol=0, rtol=0)


# In-place edits that bypass the version counters (the plan was once keyed on them): through `.data`, and through a
# numpy view. After a first eval call (which fills the small caches), every later call must see the edit.
def _edit_conv_weight(model):
    model.nasvit.stages[1].blocks[0].projection.conv.weight.data.mul_(1.5)


def _edit_linear_weight(model):
    layer = next(stage for stage in model.nasvit.stages if stage.is_transformer).blocks[1]
    layer.attention.q.weight.data.copy_(10 * torch.randn_like(layer.attention.q.weight))


def _edit_running_mean(model):
    model.nasvit.stem.norm.running_mean.data.add_(0.5)


def _edit_position_table(model):
    layer = next(stage for stage in model.nasvit.stages if stage.is_transformer).blocks[1]
    table = layer.attention.relative_position_bias_table
    table.data.add_(3 * torch.randn_like(table))


def _edit_talking_heads_through_numpy(model):
    layer = next(stage for stage in model.nasvit.stages if stage.is_transformer).blocks[1]
    weight = layer.attention.talking_heads_pre.weight
    weight.detach().numpy()[...] = 3 * torch.randn_like(weight).numpy()


def _edit_layer_scale(model):
    layer = next(stage for stage in model.nasvit.stages if stage.is_transformer).blocks[1]
    layer.layer_scale_mlp.data.fill_(-1.0)


@pytest.mark.parametrize(
    "edit",
    [
        _edit_conv_weight,
        _edit_linear_weight,
        _edit_running_mean,
        _edit_position_table,
        _edit_talking_heads_through_numpy,
        _edit_layer_scale,
    ],
)
def test_in_place_edits_after_a_first_eval_call_are_never_answered_with_stale_weights(random_tiny_model, edit):
    arch = random_tiny_model.sample_max_subnet()
    with torch.no_grad():  # let the transformer layers and the classifier move the logits visibly
        for stage in random_tiny_model.nasvit.stages:
            for block in stage.blocks[1:] if stage.is_transformer else []:
                block.layer_scale_attn.fill_(2.0)
                block.layer_scale_mlp.fill_(2.0)
                for linear in (block.attention.v, block.attention.proj):
                    linear.weight.mul_(20)
        random_tiny_model.classifier.weight.mul_(50)
    pixel_values = torch.randn(2, 3, arch["resolution"], arch["resolution"])
    before = plain_and_fast(random_tiny_model, pixel_values)[1].logits
    plain_and_fast(random_tiny_model, pixel_values)  # a second call: every small cache is warm
    edit(random_tiny_model)
    plain, fast = plain_and_fast(random_tiny_model, pixel_values)
    assert (plain.logits - before).abs().max() > 20 * ATOL, "the edit must change the output (or staleness hides)"
    assert_same_outputs(plain, fast)
    with torch.no_grad(), plain_path(random_tiny_model):  # the modules' own bias cache follows the table too
        torch.testing.assert_close(random_tiny_model(pixel_values).logits, plain.logits, atol=0, rtol=0)


def test_importing_nasvit_hf_registers_no_process_wide_module_hooks(tmp_path):
    import subprocess
    import sys

    code = (
        "import torch.nn.modules.module as m\n"
        "names = [n for n in dir(m) if n.startswith('_global_') and n.endswith('hooks')]\n"
        "before = {n: len(getattr(m, n)) for n in names}\n"
        "import nasvit_hf, nasvit_hf.deploy, nasvit_hf.models.inference_nasvit\n"
        "after = {n: len(getattr(m, n)) for n in names}\n"
        "assert names and before == after, (before, after)\n"
    )
    from tests.conftest import REPO_ROOT

    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


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


def _plain_and_fast_maps(backbone, pixel_values, calls=None, **kwargs):
    with torch.no_grad():
        backbone.inference_fast_path = False
        plain = backbone(pixel_values, **kwargs)
        backbone.inference_fast_path = True
        with spy_plan() as spied:
            fast = backbone(pixel_values, **kwargs)
    assert spied["_stage_outputs"] == 1, "the inference plan was not used"
    if calls is not None:
        calls.update(spied)
    return plain, fast


# Odd sizes and 9 windows give windows padded at the bottom/right (masked keys); "auto" at 224 px windows mb4 only.
@pytest.mark.parametrize("num_windows", [1, 4, 9, "auto"])
@pytest.mark.parametrize("size", [(64, 64), (100, 76), (224, 160)])
def test_backbone_plan_matches_the_modules_at_any_size_and_windows(tiny_config, num_windows, size):
    backbone = _random_backbone(tiny_config, ALL_STAGES)
    backbone.set_num_windows(num_windows)
    backbone.set_active_subnet(backbone.sample_active_subnet(torch.Generator().manual_seed(sum(size))))
    calls: collections.Counter = collections.Counter()
    plain, fast = _plain_and_fast_maps(backbone, torch.randn(2, 3, *size), calls)
    for fast_map, plain_map in zip(fast.feature_maps, plain.feature_maps, strict=True):
        torch.testing.assert_close(fast_map, plain_map, atol=ATOL, rtol=0)
        assert fast_map.is_contiguous()
    assert calls["_transformer_layer"] > 0  # transformer layers run in the plan, windowed attention too
    if num_windows in (4, 9):
        assert calls["_windowed_attention_core"] > 0


def test_backbone_plan_stops_at_the_last_requested_stage_and_returns_hidden_states(tiny_config):
    backbone = _random_backbone(tiny_config, ["mb1", "mb3"])
    pixel_values = torch.randn(1, 3, 72, 56)
    calls: collections.Counter = collections.Counter()
    plain, fast = _plain_and_fast_maps(backbone, pixel_values, calls)
    assert calls["_stage"] == 3  # mb1..mb3: nothing after the last requested map
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
    for size in [(96, 96), (130, 97), (96, 96)]:
        pixel_values = torch.randn(2, 3, *size)
        with torch.no_grad():
            model.nasvit.inference_fast_path = model.decode_head.inference_fast_path = False
            plain = model(pixel_values).logits
            model.nasvit.inference_fast_path = model.decode_head.inference_fast_path = True
            with spy_plan() as calls:
                fast = model(pixel_values).logits
        assert calls["_stage_outputs"] == 1
        torch.testing.assert_close(fast, plain, atol=ATOL, rtol=0)
    model.train()
    labels = torch.randint(0, 4, (2, 96, 96))
    with spy_plan() as calls:
        loss = model(torch.randn(2, 3, 96, 96), labels=labels).loss
    loss.backward()
    assert not calls and model.nasvit.stem.conv.weight.grad is not None
