"""Bad input for Hub pushes and deployment files: each is refused with the error type and a phrase saying what is
wrong, and nothing is uploaded or changed on the (fake) Hub. See docs/bad-input.md, "Hub and deployment files".

Pushes go to `tests.fake_hub.FakeHfApi`, which keeps repo visibility like the Hub does; deployment files are tiny
hand-made ONNX / `.pt2` files (no NASViT export needed).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from nasvit_hf.deploy import OnnxRunner, ProgramRunner, export_onnx, load_subnet_for_export
from nasvit_hf.hub import model_card_section, push_folder_to_hub
from nasvit_hf.hub.push import find_local_paths, strip_local_paths

from .fake_hub import FakeHfApi
from .search_fixtures import load_recipe

REPO = "my-org/nasvit-a0"


def _export_folder(root: Path, readme: str = "# NASViT-A0\n", export_json: dict | None = None) -> Path:
    folder = root / "nasvit-a0"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "nasvit"}))
    (folder / "README.md").write_text(readme)
    (folder / "nasvit_subnet.json").write_text(json.dumps(export_json or {"supernet": "supernet"}))
    return folder


# (case, folder maker, push kwargs, api maker, error type, phrase)
BAD_PUSHES = [
    ("folder without config.json", lambda root: root, {}, FakeHfApi, ValueError, "not a saved model folder"),
    ("repo id without owner", _export_folder, {"repo_id": "nasvit-a0"}, FakeHfApi, ValueError, "'<user or org>/<name>'"),
    ("repo id with two slashes", _export_folder, {"repo_id": "a/b/c"}, FakeHfApi, ValueError, "'<user or org>/<name>'"),
    ("repo id with empty name", _export_folder, {"repo_id": "my-org/"}, FakeHfApi, ValueError, "'<user or org>/<name>'"),
    ("private as a string", _export_folder, {"private": "yes"}, FakeHfApi, ValueError, "private must be True, False or None"),
    (
        "private requested, Hub makes it public",
        _export_folder,
        {"private": True},
        lambda: FakeHfApi(honours_private=False),
        PermissionError,
        "is public although a private repo was requested",
    ),
    (
        "private requested, existing repo is public",
        _export_folder,
        {"private": True},
        lambda: FakeHfApi(repos={REPO: False}),
        PermissionError,
        "an existing repo keeps its visibility",
    ),
    (
        "card with the local supernet path",
        lambda root: _export_folder(root, readme="source supernet: `/home/me/runs/supernet`\n"),
        {},
        FakeHfApi,
        ValueError,
        "README.md: '/home/me/runs/supernet'",
    ),
    (
        "nasvit_subnet.json with a local data folder",
        lambda root: _export_folder(root, export_json={"evaluation": "top-1 on imagefolder:/data/imagenet"}),
        {},
        FakeHfApi,
        ValueError,
        "local paths that would be published",
    ),
    (
        "card with a home-relative path",
        lambda root: _export_folder(root, readme="trained in ~/runs/supernet/\n"),
        {},
        FakeHfApi,
        ValueError,
        "'~/runs/supernet/'",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    "case, make_folder, kwargs, make_api, error_type, phrase", BAD_PUSHES, ids=[row[0] for row in BAD_PUSHES]
)
def test_bad_push_is_refused_and_nothing_is_uploaded(
    tmp_path, case, make_folder, kwargs, make_api, error_type, phrase
):
    folder = make_folder(tmp_path)
    api = make_api()
    before = dict(api.repos)
    with pytest.raises(error_type) as error:
        push_folder_to_hub(folder, **{"repo_id": REPO, **kwargs}, api=api)
    assert phrase in str(error.value)
    assert "upload_folder" not in api.methods and not api.uploaded
    assert {repo: private for repo, private in api.repos.items() if repo in before} == before  # visibility untouched


def test_requested_private_repo_is_created_private_and_pushed(tmp_path):
    api = FakeHfApi()
    push_folder_to_hub(_export_folder(tmp_path), REPO, private=True, api=api)
    assert api.repos[REPO] is True and api.uploaded[REPO] == ["README.md", "config.json", "nasvit_subnet.json"]


def test_private_existing_repo_is_pushed_to(tmp_path):
    api = FakeHfApi(repos={REPO: True})
    push_folder_to_hub(_export_folder(tmp_path), REPO, private=True, api=api)
    assert api.methods == ["create_repo", "repo_info", "upload_folder"]


def test_exported_texts_keep_names_not_paths():
    assert strip_local_paths("top-1 on imagefolder:/data/imagenet (split 'search')") == (
        "top-1 on imagefolder:imagenet (split 'search')"
    )
    assert strip_local_paths("see https://github.com/facebookresearch/NASViT, recipes/deploy.py, 1/2") == (
        "see https://github.com/facebookresearch/NASViT, recipes/deploy.py, 1/2"
    )


def test_find_local_paths_ignores_urls_and_relative_paths(tmp_path):
    folder = _export_folder(
        tmp_path,
        readme="https://huggingface.co/my-org/nasvit-a0 recipes/extract.py `<user or org>/<name>` top-1/top-5\n",
    )
    assert find_local_paths(folder) == []


def test_command_line_token_warns(caplog):
    export = load_recipe("extract")
    with caplog.at_level(logging.WARNING):
        options = export.parse_args(["--supernet", "s", "--names", "a0", "--output_dir", "o", "--hub_token", "hf_x"])
    assert options.hub_token == "hf_x"
    assert "HF_TOKEN" in caplog.text and "huggingface-cli login" in caplog.text


def test_push_without_an_owner_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_recipe("extract").parse_args(["--supernet", "s", "--names", "a0", "--output_dir", "o", "--push_to_hub"])
    assert exit_info.value.code == 2 and "--push_to_hub needs --hub_org" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- deployment files


def _foreign_program(path: Path) -> Path:
    """A valid `.pt2` that export_program did not write (no nasvit.json)."""
    torch.export.save(torch.export.export(torch.nn.Linear(2, 2), (torch.randn(1, 2),)), path)
    return path


def _onnx_file(path: Path, shape: list[int], metadata: dict[str, str] | None = None) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["pixel_values"], ["logits"])],
        "identity",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)
    return path


def _supernet():
    import nasvit_hf
    from nasvit_hf.presets import get_search_space

    return nasvit_hf.NASViTForImageClassification(
        nasvit_hf.NASViTConfig(search_space=get_search_space("tiny"), num_labels=3)
    )


def _config_only(root: Path) -> Path:
    supernet = _supernet()
    supernet.extract_subnet(supernet.config.smallest_arch()).config.save_pretrained(root / "subnet")
    return root / "subnet"


def _segmentation_subnet():
    import nasvit_hf
    from nasvit_hf.presets import get_search_space

    supernet = nasvit_hf.NASViTForSemanticSegmentation(
        nasvit_hf.NASViTConfig(search_space=get_search_space("tiny"), num_labels=3)
    )
    return supernet.extract_subnet(supernet.config.smallest_arch()).eval()


def _folder_with_config(root: Path, config_text: str) -> Path:
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text(config_text)
    return root / "model"


# (case, call, error type, phrase)
BAD_DEPLOYMENT_FILES = [
    (".pt2 without trust", lambda root: ProgramRunner(_foreign_program(root / "m.pt2")), ValueError, "unpickles it"),
    (".pt2 with trust='yes'", lambda root: ProgramRunner(root / "m.pt2", trust_program="yes"), ValueError, "trust_program=True only"),
    ("missing .pt2", lambda root: ProgramRunner(root / "none.pt2", trust_program=True), FileNotFoundError, "no exported program"),
    (
        ".pt2 not written by export_program",
        lambda root: ProgramRunner(_foreign_program(root / "m.pt2"), trust_program=True),
        ValueError,
        "not written by export_program()",
    ),
    ("missing ONNX file", lambda root: OnnxRunner(root / "none.onnx"), FileNotFoundError, "no ONNX file"),
    (
        "corrupt ONNX file",
        lambda root: OnnxRunner(root / "m.onnx") if (root / "m.onnx").write_bytes(b"not onnx") else None,
        ValueError,
        "is not a valid ONNX file",
    ),
    ("ONNX without NASViT metadata", lambda root: OnnxRunner(_onnx_file(root / "m.onnx", [1, 3, 8, 8])), ValueError, "not written by export_onnx()"),
    (
        "ONNX with a 2-D input",
        lambda root: OnnxRunner(_onnx_file(root / "m.onnx", [1, 8], {"nasvit.image_size": "8"})),
        ValueError,
        "not one (batch, 3, r, r) input",
    ),
    ("supernet to export", lambda root: load_subnet_for_export(_supernet()), ValueError, "Extract a subnet first"),
    ("not a model", lambda root: load_subnet_for_export(42), TypeError, "expected a NASViT model or a path"),
    ("folder without a config", lambda root: load_subnet_for_export(root), ValueError, "it has no config.json"),
    (
        "folder of another model type",
        lambda root: load_subnet_for_export(_folder_with_config(root, '{"model_type": "bert", "hidden_size": 8}')),
        ValueError,
        "has model_type 'bert', not 'nasvit'",
    ),
    (
        "config.json that is a list",
        lambda root: load_subnet_for_export(_folder_with_config(root, "[1, 2]")),
        ValueError,
        "holds a list, not a JSON object",
    ),
    (
        "config.json that is not JSON",
        lambda root: load_subnet_for_export(_folder_with_config(root, "model_type: nasvit")),
        ValueError,
        "is not a NASViT model folder",
    ),
    (
        "trusted .pt2 of random bytes",
        lambda root: ProgramRunner(root / "m.pt2", trust_program=True) if (root / "m.pt2").write_bytes(bytes(range(256))) else None,
        ValueError,
        "is not an exported program",
    ),
    (
        "segmentation export at 100000 px",
        lambda root: export_onnx(_segmentation_subnet(), root / "seg.onnx", image_size=100000),
        ValueError,
        "more than the 67,108,864 allowed",
    ),
    (
        "segmentation export at 8 x 4000 px",
        lambda root: export_onnx(_segmentation_subnet(), root / "seg.onnx", image_size=(8, 4000)),
        ValueError,
        "images more elongated than 100:1 are refused",
    ),
    (
        "folder without weights",
        lambda root: load_subnet_for_export(_config_only(root)),
        ValueError,
        "cannot load the NASViT weights",
    ),
    ("card for resolution 0", lambda root: model_card_section("my-org/nasvit-a0", 0), ValueError, "image_size must be a positive int"),
    ("card for resolution True", lambda root: model_card_section("my-org/nasvit-a0", True), ValueError, "image_size must be a positive int"),
]  # fmt: skip


@pytest.mark.parametrize(
    "case, call, error_type, phrase", BAD_DEPLOYMENT_FILES, ids=[r[0] for r in BAD_DEPLOYMENT_FILES]
)
def test_bad_deployment_input_is_refused(tmp_path, case, call, error_type, phrase):
    before = sorted(path.name for path in tmp_path.iterdir())
    with pytest.raises(error_type) as error:
        call(tmp_path)
    assert phrase in str(error.value)
    after = sorted(path.name for path in tmp_path.iterdir())
    assert set(before) <= set(after)  # nothing that was there is gone


def test_program_is_not_loaded_before_trust_is_given(tmp_path, monkeypatch):
    path = _foreign_program(tmp_path / "m.pt2")
    monkeypatch.setattr(torch.export, "load", lambda *args, **kwargs: pytest.fail("torch.export.load was called"))
    with pytest.raises(ValueError, match="unpickles"):
        ProgramRunner(path)
