"""Renamed: this module is now `nasvit_hf.search.search_run` (SearchRun, the search pipeline; "runner" is an onnxruntime / program session, `OnnxRunner`). Importing it from here still works, with a
FutureWarning; it will be removed in a future release."""

import warnings

from .search_run import *  # noqa: F403 - the old path re-exports the module's public names
from .search_run import __all__  # noqa: F401

warnings.warn(
    "nasvit_hf.search.runner is renamed nasvit_hf.search.search_run; import from there.", FutureWarning, stacklevel=2
)
