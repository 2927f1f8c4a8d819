"""What the ONNX and torch.export paths share: loading an extracted subnet, the export wrapper, input checks.

An exported NASViT graph is a *subnet* at its own resolution: `NASViTModel.forward` resizes other input sizes with
`F.interpolate`, but that branch is not taken at the resolution the graph is traced at, so the exported graph only
accepts `(batch, 3, resolution, resolution)`. The runners check that before calling the runtime.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..loading import load_nasvit_model as _load_model  # the old name here; its home is nasvit_hf.loading
from ..models.configuration_nasvit import NASViTConfig
from ..models.image_processing_nasvit import check_image_shape, check_resize_pixels
from ..models.modeling_nasvit import NASViTPreTrainedModel, check_pixel_values
from ..models.search_space_nasvit import arch_fields, field_choices

__all__ = [
    "DEFAULT_ATOL",
    "ExportOptions",
    "ExportReport",
    "NASViTExportWrapper",
    "check_exported_pixel_values",
    "deployment_metadata",
    "load_subnet_for_export",
    "modules_only",
    "supernet_choices",
]

DEFAULT_ATOL = 1e-4
# The largest batch a dynamic-batch graph accepts (a bound torch.export needs; far above any CPU batch).
MAX_DYNAMIC_BATCH = 65536


@dataclass(frozen=True)
class ExportOptions:
    """What both exporters (`export_onnx`, `export_program`) take besides the model and the file; pass one as
    `options=`, or its fields as keywords (which override `options`' values).

    Args:
        dynamic_batch: make the batch dimension symbolic (`batch`); otherwise it is fixed to `batch_size`. Height
            and width are fixed: `image_size`.
        verify: run the written file on seeded random inputs (batch sizes 1 and 4 when `dynamic_batch`, else
            `batch_size`, or `verify_batch_sizes`) and require |exported − eager| <= atol + rtol·|eager|.
        seed: the seed of the example and verification inputs.
        image_size: the input's side, or (height, width). Classification subnets export at their resolution
            (`config.arch["resolution"]`, the default; they resize any input to it themselves); segmentation models
            and backbones keep their input's size, so any size works (e.g. 512, or (512, 1024) for Cityscapes-style
            inputs), and the metadata records a `NASViTSegmentationImageProcessor` resizing to it.
    """

    dynamic_batch: bool = False
    verify: bool = True
    batch_size: int = 1
    atol: float = DEFAULT_ATOL
    rtol: float = 1e-4
    verify_batch_sizes: list[int] | None = None
    seed: int = 0
    image_size: int | tuple[int, int] | None = None

    @classmethod
    def resolve(cls, options: ExportOptions | None, settings: dict[str, Any]) -> ExportOptions:
        """`options` (default: the defaults) with `settings` (keyword arguments of an exporter) applied; an unknown
        keyword is a TypeError naming the options."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(settings) - set(names))
        if unknown:
            raise TypeError(f"unexpected export option(s) {unknown}; the options (ExportOptions) are {names}.")
        if options is not None and not isinstance(options, cls):
            raise TypeError(f"options must be an ExportOptions, got {type(options).__name__}.")
        return dataclasses.replace(options if options is not None else cls(), **settings)


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how well it matched PyTorch eager.

    `max_abs_diff` maps each verified batch size to the largest |exported − eager| over all outputs (empty when
    the export was not verified).
    """

    format: str  # "onnx" or "torch.export"
    path: str
    image_size: int | tuple[int, int]  # the input's side, or (height, width) when not square
    dynamic_batch: bool
    batch_size: int | None  # the fixed batch size, None when dynamic
    input_name: str
    output_names: list[str]
    file_size_bytes: int
    export_seconds: float
    opset: int | None = None
    max_abs_diff: dict[int, float] = field(default_factory=dict)
    atol: float | None = None
    # ONNX: "onnxruntime" (the graph laid out for onnxruntime, nasvit_hf.deploy.graph) or "modules"
    graph: str | None = None
    # int8 exports: how it was quantized and the held-out top-1 of the fp32 and int8 files (quantize_onnx)
    quantization: dict[str, Any] | None = None

    @property
    def verified(self) -> bool:
        return bool(self.max_abs_diff)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        batch = "dynamic batch" if self.dynamic_batch else f"batch {self.batch_size}"
        opset = f", opset {self.opset}" if self.opset is not None else ""
        opset += f", {self.graph} graph" if self.graph else ""
        opset += ", int8" if self.quantization else ""
        line = (
            f"{self.format}: {self.path} ({self.file_size_bytes / 2**20:.1f} MiB{opset}; input {self.input_name} "
            f"({batch}, 3, {', '.join(map(str, input_size(self.image_size)))}) -> {', '.join(self.output_names)}; "
            f"exported in {self.export_seconds:.1f} s)"
        )
        if self.verified:
            diffs = ", ".join(f"batch {size}: {diff:.2e}" for size, diff in self.max_abs_diff.items())
            line += f"; max |exported - eager| {diffs} (tolerance {self.atol:g})"
        else:
            line += "; not verified"
        return line


class NASViTExportWrapper(nn.Module):
    """`pixel_values -> tuple of output tensors`: the model's `ModelOutput` fields that are not None, in order.

    Classification: `(logits,)`; bare backbone: `(last_hidden_state, pooler_output)`; any head added later that
    returns a `ModelOutput` works the same way. Hidden states are never exported.
    """

    def __init__(self, model: NASViTPreTrainedModel):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(pixel_values=pixel_values, output_hidden_states=False, return_dict=True)
        return tuple(value for key, value in outputs.items() if key not in ("loss", "hidden_states"))

    def output_names(self, example: torch.Tensor) -> list[str]:
        with torch.no_grad():
            outputs = self.model(pixel_values=example, output_hidden_states=False, return_dict=True)
        return [key for key in outputs.keys() if key not in ("loss", "hidden_states")]


def supernet_choices(config: NASViTConfig) -> list[str]:
    """The search-space dimensions with more than one choice, e.g. `["resolutions [192, 224]", "mb4.d [3, 4]"]`
    (every field of the arch schema, `ARCH_FIELDS`)."""
    space = config.search_space
    found = []
    for arch_field in arch_fields(space):
        stages = arch_field.stages or (None,)
        for stage, choices in zip(stages, field_choices(space, arch_field)):
            if len(choices) > 1:
                found.append(
                    f"{stage}.{arch_field.space_key} {choices}" if stage else f"{arch_field.space_key} {choices}"
                )
    return found


def load_subnet_for_export(model_or_path: NASViTPreTrainedModel | str | os.PathLike) -> NASViTPreTrainedModel:
    """The model to export, from an instance or a `save_pretrained` folder / Hub id, checked to be a subnet.

    Raises `ValueError` for a supernet (more than one choice in some dimension of its search space): an export
    needs one fixed architecture, so extract it first (`model.extract_subnet(arch)`, then BN recalibration, as
    `recipes/extract.py` does).
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        model = _load_model(model_or_path)
        where = f"the model in {str(model_or_path)!r}"
    elif isinstance(model_or_path, NASViTPreTrainedModel):
        model = model_or_path
        where = f"this {type(model).__name__}"
    else:
        raise TypeError(
            f"expected a NASViT model or a path to a save_pretrained folder, got {type(model_or_path).__name__}."
        )
    choices = supernet_choices(model.config)
    if choices:
        listed = ", ".join(choices[:4]) + (f" and {len(choices) - 4} more" if len(choices) > 4 else "")
        raise ValueError(
            f"{where} is a supernet (more than one choice for {listed}); export needs one fixed "
            "architecture. Extract a subnet first: `subnet = supernet.extract_subnet(arch)`, recalibrate its "
            "BatchNorm (nasvit_hf.calibration.calibrate_batchnorm) and `subnet.save_pretrained(folder)`, or run "
            "recipes/extract.py, which does all three. Then export that subnet."
        )
    return model


