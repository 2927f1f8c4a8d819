"""NASViTConfig: defaults, validation with clear messages, JSON round trips."""

from __future__ import annotations

import copy
import json

import pytest

import nasvit_hf
from nasvit_hf import REFERENCE_SEARCH_SPACE, NASViTConfig
from nasvit_hf.presets import get_search_space

from .conftest import FIXTURES_DIR


def test_default_config_is_the_reference_supernet_at_its_largest_arch():
    config = NASViTConfig()
    assert config.model_type == "nasvit"
    assert config.num_labels == 1000
    assert config.search_space == REFERENCE_SEARCH_SPACE
    assert config.arch == config.largest_arch()
    assert config.arch["resolution"] == 288 and config.arch["width"][-1] == 1984
    assert config.is_supernet


def test_reference_space_matches_the_shared_fixture():
    if not (FIXTURES_DIR / "official_search_space.json").exists():
        pytest.skip("shared fixtures not available")
    official = json.loads((FIXTURES_DIR / "official_search_space.json").read_text())
    assert NASViTConfig(search_space=official).search_space == NASViTConfig().search_space


def test_config_json_round_trip(tmp_path):
    config = NASViTConfig(search_space=get_search_space("tiny"), num_labels=10, switchable_scaling="width")
    config.arch = config.smallest_arch()
    config.save_pretrained(tmp_path)
    loaded = NASViTConfig.from_pretrained(tmp_path)
    assert loaded.search_space == config.search_space
    assert loaded.arch == config.arch
    assert loaded.switchable_scaling == "width" and loaded.num_labels == 10


@pytest.mark.parametrize("labels", [{}, {"id2label": {0: "LABEL_0", 1: "LABEL_1"}}, {"id2label": {0: "no", 1: "yes"}}])
def test_two_class_config_reloads_with_two_classes(tmp_path, labels):
    # transformers' to_diff_dict drops label maps equal to its own two-label default; NASViT's default is 1000
    config = NASViTConfig(search_space=get_search_space("tiny"), num_labels=2, **labels)
    config.save_pretrained(tmp_path)
    loaded = NASViTConfig.from_pretrained(tmp_path)
    assert loaded.num_labels == 2 and loaded.id2label == config.id2label
    assert NASViTConfig.from_dict(config.to_diff_dict()).num_labels == 2


def test_arch_value_outside_the_space_names_stage_field_and_allowed_values():
    config = NASViTConfig()
    arch = config.largest_arch()
    arch["depth"][4] = 10
    with pytest.raises(
        ValueError, match=r"arch\['depth'\] for stage 'mb5' is 10; allowed values: \[3, 4, 5, 6, 7, 8, 9\]"
    ):
        config.validate_arch(arch)
    arch = config.largest_arch()
    arch["resolution"] = 300
    with pytest.raises(ValueError, match=r"resolution.*allowed: \[192, 224, 256, 288\]"):
        NASViTConfig(arch=arch)


def test_arch_with_wrong_lengths_or_missing_keys_is_rejected():
    config = NASViTConfig()
    arch = config.largest_arch()
    arch["width"] = arch["width"][:-1]
    with pytest.raises(ValueError, match=r"arch\['width'\] must be a list of 9 values"):
        config.validate_arch(arch)
    arch = config.largest_arch()
    del arch["kernel_size"]
    with pytest.raises(ValueError, match=r"missing \['kernel_size'\]"):
        config.validate_arch(arch)
    arch = config.largest_arch()
    arch["windows"] = 4
    with pytest.raises(ValueError, match="unknown keys"):
        config.validate_arch(arch)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: s.pop("mb3"), "missing"),
        (lambda s: s["mb2"].update(k=[4]), "odd kernel"),
        (lambda s: s["mb2"].update(t=[1, 4]), "mixes expand ratio 1"),
        (lambda s: s["mb5"].update(c=[100]), "multiples of the head dimension"),
        (lambda s: s.update(extra={}), "unknown entries"),
        (lambda s: s["mb1"].update(c=[]), "non-empty list"),
        (lambda s: s["mb1"].update(foo=1), "unknown keys"),
    ],
)
def test_bad_search_space_is_rejected_with_a_message(mutate, message):
    space = copy.deepcopy(REFERENCE_SEARCH_SPACE)
    mutate(space)
    with pytest.raises(ValueError, match=message):
        NASViTConfig(search_space=space)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="switchable_scaling"):
        NASViTConfig(switchable_scaling="sometimes")
    with pytest.raises(ValueError, match="drop_path_rate"):
        NASViTConfig(drop_path_rate=1.5)


