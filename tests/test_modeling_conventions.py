"""transformers' conventions the model files follow, one test per behaviour that transformers' own common test suite
(ModelTesterMixin, ConfigTester, BackboneTesterMixin) caught or checks: loading info, config key names, the meaning
of `out_features=None`, losses through `self.loss_function`, the supernet mixin, the dynamic value conv."""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel
from transformers.loss.loss_utils import ForSemanticSegmentationLoss, ForSequenceClassificationLoss

from nasvit_hf import (
    NASViTBackbone,
    NASViTConfig,
    NASViTForImageClassification,
    NASViTForSemanticSegmentation,
    NASViTModel,
)
from nasvit_hf.models.modeling_nasvit import (
    LEGACY_KEY_MAPPING,
    NASViTAttention,
    NASViTDynamicConv2d,
    NASViTPreTrainedModel,
    NASViTSupernetMixin,
)
from nasvit_hf.models.search_space_nasvit import SEGMENTATION_OUT_FEATURES
from nasvit_hf.presets import get_search_space

from .conftest import REPO_ROOT, randomize_batchnorm_and_scales, run_without_nasvit

ALL_CLASSES = [NASViTModel, NASViTForImageClassification, NASViTBackbone, NASViTForSemanticSegmentation]


def tiny_config(**kwargs) -> NASViTConfig:
    kwargs.setdefault("num_labels", 5)
    return NASViTConfig(search_space=get_search_space("tiny"), decoder_hidden_size=16, **kwargs)


@pytest.fixture(scope="module")
def saved_classifier(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = NASViTForImageClassification(tiny_config())
    randomize_batchnorm_and_scales(model)
    folder = tmp_path_factory.mktemp("classifier")
    model.save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------------------------------------------
# Loading: no from_pretrained override, loading info, aligned tensors, legacy checkpoints
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_from_pretrained_is_transformers_own(model_class):
    assert model_class.from_pretrained.__func__ is PreTrainedModel.from_pretrained.__func__


@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_output_loading_info_gives_model_and_info_for_every_class(model_class, saved_classifier):
    model, info = model_class.from_pretrained(saved_classifier, output_loading_info=True)
    assert isinstance(model, model_class)
    assert set(info) >= {"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"}
    assert not info["mismatched_keys"] and not info["error_msgs"]
    if model_class is NASViTForImageClassification:
        assert not info["missing_keys"] and not info["unexpected_keys"]


def test_loaded_cpu_tensors_are_64_byte_aligned(saved_classifier):
    model = NASViTForImageClassification.from_pretrained(saved_classifier)
    tensors = [*model.parameters(), *model.buffers()]
    assert [t.data_ptr() % 64 for t in tensors if t.numel()] == [0] * sum(1 for t in tensors if t.numel())
    assert model.realign_cpu_tensors() == 0  # nothing left to move


def test_realign_moves_unaligned_tensors_and_keeps_values():
    model = NASViTForImageClassification(tiny_config())
    weight = model.classifier.weight
    storage = torch.empty(weight.numel() + 1)  # a view one float in: 4 bytes off the allocation's alignment
    unaligned = storage[1:].view_as(weight)
    unaligned.copy_(weight.detach())
    weight.data = unaligned
    assert weight.data_ptr() % 64 != 0
    assert model.realign_cpu_tensors() == 1
    assert weight.data_ptr() % 64 == 0 and torch.equal(weight, unaligned)


def test_saved_folders_give_loading_info_with_remote_code(tmp_path):
    classifier = NASViTForImageClassification(tiny_config())
    classifier.save_pretrained(tmp_path / "classifier")
    NASViTForSemanticSegmentation(tiny_config()).save_pretrained(tmp_path / "segmenter")
    code = f"""
from transformers import AutoModelForImageClassification, AutoModelForSemanticSegmentation
for auto_class, folder in [(AutoModelForImageClassification, "classifier"), (AutoModelForSemanticSegmentation, "segmenter")]:
    model, info = auto_class.from_pretrained({str(tmp_path)!r} + "/" + folder, trust_remote_code=True,
                                             output_loading_info=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    print(type(model).__name__)
"""
    assert run_without_nasvit(code, tmp_path).split() == [
        "NASViTForImageClassification",
        "NASViTForSemanticSegmentation",
    ]


def test_checkpoint_with_the_old_value_conv_key_loads_with_the_legacy_key_mapping(tmp_path):
    torch.manual_seed(0)
    model = NASViTForImageClassification(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    old = {key.removesuffix(".weight") if ".value_conv." in key else key: value for key, value in weights.items()}
    assert any(key.endswith("attention.value_conv") for key in old)
    save_file(old, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="key_mapping"):
        NASViTForImageClassification.from_pretrained(tmp_path)
    loaded = NASViTForImageClassification.from_pretrained(tmp_path, key_mapping=LEGACY_KEY_MAPPING).eval()
    pixel_values = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values).logits, model(pixel_values).logits)


