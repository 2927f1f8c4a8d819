"""Model cards (README.md) of extracted NASViT subnets, from Jinja templates through `huggingface_hub.ModelCard`.

The templates live in `nasvit_hf/hub/templates/`: `subnet_card.md` is the whole card (rendered with
`ModelCard.from_template`, its Hub metadata from `ModelCardData`), `deployment_section.md` the section on ONNX /
`torch.export` deployment that the card embeds and that `model_card_section` renders on its own.

    card = build_model_card(SubnetCard(...))   # a huggingface_hub.ModelCard: card.data.license, card.save(path)
    text = render_model_card(SubnetCard(...))  # the same card as markdown
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import ModelCard, ModelCardData

from ..models.search_space_nasvit import ARCH_FIELDS, STAGE_NAMES, TRANSFORMER_STAGES, arch_per_stage

__all__ = [
    "CITATION",
    "TEMPLATES_DIR",
    "SubnetCard",
    "build_model_card",
    "latency_cell",
    "latency_spread",
    "model_card_section",
    "render_model_card",
    "runtime_words",
]

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
CARD_TAGS = ["nasvit", "vision", "image-classification", "neural-architecture-search", "nasvit_hf"]

CITATION = """@inproceedings{gong2022nasvit,
  title     = {{NASViT}: Neural Architecture Search for Efficient Vision Transformers with Gradient Conflict aware
               Supernet Training},
  author    = {Gong, Chengyue and Wang, Dilin and Li, Meng and Chen, Xinlei and Yan, Zhicheng and Tian, Yuandong and
               Liu, Qiang and Chandra, Vikas},
  booktitle = {International Conference on Learning Representations},
  year      = {2022}
}"""

_LICENSE_NOTES = {
    "cc-by-nc-4.0": "The weights derive from the reference NASViT checkpoint (facebookresearch/NASViT), released "
    "under CC-BY-NC 4.0: non-commercial use only, with attribution.",
    "unknown": "The license of the source supernet's weights was not stated (set `--license` when extracting).",
}


@dataclass
class SubnetCard:
    """Everything a subnet's model card states. `repo_id` None: the card names a placeholder folder instead;
    `supernet` is a name (no local paths: the card is pushed to the Hub)."""

    name: str
    repo_id: str | None
    arch: dict[str, Any]
    macs: int
    params: int
    latency: dict[str, Any]  # a LatencyMeasurement.to_dict()
    accuracy: float
    evaluation: str  # what the accuracy was measured on
    calibration: str | None  # how BN statistics were calibrated (None: not recalibrated, `--no_recalibration`)
    provenance: str
    supernet: str
    license: str
    num_labels: int
    budget: str | None = None
    paper_top1: float | None = None
    paper_macs_millions: float | None = None
    b_vs_a: dict[str, Any] | None = None  # B-models: {a_model, a_/b_latency_ms, a_/b_accuracy, measurement, ...}
    extra: dict[str, Any] = field(default_factory=dict)


def runtime_words(measurement: dict[str, Any] | None) -> str:
    """The runtime a latency was measured on, in words: "eager PyTorch 2.9.0" or "onnxruntime 1.23.0 (the graph
    `export_onnx` writes, fp32)" (a `LatencyMeasurement.to_dict()`, or a Table 12 measurement)."""
    measurement = measurement or {}
    runtime = measurement.get("runtime") or {}
    versions = runtime.get("versions") or {}
    clock = " (CPU time of the measuring process)" if runtime.get("clock") == "process" else ""
    if measurement.get("backend", runtime.get("backend", "eager")) == "onnxruntime":
        graph = runtime.get("quantize") or "fp32"
        version = f" {versions['onnxruntime']}" if versions.get("onnxruntime") else ""
        return f"onnxruntime{version} (the graph `export_onnx` writes, {graph}){clock}"
    version = f" {versions['torch']}" if versions.get("torch") else ""
    return f"eager PyTorch{version}{clock}"


def latency_spread(record: dict[str, Any], which: str) -> str | None:
    """ "4.31-4.60": the inter-quartile range of a B-vs-A record's `which` ("a" or "b") latency, None if not recorded."""
    spread = record.get(f"{which}_latency_quartiles_ms")
    return f"{spread[0]:.2f}-{spread[1]:.2f}" if spread else None


