"""Export an extracted NASViT subnet to ONNX and run it with onnxruntime.

The graph comes from torch's dynamo-based exporter (`torch.onnx.export(..., dynamo=True)`: `torch.export` then
onnxscript translation and optimisation). Optimum is not used: it has no NASViT export config and would add a
dependency for what one call to torch does here. Every export is checked with `onnx.checker` (full check, shape
inference included) and, unless `verify=False`, run with onnxruntime on seeded random inputs and compared with
PyTorch eager; the file is only moved into place once both pass.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from typing import Any

import numpy as np
import torch

from ..models.modeling_nasvit import NASViTForImageClassification, NASViTPreTrainedModel
from ..utils.extras import require_extra
from ..utils.io import atomic_file
from .common import ExportOptions, ExportReport, check_exported_pixel_values, prepare_export
from .graph import onnx_graph_for
from .quantize import QUANTIZATIONS, QuantizationData, compare_top1, quantize_onnx

__all__ = ["GRAPHS", "MIN_ONNX_OPSET", "OnnxRunner", "export_onnx"]

logger = logging.getLogger(__name__)

# The dynamo exporter translates to ONNX opset 18 or later.
MIN_ONNX_OPSET = 18
# What export_onnx traces: the graph laid out for onnxruntime (where it applies), or the modules as they are.
GRAPHS = ("onnxruntime", "modules")


def export_onnx(
    model_or_path: NASViTPreTrainedModel | str | os.PathLike,
    output: str | os.PathLike,
    opset: int | None = None,
    *,
    options: ExportOptions | None = None,
    graph: str = "onnxruntime",
    quantize: str | None = None,
    calibration: QuantizationData | None = None,
    **settings: Any,
) -> ExportReport:
    """Export an extracted subnet (an instance, or a `save_pretrained` folder / Hub id) to the ONNX file `output`.

    Args:
        opset: the ai.onnx opset (>= 18); default: the exporter's recommended one.
        options, **settings: the settings both exporters share (`ExportOptions`: dynamic_batch, verify, batch_size,
            atol, rtol, verify_batch_sizes, seed, image_size), as one instance and/or its fields as keywords, e.g.
            `export_onnx(model, "model.onnx", dynamic_batch=True)`; verification runs the file with onnxruntime.
        graph: "onnxruntime" (default): trace `NASViTOnnxGraph`, the subnet's function laid out for onnxruntime's
            CPU provider (NCHW token stages, linear layers as 1×1 Convs, BN / norm affine / layer scales folded;
            `nasvit_hf.deploy.graph`), where it applies (classification subnets and bare `NASViTModel`s with global
            attention); other models, and "modules", trace the modules themselves. Either way the file holds
            standard ONNX operators only and is verified against the plain modules (`inference_fast_path = False`).
        quantize: "int8" to write an int8 model instead (`nasvit_hf.deploy.quantize.quantize_onnx`: onnxruntime's
            static QDQ quantization, per-channel int8 weights) calibrated on `calibration.calibration`; the fp32
            graph is exported and verified first, then the top-1 of both on `calibration.evaluation` is measured
            and recorded in the file's `nasvit.quantization` metadata and the report (`report.quantization`).
        calibration: the images for `quantize` (`load_quantization_data` builds them from a dataset).
    Returns:
        an `ExportReport` (path, opset, shapes, file size, export time, the measured differences).

    The input is named `pixel_values`, the outputs after the model's output fields (`logits` for classification).
    The file's metadata (`nasvit.*` keys) records the image size, arch, labels and preprocessing. The file is
    written atomically: nothing appears at `output` unless the export, the checker and the verification pass.
    """
    onnx, _, _ = require_extra("export", "ONNX export")
    if graph not in GRAPHS:
        raise ValueError(f"graph must be one of {list(GRAPHS)}, got {graph!r}.")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be None or one of {list(QUANTIZATIONS)}, got {quantize!r}.")
    if quantize is not None and not isinstance(calibration, QuantizationData):
        raise ValueError(
            f"quantize={quantize!r} needs calibration images: pass calibration=load_quantization_data(model, ...) "
            "(recipes/deploy.py: --calibration_dataset, --holdout)."
        )
    if opset is not None and (not isinstance(opset, int) or opset < MIN_ONNX_OPSET):
        raise ValueError(f"opset must be an int >= {MIN_ONNX_OPSET} (the dynamo exporter's minimum), got {opset!r}.")
    options = ExportOptions.resolve(options, settings)
    with prepare_export(model_or_path, options) as prepared:
        if quantize and not isinstance(prepared.model, NASViTForImageClassification):
            raise ValueError(
                f"quantize={quantize!r} is for image classifiers (the top-1 check needs logits), not "
                f"{type(prepared.model).__name__}."
            )
        start = time.perf_counter()
        traced = onnx_graph_for(prepared.model) if graph == "onnxruntime" else None
        graph_used = "onnxruntime" if traced is not None else "modules"
        with torch.no_grad():
            program = torch.onnx.export(
                traced if traced is not None else prepared.wrapper,
                (prepared.example,),
                dynamo=True,
                opset_version=opset,
                input_names=["pixel_values"],
                output_names=prepared.output_names,
                dynamic_shapes=prepared.dynamic_shapes,
                verbose=False,
            )
        export_seconds = time.perf_counter() - start
        config = prepared.model.config
        program.model.producer_name = "nasvit_hf"
        program.model.doc_string = (
            f"NASViT {type(prepared.model).__name__} subnet; input pixel_values "
            f"({'batch' if options.dynamic_batch else options.batch_size}, {config.num_channels}, "
            f"{prepared.image_size[0]}, {prepared.image_size[1]}) preprocessed as the nasvit.preprocessor metadata "
            "says."
        )
        for key, value in prepared.metadata().items():
            program.model.metadata_props[key] = value
        program.model.metadata_props["nasvit.graph"] = graph_used
        with atomic_file(output, ".onnx") as (final, temp), tempfile.TemporaryDirectory() as workdir:
            fp32 = os.path.join(workdir, "fp32.onnx") if quantize else temp
            program.save(fp32, external_data=False)
            onnx.checker.check_model(fp32, full_check=True)
            opset_used = next(
                entry.version for entry in onnx.load(fp32, load_external_data=False).opset_import if entry.domain == ""
            )
            diffs: dict[int, float] = {}
            if options.verify:
                runner = OnnxRunner(fp32)
                diffs = prepared.verify(lambda inputs: runner.run(inputs.numpy()), "graph")
            quantization = None
            if quantize:
                quantization = quantize_onnx(fp32, temp, calibration.calibration)
                onnx.checker.check_model(temp)
                quantization.update(compare_top1(fp32, temp, calibration))
                quantized = onnx.load(temp)
                quantized.metadata_props.add(key="nasvit.quantization", value=json.dumps(quantization))
                onnx.save(quantized, temp)
        report = prepared.report(
            "onnx",
            final,
            export_seconds,
            diffs,
            opset=opset_used,
            graph=graph_used,
        )
        if quantization is not None:
            report = dataclasses.replace(report, quantization=quantization, file_size_bytes=os.path.getsize(final))
    logger.info(report.summary())
    return report


class OnnxRunner:
    """An onnxruntime session for an exported NASViT subnet that checks inputs before running them.

    >>> runner = OnnxRunner("model.onnx")
    >>> logits = runner(pixel_values)["logits"]  # pixel_values: (batch, 3, runner.image_size, runner.image_size)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        providers: list[str] | None = None,
        num_threads: int | None = None,
    ):
        _, onnxruntime, _ = require_extra("export", "OnnxRunner")
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"no ONNX file at {self.path!r}; export one with export_onnx().")
        options = onnxruntime.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(
                self.path, options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
            raise ValueError(
                f"{self.path!r} is not a valid ONNX file ({error}); export one with export_onnx()."
            ) from error
        meta = self.session.get_modelmeta().custom_metadata_map
        inputs = self.session.get_inputs()
        shape = inputs[0].shape if len(inputs) == 1 else None
        if "nasvit.image_size" not in meta or shape is None or len(shape) != 4:
            raise ValueError(
                f"{self.path!r} is not a NASViT export (no nasvit metadata or not one (batch, 3, r, r) input): it was "
                "not written by export_onnx()."
            )
        graph_input = inputs[0]
        self.input_name = graph_input.name
        self.output_names = [output.name for output in self.session.get_outputs()]
        batch, channels, height, width = shape
        square_or_dense = height == width or "nasvit.input_size" in meta  # dense exports may be non-square
        if not all(isinstance(value, int) for value in (channels, height, width)) or not square_or_dense:
            raise ValueError(f"{self.path!r} is not a NASViT export: input shape {graph_input.shape}.")
        self.input_size = (int(height), int(width))
        self.image_size = int(height) if height == width else self.input_size
        self.num_channels = int(channels)
        self.batch_size = batch if isinstance(batch, int) else None
        self.dynamic_batch = self.batch_size is None
        self.metadata = dict(meta)
        self.id2label = {int(k): v for k, v in json.loads(meta.get("nasvit.id2label", "{}")).items()}

    def run(self, pixel_values: np.ndarray | torch.Tensor) -> list[np.ndarray]:
        """The outputs, in `output_names` order, for checked float32 `pixel_values`."""
        check_exported_pixel_values(
            pixel_values, self.input_size, self.num_channels, self.batch_size, what=f"the ONNX model {self.path!r}"
        )
        if isinstance(pixel_values, torch.Tensor):
            pixel_values = pixel_values.detach().cpu().numpy()
        pixel_values = np.ascontiguousarray(pixel_values, dtype=np.float32)
        return self.session.run(self.output_names, {self.input_name: pixel_values})

    def __call__(self, pixel_values: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.run(pixel_values)))

    def __repr__(self) -> str:
        batch = "batch" if self.dynamic_batch else self.batch_size
        return (
            f"OnnxRunner({self.path!r}, input {self.input_name} ({batch}, {self.num_channels}, {self.input_size[0]}, "
            f"{self.input_size[1]}), outputs {self.output_names})"
        )
