"""Latency on the deployment runtime, with a fake clock: nothing here depends on the machine's speed.

The runtimes (eager, onnxruntime through `export_onnx`) read time from an injected clock; `SimulatedBackend` runs no
model at all and advances the clock by a latency computed from the arch, so the latency model's fit, the paired
B-vs-A comparison and the B-model's choice in `SearchRun` are exact and reproducible.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasvit_hf import NASViTForImageClassification, count_macs
from nasvit_hf.macs import OPERATOR_COUNT_NAMES, operator_counts
from nasvit_hf.models.search_space_nasvit import sample_arch
from nasvit_hf.presets import get_search_space
from nasvit_hf.search import LatencyModel, RuntimeSpec, SearchConfig, SearchRun, measure_latency, search_run
from nasvit_hf.search.b_vs_a import compare_latency
from nasvit_hf.search.latency import FEATURE_GROUPS, LATENCY_FEATURE_NAMES, latency_features, measure_timed
from nasvit_hf.search.runtimes import LatencyBackend, Timed, time_repeats
from tests.search_fixtures import SEARCH_CONFIG


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SimulatedBackend(LatencyBackend):
    """A runtime whose every batch takes `cost_ms(arch)` on the fake clock, times a seeded jitter in
    [1 - jitter, 1 + jitter]."""

    name = "simulated"

    def __init__(self, cost_ms, jitter: float = 0.0, seed: int = 0):
        super().__init__(RuntimeSpec(), clock=FakeClock())
        self.cost_ms, self.jitter = cost_ms, jitter
        self.rng = np.random.default_rng(seed)
        self.prepared = []

    def prepare(self, model, resolution: int) -> Timed:
        arch = model.config.arch
        self.prepared.append(arch)
        cost = self.cost_ms(arch)

        def call() -> None:
            self.clock.advance(cost * (1 + self.jitter * self.rng.uniform(-1, 1)) / 1000)

        return Timed(call, resolution, num_threads=1)


# ---------------------------------------------------------------------------------------------------------------------
# Operator counts and features
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("space", ["tiny", "reference", "paper"])
def test_operator_macs_add_up_to_count_macs(space):
    import random

    import nasvit_hf

    config = nasvit_hf.NASViTConfig(search_space=get_search_space(space), num_labels=10)
    rng = random.Random(0)
    for arch in [config.smallest_arch(), config.largest_arch()] + [
        sample_arch(config.search_space, rng) for _ in range(5)
    ]:
        counts = operator_counts(config, arch)
        assert set(counts) == set(OPERATOR_COUNT_NAMES)
        assert sum(counts[name] for name in FEATURE_GROUPS["macs"]) == count_macs(config, arch)
        assert all(value >= 0 for value in counts.values())


def test_operator_counts_grow_with_depth_and_resolution(tiny_config):
    small = tiny_config.smallest_arch()
    deeper = {**small, "depth": [d + 1 if i == 3 else d for i, d in enumerate(small["depth"])]}  # mb4: +1 layer
    larger = {**small, "resolution": max(tiny_config.search_space["resolutions"])}
    base, more_layers, more_pixels = (operator_counts(tiny_config, arch) for arch in (small, deeper, larger))
    assert more_layers["transformer_layers"] == base["transformer_layers"] + 1
    assert more_layers["token_activations"] > base["token_activations"]
    assert (
        more_pixels["conv_activations"] > base["conv_activations"]
        and more_pixels["conv_blocks"] == base["conv_blocks"]
    )


def test_latency_features_follow_the_requested_names(tiny_config):
    arch = tiny_config.largest_arch()
    counts = operator_counts(tiny_config, arch)
    assert latency_features(tiny_config, arch).tolist() == [counts[name] for name in LATENCY_FEATURE_NAMES]
    assert latency_features(tiny_config, arch, ["macs"]).tolist() == [count_macs(tiny_config, arch)]


# ---------------------------------------------------------------------------------------------------------------------
# Timing with a clock
# ---------------------------------------------------------------------------------------------------------------------
def test_time_repeats_times_only_the_repeats_on_the_given_clock():
    clock, calls = FakeClock(), []

    def call():
        calls.append(clock())
        clock.advance(0.002 * len(calls))

    times = time_repeats(call, warmup=2, repeats=3, clock=clock)
    assert len(calls) == 5
    assert times == pytest.approx([6.0, 8.0, 10.0])


def test_eager_measurement_reads_the_fake_clock_and_records_the_runtime(tiny_config):
    model = NASViTForImageClassification(tiny_config)
    model.sample_min_subnet()
    clock = FakeClock()
    model.register_forward_pre_hook(lambda module, args, kwargs: clock.advance(0.004), with_kwargs=True)
    before = torch.get_num_threads()
    result = measure_latency(model, 32, warmup=2, repeats=5, num_threads=1, clock=clock)
    assert (result.q25_ms, result.median_ms, result.q75_ms) == pytest.approx((4.0, 4.0, 4.0))
    assert result.backend == "eager" and result.num_threads == 1 and torch.get_num_threads() == before
    runtime = result.runtime
    assert runtime["backend"] == "eager" and runtime["batch_size"] == 1 and runtime["num_threads"] == 1
    assert runtime["versions"]["torch"] == torch.__version__ and "onnxruntime" not in runtime["versions"]


def test_onnxruntime_measurement_times_the_graph_export_onnx_writes(tiny_config, monkeypatch):
    import nasvit_hf.deploy

    exported = []
    original = nasvit_hf.deploy.export_onnx

    def spy(model, output, **kwargs):
        exported.append(kwargs)
        return original(model, output, **kwargs)

    monkeypatch.setattr(nasvit_hf.deploy, "export_onnx", spy)
    supernet = NASViTForImageClassification(tiny_config)
    subnet = supernet.extract_subnet(tiny_config.smallest_arch())
    clock = FakeClock()
    ticking = lambda: clock.advance(0.001) or clock.now  # noqa: E731  (1 ms between two readings)
    result = measure_latency(subnet, 32, backend="onnxruntime", warmup=1, repeats=4, num_threads=1, clock=ticking)
    assert exported == [{"batch_size": 1, "verify": False}]
    assert result.median_ms == pytest.approx(1.0) and result.backend == "onnxruntime"
    runtime = result.runtime
    assert runtime["backend"] == "onnxruntime" and runtime["graph"] == "nasvit_hf.deploy.export_onnx (fp32)"
    assert runtime["versions"]["onnxruntime"] and runtime["export_seconds"] > 0 and runtime["graph_bytes"] > 0


def test_int8_timing_times_the_int8_graph_export_onnx_writes(tiny_config, monkeypatch):
    import nasvit_hf.deploy

    calibrations = []
    original = nasvit_hf.deploy.export_onnx

    def spy(model, output, **kwargs):
        calibrations.append(kwargs.get("calibration"))
        report = original(model, output, **kwargs)
        assert kwargs["quantize"] == "int8" and report.quantization is not None
        return report

    monkeypatch.setattr(nasvit_hf.deploy, "export_onnx", spy)
    subnet = NASViTForImageClassification(tiny_config).extract_subnet(tiny_config.smallest_arch())
    clock = FakeClock()
    ticking = lambda: clock.advance(0.002) or clock.now  # noqa: E731
    result = measure_latency(
        subnet, 32, backend="onnxruntime", quantize="int8", warmup=1, repeats=3, num_threads=1, clock=ticking
    )
    (calibration,) = calibrations
    assert calibration.calibration.shape == (2, 3, 32, 32) and calibration.labels is None
    assert result.median_ms == pytest.approx(2.0)
    assert result.runtime["graph"] == "nasvit_hf.deploy.export_onnx (int8)" and result.runtime["quantize"] == "int8"


def test_onnxruntime_defaults_to_the_cpu_when_the_device_is_auto():
    config = SearchConfig.from_dict({"latency": {"backend": "onnxruntime", "device": "auto"}})
    assert config.with_available_devices().latency.device == "cpu"


# ---------------------------------------------------------------------------------------------------------------------
# The latency model on simulated measurements
# ---------------------------------------------------------------------------------------------------------------------
def _reference_archs(count: int, seed: int):
    import random

    import nasvit_hf

    config = nasvit_hf.NASViTConfig(num_labels=1000)
    rng = random.Random(seed)
    return config, [sample_arch(config.search_space, rng) for _ in range(count)]


def test_latency_model_fitted_on_timed_archs_predicts_held_out_ones():
    """A runtime whose latency is a linear function of the operator counts (with a per-block overhead the MACs do not
    see): the model fitted on 30 fake-clock measurements predicts 10 held-out archs exactly, and without the
    overhead group it cannot."""
    config, archs = _reference_archs(40, seed=0)
    weights = {"pointwise_macs": 4e-8, "depthwise_macs": 2e-7, "linear_macs": 3e-8, "attention_macs": 5e-8}
    weights.update({"conv_activations": 5e-7, "conv_blocks": 0.3, "transformer_layers": 0.8})

    def cost(arch):
        counts = operator_counts(config, arch)
        return 0.5 + sum(weight * counts[name] for name, weight in weights.items())

    backend = SimulatedBackend(cost)
    measured = np.array(
        [measure_timed(backend, backend.prepare(_Subnet(config, a), a["resolution"]), warmup=1, repeats=3).median_ms
         for a in archs]
    )  # fmt: skip
    np.testing.assert_allclose(measured, [cost(a) for a in archs])
    features = np.stack([latency_features(config, a) for a in archs])
    model = LatencyModel().fit(features[:30], measured[:30])
    assert model.evaluate(features[30:], measured[30:])["mean_abs_pct_error"] < 0.5
    no_overhead = [n for n in LATENCY_FEATURE_NAMES if n not in FEATURE_GROUPS["overhead"]]
    reduced = LatencyModel(feature_names=no_overhead)
    reduced.fit(features[:30][:, : len(no_overhead)], measured[:30])
    assert reduced.evaluate(features[30:][:, : len(no_overhead)], measured[30:])["mean_abs_pct_error"] > 2.0


class _Subnet:
    """What `prepare` reads of a model: its config's arch."""

    def __init__(self, config, arch):
        self.config = type("Config", (), {"arch": arch})()


