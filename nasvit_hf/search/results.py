"""The search results folder: every file is written atomically (temp file + `os.replace`) or appended line by line
(JSON Lines, flushed and fsynced; a torn last line from an interruption is dropped on load), so an interrupted search
resumes where it stopped and nothing already computed is lost.

Layout of `<output_dir>/`:
    run.json             supernet, config, seeds, fingerprints, status
    search_config.yaml   the config as used
    sampled_archs.json   the archs sampled to fit the predictor (fixed once written)
    candidates.jsonl     every evaluated candidate: arch, MACs, parameters, top-1 after BN recalibration
    latency.jsonl        measured latencies (fit / held-out archs of the latency model)
    predictor.json       predictor metrics (Kendall tau, Spearman rho, RMSE on the validation half)
    latency_model.json   latency model coefficients, held-out error and measurement noise
    named.json           per budget name: the searched arch, its budget, MACs, accuracy, latency, provenance
    pareto.json          Pareto fronts (accuracy vs MACs, accuracy vs latency) of the evaluated candidates
    pareto.png           the plot of both fronts
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..utils.io import atomic_write_text

__all__ = ["RESULT_FILES", "SearchResults", "atomic_write_text", "pareto_front"]

# What a search writes into its folder (besides run.json, which marks the folder as a search's).
RESULT_FILES = (
    "search_config.yaml",
    "sampled_archs.json",
    "candidates.jsonl",
    "latency.jsonl",
    "latency_repeat.jsonl",
    "predictor.json",
    "latency_model.json",
    "named.json",
    "pareto.json",
    "pareto.png",
)
_RECOVER = "delete it to recompute that step, or search into a new output folder."


def pareto_front(points: list[dict[str, Any]], cost: str, value: str) -> list[dict[str, Any]]:
    """The points no other point beats on both `cost` (lower is better) and `value` (higher is better), by cost."""
    usable = [p for p in points if p.get(cost) is not None and p.get(value) is not None]
    usable.sort(key=lambda p: (p[cost], -p[value]))
    front, best = [], float("-inf")
    for point in usable:
        if point[value] > best:
            front.append(point)
            best = point[value]
    return front


class SearchResults:
    """Reads and writes one results folder."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        return self.directory / name

    # JSON documents ------------------------------------------------------------------------------------------------
    def read_json(self, name: str, default: Any = None, kind: type | None = None) -> Any:
        """The JSON document `name` (`default` when absent); a damaged file, or one that is not a `kind` (dict,
        list) when given, is a ValueError naming it."""
        path = self.path(name)
        if not path.exists():
            return default
        try:
            with open(path, encoding="utf-8") as file:
                value = json.load(file)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is damaged (not valid JSON: {error}); {_RECOVER}") from None
        if kind is not None and not isinstance(value, kind):
            raise ValueError(
                f"{path} is damaged (it holds a {type(value).__name__}, not a {kind.__name__}); {_RECOVER}"
            )
        return value

    def write_json(self, name: str, value: Any) -> None:
        atomic_write_text(self.path(name), json.dumps(value, indent=2, sort_keys=False) + "\n")

    def check_record(
        self, name: str, record: Any, fields: dict[str, type | tuple[type, ...]], where: str = ""
    ) -> None:
        """Refuse a record of `name` that is not a mapping holding `fields` ({dotted key: type}; numbers.Real for a
        number) with those types: a ValueError naming the file and the key (a damaged or hand-edited file)."""
        problem = None
        if not isinstance(record, dict):
            problem = f"an entry is a {type(record).__name__}, not a mapping"
        else:
            for key, kind in fields.items():
                value: Any = record
                for part in key.split("."):
                    value = value.get(part) if isinstance(value, dict) else None
                if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                    problem = f"{where}{key} is {value!r}"
                    break
                if isinstance(value, float) and not math.isfinite(value):
                    problem = f"{where}{key} is {value!r}"
                    break
        if problem is not None:
            raise ValueError(f"{self.path(name)} is damaged ({problem}); {_RECOVER}")

    # JSON Lines ----------------------------------------------------------------------------------------------------
    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        path = self.path(name)
        if not path.exists():
            return []
        records, torn = [], False
        with open(path, encoding="utf-8") as file:
            lines = file.read().split("\n")
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if number < len(lines) - 1 and any(rest.strip() for rest in lines[number + 1 :]):
                    raise ValueError(f"{path} line {number + 1} is damaged (not valid JSON); {_RECOVER}") from None
                torn = True  # the last line was cut by an interruption: drop it
        if torn:
            atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in records))
        return records

    def append_jsonl(self, name: str, record: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.path(name), "a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")
            file.flush()
            os.fsync(file.fileno())
