"""Model cards (README.md) for exported NASViT subnets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .deployment_section import model_card_section
from ..models.configuration_nasvit import BODY_STAGES, TRANSFORMER_STAGES

__all__ = ["CITATION", "SubnetCard", "render_model_card"]

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
}


@dataclass
class SubnetCard:
    """Everything a subnet's model card states."""

    name: str
    repo_id: str | None
    arch: dict[str, Any]
    macs: int
    params: int
    latency: dict[str, Any]  # a LatencyMeasurement.to_dict()
    accuracy: float
    evaluation: str  # what the accuracy was measured on
    calibration: str | None  # how BN statistics were calibrated (None: not recalibrated, the supernet's statistics)
    provenance: str
    supernet: str
    license: str
    num_labels: int
    budget: str | None = None
    paper_top1: float | None = None
    paper_macs_millions: float | None = None
    table12: dict[str, Any] | None = None  # B-models: {a_model, a_/b_latency_ms, a_/b_accuracy, measurement, ...}
    extra: dict[str, Any] = field(default_factory=dict)


def _table12_section(card: SubnetCard) -> str:
    record = card.table12
    if not record:
        return ""
    a_name, b_name = record["a_model"].upper(), card.name.upper()
    measurement = record.get("measurement", {})
    if record.get("same_arch_as_a"):
        how = (
            f"{b_name} has {a_name}'s architecture: {record.get('note', 'no faster candidate was found')}. Latency "
            f"timed once ({measurement.get('repeats', '?')} runs)"
        )
    else:
        how = (
            f"Both timed in the same session, in {measurement.get('rounds', '?')} alternating rounds of "
            f"{measurement.get('repeats_per_round', '?')} runs (median of the round medians)"
        )
    rows = [
        "| model | MACs (M) | measured latency (ms) | top-1 on the held-out split (%) |",
        "|---|---|---|---|",
        f"| NASViT-{a_name} | {record['a_macs'] / 1e6:.2f} | {record['a_latency_ms']:.2f} | {record['a_accuracy']:.2f} |",
        f"| NASViT-{b_name} | {record['b_macs'] / 1e6:.2f} | {record['b_latency_ms']:.2f} | {record['b_accuracy']:.2f} |",
    ]
    machine = measurement.get("machine", "the searching machine")
    return (
        f"\n## Compared with NASViT-{a_name} (the paper's Table 12)\n\n{b_name} was searched with the measured latency "
        f"of {a_name} as its budget. {how}, batch {measurement.get('batch_size', 1)} on "
        f"`{measurement.get('device', 'cpu')}` with {measurement.get('num_threads', '?')} thread(s), on {machine}; "
        "accuracies from the same search run:\n\n" + "\n".join(rows) + "\n"
    )


def _arch_table(arch: dict[str, Any]) -> str:
    rows = ["| stage | kind | width | depth | kernel | expand ratio |", "|---|---|---|---|---|---|"]
    rows.append(f"| stem | conv 3x3, stride 2 | {arch['width'][0]} | 1 | 3 | - |")
    for index, name in enumerate(BODY_STAGES):
        if name in TRANSFORMER_STAGES:
            kind = f"MBConv + {arch['depth'][index] - 1} transformer layers"
        else:
            kind = "MBConv"
        rows.append(
            f"| {name} | {kind} | {arch['width'][index + 1]} | {arch['depth'][index]} | "
            f"{arch['kernel_size'][index]} | {arch['expand_ratio'][index]} |"
        )
    rows.append(f"| head | MBPool | {arch['width'][-1]} | - | - | 6 |")
    return "\n".join(rows)