def test_subnet_config_collapses_the_space_to_one_choice():
    config = NASViTConfig()
    arch = config.smallest_arch()
    subnet_config = config.subnet_config(arch)
    assert not subnet_config.is_supernet
    assert subnet_config.arch == arch
    assert subnet_config.largest_arch() == subnet_config.smallest_arch() == arch


def test_presets_lookup_errors_name_the_choices():
    with pytest.raises(ValueError, match="available"):
        get_search_space("huge")
    with pytest.raises(ValueError, match="did you mean 'tiny'"):
        get_search_space("tiyn")
    with pytest.raises(ValueError, match="a0"):
        nasvit_hf.presets.get_named_arch("z9")
    with pytest.raises(ValueError, match="unknown subnet name 3"):
        nasvit_hf.presets.get_named_arch(3)


def test_one_sampler_gives_random_largest_and_smallest_archs_from_either_generator():
    import random

    import torch

    from nasvit_hf.models.search_space_nasvit import sample_arch, validate_arch

    space = NASViTConfig().search_space
    assert sample_arch(space, rule="largest") == NASViTConfig().largest_arch()
    assert sample_arch(space, rule="smallest") == NASViTConfig().smallest_arch()
    for make in (lambda: torch.Generator().manual_seed(4), lambda: random.Random(4)):
        first, second = sample_arch(space, make()), sample_arch(space, make())
        assert first == second == validate_arch(space, first)
    archs = {str(sample_arch(space, random.Random(seed))) for seed in range(10)}
    assert len(archs) == 10
    with pytest.raises(ValueError, match="rule must be"):
        sample_arch(space, rule="median")


def test_every_consumer_reads_the_arch_schema():
    """The fields, their stages and space keys come from ARCH_FIELDS: the encoder's genes, the collapsed space and
    the sampled arch all follow it."""
    from nasvit_hf.models.search_space_nasvit import ARCH_FIELDS, arch_fields, arch_per_stage, field_choices
    from nasvit_hf.search.encoding import ArchEncoder

    config = NASViTConfig(search_space=get_search_space("tiny"))
    space = config.search_space
    fields = arch_fields(space)
    assert [f.name for f in fields] == ["resolution", "width", "depth", "kernel_size", "expand_ratio"]
    assert set(f.name for f in ARCH_FIELDS) >= set(config.arch)
    encoder = ArchEncoder(space)
    assert encoder.num_genes == sum(len(field_choices(space, f)) for f in fields)
    arch = config.smallest_arch()
    assert encoder.decode(encoder.encode(arch)) == arch
    collapsed = config.subnet_config(arch).search_space
    for f in fields:
        assert all(len(choices) == 1 for choices in field_choices(collapsed, f))
    per_stage = arch_per_stage(arch)
    assert per_stage["mb3"] == {
        "width": arch["width"][3],
        "depth": arch["depth"][2],
        "kernel_size": 3,
        "expand_ratio": arch["expand_ratio"][2],
    }


def test_configuration_file_is_a_config_and_the_search_space_has_its_own_module():
    """configuration_nasvit.py defines the config class and one helper reading it; the search-space library lives in
    search_space_nasvit.py, the field checks in config_checks_nasvit.py."""
    import ast
    from pathlib import Path

    import nasvit_hf.models.configuration_nasvit as configuration

    tree = ast.parse(Path(configuration.__file__).read_text())
    defined = [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    assert defined == ["NASViTConfig", "segmentation_out_features", "__getattr__"]


def test_names_moved_out_of_the_configuration_file_still_import_from_it_with_a_warning():
    from nasvit_hf.models import config_checks_nasvit, configuration_nasvit, search_space_nasvit

    with pytest.warns(FutureWarning, match="import it from nasvit_hf.models.search_space_nasvit"):
        from nasvit_hf.models.configuration_nasvit import sample_arch
    assert sample_arch is search_space_nasvit.sample_arch
    with pytest.warns(FutureWarning, match="import it from nasvit_hf.models.config_checks_nasvit"):
        assert configuration_nasvit.SCALAR_FLOAT_FIELDS is config_checks_nasvit.SCALAR_FLOAT_FIELDS
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        configuration_nasvit.no_such_name  # noqa: B018
