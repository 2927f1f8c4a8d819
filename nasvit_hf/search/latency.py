"""Latency: measuring a subnet on the deployment runtime, and a model that predicts it from the arch.

Measurement follows the usual protocol (batch 1, CPU by default): warm-up runs, then the median of timed repeats
(the inter-quartile range is kept as the noise level), on the runtime `nasvit_hf.search.runtimes` names (eager
PyTorch or onnxruntime through the deployment export). Search cannot afford to run every candidate, so a linear
model with non-negative coefficients maps `latency_features(arch)` to milliseconds: the subnet's operator counts
(`nasvit_hf.macs.operator_counts`: MACs by operator class, the activation elements element-wise operators touch, and
block counts); it is fitted on measured archs, weighted so that it minimises the relative error, and its error is
reported on held-out measured archs. Which operator classes it needs was measured (docs/search-and-extract.md: the
error with and without each feature group, on eager PyTorch and onnxruntime).

The model cannot predict a negative latency, nor one below the fastest latency it was fitted on: the intercept is
constrained to be non-negative like the coefficients (an unconstrained intercept once came out negative and gave a
"latency <= -4.99 ms" budget), and predictions are floored at the smallest measured latency (`min_latency_ms`). It
needs `min_fit_archs()` measured archs (two per fitted parameter) to be fitted at all.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch import nn

from ..macs import OPERATOR_COUNT_NAMES, operator_counts
from ..models.configuration_nasvit import NASViTConfig
from .efficiency import CachedEfficiency
from .encoding import ArchEncoder
from .runtimes import Clock, LatencyBackend, RuntimeSpec, Timed, check_num_threads, make_backend, quartiles

__all__ = [
    "FEATURE_GROUPS",
    "LATENCY_FEATURE_NAMES",
    "LatencyEfficiency",
    "LatencyMeasurement",
    "LatencyModel",
    "latency_features",
    "measure_latency",
    "measure_subnet_latency",
    "measure_timed",
    "min_fit_archs",
]

# The operator counts the latency model is fitted on (all of `OPERATOR_COUNT_NAMES`), in groups: the ablation in
# docs/search-and-extract.md drops one group at a time.
FEATURE_GROUPS: dict[str, list[str]] = {
    "macs": [name for name in OPERATOR_COUNT_NAMES if name.endswith("_macs")],
    "memory": ["conv_activations", "token_activations", "attention_scores"],
    "overhead": ["conv_blocks", "transformer_layers"],
}
LATENCY_FEATURE_NAMES: list[str] = [name for group in FEATURE_GROUPS.values() for name in group]
KNOWN_FEATURES = (*OPERATOR_COUNT_NAMES, "macs")  # "macs": the total (a one-feature baseline)


def latency_features(
    config: NASViTConfig, arch: dict[str, Any], names: list[str] | tuple[str, ...] = LATENCY_FEATURE_NAMES
) -> np.ndarray:
    """The features `names` of a subnet (`arch` must come from the config's space: it is not re-validated): its
    operator counts per image (`nasvit_hf.macs.operator_counts`), and `"macs"` for their MACs total."""
    counts = operator_counts(config, arch, validate=False)
    counts["macs"] = sum(counts[name] for name in FEATURE_GROUPS["macs"])
    return np.array([counts[name] for name in names], dtype=np.float64)


def min_fit_archs(num_features: int = len(LATENCY_FEATURE_NAMES)) -> int:
    """The fewest measured archs the latency model is fitted on: two per fitted parameter (features + intercept)."""
    return 2 * (num_features + 1)


@dataclass
class LatencyMeasurement:
    median_ms: float
    q25_ms: float
    q75_ms: float
    repeats: int
    warmup: int
    batch_size: int
    device: str
    num_threads: int | None
    backend: str = "eager"
    runtime: dict[str, Any] | None = None  # `runtime_record`: backend settings, machine, package versions

    @property
    def relative_iqr(self) -> float:
        """Inter-quartile range over the median: the measurement's noise level."""
        return (self.q75_ms - self.q25_ms) / self.median_ms if self.median_ms > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_timed(backend: LatencyBackend, timed: Timed, *, warmup: int, repeats: int) -> LatencyMeasurement:
    """Median and quartiles of `repeats` timed batches of a prepared subnet (after `warmup`) on `backend`."""
    q25, median, q75 = quartiles(backend.time(timed, warmup=warmup, repeats=repeats))
    spec = backend.spec
    return LatencyMeasurement(
        median_ms=median,
        q25_ms=q25,
        q75_ms=q75,
        repeats=repeats,
        warmup=warmup,
        batch_size=spec.batch_size,
        device=spec.device,
        num_threads=timed.num_threads,
        backend=spec.backend,
        runtime={**backend.record(), **timed.details},
    )


def measure_latency(
    model: nn.Module,
    resolution: int,
    *,
    device: str = "cpu",
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 20,
    num_threads: int | None = None,
    backend: str = "eager",
    quantize: str | None = None,
    clock: str | Clock = "wall",
) -> LatencyMeasurement:
    """Median wall time (ms) of one `(batch_size, 3, r, r)` batch through `model` on the runtime `backend` (eager
    PyTorch, or onnxruntime on the graph `export_onnx` writes), after `warmup` untimed runs; `num_threads` sets the
    runtime's intra-op threads for the measurement only; `clock` is "wall", "process" (CPU time, one thread) or a
    clock function. The model's train/eval mode is restored."""
    if repeats < 1 or warmup < 0 or batch_size < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, batch_size >= 1; got {repeats}, {warmup}, {batch_size}.")
    num_threads = check_num_threads(num_threads)  # before the device is resolved: the first wrong argument named
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive int, got {resolution!r}.")
    from .config import resolve_device  # an absent device: one error naming it, before the model is moved

    device = resolve_device(str(device), "device")
    named = clock if isinstance(clock, str) else "wall"
    spec = RuntimeSpec(backend, device, num_threads, batch_size, quantize, named)
    runtime = make_backend(spec, None if isinstance(clock, str) else clock)
    was_training = model.training
    try:
        return measure_timed(runtime, runtime.prepare(model, resolution), warmup=warmup, repeats=repeats)
    finally:
        model.train(was_training)


def measure_subnet_latency(supernet: nn.Module, arch: dict[str, Any], **kwargs) -> LatencyMeasurement:
    """Latency of the standalone subnet `arch` (extracted from `supernet`, as users will run it)."""
    subnet = supernet.extract_subnet(arch)
    return measure_latency(subnet, arch["resolution"], **kwargs)


class LatencyModel:
    """Linear latency model (milliseconds) on `latency_features` (`feature_names`, default all operator counts), with
    non-negative coefficients and intercept, fitted to minimise the squared *relative* error (each arch weighted by
    1 / latency², so a 5 ms subnet counts as much as a 50 ms one), and floored at the smallest latency it was fitted
    on (`min_latency_ms`)."""

    def __init__(
        self,
        coefficients: list[float] | None = None,
        intercept: float = 0.0,
        min_latency_ms: float = 0.0,
        feature_names: list[str] | tuple[str, ...] = LATENCY_FEATURE_NAMES,
        relative: bool = True,
    ):
        """`relative=False` fits the plain squared error in ms instead (the earlier model; for comparisons)."""
        self.feature_names = self._check_names(feature_names)  # any names in memory (e.g. a benchmark's baseline)
        self.relative = relative
        self.coefficients = None
        self.intercept = 0.0
        self.min_latency_ms = 0.0
        if coefficients is not None:
            self.load_state_dict(
                {
                    "feature_names": self.feature_names,
                    "coefficients": list(coefficients),
                    "intercept": intercept,
                    "min_latency_ms": min_latency_ms,
                }
            )

    @staticmethod
    def _check_names(names: Any, known_only: bool = False) -> list[str]:
        """Distinct names; `known_only`: all of them features `latency_features` computes (a saved model must be)."""
        if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"latency model feature_names must be a non-empty list of names, got {names!r}.")
        unknown = [name for name in names if name not in KNOWN_FEATURES] if known_only else []
        if unknown or len(set(names)) != len(names):
            raise ValueError(
                f"latency model features {list(names)} hold unknown or repeated names {unknown}; known: "
                f"{list(KNOWN_FEATURES)}."
            )
        return list(names)

    @property
    def is_fitted(self) -> bool:
        return self.coefficients is not None

    def features(self, config: NASViTConfig, arch: dict[str, Any]) -> np.ndarray:
        """This model's features of one arch."""
        return latency_features(config, arch, self.feature_names)

    def _check_features(self, features: Any, what: str) -> np.ndarray:
        features = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if features.ndim != 2 or features.shape[1] != len(self.feature_names):
            raise ValueError(
                f"{what} must have one column per latency feature {self.feature_names}, got shape {features.shape}."
            )
        if not np.isfinite(features).all() or (features < 0).any():
            raise ValueError(f"{what} must be finite and non-negative (MACs, activation elements, block counts).")
        return features

    def fit(self, features: np.ndarray, latencies_ms: np.ndarray) -> LatencyModel:
        from sklearn.linear_model import LinearRegression

        features = self._check_features(features, "latency features")
        latencies_ms = np.asarray(latencies_ms, dtype=np.float64).reshape(-1)
        if len(latencies_ms) != len(features):
            raise ValueError(f"got {len(features)} feature rows but {len(latencies_ms)} latencies.")
        needed = min_fit_archs(features.shape[1])
        if len(features) < needed:
            raise ValueError(
                f"fitting the latency model needs at least {needed} measured archs (two per fitted parameter: "
                f"{features.shape[1]} features + an intercept), got {len(features)}; measure more archs "
                "(latency.num_archs)."
            )
        if not np.isfinite(latencies_ms).all() or (latencies_ms <= 0).any():
            raise ValueError(
                f"measured latencies must be finite and positive, got values in [{latencies_ms.min():g}, "
                f"{latencies_ms.max():g}] ms."
            )
        # Scale the features so the non-negative least-squares solve is well conditioned; the constant column makes
        # the intercept a non-negative coefficient too. Weights 1/latency² make the squared residuals relative.
        scale = np.maximum(features.max(axis=0), 1.0)
        design = np.column_stack([features / scale, np.ones(len(features))])
        regression = LinearRegression(positive=True, fit_intercept=False)
        regression.fit(design, latencies_ms, sample_weight=1.0 / latencies_ms**2 if self.relative else None)
        self.coefficients = regression.coef_[:-1] / scale
        self.intercept = float(regression.coef_[-1])
        self.min_latency_ms = float(latencies_ms.min())
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        if not self.is_fitted:
            raise RuntimeError("the latency model is not fitted: call fit() or load_state_dict() first.")
        features = self._check_features(features, "latency features")
        return np.maximum(features @ self.coefficients + self.intercept, self.min_latency_ms)

    def evaluate(self, features: np.ndarray, latencies_ms: np.ndarray) -> dict[str, float]:
        """Errors on (held-out) measured archs: mean / max absolute percentage error and mean absolute error."""
        predicted = self.predict(features)
        measured = np.asarray(latencies_ms, dtype=np.float64)
        relative = np.abs(predicted - measured) / measured
        return {
            "mean_abs_pct_error": float(100 * relative.mean()),
            "max_abs_pct_error": float(100 * relative.max()),
            "mean_abs_error_ms": float(np.abs(predicted - measured).mean()),
            "num_archs": int(len(measured)),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "feature_names": list(self.feature_names),
            "coefficients": None if self.coefficients is None else self.coefficients.tolist(),
            "intercept": self.intercept,
            "min_latency_ms": self.min_latency_ms,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a saved model, refusing one that could predict a negative latency (e.g. a tampered
        `latency_model.json`, or one saved before the intercept was constrained: fit it again) or whose features
        are not known operator counts."""
        if not isinstance(state, dict):
            raise ValueError(f"latency model state must be a mapping, got {type(state).__name__}.")
        names = self._check_names(state.get("feature_names", LATENCY_FEATURE_NAMES), known_only=True)
        if state.get("coefficients") is None:
            self.feature_names = names
            self.coefficients, self.intercept, self.min_latency_ms = None, 0.0, 0.0
            return
        try:
            coefficients = np.asarray(state["coefficients"], dtype=np.float64)
            intercept = float(state.get("intercept", 0.0))
            floor = float(state.get("min_latency_ms", 0.0))
        except (TypeError, ValueError) as error:
            raise ValueError(f"latency model state holds non-numeric values: {error}.") from error
        if coefficients.shape != (len(names),):
            raise ValueError(
                f"latency model state needs {len(names)} coefficients ({names}), got shape {coefficients.shape}."
            )
        values = [*coefficients.tolist(), intercept, floor]
        if not all(math.isfinite(value) and value >= 0 for value in values):
            raise ValueError(
                f"latency model state has a negative or non-finite coefficient, intercept ({intercept:g}) or floor "
                f"({floor:g}): it could predict a negative latency. Fit the latency model again (rerun the search)."
            )
        self.feature_names = names
        self.coefficients, self.intercept, self.min_latency_ms = coefficients, intercept, floor


class LatencyEfficiency(CachedEfficiency):
    """Predicted latency (ms) of each arch under a fitted `LatencyModel`."""

    name = "latency"
    unit = "ms"

    def __init__(self, config: NASViTConfig, encoder: ArchEncoder, model: LatencyModel):
        super().__init__(config, encoder)
        if not model.is_fitted:
            raise ValueError("LatencyEfficiency needs a fitted LatencyModel.")
        self.model = model

    def value(self, arch: dict[str, Any]) -> float:
        return float(self.model.predict(self.model.features(self.config, arch))[0])