# ---------------------------------------------------------------------------------------------------------------------
# B against A: faster by more than the noise
# ---------------------------------------------------------------------------------------------------------------------
def _pair(a_ms: float, b_ms: float, jitter: float):
    backend = SimulatedBackend(lambda arch: arch["ms"], jitter=jitter, seed=1)
    first = backend.prepare(_Subnet(None, {"ms": a_ms}), 32)
    second = backend.prepare(_Subnet(None, {"ms": b_ms}), 32)
    return compare_latency(backend, first, second, rounds=5, warmup=2, repeats=15)


def test_b_clearly_faster_than_a_is_faster_beyond_the_noise():
    paired = _pair(10.0, 8.0, jitter=0.02)
    assert paired.second_ms < paired.first_ms and paired.faster_beyond_noise
    assert 18 < paired.speedup_pct < 22 and paired.noise_pct < 3
    assert paired.first_quartiles_ms[0] <= paired.first_ms <= paired.first_quartiles_ms[1]


def test_b_faster_by_less_than_the_noise_is_not():
    paired = _pair(10.0, 9.8, jitter=0.25)
    assert paired.noise_pct > paired.speedup_pct and not paired.faster_beyond_noise


def test_noise_is_the_spread_of_round_medians_not_of_single_runs():
    """Single runs jitter by +-20 %, but medians of 15 runs move less between rounds: a B 15 % faster in every round is
    faster beyond the noise, though inside the single runs' inter-quartile range."""
    paired = _pair(0.44, 0.374, jitter=0.2)
    assert paired.within_round_iqr_pct > paired.speedup_pct and paired.faster_every_round
    assert paired.noise_pct < paired.speedup_pct and paired.faster_beyond_noise


