"""Latency: measuring a subnet on this machine, and a model that predicts it from the arch.

Measurement follows the usual protocol (batch 1, CPU by default): warm-up runs, then the median of timed repeats
(the inter-quartile range is kept as the noise level). Search cannot afford to run every candidate, so a linear
model with non-negative coefficients maps `latency_features(arch)` (convolution / transformer / head MACs and block
counts) to milliseconds; it is fitted on measured archs and its error is reported on held-out measured archs.

The model cannot predict a negative latency, nor one below the fastest latency it was fitted on: the intercept is
constrained to be non-negative like the coefficients (an unconstrained intercept once came out negative and gave a
"latency <= -4.99 ms" budget), and predictions are floored at the smallest measured latency (`min_latency_ms`). It
needs `min_fit_archs()` measured archs (two per fitted parameter) to be fitted at all.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.configuration_nasvit import NASViTConfig
from .efficiency import LATENCY_FEATURE_NAMES, CachedEfficiency, latency_features
from .encoding import ArchEncoder

__all__ = [
    "LatencyEfficiency",
    "LatencyMeasurement",
    "LatencyModel",
    "measure_latency",
    "measure_subnet_latency",
    "min_fit_archs",
]


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
    num_threads: int

    @property
    def relative_iqr(self) -> float:
        """Inter-quartile range over the median: the measurement's noise level."""
        return (self.q75_ms - self.q25_ms) / self.median_ms if self.median_ms > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    resolution: int,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 20,
    num_threads: int | None = None,
) -> LatencyMeasurement:
    """Median wall time (ms) of `model(pixel_values=...)` on a random `(batch_size, 3, r, r)` input, after `warmup`
    untimed runs. The model is moved to `device` and put in eval mode; `num_threads` sets torch's intra-op threads
    for the measurement only."""
    if repeats < 1 or warmup < 0 or batch_size < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, batch_size >= 1; got {repeats}, {warmup}, {batch_size}.")
    if num_threads is not None and (
        isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1
    ):
        raise ValueError(f"num_threads must be a positive integer or None (torch's default), got {num_threads!r}.")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive int, got {resolution!r}.")
    from .config import resolve_device  # an absent device: one error naming it, before the model is moved

    device = torch.device(resolve_device(str(device), "device"))
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    was_training = model.training
    try:
        model.eval().to(device)
        channels = getattr(getattr(model, "config", None), "num_channels", 3)
        pixel_values = torch.randn(batch_size, channels, resolution, resolution, device=device)

        def synchronize() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        for _ in range(warmup):
            model(pixel_values=pixel_values)
        synchronize()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(pixel_values=pixel_values)
            synchronize()
            times.append((time.perf_counter() - start) * 1000.0)
        quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
        return LatencyMeasurement(
            median_ms=float(statistics.median(times)),
            q25_ms=float(quartiles[0]),
            q75_ms=float(quartiles[2]),
            repeats=repeats,
            warmup=warmup,
            batch_size=batch_size,
            device=str(device),
            num_threads=torch.get_num_threads(),
        )
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)


def measure_subnet_latency(supernet: nn.Module, arch: dict[str, Any], **kwargs) -> LatencyMeasurement:
    """Latency of the standalone subnet `arch` (extracted from `supernet`, as users will run it)."""
    subnet = supernet.extract_subnet(arch)
    return measure_latency(subnet, arch["resolution"], **kwargs)


class LatencyModel:
    """Linear latency model (milliseconds) on `latency_features`, with non-negative coefficients and intercept, whose
    predictions are floored at the smallest latency it was fitted on (`min_latency_ms`)."""

    def __init__(self, coefficients: list[float] | None = None, intercept: float = 0.0, min_latency_ms: float = 0.0):
        self.coefficients = None
        self.intercept = 0.0
        self.min_latency_ms = 0.0
        if coefficients is not None:
            self.load_state_dict(
                {"coefficients": list(coefficients), "intercept": intercept, "min_latency_ms": min_latency_ms}
            )

    @property
    def is_fitted(self) -> bool:
        return self.coefficients is not None

    def _check_features(self, features: Any, what: str) -> np.ndarray:
        features = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if features.ndim != 2 or features.shape[1] != len(LATENCY_FEATURE_NAMES):
            raise ValueError(
                f"{what} must have one column per latency feature {LATENCY_FEATURE_NAMES}, got shape {features.shape}."
            )
        if not np.isfinite(features).all() or (features < 0).any():
            raise ValueError(f"{what} must be finite and non-negative (MACs and block counts).")
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
        # the intercept a non-negative coefficient too.
        scale = np.maximum(features.max(axis=0), 1.0)
        design = np.column_stack([features / scale, np.ones(len(features))])
        regression = LinearRegression(positive=True, fit_intercept=False).fit(design, latencies_ms)
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
            "feature_names": LATENCY_FEATURE_NAMES,
            "coefficients": None if self.coefficients is None else self.coefficients.tolist(),
            "intercept": self.intercept,
            "min_latency_ms": self.min_latency_ms,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a saved model, refusing one that could predict a negative latency (e.g. a tampered
        `latency_model.json`, or one saved before the intercept was constrained: fit it again)."""
        if state.get("feature_names", LATENCY_FEATURE_NAMES) != LATENCY_FEATURE_NAMES:
            raise ValueError(
                f"latency model state has features {state.get('feature_names')}, expected {LATENCY_FEATURE_NAMES}."
            )
        if state.get("coefficients") is None:
            self.coefficients, self.intercept, self.min_latency_ms = None, 0.0, 0.0
            return
        try:
            coefficients = np.asarray(state["coefficients"], dtype=np.float64)
            intercept = float(state.get("intercept", 0.0))
            floor = float(state.get("min_latency_ms", 0.0))
        except (TypeError, ValueError) as error:
            raise ValueError(f"latency model state holds non-numeric values: {error}.") from error
        if coefficients.shape != (len(LATENCY_FEATURE_NAMES),):
            raise ValueError(
                f"latency model state needs {len(LATENCY_FEATURE_NAMES)} coefficients ({LATENCY_FEATURE_NAMES}), "
                f"got shape {coefficients.shape}."
            )
        values = [*coefficients.tolist(), intercept, floor]
        if not all(math.isfinite(value) and value >= 0 for value in values):
            raise ValueError(
                f"latency model state has a negative or non-finite coefficient, intercept ({intercept:g}) or floor "
                f"({floor:g}): it could predict a negative latency. Fit the latency model again (rerun the search)."
            )
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
        return float(self.model.predict(latency_features(self.config, arch))[0])
