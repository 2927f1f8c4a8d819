"""Bad search budgets, latency settings and latency-model data: refused at parse / fit / load with a clear error.

And the latency model's guarantees: it never predicts a negative latency, nor one below the fastest latency it was
fitted on, even on data whose best unconstrained fit has a negative intercept.
"""

import numpy as np
import pytest

from nasvit_hf.search import LatencyConfig, LatencyModel, SearchConfig
from nasvit_hf.search.latency import LATENCY_FEATURE_NAMES, min_fit_archs


def _budgets(*entries):
    return {"budgets": list(entries)}


BAD_SEARCH_CONFIGS = [
    ("zero MACs", _budgets({"name": "a0", "macs_millions": 0}), "macs_millions must be a finite positive number"),
    ("negative MACs", _budgets({"name": "a0", "macs_millions": -5}), "must be a finite positive number"),
    ("MACs as a string", _budgets({"name": "a0", "macs_millions": "300"}), "macs_millions must be a number"),
    ("MACs as a bool", _budgets({"name": "a0", "macs_millions": True}), "macs_millions must be a number"),
    ("NaN MACs", _budgets({"name": "a0", "macs_millions": float("nan")}), "must be a finite positive number"),
    ("negative latency", _budgets({"name": "b0", "latency_ms": -4.99}), "latency_ms must be a finite positive"),
    ("zero latency", _budgets({"name": "b0", "latency_ms": 0}), "latency_ms must be a finite positive"),
    ("fraction above 1", _budgets({"name": "a0", "macs_fraction": 1.5}), "macs_fraction must be in [0, 1]"),
    ("fraction as a string", _budgets({"name": "a0", "macs_fraction": "0.5"}), "macs_fraction must be a number"),
    ("two kinds", _budgets({"name": "a0", "macs_millions": 1, "latency_ms": 2}), "exactly one of"),
    ("no kind", _budgets({"name": "a0"}), "exactly one of"),
    ("latency_of itself", _budgets({"name": "b0", "latency_of": "B0"}), "uses its own latency"),
    ("latency_of a number", _budgets({"name": "b0", "latency_of": 5}), "latency_of must name another budget"),
    ("latency_of unknown", _budgets({"name": "b0", "latency_of": "a0"}), "which has no budget here"),
    (
        "latency_of 2-cycle",
        _budgets({"name": "b0", "latency_of": "b1"}, {"name": "b1", "latency_of": "b0"}),
        "in a cycle (b0 -> b1 -> b0)",
    ),
    (
        "latency_of 3-cycle",
        _budgets(
            {"name": "a0", "macs_millions": 300},
            {"name": "b0", "latency_of": "b2"},
            {"name": "b1", "latency_of": "b0"},
            {"name": "b2", "latency_of": "b1"},
        ),
        "in a cycle",
    ),
    ("duplicate names", _budgets({"name": "a0", "macs_millions": 1}, {"name": "A0", "macs_millions": 2}), "more than"),
    ("too few latency archs", {"latency": {"num_archs": 6}}, "it needs at least 22"),
    (
        "unknown backend",
        {"latency": {"backend": "tensorrt"}},
        "latency.backend must be one of ['eager', 'onnxruntime']",
    ),
    ("int8 on eager", {"latency": {"quantize": "int8"}}, "set latency.backend: onnxruntime"),
    ("int4", {"latency": {"backend": "onnxruntime", "quantize": "int4"}}, "latency.quantize must be null"),
    (
        "onnxruntime on cuda",
        {"latency": {"backend": "onnxruntime", "device": "cuda"}},
        "set latency.device: cpu",
    ),
    ("zero B rounds", {"latency": {"b_vs_a_rounds": 0}}, "latency.b_vs_a_rounds must be in [1, 100000], got 0"),
    ("unknown clock", {"latency": {"clock": "cpu"}}, "latency.clock must be one of ['wall', 'process']"),
    (
        "process clock with threads",
        {"latency": {"clock": "process", "num_threads": 2}},
        "it needs latency.num_threads: 1 (got 2)",
    ),
    ("holdout fraction 0", {"latency": {"holdout_fraction": 0}}, "holdout_fraction must be in (0, 1)"),
    ("holdout fraction 1", {"latency": {"holdout_fraction": 1.0}}, "holdout_fraction must be in (0, 1)"),
    ("zero repeats", {"latency": {"repeats": 0}}, "latency.repeats must be in [1, 1000000], got 0"),
    ("num_archs as a string", {"latency": {"num_archs": "64"}}, "latency.num_archs must be of type int"),
    ("negative warmup", {"latency": {"warmup": -1}}, "latency.warmup must be in [0, 1000000], got -1"),
]


