"""The paper's search space: MLP ratio and number of windows k as arch fields (issue 11), through the arch schema."""

from __future__ import annotations

import copy
import json
import random

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import nasvit_hf
from nasvit_hf import NASViTConfig, NASViTForImageClassification, count_macs, count_parameters
from nasvit_hf.macs import count_segmentation_macs
from nasvit_hf.presets import (
    NAMED_ARCHS,
    PAPER_SPACE_MACS_MILLIONS,
    TABLE13_MEASURED_MACS_MILLIONS,
    TABLE13_PAPER_SPACE_MACS_MILLIONS,
    get_search_space,
)
from nasvit_hf.search import ArchEncoder

TRANSFORMER_STAGES = ["mb4", "mb5", "mb6", "mb7"]


def tiny_paper_config(**kwargs) -> NASViTConfig:
    return NASViTConfig(search_space=get_search_space("tiny-paper"), num_labels=10, **kwargs)


def randomized(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Norm parameters, biases and layer scales off their initial values (zero-initialised projection BNs and 1e-4
    layer scales would hide the transformer layers from a parity check)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim == 1 or "layer_scale" in name:
                parameter.copy_(0.5 * torch.rand(parameter.shape, generator=generator) + 0.25)
    return model


@pytest.fixture(scope="module")
def tiny_paper_model():
    torch.manual_seed(0)
    return randomized(NASViTForImageClassification(tiny_paper_config()))


def test_paper_preset_is_table_1_as_printed():
    space = NASViTConfig(search_space=get_search_space("paper")).search_space
    assert space["resolutions"] == [192, 224, 256, 288]
    assert [space[s]["k"] for s in ("mb1", "mb2", "mb3")] == [[3, 5]] * 3
    assert [space[s]["se"] for s in ("mb1", "mb2", "mb3", *TRANSFORMER_STAGES)] == [False, False, True] + [False] * 4
    assert all(space[s]["mlp_ratio"] == [1, 2] for s in TRANSFORMER_STAGES)
    assert [space[s]["num_windows"] for s in TRANSFORMER_STAGES] == [[1, 4], [1], [1], [1]]
    assert space["mb5"]["d"] == [3, 4, 5, 6, 7, 8] and space["last_conv"]["c"] == [1792, 1984]


def test_paper_space_macs_range_is_recorded_and_the_paper_range_is_the_reference_space():
    config = NASViTConfig(search_space=get_search_space("paper"))
    smallest, largest = config.smallest_arch(), config.largest_arch()
    assert smallest["num_windows"] == [4, 1, 1, 1] and smallest["mlp_ratio"] == [1] * 4
    assert largest["num_windows"] == [1] * 4 and largest["mlp_ratio"] == [2] * 4
    assert count_macs(config, smallest) / 1e6 == pytest.approx(PAPER_SPACE_MACS_MILLIONS["smallest"], abs=0.05)
    assert count_macs(config, largest) / 1e6 == pytest.approx(PAPER_SPACE_MACS_MILLIONS["largest"], abs=0.05)
    # The paper's 190 / 1,881 M are the reference space's extremes (global attention, MLP ratio 1).
    reference = NASViTConfig()
    assert round(count_macs(reference, reference.smallest_arch()) / 1e6) == 190
    assert round(count_macs(reference, reference.largest_arch()) / 1e6) == 1882


def test_table13_archs_carry_k_and_mlp_ratio_and_count_in_both_spaces():
    paper = NASViTConfig(search_space=get_search_space("paper"))
    reference = NASViTConfig()
    for name, measured in TABLE13_PAPER_SPACE_MACS_MILLIONS.items():
        arch = NAMED_ARCHS[name].arch
        assert arch["mlp_ratio"] == [1, 1, 1, 1] and arch["num_windows"] == [1, 1, 1, 1]
        assert count_macs(paper, arch) / 1e6 == pytest.approx(measured, abs=0.05)
        assert count_macs(reference, arch) / 1e6 == pytest.approx(TABLE13_MEASURED_MACS_MILLIONS[name], abs=0.05)
        assert reference.validate_arch(arch) == {
            k: v for k, v in arch.items() if k not in ("mlp_ratio", "num_windows")
        }


def test_spaces_without_the_fields_keep_their_archs_and_reject_other_values():
    config = NASViTConfig(search_space=get_search_space("tiny"))
    arch = config.largest_arch()
    assert "mlp_ratio" not in arch and "num_windows" not in arch
    with_defaults = dict(arch, mlp_ratio=[1, 1, 1, 1], num_windows=[1, 1, 1, 1])
    assert config.validate_arch(with_defaults) == arch
    with pytest.raises(ValueError, match=r"arch\['mlp_ratio'\] for stage 'mb6' is 2; allowed values: \[1\]"):
        config.validate_arch(dict(arch, mlp_ratio=[1, 1, 2, 1]))
    paper = tiny_paper_config()
    with pytest.raises(ValueError, match=r"missing \['mlp_ratio', 'num_windows'\]"):
        paper.validate_arch(arch)
    with pytest.raises(ValueError, match=r"arch\['num_windows'\] for stage 'mb5' is 4; allowed values: \[1\]"):
        paper.validate_arch(dict(paper.largest_arch(), num_windows=[1, 4, 1, 1]))


def test_window_choices_must_be_perfect_squares():
    space = get_search_space("tiny-paper")
    space["mb4"]["num_windows"] = [1, 2]
    with pytest.raises(ValueError, match="not perfect squares"):
        NASViTConfig(search_space=space)
    space = get_search_space("tiny")
    space["mb1"]["mlp_ratio"] = [1, 2]  # an MBConv stage has no MLP
    with pytest.raises(ValueError, match="unknown keys"):
        NASViTConfig(search_space=space)


def test_sampling_and_collapsing_cover_the_new_fields(tiny_paper_model):
    config = tiny_paper_model.config
    archs = [tiny_paper_model.sample_active_subnet(random.Random(seed)) for seed in range(30)]
    assert len({tuple(a["mlp_ratio"]) for a in archs}) > 4 and {a["num_windows"][0] for a in archs} == {1, 4}
    arch = archs[0]
    collapsed = config.subnet_config(arch).search_space
    assert [collapsed[s]["mlp_ratio"] for s in TRANSFORMER_STAGES] == [[r] for r in arch["mlp_ratio"]]
    assert [collapsed[s]["num_windows"] for s in TRANSFORMER_STAGES] == [[k] for k in arch["num_windows"]]
    assert not config.subnet_config(arch).is_supernet


@pytest.mark.parametrize("training", [False, True])
def test_random_archs_supernet_equals_extracted_subnet(tiny_paper_model, training):
    generator = torch.Generator().manual_seed(7 + training)
    checked = set()
    for _ in range(6):
        arch = tiny_paper_model.sample_active_subnet(generator)
        tiny_paper_model.train(training)
        subnet = tiny_paper_model.extract_subnet(arch)
        assert subnet.training == training
        pixel_values = torch.randn(3, 3, arch["resolution"], arch["resolution"], generator=generator)
        with torch.no_grad():
            expected = tiny_paper_model(pixel_values).logits
            got = subnet(pixel_values).logits
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        checked.add((arch["num_windows"][0], max(arch["mlp_ratio"])))
    tiny_paper_model.eval()
    assert len(checked) >= 3  # windows and MLP ratio both varied


def test_extracted_subnet_keeps_exactly_the_needed_weights(tiny_paper_model):
    arch = tiny_paper_model.config.smallest_arch()
    arch["mlp_ratio"] = [2, 1, 2, 1]
    subnet = tiny_paper_model.extract_subnet(arch)
    for stage, width, ratio in zip(subnet.nasvit.stages[3:], arch["width"][4:8], arch["mlp_ratio"]):
        layer = stage.blocks[1]
        for mlp in (layer.mlp1, layer.mlp2):
            assert mlp.fc1.weight.shape == (ratio * width, width) and mlp.fc2.weight.shape == (width, ratio * width)
    params = sum(p.numel() for p in subnet.parameters())
    assert params == count_parameters(tiny_paper_model.config, arch)


def test_macs_and_parameters_are_exact_on_random_archs(tiny_paper_model):
    generator = torch.Generator().manual_seed(2)
    for _ in range(6):
        arch = tiny_paper_model.sample_active_subnet(generator)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            tiny_paper_model.eval()(torch.randn(1, 3, arch["resolution"], arch["resolution"]))
        assert counter.get_total_flops() == 2 * count_macs(tiny_paper_model.config, arch)
        subnet = tiny_paper_model.extract_subnet(arch)
        assert count_parameters(tiny_paper_model.config, arch) == sum(p.numel() for p in subnet.parameters())


def test_more_windows_and_a_smaller_mlp_ratio_cost_less():
    config = NASViTConfig(search_space=get_search_space("paper"))
    arch = config.largest_arch()
    base = count_macs(config, arch)
    assert count_macs(config, dict(arch, num_windows=[4, 1, 1, 1])) < base
    assert count_macs(config, dict(arch, mlp_ratio=[2, 2, 1, 2])) < base


def test_runtime_windows_override_the_arch_and_none_restores_it(tiny_paper_model):
    model = copy.deepcopy(tiny_paper_model).eval()
    arch = model.set_active_subnet(dict(model.config.largest_arch(), resolution=64, num_windows=[4, 1, 1, 1]))
    attention = model.nasvit.stages[3].blocks[1].attention
    assert attention.num_windows == 4 and attention.window_grid(4, 4) == (2, 2)
    windowed_macs = count_macs(model.config, arch)
    model.set_num_windows(1)
    assert attention.num_windows == 1 and count_macs(model.config, arch) > windowed_macs
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert counter.get_total_flops() == 2 * count_macs(model.config, arch)
    model.set_num_windows(None)
    assert attention.num_windows == 4 and count_macs(model.config, arch) == windowed_macs
    model.sample_min_subnet()
    assert attention.num_windows == 4


def test_configs_saved_with_windows_per_side_are_migrated_to_k(tmp_path):
    config = tiny_paper_config(num_windows=[4, "auto", 1, 9])
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["num_windows"] == [4, "auto", 1, 9] and saved["windows_convention"] == "total"
    assert NASViTConfig.from_pretrained(tmp_path).num_windows == [4, "auto", 1, 9]
    del saved["windows_convention"]  # as written before the k convention: windows per side
    saved["num_windows"] = [2, "auto", 1, 3]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert NASViTConfig.from_pretrained(tmp_path).num_windows == [4, "auto", 1, 9]
    # configs without int windows do not record the convention: reference/tiny folders save as before
    assert "windows_convention" not in NASViTConfig().to_dict()


def test_search_encoder_has_genes_for_the_new_fields():
    config = tiny_paper_config()
    encoder = ArchEncoder(config.search_space)
    names = encoder.feature_names
    assert [n for n in names if n.startswith(("mlp_ratio", "num_windows"))] == [
        "mlp_ratio[0]",
        "mlp_ratio[1]",
        "mlp_ratio[2]",
        "mlp_ratio[3]",
        "num_windows[0]",
    ]
    genes = encoder.sample(40, np.random.default_rng(0))
    for row in genes:
        arch = encoder.decode(row)
        assert config.validate_arch(arch) == arch
        np.testing.assert_array_equal(encoder.encode(arch), row)


def test_segmentation_macs_match_a_traced_count_with_the_arch_windows_or_auto():
    from nasvit_hf import NASViTForSemanticSegmentation

    for num_windows, size in (("auto", (150, 120)), ([4, 1, 1, 1], (64, 80))):
        config = tiny_paper_config(num_windows=num_windows, decoder_hidden_size=16)
        model = NASViTForSemanticSegmentation(config).eval()
        arch = model.sample_active_subnet(torch.Generator().manual_seed(3))
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.randn(1, 3, *size))
        assert counter.get_total_flops() == 2 * count_segmentation_macs(model.config, arch, size)


