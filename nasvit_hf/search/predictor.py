"""The accuracy predictor: a random forest from the arch encoding to held-out top-1 (paper, Appendix C.1).

Fitted on subnets whose accuracy was measured (BN recalibrated, held-out split), validated on a disjoint half with
rank correlations (Kendall's tau, Spearman's rho): what matters for search is ranking, not the absolute value.
The forest is seeded, so a predictor refitted from the same evaluated candidates is the same predictor; search
results therefore store the candidates and the seed rather than a pickle.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .config import SearchConfig
from .encoding import ArchEncoder
from .results import SearchResults

__all__ = ["AccuracyPredictor", "PredictorMetrics", "fit_search_predictor", "rank_metrics"]

logger = logging.getLogger(__name__)


@dataclass
class PredictorMetrics:
    kendall_tau: float
    spearman_rho: float
    rmse: float
    num_train: int
    num_validation: int

    def to_dict(self) -> dict:
        return asdict(self)


def rank_metrics(predicted: np.ndarray, measured: np.ndarray) -> tuple[float, float]:
    """Kendall's tau and Spearman's rho between predicted and measured values (NaN-free: 0 when constant)."""
    from scipy.stats import kendalltau, spearmanr

    predicted = np.asarray(predicted, dtype=np.float64)
    measured = np.asarray(measured, dtype=np.float64)
    if len(measured) < 2 or np.ptp(measured) == 0 or np.ptp(predicted) == 0:
        return 0.0, 0.0
    return float(kendalltau(predicted, measured).statistic), float(spearmanr(predicted, measured).statistic)


class AccuracyPredictor:
    """`sklearn.ensemble.RandomForestRegressor` on `ArchEncoder.features`; `predict` takes a whole population."""

    def __init__(self, n_estimators: int = 100, min_samples_leaf: int = 1, seed: int = 0):
        from sklearn.ensemble import RandomForestRegressor

        self.forest = RandomForestRegressor(
            n_estimators=n_estimators, min_samples_leaf=min_samples_leaf, random_state=seed, n_jobs=1
        )
        self.is_fitted = False

    def fit(self, features: np.ndarray, accuracies: np.ndarray) -> AccuracyPredictor:
        features = np.asarray(features, dtype=np.float64)
        if len(features) < 2:
            raise ValueError(f"the accuracy predictor needs at least 2 evaluated subnets, got {len(features)}.")
        self.forest.fit(features, np.asarray(accuracies, dtype=np.float64))
        self.is_fitted = True
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        if not self.is_fitted:
            raise RuntimeError("the accuracy predictor is not fitted: call fit() first.")
        return self.forest.predict(np.atleast_2d(np.asarray(features, dtype=np.float64)))

    def evaluate(self, features: np.ndarray, accuracies: np.ndarray, num_train: int = 0) -> PredictorMetrics:
        predicted = self.predict(features)
        accuracies = np.asarray(accuracies, dtype=np.float64)
        tau, rho = rank_metrics(predicted, accuracies)
        rmse = float(np.sqrt(np.mean((predicted - accuracies) ** 2)))
        return PredictorMetrics(tau, rho, rmse, num_train, len(accuracies))

    @classmethod
    def fit_and_validate(
        cls,
        features: np.ndarray,
        accuracies: np.ndarray,
        *,
        validation_fraction: float = 0.5,
        n_estimators: int = 100,
        seed: int = 0,
    ) -> tuple[AccuracyPredictor, PredictorMetrics]:
        """The paper's protocol: shuffle (seeded), fit on `1 - validation_fraction`, report rank correlations on the
        rest; then refit on everything for search (more data, same hyper-parameters). Returns (predictor, metrics)."""
        features = np.asarray(features, dtype=np.float64)
        accuracies = np.asarray(accuracies, dtype=np.float64)
        if not 0.0 < validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}.")
        count = len(features)
        num_validation = int(round(count * validation_fraction))
        if count < 4 or num_validation < 2 or count - num_validation < 2:
            raise ValueError(
                f"{count} evaluated subnets are too few to fit and validate the predictor (need at least 2 on each "
                "side); raise predictor.num_subnets in the search config."
            )
        order = np.random.default_rng(seed).permutation(count)
        validation, train = order[:num_validation], order[num_validation:]
        holdout = cls(n_estimators=n_estimators, seed=seed).fit(features[train], accuracies[train])
        metrics = holdout.evaluate(features[validation], accuracies[validation], num_train=len(train))
        return cls(n_estimators=n_estimators, seed=seed).fit(features, accuracies), metrics


def fit_search_predictor(
    encoder: ArchEncoder, candidates: list[dict[str, Any]], config: SearchConfig, results: SearchResults
) -> AccuracyPredictor:
    """A search's step 2: the predictor fitted (and validated, `fit_and_validate`) on the evaluated candidates'
    encoded archs and top-1, its report written to `predictor.json`."""
    genes = encoder.encode_many([c["arch"] for c in candidates])
    accuracies = np.array([c["accuracy"] for c in candidates])
    settings = config.predictor
    predictor, metrics = AccuracyPredictor.fit_and_validate(
        encoder.features(genes),
        accuracies,
        validation_fraction=settings.validation_fraction,
        n_estimators=settings.n_estimators,
        seed=config.seed,
    )
    report = {
        **metrics.to_dict(),
        "model": f"RandomForestRegressor(n_estimators={settings.n_estimators}, random_state={config.seed})",
        "features": encoder.feature_names,
        "refit_on_all": len(candidates),
    }
    results.write_json("predictor.json", report)
    logger.info("predictor: Kendall tau %.3f, Spearman rho %.3f", metrics.kendall_tau, metrics.spearman_rho)
    return predictor
