"""Export an extracted NASViT subnet (a save_pretrained folder or Hub id) to ONNX, and optionally to a torch.export
program (`.pt2`).

    python recipes/deploy.py --model path/to/subnet --output model.onnx --dynamic_batch
    python recipes/deploy.py --model path/to/subnet --output model.onnx --opset 18 --program model.pt2

The ONNX graph is checked with `onnx.checker` and run with onnxruntime, the program is loaded back and run, and both
are compared with PyTorch eager on random inputs (batch sizes 1 and 4 with --dynamic_batch) before they are written.
A supernet folder is refused: extract a subnet first (recipes/export.py). The graphs take inputs at the subnet's
resolution only (`config.arch["resolution"]`): preprocess with the folder's image processor. A segmentation model
exports at any size (`--image_size 512`, or `--image_size 512 1024` for height and width); its metadata then records a
segmentation processor resizing to it.
"""

# No `from __future__ import annotations`: the options dataclass must resolve its annotations even when the recipe
# is loaded as a file without a module in sys.modules.
import logging
import sys
from dataclasses import dataclass
from typing import ClassVar

from nasvit_hf.config_system import ConfigMixin, exit_on_user_error, parse_command_line, run_recipe
from nasvit_hf.deploy import export_onnx, export_program, load_subnet_for_export
from nasvit_hf.utils.extras import require_extra
from nasvit_hf.utils.io import atomic_write_json

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

    FIELD_RANGES: ClassVar[dict[str, str]] = {"opset": "[18, 1000]", "batch_size": "[1, 65536]", "atol": "[0, inf)"}


def parse_args(argv: list[str] | None = None) -> DeployOptions:
    with exit_on_user_error():
        return parse_command_line(argv, DeployOptions, None, __doc__)


def _image_size(values: list[int]) -> int | tuple[int, int]:
    if len(values) not in (1, 2):
        raise ValueError(f"--image_size takes one side or a height and a width, got {len(values)} values: {values}.")
    return values[0] if len(values) == 1 else (values[0], values[1])


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logger.setLevel(logging.INFO)
    with exit_on_user_error():
        require_extra("export", "recipes/deploy.py")  # before the model loads: a missing extra is the first thing said
        options = {
            "dynamic_batch": args.dynamic_batch,
            "verify": not args.no_verify,
            "batch_size": args.batch_size,
            "image_size": None if args.image_size is None else _image_size(args.image_size),
        }
        model = load_subnet_for_export(args.model)
        reports = [export_onnx(model, args.output, opset=args.opset, atol=args.atol, **options)]
        if args.program:
            reports.append(export_program(model, args.program, atol=args.atol, **options))
    for report in reports:
        logger.info("wrote %s", report.summary())
    results = [report.to_dict() for report in reports]
    if args.report:
        atomic_write_json(args.report, results)
    return results


if __name__ == "__main__":
    sys.exit(run_recipe(main))