def test_onnx_export_of_a_windowed_subnet_matches_eager(tiny_paper_model, tmp_path):
    from nasvit_hf.deploy import OnnxRunner, export_onnx

    arch = tiny_paper_model.config.smallest_arch()
    arch.update(resolution=48, mlp_ratio=[2, 1, 2, 1], num_windows=[4, 1, 1, 1])  # 3x3 mb4 grid: padded windows
    subnet = tiny_paper_model.extract_subnet(arch).eval()
    report = export_onnx(subnet, tmp_path / "model.onnx", verify=False)
    pixel_values = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = subnet(pixel_values).logits.numpy()
    np.testing.assert_allclose(OnnxRunner(report.path)(pixel_values)["logits"], expected, atol=1e-4, rtol=0)


def test_named_tiny_paper_space_is_a_preset():
    assert nasvit_hf.presets.SEARCH_SPACES["tiny-paper"].space["mb4"]["num_windows"] == [1, 4]
    assert get_search_space("tiny-paper")["mb5"]["mlp_ratio"] == [1, 2]


def test_predictor_and_evolution_search_the_new_fields_within_a_budget():
    from nasvit_hf.search import AccuracyPredictor, EvolutionConfig, MacsEfficiency, evolutionary_search

    config = tiny_paper_config()
    encoder = ArchEncoder(config.search_space)
    macs = MacsEfficiency(config, encoder)
    rng = np.random.default_rng(0)
    genes = encoder.sample(200, rng)
    # a synthetic accuracy that rewards MLP ratio 2 and global attention in mb4
    archs = [encoder.decode(row) for row in genes]
    accuracy = np.array([sum(a["mlp_ratio"]) - (a["num_windows"][0] == 4) + 0.01 * a["resolution"] for a in archs])
    predictor, metrics = AccuracyPredictor.fit_and_validate(encoder.features(genes), accuracy, seed=0)
    assert metrics.spearman_rho > 0.5
    budget = float(np.median(macs(genes)))
    settings = EvolutionConfig(population_size=64, parents=16, mutations=16, crossovers=16, generations=4)
    result = evolutionary_search(encoder, lambda f: predictor.predict(f), macs, budget, settings, rng)
    best = encoder.decode(result.genes)
    assert result.efficiency <= budget and count_macs(config, best) <= budget
    assert config.validate_arch(best) == best


