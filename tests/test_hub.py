"""Hub citizenship: save/load round trips, Auto classes, trust_remote_code folders, pipeline, image processor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

import nasvit_hf
from nasvit_hf import NASViTImageProcessor

from .conftest import randomize_batchnorm_and_scales, run_without_nasvit


@pytest.fixture
def saved_subnet(tiny_model, tmp_path):
    randomize_batchnorm_and_scales(tiny_model)
    arch = tiny_model.config.smallest_arch()
    arch["resolution"] = 48
    subnet = tiny_model.extract_subnet(arch).eval()
    subnet.config.id2label = {i: f"digit-{i}" for i in range(10)}
    subnet.config.label2id = {v: k for k, v in subnet.config.id2label.items()}
    folder = tmp_path / "nasvit-small"
    subnet.save_pretrained(folder)
    return subnet, folder


def test_save_load_round_trip_gives_identical_outputs(saved_subnet):
    subnet, folder = saved_subnet
    loaded = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert isinstance(loaded, nasvit_hf.NASViTForImageClassification)
    assert loaded.active_arch == subnet.active_arch
    pixel_values = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values).logits, subnet(pixel_values).logits, atol=0, rtol=0)


def test_supernet_round_trip_keeps_search_space_and_active_arch(tiny_model, tmp_path):
    randomize_batchnorm_and_scales(tiny_model)
    arch = tiny_model.sample_active_subnet(torch.Generator().manual_seed(3))
    tiny_model.save_pretrained(tmp_path / "supernet")
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "supernet").eval()
    assert loaded.config.search_space == tiny_model.config.search_space
    assert loaded.active_arch == arch
    pixel_values = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values).logits, tiny_model(pixel_values).logits, atol=0, rtol=0)


def test_auto_classes_know_nasvit(saved_subnet):
    _, folder = saved_subnet
    config = AutoConfig.from_pretrained(folder)
    assert isinstance(config, nasvit_hf.NASViTConfig) and config.model_type == "nasvit"
    assert isinstance(AutoModel.from_pretrained(folder), nasvit_hf.NASViTModel)
    assert isinstance(AutoImageProcessor.from_pretrained(folder), NASViTImageProcessor)


def test_saved_folder_carries_its_code(saved_subnet):
    _, folder = saved_subnet
    for name in (
        "configuration_nasvit.py",
        "search_space_nasvit.py",
        "config_checks_nasvit.py",
        "modeling_nasvit.py",
        "image_processing_nasvit.py",
    ):
        assert (folder / name).is_file()
    config = AutoConfig.from_pretrained(folder)
    assert config.auto_map["AutoModelForImageClassification"] == "modeling_nasvit.NASViTForImageClassification"


def test_trust_remote_code_loads_without_nasvit_installed(saved_subnet, tmp_path):
    subnet, folder = saved_subnet
    pixel_values = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        expected = subnet(pixel_values).logits
    torch.save(pixel_values, tmp_path / "x.pt")
    code = f"""
import torch
from transformers import AutoModelForImageClassification, pipeline
from PIL import Image
model = AutoModelForImageClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
with torch.no_grad():
    logits = model(torch.load({str(tmp_path / "x.pt")!r})).logits
torch.save(logits, {str(tmp_path / "remote.pt")!r})
classifier = pipeline("image-classification", model={str(folder)!r}, trust_remote_code=True)
print(classifier(Image.new("L", (20, 30), 128))[0]["label"])
"""
    output = run_without_nasvit(code, cwd=tmp_path)
    assert output.strip().startswith("digit-")
    torch.testing.assert_close(torch.load(tmp_path / "remote.pt"), expected, atol=0, rtol=0)


def test_pipeline_loads_a_local_folder_without_a_remote_code_prompt(saved_subnet, monkeypatch):
    _, folder = saved_subnet

    def prompt(*args, **kwargs):
        raise AssertionError("pipeline asked whether to trust remote code")

    monkeypatch.setattr("builtins.input", prompt)
    classifier = pipeline("image-classification", model=str(folder))
    assert isinstance(classifier.model, nasvit_hf.NASViTForImageClassification)
    assert isinstance(classifier.image_processor, NASViTImageProcessor)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "P"])
def test_pipeline_classifies_images_of_any_mode(saved_subnet, mode):
    _, folder = saved_subnet
    classifier = pipeline("image-classification", model=str(folder), top_k=3)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)).convert(mode)
    predictions = classifier(image)
    assert len(predictions) == 3
    assert all(p["label"].startswith("digit-") for p in predictions)
    assert abs(sum(p["score"] for p in predictions)) <= 1.0 + 1e-6


def test_image_processor_resizes_crops_and_normalises():
    processor = NASViTImageProcessor.for_resolution(224)
    assert processor.size["shortest_edge"] == 256 and processor.crop_size == {"height": 224, "width": 224}
    assert processor.resample == 3  # bicubic
    image = Image.new("RGB", (400, 300), (255, 255, 255))
    pixel_values = processor(image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 224, 224)
    expected = (1.0 - torch.tensor(processor.image_mean)) / torch.tensor(processor.image_std)
    torch.testing.assert_close(pixel_values[0, :, 100, 100], expected, atol=1e-3, rtol=0)


def test_image_processor_converts_grayscale_and_rgba_to_rgb():
    processor = NASViTImageProcessor.for_resolution(32)
    for image in (Image.new("L", (50, 40), 7), Image.new("RGBA", (50, 40), (1, 2, 3, 4))):
        assert processor(image, return_tensors="pt")["pixel_values"].shape == (1, 3, 32, 32)


def test_image_processor_rejects_bad_resolution():
    with pytest.raises(ValueError, match="resolution"):
        NASViTImageProcessor.for_resolution(0)
    with pytest.raises(ValueError, match="crop_pct"):
        NASViTImageProcessor.for_resolution(224, crop_pct=1.5)
