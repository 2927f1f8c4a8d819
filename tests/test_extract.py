"""Export of named subnets: Hub folders, model cards, loading through the Auto classes and pipeline (also with
trust_remote_code and without nasvit_hf), pushing to the Hub (without network), bad input."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from huggingface_hub import ModelCard

from nasvit_hf.hub import push_folder_to_hub, resolve_named_archs
from nasvit_hf.search import DataConfig, load_evaluation_data, top1_accuracy, torch_threads
from tests.conftest import run_without_nasvit
from tests.fake_hub import FakeHfApi
from tests.search_fixtures import load_recipe


@pytest.fixture(scope="session")
def export_dir(search_dir, toy_supernet_dir, search_config_file, tmp_path_factory):
    """a0 and b0 of the toy supernet, exported from the (complete) search of test_search."""
    output = tmp_path_factory.mktemp("export") / "out"
    load_recipe("extract").main(
        [
            "--supernet", toy_supernet_dir,
            "--names", "a0", "b0",
            "--output_dir", str(output),
            "--config", str(search_config_file),
            "--search_dir", str(search_dir),
            "--license", "apache-2.0",
        ]
    )  # fmt: skip
    return output


def test_exported_folder_is_a_complete_hub_checkpoint(export_dir, search_dir):
    folder = export_dir / "nasvit-a0"
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "README.md",
        "modeling_nasvit.py",
        "configuration_nasvit.py",
        "search_space_nasvit.py",
        "config_checks_nasvit.py",
        "image_processing_nasvit.py",
        "nasvit_subnet.json",
    ):
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config.json").read_text())
    searched = json.loads((search_dir / "named.json").read_text())["a0"]
    assert config["arch"] == searched["arch"]
    assert config["id2label"]["3"] == "3" and "auto_map" in config
    assert len(config["search_space"]["resolutions"]) == 1  # a standalone subnet, not a supernet
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and ModelCard(card).data.license == "apache-2.0"  # the Hub metadata block
    for fact in (
        f"{searched['macs'] / 1e6:.2f} M",
        "searched on supernet with search_test.yaml",
        "recalibrated",
        "training images (digits, split used for calibration:",
        "through the evaluation preprocessing",  # which calibration transform (the toy run records none)
        'pipeline("image-classification"',
        "trust_remote_code=True",
        "@inproceedings{gong2022nasvit",
        "## Deployment",
        "export_onnx(",
        f"(batch, 3, {searched['arch']['resolution']}, {searched['arch']['resolution']})",
    ):
        assert fact in card, fact
    metadata = json.loads((folder / "nasvit_subnet.json").read_text())
    assert metadata["accuracy"] == pytest.approx(searched["accuracy"])  # same calibration data, same result
    assert metadata["latency"]["median_ms"] > 0


def test_exported_folder_loads_with_auto_classes_and_pipeline(export_dir):
    from PIL import Image
    from transformers import AutoModelForImageClassification, pipeline

    folder = export_dir / "nasvit-b0"
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    metadata = json.loads((folder / "nasvit_subnet.json").read_text())
    data = load_evaluation_data(DataConfig(batch_size=32, calibration_batches=2, max_evaluation_samples=60))
    with torch_threads(1):  # as in the export (search config num_threads: 1): the same reductions, the same argmax
        accuracy = top1_accuracy(model, data.evaluation, model.config.arch["resolution"])
    assert accuracy == pytest.approx(metadata["accuracy"])
    predictions = pipeline("image-classification", model=str(folder))(Image.new("L", (8, 8), color=128))
    assert len(predictions) == 5 and predictions[0]["label"] in [str(i) for i in range(10)]


def test_exported_folder_loads_with_trust_remote_code_without_nasvit_hf(export_dir, tmp_path, monkeypatch):
    """In a fresh interpreter where `import nasvit_hf` fails (conftest.run_without_nasvit: no PYTHONPATH, a
    meta-path blocker, since the package is installed editable)."""
    from transformers import AutoModelForImageClassification

    folder = export_dir / "nasvit-a0"
    pixel_values = torch.randn(2, 3, 32, 32)
    torch.save(pixel_values, tmp_path / "pixels.pt")
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code = textwrap.dedent(
        f"""
        import json, sys
        import torch
        from PIL import Image
        from transformers import AutoModelForImageClassification, pipeline

        folder = {str(folder)!r}
        model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
        with torch.no_grad():
            logits = model(pixel_values=torch.load({str(tmp_path / "pixels.pt")!r})).logits
        classify = pipeline("image-classification", model=folder, trust_remote_code=True)
        predictions = classify(Image.new("L", (8, 8)))
        loaded = sorted(name for name in sys.modules if name.startswith("nasvit_hf"))
        print(json.dumps({{"logits": logits.tolist(), "module": type(model).__module__, "nasvit_hf": loaded,
                          "label": predictions[0]["label"]}}))
        """
    )
    result = json.loads(run_without_nasvit(code, cwd=tmp_path).strip().splitlines()[-1])
    assert result["nasvit_hf"] == [] and result["module"].startswith("transformers_modules.")
    assert result["label"] in [str(i) for i in range(10)]
    expected = AutoModelForImageClassification.from_pretrained(folder).eval()(pixel_values=pixel_values).logits
    torch.testing.assert_close(torch.tensor(result["logits"]), expected.detach(), rtol=1e-4, atol=1e-4)


def test_push_creates_the_repo_checks_its_visibility_then_uploads_the_folder(export_dir):
    api = FakeHfApi()
    url = push_folder_to_hub(export_dir / "nasvit-a0", "my-org/nasvit-a0", private=True, api=api)
    assert api.methods == ["create_repo", "repo_info", "upload_folder"]
    assert api.calls[0][1] == {"repo_id": "my-org/nasvit-a0", "repo_type": "model", "private": True, "exist_ok": True}
    assert api.calls[2][1]["folder_path"] == str(export_dir / "nasvit-a0")
    assert "README.md" in api.uploaded["my-org/nasvit-a0"] and api.repos["my-org/nasvit-a0"] is True
    assert url.endswith("/commit/1")


def test_push_without_private_keeps_the_account_default(export_dir):
    for default_private in (True, False):
        api = FakeHfApi(default_private=default_private)
        push_folder_to_hub(export_dir / "nasvit-a0", "my-org/nasvit-a0", api=api)
        assert "private" not in api.calls[0][1]  # never private=False: the organisation's default decides
        assert api.repos["my-org/nasvit-a0"] is default_private


def test_export_cli_pushes_through_hf_api(export_dir, toy_supernet_dir, search_dir, search_config_file, monkeypatch):
    import huggingface_hub

    api = FakeHfApi()
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None: api)
    load_recipe("extract").main(
        [
            "--supernet", toy_supernet_dir, "--names", "a0", "--output_dir", str(export_dir / "pushed"),
            "--config", str(search_config_file), "--search_dir", str(search_dir),
            "--push_to_hub", "--hub_org", "my-org",
        ]
    )  # fmt: skip
    assert [(name, kwargs["repo_id"]) for name, kwargs in api.calls] == [
        ("create_repo", "my-org/nasvit-a0"),
        ("repo_info", "my-org/nasvit-a0"),
        ("upload_folder", "my-org/nasvit-a0"),
        ("create_repo", "my-org/nasvit-family"),  # then the family index linking the saved subnets
        ("repo_info", "my-org/nasvit-family"),
        ("upload_folder", "my-org/nasvit-family"),
    ]
    assert "private" not in api.calls[0][1]
    card = (export_dir / "pushed" / "nasvit-a0" / "README.md").read_text()
    assert "my-org/nasvit-a0" in card
    for name in ("README.md", "nasvit_subnet.json", "config.json"):
        text = (export_dir / "pushed" / "nasvit-a0" / name).read_text()
        assert str(toy_supernet_dir) not in text and str(export_dir) not in text, name


def test_unknown_subnet_name_is_a_clear_error(toy_supernet_dir, tmp_path):
    with pytest.raises(ValueError, match=r"unknown subnet name\(s\) \['z9'\]; known names: .*'a0'"):
        load_recipe("extract").main(
            ["--supernet", toy_supernet_dir, "--names", "a0", "z9", "--output_dir", str(tmp_path)]
        )


def test_paper_arch_that_does_not_fit_the_space_is_a_clear_error(toy_supernet_dir):
    from nasvit_hf.search import load_supernet

    config = load_supernet(toy_supernet_dir).config
    with pytest.raises(ValueError, match="table13-a1 is an arch of the 'reference' search space"):
        resolve_named_archs(["table13-a1"], config)


def test_name_without_a_budget_in_the_config_is_a_clear_error(toy_supernet_dir, search_config_file, tmp_path):
    with pytest.raises(ValueError, match=r"\['a5'\] have no published arch and no budget"):
        load_recipe("extract").main(
            ["--supernet", toy_supernet_dir, "--names", "a5", "--output_dir", str(tmp_path),
             "--config", str(search_config_file)]
        )  # fmt: skip


def test_model_card_of_the_reference_license_says_non_commercial():
    from nasvit_hf.hub import SubnetCard, render_model_card

    arch = {"resolution": 192, "width": [16] * 9, "depth": [1] * 7, "kernel_size": [3] * 7, "expand_ratio": [1] * 7}
    latency = {
        "median_ms": 1.0,
        "q25_ms": 0.9,
        "q75_ms": 1.1,
        "repeats": 3,
        "warmup": 1,
        "batch_size": 1,
        "device": "cpu",
        "num_threads": 1,
    }
    card = render_model_card(
        SubnetCard(
            "a1",
            None,
            arch,
            309_000_000,
            5_000_000,
            latency,
            79.0,
            "x",
            "64 batches",
            "p",
            "s",
            "cc-by-nc-4.0",
            1000,
            paper_top1=79.7,
            paper_macs_millions=309,
        )
    )
    assert "license: cc-by-nc-4.0" in card and "non-commercial" in card and "79.7 % ImageNet top-1" in card


def test_license_defaults_to_the_supernet_readme(tmp_path):
    export = load_recipe("extract")
    assert export.supernet_license(tmp_path) == "unknown"
    (tmp_path / "README.md").write_text("---\nlicense: cc-by-nc-4.0\ntags: [nasvit]\n---\n# supernet\n")
    assert export.supernet_license(tmp_path) == "cc-by-nc-4.0"


def test_family_card_metadata_matches_the_subnet_cards():
    from nasvit_hf.hub import SubnetCard, build_model_card
    from tests.conftest import REPO_ROOT

    family = ModelCard.load(REPO_ROOT / "MODEL_CARD.md")
    arch = {"resolution": 192, "width": [16] * 9, "depth": [1] * 7, "kernel_size": [3] * 7, "expand_ratio": [1] * 7}
    latency = dict(
        median_ms=1.0, q25_ms=0.9, q75_ms=1.1, repeats=3, warmup=1, batch_size=1, device="cpu", num_threads=1
    )
    subnet = build_model_card(
        SubnetCard("a1", "org/nasvit-a1", arch, 1, 1, latency, 1.0, "x", "y", "p", "s", "cc-by-nc-4.0", 1000)
    )
    assert family.data.license == subnet.data.license == "cc-by-nc-4.0"
    assert (family.data.library_name, family.data.pipeline_tag) == (subnet.data.library_name, subnet.data.pipeline_tag)
    assert set(family.data.tags) <= set(subnet.data.tags)
    for card in (family.text, subnet.text):  # both point users to ONNX and warn that .pt2 files unpickle
        assert "unpickles" in card and "trust_program=True" in card and "torch.export.load(" not in card


def test_b_model_card_names_the_runtime_and_the_b_vs_a_spread():
    from nasvit_hf.hub import SubnetCard, render_model_card

    arch = {"resolution": 192, "width": [16] * 9, "depth": [1] * 7, "kernel_size": [3] * 7, "expand_ratio": [1] * 7}
    runtime = {"backend": "onnxruntime", "quantize": None, "clock": "wall", "versions": {"onnxruntime": "1.32.0"}}
    latency = dict(
        median_ms=4.0, q25_ms=3.9, q75_ms=4.1, repeats=3, warmup=1, batch_size=1, device="cpu", num_threads=1,
        backend="onnxruntime", runtime=runtime,
    )  # fmt: skip
    b_vs_a = {
        "a_model": "a0", "same_arch_as_a": False, "a_latency_ms": 5.0, "b_latency_ms": 4.0,
        "a_latency_quartiles_ms": [4.8, 5.3], "b_latency_quartiles_ms": [3.9, 4.2], "speedup_pct": 20.0,
        "noise_pct": 4.0, "a_accuracy": 95.0, "b_accuracy": 95.5, "a_macs": 1e6, "b_macs": 2e6,
        "measurement": {"rounds": 5, "repeats_per_round": 15, "batch_size": 1, "device": "cpu", "num_threads": 1,
                        "machine": "m", "backend": "onnxruntime", "runtime": runtime},
    }  # fmt: skip
    card = render_model_card(
        SubnetCard("b0", None, arch, 2_000_000, 1, latency, 95.5, "x", "y", "p", "s", "apache-2.0", 10, b_vs_a=b_vs_a)
    )
    assert "- **Latency**: onnxruntime 1.32.0 (the graph `export_onnx` writes, fp32), batch 1" in card
    assert "measured on onnxruntime 1.32.0" in card and "(packages: onnxruntime 1.32.0)" in card
    assert (
        "20.0 % faster, faster in every round and by more than the noise (how far one model's round medians spread: 4.0 %)"
        in card
    )
    assert "| NASViT-A0 | 1.00 | 5.00 | 4.80-5.30 | 95.00 |" in card
    assert "| NASViT-B0 | 2.00 | 4.00 | 3.90-4.20 | 95.50 |" in card


def test_model_card_architecture_table_has_a_column_per_arch_field():
    """The card's table reads the arch schema: every per-stage field of `ARCH_FIELDS` (the paper's MLP ratio and
    windows too, for archs that carry them) is a column, with each stage's value."""
    from nasvit_hf import NASViTConfig
    from nasvit_hf.hub.model_card import _arch_table
    from nasvit_hf.models.search_space_nasvit import ARCH_FIELDS, arch_per_stage
    from nasvit_hf.presets import get_search_space

    arch = NASViTConfig(search_space=get_search_space("tiny-paper")).smallest_arch()
    lines = _arch_table(arch).splitlines()
    assert lines[0] == f"Input resolution: {arch['resolution']} px."
    header = [cell.strip() for cell in lines[2].strip("|").split("|")]
    per_stage_fields = [arch_field for arch_field in ARCH_FIELDS if not arch_field.per_network]
    assert header == ["stage", "kind"] + [arch_field.description for arch_field in per_stage_fields]
    values = arch_per_stage(arch)
    for line in lines[4:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        stage = cells[0]
        for arch_field, cell in zip(per_stage_fields, cells[2:]):
            assert cell == (str(values[stage][arch_field.name]) if stage in arch_field.stages else "-")
    reference = NASViTConfig(search_space=get_search_space("tiny")).smallest_arch()
    assert "MLP expansion ratio" not in _arch_table(reference)


def test_the_old_hub_names_still_work_with_a_future_warning(monkeypatch, tmp_path):
    """`export_subnet` / `ExportedSubnet` / `check_export_target` / `EXPORT_MARKER` / `.table12` are `save_subnet` /
    `SavedSubnet` / `check_subnet_target` / `SUBNET_MARKER` / `.b_vs_a` now ("export" is writing a graph)."""
    import nasvit_hf.hub as hub
    from nasvit_hf.hub import subnets

    with pytest.warns(FutureWarning, match="ExportedSubnet is renamed SavedSubnet"):
        assert hub.ExportedSubnet is hub.SavedSubnet
    with pytest.warns(FutureWarning, match="EXPORT_MARKER is renamed SUBNET_MARKER"):
        assert subnets.EXPORT_MARKER == subnets.SUBNET_MARKER == "nasvit_subnet.json"
    (tmp_path / "mine").mkdir()
    with pytest.warns(FutureWarning, match="check_export_target is renamed check_subnet_target"):
        with pytest.raises(subnets.OwnershipError, match="not a subnet saved by this tool"):
            subnets.check_export_target(tmp_path / "mine", overwrite=True)
    saved = hub.SavedSubnet("b0", "f", {}, 1, 1, 1.0, 1.0, "p", b_vs_a={"a_model": "a0"})
    with pytest.warns(FutureWarning, match="SavedSubnet.table12 is renamed b_vs_a"):
        assert saved.table12 == {"a_model": "a0"}
    calls = []
    monkeypatch.setattr(subnets, "save_subnet", lambda *args, **kwargs: calls.append((args, kwargs)) or "saved")
    with pytest.warns(FutureWarning, match="export_subnet is renamed save_subnet"):
        assert hub.export_subnet("supernet", "named", "folder", "data", supernet_name="s") == "saved"
    assert calls == [(("supernet", "named", "folder", "data"), {"supernet_name": "s"})]


@pytest.mark.parametrize(
    "markers, replaced",
    [(["nasvit_subnet.json"], True), (["nasvit_export.json"], True), ([], False), (["nasvit_conversion.json"], False)],
    ids=["current marker", "marker of earlier versions", "no marker", "another tool's marker"],
)
def test_overwrite_replaces_only_folders_holding_the_subnet_marker_or_its_earlier_name(tmp_path, markers, replaced):
    from nasvit_hf.hub.subnets import check_subnet_target, is_saved_subnet
    from nasvit_hf.utils.io import OwnershipError

    folder = tmp_path / "nasvit-a0"
    folder.mkdir()
    for marker in markers:
        (folder / marker).write_text("{}")
    assert is_saved_subnet(folder) is replaced
    if replaced:
        check_subnet_target(folder, overwrite=True)
    else:
        with pytest.raises(OwnershipError, match="not a subnet saved by this tool .*nasvit_subnet.json"):
            check_subnet_target(folder, overwrite=True)
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        check_subnet_target(folder, overwrite=False)


def test_a_subnet_saved_by_an_earlier_version_is_replaced_with_overwrite(
    toy_supernet_dir, search_dir, search_config_file, tmp_path
):
    """A folder holding only the marker's earlier name (nasvit_export.json) is ours: --overwrite replaces it whole."""
    old = tmp_path / "out" / "nasvit-a0"
    old.mkdir(parents=True)
    (old / "nasvit_export.json").write_text(json.dumps({"name": "a0", "nasvit_hf_export": 1}))
    (old / "stale.txt").write_text("from the earlier version")
    load_recipe("extract").main(
        ["--supernet", toy_supernet_dir, "--names", "a0", "--output_dir", str(tmp_path / "out"),
         "--config", str(search_config_file), "--search_dir", str(search_dir), "--overwrite", "--no_recalibration"]
    )  # fmt: skip
    assert sorted(p.name for p in old.iterdir() if p.suffix == ".json" or p.suffix == ".txt") == [
        "config.json",
        "nasvit_subnet.json",
        "preprocessor_config.json",
    ]
    assert json.loads((old / "nasvit_subnet.json").read_text())["name"] == "a0"


def test_the_family_index_reads_b_vs_a_records_written_before_the_rename():
    from nasvit_hf.hub import render_family_card

    record = {
        "a_model": "a0", "same_arch_as_a": False, "a_latency_ms": 5.0, "b_latency_ms": 4.0,
        "a_latency_quartiles_ms": [4.8, 5.3], "b_latency_quartiles_ms": [3.9, 4.2], "a_accuracy": 95.0,
        "b_accuracy": 95.5,
    }  # fmt: skip
    member = {"name": "b0", "macs": 1e6, "params": 1e5, "latency_ms": 4.0, "accuracy": 95.5, "provenance": "p"}
    old, new = ({**member, key: record} for key in ("table12", "b_vs_a"))
    card = render_family_card([old], supernet="s")
    assert card == render_family_card([new], supernet="s")
    assert "| B0 | A0 | 5.00 (4.80-5.30) | 4.00 (3.90-4.20) | 95.00 | 95.50 | no |" in card


def test_the_summary_of_saved_subnets_reads_its_earlier_name_and_writes_the_new_one(tmp_path):
    from nasvit_hf.hub import family

    old = [{"name": "a0", "macs": 1}, {"name": "b0", "macs": 2, "table12": {"a_model": "a0"}}]
    (tmp_path / "exports.json").write_text(json.dumps(old))  # written by an earlier version
    assert family.read_subnets_summary(tmp_path) == [old[0], {"name": "b0", "macs": 2, "b_vs_a": {"a_model": "a0"}}]
    path = family.write_subnets_summary([{"name": "a0", "macs": 3}, {"name": "a1", "macs": 4}], tmp_path)
    assert path == tmp_path / "subnets.json" and json.loads((tmp_path / "exports.json").read_text()) == old  # kept
    assert json.loads(path.read_text()) == [
        {"name": "a0", "macs": 3},
        {"name": "b0", "macs": 2, "b_vs_a": {"a_model": "a0"}},
        {"name": "a1", "macs": 4},
    ]
    assert [entry["name"] for entry in family.read_subnets_summary(tmp_path)] == ["a0", "b0", "a1"]
    with pytest.warns(FutureWarning, match="EXPORTS_SUMMARY is renamed SUBNETS_SUMMARY"):
        assert family.EXPORTS_SUMMARY == "subnets.json"
    with pytest.warns(FutureWarning, match="write_exports_summary is renamed write_subnets_summary"):
        family.write_exports_summary([{"name": "a2"}], tmp_path)
    assert json.loads(path.read_text())[-1] == {"name": "a2"}
