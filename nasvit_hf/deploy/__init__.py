"""Deployment of extracted NASViT subnets: ONNX (checked, run with onnxruntime) and torch.export programs.

    from nasvit_hf.deploy import export_onnx, export_program, OnnxRunner
    report = export_onnx("path/to/subnet", "model.onnx", dynamic_batch=True)  # verified against eager
    logits = OnnxRunner("model.onnx")(pixel_values)["logits"]

`export_onnx` traces `NASViTOnnxGraph` (the subnet laid out for onnxruntime, `graph.py`) where it applies, and with
`quantize="int8"` writes an int8 model (`quantize.py`: onnxruntime's static quantization, top-1 measured against fp32).
Supernets are refused with a message saying how to extract a subnet; exported graphs take inputs at the subnet's
resolution only. `recipes/deploy.py` wraps both exporters.
"""

from .common import (
    ExportOptions,
    ExportReport,
    NASViTExportWrapper,
    check_exported_pixel_values,
    load_subnet_for_export,
    modules_only,
    supernet_choices,
)
from .graph import NASViTOnnxGraph
from .onnx import GRAPHS, MIN_ONNX_OPSET, OnnxRunner, export_onnx
from .program import ProgramRunner, export_program
from .quantize import QUANTIZATIONS, QuantizationData, load_quantization_data, quantize_onnx

__all__ = [
    "GRAPHS",
    "MIN_ONNX_OPSET",
    "ExportOptions",
    "ExportReport",
    "NASViTExportWrapper",
    "NASViTOnnxGraph",
    "OnnxRunner",
    "ProgramRunner",
    "QUANTIZATIONS",
    "QuantizationData",
    "check_exported_pixel_values",
    "export_onnx",
    "export_program",
    "load_quantization_data",
    "load_subnet_for_export",
    "modules_only",
    "quantize_onnx",
    "supernet_choices",
]
