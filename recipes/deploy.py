"""Export an extracted NASViT subnet (a save_pretrained folder or Hub id) to ONNX, and optionally to a torch.export
program (`.pt2`).

    python recipes/deploy.py --model path/to/subnet --output model.onnx --dynamic_batch
    python recipes/deploy.py --model path/to/subnet --output model.onnx --opset 18 --program model.pt2

The ONNX graph is checked with `onnx.checker` and run with onnxruntime, the program is loaded back and run, and both
are compared with PyTorch eager on random inputs (batch sizes 1 and 4 with --dynamic_batch) before they are written.
A supernet folder is refused: extract a subnet first (recipes/export.py). The graphs take inputs at the subnet's
resolution only (`config.arch["resolution"]`): preprocess with the folder's image processor.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from nasvit_hf.deploy import export_onnx, export_program, load_subnet_for_export

logger = logging.getLogger("export_onnx")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="An extracted subnet: a save_pretrained folder or Hub id.")
    parser.add_argument("--output", required=True, help="The ONNX file to write (e.g. model.onnx).")
    parser.add_argument("--opset", type=int, default=None, help="ai.onnx opset (>= 18; default: the exporter's).")
    parser.add_argument(
        "--dynamic_batch", action="store_true", help="Symbolic batch dimension (default: fixed to --batch_size)."
    )
    parser.add_argument("--batch_size", type=int, default=1, help="The fixed batch size without --dynamic_batch.")
    parser.add_argument(
        "--program", default=None, help="Also write the torch.export ExportedProgram here (e.g. model.pt2)."
    )
    parser.add_argument("--no_verify", action="store_true", help="Skip the comparison with PyTorch eager.")
    parser.add_argument("--atol", type=float, default=1e-4, help="Absolute tolerance of the comparison.")
    parser.add_argument("--report", default=None, help="Write the export reports as JSON here.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logger.setLevel(logging.INFO)
    options = {"dynamic_batch": args.dynamic_batch, "verify": not args.no_verify, "batch_size": args.batch_size}
    try:
        model = load_subnet_for_export(args.model)
        reports = [export_onnx(model, args.output, opset=args.opset, atol=args.atol, **options)]
        if args.program:
            reports.append(export_program(model, args.program, atol=args.atol, **options))
    except (ValueError, FileNotFoundError) as error:
        logger.error("%s", error)
        raise SystemExit(2) from error
    for report in reports:
        logger.info("wrote %s", report.summary())
    results = [report.to_dict() for report in reports]
    if args.report:
        with open(args.report, "w") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
