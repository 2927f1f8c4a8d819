"""Reference parity: the converted official_tiny supernet reproduces the reference implementation's logits."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

import nasvit_hf
from nasvit_hf.conversion import (
    NotANASViTCheckpointError,
    convert_reference_state_dict,
    load_reference_checkpoint,
    unwrap_checkpoint,
)

from .conftest import REPO_ROOT

ATOL = 1e-4
CASES = range(7)


@pytest.fixture(scope="module")
def converted(official_state_dict_path, official_cases):
    return load_reference_checkpoint(official_state_dict_path, search_space=official_cases["space"])


@pytest.mark.parametrize("case", CASES)
def test_supernet_reproduces_reference_train_logits(converted, official_cases, official_tensors, case):
    model = copy.deepcopy(converted)  # train mode updates running statistics: keep the shared copy clean
    model.set_active_subnet(official_cases["cases"][case]["arch"])
    model.train()
    with torch.no_grad():
        logits = model(official_tensors[f"case{case}.input"]).logits
    torch.testing.assert_close(logits, official_tensors[f"case{case}.train_logits"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_supernet_reproduces_reference_eval_logits(converted, official_cases, official_tensors, case):
    converted.set_active_subnet(official_cases["cases"][case]["arch"])
    converted.eval()
    with torch.no_grad():
        logits = converted(official_tensors[f"case{case}.input"]).logits
    torch.testing.assert_close(logits, official_tensors[f"case{case}.eval_logits"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_extracted_subnet_reproduces_reference_eval_logits(converted, official_cases, official_tensors, case):
    subnet = converted.extract_subnet(official_cases["cases"][case]["arch"]).eval()
    assert not subnet.config.is_supernet
    with torch.no_grad():
        logits = subnet(official_tensors[f"case{case}.input"]).logits
    torch.testing.assert_close(logits, official_tensors[f"case{case}.eval_logits"], atol=ATOL, rtol=0)


def test_converted_model_takes_class_count_from_classifier(converted):
    assert converted.config.num_labels == 10


def test_converter_maps_every_key_of_the_full_reference_manifest(reference_manifest):
    model = nasvit_hf.NASViTForImageClassification(nasvit_hf.NASViTConfig())
    index = model.nasvit.stages[3].blocks[1].attention.relative_position_index
    state_dict = {}
    for key, shape in reference_manifest.items():
        state_dict[key] = index.clone() if key.endswith("relative_position_index") else torch.zeros(shape)
    converted = convert_reference_state_dict(state_dict, model)
    assert set(converted) == set(model.state_dict())
    model.load_state_dict(converted)


def test_converter_lists_unknown_and_missing_keys(official_state_dict_path, official_cases):
    from safetensors.torch import load_file

    state_dict = load_file(official_state_dict_path)
    state_dict["blocks.3.something_new.weight"] = torch.zeros(1)
    del state_dict["blocks.2.mobile_inverted_conv.point_linear.bn.bn.weight"]
    config = nasvit_hf.NASViTConfig(search_space=official_cases["space"], num_labels=10)
    with pytest.raises(ValueError) as error:
        convert_reference_state_dict(state_dict, config)
    message = str(error.value)
    assert "blocks.3.something_new.weight" in message
    assert "nasvit.stages.1.blocks.0.projection.norm.weight" in message


def test_converter_reports_shape_mismatch_for_wrong_search_space(official_state_dict_path):
    with pytest.raises(ValueError, match="shape mismatch"):
        load_reference_checkpoint(official_state_dict_path)  # the reference space, not the fixture's


@pytest.mark.parametrize("wrapper", ["model_ema", "model", "state_dict", "bare"])
def test_converter_accepts_checkpoint_layouts_and_module_prefix(official_state_dict_path, wrapper):
    from safetensors.torch import load_file

    state_dict = {f"module.{k}": v for k, v in load_file(official_state_dict_path).items()}
    checkpoint = state_dict if wrapper == "bare" else {wrapper: state_dict, "epoch": 3}
    unwrapped = unwrap_checkpoint(checkpoint)
    assert "first_conv.conv.conv.weight" in unwrapped


def test_converter_prefers_model_ema(official_state_dict_path):
    from safetensors.torch import load_file

    state_dict = load_file(official_state_dict_path)
    other = {k: v + 1 if v.is_floating_point() else v for k, v in state_dict.items()}
    unwrapped = unwrap_checkpoint({"model": other, "model_ema": state_dict})
    assert torch.equal(unwrapped["first_conv.conv.conv.weight"], state_dict["first_conv.conv.conv.weight"])


def test_not_a_nasvit_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(NotANASViTCheckpointError, match="not a reference NASViT checkpoint"):
        unwrap_checkpoint({"model": {"conv1.weight": torch.zeros(3)}})
    path = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(NotANASViTCheckpointError):
        load_reference_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_reference_checkpoint(tmp_path / "missing.pth")


def test_convert_cli_writes_a_loadable_supernet_folder(
    tmp_path, official_state_dict_path, official_cases, official_tensors
):
    import json

    from safetensors.torch import load_file
    from transformers import AutoModelForImageClassification

    checkpoint = tmp_path / "ckpt.pth"
    torch.save({"model_ema": load_file(official_state_dict_path), "epoch": 359}, checkpoint)
    space = tmp_path / "space.json"
    space.write_text(json.dumps(official_cases["space"]))
    output = tmp_path / "converted"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "recipes" / "convert_official_checkpoint.py"),
            "--checkpoint",
            str(checkpoint),
            "--output_dir",
            str(output),
            "--search_space",
            str(space),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    model = AutoModelForImageClassification.from_pretrained(output).eval()
    assert model.config.is_supernet
    case = official_cases["cases"][1]
    model.set_active_subnet(case["arch"])
    with torch.no_grad():
        logits = model(official_tensors["case1.input"]).logits
    torch.testing.assert_close(logits, official_tensors["case1.eval_logits"], atol=ATOL, rtol=0)


def test_convert_cli_fails_clearly_on_a_foreign_checkpoint(tmp_path):
    checkpoint = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, checkpoint)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "recipes" / "convert_official_checkpoint.py"),
            "--checkpoint",
            str(checkpoint),
            "--output_dir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "not a reference NASViT checkpoint" in result.stderr
    assert not (tmp_path / "out").exists()
