"""The family index: one card (README.md + family.json) that lists the exported subnets of one supernet, links
them, and puts each B-model next to its A-model (the paper's Table 12); and pushing the family to the Hub (every
member's folder, then the index repo).

`recipes/export.py` writes the index to `<output_dir>/<prefix>family/` after exporting, and with `--push_to_hub`
pushes the members to `<hub_org>/<prefix><name>` and the index to `<hub_org>/<prefix>family`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from .model_card import runtime_words
from .push import push_folder_to_hub

__all__ = ["FAMILY_SUFFIX", "push_family", "render_family_card", "write_family_index"]

logger = logging.getLogger(__name__)

FAMILY_SUFFIX = "family"


def _member(item) -> dict[str, Any]:
    return item if isinstance(item, dict) else dict(item.__dict__)


def _sort_key(name: str) -> tuple[int, str]:
    order = {"a": 0, "b": 1}
    return (order.get(name[:1], 2) if len(name) == 2 and name[1:].isdigit() else 3, name)


def _latency_cell(record: dict[str, Any], which: str) -> str:
    """ "4.43 (4.31-4.60)": a Table 12 latency with its inter-quartile range when recorded."""
    cell = f"{record[f'{which}_latency_ms']:.2f}"
    spread = record.get(f"{which}_latency_quartiles_ms")
    return cell + (f" ({spread[0]:.2f}-{spread[1]:.2f})" if spread else "")


def render_family_card(members: list, *, supernet: str, hub_org: str | None = None, prefix: str = "nasvit-") -> str:
    """The index card: a table of the members (MACs, parameters, measured latency, top-1 on the held-out split,
    link), the B-vs-A comparison, and what the numbers were measured on."""
    members = sorted((_member(m) for m in members), key=lambda m: _sort_key(m["name"]))
    if not members:
        raise ValueError("a family index needs at least one exported subnet.")
    metadata = {
        "library_name": "transformers",
        "pipeline_tag": "image-classification",
        "tags": ["nasvit", "nasvit_hf", "model-family", "neural-architecture-search"],
    }

    def link(member: dict[str, Any]) -> str:
        folder = f"{prefix}{member['name']}"
        return f"[{hub_org}/{folder}](https://huggingface.co/{hub_org}/{folder})" if hub_org else f"`{folder}/`"

    rows = [
        "| name | MACs (M) | params (M) | measured latency (ms) | top-1 (%) | BN recalibrated | model |",
        "|---|---|---|---|---|---|---|",
    ]
    for member in members:
        rows.append(
            f"| {member['name'].upper()} | {member['macs'] / 1e6:.2f} | {member['params'] / 1e6:.3f} | "
            f"{member['latency_ms']:.2f} | {member['accuracy']:.2f} | "
            f"{'yes' if member.get('recalibrated', True) else '**no**'} | {link(member)} |"
        )
    table12 = [m for m in members if m.get("table12")]
    comparison = ""
    if table12:
        lines = [
            "| B-model | its A-model | A latency (ms) | B latency (ms) | A top-1 (%) | B top-1 (%) | same arch |",
            "|---|---|---|---|---|---|---|",
        ]
        for member in table12:
            record = member["table12"]
            lines.append(
                f"| {member['name'].upper()} | {record['a_model'].upper()} | {_latency_cell(record, 'a')} | "
                f"{_latency_cell(record, 'b')} | {record['a_accuracy']:.2f} | {record['b_accuracy']:.2f} | "
                f"{'yes' if record.get('same_arch_as_a') else 'no'} |"
            )
        measurement = table12[0]["table12"].get("measurement", {})
        machine = measurement.get("machine", "the searching machine")
        comparison = (
            "\n## B-models against their A-models (the paper's Table 12)\n\nEach B-model was searched with its "
            f"A-model's latency as the budget, on {runtime_words(measurement)}; each candidate was then timed against "
            "its A-model in the same session, alternating, and kept only when faster by more than the measurement "
            f"noise, on {machine}. Latency: median (inter-quartile range). Accuracies are from the same search run."
            "\n\n" + "\n".join(lines) + "\n"
        )
    provenance = sorted({m.get("provenance", "") for m in members if m.get("provenance")})
    return f"""---
{yaml.safe_dump(metadata, sort_keys=False).strip()}
---

