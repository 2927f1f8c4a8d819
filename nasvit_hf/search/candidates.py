"""A search's first step: the sampled subnets (seeded, the space's extremes first), each evaluated with BN
recalibration on the search's held-out data, and any subnet's record (MACs, parameters, top-1). Persisted in the
results folder (`sampled_archs.json`, `candidates.jsonl`); a resumed search evaluates only what is missing."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from ..macs import count_macs, count_parameters
from ..models.image_processing_nasvit import NASViTImageProcessor
from .config import resolve_device
from .encoding import ArchEncoder
from .evaluation import EvaluationData, evaluate_subnet, load_evaluation_data
from .results import CANDIDATE_FIELDS
from .step import SearchContext, SearchStep

__all__ = ["SubnetEvaluator"]

logger = logging.getLogger(__name__)


class SubnetEvaluator(SearchStep):
    """Samples and evaluates subnets of the context's supernet for one search, recording into its results folder.

    `data`: the evaluation data (default: loaded on first use from `config.data`, preprocessed by `processor`, and
    checked to have the supernet's number of classes)."""

    def __init__(
        self, context: SearchContext, data: EvaluationData | None = None, processor: NASViTImageProcessor | None = None
    ):
        super().__init__(context)
        self._data = data
        self.processor = processor if processor is not None else (data.processor if data is not None else None)

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

    def sampled_archs(self) -> list[dict[str, Any]]:
        """The archs the predictor is fitted on: read back, or sampled (seed `[seed, 0]`, unique) and written."""
        archs = self.results.read_json("sampled_archs.json", kind=list)
        if archs is not None:
            return [self.results.checked_arch("sampled_archs.json", arch, self.model_config) for arch in archs]
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
        """Every sampled arch's record (`candidates.jsonl`), evaluating the ones not recorded yet."""
        archs = self.sampled_archs()
        records = self.results.read_arch_records("candidates.jsonl", CANDIDATE_FIELDS, self.model_config)
        done = {record["index"]: record for record in records}
        pending = [i for i in range(len(archs)) if i not in done]
        if pending:
            logger.info("evaluating %d of %d sampled subnets (%d done)", len(pending), len(archs), len(done))
        pending.sort(key=lambda i: archs[i]["resolution"])  # one preprocessing per resolution
        device = resolve_device(self.config.device)
        self.supernet.to(device)
        start = time.perf_counter()
        for count, index in enumerate(pending):
            record = self.evaluate(archs[index], kind="sampled")
            record["index"] = index
            self.results.append_jsonl("candidates.jsonl", record)
            done[index] = record
            if (count + 1) % 16 == 0:
                logger.info("evaluated %d/%d (%.1f s)", count + 1, len(pending), time.perf_counter() - start)
        return [done[i] for i in range(len(archs))]

    def evaluate(self, arch: dict[str, Any], kind: str) -> dict[str, Any]:
        """`arch`'s record: top-1 after BN recalibration, MACs and parameters; `kind` says why it was evaluated."""
        accuracy = evaluate_subnet(self.supernet, arch, self.data)
        return {
            "kind": kind,
            "arch": arch,
            "macs": count_macs(self.model_config, arch),
            "params": count_parameters(self.model_config, arch),
            "accuracy": accuracy,
        }
