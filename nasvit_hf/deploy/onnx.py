"""Export an extracted NASViT subnet to ONNX and run it with onnxruntime.

The graph comes from torch's dynamo-based exporter (`torch.onnx.export(..., dynamo=True)`: `torch.export` then
onnxscript translation and optimisation). Optimum is not used: it has no NASViT export config and would add a
dependency for what one call to torch does here. Every export is checked with `onnx.checker` (full check, shape
inference included) and, unless `verify=False`, run with onnxruntime on seeded random inputs and compared with
PyTorch eager; the file is only moved into place once both pass.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import numpy as np
import torch

from ..models.modeling_nasvit import NASViTPreTrainedModel
from ..utils.io import temporary_sibling
from .common import (
    DEFAULT_ATOL,
    MAX_DYNAMIC_BATCH,
    ExportReport,
    NASViTExportWrapper,
    check_exported_pixel_values,
    deployment_metadata,
    example_pixel_values,
    export_ready,
    load_subnet_for_export,
    max_abs_diff,
)

__all__ = ["MIN_ONNX_OPSET", "OnnxRunner", "export_onnx"]

logger = logging.getLogger(__name__)

# The dynamo exporter translates to ONNX opset 18 or later.
MIN_ONNX_OPSET = 18


def _require_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            "ONNX export needs onnx, onnxscript and onnxruntime: pip install 'nasvit_hf[export]'."
        ) from error
    return onnx, onnxruntime


def export_onnx(
    model_or_path: NASViTPreTrainedModel | str | os.PathLike,
    output: str | os.PathLike,
    opset: int | None = None,
    dynamic_batch: bool = False,
    verify: bool = True,
    batch_size: int = 1,
    atol: float = DEFAULT_ATOL,
    rtol: float = 1e-4,
    verify_batch_sizes: list[int] | None = None,
    seed: int = 0,
) -> ExportReport:
    """Export an extracted subnet (an instance, or a `save_pretrained` folder / Hub id) to the ONNX file `output`.

    Args:
        opset: the ai.onnx opset (>= 18); default: the exporter's recommended one.
        dynamic_batch: make the batch dimension symbolic (`batch`); otherwise it is fixed to `batch_size`. Height
            and width are always the subnet's resolution (`config.arch["resolution"]`).
        verify: run the file with onnxruntime on seeded random inputs (batch sizes 1 and 4 when `dynamic_batch`,
            else `batch_size`, or `verify_batch_sizes`) and require |onnxruntime − eager| <= atol + rtol·|eager|.
    Returns:
        an `ExportReport` (path, opset, shapes, file size, export time, the measured differences).

    The input is named `pixel_values`, the outputs after the model's output fields (`logits` for classification).
    The file's metadata (`nasvit.*` keys) records the image size, arch, labels and preprocessing. The file is
    written atomically: nothing appears at `output` unless the export, the checker and the verification pass.
    """
    onnx, onnxruntime = _require_onnx()
    if opset is not None and (not isinstance(opset, int) or opset < MIN_ONNX_OPSET):
        raise ValueError(f"opset must be an int >= {MIN_ONNX_OPSET} (the dynamo exporter's minimum), got {opset!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    model = load_subnet_for_export(model_or_path)
    with export_ready(model) as model:
        wrapper = NASViTExportWrapper(model).eval()
        # A dynamic batch is traced at 2: torch.export specialises dimensions of size 1.
        example = example_pixel_values(model.config, 2 if dynamic_batch else batch_size, seed)
        output_names = wrapper.output_names(example)
        dynamic_shapes = None
        if dynamic_batch:
            dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)},)
        start = time.perf_counter()
        with torch.no_grad():
            program = torch.onnx.export(
                wrapper,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=["pixel_values"],
                output_names=output_names,
                dynamic_shapes=dynamic_shapes,
                verbose=False,
            )
        export_seconds = time.perf_counter() - start
        program.model.producer_name = "nasvit_hf"
        program.model.doc_string = (
            f"NASViT {type(model).__name__} subnet; input pixel_values "
            f"({'batch' if dynamic_batch else batch_size}, {model.config.num_channels}, {model.config.image_size}, "
            f"{model.config.image_size}) preprocessed like NASViTImageProcessor."
        )
        for key, value in deployment_metadata(model, output_names, dynamic_batch, batch_size).items():
            program.model.metadata_props[key] = value
        final, temp = temporary_sibling(output, ".onnx")
        try:
            program.save(temp, external_data=False)
            onnx.checker.check_model(temp, full_check=True)
            opset_used = next(
                entry.version for entry in onnx.load(temp, load_external_data=False).opset_import if entry.domain == ""
            )
            diffs: dict[int, float] = {}
            if verify:
                sizes = verify_batch_sizes or ([1, 4] if dynamic_batch else [batch_size])
                runner = OnnxRunner(temp)
                for size in sizes:
                    inputs = example_pixel_values(model.config, size, seed + size)
                    with torch.no_grad():
                        expected = wrapper(inputs)
                    outputs = runner.run(inputs.numpy())
                    diffs[size] = max_abs_diff(outputs, expected)
                    _check_close(outputs, expected, atol, rtol, size)
            os.replace(temp, final)
        finally:
            if os.path.exists(temp):
                os.remove(temp)
    report = ExportReport(
        format="onnx",
        path=final,
        image_size=model.config.image_size,
        dynamic_batch=dynamic_batch,
        batch_size=None if dynamic_batch else batch_size,
        input_name="pixel_values",
        output_names=output_names,
        file_size_bytes=os.path.getsize(final),
        export_seconds=export_seconds,
        opset=opset_used,
        max_abs_diff=diffs,
        atol=atol if verify else None,
    )
    logger.info(report.summary())
    return report


def _check_close(outputs: list[np.ndarray], expected: tuple[torch.Tensor, ...], atol: float, rtol: float, size: int):
    for name_index, (output, reference) in enumerate(zip(outputs, expected)):
        reference = reference.numpy()
        excess = np.abs(output - reference) - (atol + rtol * np.abs(reference))
        if np.any(excess > 0):
            raise RuntimeError(
                f"the exported graph disagrees with PyTorch eager on output {name_index} at batch size {size}: max "
                f"|difference| {np.max(np.abs(output - reference)):.3e} exceeds atol={atol} + rtol={rtol}·|eager|. "
                "Nothing was written. Please report this with the model folder; verify=False skips the check."
            )


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
        _, onnxruntime = _require_onnx()
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"no ONNX file at {self.path!r}; export one with export_onnx().")
        options = onnxruntime.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            self.path, options, providers=providers or ["CPUExecutionProvider"]
        )
        meta = self.session.get_modelmeta().custom_metadata_map
        (graph_input,) = self.session.get_inputs()
        self.input_name = graph_input.name
        self.output_names = [output.name for output in self.session.get_outputs()]
        batch, channels, height, width = graph_input.shape
        if not all(isinstance(value, int) for value in (channels, height, width)) or height != width:
            raise ValueError(f"{self.path!r} is not a NASViT export: input shape {graph_input.shape}.")
        self.image_size = int(height)
        self.num_channels = int(channels)
        self.batch_size = batch if isinstance(batch, int) else None
        self.dynamic_batch = self.batch_size is None
        self.metadata = dict(meta)
        self.id2label = {int(k): v for k, v in json.loads(meta.get("nasvit.id2label", "{}")).items()}

    def run(self, pixel_values: np.ndarray | torch.Tensor) -> list[np.ndarray]:
        """The outputs, in `output_names` order, for checked float32 `pixel_values`."""
        check_exported_pixel_values(
            pixel_values, self.image_size, self.num_channels, self.batch_size, what=f"the ONNX model {self.path!r}"
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
            f"OnnxRunner({self.path!r}, input {self.input_name} ({batch}, {self.num_channels}, {self.image_size}, "
            f"{self.image_size}), outputs {self.output_names})"
        )
