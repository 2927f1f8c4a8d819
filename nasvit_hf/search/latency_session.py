"""A search's latency step: the runtime it times subnets on (`latency.backend`: eager PyTorch or onnxruntime), the
subnets prepared for it (kept for the session when timed more than once), and the latency model fitted on seeded
random archs (`latency.jsonl`, the held-out archs timed again for the run-to-run noise in `latency_repeat.jsonl`,
the model and its errors in `latency_model.json`). A resumed search times only what is missing."""

from __future__ import annotations

import json
import logging
import numbers
import time
from typing import Any

import numpy as np
import torch

from .latency import LatencyModel, measure_timed
from .results import LATENCY_FIELDS
from .runtimes import Clock, LatencyBackend, Timed, make_backend
from .step import SearchContext, SearchStep

__all__ = ["LatencySession"]

logger = logging.getLogger(__name__)


class LatencySession(SearchStep):
    """Times subnets of the context's supernet for one search (`config.latency`) and fits its latency model.

    `runtime`: the backend latencies are measured on (default: the one `config.latency` names, timed with `clock`,
    default the one `latency.clock` names)."""

    def __init__(self, context: SearchContext, runtime: LatencyBackend | None = None, clock: Clock | None = None):
        super().__init__(context)
        self._runtime = runtime
        self._clock = clock
        self._timed: dict[str, Timed] = {}  # prepared named subnets and B-candidates, reused in one session
        self.report: dict[str, Any] | None = None  # latency_model.json, once fitted

    @property
    def runtime(self) -> LatencyBackend:
        """The runtime latencies are measured on (`latency.backend`: eager PyTorch or onnxruntime)."""
        if self._runtime is None:
            self._runtime = make_backend(self.config.latency.runtime_spec(), self._clock)
        return self._runtime

    def prepared(self, arch: dict[str, Any], keep: bool = False) -> Timed:
        """The extracted subnet `arch` ready to time on the runtime (for onnxruntime: exported); `keep` holds it for
        the rest of the session (named subnets and B-candidates are timed more than once)."""
        key = json.dumps(arch, sort_keys=True)
        timed = self._timed.get(key)
        if timed is None:
            timed = self.runtime.prepare(self.supernet.extract_subnet(arch), arch["resolution"])
            if keep:
                self._timed[key] = timed
        return timed

    def release(self) -> None:
        """Drop the subnets kept for the session (onnxruntime sessions: not needed after the budgets)."""
        self._timed.clear()

    def measure(self, arch: dict[str, Any], keep: bool = False) -> dict[str, Any]:
        settings = self.config.latency
        timed = self.prepared(arch, keep)
        return measure_timed(self.runtime, timed, warmup=settings.warmup, repeats=settings.repeats).to_dict()

    def near_budget_band(self) -> float:
        """How close to a budget (%) the latency model cannot tell archs apart: its held-out mean error."""
        if self.report is None:
            raise RuntimeError("fit the latency model (fit_latency_model) before searching latency budgets.")
        return float(self.report["holdout"]["mean_abs_pct_error"])

    def fit_latency_model(self) -> LatencyModel:
        settings = self.config.latency
        rng = np.random.default_rng([self.config.seed, 1])
        rows = self.encoder.sample(settings.num_archs, rng)
        archs = [self.encoder.decode(row) for row in rows]
        num_holdout = settings.num_holdout_archs  # enough archs left to fit: checked by LatencyConfig
        records = self.results.read_arch_records("latency.jsonl", LATENCY_FIELDS, self.model_config)
        done = {record["index"]: record for record in records}
        held_out: dict[int, Timed] = {}  # timed a second time at the end: the run-to-run noise
        for index, arch in enumerate(archs):
            if index in done:
                continue
            start = time.perf_counter()
            timed = self.prepared(arch)
            if index < num_holdout:
                held_out[index] = timed
            measurement = measure_timed(self.runtime, timed, warmup=settings.warmup, repeats=settings.repeats)
            measurement = measurement.to_dict()
            record = {
                "index": index,
                "split": "holdout" if index < num_holdout else "fit",
                "arch": arch,
                "measurement": measurement,
                "seconds": time.perf_counter() - start,  # preparing (for onnxruntime: exporting) and timing
            }
            self.results.append_jsonl("latency.jsonl", record)
            done[index] = record
        records = [done[i] for i in range(len(archs))]
        again = {}
        for record in self.results.read_jsonl("latency_repeat.jsonl"):
            self.results.check_record("latency_repeat.jsonl", record, {"index": int, "median_ms": numbers.Real})
            again[record["index"]] = record
        for index in range(num_holdout):
            if index not in again:
                timed = held_out.pop(index, None) or self.prepared(archs[index])
                repeat = measure_timed(self.runtime, timed, warmup=settings.warmup, repeats=settings.repeats)
                again[index] = {"index": index, "median_ms": repeat.median_ms}
                self.results.append_jsonl("latency_repeat.jsonl", again[index])
        held_out.clear()
        run_to_run = float(
            100
            * np.median(
                [
                    abs(again[i]["median_ms"] - first) / ((again[i]["median_ms"] + first) / 2)
                    for i in range(num_holdout)
                    for first in [records[i]["measurement"]["median_ms"]]
                ]
            )
        )
        model = LatencyModel()
        features = np.stack([model.features(self.model_config, r["arch"]) for r in records])
        measured = np.array([r["measurement"]["median_ms"] for r in records])
        fit = np.array([r["split"] == "fit" for r in records])
        model.fit(features[fit], measured[fit])
        metrics = model.evaluate(features[~fit], measured[~fit])
        noise = float(
            100
            * np.median(
                [
                    (r["measurement"]["q75_ms"] - r["measurement"]["q25_ms"]) / r["measurement"]["median_ms"]
                    for r in records
                ]
            )
        )
        self.report = {
            **model.state_dict(),
            "holdout": metrics,
            "fit_metrics": model.evaluate(features[fit], measured[fit]),
            "measurement_noise_median_relative_iqr_pct": noise,
            # the held-out archs timed again after all the others: how far one arch's median moves in a session
            "measurement_noise_run_to_run_pct": run_to_run,
            "measurement_seconds": float(sum(r["seconds"] for r in records if isinstance(r.get("seconds"), float))),
            "runtime": self.runtime.record(),
            "settings": settings.__dict__,
            "torch_threads_default": torch.get_num_threads(),
        }
        self.results.write_json("latency_model.json", self.report)
        logger.info(
            "latency model (%s): held-out error %.1f %% (mean abs); measurement noise: IQR/median %.1f %%, run to "
            "run %.1f %%",
            settings.backend,
            metrics["mean_abs_pct_error"],
            noise,
            run_to_run,
        )
        return model
