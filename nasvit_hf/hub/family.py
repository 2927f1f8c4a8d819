"""The family index: one card (README.md + family.json) that lists the extracted subnets of one supernet, links
them, and puts each B-model next to its A-model (the paper's Table 12); and pushing the family to the Hub (every
member's folder, then the index repo).

`recipes/extract.py` writes the index to `<output_dir>/<prefix>family/` after saving the subnets, and with `--push_to_hub`
pushes the members to `<hub_org>/<prefix><name>` and the index to `<hub_org>/<prefix>family`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

import yaml

from ..search.named import with_b_vs_a_key
from ..utils.io import OwnershipError, atomic_write_json, atomic_write_text, staging_folder
from .model_card import latency_cell, runtime_words
from .push import push_folder_to_hub, strip_local_paths

__all__ = [
    "FAMILY_FILE",
    "FAMILY_SUFFIX",
    "LEGACY_SUBNETS_SUMMARIES",
    "RESERVED_NAMES",
    "SUBNETS_SUMMARY",
    "check_family_target",
    "check_member_name",
    "family_folder",
    "push_family",
    "read_family_index",
    "read_subnets_summary",
    "render_family_card",
    "write_family_index",
    "write_subnets_summary",
]

logger = logging.getLogger(__name__)

FAMILY_SUFFIX = "family"
FAMILY_FILE = "family.json"  # the index's record; a <prefix>family folder without it is not the extraction's
SUBNETS_SUMMARY = "subnets.json"  # beside the saved subnets: one record per subnet saved into the folder
LEGACY_SUBNETS_SUMMARIES = ("exports.json",)  # its earlier name: still read (and left in place), never written
RESERVED_NAMES = (FAMILY_SUFFIX,)  # names no subnet may take: <prefix>family is the index's folder
_MEMBER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_PREFIX = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*|")  # a folder-name prefix: nothing that leaves --output_dir


def _member(item) -> dict[str, Any]:
    """A member's record (a dict, or a SavedSubnet); a record written before the B-vs-A record was renamed (`table12`)
    reads as `b_vs_a`."""
    return with_b_vs_a_key(item if isinstance(item, dict) else dict(item.__dict__))


def _sort_key(name: str) -> tuple[int, str]:
    order = {"a": 0, "b": 1}
    return (order.get(name[:1], 2) if len(name) == 2 and name[1:].isdigit() else 3, name)


def render_family_card(members: list, *, supernet: str, hub_org: str | None = None, prefix: str = "nasvit-") -> str:
    """The index card: a table of the members (MACs, parameters, measured latency, top-1 on the held-out split,
    link), the B-vs-A comparison, and what the numbers were measured on."""
    members = sorted((_member(m) for m in members), key=lambda m: _sort_key(m["name"]))
    if not members:
        raise ValueError("a family index needs at least one extracted subnet.")
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
    b_models = [m for m in members if m.get("b_vs_a")]
    comparison = ""
    if b_models:
        lines = [
            "| B-model | its A-model | A latency (ms) | B latency (ms) | A top-1 (%) | B top-1 (%) | same arch |",
            "|---|---|---|---|---|---|---|",
        ]
        for member in b_models:
            record = member["b_vs_a"]
            lines.append(
                f"| {member['name'].upper()} | {record['a_model'].upper()} | {latency_cell(record, 'a')} | "
                f"{latency_cell(record, 'b')} | {record['a_accuracy']:.2f} | {record['b_accuracy']:.2f} | "
                f"{'yes' if record.get('same_arch_as_a') else 'no'} |"
            )
        measurement = b_models[0]["b_vs_a"].get("measurement", {})
        machine = measurement.get("machine", "the searching machine")
        comparison = (
            "\n## B-models against their A-models (the paper's Table 12)\n\nEach B-model was searched with its "
            f"A-model's latency as the budget, on {runtime_words(measurement)}; each candidate was then timed against "
            "its A-model in the same session, alternating, and kept only when faster by more than the measurement "
            f"noise, on {machine}. Latency: median (inter-quartile range). Accuracies are from the same search run."
            "\n\n" + "\n".join(lines) + "\n"
        )
    provenance = sorted({strip_local_paths(m["provenance"]) for m in members if m.get("provenance")})
    return f"""---
{yaml.safe_dump(metadata, sort_keys=False).strip()}
---

# NASViT family of `{supernet}`

