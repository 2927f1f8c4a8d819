"""One budget's searched subnet, as a search writes it into `named.json` (`{name: entry}`) and every reader reads it
back: `SearchedSubnet`, a frozen dataclass whose `to_dict` is the JSON entry and whose `from_dict` refuses anything
a search does not write (a missing or unknown key, a wrong type, a non-finite or negative number, an arch outside
the supernet's space), naming the key. `read_named` / `write_named` read and write the whole file. An entry written
before the B-vs-A record was renamed (`table12`, after the paper's table) reads as `b_vs_a`."""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field, fields
from typing import Any

from .results import SearchResults

__all__ = ["BUDGET_METRICS", "LEGACY_B_VS_A_KEY", "SearchedSubnet", "read_named", "with_b_vs_a_key", "write_named"]

BUDGET_METRICS = ("macs", "latency")
# The budget's own keys besides metric / value / unit (BudgetSpec.to_dict and what the search adds).
_BUDGET_NUMBERS = ("macs_millions", "macs_fraction", "latency_ms", "nominal_measured_ms", "near_budget_pct")
_BUDGET_STRINGS = ("name", "latency_of")
# The B-vs-A record's keys a model card and the family index read (b_vs_a.choose_b_model writes more).
_B_VS_A_NUMBERS = ("a_latency_ms", "b_latency_ms")
LEGACY_B_VS_A_KEY = "table12"  # the record's key in entries written before it was named for what it is


def with_b_vs_a_key(record: dict[str, Any]) -> dict[str, Any]:
    """`record` (a named.json entry, a family or summary member) with the B-vs-A record under `b_vs_a` when it was
    written under its earlier name, `table12`; a record holding both is a ValueError."""
    if LEGACY_B_VS_A_KEY not in record:
        return record
    if "b_vs_a" in record:
        raise ValueError(f"both b_vs_a and its old name {LEGACY_B_VS_A_KEY}")
    return {("b_vs_a" if key == LEGACY_B_VS_A_KEY else key): value for key, value in record.items()}


def _number(value: Any, key: str, minimum: float | None = None, maximum: float | None = None) -> float | int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{key} is {value!r}, not a finite number")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{key} is {value!r}, outside [{minimum}, {maximum}]")
    return value


def _of_type(value: Any, key: str, kind: type) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"{key} is {value!r}, not a {kind.__name__}")
    return value


