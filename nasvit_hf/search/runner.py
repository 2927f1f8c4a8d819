"""The search pipeline behind `recipes/search.py` (and `recipes/export.py`): evaluate sampled subnets with BN
recalibration → fit the accuracy predictor → measure latencies and fit the latency model → constrained evolution per
budget → evaluate the winners → Pareto fronts and plot. Every step persists to a `SearchResults` folder and is
skipped on resume when its output is there.
"""

from __future__ import annotations

import hashlib
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
from .efficiency import MacsEfficiency, latency_features
from .encoding import ArchEncoder
from .evaluation import EvaluationData, evaluate_subnet, load_evaluation_data
from .evolution import evolutionary_search
from .latency import LatencyEfficiency, LatencyModel, measure_subnet_latency
from .predictor import AccuracyPredictor
from .results import RESULT_FILES, SearchResults, pareto_front

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
    ):
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
    def measure(self, arch: dict[str, Any]) -> dict[str, Any]:
        return measure_subnet_latency(self.supernet, arch, **self.config.latency.measure_kwargs()).to_dict()

    def fit_latency_model(self) -> LatencyModel:
        settings = self.config.latency
        rng = np.random.default_rng([self.config.seed, 1])
        rows = self.encoder.sample(settings.num_archs, rng)
        archs = [self.encoder.decode(row) for row in rows]
        num_holdout = settings.num_holdout_archs  # enough archs left to fit: checked by LatencyConfig
        done = {record["index"]: record for record in self._read_records("latency.jsonl", LATENCY_FIELDS)}
        for index, arch in enumerate(archs):
            if index in done:
                continue
            record = {
                "index": index,
                "split": "holdout" if index < num_holdout else "fit",
                "arch": arch,
                "measurement": self.measure(arch),
            }
            self.results.append_jsonl("latency.jsonl", record)
            done[index] = record
        records = [done[i] for i in range(len(archs))]
        features = np.stack([latency_features(self.model_config, r["arch"]) for r in records])
        measured = np.array([r["measurement"]["median_ms"] for r in records])
        fit = np.array([r["split"] == "fit" for r in records])
        model = LatencyModel().fit(features[fit], measured[fit])
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
        self.results.write_json(
            "latency_model.json",
            {
                **model.state_dict(),
                "holdout": metrics,
                "fit_metrics": model.evaluate(features[fit], measured[fit]),
                "measurement_noise_median_relative_iqr_pct": noise,
                "settings": settings.__dict__,
                "torch_threads_default": torch.get_num_threads(),
            },
        )
        logger.info(
            "latency model: held-out error %.1f %% (mean abs), measurement noise (IQR/median) %.1f %%",
            metrics["mean_abs_pct_error"],
            noise,
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
            genes, table12 = self._no_slower_than(budget, result, named[budget.latency_of], genes)
        arch = self.encoder.decode(genes)
        record = self._evaluate(arch, kind=f"searched:{budget.name}")
        measurement = self.measure(arch)
        entry = {
            "name": budget.name,
            "arch": arch,
            "budget": {
                **budget.to_dict(),
                "metric": budget.metric,
                "value": value,
                **({"nominal_measured_ms": nominal} if nominal is not None else {}),
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

    def _no_slower_than(self, budget: BudgetSpec, result, reference: dict[str, Any], first: np.ndarray):
        """Walk the B-candidates (best predicted first) and keep the first whose extracted subnet is measured no
        slower than the reference A-model in an interleaved comparison (`compare_latency`); A's own arch is the
        fallback. Returns (genes, Table 12 record)."""
        from .table12 import compare_latency

        settings = self.config.latency
        kwargs = settings.measure_kwargs()
        reference_genes = self.encoder.encode(reference["arch"])
        reference_model = self.supernet.extract_subnet(reference["arch"])
        candidates = [first] + [g for g in result.final_population if not np.array_equal(g, first)]
        checked = []
        for genes in candidates[: settings.table12_candidates]:
            if np.array_equal(genes, reference_genes):
                break
            arch = self.encoder.decode(genes)
            paired = compare_latency(
                reference_model,
                reference["arch"]["resolution"],
                self.supernet.extract_subnet(arch),
                arch["resolution"],
                rounds=settings.table12_rounds,
                device=kwargs["device"],
                batch_size=kwargs["batch_size"],
                warmup=kwargs["warmup"],
                repeats=kwargs["repeats"],
                num_threads=kwargs["num_threads"],
            )
            checked.append({"arch": arch, "a_ms": paired.first_ms, "b_ms": paired.second_ms})
            if paired.second_no_slower:
                return genes, {
                    "a_model": budget.latency_of,
                    "same_arch_as_a": False,
                    "a_latency_ms": paired.first_ms,
                    "b_latency_ms": paired.second_ms,
                    "measurement": paired.to_dict(),
                    "candidates_checked": len(checked),
                }
        # A's arch: no slower than itself by definition; timed once for the record.
        from .latency import measure_latency

        timing = measure_latency(reference_model, reference["arch"]["resolution"], **kwargs)
        from .table12 import machine_description

        return reference_genes, {
            "a_model": budget.latency_of,
            "same_arch_as_a": True,
            "a_latency_ms": timing.median_ms,
            "b_latency_ms": timing.median_ms,
            "measurement": {**timing.to_dict(), "machine": machine_description()},
            "candidates_checked": len(checked),
            "rejected": checked,
            "note": f"no better-predicted candidate within the latency model's budget was measured no slower than "
            f"{budget.latency_of.upper()}: {budget.name.upper()} is {budget.latency_of.upper()}'s arch",
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
