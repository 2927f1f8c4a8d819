"""The supernet: outputs, the subnet API, supernet ⇔ extracted parity, gradients, bad input."""

from __future__ import annotations

import pytest
import torch
from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention

import nasvit_hf
from nasvit_hf import NASViTConfig, NASViTForImageClassification

from .conftest import randomize_batchnorm_and_scales


def test_forward_returns_logits_and_loss(tiny_model):
    pixel_values = torch.randn(3, 3, 64, 64)
    labels = torch.tensor([0, 3, 9])
    output = tiny_model(pixel_values=pixel_values, labels=labels)
    assert isinstance(output, ImageClassifierOutputWithNoAttention)
    assert output.logits.shape == (3, 10)
    assert output.loss.ndim == 0 and torch.isfinite(output.loss)
    tiny_model.train()
    assert type(tiny_model(pixel_values=pixel_values)) is ImageClassifierOutputWithNoAttention


def test_soft_label_problem_type_gives_soft_target_cross_entropy(tiny_model):
    import copy

    model = copy.deepcopy(tiny_model)
    model.config.problem_type = "soft_label_classification"
    pixel_values = torch.randn(2, 3, 32, 32)
    targets = torch.softmax(torch.randn(2, 10), dim=-1)
    output = model(pixel_values=pixel_values, labels=targets)
    expected = torch.sum(-targets * torch.log_softmax(output.logits, dim=-1), dim=-1).mean()
    torch.testing.assert_close(output.loss, expected)


def test_hidden_states_are_the_stage_feature_maps(tiny_model):
    output = tiny_model(pixel_values=torch.randn(1, 3, 64, 64), output_hidden_states=True)
    sizes = [tuple(h.shape[-2:]) for h in output.hidden_states]
    assert sizes == [(32, 32), (32, 32), (16, 16), (8, 8), (4, 4), (2, 2), (2, 2), (1, 1)]


def test_zero_labels_gives_an_identity_head(tiny_config):
    tiny_config.num_labels = 0
    model = NASViTForImageClassification(tiny_config).eval()
    assert model(pixel_values=torch.randn(1, 3, 64, 64)).logits.shape == (1, 160)


def test_input_of_another_size_is_resized_bicubically_to_the_active_resolution(tiny_model):
    arch = tiny_model.sample_min_subnet()
    pixel_values = torch.randn(2, 3, 45, 45)
    resized = torch.nn.functional.interpolate(pixel_values, size=(32, 32), mode="bicubic", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(tiny_model(pixel_values).logits, tiny_model(resized).logits)
    assert arch["resolution"] == 32


def test_sampling_api_and_active_arch(tiny_model):
    config = tiny_model.config
    assert tiny_model.sample_max_subnet() == config.largest_arch() == tiny_model.active_arch
    assert tiny_model.sample_min_subnet() == config.smallest_arch() == tiny_model.active_arch
    first = tiny_model.sample_active_subnet(generator=torch.Generator().manual_seed(5))
    second = tiny_model.sample_active_subnet(generator=torch.Generator().manual_seed(5))
    assert first == second == tiny_model.active_arch
    config.validate_arch(first)
    seen = {str(tiny_model.sample_active_subnet(torch.Generator().manual_seed(s))) for s in range(20)}
    assert len(seen) > 10
    active = tiny_model.active_arch
    active["width"][0] = 999  # a copy: mutating it does not change the model
    assert tiny_model.active_arch["width"][0] != 999


def test_set_active_subnet_rejects_archs_outside_the_space(tiny_model):
    arch = tiny_model.config.largest_arch()
    arch["expand_ratio"][1] = 5
    with pytest.raises(ValueError, match=r"\['expand_ratio'\] for stage 'mb2' is 5; allowed values: \[4, 6\]"):
        tiny_model.set_active_subnet(arch)
    with pytest.raises(ValueError, match="missing"):
        tiny_model.set_active_subnet({"resolution": 32})


@pytest.mark.parametrize(
    "pixel_values, message",
    [
        (torch.randn(3, 32, 32), "shape"),
        (torch.randn(1, 1, 32, 32), "shape"),
        (torch.randn(1, 4, 32, 32), "shape"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "float"),
        (None, "required"),
    ],
)
def test_bad_pixel_values_are_rejected(tiny_model, pixel_values, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(pixel_values=pixel_values)


def test_out_of_range_labels_are_rejected(tiny_model):
    with pytest.raises(ValueError, match=r"class indices in \[0, 10\)"):
        tiny_model(pixel_values=torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 10]))