# ----------------------------------------------------------------------------------------------------------------
# Config keys
# ----------------------------------------------------------------------------------------------------------------
def test_no_config_key_uses_transformers_numeric_init_names():
    keys = NASViTConfig().to_dict()
    assert not [
        key for key in keys if "layer_scale" in key or key.endswith(("_range", "_std")) and key != "initializer_range"
    ]


def test_zeroing_init_scales_as_transformers_tests_do_still_builds_a_model():
    # ModelTesterMixin's `_config_zero_init` sets every key matching these names to 1e-10.
    config = tiny_config()
    for key in list(config.to_dict()):
        if "_range" in key or "_std" in key or "initializer_factor" in key or "layer_scale" in key:
            setattr(config, key, 1e-10)
    model = NASViTForImageClassification(config)
    assert model.config.switchable_scaling == "tokens"


def test_old_switchable_scaling_key_names_still_load_with_a_future_warning(tmp_path):
    config = tiny_config(switchable_scaling="width", switchable_scaling_init=0.5)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    for new, old in [
        ("switchable_scaling", "layer_scale"),
        ("switchable_scaling_init", "layer_scale_init"),
        ("switchable_scaling_depth_slots", "layer_scale_depth_slots"),
    ]:
        saved[old] = saved.pop(new)
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.warns(FutureWarning, match="'layer_scale' is deprecated.*'switchable_scaling'"):
        loaded = NASViTConfig.from_pretrained(tmp_path)
    assert (loaded.switchable_scaling, loaded.switchable_scaling_init) == ("width", 0.5)
    assert loaded.switchable_scaling_depth_slots == 10 and "layer_scale" not in loaded.to_dict()


def test_old_and_new_key_with_different_values_is_an_error():
    with warnings.catch_warnings(), pytest.raises(ValueError, match="pass only switchable_scaling"):
        warnings.simplefilter("ignore", FutureWarning)
        NASViTConfig(layer_scale="width", switchable_scaling="shared")


@pytest.mark.parametrize(
    "old, new, value",
    [("layer_scale", "switchable_scaling", "width"), ("layer_scale_init", "switchable_scaling_init", 0.5),
     ("layer_scale_depth_slots", "switchable_scaling_depth_slots", 12)],
)  # fmt: skip
def test_an_old_key_beside_its_new_name_at_the_init_default_loads_the_old_value(old, new, value):
    """The new name's default is read from NASViTConfig.__init__'s signature (one source), so a config that states
    the default under the new name (as to_dict does) and a value under the old name takes the old value."""
    import inspect

    default = inspect.signature(NASViTConfig.__init__).parameters[new].default
    with pytest.warns(FutureWarning, match=f"'{old}' is deprecated"):
        config = NASViTConfig(**{old: value, new: default})
    assert getattr(config, new) == value != default


def test_training_config_reads_the_old_layer_scale_key_with_a_future_warning():
    from nasvit_hf.training.config import TrainingConfig

    with pytest.warns(FutureWarning, match="switchable_scaling"):
        config = TrainingConfig.from_dict({"layer_scale": "width"})
    assert config.switchable_scaling == "width"


# ----------------------------------------------------------------------------------------------------------------
# out_features
# ----------------------------------------------------------------------------------------------------------------
def test_out_features_none_means_the_last_stage_in_the_constructor_and_when_set_later():
    assert NASViTConfig().out_features == ["mb7"]
    assert NASViTConfig(out_features=None, out_indices=None).out_indices == [7]
    config = NASViTConfig(out_features=["mb2", "mb3"])
    config.out_features = None
    assert config.out_features == ["mb7"] and config.out_indices == [7]


