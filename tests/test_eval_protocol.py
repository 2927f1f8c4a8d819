"""The reference evaluation protocol as an image-processor setting (crop_mode="reference")."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T
from transformers import AutoImageProcessor

import nasvit_hf  # noqa: F401  (registers the Auto classes)
from nasvit_hf import NASViTImageProcessor
from nasvit_hf.models.image_processing_nasvit import DEFAULT_CROP_PCT

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 255, (12, 17, 3), dtype=np.uint8)
    return Image.fromarray(smooth).resize((341, 300), Image.BICUBIC)  # landscape, odd width


def reference_tensors(image: Image.Image, resolution: int, pil: bool = False) -> torch.Tensor:
    """The reference's evaluation as a torchvision composition: Resize(256, bicubic) -> CenterCrop(224) -> [0, 1] ->
    Normalize, then the model's own resize to the subnet's resolution (bicubic, align_corners=False)."""
    steps = [] if pil else [T.PILToTensor()]
    steps += [
        T.Resize(256, interpolation=InterpolationMode.BICUBIC, antialias=True),
        T.CenterCrop(224),
        T.ToImage(),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(MEAN, STD),
    ]
    crop = T.Compose(steps)(image)[None]
    return F.interpolate(crop, size=(resolution, resolution), mode="bicubic", align_corners=False)


@pytest.mark.parametrize("resolution", [192, 224, 256, 288])
def test_reference_crop_mode_equals_the_reference_transforms(photo, resolution):
    processor = NASViTImageProcessor.for_resolution(resolution, crop_mode="reference")
    pixel_values = processor(photo, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, resolution, resolution)
    torch.testing.assert_close(pixel_values, reference_tensors(photo, resolution), atol=1e-5, rtol=0)
    # The reference resized PIL images; PIL's bicubic differs from torch's by rounding only.
    assert (pixel_values - reference_tensors(photo, resolution, pil=True)).abs().mean() < 0.02


# Non-square sizes of the two scikit-learn sample photos (640x427), both orientations: odd and even margins, and
# resized long sides that are fractional (331x287 -> 295.2 x 256: the crop offset (295 - 224) / 2 = 35.5 rounds to 36).
NON_SQUARE_SIZES = [(331, 287), (287, 331), (500, 281), (281, 500), (640, 427), (427, 640), (257, 256), (300, 451)]


@pytest.fixture(scope="module")
def sample_photos():
    from sklearn.datasets import load_sample_images

    return [Image.fromarray(array) for array in load_sample_images().images]


def non_square_photos(photos):
    """Each photo resized to, and cropped (its top-left corner: full-resolution detail) to, every NON_SQUARE_SIZES."""
    for index, photo in enumerate(photos):
        for width, height in NON_SQUARE_SIZES:
            yield f"photo{index}-resized-{width}x{height}", photo.resize((width, height), Image.BICUBIC)
            yield f"photo{index}-cropped-{width}x{height}", photo.crop((0, 0, width, height))


def test_reference_crop_equals_torchvisions_pil_pipeline_on_non_square_photos(sample_photos):
    """The reference's own evaluation ran torchvision on PIL images: Resize(256, bicubic) -> CenterCrop(224). The
    processor (tensor resize) must pick the same resized size and the same crop window: what remains is the
    rounding of PIL's and torch's bicubic kernels to 8 bits (at most 2 levels)."""
    from torchvision import transforms

    pil_pipeline = transforms.Compose([
        transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])  # fmt: skip
    processor = NASViTImageProcessor.for_resolution(224, crop_mode="reference")
    two_levels = 2.0 / 255 / min(STD) + 1e-6
    for name, image in non_square_photos(sample_photos):
        difference = (processor(image, return_tensors="pt")["pixel_values"][0] - pil_pipeline(image)).abs()
        assert float(difference.max()) <= two_levels, (name, float(difference.max()))
        assert float(difference.mean()) < 1e-3, (name, float(difference.mean()))


def test_resized_size_is_torchvisions_for_non_square_photos(sample_photos):
    from torchvision import transforms

    processor = NASViTImageProcessor(size={"shortest_edge": 256}, do_center_crop=False, do_normalize=False)
    resize = transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC)
    for name, image in non_square_photos(sample_photos):
        width, height = resize(image).size
        assert tuple(processor(image, return_tensors="pt")["pixel_values"].shape[-2:]) == (height, width), name


@pytest.mark.parametrize("margin", [0, 1, 2, 3, 5, 71])
def test_centre_crop_offset_is_torchvisions(margin):
    """torchvision's CenterCrop offset is int(round(margin / 2)), Python's round (halves to even): 0.5 -> 0, 1.5 -> 2,
    2.5 -> 2, 35.5 -> 36."""
    from torchvision.transforms import functional as TF

    image = torch.arange(3 * 10 * (10 + margin), dtype=torch.uint8).reshape(3, 10, 10 + margin)
    processor = NASViTImageProcessor(
        do_resize=False, crop_size={"height": 10, "width": 10}, do_rescale=False, do_normalize=False
    )
    cropped = processor(image, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(cropped.to(torch.uint8), TF.center_crop(image, [10, 10]))
    torch.testing.assert_close(
        processor(image.transpose(1, 2), return_tensors="pt")["pixel_values"][0].to(torch.uint8),
        TF.center_crop(image.transpose(1, 2), [10, 10]),
    )


def test_reference_mode_survives_save_and_load_and_moves_to_other_resolutions(tmp_path, photo):
    processor = NASViTImageProcessor.for_resolution(192, crop_mode="reference")
    processor.save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, NASViTImageProcessor)
    assert loaded.crop_mode == "reference" and loaded.resolution == 192
    other = loaded.at_resolution(288)
    assert other.crop_mode == "reference" and other.crop_size["height"] == 224
    torch.testing.assert_close(other(photo, return_tensors="pt")["pixel_values"], reference_tensors(photo, 288))


def test_resolution_mode_keeps_the_crop_fraction():
    processor = NASViTImageProcessor.for_resolution(224)
    assert processor.crop_mode == "resolution"
    moved = processor.at_resolution(288)
    assert moved.size["shortest_edge"] == int(288 / DEFAULT_CROP_PCT) and moved.crop_size["height"] == 288
    full = NASViTImageProcessor.for_resolution(64, crop_pct=1.0).at_resolution(32)
    assert full.size["shortest_edge"] == 32 and full.crop_size["height"] == 32


def test_processor_saved_before_the_setting_loads_as_resolution_mode(tmp_path, photo):
    processor = NASViTImageProcessor.for_resolution(32)
    processor.save_pretrained(tmp_path)
    config = tmp_path / "preprocessor_config.json"
    import json

    raw = json.loads(config.read_text())
    raw.pop("crop_mode"), raw.pop("resolution")
    config.write_text(json.dumps(raw))
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert loaded.crop_mode == "resolution" and loaded.resolution is None
    torch.testing.assert_close(
        loaded(photo, return_tensors="pt")["pixel_values"], processor(photo, return_tensors="pt")["pixel_values"]
    )


def test_bad_crop_mode_is_named():
    with pytest.raises(ValueError, match="crop_mode"):
        NASViTImageProcessor.for_resolution(224, crop_mode="centre")
    with pytest.raises(ValueError, match="resolution"):
        NASViTImageProcessor(resolution=0)


def test_search_and_export_evaluate_through_the_supernets_processor(tmp_path):
    from nasvit_hf import NASViTConfig, NASViTForImageClassification
    from nasvit_hf.hub import save_subnet
    from nasvit_hf.hub.subnets import NamedSubnet
    from nasvit_hf.presets import get_search_space
    from nasvit_hf.search import DataConfig, load_evaluation_data, load_supernet_processor

    torch.manual_seed(0)
    supernet = NASViTForImageClassification(NASViTConfig(search_space=get_search_space("tiny"), num_labels=10)).eval()
    folder = tmp_path / "supernet"
    protocol = NASViTImageProcessor(
        size={"shortest_edge": 40}, crop_size={"height": 36, "width": 36}, crop_mode="reference"
    )
    protocol.save_pretrained(folder)
    supernet.save_pretrained(folder)
    processor = load_supernet_processor(folder)
    assert processor.crop_mode == "reference"  # save_pretrained kept the folder's processor
    data = load_evaluation_data(
        DataConfig(dataset="digits", batch_size=16, calibration_batches=1, max_evaluation_samples=16), processor
    )
    arch = supernet.config.smallest_arch()
    images = list(data.evaluation.dataset[:16]["image"])
    expected = processor.at_resolution(arch["resolution"])(images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(data.evaluation.pixel_values(arch["resolution"]), expected)
    exported = save_subnet(
        supernet, NamedSubnet("tiny-min", arch, "test"), tmp_path / "export", data, supernet_name="toy",
        latency_kwargs={"warmup": 0, "repeats": 1},
    )  # fmt: skip
    saved = AutoImageProcessor.from_pretrained(exported.path)
    assert saved.crop_mode == "reference" and saved.resolution == arch["resolution"]
    assert saved.size["shortest_edge"] == 40 and saved.crop_size["height"] == 36
    assert load_supernet_processor(tmp_path) is None  # no processor saved: search falls back to for_resolution


def test_converted_reference_checkpoint_carries_the_reference_protocol(
    tmp_path, official_state_dict_path, official_cases
):
    import json

    from safetensors.torch import load_file

    from tests.search_fixtures import load_recipe

    checkpoint = tmp_path / "ckpt.pth"
    torch.save({"model_ema": load_file(official_state_dict_path)}, checkpoint)
    space = tmp_path / "space.json"
    space.write_text(json.dumps(official_cases["space"]))
    output = tmp_path / "converted"
    argv = ["--checkpoint", str(checkpoint), "--output_dir", str(output), "--search_space", str(space)]
    assert load_recipe("convert_official_checkpoint").main(argv) == 0
    processor = AutoImageProcessor.from_pretrained(output)
    assert processor.crop_mode == "reference"
    assert processor.size["shortest_edge"] == 256 and processor.crop_size["height"] == 224
    assert processor.resolution == max(official_cases["space"]["resolutions"])
