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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .evaluation import DataConfig
from .evolution import EvolutionConfig

__all__ = ["BudgetSpec", "LatencyConfig", "PredictorConfig", "SearchConfig", "paper_macs_fraction"]

_BUDGET_KINDS = ("macs_millions", "macs_fraction", "latency_ms", "latency_of")


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
        if self.macs_fraction is not None and not 0.0 <= self.macs_fraction <= 1.0:
            raise ValueError(f"budget {self.name!r}: macs_fraction must be in [0, 1], got {self.macs_fraction}.")
        for kind in ("macs_millions", "latency_ms"):
            if getattr(self, kind) is not None and getattr(self, kind) <= 0:
                raise ValueError(f"budget {self.name!r}: {kind} must be positive, got {getattr(self, kind)}.")
        if self.latency_of is not None:
            self.latency_of = str(self.latency_of).lower()

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


@dataclass
class LatencyConfig:
    device: str = "cpu"
    batch_size: int = 1
    warmup: int = 10
    repeats: int = 30
    num_threads: int | None = 1
    num_archs: int = 64  # measured archs for the latency model
    holdout_fraction: float = 0.25  # of them, held out to report the model's error
    table12_rounds: int = 5  # B vs A: interleaved timing rounds (nasvit_hf.search.table12.compare_latency)
    table12_candidates: int = 8  # B-candidates timed against A before falling back to A's arch

    def measure_kwargs(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "batch_size": self.batch_size,
            "warmup": self.warmup,
            "repeats": self.repeats,
            "num_threads": self.num_threads,
        }


@dataclass
class SearchConfig:
    seed: int = 0
    device: str = "auto"  # where candidates are evaluated ("auto": cuda if present, else mps, else cpu)
    num_threads: int | None = None  # torch intra-op threads for evaluation (None: torch's default)
    data: DataConfig = field(default_factory=DataConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    budgets: list[BudgetSpec] = field(default_factory=list)

    def __post_init__(self):
        names = [budget.name for budget in self.budgets]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"budgets name {duplicates} more than once.")
        for budget in self.budgets:
            if budget.latency_of is not None and budget.latency_of not in names:
                raise ValueError(
                    f"budget {budget.name!r} uses the latency of {budget.latency_of!r}, which has no budget here."
                )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SearchConfig:
        raw = copy.deepcopy(raw or {})
        known = {
            "seed",
            "device",
            "num_threads",
            "data",
            "calibration",
            "predictor",
            "evolution",
            "latency",
            "budgets",
        }
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"search config has unknown sections {sorted(unknown)}; known: {sorted(known)}.")

        def build(kind, section: str, values: dict[str, Any] | None):
            values = dict(values or {})
            allowed = set(kind.__dataclass_fields__)
            extra = set(values) - allowed
            if extra:
                raise ValueError(
                    f"search config [{section}] has unknown keys {sorted(extra)}; known: {sorted(allowed)}."
                )
            return kind(**values)

        seed = int(raw.get("seed", 0))
        data = dict(raw.get("data") or {})
        data.setdefault("seed", seed)
        calibration = dict(raw.get("calibration") or {})
        if "num_batches" in calibration:
            data["calibration_batches"] = calibration.pop("num_batches")
        if calibration:
            raise ValueError(
                f"search config [calibration] has unknown keys {sorted(calibration)}; known: ['num_batches']."
            )
        budgets = raw.get("budgets") or []
        if not isinstance(budgets, list):
            raise ValueError("search config [budgets] must be a list of {name: ..., <one budget kind>: ...} entries.")
        return cls(
            seed=seed,
            device=str(raw.get("device", "auto")),
            num_threads=raw.get("num_threads"),
            data=build(DataConfig, "data", data),
            predictor=build(PredictorConfig, "predictor", raw.get("predictor")),
            evolution=build(EvolutionConfig, "evolution", raw.get("evolution")),
            latency=build(LatencyConfig, "latency", raw.get("latency")),
            budgets=[build(BudgetSpec, "budgets", entry) for entry in budgets],
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchConfig:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"search config {str(path)!r} does not exist.")
        with open(path, encoding="utf-8") as file:
            return cls.from_dict(yaml.safe_load(file))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self.data)
        return {
            "seed": self.seed,
            "device": self.device,
            "num_threads": self.num_threads,
            "data": data,
            "predictor": asdict(self.predictor),
            "evolution": asdict(self.evolution),
            "latency": asdict(self.latency),
            "budgets": [budget.to_dict() for budget in self.budgets],
        }

    def fingerprint(self, section: str | None = None) -> str:
        """A hash of the config (or of one section): resuming checks it so results never mix configs."""
        value = self.to_dict() if section is None else self.to_dict()[section]
        return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]

    def budget(self, name: str) -> BudgetSpec:
        for budget in self.budgets:
            if budget.name == name.lower():
                return budget
        raise KeyError(f"no budget named {name!r} in this search config; it has {[b.name for b in self.budgets]}.")