def test_one_round_takes_the_spread_of_its_runs_as_the_noise():
    backend = SimulatedBackend(lambda arch: arch["ms"], jitter=0.2, seed=1)
    first, second = (backend.prepare(_Subnet(None, {"ms": ms}), 32) for ms in (10.0, 9.0))
    paired = compare_latency(backend, first, second, rounds=1, warmup=1, repeats=15)
    assert paired.noise_pct == paired.within_round_iqr_pct > 0


def test_paired_rounds_alternate_which_model_runs_first():
    order = []
    backend = SimulatedBackend(lambda arch: 1.0)
    first = Timed(lambda: order.append("a"), 32, num_threads=1)
    second = Timed(lambda: order.append("b"), 32, num_threads=1)
    compare_latency(backend, first, second, rounds=3, warmup=0, repeats=1)
    assert order == ["a", "b"] + ["a", "a", "b", "b"] + ["b", "b", "a", "a"] + ["a", "a", "b", "b"]


# ---------------------------------------------------------------------------------------------------------------------
# The B-model's choice in a search, on a simulated runtime
# ---------------------------------------------------------------------------------------------------------------------
FAKE_CLOCK_SEARCH = {
    **SEARCH_CONFIG,  # the toy supernet's search (tests/search_fixtures.py), with two budgets and 3 rounds for B
    "calibration": {"num_batches": 1},
    "predictor": {"num_subnets": 16, "n_estimators": 20},
    "latency": {**SEARCH_CONFIG["latency"], "repeats": 5, "b_vs_a_rounds": 3, "b_vs_a_candidates": 3},
    "budgets": [{"name": "a2", "macs_fraction": 0.1367}, {"name": "b2", "latency_of": "a2"}],
}


