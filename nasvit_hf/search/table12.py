"""Renamed: this module is now `nasvit_hf.search.b_vs_a` (a B-model re-timed against its A-model: the paper's Table 12 check). Importing it from here still works, with a
FutureWarning; it will be removed in a future release."""

import warnings

from .b_vs_a import *  # noqa: F403 - the old path re-exports the module's public names
from .b_vs_a import __all__  # noqa: F401

warnings.warn(
    "nasvit_hf.search.table12 is renamed nasvit_hf.search.b_vs_a; import from there.", FutureWarning, stacklevel=2
)
