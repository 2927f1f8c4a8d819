"""Latency: measuring a subnet on this machine, and a model that predicts it from the arch.

Measurement follows the usual protocol (batch 1, CPU by default): warm-up runs, then the median of timed repeats
(the inter-quartile range is kept as the noise level). Search cannot afford to run every candidate, so a linear
model with non-negative coefficients maps `latency_features(arch)` (convolution / transformer / head MACs and block
counts) to milliseconds; it is fitted on measured archs and its error is reported on held-out measured archs.
"""

from __future__ import annotations

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

__all__ = ["LatencyEfficiency", "LatencyMeasurement", "LatencyModel", "measure_latency", "measure_subnet_latency"]


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
    device = torch.device(device)
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
    """Linear latency model with non-negative coefficients on `latency_features` (milliseconds)."""

    def __init__(self, coefficients: list[float] | None = None, intercept: float = 0.0):
        self.coefficients = None if coefficients is None else np.asarray(coefficients, dtype=np.float64)
        self.intercept = float(intercept)

    @property
    def is_fitted(self) -> bool:
        return self.coefficients is not None

    def fit(self, features: np.ndarray, latencies_ms: np.ndarray) -> LatencyModel:
        from sklearn.linear_model import LinearRegression

        features = np.asarray(features, dtype=np.float64)
        latencies_ms = np.asarray(latencies_ms, dtype=np.float64)
        if len(features) < 2:
            raise ValueError(f"fitting the latency model needs at least 2 measured archs, got {len(features)}.")
        # Scale the features so the positive least-squares solve is well conditioned.
        scale = np.maximum(np.abs(features).max(axis=0), 1.0)
        regression = LinearRegression(positive=True).fit(features / scale, latencies_ms)
        self.coefficients = regression.coef_ / scale
        self.intercept = float(regression.intercept_)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        if not self.is_fitted:
            raise RuntimeError("the latency model is not fitted: call fit() or load_state_dict() first.")
        return np.atleast_2d(features) @ self.coefficients + self.intercept

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
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("feature_names", LATENCY_FEATURE_NAMES) != LATENCY_FEATURE_NAMES:
            raise ValueError(
                f"latency model state has features {state.get('feature_names')}, expected {LATENCY_FEATURE_NAMES}."
            )
        self.coefficients = None if state["coefficients"] is None else np.asarray(state["coefficients"], np.float64)
        self.intercept = float(state["intercept"])


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