def render_model_card(card: SubnetCard) -> str:
    """The README.md of an exported subnet: Hub metadata, what it is, arch, efficiency, accuracy, BN calibration,
    provenance, license, usage and citation."""
    metadata = {
        "license": card.license if card.license != "unknown" else "other",
        "library_name": "transformers",
        "pipeline_tag": "image-classification",
        "tags": ["nasvit", "vision", "image-classification", "neural-architecture-search", "nasvit_hf"],
    }
    repo = card.repo_id or f"<path to the nasvit-{card.name} folder>"
    latency = card.latency
    paper = ""
    if card.paper_top1 is not None:
        paper = (
            f"\nThe paper reports {card.paper_top1:.1f} % ImageNet top-1 for NASViT-{card.name.upper()}"
            + (f" at {card.paper_macs_millions:g} M MACs" if card.paper_macs_millions else "")
            + ", for subnets of its ImageNet-trained supernet; the accuracy above is this export's own measurement.\n"
        )
    license_note = _LICENSE_NOTES.get(
        card.license,
        "The license of the source supernet's weights was not stated (set `--license` when exporting)."
        if card.license == "unknown"
        else f"The weights are released under the license of the source supernet: `{card.license}`.",
    )
    budget = f"\n- **Search budget**: {card.budget}" if card.budget else ""
    deployment = model_card_section(repo, image_size=card.arch["resolution"]).strip()
    table12 = _table12_section(card)
    if card.calibration is not None:
        calibrated = "with its BatchNorm statistics recalibrated for this architecture"
        calibration_section = f"""A supernet's BatchNorm running statistics are shared by all its subnets and are wrong for any one of them. This
subnet's statistics were reset and re-estimated as the cumulative average over {card.calibration} in train mode
without gradients (stochastic depth off), as the reference implementation does (64 batches there) before
evaluating or exporting a subnet. Nothing else was changed: the weights are the supernet's, unretrained."""
    else:
        calibrated = "**without** BatchNorm recalibration (exported with `--no_recalibration`)"
        calibration_section = """**Not recalibrated.** This subnet was exported with `--no_recalibration`: its BatchNorm layers keep the
supernet's shared running statistics, which are a mixture over all subnets and wrong for this one, so its accuracy
is usually far below what the same weights reach after recalibration. Recalibrate before use:
`nasvit_hf.calibration.calibrate_batchnorm(model, batches, num_batches=64)` on a few thousand training images."""
    text = f"""---
{yaml.safe_dump(metadata, sort_keys=False).strip()}
---

# NASViT-{card.name.upper()}

A NASViT subnet (Gong et al., ICLR 2022; reference code: https://github.com/facebookresearch/NASViT): a hybrid
MBConv + transformer image classifier cut out of a weight-sharing supernet by `nasvit_hf`'s `recipes/export.py`,
{calibrated}. It is an ordinary `transformers` checkpoint (safetensors) with
{card.num_labels} classes.

## Summary

| | |
|---|---|
| MACs (per image, paper convention) | {card.macs / 1e6:.2f} M |
| Parameters | {card.params / 1e6:.3f} M |
| Input resolution | {card.arch["resolution"]} x {card.arch["resolution"]} |
| Measured latency | {latency["median_ms"]:.2f} ms (median; IQR {latency["q25_ms"]:.2f}-{latency["q75_ms"]:.2f} ms) |
| Top-1 on the held-out split | {card.accuracy:.2f} % |

- **Latency**: batch {latency["batch_size"]} on `{latency["device"]}` with {latency["num_threads"]} thread(s), median of
  {latency["repeats"]} timed runs after {latency["warmup"]} warm-up runs, on the exporting machine (it depends on
  the hardware: measure yours).
- **Accuracy**: {card.evaluation}.
- **Provenance**: {card.provenance} (source supernet: `{card.supernet}`).{budget}
{paper}{table12}
## Architecture

{_arch_table(card.arch)}

As an arch dict (`NASViTConfig(arch=...)`, `supernet.extract_subnet(arch)`):

```json
{{"resolution": {card.arch["resolution"]}, "width": {card.arch["width"]}, "depth": {card.arch["depth"]}, "kernel_size": {card.arch["kernel_size"]}, "expand_ratio": {card.arch["expand_ratio"]}}}
```

## How the BatchNorm statistics were calibrated

{calibration_section}

## Usage

```python
from transformers import pipeline

classifier = pipeline("image-classification", model="{repo}", trust_remote_code=True)
classifier("image.png")
```

```python
import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification

processor = AutoImageProcessor.from_pretrained("{repo}", trust_remote_code=True)
model = AutoModelForImageClassification.from_pretrained("{repo}", trust_remote_code=True).eval()
with torch.no_grad():
    logits = model(**processor(images, return_tensors="pt")).logits
```

With `nasvit_hf` installed, `import nasvit_hf` registers the model type and `trust_remote_code` is not needed.
The image processor resizes the shortest edge to {int(card.arch["resolution"] / 0.875)} (bicubic), centre-crops
{card.arch["resolution"]}, and normalises with the ImageNet mean and standard deviation; grayscale images are
converted to RGB.

{deployment}

## Intended use and limits

Image classification over this checkpoint's {card.num_labels} labels, and a small, fast backbone to fine-tune. The
accuracy above was measured on a small held-out split, not on a standard benchmark test set; check it on your data.
Latency was measured on one machine only.

## License

{license_note}

## Citation

```bibtex
{CITATION}
```
"""
    return text