def test_backbone_returns_the_last_stage_by_default():
    backbone = NASViTBackbone(tiny_config()).eval()
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 64, 64)).feature_maps
    assert backbone.out_features == ["mb7"] and len(maps) == 1 and backbone.channels == [maps[0].shape[1]]


def test_segmentation_model_asks_for_its_four_maps_and_keeps_an_explicit_choice():
    model = NASViTForSemanticSegmentation(tiny_config())
    assert model.config.out_features == SEGMENTATION_OUT_FEATURES == ["mb2", "mb3", "mb4", "mb6"]
    assert len(model.decode_head.linear_projections) == 4
    chosen = NASViTForSemanticSegmentation(tiny_config(out_features=["mb3", "mb5"]))
    assert chosen.config.out_features == ["mb3", "mb5"] and len(chosen.decode_head.linear_projections) == 2


# ----------------------------------------------------------------------------------------------------------------
# Losses through transformers' loss utilities
# ----------------------------------------------------------------------------------------------------------------
def test_classification_loss_is_transformers_image_classification_loss():
    model = NASViTForImageClassification(tiny_config()).eval()
    assert model.loss_type == "ForImageClassification"
    pixel_values, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 4, 2])
    output = model(pixel_values, labels=labels)
    expected = ForSequenceClassificationLoss(labels, output.logits, tiny_config())
    torch.testing.assert_close(output.loss, expected, rtol=0, atol=0)


def test_classification_loss_goes_through_self_loss_function():
    model = NASViTForImageClassification(tiny_config()).eval()
    calls = []

    def loss_function(labels, pooled_logits, config, **kwargs):
        calls.append(labels)
        return pooled_logits.sum() * 0 + 7.0

    model.loss_function = loss_function
    output = model(torch.randn(2, 3, 32, 32), labels=torch.tensor([1, 2]))
    assert len(calls) == 1 and output.loss.item() == 7.0


@pytest.mark.parametrize(
    ("num_labels", "problem_type", "labels"),
    [
        (1, None, torch.tensor([0.5, -1.0])),
        (5, "multi_label_classification", torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 1]])),
    ],
)
def test_regression_and_multi_label_losses_match_transformers(num_labels, problem_type, labels):
    config = tiny_config(num_labels=num_labels, problem_type=problem_type)
    model = NASViTForImageClassification(config).eval()
    output = model(torch.randn(2, 3, 32, 32), labels=labels)
    expected = ForSequenceClassificationLoss(labels.float(), output.logits, tiny_config(num_labels=num_labels))
    torch.testing.assert_close(output.loss, expected)


