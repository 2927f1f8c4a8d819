"""Search: BN-recalibrated subnet evaluation, the accuracy predictor, latency measurement and model, and
MACs- / latency-constrained evolutionary search (paper, Appendix C.1/C.2). See `recipes/search.py`."""

from .config import BudgetSpec, LatencyConfig, PredictorConfig, SearchConfig, paper_macs_fraction
from .efficiency import MacsEfficiency
from .encoding import ArchEncoder
from .evaluation import (
    DataConfig,
    EvaluationData,
    evaluate_subnet,
    load_evaluation_data,
    top1_accuracy,
    torch_threads,
)
from .evolution import EvolutionConfig, EvolutionResult, evolutionary_search, sample_within_budget
from .latency import (
    LatencyEfficiency,
    LatencyMeasurement,
    LatencyModel,
    latency_features,
    measure_latency,
    measure_subnet_latency,
)
from .predictor import AccuracyPredictor, PredictorMetrics, rank_metrics
from .results import SearchResults, pareto_front
from .runner import SearchRun, load_supernet, load_supernet_processor, supernet_fingerprint
from .runtimes import EagerBackend, LatencyBackend, OnnxRuntimeBackend, RuntimeSpec, make_backend

__all__ = [
    "AccuracyPredictor",
    "ArchEncoder",
    "BudgetSpec",
    "DataConfig",
    "EagerBackend",
    "EvaluationData",
    "EvolutionConfig",
    "EvolutionResult",
    "LatencyBackend",
    "LatencyConfig",
    "LatencyEfficiency",
    "LatencyMeasurement",
    "LatencyModel",
    "MacsEfficiency",
    "OnnxRuntimeBackend",
    "PredictorConfig",
    "PredictorMetrics",
    "RuntimeSpec",
    "SearchConfig",
    "SearchResults",
    "SearchRun",
    "evaluate_subnet",
    "evolutionary_search",
    "latency_features",
    "load_evaluation_data",
    "load_supernet",
    "load_supernet_processor",
    "make_backend",
    "measure_latency",
    "measure_subnet_latency",
    "paper_macs_fraction",
    "pareto_front",
    "rank_metrics",
    "sample_within_budget",
    "supernet_fingerprint",
    "top1_accuracy",
    "torch_threads",
]
