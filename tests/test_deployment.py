"""ONNX and torch.export deployment of extracted subnets: parity with eager, shapes, errors, CLI, model card."""

from __future__ import annotations

import json
import os
import re
import sys

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import nasvit_hf
from nasvit_hf.deploy import (
    NASViTOnnxGraph,
    OnnxRunner,
    ProgramRunner,
    export_onnx,
    export_program,
    load_quantization_data,
    load_subnet_for_export,
    modules_only,
)
from nasvit_hf.hub import model_card_section
from nasvit_hf.models.search_space_nasvit import sample_arch
from nasvit_hf.presets import get_named_arch, get_search_space

from .conftest import REPO_ROOT, run_without_nasvit

RECIPES = str(REPO_ROOT / "recipes")
ATOL = 1e-4


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Move norm parameters, biases, layer scales, BN statistics and the classifier off their initial values: the
    zero-initialised projection BNs and 1e-4 layer scales would otherwise hide most of the network from a parity
    check. Logits stay O(1), like a trained model's."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim == 1 or "layer_scale" in name:
                offset = 0.25 if name.endswith("weight") or "layer_scale" in name else -0.25
                parameter.copy_(0.5 * torch.rand(parameter.shape, generator=generator) + offset)
        weight = model.classifier.weight
        weight.copy_(4 * torch.randn(weight.shape, generator=generator) / weight.shape[1] ** 0.5)
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.1 * torch.randn(buffer.shape, generator=generator))
            elif name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))
    return model.eval()


def tiny_supernet() -> nasvit_hf.NASViTForImageClassification:
    torch.manual_seed(0)
    config = nasvit_hf.NASViTConfig(search_space=get_search_space("tiny"), num_labels=10)
    return randomize(nasvit_hf.NASViTForImageClassification(config), seed=1)


def eager_logits(model: torch.nn.Module, pixel_values: torch.Tensor) -> np.ndarray:
    """The plain modules' logits (no inference plan): what every export is verified against."""
    with torch.no_grad(), modules_only(model.eval()):
        return model(pixel_values).logits.numpy()


def operator_counts(path) -> dict[str, int]:
    """Operators of an ONNX file by name (`domain:name` outside the standard ai.onnx domain)."""
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        name = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"
        counts[name] = counts.get(name, 0) + 1
    return counts


