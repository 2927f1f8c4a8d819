"""MACs: analytic count, the paper's numbers, the fixture's counts, and agreement with a traced count."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import nasvit_hf
from nasvit_hf import NASViTConfig, count_macs, count_parameters
from nasvit_hf.presets import NAMED_ARCHS, TABLE13_MEASURED_MACS_MILLIONS


def test_reference_smallest_and_largest_match_the_paper():
    config = NASViTConfig()
    assert count_macs(config, config.smallest_arch()) / 1e6 == pytest.approx(189.8, rel=0.005)
    assert count_macs(config, config.largest_arch()) / 1e6 == pytest.approx(1881.7, rel=0.005)


def test_matches_the_reference_counts_of_the_fixture_cases(official_cases):
    config = NASViTConfig(search_space=official_cases["space"], num_labels=official_cases["n_classes"])
    for case in official_cases["cases"]:
        assert count_macs(config, case["arch"]) == pytest.approx(case["macs_per_image"], rel=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_a_traced_count_on_random_reference_archs(seed):
    torch.manual_seed(0)
    model = nasvit_hf.NASViTForImageClassification(NASViTConfig()).eval()
    arch = model.sample_active_subnet(torch.Generator().manual_seed(seed))
    pixel_values = torch.randn(1, 3, arch["resolution"], arch["resolution"])
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(pixel_values)
    assert counter.get_total_flops() == 2 * count_macs(model.config, arch)


def test_agrees_with_a_traced_count_on_the_tiny_space(tiny_model):
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        arch = tiny_model.sample_active_subnet(generator)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            tiny_model(torch.randn(1, 3, arch["resolution"], arch["resolution"]))
        assert counter.get_total_flops() == 2 * count_macs(tiny_model.config, arch)


def test_parameter_count_matches_the_extracted_subnet(tiny_model):
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        arch = tiny_model.sample_active_subnet(generator)
        subnet = tiny_model.extract_subnet(arch)
        assert count_parameters(tiny_model.config, arch) == sum(p.numel() for p in subnet.parameters())


def test_macs_grow_with_every_dimension():
    config = NASViTConfig()
    small = config.smallest_arch()
    base = count_macs(config, small)
    for field, index, value in [("width", 5, 120), ("depth", 4, 4), ("expand_ratio", 2, 5), ("kernel_size", 1, 5)]:
        arch = config.smallest_arch()
        arch[field][index] = value
        assert count_macs(config, arch) > base, field
    arch = config.smallest_arch()
    arch["resolution"] = 224
    assert count_macs(config, arch) > base


def test_table13_measured_macs_are_recorded_correctly():
    config = NASViTConfig()
    for name, measured in TABLE13_MEASURED_MACS_MILLIONS.items():
        assert count_macs(config, NAMED_ARCHS[name].arch) / 1e6 == pytest.approx(measured, abs=0.05)


def test_invalid_arch_is_rejected():
    config = NASViTConfig()
    arch = config.smallest_arch()
    arch["width"][0] = 17
    with pytest.raises(ValueError, match="first_conv"):
        count_macs(config, arch)
