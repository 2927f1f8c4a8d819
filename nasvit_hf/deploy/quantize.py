"""int8 ONNX models: onnxruntime's static quantization of an exported fp32 graph, and its top-1 against fp32.

`quantize_onnx` runs `onnxruntime.quantization` as its documentation recommends for CNNs on x86: the graph is
pre-processed (`quant_pre_process`: shape inference and onnxruntime's basic graph optimisations), then statically
quantized in QDQ format with per-channel int8 weights, uint8 activations and MinMax ranges calibrated on the images
given. Every operator onnxruntime can quantize is quantized (its default), except three kept in float because their
int8 kernels measured slower than float (docs/benchmarks.md): the attention core (scores, talking-heads maps,
softmax: the ops of `_GraphAttention` / `NASViTAttention` themselves), the stem convolution (3 input channels) and
average pools (the stride-2 shortcuts). Convolutions, linear layers, the swish's Sigmoid and Mul, residual Adds run in
int8.

`export_onnx(..., quantize="int8", calibration=QuantizationData(...))` does it all inside the export; the top-1 of
the fp32 and int8 graphs on held-out images (never calibrated on) is measured there and written into the file's
metadata (`nasvit.quantization`) and the export report. `load_quantization_data` builds the images from a dataset
(the supernet's held-out split, or images the user names).
"""

from __future__ import annotations

import ast
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..utils.extras import require_extra

__all__ = [
    "FLOAT_MODULES",
    "QUANTIZATIONS",
    "QuantizationData",
    "load_quantization_data",
    "onnx_top1",
    "quantize_onnx",
]

QUANTIZATIONS = ("int8",)
# Modules whose own operators (not their submodules') stay in float in an int8 graph: the attention core.
FLOAT_MODULES = ("_GraphAttention", "NASViTAttention")
# Operator types kept in float everywhere (onnxruntime's QLinearAveragePool measured slower than its float pool).
_FLOAT_OP_TYPES = ("AveragePool",)


@dataclass
class QuantizationData:
    """Preprocessed images for int8 calibration and for the top-1 check (disjoint sets), at the export's size.

    `calibration` (N, 3, h, w) sets the int8 ranges; `evaluation` (M, 3, h, w) with `labels` (M,) measures the top-1
    of the fp32 and the int8 graph (`labels` None: only their agreement); `description` says where they came from."""

    calibration: torch.Tensor
    evaluation: torch.Tensor
    labels: torch.Tensor | None
    description: str

    def __post_init__(self):
        for name in ("calibration", "evaluation"):
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor) or value.ndim != 4 or not value.is_floating_point():
                raise ValueError(f"QuantizationData.{name} must be a float (N, 3, height, width) tensor of images.")
        if len(self.calibration) == 0:
            raise ValueError("QuantizationData.calibration is empty: int8 ranges need calibration images.")
        if self.labels is not None and len(self.labels) != len(self.evaluation):
            raise ValueError(
                f"QuantizationData has {len(self.labels)} labels for {len(self.evaluation)} evaluation images."
            )


def _require_quantization():
    require_extra("export", "int8 quantization")
    from onnxruntime import quantization
    from onnxruntime.quantization.shape_inference import quant_pre_process

    return quantization, quant_pre_process


def _innermost_module(node) -> str:
    """The class name of the innermost module that emitted `node` (torch's exporter records the module stack)."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.class_hierarchy":
            try:
                stack = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return ""
            return stack[-2].rpartition(".")[2] if len(stack) >= 2 else ""
    return ""


def float_nodes(model) -> list[str]:
    """Names of the nodes an int8 graph keeps in float (see the module docstring)."""
    names = [node.name for node in model.graph.node if _innermost_module(node) in FLOAT_MODULES]
    names += [node.name for node in model.graph.node if node.op_type in _FLOAT_OP_TYPES]
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    if convs:
        names.append(convs[0].name)  # the stem: 3 input channels, slower in int8 (onnxruntime's NHWC int8 conv)
    return names


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over (N, 3, h, w) images in batches of `batch_size`."""

    def __init__(self, input_name: str, pixels: np.ndarray, batch_size: int):
        self.items = [
            {input_name: np.ascontiguousarray(pixels[start : start + batch_size])}
            for start in range(0, len(pixels) - batch_size + 1, batch_size)
        ]
        self.index = 0

    def get_next(self):
        if self.index >= len(self.items):
            return None
        self.index += 1
        return self.items[self.index - 1]

    def rewind(self):
        self.index = 0


