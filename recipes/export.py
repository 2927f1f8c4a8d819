#!/usr/bin/env python
"""Renamed: this command is now `recipes/extract.py` (saving named subnets as Hub folders; "export" is writing a
graph, `recipes/deploy.py`). `python recipes/export.py ...` still runs it with the same arguments and exit status,
after a one-line FutureWarning; the old name will be removed in a future release."""

import importlib.util
import sys
import warnings
from pathlib import Path

from nasvit_hf.config_system import run_recipe

MESSAGE = "recipes/export.py is now recipes/extract.py; the old name will be removed"

_spec = importlib.util.spec_from_file_location("recipe_extract", Path(__file__).resolve().with_name("extract.py"))
_extract = importlib.util.module_from_spec(_spec)
sys.modules.setdefault(_spec.name, _extract)  # its options' --help text is read from its source
_spec.loader.exec_module(_extract)


def main(argv=None):
    """`recipes/extract.py`'s main, with a FutureWarning naming the new command."""
    warnings.warn(MESSAGE, FutureWarning, stacklevel=2)
    return _extract.main(argv)


def __getattr__(name: str):
    return getattr(_extract, name)  # the recipe's other names (ExtractOptions, parse_args, ...)


if __name__ == "__main__":
    print(f"FutureWarning: {MESSAGE}", file=sys.stderr)  # one line, not a warning's two
    sys.exit(run_recipe(_extract.main))