# NASViT family of `{supernet}`

{len(members)} subnets of one weight-sharing NASViT supernet (Gong et al., ICLR 2022), each exported by
`nasvit_hf`'s `recipes/export.py` as a standalone `transformers` checkpoint with its own model card. Top-1 is
measured on the split held out of the supernet's training (see each card for the images and the BN calibration);
latency is batch 1 on the exporting machine.

{chr(10).join(rows)}
{comparison}
Provenance: {"; ".join(provenance) or "see each card"}.

```python
from transformers import pipeline

classifier = pipeline("image-classification", model="{(hub_org + "/") if hub_org else ""}{prefix}{members[0]["name"]}", trust_remote_code=True)
```
"""


def write_family_index(
    members: list, output_dir: str | os.PathLike, *, supernet: str, hub_org: str | None = None, prefix: str = "nasvit-"
) -> Path:
    """Write `<output_dir>/<prefix>family/` (README.md, family.json) and return the folder."""
    from .push import strip_local_paths

    supernet = strip_local_paths(supernet)  # the index is pushed: names, not local paths
    folder = Path(output_dir) / f"{prefix}{FAMILY_SUFFIX}"
    folder.mkdir(parents=True, exist_ok=True)
    records = [_member(m) for m in members]
    (folder / "README.md").write_text(
        render_family_card(records, supernet=supernet, hub_org=hub_org, prefix=prefix), encoding="utf-8"
    )
    family = {
        "supernet": supernet,
        "members": {
            m["name"]: {
                **{k: m[k] for k in ("macs", "params", "latency_ms", "accuracy", "arch") if k in m},
                "provenance": strip_local_paths(m.get("provenance", "")),
                "repo_id": f"{hub_org}/{prefix}{m['name']}" if hub_org else None,
                **({"table12": m["table12"]} if m.get("table12") else {}),
            }
            for m in records
        },
    }
    (folder / "family.json").write_text(json.dumps(family, indent=2) + "\n", encoding="utf-8")
    return folder


def push_family(
    members: list,
    index_folder: str | os.PathLike,
    hub_org: str,
    *,
    prefix: str = "nasvit-",
    token: str | None = None,
    private: bool | None = None,
    api=None,
) -> dict[str, str]:
    """Push every member's folder to `<hub_org>/<prefix><name>`, then the index folder to `<hub_org>/<prefix>family`,
    each through `push_folder_to_hub` (local-path check, visibility check). Returns {repo_id: commit URL}. `api`: an
    object with `create_repo`, `repo_info` and `upload_folder` (default `huggingface_hub.HfApi(token=token)`)."""
    index_folder = Path(index_folder)
    if not (index_folder / "README.md").is_file():
        raise ValueError(f"{str(index_folder)!r} is not a family index folder (no README.md).")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    urls = {}
    for member in (_member(m) for m in members):
        repo_id = f"{hub_org}/{prefix}{member['name']}"
        urls[repo_id] = push_folder_to_hub(member["path"], repo_id, token=token, private=private, api=api)
    repo_id = f"{hub_org}/{prefix}{FAMILY_SUFFIX}"
    urls[repo_id] = push_folder_to_hub(
        index_folder,
        repo_id,
        token=token,
        private=private,
        api=api,
        require_config=False,
        commit_message=f"Upload the family index of {len(urls)} NASViT subnets (nasvit_hf export)",
    )
    logger.info("pushed %d subnets and the family index to %s", len(urls) - 1, hub_org)
    return urls