@pytest.mark.parametrize(
    ("problem_type", "num_labels", "dtype"),
    [
        ("multi_label_classification", 2, torch.float),
        ("single_label_classification", 1, torch.long),
        ("regression", 1, torch.float),
    ],
)
def test_problem_types_as_transformers_tests_them(problem_type, num_labels, dtype):
    """transformers' ModelTesterMixin.test_problem_types: each problem type on a config set after construction,
    labels of zeros, a finite loss without torch's "target size" warning, and a backward pass."""
    import warnings

    config = tiny_config()
    config.problem_type, config.num_labels = problem_type, num_labels
    model = NASViTForImageClassification(config)
    labels = torch.zeros(2, dtype=torch.long)
    if num_labels > 1:
        labels = labels.unsqueeze(1).repeat(1, num_labels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = model(torch.randn(2, 3, 32, 32), labels=labels.to(dtype)).loss
    assert not [w for w in caught if "target size" in str(w.message)]
    assert torch.isfinite(loss)
    loss.backward()


@pytest.mark.parametrize(
    ("num_labels", "labels", "inferred"),
    [
        (1, torch.tensor([0.5, -1.0]), "regression"),
        (1, torch.tensor([0, 0]), "regression"),
        (5, torch.tensor([1, 4]), "single_label_classification"),
        (5, torch.tensor([[1.0, 0, 1, 0, 0], [0, 0, 0, 0, 1]]), "multi_label_classification"),
    ],
)
def test_problem_type_none_is_inferred_and_set_as_transformers_does(num_labels, labels, inferred):
    model = NASViTForImageClassification(tiny_config(num_labels=num_labels)).eval()
    output = model(torch.randn(2, 3, 32, 32), labels=labels)
    reference_config = tiny_config(num_labels=num_labels)
    expected = ForSequenceClassificationLoss(
        labels.float() if inferred != "single_label_classification" else labels, output.logits, reference_config
    )
    assert model.config.problem_type == reference_config.problem_type == inferred
    torch.testing.assert_close(output.loss, expected)


def test_segmentation_loss_is_transformers_semantic_segmentation_loss():
    model = NASViTForSemanticSegmentation(tiny_config()).eval()
    assert model.loss_type == "ForSemanticSegmentation"
    labels = torch.randint(0, 5, (2, 40, 40))
    labels[:, :7] = 255
    with torch.no_grad():
        output = model(torch.randn(2, 3, 40, 40), labels=labels)
    expected = ForSemanticSegmentationLoss(output.logits, labels, ignore_index=255)
    torch.testing.assert_close(output.loss, expected, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------
# Supernet mixin, dynamic value conv, no attribute fallbacks
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_every_class_has_the_supernet_api_from_the_mixin(model_class):
    assert issubclass(model_class, NASViTSupernetMixin) and issubclass(model_class, NASViTPreTrainedModel)
    model = model_class(tiny_config())
    arch = model.sample_min_subnet()
    assert model.active_arch == arch == model.config.smallest_arch()
    assert model.get_supernet_body().stages is not None


def test_the_pretrained_base_class_has_no_supernet_api():
    assert not issubclass(NASViTPreTrainedModel, NASViTSupernetMixin)
    for name in ["set_active_subnet", "sample_active_subnet", "extract_subnet", "set_num_windows", "active_arch"]:
        assert name not in vars(NASViTPreTrainedModel)


def test_attention_value_conv_is_the_dynamic_depthwise_conv():
    model = NASViTModel(tiny_config())
    attentions = [module for module in model.modules() if isinstance(module, NASViTAttention)]
    assert attentions and all(isinstance(a.value_conv, NASViTDynamicConv2d) for a in attentions)
    assert all(a.value_conv.depthwise and a.value_conv.kernel_size == 3 for a in attentions)
    assert any(key.endswith("attention.value_conv.weight") for key in model.state_dict())


def test_model_files_import_only_the_standard_library_torch_transformers_and_each_other():
    """The Hub-portable files: save_pretrained copies a model's file and the siblings it imports (`from .x import y`),
    so a folder loads with trust_remote_code=True wherever torch and transformers are installed (the image processors
    also use numpy, a dependency of transformers, and PIL, which transformers' own image processors need)."""
    import sys

    allowed = {"__future__", "torch", "transformers", "numpy", "PIL"}

    foreign = []
    for path in sorted((REPO_ROOT / "nasvit_hf" / "models").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in allowed and top not in sys.stdlib_module_names:
                    foreign.append(f"{path.name}:{node.lineno} {module}")
    assert foreign == []


def _imports_of(path: Path, module_name: str) -> tuple[list[int], list[str]]:
    """(line numbers of module-level imports of `module_name`, qualified names of the functions importing it)."""
    tree = ast.parse(path.read_text())

    def names(node) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name.lstrip(".") for alias in node.names]
        if isinstance(node, ast.ImportFrom):
            return [node.module or ""] + [alias.name for alias in node.names if not node.module]
        return []

    top_level = [node.lineno for node in tree.body if module_name in names(node)]
    in_functions = []
    for scope in ast.walk(tree):
        if not isinstance(scope, ast.ClassDef | ast.Module):
            continue
        for function in scope.body:
            if isinstance(function, ast.FunctionDef):
                if any(module_name in names(node) for node in ast.walk(function)):
                    owner = "" if isinstance(scope, ast.Module) else f"{scope.name}."
                    in_functions.append(owner + function.name)
    return top_level, in_functions


def test_the_model_files_do_not_import_their_inference_fast_path():
    """The model does not depend on its optimisation: the reference forward (modeling_nasvit.py and the segmentation
    model) reads and runs without inference_nasvit.py, which builds on the model. The one seam is
    `NASViTInferencePlanMixin.inference_plan`, which imports the plan on its first eval-mode call."""
    models = REPO_ROOT / "nasvit_hf" / "models"
    top_level, in_functions = _imports_of(models / "modeling_nasvit.py", "inference_nasvit")
    assert top_level == []
    assert in_functions == ["NASViTInferencePlanMixin.inference_plan"]
    assert _imports_of(models / "modeling_nasvit_segmentation.py", "inference_nasvit") == ([], [])


def test_the_inference_plan_is_imported_on_the_first_eval_forward_only(tmp_path):
    """Building, training and saving a model never imports the fast path; the first eval-mode forward does (so
    `pipeline()` users get it with no code), and the plan runs."""
    import subprocess
    import sys

    code = """
import sys
import torch
from nasvit_hf import NASViTConfig, NASViTForImageClassification
from nasvit_hf.presets import get_search_space

plan_module = "nasvit_hf.models.inference_nasvit"
model = NASViTForImageClassification(NASViTConfig(search_space=get_search_space("tiny"), num_labels=3))
pixel_values = torch.randn(2, 3, 32, 32)
model(pixel_values).logits.sum().backward()
assert plan_module not in sys.modules, "building or training the model imported the fast path"
model.eval()
with torch.no_grad():
    model(pixel_values)
    assert plan_module in sys.modules
    assert type(model.nasvit.inference_plan(pixel_values)).__name__ == "NASViTInferencePlan"
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, env=_env_with_repo_first()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["ok"]


def _env_with_repo_first() -> dict:
    import os

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def test_saved_folders_carry_the_fast_path_and_run_it_with_remote_code(tmp_path):
    """save_pretrained copies inference_nasvit.py beside the model files (transformers follows the seam's relative
    import), and a folder loaded with trust_remote_code=True runs the plan in eval mode, equal to the modules."""
    torch.manual_seed(0)
    model = NASViTForImageClassification(tiny_config())
    randomize_batchnorm_and_scales(model)
    model.save_pretrained(tmp_path / "classifier")
    assert (tmp_path / "classifier" / "inference_nasvit.py").is_file()
    code = f"""
import torch
from transformers import AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained({str(tmp_path / "classifier")!r}, trust_remote_code=True)
model.eval()
pixel_values = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    plan = model.nasvit.inference_plan(pixel_values)
    assert type(plan).__module__.startswith("transformers_modules"), type(plan).__module__
    fast = model(pixel_values).logits
    model.nasvit.inference_fast_path = False
    slow = model(pixel_values).logits
torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4)
print(type(plan).__name__)
"""
    assert run_without_nasvit(code, tmp_path).split() == ["NASViTInferencePlan"]


def test_model_files_use_no_getattr_or_hasattr_fallbacks():
    """Our own objects have their attributes; only probes of the installed torch's features are allowed."""
    calls = []
    for path in sorted((REPO_ROOT / "nasvit_hf" / "models").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
            ):
                if not ast.unparse(node.args[0]).startswith("torch."):
                    calls.append(f"{path.name}:{node.lineno}")
    assert calls == []


# ----------------------------------------------------------------------------------------------------------------
# The documented workarounds for transformers 5 (docs/model.md, "Upstream workarounds")
# ----------------------------------------------------------------------------------------------------------------
def test_backbone_folder_loads_with_its_class(tmp_path):
    backbone = NASViTBackbone(tiny_config(out_features=["mb2", "mb3"])).eval()
    backbone.save_pretrained(tmp_path)
    loaded = NASViTBackbone.from_pretrained(tmp_path).eval()
    pixel_values = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        for mine, theirs in zip(loaded(pixel_values).feature_maps, backbone(pixel_values).feature_maps):
            assert torch.equal(mine, theirs)


def test_image_classification_evaluator_takes_the_model_folder(tmp_path):
    import evaluate
    import numpy as np
    from datasets import Dataset
    from PIL import Image

    from nasvit_hf.metrics import accuracy_metric_path

    labels = {0: "a", 1: "b", 2: "c"}
    config = tiny_config(num_labels=3, id2label=labels, label2id={name: index for index, name in labels.items()})
    model = NASViTForImageClassification(config)
    arch = config.smallest_arch()
    model.extract_subnet(arch).save_pretrained(tmp_path)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)) for _ in range(4)]
    data = Dataset.from_dict({"image": images, "label": [0, 1, 2, 0]})
    results = evaluate.evaluator("image-classification").compute(
        model_or_pipeline=str(tmp_path),
        data=data,
        metric=evaluate.load(accuracy_metric_path()),
        label_mapping=config.label2id,
    )
    assert 0.0 <= results["accuracy"] <= 1.0
