"""Export an extracted NASViT subnet as a `torch.export` `ExportedProgram` (a `.pt2` file).

The program is a standalone graph of ATen ops with the weights inside: load it with `torch.export.load(path)` and
call `.module()` without nasvit_hf or transformers installed, or compile it ahead of time with AOTInductor
(`torch._inductor.aoti_compile_and_package`). Like the ONNX export it takes `(batch, 3, r, r)` at the subnet's
resolution `r`, with a fixed or (with `dynamic_batch=True`) symbolic batch dimension.

Loading a `.pt2` file unpickles it (`torch.export.load` uses pickle), so a tampered file runs code when it is
loaded, before anything can be checked. `ProgramRunner` therefore loads only with `trust_program=True`: programs you
exported yourself or whose author you trust. For files from elsewhere (the Hub), use the ONNX export.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zipfile
from typing import Any

import torch

from ..models.modeling_nasvit import NASViTPreTrainedModel
from ..utils.io import atomic_file
from .common import ExportOptions, ExportReport, check_exported_pixel_values, prepare_export

__all__ = ["METADATA_FILE", "ProgramRunner", "export_program"]

logger = logging.getLogger(__name__)

# The name of the JSON metadata stored inside the .pt2 archive (torch.export.save's extra_files).
METADATA_FILE = "nasvit.json"


def export_program(
    model_or_path: NASViTPreTrainedModel | str | os.PathLike,
    output: str | os.PathLike,
    *,
    options: ExportOptions | None = None,
    **settings: Any,
) -> ExportReport:
    """`torch.export` an extracted subnet and save the `ExportedProgram` to `output` (`.pt2`) with `torch.export.save`.

    `options` / `**settings` and the checks as `export_onnx` (`ExportOptions`): the saved file is loaded back and its
    module compared with PyTorch eager (batch sizes 1 and 4 when `dynamic_batch`) before it is moved into place. The
    program returns a tuple of the model's output tensors (`(logits,)` for classification); names and preprocessing
    are in the archive's `nasvit.json` (read them with `ProgramRunner`).
    """
    options = ExportOptions.resolve(options, settings)
    with prepare_export(model_or_path, options) as prepared:
        start = time.perf_counter()
        with torch.no_grad():
            program = torch.export.export(
                prepared.wrapper, (prepared.example,), dynamic_shapes=prepared.dynamic_shapes
            )
        export_seconds = time.perf_counter() - start
        with atomic_file(output, ".pt2") as (final, temp):
            torch.export.save(program, temp, extra_files={METADATA_FILE: json.dumps(prepared.metadata())})
            diffs: dict[int, float] = {}
            if options.verify:
                runner = ProgramRunner(temp, trust_program=True)  # the file written just above
                diffs = prepared.verify(lambda inputs: [output.numpy() for output in runner.run(inputs)], "program")
        report = prepared.report("torch.export", final, export_seconds, diffs)
    logger.info(report.summary())
    return report


class ProgramRunner:
    """A loaded `.pt2` NASViT program that checks inputs before running them.

    >>> runner = ProgramRunner("model.pt2", trust_program=True)
    >>> logits = runner(pixel_values)["logits"]
    `runner.program` is the `ExportedProgram`, `runner.module` its callable module.

    Args:
        path: a `.pt2` file written by `export_program`.
        trust_program: must be True. Loading a `.pt2` file unpickles it (`torch.export.load`), which runs whatever
            code the file holds before anything can be checked: pass True only for programs you exported yourself
            or whose author you trust. Files from the Hub or other people: use the ONNX export (`OnnxRunner`).
    """

    def __init__(self, path: str | os.PathLike, *, trust_program: bool = False):
        self.path = os.fspath(path)
        if trust_program is not True:
            raise ValueError(
                f"loading {self.path!r} unpickles it (torch.export.load), which can run arbitrary code from the file. "
                "Pass trust_program=True only for a program you exported yourself or whose author you trust; for "
                "files from elsewhere use the ONNX export (OnnxRunner)."
            )
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"no exported program at {self.path!r}; export one with export_program().")
        if not zipfile.is_zipfile(self.path):  # torch.export.load would log a traceback, then fail deep inside
            raise ValueError(
                f"{self.path!r} is not an exported program (a .pt2 file is a zip archive): export one with "
                "export_program()."
            )
        extra_files = {METADATA_FILE: ""}
        self.program = torch.export.load(self.path, extra_files=extra_files)
        if not extra_files[METADATA_FILE]:
            raise ValueError(f"{self.path!r} has no {METADATA_FILE}: it was not written by export_program().")
        try:
            self._read_metadata(json.loads(extra_files[METADATA_FILE]))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(
                f"the {METADATA_FILE} of {self.path!r} is damaged ({type(error).__name__}: {error}): export the "
                "program again with export_program()."
            ) from None
        self.module = self.program.module()

    def _read_metadata(self, metadata: dict[str, str]) -> None:
        self.metadata = metadata
        if "nasvit.input_size" in self.metadata:
            height, width = (int(value) for value in json.loads(self.metadata["nasvit.input_size"]))
        else:  # exported before non-square inputs: one side
            height = width = int(self.metadata["nasvit.image_size"])
        if height < 1 or width < 1:
            raise ValueError(f"input size {height}x{width}")
        self.input_size = (height, width)
        self.image_size = height if height == width else self.input_size
        self.num_channels = int(self.metadata["nasvit.num_channels"])
        self.output_names: list[str] = json.loads(self.metadata["nasvit.output_names"])
        if not isinstance(self.output_names, list) or not all(isinstance(name, str) for name in self.output_names):
            raise ValueError(f"output names {self.output_names!r}")
        self.dynamic_batch: bool = json.loads(self.metadata["nasvit.dynamic_batch"])
        self.batch_size: int | None = json.loads(self.metadata["nasvit.batch_size"])
        self.id2label = {int(k): v for k, v in json.loads(self.metadata["nasvit.id2label"]).items()}

    def run(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The output tensors, in `output_names` order."""
        if not isinstance(pixel_values, torch.Tensor):
            pixel_values = torch.as_tensor(pixel_values)
        check_exported_pixel_values(
            pixel_values, self.input_size, self.num_channels, self.batch_size, what=f"the program {self.path!r}"
        )
        with torch.no_grad():
            return tuple(self.module(pixel_values.to(torch.float32)))

    def __call__(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.output_names, self.run(pixel_values)))

    def __repr__(self) -> str:
        batch = "batch" if self.dynamic_batch else self.batch_size
        return (
            f"ProgramRunner({self.path!r}, input pixel_values ({batch}, {self.num_channels}, {self.input_size[0]}, "
            f"{self.input_size[1]}), outputs {self.output_names})"
        )