@dataclass(frozen=True)
class SearchedSubnet:
    """A `named.json` entry: the subnet one budget's search picked, its budget, its measured and predicted cost and
    accuracy, how the evolution ran, and where it comes from (supernet, config, evaluation data)."""

    name: str
    arch: dict[str, Any]
    budget: dict[str, Any]  # metric, value, unit and the budget's own keys (BudgetSpec.to_dict)
    macs: int | float
    params: int | float
    predicted_accuracy: float
    accuracy: float  # top-1 (%) after BN recalibration on the search's evaluation data
    latency_ms: float  # measured (median) on the search's runtime
    latency_measurement: dict[str, Any]
    predicted_latency_ms: float
    evolution: dict[str, Any]
    provenance: str
    supernet: str
    supernet_fingerprint: str
    config: str
    evaluation: str
    calibration_batches: int
    family: str | None = None  # why a runner-up was taken (the family grows strictly in MACs)
    b_vs_a: dict[str, Any] | None = field(default=None)  # B-models: measured against their A-model

    @property
    def table12(self) -> dict[str, Any] | None:
        """Deprecated name of `b_vs_a`."""
        warnings.warn("SearchedSubnet.table12 is renamed b_vs_a; read b_vs_a.", FutureWarning, stacklevel=2)
        return self.b_vs_a

    def to_dict(self) -> dict[str, Any]:
        """The JSON entry (`family` and `b_vs_a` only when set), in the order a search has always written it."""
        entry = {f.name: getattr(self, f.name) for f in fields(self)}
        return {key: value for key, value in entry.items() if value is not None or key not in ("family", "b_vs_a")}

    @classmethod
    def from_dict(cls, entry: Any, name: str | None = None, model_config=None) -> SearchedSubnet:
        """Check and read an entry (`name`: its key in named.json, which its `name` must equal; `model_config`: the
        supernet's NASViTConfig, whose space the arch must fit). Raises ValueError naming the first wrong key."""
        if not isinstance(entry, dict):
            raise ValueError(f"an entry is a {type(entry).__name__}, not a mapping")
        entry = with_b_vs_a_key(entry)  # an entry written before the rename
        optional = {"family", "b_vs_a"}
        known = {f.name for f in fields(cls)}
        missing = sorted(known - optional - set(entry))
        unknown = sorted(set(entry) - known)
        if missing or unknown:
            raise ValueError(
                ", ".join(
                    ([f"missing {missing}"] if missing else []) + ([f"unknown keys {unknown}"] if unknown else [])
                )
            )
        return cls(**cls._checked_values(entry, name, model_config))

    @staticmethod
    def _checked_values(entry: dict[str, Any], name: str | None, model_config) -> dict[str, Any]:
        values = dict(entry)
        _of_type(entry["name"], "name", str)
        if name is not None and entry["name"] != name:
            raise ValueError(f"name is {entry['name']!r} under the key {name!r}")
        arch = _of_type(entry["arch"], "arch", dict)
        if model_config is not None:
            try:
                model_config.validate_arch(arch)  # checked; the entry keeps the arch as written
            except (ValueError, TypeError, KeyError) as error:
                raise ValueError(f"the arch does not fit the supernet's space: {error}") from None
        budget = _of_type(entry["budget"], "budget", dict)
        if budget.get("metric") not in BUDGET_METRICS:
            raise ValueError(f"budget.metric is {budget.get('metric')!r}, not one of {list(BUDGET_METRICS)}")
        _number(budget.get("value"), "budget.value", minimum=0)
        _of_type(budget.get("unit"), "budget.unit", str)
        for key in set(budget) - {"metric", "value", "unit"}:
            if key in _BUDGET_NUMBERS:
                _number(budget[key], f"budget.{key}", minimum=0)
            elif key in _BUDGET_STRINGS:
                _of_type(budget[key], f"budget.{key}", str)
            else:
                raise ValueError(f"budget.{key} is not a budget key")
        for key in ("macs", "params", "latency_ms", "predicted_latency_ms"):
            _number(entry[key], key, minimum=0)
        _number(entry["accuracy"], "accuracy", minimum=0, maximum=100)
        _number(entry["predicted_accuracy"], "predicted_accuracy")
        _number(_of_type(entry["calibration_batches"], "calibration_batches", int), "calibration_batches", 0)
        for key in ("latency_measurement", "evolution"):
            _of_type(entry[key], key, dict)
        _number(entry["latency_measurement"].get("median_ms"), "latency_measurement.median_ms", minimum=0)
        for key in ("provenance", "supernet", "supernet_fingerprint", "config", "evaluation"):
            _of_type(entry[key], key, str)
        if entry.get("family") is not None:
            _of_type(entry["family"], "family", str)
        record = entry.get("b_vs_a")
        if record is not None:
            _of_type(record, "b_vs_a", dict)
            _of_type(record.get("a_model"), "b_vs_a.a_model", str)
            _of_type(record.get("same_arch_as_a"), "b_vs_a.same_arch_as_a", bool)
            for key in _B_VS_A_NUMBERS:
                _number(record.get(key), f"b_vs_a.{key}", minimum=0)
        return values


def read_named(results: SearchResults, model_config=None) -> dict[str, SearchedSubnet]:
    """`named.json` of a results folder (empty when there is none), every entry checked (`SearchedSubnet.from_dict`);
    a damaged or hand-edited entry is a ValueError naming the file, the entry and the key."""
    raw = results.read_json("named.json", {}, kind=dict)
    named = {}
    for name, entry in raw.items():
        try:
            named[name] = SearchedSubnet.from_dict(entry, name=name, model_config=model_config)
        except ValueError as error:
            raise ValueError(
                f"{results.path('named.json')} is damaged ({name}: {error}); delete it to recompute that step, or "
                "search into a new output folder."
            ) from None
    return named


def write_named(results: SearchResults, named: dict[str, SearchedSubnet]) -> None:
    """Write `named.json` atomically: `{name: entry.to_dict()}` in the order of `named`."""
    results.write_json("named.json", {name: entry.to_dict() for name, entry in named.items()})
