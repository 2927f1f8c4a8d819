"""Saving named subnets as standalone Hub checkpoints (`save_subnet`; writing a graph is `nasvit_hf.deploy`'s
"export"). `export_subnet` / `ExportedSubnet`, the old names, still work with a FutureWarning.

A name resolves to an arch through the registry (`nasvit_hf.presets.NAMED_ARCHS`): entries with a published arch
(the paper's Table 13) are used as printed; A0-A5 / B0-B2 carry only the paper's targets, and their arch comes from a
search of the supernet at hand (`named.json` of a `SearchRun`), recorded with the provenance "searched on
<supernet> with <config>". The package presets are never mutated: a searched arch lives in the search results and in
the saved folder (config.json, README.md, nasvit_subnet.json).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..calibration import calibrate_batchnorm
from ..macs import count_macs, count_parameters
from ..presets import NAMED_ARCHS, get_named_arch
from ..search.evaluation import EvaluationData, top1_accuracy
from ..search.latency import measure_latency
from ..search.named import SearchedSubnet
from ..utils.io import OwnershipError, atomic_write_json, atomic_write_text, has_marker, staging_folder
from .family import check_member_name
from .model_card import SubnetCard, render_model_card
from .push import strip_local_paths

__all__ = [
    "LEGACY_SUBNET_MARKERS",
    "NamedSubnet",
    "SUBNET_MARKER",
    "SavedSubnet",
    "check_subnet_target",
    "is_saved_subnet",
    "named_subnet_from_arch",
    "resolve_named_archs",
    "save_subnet",
]

SUBNET_MARKER = "nasvit_subnet.json"  # written into every saved subnet's folder: only such folders are ever replaced
LEGACY_SUBNET_MARKERS = ("nasvit_export.json",)  # its earlier name: folders saved before are ours too

logger = logging.getLogger(__name__)


@dataclass
class NamedSubnet:
    name: str
    arch: dict[str, Any] | None  # None: to be searched
    provenance: str
    paper_top1: float | None = None
    paper_macs_millions: float | None = None
    budget: str | None = None
    b_vs_a: dict[str, Any] | None = None  # B-models: measured against their A-model in the same search run


@dataclass
class SavedSubnet:
    name: str
    path: str
    arch: dict[str, Any]
    macs: int
    params: int
    accuracy: float
    latency_ms: float
    provenance: str
    recalibrated: bool = True
    b_vs_a: dict[str, Any] | None = None

    @property
    def table12(self) -> dict[str, Any] | None:
        """Deprecated name of `b_vs_a`."""
        warnings.warn("SavedSubnet.table12 is renamed b_vs_a; read b_vs_a.", FutureWarning, stacklevel=2)
        return self.b_vs_a


def named_subnet_from_arch(name: str, arch: Any, config, source: str) -> NamedSubnet:
    """A custom-named subnet from an arch dict (e.g. the JSON of `--arch_file`), validated against the supernet's
    search space (`config`); a ValueError names what does not fit."""
    if not isinstance(arch, dict):
        raise ValueError(
            f"{source} must hold one arch as a JSON object with resolution, width, depth, kernel_size and "
            f"expand_ratio, got {type(arch).__name__}."
        )
    if "arch" in arch and isinstance(arch["arch"], dict):  # a named.json / nasvit_subnet.json entry
        arch = arch["arch"]
    name = check_member_name(name)
    try:
        checked = config.validate_arch(arch)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"the arch in {source} does not fit this supernet's search space: {error}") from None
    # The provenance goes into the card and the family index, which are pushed: the file's name, not its path.
    return NamedSubnet(name, checked, f"arch given in {Path(str(source)).name}")


def resolve_named_archs(
    names: list[str], config=None, searched: dict[str, SearchedSubnet] | None = None
) -> list[NamedSubnet]:
    """Registry lookup of `names` (unknown names are an error that lists the known ones). Archs published in the
    paper are checked against the supernet's space (`config`; None: names are only looked up); the others take
    their arch from `searched` (the entries of named.json, `SearchRun.run` / `read_named`) when given, else stay None
    (to be searched)."""
    if isinstance(names, str) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"names must be a list of subnet names (e.g. ['a0', 'a1']), got {names!r}.")
    unknown = [name for name in names if name.lower() not in NAMED_ARCHS]
    if unknown:
        raise ValueError(f"unknown subnet name(s) {unknown}; known names: {sorted(NAMED_ARCHS)}.")
    resolved = []
    for name in names:
        entry = get_named_arch(name)
        if entry.arch is not None:
            try:
                arch = config.validate_arch(entry.arch) if config is not None else dict(entry.arch)
            except ValueError as error:
                raise ValueError(
                    f"{entry.name} is an arch of the {entry.space!r} search space ({entry.provenance}) and does not fit "
                    f"this supernet's space: {error}"
                ) from None
            resolved.append(
                NamedSubnet(entry.name, arch, entry.provenance, entry.paper_top1, entry.paper_macs_millions)
            )
            continue
        found = (searched or {}).get(entry.name)
        arch = (config.validate_arch(found.arch) if config is not None else found.arch) if found else None
        provenance = found.provenance if found else ""
        budget = None
        b_vs_a = found.b_vs_a if found else None
        if found:
            spec = found.budget
            unit = "M MACs" if spec["metric"] == "macs" else "ms (predicted latency)"
            value = spec["value"] / 1e6 if spec["metric"] == "macs" else spec["value"]
            how = {k: v for k, v in spec.items() if k not in ("metric", "value", "unit", "name", "near_budget_pct")}
            how = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in how.items()}
            budget = f"{spec['metric']} <= {value:.4g} {unit} ({', '.join(f'{k}: {v}' for k, v in how.items())})"
        resolved.append(
            NamedSubnet(entry.name, arch, provenance, entry.paper_top1, entry.paper_macs_millions, budget, b_vs_a)
        )
    return resolved


def is_saved_subnet(folder: str | os.PathLike) -> bool:
    """Whether `folder` is a subnet folder this tool saved (it holds `SUBNET_MARKER`, or its earlier name)."""
    return Path(folder).is_dir() and has_marker(folder, SUBNET_MARKER, LEGACY_SUBNET_MARKERS)


def check_subnet_target(output_dir: str | os.PathLike, overwrite: bool) -> None:
    """Refuse, before any work, a subnet folder that exists (without `overwrite`) or that this tool did not save."""
    target = Path(output_dir)
    if not target.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{target} already exists: pass --overwrite to replace this saved subnet.")
    if not is_saved_subnet(target):
        raise OwnershipError(
            f"{target} exists and is not a subnet saved by this tool (no {SUBNET_MARKER} inside): refusing to replace "
            "it even with --overwrite. Choose another --output_dir or --prefix, or move it away yourself."
        )


@torch.no_grad()
def save_subnet(
    supernet,
    named: NamedSubnet,
    output_dir: str | os.PathLike,
    data: EvaluationData,
    *,
    supernet_name: str,
    license: str = "unknown",
    latency_kwargs: dict[str, Any] | None = None,
    repo_id: str | None = None,
    overwrite: bool = False,
    recalibrate: bool = True,
) -> SavedSubnet:
    """Extract `named.arch`, recalibrate its BN statistics on `data.calibration`, measure top-1 on
    `data.evaluation` and latency, and write a complete Hub folder at `output_dir` (safetensors weights, config with
    id2label, image processor, code for `trust_remote_code`, README.md model card, nasvit_subnet.json). An existing
    folder is replaced only with `overwrite` and only if this tool saved it (it holds `nasvit_subnet.json`, or
    `nasvit_export.json` from earlier versions); the folder is checked before any work and replaced only once the new
    one is complete.

    The folder is meant to be pushed: `supernet_name` and the descriptions of the data keep only the last component
    of any local path (`/home/me/runs/supernet` -> `supernet`).

    `recalibrate=False` keeps the supernet's shared BN statistics (no calibration images needed; `data.calibration`
    is unused) and says so in the card: accuracy is usually far lower."""
    if named.arch is None:
        raise ValueError(f"{named.name} has no arch yet: search the supernet first (recipes/search.py).")
    check_subnet_target(output_dir, overwrite)
    arch = named.arch
    resolution = arch["resolution"]
    subnet = supernet.extract_subnet(arch)
    if recalibrate:
        batches = (pixels for pixels, _ in data.calibration.batches(resolution))
        used = calibrate_batchnorm(subnet, batches, num_batches=data.calibration_batches)
    subnet.eval()
    accuracy = top1_accuracy(subnet, data.evaluation, resolution)
    latency = measure_latency(subnet, resolution, **(latency_kwargs or {}))
    default_labels = all(label == f"LABEL_{i}" for i, label in subnet.config.id2label.items())
    if data.id2label and default_labels and len(data.id2label) == subnet.config.num_labels:
        subnet.config.id2label = dict(data.id2label)
        subnet.config.label2id = {label: i for i, label in data.id2label.items()}
    macs = count_macs(subnet.config)
    params = count_parameters(subnet.config)
    if recalibrate:
        calibration = (
            f"{used} batches of {data.calibration.batch_size} training images ({data.description.split(' (')[0]}, "
            f"split used for calibration: {data.description.split('calibration: ')[-1].split(';')[0]}) through "
            f"{data.calibration_transform}"
        )
    else:
        calibration = None
    card = SubnetCard(
        name=named.name,
        repo_id=repo_id,
        arch=arch,
        macs=macs,
        params=params,
        latency=latency.to_dict(),
        accuracy=accuracy,
        evaluation=strip_local_paths(f"top-1 on {data.description}"),
        calibration=calibration and strip_local_paths(calibration),
        provenance=strip_local_paths(named.provenance),
        supernet=strip_local_paths(supernet_name),
        license=license,
        num_labels=subnet.config.num_labels,
        budget=named.budget and strip_local_paths(named.budget),
        paper_top1=named.paper_top1,
        paper_macs_millions=named.paper_macs_millions,
        b_vs_a=named.b_vs_a,
    )
    target = Path(output_dir)
    with staging_folder(
        target, marker=SUBNET_MARKER, overwrite=overwrite, legacy_markers=LEGACY_SUBNET_MARKERS
    ) as temporary:
        if data.processor is not None:  # the supernet's evaluation protocol, at this subnet's resolution
            data.processor.at_resolution(resolution).save_pretrained(temporary)
        subnet.save_pretrained(temporary)
        atomic_write_text(temporary / "README.md", render_model_card(card))
        atomic_write_json(temporary / SUBNET_MARKER, {**asdict(card), "name": named.name, "nasvit_hf_subnet": 1})
    logger.info("saved %s to %s: %.2f M MACs, top-1 %.2f %%", named.name, target, macs / 1e6, accuracy)
    return SavedSubnet(
        named.name,
        str(target),
        arch,
        macs,
        params,
        accuracy,
        latency.median_ms,
        named.provenance,
        recalibrate,
        named.b_vs_a,
    )


def export_subnet(*args, **kwargs) -> SavedSubnet:
    """Deprecated name of `save_subnet` ("export" is writing a graph: `nasvit_hf.deploy.export_onnx`)."""
    warnings.warn(
        "nasvit_hf.hub.export_subnet is renamed save_subnet (export is writing a graph: nasvit_hf.deploy); "
        "call save_subnet.",
        FutureWarning,
        stacklevel=2,
    )
    return save_subnet(*args, **kwargs)


def check_export_target(output_dir: str | os.PathLike, overwrite: bool) -> None:
    """Deprecated name of `check_subnet_target`."""
    warnings.warn(
        "nasvit_hf.hub.subnets.check_export_target is renamed check_subnet_target; call check_subnet_target.",
        FutureWarning,
        stacklevel=2,
    )
    check_subnet_target(output_dir, overwrite)


# Old names still importable, with a FutureWarning: {old: (new, value)}.
_RENAMED = {
    "ExportedSubnet": ("SavedSubnet", lambda: SavedSubnet),
    "EXPORT_MARKER": ("SUBNET_MARKER (folders holding the old marker are still recognised)", lambda: SUBNET_MARKER),
}


def __getattr__(name: str):
    if name in _RENAMED:
        new, value = _RENAMED[name]
        warnings.warn(f"{name} is renamed {new}; import that.", FutureWarning, stacklevel=2)
        return value()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
