"""Search configuration (`recipes/configs/search_<name>.yaml`) and budgets.

A budget entry names a subnet and gives exactly one of:
- `macs_millions`: an absolute MACs budget (the paper's A0-A5 for the reference space: 208, 309, 421, 528, 591, 757);
- `macs_fraction`: a fraction f of the space's MACs range, `smallest + f * (largest - smallest)` (MACs counted
  with `count_macs` at the supernet's number of labels), so a name keeps its relative place in any space: the tiny
  space's config uses the fractions at which the paper's A0-A5 sit in the reference space;
- `latency_ms`: an absolute latency budget on the measuring device;
- `latency_of`: the measured latency of another name's searched subnet (B0-B2 use A0-A2's, Appendix C.2).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..config_system import ConfigError, ConfigMixin, build_dataclass, check_field_ranges, closest_key
from .evaluation import DataConfig
from .evolution import EvolutionConfig
from .latency import min_fit_archs
from .runtimes import RuntimeSpec

__all__ = ["BudgetSpec", "LatencyConfig", "PredictorConfig", "SearchConfig", "paper_macs_fraction", "resolve_device"]

_BUDGET_KINDS = ("macs_millions", "macs_fraction", "latency_ms", "latency_of")


def _check_number(where: str, value: Any, *, positive: bool = False) -> float:
    """A finite real number (Python or numpy; not a bool or a string), positive when asked."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValueError(f"{where} must be a number, got {value!r} ({type(value).__name__}).")
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{where} must be a finite{' positive' if positive else ''} number, got {value!r}.")
    return value


def _latency_of_cycle(budgets: list[BudgetSpec]) -> list[str] | None:
    """The first cycle of `latency_of` references (a -> b -> a), or None."""
    refers = {budget.name: budget.latency_of for budget in budgets if budget.latency_of is not None}
    for start in refers:
        path, name = [start], refers[start]
        while name in refers:
            if name in path:
                return path[path.index(name) :] + [name]
            path.append(name)
            name = refers[name]
    return None


def paper_macs_fraction(macs_millions: float) -> float:
    """Where an absolute MACs budget of the reference space sits in its MACs range (0 = smallest, 1 = largest),
    counted with `count_macs` at 1000 classes (the range is 189.8 M to 1881.7 M)."""
    from ..macs import count_macs
    from ..models.configuration_nasvit import NASViTConfig

    config = NASViTConfig()
    low, high = count_macs(config, config.smallest_arch()), count_macs(config, config.largest_arch())
    return (macs_millions * 1e6 - low) / (high - low)