def _search(toy_supernet_dir, tmp_path, cost_ms, jitter=0.01, **latency):
    from nasvit_hf.search import load_supernet

    raw = {**FAKE_CLOCK_SEARCH, "latency": {**FAKE_CLOCK_SEARCH["latency"], **latency}}
    supernet = load_supernet(toy_supernet_dir)
    config = SearchConfig.from_dict(raw)
    backend = SimulatedBackend(lambda arch: cost_ms(supernet.config, arch), jitter=jitter)
    run = SearchRun(supernet, config, tmp_path / "search", supernet_name="toy", config_name="fake", runtime=backend)
    return {name: entry.to_dict() for name, entry in run.run().items()}, run  # named.json's content


def _linear_cost(config, arch):
    counts = operator_counts(config, arch)
    return 1.0 + 2e-7 * counts["pointwise_macs"] + 1e-3 * counts["conv_activations"] + 0.2 * counts["conv_blocks"]


def test_b_model_is_kept_when_measured_faster_than_its_a_model(toy_supernet_dir, tmp_path):
    named, run = _search(toy_supernet_dir, tmp_path, _linear_cost)
    record = named["b2"]["b_vs_a"]
    a_ms, b_ms = (
        _linear_cost(run.model_config, named["a2"]["arch"]),
        _linear_cost(run.model_config, named["b2"]["arch"]),
    )
    assert not record["same_arch_as_a"] and named["b2"]["arch"] != named["a2"]["arch"]
    assert b_ms < a_ms and record["speedup_pct"] > record["noise_pct"]
    assert record["b_latency_ms"] == pytest.approx(b_ms, rel=0.02)
    assert record["a_latency_ms"] == pytest.approx(a_ms, rel=0.02)
    assert record["candidates"][-1]["faster_beyond_noise"] and record["candidates_checked"] == len(
        record["candidates"]
    )
    assert all(not c["faster_beyond_noise"] for c in record["candidates"][:-1])
    assert named["b2"]["predicted_accuracy"] >= named["a2"]["predicted_accuracy"]
    assert named["b2"]["latency_measurement"]["backend"] == "eager"  # the simulated runtime's spec