@pytest.mark.parametrize("switchable_scaling", ["tokens", "width", "shared", "none"])
def test_extracted_subnet_matches_the_supernet_for_every_switchable_scaling_mode(tiny_config, switchable_scaling):
    tiny_config.switchable_scaling = switchable_scaling
    torch.manual_seed(0)
    model = NASViTForImageClassification(tiny_config).eval()
    randomize_batchnorm_and_scales(model, seed=1)
    generator = torch.Generator().manual_seed(2)
    for _ in range(3):
        arch = model.sample_active_subnet(generator)
        subnet = model.extract_subnet(arch).eval()
        pixel_values = torch.randn(2, 3, arch["resolution"], arch["resolution"])
        with torch.no_grad():
            torch.testing.assert_close(subnet(pixel_values).logits, model(pixel_values).logits, atol=1e-5, rtol=1e-5)


def test_extracted_subnet_matches_the_supernet_on_random_reference_archs():
    """Property test over the reference search space (random archs, non-trivial BN statistics)."""
    torch.manual_seed(0)
    model = NASViTForImageClassification(NASViTConfig(num_labels=17)).eval()
    randomize_batchnorm_and_scales(model, seed=3)
    generator = torch.Generator().manual_seed(4)
    archs = [model.config.smallest_arch(), model.config.largest_arch()]
    archs += [model.sample_active_subnet(generator) for _ in range(2)]
    for arch in archs:
        model.set_active_subnet(arch)
        subnet = model.extract_subnet().eval()
        assert subnet.num_parameters() == nasvit_hf.count_parameters(model.config, arch)
        pixel_values = torch.randn(1, 3, arch["resolution"], arch["resolution"])
        with torch.no_grad():
            torch.testing.assert_close(subnet(pixel_values).logits, model(pixel_values).logits, atol=1e-4, rtol=1e-4)


def test_extracted_subnet_keeps_only_the_sliced_weights(tiny_model):
    arch = tiny_model.config.smallest_arch()
    subnet = tiny_model.extract_subnet(arch)
    assert subnet.num_parameters() < tiny_model.num_parameters() / 2
    assert subnet.nasvit.stages[0].blocks[0].depthwise.conv.weight.shape == (8, 1, 3, 3)
    full = tiny_model.nasvit.stages[0].blocks[0].depthwise.conv.weight
    torch.testing.assert_close(subnet.nasvit.stages[0].blocks[0].depthwise.conv.weight, full[:8, :, 1:4, 1:4])


def test_every_parameter_of_the_largest_subnet_gets_a_finite_gradient(tiny_model):
    tiny_model.train()
    tiny_model.sample_max_subnet()
    randomize_batchnorm_and_scales(tiny_model)
    loss = tiny_model(pixel_values=torch.randn(2, 3, 64, 64), labels=torch.tensor([1, 2])).loss
    loss.backward()
    for name, parameter in tiny_model.named_parameters():
        if name.endswith("shortcut.weight"):
            continue  # runs only when the active input and output widths differ
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name


def test_token_grid_larger_than_the_relative_position_table_is_a_clear_error():
    config = NASViTConfig(search_space=nasvit_hf.presets.get_search_space("tiny"), max_relative_position=1)
    model = NASViTForImageClassification(config).eval()
    with pytest.raises(ValueError, match="relative position table"):
        model(pixel_values=torch.randn(1, 3, 64, 64))


def test_train_mode_updates_only_the_active_slice_of_running_statistics(tiny_model):
    tiny_model.sample_min_subnet()
    tiny_model.train()
    norm = tiny_model.nasvit.stem.norm
    before = norm.running_mean.clone()
    with torch.no_grad():
        tiny_model(pixel_values=torch.randn(4, 3, 32, 32))
    assert not torch.equal(norm.running_mean[:8], before[:8])
    assert torch.equal(norm.running_mean[8:], before[8:])