@pytest.mark.parametrize("case, raw, phrase", BAD_SEARCH_CONFIGS, ids=[row[0] for row in BAD_SEARCH_CONFIGS])
def test_bad_search_config_is_refused_at_parse(case, raw, phrase):
    with pytest.raises(ValueError) as error:
        SearchConfig.from_dict(raw)
    assert phrase in str(error.value)


def test_too_few_latency_archs_says_how_many_are_enough():
    with pytest.raises(ValueError, match="Set latency.num_archs to at least 29"):
        LatencyConfig(num_archs=28, holdout_fraction=0.25)
    assert LatencyConfig(num_archs=29, holdout_fraction=0.25).num_fit_archs == min_fit_archs() == 22


NUM_FEATURES = len(LATENCY_FEATURE_NAMES)


def _features(n, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.uniform(1e5, 1e7, size=(n, NUM_FEATURES))
    features[:, -2:] = rng.integers(1, 20, size=(n, 2))  # the block counts
    return features


GOOD = _features(30)
GOOD_MS = 1.0 + GOOD @ np.array([2e-6, 5e-6, 1e-6, 3e-6, 4e-6, 1e-7, 2e-7, 3e-7, 0.3, 0.5])

BAD_FITS = [
    ("too few archs", GOOD[:21], GOOD_MS[:21], "needs at least 22 measured archs"),
    ("negative latency", GOOD, np.where(np.arange(30) == 3, -1.0, GOOD_MS), "finite and positive"),
    ("NaN latency", GOOD, np.where(np.arange(30) == 3, np.nan, GOOD_MS), "finite and positive"),
    ("missing feature column", GOOD[:, :4], GOOD_MS, "one column per latency feature"),
    ("negative feature", GOOD * np.where(np.arange(30) == 0, -1, 1)[:, None], GOOD_MS, "finite and non-negative"),
    ("length mismatch", GOOD, GOOD_MS[:-1], "30 feature rows but 29 latencies"),
]


@pytest.mark.parametrize("case, features, latencies, phrase", BAD_FITS, ids=[row[0] for row in BAD_FITS])
def test_bad_latency_data_is_refused_at_fit(case, features, latencies, phrase):
    with pytest.raises(ValueError) as error:
        LatencyModel().fit(features, latencies)
    assert phrase in str(error.value)


def _state(**changes):
    state = LatencyModel().fit(GOOD, GOOD_MS).state_dict()
    state.update(changes)
    return state


BAD_STATES = [
    ("negative intercept", _state(intercept=-4.99), "could predict a negative latency"),
    ("negative coefficient", _state(coefficients=[1e-6, -1e-6] + [0] * 8), "could predict a negative latency"),
    ("infinite floor", _state(min_latency_ms=float("inf")), "could predict a negative latency"),
    ("wrong length", _state(coefficients=[1e-6, 1e-6]), "needs 10 coefficients"),
    ("strings", _state(coefficients=list("abcdefghij")), "non-numeric values"),
    (
        "unknown features",
        _state(feature_names=["flops"] + LATENCY_FEATURE_NAMES[1:]),
        "unknown or repeated names ['flops']",
    ),
    ("not a list of features", _state(feature_names="macs"), "must be a non-empty list of names"),
]


@pytest.mark.parametrize("case, state, phrase", BAD_STATES, ids=[row[0] for row in BAD_STATES])
def test_bad_latency_model_state_is_refused_at_load(case, state, phrase):
    with pytest.raises(ValueError) as error:
        LatencyModel().load_state_dict(state)
    assert phrase in str(error.value)


def test_latency_model_never_predicts_negative_or_below_the_fastest_measurement():
    # Latency that is best fitted with a large negative intercept (a steep line through fast, tiny archs).
    features = _features(30, seed=1)
    latencies = np.maximum(-5.0 + features[:, 0] * 2e-6 + features[:, 1] * 1e-6, 0.5)
    model = LatencyModel().fit(features, latencies)
    assert model.intercept >= 0 and np.all(model.coefficients >= 0)
    assert model.min_latency_ms == pytest.approx(latencies.min())
    probes = np.vstack([np.zeros(NUM_FEATURES), features.min(axis=0), features * 0.01, features])
    predicted = model.predict(probes)
    assert np.all(predicted >= latencies.min()) and np.all(predicted > 0)
    # Monotone: a larger arch (every feature at least as large) is never predicted faster.
    assert np.all(model.predict(features * 2) >= model.predict(features))


def test_latency_model_state_round_trips_with_its_floor():
    model = LatencyModel().fit(GOOD, GOOD_MS)
    restored = LatencyModel()
    restored.load_state_dict(model.state_dict())
    assert restored.min_latency_ms == model.min_latency_ms > 0
    np.testing.assert_allclose(restored.predict(GOOD), model.predict(GOOD))