def test_b_model_is_a_when_no_candidate_is_measured_faster(toy_supernet_dir, tmp_path, monkeypatch):
    """Every B-candidate takes 100 ms more than its operators say (a cost the latency model cannot see): the model
    puts candidates within A2's budget, the re-timing against A2 rejects each one, and B2 falls back to A2's arch
    with the reason."""
    phase = {"b": False}
    original = search_run.choose_b_model

    def in_b_phase(*args, **kwargs):
        phase["b"] = True  # A2 was prepared (and kept) before: only the candidates pay the hidden cost
        return original(*args, **kwargs)

    monkeypatch.setattr(search_run, "choose_b_model", in_b_phase)
    named, run = _search(
        toy_supernet_dir, tmp_path, lambda config, arch: _linear_cost(config, arch) + (100.0 if phase["b"] else 0.0)
    )
    record = named["b2"]["b_vs_a"]
    assert named["b2"]["arch"] == named["a2"]["arch"] and record["same_arch_as_a"]
    assert record["candidates"] and "none of the" in record["note"] and "B2 is A2's arch" in record["note"]
    assert all(c["b_ms"] > 100 and not c["faster_beyond_noise"] for c in record["candidates"])
    assert (
        record["a_latency_ms"]
        == record["b_latency_ms"]
        == pytest.approx(_linear_cost(run.model_config, named["a2"]["arch"]), rel=0.02)
    )


def test_b_candidates_are_within_the_budget_and_flagged_near_it(toy_supernet_dir, tmp_path):
    named, run = _search(toy_supernet_dir, tmp_path, _linear_cost)
    budget, record = named["b2"]["budget"], named["b2"]["b_vs_a"]
    assert budget["near_budget_pct"] == run.near_budget_band() > 0
    assert record["candidates"]
    for candidate in record["candidates"]:
        ratio = candidate["predicted_latency_ms"] / budget["value"]
        assert ratio <= 1 + 1e-9 and candidate["near_budget"] == ((1 - ratio) * 100 <= budget["near_budget_pct"])
        assert candidate["predicted_accuracy"] >= named["a2"]["predicted_accuracy"]


def test_relative_fit_keeps_small_archs_accurate():
    """Latency that grows faster than linearly with the only feature: the plain least-squares fit serves the slow
    archs and misses the fast ones by far more (in %); the relative fit spreads the error more evenly."""
    macs = np.linspace(1e6, 1e8, 30)[:, None]
    latency = 0.5 + 1e-8 * macs[:, 0] + 1e-16 * macs[:, 0] ** 2
    errors = {}
    for relative in (True, False):
        model = LatencyModel(feature_names=["macs"], relative=relative).fit(macs, latency)
        error = np.abs(model.predict(macs) - latency) / latency
        errors[relative] = (error.max(), error[:5].mean())
    assert errors[True][0] < errors[False][0] and errors[True][1] < errors[False][1] / 2


def test_the_latency_configs_measure_arguments_are_its_runtime_spec_plus_the_protocol():
    import dataclasses
    import inspect

    latency = SearchConfig.from_dict(
        {"latency": {"num_threads": 2, "batch_size": 3, "warmup": 4, "repeats": 5, "device": "cpu"}}
    ).latency
    kwargs = latency.measure_kwargs()
    assert set(kwargs) <= set(inspect.signature(measure_latency).parameters)
    spec = RuntimeSpec(**{f.name: kwargs[f.name] for f in dataclasses.fields(RuntimeSpec)})
    assert spec == latency.runtime_spec() and (kwargs["warmup"], kwargs["repeats"]) == (4, 5)
    assert set(kwargs) == {f.name for f in dataclasses.fields(RuntimeSpec)} | {"warmup", "repeats"}