{len(members)} subnets of one weight-sharing NASViT supernet (Gong et al., ICLR 2022), each extracted by
`nasvit_hf`'s `recipes/extract.py` as a standalone `transformers` checkpoint with its own model card. Top-1 is
measured on the split held out of the supernet's training (see each card for the images and the BN calibration);
latency is batch 1 on the extracting machine.

{chr(10).join(rows)}
{comparison}
Provenance: {"; ".join(provenance) or "see each card"}.

```python
from transformers import pipeline

classifier = pipeline("image-classification", model="{(hub_org + "/") if hub_org else ""}{prefix}{members[0]["name"]}", trust_remote_code=True)
```
"""


def family_folder(output_dir: str | os.PathLike, prefix: str = "nasvit-") -> Path:
    """Where the family index of the subnets `<output_dir>/<prefix><name>` lives: `<output_dir>/<prefix>family`. A
    `prefix` that is not a folder-name prefix (a path, `../`) is a ValueError."""
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise ValueError(
            f"--prefix {prefix!r} must be a folder-name prefix (letters, digits, '.', '-', '_'; no path): the subnets "
            "go inside --output_dir."
        )
    return Path(output_dir) / f"{prefix}{FAMILY_SUFFIX}"


def check_member_name(name: str, prefix: str = "nasvit-") -> str:
    """`name` (lower-cased) if it can name an extracted subnet: a folder name that is not the family index's own
    (`family`, `RESERVED_NAMES`); a ValueError says why not."""
    cleaned = str(name).strip().lower()
    if not _MEMBER_NAME.match(cleaned):
        raise ValueError(
            f"subnet name {name!r} is not usable as a folder name: use letters, digits, '-' and '_' (at most 64, "
            "starting with a letter or digit)."
        )
    if cleaned in RESERVED_NAMES:
        raise ValueError(
            f"subnet name {name!r} is reserved: {prefix}{cleaned}/ holds the family index of the subnets. Choose "
            "another --name."
        )
    return cleaned


def read_family_index(output_dir: str | os.PathLike, prefix: str = "nasvit-") -> dict[str, Any] | None:
    """The checked `family.json` of the index in `output_dir`, or None when there is no index yet. A folder of that
    name that the extraction did not write (no family.json), or a family.json that is not an index, is an error: the
    extraction would otherwise replace it or drop its members."""
    folder = family_folder(output_dir, prefix)
    if not folder.exists() and not folder.is_symlink():
        return None
    path = folder / FAMILY_FILE
    if not folder.is_dir() or folder.is_symlink() or not path.is_file():
        raise OwnershipError(
            f"{folder} exists and is not a family index of this tool (no {FAMILY_FILE} inside): the extraction writes its "
            "index there. Move it away, or extract with another --output_dir or --prefix."
        )
    try:
        family = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a family index (unreadable JSON: {error}); move it away.") from None
    members = family.get("members") if isinstance(family, dict) else None
    fields = ("macs", "params", "latency_ms", "accuracy")
    if not isinstance(members, dict) or not all(
        isinstance(name, str)
        and isinstance(record, dict)
        and all(isinstance(record.get(key), (int, float)) and not isinstance(record.get(key), bool) for key in fields)
        for name, record in members.items()
    ):
        raise ValueError(
            f"{path} is not a family index of this tool (members must map names to their {', '.join(fields)}); "
            "move it away."
        )
    return family


def check_family_target(
    output_dir: str | os.PathLike, prefix: str = "nasvit-", supernet_id: str | None = None
) -> dict[str, Any] | None:
    """Before an extraction into `output_dir`: the existing family index (None: none yet), refused when it is not an
    index of this tool or belongs to another supernet (`supernet_id`: `nasvit_hf.search.supernet_fingerprint`)."""
    family = read_family_index(output_dir, prefix)
    recorded = (family or {}).get("supernet_fingerprint")
    if family is not None and supernet_id is not None and recorded is not None and recorded != supernet_id:
        raise ValueError(
            f"{family_folder(output_dir, prefix)} indexes the subnets of another supernet ({family.get('supernet')!r}, "
            f"fingerprint {recorded}): a family holds the subnets of one supernet. Extract into another --output_dir "
            "(or --prefix)."
        )
    read_subnets_summary(output_dir)
    return family


def write_family_index(
    members: list,
    output_dir: str | os.PathLike,
    *,
    supernet: str,
    hub_org: str | None = None,
    prefix: str = "nasvit-",
    supernet_id: str | None = None,
) -> Path:
    """Write `<output_dir>/<prefix>family/` (README.md, family.json) and return the folder.

    The index lists every subnet saved into the folder: the members of an earlier index whose folders are still there
    are kept (saving a name again replaces its entry), so a second extraction adds to the family. An index of
    another supernet, or a folder of that name the extraction did not write, is refused (`check_family_target`)."""
    from .subnets import is_saved_subnet

    supernet = strip_local_paths(supernet)  # the index is pushed: names, not local paths
    folder = family_folder(output_dir, prefix)
    earlier = check_family_target(output_dir, prefix, supernet_id) or {}
    records = {}
    for name, record in earlier.get("members", {}).items():
        if is_saved_subnet(Path(output_dir) / f"{prefix}{name}"):
            records[name] = _member({**record, "name": name})
        else:
            logger.warning("family index: %s%s/ is gone, dropping it from the index", prefix, name)
    records.update({m["name"]: m for m in (_member(m) for m in members)})
    family = {
        "supernet": supernet,
        "supernet_fingerprint": supernet_id or earlier.get("supernet_fingerprint"),
        "members": {
            name: {
                **{k: m[k] for k in ("macs", "params", "latency_ms", "accuracy", "arch") if k in m},
                "recalibrated": bool(m.get("recalibrated", True)),
                "provenance": strip_local_paths(m.get("provenance", "")),
                "repo_id": f"{hub_org}/{prefix}{name}" if hub_org else None,
                **({"b_vs_a": m["b_vs_a"]} if m.get("b_vs_a") else {}),
            }
            for name, m in records.items()
        },
    }
    card = render_family_card(
        [{**record, "name": name} for name, record in family["members"].items()],
        supernet=supernet,
        hub_org=hub_org,
        prefix=prefix,
    )
    with staging_folder(folder, marker=FAMILY_FILE) as staging:
        atomic_write_text(staging / "README.md", card)
        atomic_write_json(staging / FAMILY_FILE, family)
    return folder


def read_subnets_summary(output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of `<output_dir>/subnets.json` (one per saved subnet; `[]` when there is none), after those of
    `exports.json`, its earlier name, where an earlier version wrote one (a name in both: the newer record). A file of
    that name that is not such a summary is an `OwnershipError`: the next extraction would replace it."""
    records: dict[str, dict[str, Any]] = {}
    for name in (*LEGACY_SUBNETS_SUMMARIES, SUBNETS_SUMMARY):
        path = Path(output_dir) / name
        if not path.exists():
            continue
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            summary = None
        if not isinstance(summary, list) or not all(
            isinstance(e, dict) and isinstance(e.get("name"), str) for e in summary
        ):
            raise OwnershipError(
                f"{path} is not a summary of the subnets this tool saved (a JSON list of records with their names): "
                "the extraction would replace it. Move it away, or extract into another --output_dir."
            )
        records.update({entry["name"]: _member(entry) for entry in summary})
    return list(records.values())