def test_saved_paper_space_supernet_and_subnet_load_with_and_without_nasvit(tiny_paper_model, tmp_path):
    from transformers import AutoModelForImageClassification

    from .conftest import run_without_nasvit

    model = copy.deepcopy(tiny_paper_model).eval()
    arch = model.set_active_subnet(dict(model.config.smallest_arch(), resolution=48, mlp_ratio=[2, 1, 1, 2]))
    model.save_pretrained(tmp_path / "supernet")
    subnet = model.extract_subnet(arch).eval()
    subnet.save_pretrained(tmp_path / "subnet")
    pixel_values = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        expected = subnet(pixel_values).logits
        for folder in ("supernet", "subnet"):
            loaded = AutoModelForImageClassification.from_pretrained(tmp_path / folder).eval()
            assert loaded.active_arch == arch
            torch.testing.assert_close(loaded(pixel_values).logits, expected, atol=1e-5, rtol=0)
    torch.save(pixel_values, tmp_path / "x.pt")
    code = f"""
import torch
from transformers import AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained({str(tmp_path / "subnet")!r}, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert model.config.arch["num_windows"] == [4, 1, 1, 1], model.config.arch
with torch.no_grad():
    torch.save(model(torch.load({str(tmp_path / "x.pt")!r})).logits, {str(tmp_path / "remote.pt")!r})
"""
    run_without_nasvit(code, cwd=tmp_path)
    torch.testing.assert_close(torch.load(tmp_path / "remote.pt"), expected, atol=0, rtol=0)


def test_eval_fast_path_equals_the_modules_on_random_archs(tiny_paper_model):
    """The eval-mode inference plan (inference_nasvit.py) sizes the MLP hidden layer by the MLP ratio too."""
    model = copy.deepcopy(tiny_paper_model).eval()
    generator = torch.Generator().manual_seed(11)
    ratios = set()
    for _ in range(5):
        arch = model.sample_active_subnet(generator)
        ratios.update(arch["mlp_ratio"])
        pixel_values = torch.randn(2, 3, arch["resolution"], arch["resolution"], generator=generator)
        with torch.no_grad():
            assert model.nasvit.inference_plan(pixel_values) is not None
            fast = model(pixel_values).logits
            model.nasvit.inference_fast_path = False
            plain = model(pixel_values).logits
            model.nasvit.inference_fast_path = True
        torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)
    assert ratios == {1, 2}