def _fixed_batch(model) -> int | None:
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else None


def quantize_onnx(
    model_path: str | os.PathLike,
    output: str | os.PathLike,
    calibration: torch.Tensor | np.ndarray,
    *,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Write an int8 (QDQ, per-channel int8 weights, uint8 activations, MinMax ranges) version of the fp32 ONNX file
    `model_path` to `output`, calibrated on the preprocessed images `calibration` (N, 3, h, w), fed `batch_size` at
    a time (a fixed-batch graph gets its own batch size). The file's metadata is copied. Returns what was done."""
    quantization, quant_pre_process = _require_quantization()
    onnx = require_extra("export", "int8 quantization")[0]
    pixels = calibration.numpy() if isinstance(calibration, torch.Tensor) else np.asarray(calibration)
    pixels = pixels.astype(np.float32, copy=False)
    source = onnx.load(str(model_path))
    batch_size = _fixed_batch(source) or batch_size
    if len(pixels) < batch_size:
        raise ValueError(f"int8 calibration needs at least {batch_size} images (one batch), got {len(pixels)}.")
    with tempfile.TemporaryDirectory() as workdir:
        prepared = os.path.join(workdir, "prepared.onnx")
        quant_pre_process(str(model_path), prepared, skip_symbolic_shape=False)
        model = onnx.load(prepared)
        kept_float = float_nodes(model)
        reader = _Batches(model.graph.input[0].name, pixels, batch_size)
        quantization.quantize_static(
            prepared,
            str(output),
            reader,
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            nodes_to_exclude=kept_float,
            calibrate_method=quantization.CalibrationMethod.MinMax,
        )
    quantized = onnx.load(str(output))
    del quantized.metadata_props[:]
    for prop in source.metadata_props:
        quantized.metadata_props.add(key=prop.key, value=prop.value)
    quantized.producer_name, quantized.doc_string = source.producer_name, source.doc_string
    onnx.save(quantized, str(output))
    return {
        "method": "onnxruntime static quantization, QDQ, per-channel int8 weights, uint8 activations, MinMax ranges",
        "onnxruntime": _onnxruntime_version(),
        "calibration_images": len(reader.items) * batch_size,
        "float_nodes": len(kept_float),
    }


def _onnxruntime_version() -> str:
    return require_extra("export", "int8 quantization")[1].__version__


def onnx_top1(
    path: str | os.PathLike, pixels: torch.Tensor, labels: torch.Tensor | None, batch_size: int = 32
) -> tuple[float | None, np.ndarray]:
    """(top-1 in % or None without labels, predicted class per image) of an exported classifier on `pixels`."""
    from .onnx import OnnxRunner

    runner = OnnxRunner(path, num_threads=None)
    step = runner.batch_size or batch_size
    predictions = []
    for start in range(0, len(pixels) - (len(pixels) % step if runner.batch_size else 0), step):
        chunk = pixels[start : start + step]
        logits = runner(chunk)[runner.output_names[0]]
        predictions.append(np.argmax(logits, axis=-1))
    predicted = np.concatenate(predictions) if predictions else np.zeros(0, dtype=np.int64)
    if labels is None or not len(predicted):
        return None, predicted
    return float(100.0 * np.mean(predicted == labels[: len(predicted)].numpy())), predicted


def compare_top1(fp32_path: str, int8_path: str, data: QuantizationData) -> dict[str, Any]:
    """Top-1 of the fp32 and the int8 graph on `data.evaluation` (and how often they predict the same class)."""
    fp32_top1, fp32_predicted = onnx_top1(fp32_path, data.evaluation, data.labels)
    int8_top1, int8_predicted = onnx_top1(int8_path, data.evaluation, data.labels)
    result: dict[str, Any] = {
        "evaluation_images": int(len(fp32_predicted)),
        "evaluation": data.description,
        "top1_agreement": float(100.0 * np.mean(fp32_predicted == int8_predicted)) if len(fp32_predicted) else None,
    }
    if fp32_top1 is not None and int8_top1 is not None:
        result.update(top1_fp32=fp32_top1, top1_int8=int8_top1, top1_change=int8_top1 - fp32_top1)
    return result


def load_quantization_data(
    model,
    dataset: str,
    *,
    data_dir: str | None = None,
    split: str = "train",
    holdout: str | os.PathLike | None = None,
    calibration_size: int = 256,
    evaluation_size: int | None = None,
    image_size: tuple[int, int] | None = None,
    processor=None,
    seed: int = 0,
) -> QuantizationData:
    """Calibration and evaluation images for an int8 export of `model`, from a labelled dataset.

    `dataset` is what search and extraction read (`nasvit_hf.search.DataConfig`): "mnist_5k" / "digits" (bundled),
    "imagefolder" (`data_dir`: class subfolders of images, the images the user names), or a `datasets` name or local
    path. With `holdout` (a supernet folder or its `holdout.json`), the images are the supernet's held-out rows of
    `split` (never trained on); else all of `split`. A seeded permutation gives `calibration_size` images for the int8
    ranges and the rest (at most `evaluation_size`) for the top-1 check, so no image is both. Images are preprocessed
    by `processor` (default: the model's resolution's `NASViTImageProcessor`) at `image_size` (default: the model's
    resolution)."""
    from ..data.holdout import find_holdout
    from ..search.evaluation import DataConfig, load_evaluation_data

    if calibration_size < 1:
        raise ValueError(f"calibration_size must be >= 1, got {calibration_size}.")
    holdout_file = None
    if holdout is not None:
        holdout_file = find_holdout(holdout) if os.path.isdir(holdout) else holdout
        if holdout_file is None or not os.path.isfile(holdout_file):
            raise ValueError(
                f"no held-out split at {str(holdout)!r}: name a supernet folder trained with holdout_per_class (it "
                "holds holdout.json) or the holdout.json file itself."
            )
    config = DataConfig(
        dataset=dataset,
        data_dir=data_dir,
        calibration_split=split,
        evaluation_split=split,
        holdout=None if holdout_file is None else str(holdout_file),
        calibration_batches=1,
        batch_size=1,
        seed=seed,
    )
    data = load_evaluation_data(config, processor)
    images = data.evaluation
    height, width = image_size or (model.config.arch["resolution"],) * 2
    if height != width:
        raise ValueError(f"int8 calibration data is built for square classification inputs; got {height}x{width}.")
    if len(images) <= calibration_size:
        raise ValueError(
            f"{len(images)} images in {data.description}: calibration takes {calibration_size} and the top-1 check "
            "needs the rest; lower --calibration_size or name more images."
        )
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(images)))
    pixels, labels = images.pixel_values(height)[order], images.labels[order]
    label2id = getattr(model.config, "label2id", None) or {}
    if data.id2label and all(name in label2id for name in data.id2label.values()):  # class names -> the model's ids
        mapping = torch.tensor([int(label2id[data.id2label[i]]) for i in range(len(data.id2label))])
        labels = mapping[labels]
    evaluation = slice(calibration_size, None if evaluation_size is None else calibration_size + evaluation_size)
    where = "held-out rows" if holdout_file is not None else f"split {split!r}"
    return QuantizationData(
        calibration=pixels[:calibration_size],
        evaluation=pixels[evaluation],
        labels=labels[evaluation],
        description=f"{dataset if dataset != 'imagefolder' else 'imagefolder'} ({where}; {calibration_size} images "
        f"calibrate, the other {len(pixels[evaluation])} measure top-1; seed {seed})",
    )
