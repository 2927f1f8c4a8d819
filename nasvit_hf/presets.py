"""Named presets, with provenance: search spaces and the paper's named subnets (NASViT-A0…A5, B0…B2).

Everything here is data. `get_search_space(name)` and `get_named_arch(name)` look entries up with clear errors;
`NASViTConfig(search_space=get_search_space("tiny"))` builds a supernet of a preset space.

About the paper's named subnets: Table 6 gives the MACs ("FLOPs") and ImageNet top-1 of A0–A5; Appendix D's
Table 13 gives four architectures, labelled A1–A4. Counted with `count_macs` in the reference search space, those
four come to 208.9, 371.4, 599.3 and 774.9 M MACs, while Table 6 lists A1–A4 at 309, 421, 528 and 591 M: the labels
do not match the counts (Table 13's "A1" matches A0's 208 M; "A4" is nearest A5's 757 M; "A2" and "A3" fall between
Table 6's entries). The counts move by under 1.2 % whatever the unstated expand ratios below are. Table 13 also
leaves two things unstated, filled in here as recorded in each entry's `notes`: the MBConv-1 expand ratio is printed
as 3 but the reference space allows only 1 (no expansion), and the expand ratio of the MBConv block that opens each
transformer stage is not given (the smallest choice, 4, is used for mb4/mb5; mb6/mb7 allow only 6). Table 13's
transformer "e: 1" is the MLP ratio and its Transformer-4 "k: 1" the number of windows: the entries carry both
(`mlp_ratio` and `num_windows` all 1, the reference's fixed values), so they are archs of the "reference" and of the
"paper" space alike (`TABLE13_PAPER_SPACE_MACS_MILLIONS` has their counts there). A0, A5 and B0–B2 have no published architecture:
their entries carry only the paper's targets, and `recipes/extract.py` (the search issue) derives them by search.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from .models.search_space_nasvit import REFERENCE_SEARCH_SPACE

__all__ = [
    "NAMED_ARCHS",
    "SEARCH_SPACES",
    "NamedArch",
    "PAPER_SEARCH_SPACE",
    "PAPER_SPACE_MACS_MILLIONS",
    "SearchSpacePreset",
    "get_named_arch",
    "get_search_space",
]


@dataclass(frozen=True)
class SearchSpacePreset:
    name: str
    space: dict[str, Any]
    description: str
    provenance: str


@dataclass(frozen=True)
class NamedArch:
    """A named subnet. `arch` is None where the paper publishes no architecture (derive it by search)."""

    name: str
    arch: dict[str, Any] | None
    provenance: str
    paper_macs_millions: float | None = None
    paper_top1: float | None = None
    latency_budget_of: str | None = None  # B-models: the latency of this A-model is the budget
    notes: str = ""
    space: str = "reference"
    extra: dict[str, Any] = field(default_factory=dict)


TINY_SEARCH_SPACE: dict[str, Any] = {
    "resolutions": [32, 48, 64],
    "first_conv": {"c": [8, 16], "s": 2},
    "mb1": {"c": [8, 16], "d": [1, 2], "k": [3, 5], "t": [1], "s": 1, "se": False},
    "mb2": {"c": [16, 24], "d": [1, 2], "k": [3, 5], "t": [4, 6], "s": 2, "se": False},
    "mb3": {"c": [24, 32], "d": [1, 2], "k": [3], "t": [4, 6], "s": 2, "se": True},
    "mb4": {"c": [32, 40], "d": [2, 3], "k": [3], "t": [4, 6], "s": 2, "se": False},
    "mb5": {"c": [40, 48], "d": [2, 3], "k": [3], "t": [4, 6], "s": 2, "se": True},
    "mb6": {"c": [48, 56], "d": [2, 3], "k": [3], "t": [6], "s": 1, "se": True},
    "mb7": {"c": [56, 64], "d": [2, 3], "k": [3], "t": [6], "s": 2, "se": True},
    "last_conv": {"c": [128, 160]},
}

# The paper's Table 1 as printed. Table 1 leaves some things open; the readings used here (also in
# docs/search-spaces.md):
# - Transformer-4..7 have no "Kernel size" or "Expansion ratio" for the MBConv block that opens each stage (the
#   down-sampling layer, "3x3 depth-wise convolution with stride 2"): kernel 3, and the reference's expand ratios
#   ({4, 5, 6} in mb4/mb5, {6} in mb6/mb7). The table's transformer "Expansion ratio" {1, 2} is the MLP ratio.
# - SE: printed Y for MBConv-3 only ("-" for the transformer blocks), so no stage but mb3 has SE, while the
#   reference puts SE in the opening MBConv of mb5..mb7.
# - Depth counts the opening MBConv, as in the reference: depth d = 1 MBConv + (d - 1) transformer layers.
# - Number of windows k: {1, 4} in Transformer-4, printed 1 (declared as the only choice) in Transformer-5..7.
# - MBConv-1/2/3 kernel sizes {3, 5} as printed (the reference has only 3 in MBConv-3); Transformer-5 depths
#   {3..8} as printed (the reference goes to 9); MBPool {1792, 1984} with its fixed expansion 6.
PAPER_SEARCH_SPACE: dict[str, Any] = {
    "resolutions": [192, 224, 256, 288],
    "first_conv": {"c": [16, 24], "s": 2},
    "mb1": {"c": [16, 24], "d": [1, 2], "k": [3, 5], "t": [1], "s": 1, "se": False},
    "mb2": {"c": [24, 32], "d": [3, 4, 5], "k": [3, 5], "t": [4, 5, 6], "s": 2, "se": False},
    "mb3": {"c": [32, 40], "d": [3, 4, 5, 6], "k": [3, 5], "t": [4, 5, 6], "s": 2, "se": True},
    "mb4": {
        "c": [64, 72], "d": [3, 4, 5, 6], "k": [3], "t": [4, 5, 6], "s": 2, "se": False,
        "mlp_ratio": [1, 2], "num_windows": [1, 4],
    },
    "mb5": {
        "c": [112, 120, 128], "d": [3, 4, 5, 6, 7, 8], "k": [3], "t": [4, 5, 6], "s": 2, "se": False,
        "mlp_ratio": [1, 2], "num_windows": [1],
    },
    "mb6": {
        "c": [160, 168, 176, 184], "d": [3, 4, 5, 6, 7, 8], "k": [3], "t": [6], "s": 1, "se": False,
        "mlp_ratio": [1, 2], "num_windows": [1],
    },
    "mb7": {
        "c": [208, 216, 224], "d": [3, 4, 5, 6], "k": [3], "t": [6], "s": 2, "se": False,
        "mlp_ratio": [1, 2], "num_windows": [1],
    },
    "last_conv": {"c": [1792, 1984]},
}  # fmt: skip

# The tiny space with the paper's two transformer dimensions, shaped like Table 1 (MLP ratio {1, 2} everywhere,
# windows {1, 4} in mb4 only); at 48 px mb4's 3x3 token grid splits into padded 2x2 windows, so CPU tests cover
# the padded path too.
TINY_PAPER_SEARCH_SPACE: dict[str, Any] = copy.deepcopy(TINY_SEARCH_SPACE)
for _stage in ("mb4", "mb5", "mb6", "mb7"):
    TINY_PAPER_SEARCH_SPACE[_stage]["mlp_ratio"] = [1, 2]
    TINY_PAPER_SEARCH_SPACE[_stage]["num_windows"] = [1, 4] if _stage == "mb4" else [1]

# MACs (1000 classes, `count_macs`) of the paper space's smallest and largest subnets; the paper states 190 M and
# 1,881 M (the reference space's 189.8 M / 1881.7 M). A test keeps these honest; docs/search-spaces.md explains
# the differences.
PAPER_SPACE_MACS_MILLIONS = {"smallest": 175.1, "largest": 2055.7}

SEARCH_SPACES: dict[str, SearchSpacePreset] = {
    "reference": SearchSpacePreset(
        name="reference",
        space=REFERENCE_SEARCH_SPACE,
        description="The released NASViT supernet's space: 189.8 M to 1881.7 M MACs at 192-288 px.",
        provenance="facebookresearch/NASViT configs (shared/fixtures/official_search_space.json); "
        "REFERENCE_ARCHITECTURE.md. Differs from the paper's Table 1 (see that document).",
    ),
    "tiny": SearchSpacePreset(
        name="tiny",
        space=TINY_SEARCH_SPACE,
        description="Same structure as the reference, small widths/depths, 32-64 px: CPU tests and demos "
        "(about 1.6 M to 16 M MACs).",
        provenance="nasvit_hf: the widths, depths, kernels and expand ratios of the reference-parity fixture "
        "(shared/fixtures/official_tiny), with resolutions 32/48/64 for the 8x8 digits demo data.",
    ),
    "paper": SearchSpacePreset(
        name="paper",
        space=PAPER_SEARCH_SPACE,
        description="The paper's Table 1: MLP ratio {1, 2} in every transformer stage, k in {1, 4} windows in mb4, "
        "kernels {3, 5} in MBConv-1..3, SE in MBConv-3 only; 175.1 M to 2055.7 M MACs at 192-288 px.",
        provenance="NASViT paper (Gong et al., ICLR 2022), Section 3, Table 1, as printed; the readings of what the "
        "table leaves open (the opening MBConv of each transformer stage: kernel 3, the reference's expand ratios; "
        "depth counts that MBConv; SE only where printed Y) are in nasvit_hf/presets.py and docs/search-spaces.md. "
        "No released checkpoint uses it (the reference code trains the 'reference' space).",
    ),
    "tiny-paper": SearchSpacePreset(
        name="tiny-paper",
        space=TINY_PAPER_SEARCH_SPACE,
        description="The tiny space plus the paper's two transformer dimensions (MLP ratio {1, 2} in mb4..mb7, "
        "windows {1, 4} in mb4): CPU tests and demos of the paper space's code paths.",
        provenance="nasvit_hf: 'tiny' with mlp_ratio and num_windows shaped like Table 1.",
    ),
}

_TABLE13 = "NASViT paper, Appendix D, Table 13 (column {column})"
_TABLE13_NOTES = (
    "Table 13 prints MBConv-1 e: 3, outside the reference space (only 1: no expansion): 1 is used. The expand "
    "ratio of the MBConv block opening each transformer stage is not given: 4 (mb4, mb5) and 6 (mb6, mb7, the only "
    "choice) are used. The transformer stages' printed 'e: 1' is the MLP ratio (mlp_ratio 1) and Transformer-4's "
    "'k: 1' one window (num_windows 1; Transformer-5..7 have one by Table 1). Table 13's label does not match Table 6's MACs for it: see nasvit_hf.presets."
)


def _table13_arch(resolution: int, width: list[int], depth: list[int], mb2_expand: int, mb3_expand: int) -> dict:
    return {
        "resolution": resolution,
        "width": width,
        "depth": depth,
        "kernel_size": [3, 3, 3, 3, 3, 3, 3],
        "expand_ratio": [1, mb2_expand, mb3_expand, 4, 4, 6, 6],
        # Table 13 prints "e: 1" (the MLP ratio) for every transformer stage and "k: 1" for Transformer-4; the other
        # transformer stages have one window by Table 1. Both are the defaults of spaces without these fields.
        "mlp_ratio": [1, 1, 1, 1],
        "num_windows": [1, 1, 1, 1],
    }


_TABLE13_ARCHS = {
    "table13-a1": _table13_arch(192, [16, 16, 24, 32, 64, 112, 160, 216, 1792], [1, 3, 3, 4, 3, 3, 3], 4, 4),
    "table13-a2": _table13_arch(224, [16, 16, 24, 32, 64, 112, 160, 208, 1792], [1, 3, 3, 4, 3, 5, 4], 4, 6),
    "table13-a3": _table13_arch(256, [16, 16, 24, 32, 64, 112, 160, 216, 1984], [1, 3, 3, 4, 4, 7, 5], 5, 5),
    "table13-a4": _table13_arch(288, [16, 16, 24, 32, 64, 120, 160, 216, 1984], [1, 3, 3, 4, 3, 6, 6], 4, 6),
}

# MACs of the Table 13 archs as counted by nasvit_hf.count_macs (1000 classes); a test keeps these honest. With
# Table 13's printed MLP ratio 1 and k = 1 they are unchanged by those two fields. In the "paper" space they count a
# little lower, because that space's reading of Table 1 has no SE in the MBConv opening mb5..mb7.
TABLE13_MEASURED_MACS_MILLIONS = {"table13-a1": 208.9, "table13-a2": 371.4, "table13-a3": 599.3, "table13-a4": 774.9}
TABLE13_PAPER_SPACE_MACS_MILLIONS = {
    "table13-a1": 208.2,
    "table13-a2": 370.6,
    "table13-a3": 598.6,
    "table13-a4": 774.1,
}

_PAPER_A = {  # Table 6: MACs (M) and ImageNet top-1 (%)
    "a0": (208, 78.2),
    "a1": (309, 79.7),
    "a2": (421, 80.5),
    "a3": (528, 81.0),
    "a4": (591, 81.4),
    "a5": (757, 81.8),
}
_PAPER_B = {"b0": ("a0", 78.2), "b1": ("a1", 79.6), "b2": ("a2", 80.6)}  # Table 12

NAMED_ARCHS: dict[str, NamedArch] = {}
for _name, _arch in _TABLE13_ARCHS.items():
    _label = _name.split("-")[1]
    NAMED_ARCHS[_name] = NamedArch(
        name=_name,
        arch=_arch,
        provenance=_TABLE13.format(column="NASViT-" + _label.upper()),
        paper_macs_millions=float(_PAPER_A[_label][0]),
        paper_top1=_PAPER_A[_label][1],
        notes=_TABLE13_NOTES
        + f" Measured: {TABLE13_MEASURED_MACS_MILLIONS[_name]} M MACs vs Table 6's {_PAPER_A[_label][0]} M.",
    )
for _name, (_macs, _top1) in _PAPER_A.items():
    NAMED_ARCHS[_name] = NamedArch(
        name=_name,
        arch=None,
        provenance="NASViT paper, Table 6: MACs budget and ImageNet top-1 only; no architecture published that "
        "matches the budget. Derived by search under the MACs budget (recipes/extract.py).",
        paper_macs_millions=float(_macs),
        paper_top1=_top1,
    )
for _name, (_of, _top1) in _PAPER_B.items():
    NAMED_ARCHS[_name] = NamedArch(
        name=_name,
        arch=None,
        provenance="NASViT paper, Appendix C.2, Table 12: latency-tuned; no architecture published. Derived by "
        f"latency-constrained search with the measured latency of {_of.upper()} as the budget (recipes/extract.py).",
        paper_top1=_top1,
        latency_budget_of=_of,
    )


def _unknown(what: str, name: Any, known: list[str]) -> ValueError:
    import difflib

    close = difflib.get_close_matches(str(name).lower(), known, n=1) if isinstance(name, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"unknown {what} {name!r}{hint}; available: {known}.")


def get_search_space(name: str) -> dict[str, Any]:
    """A copy of the named search space (`"reference"`, `"paper"`, `"tiny"` or `"tiny-paper"`); a ValueError names
    the available ones for any other name."""
    if not isinstance(name, str) or name not in SEARCH_SPACES:
        raise _unknown("search space", name, sorted(SEARCH_SPACES))
    return copy.deepcopy(SEARCH_SPACES[name].space)


def get_named_arch(name: str) -> NamedArch:
    """The registry entry of a named subnet (case-insensitive: `"A1"`, `"a1"`, `"table13-a2"`, ...); a ValueError
    names the available ones for any other name."""
    key = name.lower() if isinstance(name, str) else None
    if key not in NAMED_ARCHS:
        raise _unknown("subnet name", name, sorted(NAMED_ARCHS))
    return NAMED_ARCHS[key]
