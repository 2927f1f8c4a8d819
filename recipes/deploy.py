"""Export an extracted NASViT subnet (a save_pretrained folder or Hub id) to ONNX, and optionally to a torch.export
program (`.pt2`).

    python recipes/deploy.py --model path/to/subnet --output model.onnx --dynamic_batch
    python recipes/deploy.py --model path/to/subnet --output model.onnx --opset 18 --program model.pt2

    python recipes/deploy.py --model path/to/subnet --output model-int8.onnx --quantize int8 \
        --calibration_dataset mnist_5k --holdout path/to/supernet

The ONNX graph is laid out for onnxruntime (nasvit_hf.deploy.graph; --graph modules for the modules as they are),
checked with `onnx.checker` and run with onnxruntime, the program is loaded back and run, and both are compared with
the plain modules in PyTorch eager on random inputs (batch sizes 1 and 4 with --dynamic_batch) before they are written.
With --quantize int8 the file is onnxruntime's static int8 quantization of that graph, calibrated on
--calibration_size images of --calibration_dataset (the supernet's held-out rows with --holdout, else its
--calibration_split; "imagefolder" with --calibration_data_dir for images you name, one subfolder per class); the
other images measure the top-1 of the fp32 and the int8 graph, recorded in the file's metadata and the report.
A supernet folder is refused: extract a subnet first (recipes/extract.py). The graphs take inputs at the subnet's
resolution only (`config.arch["resolution"]`): preprocess with the folder's image processor. A segmentation model
exports at any size (`--image_size 512`, or `--image_size 512 1024` for height and width); its metadata then records a
segmentation processor resizing to it.
"""

# No `from __future__ import annotations`: the options dataclass must resolve its annotations even when the recipe
# is loaded as a file without a module in sys.modules.
import logging
import os
import sys
from dataclasses import dataclass
from typing import ClassVar

from nasvit_hf.config_system import ConfigMixin, exit_on_user_error, parse_command_line, run_recipe
from nasvit_hf.deploy import (
    QUANTIZATIONS,
    ExportOptions,
    export_onnx,
    export_program,
    load_quantization_data,
    load_subnet_for_export,
)
from nasvit_hf.utils.extras import require_extra
from nasvit_hf.utils.io import atomic_write_json, atomic_write_text

logger = logging.getLogger("nasvit_hf.deploy")


@dataclass
class DeployOptions(ConfigMixin):
    model: str  # an extracted subnet: a save_pretrained folder or Hub id
    output: str  # the ONNX file to write (e.g. model.onnx)
    opset: int | None = None  # ai.onnx opset (>= 18; default: the exporter's)
    dynamic_batch: bool = False  # symbolic batch dimension (default: fixed to batch_size)
    batch_size: int = 1  # the fixed batch size without dynamic_batch
    program: str | None = None  # also write the torch.export ExportedProgram here (e.g. model.pt2)
    no_verify: bool = False  # skip the comparison with PyTorch eager
    atol: float = 1e-4  # absolute tolerance of the comparison
    # the input's side, or height and width (segmentation models only; default: the subnet's resolution)
    image_size: list[int] | None = None
    report: str | None = None  # write the export reports as JSON here
    graph: str = "onnxruntime"  # "onnxruntime": the graph laid out for onnxruntime; "modules": the modules as they are
    quantize: str | None = None  # "int8": write onnxruntime's static int8 quantization of the graph instead
    calibration_dataset: str | None = None  # int8 images: mnist_5k, digits, imagefolder, or a datasets name/path
    calibration_data_dir: str | None = None  # the folder of imagefolder (one subfolder of images per class)
    calibration_split: str = "train"  # the split whose images (or held-out rows, with holdout) are used
    holdout: str | None = None  # a supernet folder or its holdout.json: use the supernet's held-out rows
    calibration_size: int = 256  # images that set the int8 ranges; the others measure top-1 (fp32 and int8)
    model_card: str | None = None  # write the model card's deployment section (markdown) for the ONNX file here

    FIELD_RANGES: ClassVar[dict[str, str]] = {"opset": "[18, 1000]", "batch_size": "[1, 65536]", "atol": "[0, inf)"}


