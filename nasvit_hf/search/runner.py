"""The search pipeline behind `recipes/search.py` (and `recipes/export.py`): evaluate sampled subnets with BN
recalibration → fit the accuracy predictor → measure latencies and fit the latency model → constrained evolution per
budget → evaluate the winners → Pareto fronts and plot. Every step persists to a `SearchResults` folder and is
skipped on resume when its output is there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import numbers
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..loading import load_supernet, load_supernet_processor  # re-exported here: their home is nasvit_hf.loading
from ..macs import count_macs, count_parameters
from ..models.configuration_nasvit import NASViTConfig
from ..models.image_processing_nasvit import NASViTImageProcessor
from ..models.modeling_nasvit import NASViTForImageClassification
from ..utils.io import atomic_write_text
from .config import BudgetSpec, SearchConfig, resolve_device
from .efficiency import MacsEfficiency
from .encoding import ArchEncoder
from .evaluation import EvaluationData, evaluate_subnet, load_evaluation_data
from .evolution import evolutionary_search
from .latency import LatencyEfficiency, LatencyModel, measure_timed
from .predictor import AccuracyPredictor
from .results import RESULT_FILES, SearchResults, pareto_front
from .runtimes import Clock, LatencyBackend, Timed, make_backend
from .table12 import compare_latency

__all__ = ["SearchRun", "load_supernet", "load_supernet_processor", "supernet_fingerprint"]

logger = logging.getLogger(__name__)


def supernet_fingerprint(path: str | Path) -> str:
    """Hash of a supernet folder's config, image processor and weight files (resume refuses results of other weights
    or another evaluation protocol)."""
    digest = hashlib.sha256()
    for file in sorted(Path(path).glob("*")):
        if file.suffix in (".safetensors", ".bin") or file.name in ("config.json", "preprocessor_config.json"):
            digest.update(file.name.encode())
            with open(file, "rb") as handle:
                for chunk in iter(lambda handle=handle: handle.read(1 << 22), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


# What a resumed search reads back from its records ({dotted key: type}); anything else is a damaged file.
CANDIDATE_FIELDS = {"index": int, "arch": dict, "macs": numbers.Real, "params": numbers.Real, "accuracy": numbers.Real}
LATENCY_FIELDS = {
    "index": int,
    "split": str,
    "arch": dict,
    "measurement.median_ms": numbers.Real,
    "measurement.q25_ms": numbers.Real,
    "measurement.q75_ms": numbers.Real,
}
NAMED_FIELDS = {
    "arch": dict,
    "budget": dict,
    "evolution": dict,
    "macs": numbers.Real,
    "params": numbers.Real,
    "accuracy": numbers.Real,
    "latency_ms": numbers.Real,
    "predicted_latency_ms": numbers.Real,
}


class SearchRun:
    """One search of one supernet with one config, persisted in `output_dir` (resumable)."""

    def __init__(
        self,
        supernet: NASViTForImageClassification,
        config: SearchConfig,
        output_dir: str | Path,
        *,
        supernet_name: str,
        config_name: str,
        supernet_id: str | None = None,
        data: EvaluationData | None = None,
        processor: NASViTImageProcessor | None = None,
        runtime: LatencyBackend | None = None,
        clock: Clock | None = None,
    ):
        """`runtime`: the backend latencies are measured on (default: the one `config.latency` names, timed with
        `clock`, default the one `latency.clock` names)."""
        self.supernet = supernet
        self.model_config: NASViTConfig = supernet.config
        self.config = config
        self.results = SearchResults(output_dir)
        self.supernet_name = supernet_name
        self.config_name = config_name
        self.supernet_id = supernet_id or supernet_name
        self.encoder = ArchEncoder(self.model_config.search_space)
        self.macs = MacsEfficiency(self.model_config, self.encoder)
        self._data = data
        self.processor = processor if processor is not None else (data.processor if data is not None else None)
        self.smallest_macs = count_macs(self.model_config, self.model_config.smallest_arch())
        self.largest_macs = count_macs(self.model_config, self.model_config.largest_arch())
        self._runtime = runtime
        self._clock = clock
        self._timed: dict[str, Timed] = {}  # prepared named subnets and B-candidates, reused in one session
        self._latency_report: dict[str, Any] | None = None
        self._run_record = self._check_run_file()

    @property
    def provenance(self) -> str:
        return f"searched on {self.supernet_name} with {self.config_name}"

    # ---------------------------------------------------------------------------------------------------------------
    def _check_run_file(self) -> dict[str, Any]:
        """Check the results folder against this run (nothing is written): a folder holding another supernet's or
        another config's search, or files of a results folder without its run.json (not written by a search), is
        refused. Returns the run record `_write_run_file` writes once the inputs are checked."""
        run = self.results.read_json("run.json", kind=dict)
        evaluation_sections = {k: self.config.fingerprint(k) for k in ("data", "predictor", "latency")}
        if run is None:
            foreign = [name for name in RESULT_FILES if self.results.path(name).exists()]
            if foreign:
                raise FileExistsError(
                    f"{self.results.directory} holds {', '.join(foreign)} but no run.json: it is not a results folder "
                    "of a search, and the search would replace them. Choose another output folder, or move them away."
                )
        else:
            if run.get("supernet_fingerprint") != self.supernet_id:
                raise ValueError(
                    f"{self.results.directory} holds a search of another supernet ({run.get('supernet')}); use a new "
                    "output folder."
                )
            old = run.get("section_fingerprints", {})
            old = old if isinstance(old, dict) else {}
            changed = [k for k, v in evaluation_sections.items() if old.get(k) != v] + (
                ["seed"] if run.get("seed") != self.config.seed else []
            )
            if changed:
                raise ValueError(
                    f"{self.results.directory} holds a search with a different config ({', '.join(changed)} changed); "
                    "resume with the same config or use a new output folder."
                )
        return {
            "supernet": self.supernet_name,
            "supernet_fingerprint": self.supernet_id,
            "config": self.config_name,
            "seed": self.config.seed,
            "seeds": {
                "sampling": [self.config.seed, 0],
                "latency_archs": [self.config.seed, 1],
                "evolution": [self.config.seed, 2, "<budget index>"],
                "predictor": self.config.seed,
                "data": self.config.data.seed,
            },
            "section_fingerprints": evaluation_sections,
            "status": (run or {}).get("status", "running"),
            "smallest_macs": self.smallest_macs,
            "largest_macs": self.largest_macs,
        }

    def _read_records(self, name: str, fields: dict[str, Any]) -> list[dict[str, Any]]:
        records = self.results.read_jsonl(name)
        for record in records:
            self.results.check_record(name, record, fields)
            record["arch"] = self._checked_arch(name, record["arch"])
        return records

    def _write_run_file(self) -> None:
        import yaml

        self.results.write_json("run.json", self._run_record)
        atomic_write_text(
            self.results.path("search_config.yaml"), yaml.safe_dump(self.config.to_dict(), sort_keys=False)
        )

    @property
    def data(self) -> EvaluationData:
        if self._data is None:
            self._data = load_evaluation_data(
                self.config.data, self.processor, max(self.model_config.search_space["resolutions"])
            )
            if self._data.num_labels != self.model_config.num_labels:
                raise ValueError(
                    f"the search data has {self._data.num_labels} classes but the supernet has "
                    f"{self.model_config.num_labels} labels; search with the dataset the supernet was trained on."
                )
        return self._data

    # ---------------------------------------------------------------------------------------------------------------
    # Budgets
    # ---------------------------------------------------------------------------------------------------------------
    def resolve_macs_budget(self, budget: BudgetSpec) -> float:
        if budget.macs_millions is not None:
            value = budget.macs_millions * 1e6
        else:
            value = self.smallest_macs + budget.macs_fraction * (self.largest_macs - self.smallest_macs)
        if value < self.smallest_macs:
            smallest = self.model_config.smallest_arch()
            raise ValueError(
                f"budget {budget.name!r} ({value / 1e6:.2f} M MACs) is below the smallest subnet of this supernet's "
                f"space, {self.smallest_macs / 1e6:.2f} M MACs ({smallest}); no subnet fits: raise the budget."
            )
        return value

    def check_budgets(self, names: list[str] | None = None) -> list[BudgetSpec]:
        """The budgets to search (with the ones they depend on), MACs budgets validated up front."""
        wanted = [self.config.budget(name) for name in names] if names else list(self.config.budgets)
        ordered: list[BudgetSpec] = []

        def add(budget: BudgetSpec) -> None:
            if budget in ordered:
                return
            if budget.latency_of is not None:
                add(self.config.budget(budget.latency_of))
            ordered.append(budget)

        for budget in wanted:
            add(budget)
        for budget in ordered:
            if budget.metric == "macs":
                self.resolve_macs_budget(budget)
        return ordered

    # ---------------------------------------------------------------------------------------------------------------
    # Step 1: sampled subnets, evaluated with BN recalibration
    # ---------------------------------------------------------------------------------------------------------------
    def _checked_arch(self, name: str, arch: Any) -> dict[str, Any]:
        """An arch read back from the results folder, validated against the supernet's space."""
        try:
            return self.model_config.validate_arch(arch)
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(
                f"{self.results.path(name)} is damaged (an arch does not fit the supernet's space: {error}); delete it "
                "to recompute that step, or search into a new output folder."
            ) from None

    def sampled_archs(self) -> list[dict[str, Any]]:
        archs = self.results.read_json("sampled_archs.json", kind=list)
        if archs is not None:
            return [self._checked_arch("sampled_archs.json", arch) for arch in archs]
        count = self.config.predictor.num_subnets
        rng = np.random.default_rng([self.config.seed, 0])
        rows, seen = [], set()
        if self.config.predictor.include_extremes:
            for arch in (self.model_config.smallest_arch(), self.model_config.largest_arch()):
                rows.append(self.encoder.encode(arch))
                seen.add(ArchEncoder.key(rows[-1]))
        for _ in range(100):
            if len(rows) >= count:
                break
            for row in self.encoder.sample(count, rng):
                key = ArchEncoder.key(row)
                if key not in seen and len(rows) < count:
                    seen.add(key)
                    rows.append(row)
        archs = [self.encoder.decode(row) for row in rows[:count]]
        self.results.write_json("sampled_archs.json", archs)
        return archs

    def evaluate_candidates(self) -> list[dict[str, Any]]:
        archs = self.sampled_archs()
        done = {record["index"]: record for record in self._read_records("candidates.jsonl", CANDIDATE_FIELDS)}
        pending = [i for i in range(len(archs)) if i not in done]
        if pending:
            logger.info("evaluating %d of %d sampled subnets (%d done)", len(pending), len(archs), len(done))
        pending.sort(key=lambda i: archs[i]["resolution"])  # one preprocessing per resolution
        device = resolve_device(self.config.device)
        self.supernet.to(device)
        start = time.perf_counter()
        for count, index in enumerate(pending):
            record = self._evaluate(archs[index], kind="sampled")
            record["index"] = index
            self.results.append_jsonl("candidates.jsonl", record)
            done[index] = record
            if (count + 1) % 16 == 0:
                logger.info("evaluated %d/%d (%.1f s)", count + 1, len(pending), time.perf_counter() - start)
        return [done[i] for i in range(len(archs))]

    def _evaluate(self, arch: dict[str, Any], kind: str) -> dict[str, Any]:
        accuracy = evaluate_subnet(self.supernet, arch, self.data)
        return {
            "kind": kind,
            "arch": arch,
            "macs": count_macs(self.model_config, arch),
            "params": count_parameters(self.model_config, arch),
            "accuracy": accuracy,
        }

    # ---------------------------------------------------------------------------------------------------------------
    # Step 2: accuracy predictor
    # ---------------------------------------------------------------------------------------------------------------
    def fit_predictor(self, candidates: list[dict[str, Any]]) -> AccuracyPredictor:
        genes = self.encoder.encode_many([c["arch"] for c in candidates])
        accuracies = np.array([c["accuracy"] for c in candidates])
        settings = self.config.predictor
        predictor, metrics = AccuracyPredictor.fit_and_validate(
            self.encoder.features(genes),
            accuracies,
            validation_fraction=settings.validation_fraction,
            n_estimators=settings.n_estimators,
            seed=self.config.seed,
        )
        report = {
            **metrics.to_dict(),
            "model": f"RandomForestRegressor(n_estimators={settings.n_estimators}, random_state={self.config.seed})",
            "features": self.encoder.feature_names,
            "refit_on_all": len(candidates),
        }
        self.results.write_json("predictor.json", report)
        logger.info("predictor: Kendall tau %.3f, Spearman rho %.3f", metrics.kendall_tau, metrics.spearman_rho)
        return predictor

    # ---------------------------------------------------------------------------------------------------------------
    # Step 3: latency measurements and model
    # ---------------------------------------------------------------------------------------------------------------
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

    def measure(self, arch: dict[str, Any], keep: bool = False) -> dict[str, Any]:
        settings = self.config.latency
        timed = self.prepared(arch, keep)
        return measure_timed(self.runtime, timed, warmup=settings.warmup, repeats=settings.repeats).to_dict()

    def fit_latency_model(self) -> LatencyModel:
        settings = self.config.latency
        rng = np.random.default_rng([self.config.seed, 1])
        rows = self.encoder.sample(settings.num_archs, rng)
        archs = [self.encoder.decode(row) for row in rows]
        num_holdout = settings.num_holdout_archs  # enough archs left to fit: checked by LatencyConfig
        done = {record["index"]: record for record in self._read_records("latency.jsonl", LATENCY_FIELDS)}
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
        self._latency_report = {
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
        self.results.write_json("latency_model.json", self._latency_report)
        logger.info(
            "latency model (%s): held-out error %.1f %% (mean abs); measurement noise: IQR/median %.1f %%, run to "
            "run %.1f %%",
            settings.backend,
            metrics["mean_abs_pct_error"],
            noise,
            run_to_run,
        )
        return model

    # ---------------------------------------------------------------------------------------------------------------
    # Step 4: evolution per budget
    # ---------------------------------------------------------------------------------------------------------------
    def budget_value(
        self, budget: BudgetSpec, named: dict[str, Any], latency: LatencyEfficiency
    ) -> tuple[float, float | None]:
        """The budget in the efficiency function's units (MACs, or ms of predicted latency), and for `latency_of`
        budgets the nominal (measured) latency of the reference subnet."""
        if budget.metric == "macs":
            return self.resolve_macs_budget(budget), None
        nominal = None
        if budget.latency_ms is not None:
            value = budget.latency_ms
        else:
            # "No slower than A0" is judged by one yardstick: the latency model's prediction for A0's arch (its
            # measured latency, the nominal budget, is recorded too; measurement noise would otherwise let the
            # budget fall below what the model predicts for archs as fast as A0).
            nominal = named[budget.latency_of]["latency_ms"]
            value = named[budget.latency_of]["predicted_latency_ms"]
        smallest = latency(self.encoder.encode(self.model_config.smallest_arch())[None])[0]
        if value < smallest:
            raise ValueError(
                f"budget {budget.name!r} ({value:.3f} ms) is below the predicted latency of the smallest subnet "
                f"({smallest:.3f} ms, {self.model_config.smallest_arch()}); no subnet fits: raise the budget."
            )
        return value, nominal

    def search_budget(
        self,
        budget: BudgetSpec,
        index: int,
        predictor: AccuracyPredictor,
        latency: LatencyEfficiency,
        named: dict[str, Any],
    ) -> dict[str, Any]:
        value, nominal = self.budget_value(budget, named, latency)
        efficiency = self.macs if budget.metric == "macs" else latency
        rng = np.random.default_rng([self.config.seed, 2, index])
        start = time.perf_counter()
        anchor = self.encoder.encode(self.model_config.smallest_arch())
        result = evolutionary_search(
            self.encoder, predictor.predict, efficiency, value, self.config.evolution, rng, anchor=anchor
        )
        seconds = time.perf_counter() - start
        genes, family_note = self._family_member(budget, result, named)
        table12 = None
        if budget.latency_of is not None:
            table12_start = time.perf_counter()
            genes, table12 = self._faster_than_reference(budget, result, named[budget.latency_of], latency, value)
            table12["seconds"] = time.perf_counter() - table12_start
        arch = self.encoder.decode(genes)
        record = self._evaluate(arch, kind=f"searched:{budget.name}")
        measurement = self.measure(arch, keep=True)
        entry = {
            "name": budget.name,
            "arch": arch,
            "budget": {
                **budget.to_dict(),
                "metric": budget.metric,
                "value": value,
                **({"nominal_measured_ms": nominal} if nominal is not None else {}),
                **({"near_budget_pct": self.near_budget_band()} if budget.latency_of is not None else {}),
                "unit": "MACs" if budget.metric == "macs" else "ms (predicted by the latency model)",
            },
            "macs": record["macs"],
            "params": record["params"],
            "predicted_accuracy": float(predictor.predict(self.encoder.features(genes[None]))[0]),
            "accuracy": record["accuracy"],
            "latency_ms": measurement["median_ms"],
            "latency_measurement": measurement,
            "predicted_latency_ms": float(latency(genes[None])[0]),
            "evolution": {
                **result.summary(),
                "seconds": seconds,
                "seed": [self.config.seed, 2, index],
                "config_fingerprint": self.config.fingerprint("evolution"),
            },
            "provenance": self.provenance,
            "supernet": self.supernet_name,
            "supernet_fingerprint": self.supernet_id,
            "config": self.config_name,
            "evaluation": self.data.description,
            "calibration_batches": self.data.calibration_batches,
        }
        if family_note:
            entry["family"] = family_note
        if table12 is not None:
            reference = named[budget.latency_of]
            table12.update(
                {
                    "a_accuracy": reference["accuracy"],
                    "b_accuracy": record["accuracy"],
                    "a_macs": reference["macs"],
                    "b_macs": record["macs"],
                }
            )
            entry["table12"] = table12
        logger.info(
            "%s: %.2f M MACs, %.2f ms, top-1 %.2f %% (predicted %.2f %%)",
            budget.name,
            entry["macs"] / 1e6,
            entry["latency_ms"],
            entry["accuracy"],
            entry["predicted_accuracy"],
        )
        return entry

    def _family_member(self, budget: BudgetSpec, result, named: dict[str, Any]) -> tuple[np.ndarray, str | None]:
        """A MACs-budget winner that costs more MACs than every smaller-budget name already searched (A0 < A1 < ...
        strictly): the best-predicted runner-up of the final population that does, else the winner itself."""
        if budget.metric != "macs":
            return result.genes, None
        value = self.resolve_macs_budget(budget)
        smaller = [
            entry["macs"]
            for other in self.config.budgets
            if other.metric == "macs"
            and other.name != budget.name
            and other.name in named
            and self.resolve_macs_budget(other) < value
            for entry in [named[other.name]]
        ]
        if not smaller:
            return result.genes, None
        floor = max(smaller)
        macs = self.macs(result.final_population)
        for index, (genes, cost) in enumerate(zip(result.final_population, macs)):
            if cost > floor:
                if index == 0:  # the winner itself
                    return genes, None
                return genes, (
                    f"the best predicted arch costs no more MACs than a smaller budget's ({floor / 1e6:.3f} M): the "
                    "best runner-up above that was taken, so that the family grows strictly in MACs"
                )
        logger.warning(
            "%s: no arch of the final population exceeds %.3f M MACs; the family is not strict",
            budget.name,
            floor / 1e6,
        )
        return result.genes, f"no arch within the budget found above the smaller budget's {floor / 1e6:.3f} M MACs"

    def near_budget_band(self) -> float:
        """How close to a budget (%) the latency model cannot tell archs apart: its held-out mean error."""
        if self._latency_report is None:
            raise RuntimeError("fit the latency model (fit_latency_model) before searching latency budgets.")
        return float(self._latency_report["holdout"]["mean_abs_pct_error"])

    def _faster_than_reference(
        self, budget: BudgetSpec, result, reference: dict[str, Any], latency: LatencyEfficiency, value: float
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Walk the B-candidates (within A's predicted latency), best predicted first, that are predicted at least as
        accurate as the A-model `reference`; re-time each against A on the runtime, alternating in the same session
        (`compare_latency`), and keep the first measured faster than A by more than the noise. Else B is A's arch,
        and the record says why. The latency model alone cannot decide for candidates predicted within its error of
        the budget (`near_budget` in the record), and most winners of a search sit there. Returns (genes, Table 12
        record)."""
        settings = self.config.latency
        a_name, b_name = budget.latency_of.upper(), budget.name.upper()
        reference_genes = self.encoder.encode(reference["arch"])
        reference_timed = self.prepared(reference["arch"], keep=True)
        band = self.near_budget_band()
        timing = {"rounds": settings.table12_rounds, "warmup": settings.warmup, "repeats": settings.repeats}
        checked: list[dict[str, Any]] = []
        for genes, score in zip(result.final_population, result.final_scores):
            if len(checked) >= settings.table12_candidates:
                break
            if np.array_equal(genes, reference_genes) or score < reference["predicted_accuracy"]:
                break  # A itself, or predicted less accurate than A: no B worth its name from here on
            arch = self.encoder.decode(genes)
            predicted_ms = float(latency(genes[None])[0])
            paired = compare_latency(self.runtime, reference_timed, self.prepared(arch, keep=True), **timing)
            checked.append(
                {
                    "arch": arch,
                    "predicted_accuracy": float(score),
                    "predicted_latency_ms": predicted_ms,
                    "near_budget": abs(predicted_ms / value - 1) * 100 <= band,
                    "a_ms": paired.first_ms,
                    "b_ms": paired.second_ms,
                    "speedup_pct": paired.speedup_pct,
                    "noise_pct": paired.noise_pct,
                    "faster_every_round": paired.faster_every_round,
                    "faster_beyond_noise": paired.faster_beyond_noise,
                }
            )
            if paired.faster_beyond_noise:
                return genes, {
                    "a_model": budget.latency_of,
                    "same_arch_as_a": False,
                    "a_latency_ms": paired.first_ms,
                    "b_latency_ms": paired.second_ms,
                    "a_latency_quartiles_ms": paired.first_quartiles_ms,
                    "b_latency_quartiles_ms": paired.second_quartiles_ms,
                    "speedup_pct": paired.speedup_pct,
                    "noise_pct": paired.noise_pct,
                    "measurement": paired.to_dict(),
                    "candidates_checked": len(checked),
                    "candidates": checked,
                }
        # A's arch: timed once more for the record, in this session.
        own = measure_timed(self.runtime, reference_timed, warmup=settings.warmup, repeats=settings.repeats)
        if checked:
            best = max(checked, key=lambda c: c["speedup_pct"])
            rounds = "" if best["faster_every_round"] else ", not in every round"
            note = (
                f"none of the {len(checked)} candidate(s) within {a_name}'s predicted latency and predicted at least "
                f"as accurate was measured faster than {a_name} in every round by more than the noise (best: "
                f"{best['speedup_pct']:.1f} % faster{rounds}, noise {best['noise_pct']:.1f} %): {b_name} is "
                f"{a_name}'s arch"
            )
        else:
            note = (
                f"no arch within {a_name}'s predicted latency is predicted more accurate than {a_name}: {b_name} is "
                f"{a_name}'s arch"
            )
        return reference_genes, {
            "a_model": budget.latency_of,
            "same_arch_as_a": True,
            "a_latency_ms": own.median_ms,
            "b_latency_ms": own.median_ms,
            "a_latency_quartiles_ms": [own.q25_ms, own.q75_ms],
            "b_latency_quartiles_ms": [own.q25_ms, own.q75_ms],
            "measurement": {**own.to_dict(), "machine": own.runtime["machine"]},
            "candidates_checked": len(checked),
            "candidates": checked,
            "note": note,
        }

    # ---------------------------------------------------------------------------------------------------------------
    def run(self, names: list[str] | None = None) -> dict[str, Any]:
        """Run (or resume) the whole search; `names` restricts the budgets searched (plus their dependencies).
        Returns the `named.json` content."""
        budgets = self.check_budgets(names)
        self.data  # noqa: B018 - loads and checks the data: every input is checked before anything is written
        self._write_run_file()
        candidates = self.evaluate_candidates()
        predictor = self.fit_predictor(candidates)
        latency_model = self.fit_latency_model()
        latency = LatencyEfficiency(self.model_config, self.encoder, latency_model)
        named = self.results.read_json("named.json", {}, kind=dict)
        for name, entry in named.items():
            self.results.check_record("named.json", entry, NAMED_FIELDS, where=f"{name}: ")
            self._checked_arch("named.json", entry["arch"])
        order = [b.name for b in self.config.budgets]
        for budget in budgets:
            previous = named.get(budget.name)
            if (
                previous is not None
                and previous["budget"].get("metric") == budget.metric
                and previous["budget"].get("value") == self.budget_value(budget, named, latency)[0]
                and previous["evolution"].get("config_fingerprint") == self.config.fingerprint("evolution")
            ):
                continue  # done with the same budget and evolution settings
            named[budget.name] = self.search_budget(budget, order.index(budget.name), predictor, latency, named)
            self.results.write_json("named.json", named)
        self._timed.clear()  # the prepared subnets (onnxruntime sessions) are not needed after the budgets
        self.write_pareto(candidates, named, latency)
        run = dict(self._run_record)
        run["status"] = "complete" if all(b.name in named for b in self.config.budgets) else "partial"
        self.results.write_json("run.json", run)
        return named

    def write_pareto(self, candidates: list[dict[str, Any]], named: dict[str, Any], latency: LatencyEfficiency):
        points = []
        for record in candidates:
            genes = self.encoder.encode(record["arch"])[None]
            points.append({**record, "latency_ms": float(latency(genes)[0]), "name": None})
        for name, entry in named.items():
            points.append(
                {
                    "kind": f"searched:{name}",
                    "arch": entry["arch"],
                    "macs": entry["macs"],
                    "params": entry["params"],
                    "accuracy": entry["accuracy"],
                    "latency_ms": entry["predicted_latency_ms"],
                    "name": name,
                }
            )
        fronts = {
            "accuracy_vs_macs": pareto_front(points, "macs", "accuracy"),
            "accuracy_vs_latency": pareto_front(points, "latency_ms", "accuracy"),
            "latency_note": "latency_ms here is the latency model's prediction (the measured one is in named.json)",
            "num_points": len(points),
        }
        self.results.write_json("pareto.json", fronts)
        from .plot import plot_pareto

        plot_pareto(points, fronts, self.results.path("pareto.png"), title=self.provenance)