@contextlib.contextmanager
def modules_only(model: nn.Module) -> Iterator[nn.Module]:
    """`model` with every eval-mode fast path switched off (`inference_fast_path = False` on each submodule that has
    the switch: the inference plan, the segmentation decode head), restored afterwards: the plain modules, which
    every export is verified against."""
    switched = [module for module in model.modules() if getattr(module, "inference_fast_path", False) is True]
    saved = [module.__dict__.get("inference_fast_path", _UNSET) for module in switched]
    for module in switched:
        module.inference_fast_path = False
    try:
        yield model
    finally:
        for module, value in zip(switched, saved):
            if value is _UNSET:
                del module.inference_fast_path
            else:
                module.inference_fast_path = value


_UNSET = object()


@contextlib.contextmanager
def export_ready(model: NASViTPreTrainedModel) -> Iterator[NASViTPreTrainedModel]:
    """The model in eval mode, float32, on the CPU (a copy when it is not already there); the mode is restored."""
    parameter = next(model.parameters(), None)
    on_cpu_fp32 = parameter is None or (parameter.device.type == "cpu" and parameter.dtype == torch.float32)
    target = model if on_cpu_fp32 else copy.deepcopy(model).to(device="cpu", dtype=torch.float32)
    was_training = target.training
    target.eval()
    try:
        yield target
    finally:
        target.train(was_training)