@dataclass
class BudgetSpec:
    name: str
    macs_millions: float | None = None
    macs_fraction: float | None = None
    latency_ms: float | None = None
    latency_of: str | None = None

    def __post_init__(self):
        self.name = str(self.name).lower()
        given = [kind for kind in _BUDGET_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(
                f"budget {self.name!r} must give exactly one of {list(_BUDGET_KINDS)}, got {given or 'none'}."
            )
        if self.macs_fraction is not None:
            self.macs_fraction = _check_number(f"budget {self.name!r}: macs_fraction", self.macs_fraction)
            if not 0.0 <= self.macs_fraction <= 1.0:
                raise ValueError(f"budget {self.name!r}: macs_fraction must be in [0, 1], got {self.macs_fraction}.")
        for kind in ("macs_millions", "latency_ms"):
            if getattr(self, kind) is not None:
                setattr(self, kind, _check_number(f"budget {self.name!r}: {kind}", getattr(self, kind), positive=True))
        if self.latency_of is not None:
            if not isinstance(self.latency_of, str) or not self.latency_of.strip():
                raise ValueError(
                    f"budget {self.name!r}: latency_of must name another budget, got {self.latency_of!r}."
                )
            self.latency_of = self.latency_of.lower()
            if self.latency_of == self.name:
                raise ValueError(f"budget {self.name!r} uses its own latency (latency_of: {self.latency_of!r}).")

    @property
    def metric(self) -> str:
        return "latency" if self.latency_ms is not None or self.latency_of is not None else "macs"

    def describe(self) -> str:
        if self.macs_millions is not None:
            return f"{self.macs_millions:g} M MACs"
        if self.macs_fraction is not None:
            return f"{self.macs_fraction:g} of the space's MACs range"
        if self.latency_ms is not None:
            return f"{self.latency_ms:g} ms"
        return f"the measured latency of {self.latency_of}"

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass
class PredictorConfig:
    num_subnets: int = 1024
    validation_fraction: float = 0.5
    n_estimators: int = 100
    include_extremes: bool = True  # the smallest and largest subnet are among the sampled ones

    CONFIG_SECTION: ClassVar[str] = "predictor"
    FIELD_RANGES: ClassVar[dict[str, str]] = {
        "num_subnets": "[4, 10000000]",  # at least two to fit the forest and two to validate it
        "validation_fraction": "(0, 1)",
        "n_estimators": "[1, 100000]",
    }

    def __post_init__(self):
        check_field_ranges(self)


@dataclass
class LatencyConfig:
    backend: str = "eager"  # the runtime latency is measured on: eager | onnxruntime (nasvit_hf.search.runtimes)
    quantize: str | None = None  # onnxruntime only: null (the fp32 graph) or int8 (export_onnx's int8 graph)
    # wall: elapsed time; process: this process's CPU time, what an idle core would take (shared machines; 1 thread)
    clock: str = "wall"
    device: str = "cpu"
    batch_size: int = 1
    warmup: int = 10
    repeats: int = 30
    num_threads: int | None = 1
    num_archs: int = 64  # measured archs for the latency model
    holdout_fraction: float = 0.25  # of them, held out to report the model's error
    b_vs_a_rounds: int = 5  # B vs A: interleaved timing rounds (nasvit_hf.search.b_vs_a.compare_latency)
    b_vs_a_candidates: int = 8  # B-candidates timed against A before falling back to A's arch

    CONFIG_SECTION: ClassVar[str] = "latency"
    FIELD_RANGES: ClassVar[dict[str, str]] = {
        "batch_size": "[1, 65536]",
        "warmup": "[0, 1000000]",
        "repeats": "[1, 1000000]",
        "num_threads": "[1, 1024]",
        "num_archs": "[1, 1000000]",
        "holdout_fraction": "(0, 1)",
        "b_vs_a_rounds": "[1, 100000]",
        "b_vs_a_candidates": "[1, 100000]",
    }

    def __post_init__(self):
        check_field_ranges(self)
        self.runtime_spec()  # backend, quantize, clock, threads and device checked together
        needed = min_fit_archs()
        if self.num_fit_archs < needed:
            enough = next(n for n in range(needed, 100 * needed) if n - self._holdout(n) >= needed)
            raise ValueError(
                f"latency.num_archs={self.num_archs} leaves {self.num_fit_archs} archs to fit the latency model after "
                f"holding out {self.num_holdout_archs}; it needs at least {needed} (two per fitted parameter). Set "
                f"latency.num_archs to at least {enough}."
            )

    def _holdout(self, num_archs: int) -> int:
        return max(1, int(round(num_archs * self.holdout_fraction)))

    @property
    def num_holdout_archs(self) -> int:
        """Measured archs held out to report the latency model's error (the first ones sampled)."""
        return self._holdout(self.num_archs)

    @property
    def num_fit_archs(self) -> int:
        return self.num_archs - self.num_holdout_archs

    def runtime_spec(self) -> RuntimeSpec:
        """The runtime latencies are measured on (`nasvit_hf.search.runtimes`)."""
        return RuntimeSpec(self.backend, self.device, self.num_threads, self.batch_size, self.quantize, self.clock)

    def measure_kwargs(self) -> dict[str, Any]:
        """`measure_latency`'s arguments: the runtime (`runtime_spec`, whose fields are those arguments' names) and
        the protocol (warm-up and repeats)."""
        return {**asdict(self.runtime_spec()), "warmup": self.warmup, "repeats": self.repeats}


@dataclass
class SearchConfig(ConfigMixin):
    seed: int = 0
    device: str = "auto"  # where candidates are evaluated ("auto": cuda if present, else mps, else cpu)
    num_threads: int | None = None  # torch intra-op threads for evaluation (None: torch's default)
    data: DataConfig = field(default_factory=DataConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    budgets: list[BudgetSpec] = field(default_factory=list)  # [{name, one of macs_millions | macs_fraction |
    # latency_ms | latency_of}] (see the module docstring)

    FIELD_RANGES: ClassVar[dict[str, str]] = {"seed": "[0, 4294967295]", "num_threads": "[1, 1024]"}

    def __post_init__(self):
        check_field_ranges(self)
        names = [budget.name for budget in self.budgets]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"budgets name {duplicates} more than once.")
        for budget in self.budgets:
            if budget.latency_of is not None and budget.latency_of not in names:
                raise ValueError(
                    f"budget {budget.name!r} uses the latency of {budget.latency_of!r}, which has no budget here."
                )
        cycle = _latency_of_cycle(self.budgets)
        if cycle:
            raise ValueError(
                f"budgets refer to each other's latency in a cycle ({' -> '.join(cycle)}); one of them needs its own "
                "budget (macs_millions, macs_fraction or latency_ms)."
            )

    # What NASVIT_STEP_SCALE scales (nasvit_hf.config_system), down to what still fits a predictor and a latency model.
    STEP_KEYS: ClassVar[dict[str, float]] = {
        "calibration.num_batches": 1,
        "predictor.num_subnets": 8,
        "evolution.generations": 2,
        "latency.warmup": 1,
        "latency.repeats": 3,
        "latency.num_archs": 29,  # 22 left to fit the latency model after the default quarter is held out
        "latency.b_vs_a_rounds": 1,
        "latency.b_vs_a_candidates": 1,
    }
    # Keys renamed after release 0.1.0 (named after the paper's Table 12, not what they do): still read, with a
    # FutureWarning, from config files, the command line and saved search_config.yaml files.
    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "latency.table12_rounds": "latency.b_vs_a_rounds",
        "latency.table12_candidates": "latency.b_vs_a_candidates",
    }

    @classmethod
    def accepted_keys(cls) -> list[str]:
        return [*super().accepted_keys(), "calibration"]

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "search config") -> SearchConfig:
        """From a YAML mapping: `calibration: {num_batches: N}` is `data.calibration_batches`, and `data.seed`
        defaults to `seed`. Keys and types are checked by the config system (closest-key hints)."""
        raw = copy.deepcopy(raw or {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{source} must be a mapping of sections, got {type(raw).__name__}.")
        cls.check_keys(raw, source)
        raw = cls.rename_keys(raw, source)
        seed = raw.get("seed", 0)
        data = raw.get("data") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: [data] must be a mapping of keys, got {data!r}.")
        data = dict(data)
        data.setdefault("seed", seed)
        calibration = raw.pop("calibration", None) or {}
        if not isinstance(calibration, dict):
            raise ConfigError(f"{source}: [calibration] must be a mapping, got {calibration!r}.")
        calibration = dict(calibration)
        if "num_batches" in calibration:
            num_batches = calibration.pop("num_batches")
            if data.get("calibration_batches", num_batches) != num_batches:
                raise ConfigError(
                    f"{source} sets calibration.num_batches ({num_batches!r}) and data.calibration_batches "
                    f"({data['calibration_batches']!r}), the same setting; keep one (on the command line: "
                    "--calibration.num_batches N)."
                )
            data["calibration_batches"] = num_batches
        if calibration:
            raise ConfigError(
                f"{source} [calibration] has unknown keys {sorted(calibration)}; known: ['num_batches']."
            )
        raw["data"] = data
        if raw.get("budgets") is not None and not isinstance(raw["budgets"], list):
            raise ConfigError(f"{source} [budgets] must be a list of {{name: ..., <one budget kind>: ...}} entries.")
        raw["budgets"] = raw.get("budgets") or []
        return build_dataclass(cls, raw, source)

    def to_dict(self) -> dict[str, Any]:
        """Every field (sections as dicts); a budget lists only the keys it sets (`BudgetSpec.to_dict`)."""
        return {**super().to_dict(), "budgets": [budget.to_dict() for budget in self.budgets]}

    def fingerprint(self, section: str | None = None) -> str:
        """A hash of the config (or of one section): resuming checks it so results never mix configs."""
        values = self.to_dict()
        for key in ("calibration_transform", "training_augmentation"):  # added later: unset, old searches resume
            if values["data"].get(key) is None:
                values["data"].pop(key, None)
        for old, new in self.RENAMED_KEYS.items():  # hashed under the old names: searches from before resume
            (section_name, old_leaf), new_leaf = old.split("."), new.split(".")[1]
            values[section_name] = {old_leaf if k == new_leaf else k: v for k, v in values[section_name].items()}
        value = values if section is None else values[section]
        return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]

    def with_available_devices(self) -> SearchConfig:
        """The config with `device` and `latency.device` checked against this machine (`resolve_device`: "auto"
        becomes what exists; an absent device is a ConfigError naming the override)."""
        self.device = resolve_device(self.device, "device")
        if self.latency.backend == "onnxruntime" and self.latency.device in (None, "", "auto"):
            self.latency.device = "cpu"  # onnxruntime is timed on its CPU execution provider
        self.latency.device = resolve_device(self.latency.device, "latency.device")
        return self

    def with_evaluation_data(self, supernet_dir: str | Path, overrides: dict[str, Any] | None = None) -> SearchConfig:
        """The config with `data` resolved for this supernet (`resolve_evaluation_data`): its held-out split when it
        was trained with `holdout_per_class`, else the configured data, refused if it is the supernet's training
        split. `overrides`: the command line's keys; `data.*` ones count as named explicitly (a `data.dataset`
        without `data.data_dir` drops the config file's folder, which belongs to the config's dataset)."""
        from .evaluation import resolve_evaluation_data

        explicit = {key.split(".", 1)[1] for key in overrides or {} if key.startswith("data.")}
        if "dataset" in explicit and "data_dir" not in explicit:
            self.data.data_dir = None
        self.data = resolve_evaluation_data(self.data, supernet_dir, explicit)
        return self

    def budget(self, name: str) -> BudgetSpec:
        for budget in self.budgets:
            if budget.name == name.lower():
                return budget
        names = [b.name for b in self.budgets]
        close = closest_key(str(name).lower(), names)
        hint = f" (did you mean {close!r}?)" if close else ""
        raise ConfigError(
            f"no budget named {name!r} in this search config{hint}; it has {names}: name one of them (--names), or "
            "add a budget of that name to the config's budgets."
        )


def resolve_device(name: str, key: str = "device") -> str:
    """`name` if this machine has that torch device (None or `"auto"`: CUDA when present, else MPS, else CPU);
    otherwise a ConfigError that names the override to use (`--device cpu`)."""
    import torch

    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"{key} {name!r} is not a torch device: use cpu, cuda, cuda:<index>, mps or auto (--{key} cpu)."
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise ConfigError(
                f"the config's {key} is {name!r}, but this machine has {count} CUDA device(s): pass --{key} cpu (or "
                f"--{key} auto, which takes what exists)."
            )
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"the config's {key} is 'mps', but MPS is not available here: pass --{key} cpu.")
    return name