def write_subnets_summary(saved: list, output_dir: str | os.PathLike) -> Path:
    """`<output_dir>/subnets.json`: one record per subnet saved into the folder (`SavedSubnet`s or their dicts),
    earlier ones kept (saving a name again replaces its record)."""
    records = {entry["name"]: entry for entry in read_subnets_summary(output_dir)}
    records.update({m["name"]: m for m in (_member(m) for m in saved)})
    path = Path(output_dir) / SUBNETS_SUMMARY
    atomic_write_json(path, list(records.values()))
    return path


def write_exports_summary(exported: list, output_dir: str | os.PathLike) -> Path:
    """Deprecated name of `write_subnets_summary` (which writes subnets.json, not exports.json)."""
    warnings.warn(
        "write_exports_summary is renamed write_subnets_summary (it writes subnets.json); call that.",
        FutureWarning,
        stacklevel=2,
    )
    return write_subnets_summary(exported, output_dir)


def __getattr__(name: str):
    if name == "EXPORTS_SUMMARY":  # the old name, with a FutureWarning
        warnings.warn("EXPORTS_SUMMARY is renamed SUBNETS_SUMMARY; import that.", FutureWarning, stacklevel=2)
        return SUBNETS_SUMMARY
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
        commit_message=f"Upload the family index of {len(urls)} NASViT subnets (nasvit_hf extract)",
    )
    logger.info("pushed %d subnets and the family index to %s", len(urls) - 1, hub_org)
    return urls