def parse_args(argv: list[str] | None = None) -> DeployOptions:
    with exit_on_user_error():
        return parse_command_line(argv, DeployOptions, None, __doc__)


def _image_size(values: list[int]) -> int | tuple[int, int]:
    if len(values) not in (1, 2):
        raise ValueError(f"--image_size takes one side or a height and a width, got {len(values)} values: {values}.")
    return values[0] if len(values) == 1 else (values[0], values[1])


def _calibration_data(args: DeployOptions, model, image_size):
    if args.calibration_dataset is None:
        raise ValueError(
            f"--quantize {args.quantize} needs calibration images: --calibration_dataset NAME (e.g. mnist_5k with "
            "--holdout path/to/supernet for the supernet's held-out split, or imagefolder with --calibration_data_dir "
            "DIR for images you name)."
        )
    processor = None
    if isinstance(args.model, str) and os.path.isfile(os.path.join(args.model, "preprocessor_config.json")):
        from nasvit_hf.models.image_processing_nasvit import NASViTImageProcessor

        processor = NASViTImageProcessor.from_pretrained(args.model)  # the folder's evaluation protocol
    return load_quantization_data(
        model,
        args.calibration_dataset,
        data_dir=args.calibration_data_dir,
        split=args.calibration_split,
        holdout=args.holdout,
        calibration_size=args.calibration_size,
        image_size=None if image_size is None else (image_size,) * 2 if isinstance(image_size, int) else image_size,
        processor=processor,
    )


def _write_model_card(args: DeployOptions, report) -> None:
    """The deployment section of the model card, for the ONNX file just written (int8: with its top-1 check)."""
    from nasvit_hf.hub import model_card_section

    image_size = report.image_size if isinstance(report.image_size, int) else report.image_size[0]
    local = os.path.isdir(args.model)
    onnx_file = os.path.relpath(report.path, args.model) if local else os.path.basename(report.path)
    section = model_card_section(args.model, image_size, onnx_file=onnx_file, quantization=report.quantization)
    atomic_write_text(args.model_card, section)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logger.setLevel(logging.INFO)
    with exit_on_user_error():
        require_extra("export", "recipes/deploy.py")  # before the model loads: a missing extra is the first thing said
        if args.quantize is not None and args.quantize not in QUANTIZATIONS:
            raise ValueError(f"--quantize must be one of {list(QUANTIZATIONS)}, got {args.quantize!r}.")
        if args.model_card and os.path.exists(args.model_card):
            raise ValueError(f"--model_card {args.model_card!r} exists; name a new file (nothing is overwritten).")
        options = ExportOptions(
            dynamic_batch=args.dynamic_batch,
            verify=not args.no_verify,
            batch_size=args.batch_size,
            atol=args.atol,
            image_size=None if args.image_size is None else _image_size(args.image_size),
        )
        model = load_subnet_for_export(args.model)
        calibration = None
        if args.quantize is not None:
            calibration = _calibration_data(args, model, options.image_size)
        onnx_report = export_onnx(
            model,
            args.output,
            args.opset,
            options=options,
            graph=args.graph,
            quantize=args.quantize,
            calibration=calibration,
        )
        reports = [onnx_report]
        if args.program:
            reports.append(export_program(model, args.program, options=options))
    if args.model_card:
        with exit_on_user_error():
            _write_model_card(args, reports[0])
    for report in reports:
        logger.info("wrote %s", report.summary())
    results = [report.to_dict() for report in reports]
    if args.report:
        atomic_write_json(args.report, results)
    return results


if __name__ == "__main__":
    sys.exit(run_recipe(main))