def random_pixels(batch: int, size: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """A random tiny-space subnet saved with save_pretrained and exported by the CLI (dynamic batch, ONNX + .pt2)."""
    sys.path.insert(0, RECIPES)
    try:
        import deploy as cli
    finally:
        sys.path.remove(RECIPES)
    folder = tmp_path_factory.mktemp("tiny") / "subnet"
    supernet = tiny_supernet()
    # The shallowest depths keep the export quick; other dimensions off their extremes so slicing is exercised.
    arch = supernet.config.smallest_arch()
    arch.update(resolution=48, width=[16, 8, 24, 24, 40, 48, 48, 64, 128], kernel_size=[5, 3, 3, 3, 3, 3, 3])
    arch["expand_ratio"][2] = 6
    subnet = supernet.extract_subnet(arch)
    subnet.save_pretrained(folder)
    reports = cli.main(
        [
            "--model",
            str(folder),
            "--output",
            str(folder / "model.onnx"),
            "--dynamic_batch",
            "--program",
            str(folder / "model.pt2"),
        ]
    )
    return {
        "folder": folder,
        "model": subnet,
        "reports": reports,
        "size": arch["resolution"],
        "onnx_runner": OnnxRunner(folder / "model.onnx"),
        "program_runner": ProgramRunner(folder / "model.pt2", trust_program=True),
    }


def test_cli_writes_verified_onnx_and_program(tiny_export):
    onnx_report, program_report = tiny_export["reports"]
    assert (onnx_report["format"], program_report["format"]) == ("onnx", "torch.export")
    for report in (onnx_report, program_report):
        assert os.path.isfile(report["path"])
        assert report["dynamic_batch"] and report["batch_size"] is None
        assert sorted(report["max_abs_diff"]) == [1, 4]
        assert max(report["max_abs_diff"].values()) <= ATOL
    assert not [name for name in os.listdir(tiny_export["folder"]) if ".tmp" in name]


def test_onnx_passes_checker_and_matches_eager_at_batch_1_and_4(tiny_export):
    path = str(tiny_export["folder"] / "model.onnx")
    onnx.checker.check_model(path, full_check=True)
    runner = tiny_export["onnx_runner"]
    assert runner.dynamic_batch and runner.image_size == tiny_export["size"]
    for batch in (1, 4):
        pixel_values = random_pixels(batch, tiny_export["size"], seed=10 + batch)
        logits = runner(pixel_values.numpy())["logits"]
        np.testing.assert_allclose(logits, eager_logits(tiny_export["model"], pixel_values), atol=ATOL, rtol=0)


def test_exported_program_matches_eager_at_batch_1_and_4(tiny_export):
    module = tiny_export["program_runner"].module  # torch.export.load(path).module()
    for batch in (1, 4):
        pixel_values = random_pixels(batch, tiny_export["size"], seed=20 + batch)
        (logits,) = module(pixel_values)
        np.testing.assert_allclose(
            logits.detach().numpy(), eager_logits(tiny_export["model"], pixel_values), atol=ATOL, rtol=0
        )


def test_exported_files_run_without_nasvit_hf(tiny_export):
    size = tiny_export["size"]
    code = f"""
import numpy as np, onnxruntime, torch
pixel_values = torch.randn(3, 3, {size}, {size}, generator=torch.Generator().manual_seed(0))
session = onnxruntime.InferenceSession({str(tiny_export["folder"] / "model.onnx")!r})
onnx_logits = session.run(["logits"], {{"pixel_values": pixel_values.numpy()}})[0]
(program_logits,) = torch.export.load({str(tiny_export["folder"] / "model.pt2")!r}).module()(pixel_values)
np.save("logits.npy", np.stack([onnx_logits, program_logits.detach().numpy()]))
"""
    run_without_nasvit(code, cwd=tiny_export["folder"])
    onnx_logits, program_logits = np.load(tiny_export["folder"] / "logits.npy")
    expected = eager_logits(tiny_export["model"], random_pixels(3, size, 0))
    np.testing.assert_allclose(onnx_logits, expected, atol=ATOL, rtol=0)
    np.testing.assert_allclose(program_logits, expected, atol=ATOL, rtol=0)


def test_parity_check_is_not_vacuous(tiny_export):
    # Different inputs give clearly different logits, so agreement within 1e-4 means something.
    first, second = (eager_logits(tiny_export["model"], random_pixels(2, tiny_export["size"], s)) for s in (0, 1))
    assert np.abs(first - second).max() > 100 * ATOL
    assert np.abs(first).max() > 0.1


@pytest.mark.slow
def test_reference_space_arch_exports_match_eager(tmp_path):
    arch = get_named_arch("table13-a1").arch
    config = nasvit_hf.NASViTConfig().subnet_config(arch)
    torch.manual_seed(0)
    model = randomize(nasvit_hf.NASViTForImageClassification(config), seed=2)
    # Checked here on fresh inputs instead of by the exporters' own verification (which would run it twice).
    onnx_report = export_onnx(model, tmp_path / "a1.onnx", dynamic_batch=True, verify=False)
    program_report = export_program(model, tmp_path / "a1.pt2", dynamic_batch=True, verify=False)
    assert onnx_report.image_size == program_report.image_size == 192
    onnx_runner, program_runner = OnnxRunner(onnx_report.path), ProgramRunner(program_report.path, trust_program=True)
    for batch in (1, 4):
        pixel_values = random_pixels(batch, 192, seed=30 + batch)
        expected = eager_logits(model, pixel_values)
        assert expected.shape == (batch, 1000)
        np.testing.assert_allclose(onnx_runner(pixel_values)["logits"], expected, atol=ATOL, rtol=0)
        np.testing.assert_allclose(program_runner(pixel_values)["logits"].numpy(), expected, atol=ATOL, rtol=0)


def test_onnx_graph_is_laid_out_for_onnxruntime_with_standard_operators(tiny_export, tmp_path):
    runner = tiny_export["onnx_runner"]
    assert runner.metadata["nasvit.graph"] == "onnxruntime"
    assert tiny_export["reports"][0]["graph"] == "onnxruntime"
    laid_out = operator_counts(tiny_export["folder"] / "model.onnx")
    assert all(":" not in op for op in laid_out), f"non-standard operators in {sorted(laid_out)}"
    # Token stages stay NCHW: linear layers are Convs, each token norm is one LayerNormalization, and the only
    # Transposes swap the last two axes of an attention MatMul's input (onnxruntime fuses them into the MatMul).
    assert laid_out["LayerNormalization"] > 0
    graph = onnx.load(str(tiny_export["folder"] / "model.onnx")).graph
    consumers = {name: node.op_type for node in graph.node for name in node.input}
    for node in graph.node:
        if node.op_type == "Transpose":
            assert consumers[node.output[0]] == "MatMul"
            assert list(node.attribute[0].ints)[-2:] == [3, 2]
    modules = export_onnx(tiny_export["model"], tmp_path / "modules.onnx", dynamic_batch=True, graph="modules")
    assert modules.graph == "modules" and max(modules.max_abs_diff.values()) <= ATOL
    assert OnnxRunner(modules.path).metadata["nasvit.graph"] == "modules"
    assert sum(laid_out.values()) < sum(operator_counts(modules.path).values())


def test_unknown_graph_is_refused(tiny_export, tmp_path):
    with pytest.raises(ValueError, match="graph must be one of.*onnxruntime.*modules"):
        export_onnx(tiny_export["model"], tmp_path / "x.onnx", graph="fused")
    assert not os.path.exists(tmp_path / "x.onnx")


@pytest.mark.parametrize("switchable_scaling", ["tokens", "width", "none"])
@pytest.mark.parametrize("space", ["tiny", "tiny-paper"])
def test_onnx_graph_module_is_the_modules_function(space, switchable_scaling):
    torch.manual_seed(0)
    config = nasvit_hf.NASViTConfig(search_space=get_search_space(space), num_labels=10)
    config.switchable_scaling = switchable_scaling
    supernet = randomize(nasvit_hf.NASViTForImageClassification(config), seed=3)
    generator = torch.Generator().manual_seed(4)
    archs = [supernet.config.largest_arch()] + [sample_arch(config.search_space, generator) for _ in range(2)]
    for arch in archs:
        if "num_windows" in arch:  # global attention: windowed attention exports its modules (next test)
            arch["num_windows"] = [1] * len(arch["num_windows"])
        subnet = supernet.extract_subnet(arch).eval()
        pixel_values = random_pixels(2, arch["resolution"], seed=5)
        (logits,) = NASViTOnnxGraph(subnet)(pixel_values)
        np.testing.assert_allclose(logits.numpy(), eager_logits(subnet, pixel_values), atol=1e-5, rtol=0)


def test_windowed_attention_and_bare_model_exports(tmp_path):
    torch.manual_seed(0)
    config = nasvit_hf.NASViTConfig(search_space=get_search_space("tiny-paper"), num_labels=10)
    supernet = randomize(nasvit_hf.NASViTForImageClassification(config), seed=6)
    arch = supernet.config.smallest_arch()
    arch.update(resolution=64, num_windows=[4, 1, 1, 1])  # mb4's 8x8 grid in 2x2 windows
    windowed = supernet.extract_subnet(arch)
    report = export_onnx(windowed, tmp_path / "windowed.onnx")  # the modules: the graph lays out global attention
    assert report.graph == "modules" and report.max_abs_diff[1] <= ATOL
    arch["num_windows"] = [1, 1, 1, 1]
    body = supernet.extract_subnet(arch).nasvit
    report = export_onnx(body, tmp_path / "body.onnx", batch_size=2)
    assert report.graph == "onnxruntime" and report.output_names == ["last_hidden_state", "pooler_output"]
    outputs = OnnxRunner(report.path)(random_pixels(2, 64, 7))
    with torch.no_grad(), modules_only(body):
        expected = body(random_pixels(2, 64, 7))
    np.testing.assert_allclose(outputs["last_hidden_state"], expected.last_hidden_state.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(outputs["pooler_output"], expected.pooler_output.numpy(), atol=ATOL, rtol=0)


def test_fixed_batch_onnx_export_uses_requested_opset_and_batch(tiny_export, tmp_path):
    report = export_onnx(tiny_export["model"], tmp_path / "fixed.onnx", opset=18, batch_size=2)
    assert report.opset == 18 and report.batch_size == 2 and not report.dynamic_batch
    graph_input = onnx.load(report.path).graph.input[0]
    size = tiny_export["size"]
    assert [dim.dim_value for dim in graph_input.type.tensor_type.shape.dim] == [2, 3, size, size]
    runner = OnnxRunner(report.path)
    assert runner.batch_size == 2
    np.testing.assert_allclose(
        runner(random_pixels(2, size, 5))["logits"],
        eager_logits(tiny_export["model"], random_pixels(2, size, 5)),
        atol=ATOL,
        rtol=0,
    )
    with pytest.raises(ValueError, match="fixed batch size of 2.*dynamic_batch"):
        runner(random_pixels(4, size, 5))


def test_backbone_program_exports_hidden_state_and_pooled_output(tiny_export, tmp_path):
    backbone = tiny_export["model"].nasvit  # a NASViTModel with the subnet's config
    report = export_program(backbone, tmp_path / "backbone.pt2", batch_size=2)
    assert report.output_names == ["last_hidden_state", "pooler_output"]
    assert report.max_abs_diff[2] <= ATOL
    outputs = ProgramRunner(report.path, trust_program=True)(random_pixels(2, tiny_export["size"], 0))
    assert list(outputs) == ["last_hidden_state", "pooler_output"]
    assert outputs["pooler_output"].shape == (2, backbone.config.arch["width"][-1])


def test_runners_reject_other_resolutions(tiny_export):
    size = tiny_export["size"]
    wrong = random_pixels(1, size + 16, 0)
    for runner in (
        OnnxRunner(tiny_export["folder"] / "model.onnx"),
        ProgramRunner(tiny_export["folder"] / "model.pt2", trust_program=True),
    ):
        with pytest.raises(ValueError, match=rf"for {size}x{size} inputs only.*for_resolution\({size}\)"):
            runner(wrong)


def test_runners_reject_raw_uint8_images(tiny_export):
    size = tiny_export["size"]
    raw = np.zeros((1, 3, size, size), dtype=np.uint8)
    with pytest.raises(ValueError, match="uint8.*image processor"):
        tiny_export["onnx_runner"](raw)


def test_onnx_metadata_records_arch_labels_and_preprocessing(tiny_export):
    runner = tiny_export["onnx_runner"]
    config = tiny_export["model"].config
    assert runner.id2label == config.id2label
    assert runner.output_names == ["logits"]
    import json

    assert json.loads(runner.metadata["nasvit.arch"]) == config.arch
    preprocessor = json.loads(runner.metadata["nasvit.preprocessor"])
    assert preprocessor["crop_size"] == {"height": config.image_size, "width": config.image_size}


@pytest.mark.parametrize("exporter", [export_onnx, export_program])
def test_supernet_is_refused_with_extract_hint(exporter, tmp_path):
    supernet = tiny_supernet()
    supernet.save_pretrained(tmp_path / "supernet")
    for model_or_path in (supernet, tmp_path / "supernet"):
        with pytest.raises(ValueError, match=r"is a supernet \(more than one choice for resolutions.*extract_subnet"):
            exporter(model_or_path, tmp_path / "out")
    assert not os.path.exists(tmp_path / "out")


def test_cli_exits_with_error_for_a_supernet(tmp_path, capsys):
    supernet = tiny_supernet()
    supernet.save_pretrained(tmp_path / "supernet")
    sys.path.insert(0, RECIPES)
    try:
        import deploy as cli
    finally:
        sys.path.remove(RECIPES)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--model", str(tmp_path / "supernet"), "--output", str(tmp_path / "model.onnx")])
    assert exit_info.value.code == 2
    assert not os.path.exists(tmp_path / "model.onnx")


def test_load_refuses_non_nasvit_objects():
    with pytest.raises(TypeError, match="expected a NASViT model"):
        load_subnet_for_export(torch.nn.Linear(2, 2))


def test_opset_below_dynamo_minimum_is_refused(tiny_export, tmp_path):
    with pytest.raises(ValueError, match="opset must be an int >= 18"):
        export_onnx(tiny_export["model"], tmp_path / "old.onnx", opset=13)


def test_failed_verification_writes_nothing_and_restores_training_mode(tiny_export, tmp_path, monkeypatch):
    original_run = ProgramRunner.run

    def broken_run(self, pixel_values):
        return tuple(output + 1.0 for output in original_run(self, pixel_values))

    monkeypatch.setattr(ProgramRunner, "run", broken_run)
    model = tiny_export["model"].train()
    try:
        with pytest.raises(RuntimeError, match="disagrees with PyTorch eager.*Nothing was written"):
            export_program(model, tmp_path / "broken.pt2", batch_size=2)
        assert model.training
    finally:
        model.eval()
    assert os.listdir(tmp_path) == []


def test_model_card_snippets_run_against_the_exported_files(tiny_export, tmp_path, monkeypatch):
    folder = str(tiny_export["folder"])
    markdown = model_card_section(folder, tiny_export["size"], onnx_file="model.onnx", program_file="model.pt2")
    assert f"(batch, 3, {tiny_export['size']}, {tiny_export['size']})" in markdown
    blocks = re.findall(r"```python\n(.*?)```", markdown, flags=re.S)
    assert len(blocks) == 1  # the ONNX snippet only: a card never tells users to load a .pt2 (loading unpickles)
    assert "`model.pt2`" in markdown and "unpickles" in markdown and "trust_program=True" in markdown
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save("image.jpg")
    namespace: dict = {}
    exec(compile(blocks[0], "onnx_snippet", "exec"), namespace)
    onnx_logits = namespace["logits"]
    assert onnx_logits.shape == (1, 10)
    program_logits = tiny_export["program_runner"](namespace["pixel_values"])["logits"]
    np.testing.assert_allclose(program_logits.detach().numpy(), onnx_logits, atol=ATOL, rtol=0)


def test_model_card_for_a_hub_repo_downloads_the_onnx_file_and_never_loads_a_program():
    markdown = model_card_section("someone/nasvit-a0", 192, onnx_file="onnx/model.onnx", program_file="model.pt2")
    (block,) = re.findall(r"```python\n(.*?)```", markdown, flags=re.S)
    assert 'hf_hub_download("someone/nasvit-a0", "onnx/model.onnx")' in block
    assert "torch.export.load(" not in block and "ProgramRunner" not in block
    compile(block, "snippet", "exec")


def test_program_runner_refuses_to_load_without_trust(tiny_export):
    path = tiny_export["folder"] / "model.pt2"
    for trust in (False, "yes", 1):
        with pytest.raises(ValueError, match=r"unpickles it.*trust_program=True"):
            ProgramRunner(path, trust_program=trust)


def test_model_card_without_shipped_files_shows_the_export_call():
    markdown = model_card_section("someone/nasvit-a0", 192)
    blocks = re.findall(r"```python\n(.*?)```", markdown, flags=re.S)
    assert 'export_onnx("someone/nasvit-a0", "model.onnx", dynamic_batch=True)' in blocks[0]
    for block in blocks:
        compile(block, "snippet", "exec")
    with pytest.raises(ValueError, match="image_size"):
        model_card_section("someone/nasvit-a0", 0)


def test_segmentation_model_exports_at_any_size_with_its_own_preprocessing(tmp_path):
    """Dense models keep their input's size: `image_size` picks the exported size (here 80x56 for a 48-px subnet,
    with windowed attention over padded windows), and the metadata records the segmentation processor resizing to
    it, not the classification crop. The program runner reads the same size back."""
    torch.manual_seed(0)
    config = nasvit_hf.NASViTConfig(search_space=get_search_space("tiny"), num_labels=5, num_windows=4)
    supernet = nasvit_hf.NASViTForSemanticSegmentation(config)
    arch = supernet.config.smallest_arch()
    arch["resolution"] = 48
    subnet = supernet.extract_subnet(arch).eval()
    report = export_onnx(subnet, tmp_path / "seg.onnx", image_size=(80, 56), batch_size=2)
    assert report.image_size == (80, 56) and report.output_names == ["logits"] and report.max_abs_diff[2] <= ATOL
    assert "(batch 2, 3, 80, 56)" in report.summary()
    runner = OnnxRunner(tmp_path / "seg.onnx")
    assert runner.input_size == (80, 56)
    pixel_values = random_pixels(2, 80, 3)[..., :56]
    (logits,) = runner.run(pixel_values)
    with torch.no_grad():
        expected = subnet(pixel_values).logits.numpy()
    assert logits.shape == expected.shape == (2, 5, 20, 14)
    np.testing.assert_allclose(logits, expected, atol=ATOL, rtol=1e-4)
    processor = json.loads(runner.metadata["nasvit.preprocessor"])
    assert processor["size"] == {"height": 80, "width": 56} and not processor.get("do_center_crop")
    assert runner.metadata["nasvit.model_class"] == "NASViTForSemanticSegmentation"
    assert runner.metadata["nasvit.image_size"] == "80x56"
    with pytest.raises(ValueError, match=r"for 80x56 inputs only.*NASViTSegmentationImageProcessor"):
        runner.run(random_pixels(2, 48, 0))


def test_deploy_cli_image_size_takes_one_side_or_height_and_width(capsys):
    sys.path.insert(0, RECIPES)
    try:
        import deploy as cli
    finally:
        sys.path.remove(RECIPES)
    assert cli._image_size([512]) == 512 and cli._image_size([512, 1024]) == (512, 1024)
    with pytest.raises(SystemExit):
        cli.main(["--model", "unused", "--output", "unused.onnx", "--image_size", "1", "2", "3"])
    assert "--image_size takes one side or a height and a width, got 3 values" in capsys.readouterr().err


def test_classification_export_refuses_another_image_size(tiny_export, tmp_path):
    with pytest.raises(ValueError, match=r"exports at its subnet's resolution \(48\).*Only segmentation models"):
        export_onnx(tiny_export["model"], tmp_path / "other.onnx", image_size=64)
    assert not (tmp_path / "other.onnx").exists()


@pytest.fixture(scope="module")
def digits_quantization(tiny_export):
    return load_quantization_data(
        tiny_export["model"], "digits", split="search", calibration_size=16, evaluation_size=48, seed=1
    )


def test_quantization_data_is_disjoint_and_preprocessed_at_the_subnet_size(tiny_export, digits_quantization):
    data = digits_quantization
    size = tiny_export["size"]
    assert data.calibration.shape == (16, 3, size, size) and data.evaluation.shape == (48, 3, size, size)
    assert data.labels.shape == (48,) and int(data.labels.max()) < 10
    flat = torch.cat([data.calibration, data.evaluation]).flatten(1)
    assert len(torch.unique(flat, dim=0)) == 64  # no image both calibrates and evaluates
    assert "digits" in data.description and "16 images calibrate" in data.description


def test_int8_export_measures_top1_against_fp32_and_keeps_attention_in_float(
    tiny_export, digits_quantization, tmp_path
):
    report = export_onnx(
        tiny_export["model"], tmp_path / "int8.onnx", dynamic_batch=True, quantize="int8",
        calibration=digits_quantization,
    )  # fmt: skip
    info = report.quantization
    assert info["evaluation_images"] == 48 and info["calibration_images"] == 16
    assert {"top1_fp32", "top1_int8", "top1_change", "top1_agreement"} <= set(info)
    assert info["top1_change"] == pytest.approx(info["top1_int8"] - info["top1_fp32"])
    assert max(report.max_abs_diff.values()) <= ATOL  # the fp32 graph it was made from was verified
    runner = OnnxRunner(report.path)
    assert json.loads(runner.metadata["nasvit.quantization"]) == info
    assert runner.metadata["nasvit.arch"] == tiny_export["onnx_runner"].metadata["nasvit.arch"]
    ops = operator_counts(report.path)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    graph = onnx.load(report.path).graph
    producers = {output: node.op_type for node in graph.node for output in node.output}
    for node in graph.node:
        if node.op_type in ("Softmax", "AveragePool"):  # float: never fed straight from an int8 tensor
            assert producers.get(node.input[0]) != "QuantizeLinear"
    logits = runner(digits_quantization.evaluation[:4])["logits"]
    assert logits.shape == (4, 10) and np.isfinite(logits).all()


def test_int8_without_calibration_images_is_refused(tiny_export, tmp_path, capsys):
    with pytest.raises(ValueError, match="needs calibration images.*load_quantization_data"):
        export_onnx(tiny_export["model"], tmp_path / "int8.onnx", quantize="int8")
    with pytest.raises(ValueError, match="quantize must be None or one of"):
        export_onnx(tiny_export["model"], tmp_path / "int8.onnx", quantize="int4")
    sys.path.insert(0, RECIPES)
    try:
        import deploy as cli
    finally:
        sys.path.remove(RECIPES)
    folder = str(tiny_export["folder"])
    with pytest.raises(SystemExit):
        cli.main(["--model", folder, "--output", str(tmp_path / "x.onnx"), "--quantize", "int8"])
    assert "--calibration_dataset" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x.onnx")


def test_quantization_data_refuses_a_missing_holdout(tiny_export, tmp_path):
    with pytest.raises(ValueError, match="no held-out split.*holdout_per_class"):
        load_quantization_data(tiny_export["model"], "mnist_5k", holdout=tmp_path)


def test_cli_int8_export_writes_top1_into_metadata_and_model_card(tiny_export, tmp_path):
    sys.path.insert(0, RECIPES)
    try:
        import deploy as cli
    finally:
        sys.path.remove(RECIPES)
    output, card = tmp_path / "int8.onnx", tmp_path / "deployment.md"
    args = ["--model", str(tiny_export["folder"]), "--output", str(output), "--quantize", "int8"]
    args += ["--calibration_dataset", "digits", "--calibration_split", "search", "--calibration_size", "16"]
    (report,) = cli.main([*args, "--model_card", str(card)])
    info = report["quantization"]
    assert info["calibration_images"] == 16 and info["evaluation_images"] == 84  # the 100 digits of "search"
    assert json.loads(OnnxRunner(output).metadata["nasvit.quantization"])["top1_int8"] == info["top1_int8"]
    text = card.read_text()
    assert "The ONNX file is int8" in text and f"top-1 {info['top1_int8']:.2f} %" in text
    assert f"{info['top1_fp32']:.2f} % for the fp32 graph" in text and "digits" in text
    with pytest.raises(SystemExit):  # an existing card is never overwritten, and nothing is exported then
        cli.main([*args[:3], str(tmp_path / "again.onnx"), *args[4:], "--model_card", str(card)])
    assert not os.path.exists(tmp_path / "again.onnx")


def test_benchmark_times_with_denormals_flushed_even_after_a_default_onnxruntime_session(tmp_path):
    """Random-init peers decay into denormals (EfficientNet-B0 ran 20x slow); creating an onnxruntime session without
    `session.set_denormal_as_zero` clears the calling thread's flags, so the benchmark must set them right before
    timing. The timed call sees flushing on whatever the state was before."""
    import onnxruntime

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    try:
        import bench_deployment
    finally:
        sys.path.remove(str(REPO_ROOT / "benchmarks"))
    path = str(tmp_path / "conv.onnx")
    torch.onnx.export(torch.nn.Conv2d(3, 4, 3).eval(), (torch.randn(1, 3, 8, 8),), path, dynamo=True, verbose=False)
    seen = []
    try:
        torch.set_flush_denormal(False)
        onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        assert not bench_deployment.denormals_flushed()
        bench_deployment.time_round_robin({("m", "b"): lambda: seen.append(bench_deployment.denormals_flushed())}, 2)
    finally:
        torch.set_flush_denormal(False)
    assert seen == [True, True, True]