def input_size(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """(height, width) of an export's `image_size` (a side, or a (height, width) pair)."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def example_pixel_values(
    config: NASViTConfig, batch_size: int, seed: int = 0, image_size: int | tuple[int, int] | None = None
) -> torch.Tensor:
    """Seeded standard-normal pixel values of `image_size` (default: the subnet's resolution), what the processor's
    output looks like."""
    generator = torch.Generator().manual_seed(seed)
    height, width = input_size(image_size or config.arch["resolution"])
    return torch.randn(batch_size, config.num_channels, height, width, generator=generator)


def is_dense(model: NASViTPreTrainedModel) -> bool:
    """A dense-prediction model (segmentation, backbone): it keeps its input's size, so it exports at any size."""
    from ..models.modeling_nasvit_segmentation import NASViTBackbone, NASViTForSemanticSegmentation

    return isinstance(model, (NASViTBackbone, NASViTForSemanticSegmentation))


def export_image_size(
    model: NASViTPreTrainedModel, image_size: int | tuple[int, int] | list[int] | None
) -> tuple[int, int]:
    """The (height, width) an export takes: the subnet's resolution for classification models (they resize any
    input to it inside the graph), any size (an int for a square, or (height, width); default the resolution) for
    dense-prediction models."""
    resolution = model.config.arch["resolution"]
    if image_size is None:
        return resolution, resolution
    pair = [image_size] * 2 if isinstance(image_size, int) and not isinstance(image_size, bool) else image_size
    if (
        not isinstance(pair, (list, tuple))
        or len(pair) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair)
    ):
        raise ValueError(f"image_size must be a positive int or a (height, width) pair of them, got {image_size!r}.")
    # The image processor's bounds: the processor this export's metadata records resizes to this size.
    check_image_shape(pair[0], pair[1])
    check_resize_pixels(pair[0] * pair[1], f"image_size {tuple(pair)}")
    if tuple(pair) != (resolution, resolution) and not is_dense(model):
        raise ValueError(
            f"a {type(model).__name__} exports at its subnet's resolution ({resolution}), got image_size="
            f"{image_size}: the model resizes every input to {resolution} px itself, so resize images to "
            f"{resolution} (NASViTImageProcessor.for_resolution({resolution})) instead. Only segmentation models and "
            "backbones export at other sizes."
        )
    return int(pair[0]), int(pair[1])


def deployment_metadata(
    model: NASViTPreTrainedModel,
    output_names: list[str],
    dynamic_batch: bool,
    batch_size: int,
    image_size: int | tuple[int, int] | None = None,
) -> dict[str, str]:
    """String metadata stored with an exported graph, enough to preprocess inputs and name the outputs."""
    from ..models.image_processing_nasvit import NASViTImageProcessor
    from ..models.image_processing_nasvit_segmentation import NASViTSegmentationImageProcessor

    config = model.config
    height, width = input_size(image_size or config.arch["resolution"])
    if is_dense(model):  # resize the whole image to the exported size (no crop), as the segmentation processor does
        processor = NASViTSegmentationImageProcessor(size={"height": height, "width": width}).to_dict()
    else:
        processor = NASViTImageProcessor.for_resolution(config.arch["resolution"]).to_dict()
    processor = {key: value for key, value in processor.items() if key != "image_processor_type"}
    return {
        "nasvit.model_class": type(model).__name__,
        "nasvit.image_size": str(height) if height == width else f"{height}x{width}",
        "nasvit.input_size": json.dumps([height, width]),
        "nasvit.num_channels": str(config.num_channels),
        "nasvit.dynamic_batch": json.dumps(dynamic_batch),
        "nasvit.batch_size": json.dumps(None if dynamic_batch else batch_size),
        "nasvit.output_names": json.dumps(output_names),
        "nasvit.arch": json.dumps(config.arch),
        "nasvit.id2label": json.dumps({str(k): v for k, v in config.id2label.items()}),
        "nasvit.preprocessor": json.dumps(processor, default=int),
    }


def check_exported_pixel_values(
    pixel_values: np.ndarray | torch.Tensor,
    image_size: int | tuple[int, int],
    num_channels: int = 3,
    batch_size: int | None = None,
    what: str = "this exported model",
) -> None:
    """Raise a `ValueError` that says what to do when `pixel_values` does not fit an exported subnet: on top of the
    model's own check (`check_pixel_values`: a float (batch, channels, height, width) tensor), an exported graph takes
    only its subnet's resolution, its fixed batch size, numpy arrays too, and never raw uint8 images."""
    if isinstance(pixel_values, np.ndarray):
        try:
            pixel_values = torch.from_numpy(pixel_values)
        except TypeError:
            raise ValueError(
                f"{what} takes float pixel_values, got a numpy array of dtype {pixel_values.dtype}."
            ) from None
    if isinstance(pixel_values, torch.Tensor) and not pixel_values.is_floating_point():
        raise ValueError(
            f"pixel_values must be normalised floats, got dtype {pixel_values.dtype}; raw uint8 images need the "
            "image processor (rescale to [0, 1] and ImageNet mean/std) first."
        )
    check_pixel_values(pixel_values, num_channels)
    shape = tuple(pixel_values.shape)
    height, width = input_size(image_size)
    if shape[2:] != (height, width):
        raise ValueError(
            f"{what} was exported for {height}x{width} inputs only, got {shape[2]}x{shape[3]}. Preprocess "
            f"with the image processor recorded in its metadata (`nasvit.preprocessor`): for a classification subnet "
            f"NASViTImageProcessor.for_resolution({height}) (or the model folder's AutoImageProcessor), which "
            "resizes and centre-crops to that size; for a segmentation model NASViTSegmentationImageProcessor(size="
            f'{{"height": {height}, "width": {width}}}).'
        )
    if batch_size is not None and shape[0] != batch_size:
        raise ValueError(
            f"{what} was exported with a fixed batch size of {batch_size}, got a batch of {shape[0]}. Export with "
            "dynamic_batch=True (--dynamic_batch) to run other batch sizes."
        )
    if shape[0] == 0:
        raise ValueError(f"{what} got an empty batch (shape {shape}).")


def max_abs_diff(outputs: list[np.ndarray], references: tuple[torch.Tensor, ...]) -> float:
    if len(outputs) != len(references):
        raise RuntimeError(f"the exported model returned {len(outputs)} outputs, eager PyTorch {len(references)}.")
    worst = 0.0
    for output, reference in zip(outputs, references):
        reference = reference.detach().cpu().numpy()
        if output.shape != reference.shape:
            raise RuntimeError(f"exported output shape {output.shape} differs from eager {reference.shape}.")
        worst = max(worst, float(np.max(np.abs(output.astype(np.float64) - reference.astype(np.float64)))))
    return worst


@dataclass
class PreparedExport:
    """An extracted subnet ready to trace: the model (eval, float32, CPU), its export wrapper, the example input
    (batch 2 for a dynamic batch: torch.export specialises dimensions of size 1), the output names and the dynamic
    shapes to pass to the exporter, with the export's options."""

    model: NASViTPreTrainedModel
    wrapper: NASViTExportWrapper
    example: torch.Tensor
    output_names: list[str]
    dynamic_shapes: tuple[dict[int, Any], ...] | None
    options: ExportOptions
    image_size: tuple[int, int]  # (height, width): `options.image_size` resolved by `export_image_size`

    def metadata(self) -> dict[str, str]:
        options = self.options
        return deployment_metadata(
            self.model, self.output_names, options.dynamic_batch, options.batch_size, self.image_size
        )

    def verify(self, run: Callable[[torch.Tensor], list[np.ndarray]], what: str) -> dict[int, float]:
        """Run `run` (the exported file's runtime) and the plain modules in eager PyTorch (`modules_only`: no fast
        path) on seeded inputs of each batch size (default: 1 and 4 for a dynamic batch, else the fixed batch) and
        require |exported − eager| <= atol + rtol·|eager|. Returns the largest difference per batch size; raises
        RuntimeError (nothing is written then)."""
        options = self.options
        atol, rtol = options.atol, options.rtol
        diffs: dict[int, float] = {}
        for size in options.verify_batch_sizes or ([1, 4] if options.dynamic_batch else [options.batch_size]):
            inputs = example_pixel_values(self.model.config, size, options.seed + size, self.image_size)
            with torch.no_grad(), modules_only(self.model):
                expected = self.wrapper(inputs)
            with torch.no_grad():
                outputs = run(inputs)
            diffs[size] = max_abs_diff(outputs, expected)
            for index, (output, reference) in enumerate(zip(outputs, expected)):
                reference = reference.numpy()
                if np.any(np.abs(output - reference) > atol + rtol * np.abs(reference)):
                    raise RuntimeError(
                        f"the exported {what} disagrees with PyTorch eager on output {index} at batch size {size}: "
                        f"max |difference| {np.max(np.abs(output - reference)):.3e} exceeds atol={atol} + "
                        f"rtol={rtol}·|eager|. Nothing was written. Please report this with the model folder; "
                        "verify=False skips the check."
                    )
        return diffs

    def report(self, format: str, path: str, export_seconds: float, diffs: dict[int, float],
               opset: int | None = None, graph: str | None = None) -> ExportReport:  # fmt: skip
        """The `ExportReport` of the file at `path`; `atol` is the options' when verified (`diffs`), else None."""
        return ExportReport(
            format=format,
            path=path,
            image_size=self.image_size[0] if self.image_size[0] == self.image_size[1] else self.image_size,
            dynamic_batch=self.options.dynamic_batch,
            batch_size=None if self.options.dynamic_batch else self.options.batch_size,
            input_name="pixel_values",
            output_names=self.output_names,
            file_size_bytes=os.path.getsize(path),
            export_seconds=export_seconds,
            opset=opset,
            max_abs_diff=diffs,
            atol=self.options.atol if self.options.verify else None,
            graph=graph,
        )


@contextlib.contextmanager
def prepare_export(
    model_or_path: NASViTPreTrainedModel | str | os.PathLike, options: ExportOptions
) -> Iterator[PreparedExport]:
    """Load and check the subnet (`load_subnet_for_export`) and make it ready to trace at `options.image_size`
    (`export_image_size`); the model's mode is restored afterwards."""
    batch_size = options.batch_size
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    model = load_subnet_for_export(model_or_path)
    image_size = export_image_size(model, options.image_size)
    with export_ready(model) as model:
        wrapper = NASViTExportWrapper(model).eval()
        example = example_pixel_values(
            model.config, 2 if options.dynamic_batch else batch_size, options.seed, image_size
        )
        dynamic_shapes = None
        if options.dynamic_batch:
            dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)},)
        yield PreparedExport(
            model,
            wrapper,
            example,
            wrapper.output_names(example),
            dynamic_shapes,
            options,
            image_size,
        )