def latency_cell(record: dict[str, Any], which: str) -> str:
    """ "4.43 (4.31-4.60)": a B-vs-A record's `which` ("a" or "b") latency, median (inter-quartile range when
    recorded): the one format of the cards, the family index and examples/family.py."""
    spread = latency_spread(record, which)
    return f"{record[f'{which}_latency_ms']:.2f}" + (f" ({spread})" if spread else "")


def _b_vs_a_values(title: str, record: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the card's "Compared with its A-model" section shows (the search run's B-vs-A record, the paper's
    Table 12)."""
    if not record:
        return None
    a_name = record["a_model"].upper()
    measurement = record.get("measurement", {})
    if record.get("same_arch_as_a"):
        how = (
            f"{title} has {a_name}'s architecture ({record.get('note', 'no faster candidate was found')}); timed once"
        )
    else:
        how = (
            f"Both were timed in the same session, in {measurement.get('rounds', '?')} alternating rounds of "
            f"{measurement.get('repeats_per_round', '?')} runs (median of the round medians): {title} was "
            f"{record.get('speedup_pct', 0):.1f} % faster, faster in every round and by more than the noise (how far "
            f"one model's round medians spread: {record.get('noise_pct', 0):.1f} %)"
        )

    return {
        "a_name": a_name,
        "how": how,
        "runtime": runtime_words(measurement),
        "versions": ", ".join(
            f"{name} {version}" for name, version in ((measurement.get("runtime") or {}).get("versions") or {}).items()
        )
        or "not recorded",
        "batch_size": measurement.get("batch_size", 1),
        "device": measurement.get("device", "cpu"),
        "num_threads": measurement.get("num_threads", "?"),
        "machine": measurement.get("machine", "the searching machine"),
        "a_macs": f"{record['a_macs'] / 1e6:.2f}",
        "b_macs": f"{record['b_macs'] / 1e6:.2f}",
        "a_latency": f"{record['a_latency_ms']:.2f}",
        "b_latency": f"{record['b_latency_ms']:.2f}",
        "a_spread": latency_spread(record, "a") or "-",
        "b_spread": latency_spread(record, "b") or "-",
        "a_accuracy": f"{record['a_accuracy']:.2f}",
        "b_accuracy": f"{record['b_accuracy']:.2f}",
    }


def _arch_table(arch: dict[str, Any]) -> str:
    """Markdown table of an arch: one row per stage, one column per per-stage field of the arch schema
    (`ARCH_FIELDS`, headed by its description); fields with a default (the paper's MLP ratio and windows) only for
    archs that carry them. The input resolution is the table's first line."""
    columns = [
        arch_field
        for arch_field in ARCH_FIELDS
        if not arch_field.per_network and (arch_field.default is None or arch_field.name in arch)
    ]
    per_stage = arch_per_stage(arch)
    header = "| stage | kind | " + " | ".join(arch_field.description for arch_field in columns) + " |"
    rows = [f"Input resolution: {arch['resolution']} px.", "", header, "|---" * (len(columns) + 2) + "|"]
    for name in STAGE_NAMES:
        if name == STAGE_NAMES[0]:
            kind = "conv 3x3, stride 2"
        elif name == STAGE_NAMES[-1]:
            kind = "MBPool (expand ratio 6)"
        elif name in TRANSFORMER_STAGES:
            kind = f"MBConv + {per_stage[name]['depth'] - 1} transformer layers"
        else:
            kind = "MBConv"
        values = [str(per_stage[name][f.name]) if name in f.stages else "-" for f in columns]
        rows.append(f"| {name} | {kind} | " + " | ".join(values) + " |")
    return "\n".join(rows)


def _render(template: str, **values: Any) -> str:
    """Render one of the package's templates (the plain `jinja2.Template` settings `ModelCard.from_template` uses)."""
    return jinja2.Template((TEMPLATES_DIR / template).read_text(encoding="utf-8")).render(**values)


def model_card_section(
    model_id: str,
    image_size: int,
    onnx_file: str | None = None,
    program_file: str | None = None,
    heading: str = "## Deployment",
    quantization: dict | None = None,
) -> str:
    """The deployment section of a subnet's model card (`templates/deployment_section.md`) as markdown: how to
    export the subnet to ONNX and run it with onnxruntime. `.pt2` programs are mentioned, never loaded in a snippet:
    loading one unpickles it.

    Args:
        model_id: the Hub repo id (or local folder) users load the model from.
        image_size: the subnet's resolution (`config.arch["resolution"]`); exported graphs take exactly this size.
        onnx_file, program_file: paths *inside* the repo of an ONNX file / `.pt2` program shipped with it (e.g.
            `"onnx/model.onnx"`); with `onnx_file` the snippet downloads it instead of exporting it first.
        heading: the section heading (use "###" to nest it).
        quantization: an int8 export's `ExportReport.quantization` (`export_onnx(..., quantize="int8")`): the
            section says the ONNX file is int8 and gives its top-1 against the fp32 graph on the held-out images.
    """
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
        raise ValueError(f"image_size must be a positive int (the subnet's resolution), got {image_size!r}.")
    local = os.path.isdir(model_id)
    if onnx_file is None:
        onnx_path = '"model.onnx"'
    elif local:
        onnx_path = repr(os.path.join(model_id, onnx_file))
    else:
        onnx_path = f'hf_hub_download("{model_id}", "{onnx_file}")'
    shipped = " and ".join(f"`{name}`" for name in (onnx_file, program_file) if name)
    int8 = None
    if quantization is not None:
        if not isinstance(quantization, dict) or "method" not in quantization:
            raise ValueError("quantization must be the `quantization` dict of an int8 ExportReport.")
        int8 = dict(quantization)
        if "top1_int8" in int8:
            int8["summary"] = (
                f"top-1 {int8['top1_int8']:.2f} % against {int8['top1_fp32']:.2f} % for the fp32 graph "
                f"({int8['top1_change']:+.2f} points; the two agree on {int8['top1_agreement']:.1f} % of the images)"
            )
        else:
            int8["summary"] = f"the same class as the fp32 graph on {int8['top1_agreement']:.1f} % of the images"
    text = _render(
        "deployment_section.md",
        heading=heading,
        model_id=model_id,
        image_size=image_size,
        onnx_file=onnx_file,
        program_file=program_file,
        onnx_path=onnx_path,
        local=local,
        shipped=shipped,
        int8=int8,
    )
    return text.strip() + "\n"


def build_model_card(card: SubnetCard) -> ModelCard:
    """The model card of an extracted subnet as a `huggingface_hub.ModelCard`: Hub metadata (`ModelCardData`), what
    it is, summary, arch, BN calibration, provenance, usage, deployment, limits, license and citation."""
    card_data = ModelCardData(
        license=card.license if card.license != "unknown" else "other",
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=list(CARD_TAGS),
    )
    repo = card.repo_id or f"<path to the nasvit-{card.name} folder>"
    resolution = card.arch["resolution"]
    latency = dict(card.latency)
    for key in ("median_ms", "q25_ms", "q75_ms"):
        latency[key] = f"{latency[key]:.2f}"
    latency["runtime"] = runtime_words(card.latency)
    license_note = _LICENSE_NOTES.get(
        card.license, f"The weights are released under the license of the source supernet: `{card.license}`."
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATES_DIR / "subnet_card.md"),
        title=card.name.upper(),
        num_labels=card.num_labels,
        macs_millions=f"{card.macs / 1e6:.2f}",
        params_millions=f"{card.params / 1e6:.3f}",
        resolution=resolution,
        resize_to=int(resolution / 0.875),
        latency=latency,
        accuracy=f"{card.accuracy:.2f}",
        evaluation=card.evaluation,
        provenance=card.provenance,
        supernet=card.supernet,
        budget=card.budget,
        paper_top1=None if card.paper_top1 is None else f"{card.paper_top1:.1f}",
        paper_macs_millions=None if not card.paper_macs_millions else f"{card.paper_macs_millions:g}",
        arch_table=_arch_table(card.arch),
        arch_json=json.dumps(card.arch),
        calibration=card.calibration,
        b_vs_a=_b_vs_a_values(card.name.upper(), card.b_vs_a),
        repo=repo,
        deployment_section=model_card_section(repo, image_size=resolution).strip(),
        license_note=license_note,
        citation=CITATION,
    )


def render_model_card(card: SubnetCard) -> str:
    """The README.md of an extracted subnet (`build_model_card` as markdown)."""
    return str(build_model_card(card)).strip() + "\n"
