"""The search pipeline behind `recipes/search.py` (and `recipes/extract.py`): evaluate sampled subnets with BN
recalibration → fit the accuracy predictor → measure latencies and fit the latency model → constrained evolution per
budget → evaluate the winners → Pareto fronts and plot. Every step persists to a `SearchResults` folder and is
skipped on resume when its output is there.

`SearchRun` is the orchestrator: each step is its own module and class, which it wires together and records
(`run.json`):

    step.py             SearchContext / SearchStep: the supernet, config, results folder, encoder every step holds
    budgets.py          SearchBudgets: budgets in MACs / predicted ms, their order, the family's strict MACs rule
    candidates.py       SubnetEvaluator: the sampled subnets and their BN-recalibrated top-1 (step 1)
    predictor.py        fit_search_predictor: the accuracy predictor (step 2)
    latency_session.py  LatencySession: the runtime, prepared subnets, the latency model (step 3)
    evolution.py        evolutionary_search per budget (step 4)
    b_vs_a.py           choose_b_model: a B-model re-timed against its A-model (latency budgets with `latency_of`)
    plot.py             write_pareto: the fronts and their plot
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..loading import load_supernet, load_supernet_processor  # re-exported here: their home is nasvit_hf.loading
from ..models.configuration_nasvit import NASViTConfig
from ..models.image_processing_nasvit import NASViTImageProcessor
from ..models.modeling_nasvit import NASViTForImageClassification
from ..utils.io import atomic_write_text
from .b_vs_a import choose_b_model
from .budgets import SearchBudgets
from .candidates import SubnetEvaluator
from .config import BudgetSpec, SearchConfig
from .efficiency import MacsEfficiency
from .encoding import ArchEncoder
from .evaluation import EvaluationData
from .evolution import evolutionary_search
from .latency import LatencyEfficiency
from .latency_session import LatencySession
from .named import SearchedSubnet, read_named, write_named
from .plot import write_pareto
from .predictor import AccuracyPredictor, fit_search_predictor
from .results import CANDIDATE_FIELDS, LATENCY_FIELDS, RESULT_FILES, SearchResults
from .runtimes import Clock, LatencyBackend
from .step import SearchContext

__all__ = [
    "CANDIDATE_FIELDS",
    "LATENCY_FIELDS",
    "SearchRun",
    "load_supernet",
    "load_supernet_processor",
    "supernet_fingerprint",
]

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


class SearchRun:
    """One search of one supernet with one config, persisted in `output_dir` (resumable): the orchestrator of the
    steps' classes (`budgets`, `evaluator`, `latency_session`; see the module docstring)."""

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
        self.budgets = SearchBudgets(config, self.model_config, self.encoder)
        context = SearchContext(supernet, config, self.results, self.encoder)
        self.evaluator = SubnetEvaluator(context, data, processor)
        self.latency_session = LatencySession(context, runtime, clock)
        self.smallest_macs = self.budgets.smallest_macs
        self.largest_macs = self.budgets.largest_macs
        self._run_record = self._check_run_file()

    @property
    def provenance(self) -> str:
        return f"searched on {self.supernet_name} with {self.config_name}"

    @property
    def data(self) -> EvaluationData:
        """The evaluation data (loaded on first use and checked against the supernet's labels)."""
        return self.evaluator.data

    def check_budgets(self, names: list[str] | None = None) -> list[BudgetSpec]:
        """The budgets to search (with the ones they depend on), MACs budgets validated up front."""
        return self.budgets.ordered(names)

    def near_budget_band(self) -> float:
        """How close to a budget (%) the latency model cannot tell archs apart: its held-out mean error."""
        return self.latency_session.near_budget_band()

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
            "smallest_macs": self.budgets.smallest_macs,
            "largest_macs": self.budgets.largest_macs,
        }

    def _write_run_file(self) -> None:
        import yaml

        self.results.write_json("run.json", self._run_record)
        atomic_write_text(
            self.results.path("search_config.yaml"), yaml.safe_dump(self.config.to_dict(), sort_keys=False)
        )

    # ---------------------------------------------------------------------------------------------------------------
    # Step 4: evolution per budget, the winner evaluated and timed (a named.json entry)
    # ---------------------------------------------------------------------------------------------------------------
    def search_budget(
        self,
        budget: BudgetSpec,
        index: int,
        predictor: AccuracyPredictor,
        latency: LatencyEfficiency,
        named: dict[str, SearchedSubnet],
    ) -> SearchedSubnet:
        value, nominal = self.budgets.value(budget, named, latency)
        efficiency = self.macs if budget.metric == "macs" else latency
        rng = np.random.default_rng([self.config.seed, 2, index])
        start = time.perf_counter()
        anchor = self.encoder.encode(self.model_config.smallest_arch())
        result = evolutionary_search(
            self.encoder, predictor.predict, efficiency, value, self.config.evolution, rng, anchor=anchor
        )
        seconds = time.perf_counter() - start
        genes, family_note = self.budgets.family_member(budget, result, named, self.macs)
        b_vs_a = None
        if budget.latency_of is not None:
            b_vs_a_start = time.perf_counter()
            genes, b_vs_a = choose_b_model(
                self.latency_session, self.encoder, budget, result, named[budget.latency_of], latency, value
            )
            b_vs_a["seconds"] = time.perf_counter() - b_vs_a_start
        arch = self.encoder.decode(genes)
        record = self.evaluator.evaluate(arch, kind=f"searched:{budget.name}")
        measurement = self.latency_session.measure(arch, keep=True)
        reference = named[budget.latency_of] if budget.latency_of is not None else None
        if b_vs_a is not None:
            b_vs_a.update(
                {
                    "a_accuracy": reference.accuracy,
                    "b_accuracy": record["accuracy"],
                    "a_macs": reference.macs,
                    "b_macs": record["macs"],
                }
            )
        entry = SearchedSubnet(
            name=budget.name,
            arch=arch,
            budget={
                **budget.to_dict(),
                "metric": budget.metric,
                "value": value,
                **({"nominal_measured_ms": nominal} if nominal is not None else {}),
                **({"near_budget_pct": self.near_budget_band()} if budget.latency_of is not None else {}),
                "unit": "MACs" if budget.metric == "macs" else "ms (predicted by the latency model)",
            },
            macs=record["macs"],
            params=record["params"],
            predicted_accuracy=float(predictor.predict(self.encoder.features(genes[None]))[0]),
            accuracy=record["accuracy"],
            latency_ms=measurement["median_ms"],
            latency_measurement=measurement,
            predicted_latency_ms=float(latency(genes[None])[0]),
            evolution={
                **result.summary(),
                "seconds": seconds,
                "seed": [self.config.seed, 2, index],
                "config_fingerprint": self.config.fingerprint("evolution"),
            },
            provenance=self.provenance,
            supernet=self.supernet_name,
            supernet_fingerprint=self.supernet_id,
            config=self.config_name,
            evaluation=self.data.description,
            calibration_batches=self.data.calibration_batches,
            family=family_note or None,
            b_vs_a=b_vs_a,
        )
        logger.info(
            "%s: %.2f M MACs, %.2f ms, top-1 %.2f %% (predicted %.2f %%)",
            budget.name,
            entry.macs / 1e6,
            entry.latency_ms,
            entry.accuracy,
            entry.predicted_accuracy,
        )
        return entry

    # ---------------------------------------------------------------------------------------------------------------
    def run(self, names: list[str] | None = None) -> dict[str, SearchedSubnet]:
        """Run (or resume) the whole search; `names` restricts the budgets searched (plus their dependencies).
        Returns the `named.json` entries, by budget name."""
        budgets = self.check_budgets(names)
        self.data  # noqa: B018 - loads and checks the data: every input is checked before anything is written
        self._write_run_file()
        candidates = self.evaluator.evaluate_candidates()
        predictor = fit_search_predictor(self.encoder, candidates, self.config, self.results)
        latency_model = self.latency_session.fit_latency_model()
        latency = LatencyEfficiency(self.model_config, self.encoder, latency_model)
        named = read_named(self.results, self.model_config)
        order = [b.name for b in self.config.budgets]
        for budget in budgets:
            previous = named.get(budget.name)
            if (
                previous is not None
                and previous.budget.get("metric") == budget.metric
                and previous.budget.get("value") == self.budgets.value(budget, named, latency)[0]
                and previous.evolution.get("config_fingerprint") == self.config.fingerprint("evolution")
            ):
                continue  # done with the same budget and evolution settings
            named[budget.name] = self.search_budget(budget, order.index(budget.name), predictor, latency, named)
            write_named(self.results, named)
        self.latency_session.release()  # the prepared subnets (onnxruntime sessions): not needed after the budgets
        write_pareto(self.results, self.encoder, candidates, named, latency, title=self.provenance)
        run = dict(self._run_record)
        run["status"] = "complete" if all(b.name in named for b in self.config.budgets) else "partial"
        self.results.write_json("run.json", run)
        return named
