"""Search: encoding, predictor, latency model, constrained evolution, BN recalibration, the resumable pipeline."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from nasvit_hf import NASViTForImageClassification, count_macs
from nasvit_hf.search import (
    AccuracyPredictor,
    ArchEncoder,
    DataConfig,
    EvolutionConfig,
    LatencyModel,
    MacsEfficiency,
    SearchConfig,
    SearchedSubnet,
    SearchResults,
    SearchRun,
    SubnetEvaluator,
    evaluate_subnet,
    evolutionary_search,
    load_evaluation_data,
    load_supernet,
    measure_latency,
    pareto_front,
    read_named,
    sample_within_budget,
    torch_threads,
    write_named,
)
from tests.search_fixtures import SEARCH_CONFIG, load_recipe


# ---------------------------------------------------------------------------------------------------------------------
# Pieces (no trained model)
# ---------------------------------------------------------------------------------------------------------------------
def test_encoder_round_trips_archs_and_vectorises_features(tiny_config):
    encoder = ArchEncoder(tiny_config.search_space)
    genes = encoder.sample(50, np.random.default_rng(0))
    archs = [encoder.decode(row) for row in genes]
    for arch in archs:
        tiny_config.validate_arch(arch)
    np.testing.assert_array_equal(encoder.encode_many(archs), genes)
    features = encoder.features(genes)
    assert features.shape == (50, len(encoder.feature_names))
    assert features[0, encoder.feature_names.index("resolution")] == archs[0]["resolution"]


def test_encoder_rejects_values_outside_the_space(tiny_config):
    arch = tiny_config.largest_arch()
    arch["resolution"] = 224
    with pytest.raises(ValueError, match="resolution"):
        ArchEncoder(tiny_config.search_space).encode(arch)


def _synthetic_predictor(encoder):
    # A known objective: bigger is better, so the search is pushed against the budget.
    weights = np.linspace(1.0, 2.0, len(encoder.feature_names))
    return lambda features: features @ weights


def test_evolution_honours_the_budget_and_is_reproducible(tiny_config):
    encoder = ArchEncoder(tiny_config.search_space)
    macs = MacsEfficiency(tiny_config, encoder)
    budget = 3e6
    settings = EvolutionConfig(population_size=128, parents=16, mutations=16, crossovers=16, generations=8)
    runs = [
        evolutionary_search(encoder, _synthetic_predictor(encoder), macs, budget, settings, np.random.default_rng(3))
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].genes, runs[1].genes)
    np.testing.assert_array_equal(runs[0].final_population, runs[1].final_population)
    assert np.all(macs(runs[0].final_population) <= budget)
    assert runs[0].efficiency <= budget
    assert runs[0].num_scored == 128 + 8 * 32
    assert runs[0].history == sorted(runs[0].history)  # the elite never gets worse


def test_evolution_beats_its_random_start(tiny_config):
    encoder = ArchEncoder(tiny_config.search_space)
    macs = MacsEfficiency(tiny_config, encoder)
    predict = _synthetic_predictor(encoder)
    rng = np.random.default_rng(0)
    start = sample_within_budget(encoder, macs, 4e6, 64, rng)
    settings = EvolutionConfig(population_size=64, parents=16, mutations=16, crossovers=16, generations=10)
    result = evolutionary_search(encoder, predict, macs, 4e6, settings, rng, initial_population=start)
    assert result.predicted_accuracy > predict(encoder.features(start)).max()


def test_tight_budget_is_sampled_through_the_smallest_arch(tiny_config):
    encoder = ArchEncoder(tiny_config.search_space)
    macs = MacsEfficiency(tiny_config, encoder)
    smallest = count_macs(tiny_config, tiny_config.smallest_arch())
    anchor = encoder.encode(tiny_config.smallest_arch())
    budget = smallest * 1.02
    with pytest.raises(ValueError, match="too tight"):
        sample_within_budget(encoder, macs, budget, 32, np.random.default_rng(0), max_rounds=2)
    population = sample_within_budget(encoder, macs, budget, 32, np.random.default_rng(0), anchor=anchor)
    assert len(population) == 32 and np.all(macs(population) <= budget)


def test_predictor_reports_rank_correlations_on_a_validation_half():
    rng = np.random.default_rng(0)
    features = rng.integers(0, 4, size=(80, 6)).astype(float)
    accuracy = features @ np.array([3.0, 2.0, 1.0, 0.5, 0.0, 0.0]) + rng.normal(0, 0.3, 80)
    predictor, metrics = AccuracyPredictor.fit_and_validate(features, accuracy, seed=0)
    assert metrics.num_train == 40 and metrics.num_validation == 40
    assert metrics.kendall_tau > 0.5 and metrics.spearman_rho > 0.7
    assert predictor.predict(features).shape == (80,)


def test_latency_model_recovers_a_linear_latency_and_reports_held_out_error():
    rng = np.random.default_rng(0)
    features = rng.uniform(1e5, 1e7, size=(40, 10))
    features[:, -2:] = rng.integers(1, 20, size=(40, 2))
    latency = 1.0 + features @ np.array([2e-6, 5e-6, 1e-6, 3e-6, 4e-6, 1e-7, 2e-7, 3e-7, 0.3, 0.5])
    model = LatencyModel().fit(features[:30], latency[:30])
    metrics = model.evaluate(features[30:], latency[30:])
    assert metrics["mean_abs_pct_error"] < 1.0 and metrics["num_archs"] == 10
    restored = LatencyModel()
    restored.load_state_dict(json.loads(json.dumps(model.state_dict())))
    np.testing.assert_allclose(restored.predict(features), model.predict(features))


def test_measure_latency_reports_median_and_spread(tiny_config):
    model = NASViTForImageClassification(tiny_config)
    model.sample_min_subnet()
    before = torch.get_num_threads()
    result = measure_latency(model, 32, warmup=1, repeats=3, num_threads=1)
    assert result.q25_ms <= result.median_ms <= result.q75_ms and result.median_ms > 0
    assert result.num_threads == 1 and torch.get_num_threads() == before


def test_pareto_front_keeps_only_non_dominated_points():
    points = [{"macs": 1, "accuracy": 50}, {"macs": 2, "accuracy": 40}, {"macs": 3, "accuracy": 70}]
    assert [p["macs"] for p in pareto_front(points, "macs", "accuracy")] == [1, 3]


def test_jsonl_drops_a_torn_last_line(tmp_path):
    results = SearchResults(tmp_path)
    results.append_jsonl("c.jsonl", {"index": 0})
    with open(tmp_path / "c.jsonl", "a") as file:
        file.write('{"index": 1, "acc')
    assert results.read_jsonl("c.jsonl") == [{"index": 0}]
    assert (tmp_path / "c.jsonl").read_text() == '{"index": 0}\n'


# ---------------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------------
def test_folder_that_is_not_a_nasvit_supernet_is_a_clear_error(tmp_path, tiny_config):
    with pytest.raises(ValueError, match="no config.json"):
        load_supernet(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match="model_type 'vit'"):
        load_supernet(tmp_path)
    subnet_dir = tmp_path / "subnet"
    NASViTForImageClassification(tiny_config.subnet_config(tiny_config.smallest_arch())).save_pretrained(subnet_dir)
    with pytest.raises(ValueError, match="single extracted subnet"):
        load_supernet(subnet_dir)


def test_budget_below_the_smallest_subnet_names_it(tmp_path, tiny_config):
    config = SearchConfig.from_dict({**SEARCH_CONFIG, "budgets": [{"name": "a0", "macs_millions": 0.1}]})
    run = SearchRun(
        NASViTForImageClassification(tiny_config), config, tmp_path, supernet_name="toy", config_name="test.yaml"
    )
    with pytest.raises(ValueError, match=r"below the smallest subnet .* 0\.7\d M MACs"):
        run.check_budgets()


def test_search_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="exactly one of"):
        SearchConfig.from_dict({"budgets": [{"name": "a0", "macs_millions": 1, "latency_ms": 2}]})
    with pytest.raises(ValueError, match="no budget here"):
        SearchConfig.from_dict({"budgets": [{"name": "b0", "latency_of": "a0"}]})
    with pytest.raises(ValueError, match="unknown keys"):
        SearchConfig.from_dict({"evolution": {"populaton_size": 3}})


def test_search_config_dict_has_every_field_and_round_trips():
    config = SearchConfig.from_dict(
        {"seed": 3, "latency": {"repeats": 5}, "budgets": [{"name": "a0", "macs_fraction": 0.1}]}
    )
    values = config.to_dict()
    assert list(values) == SearchConfig.field_names()
    assert values["budgets"] == [{"name": "a0", "macs_fraction": 0.1}]  # a budget lists only the keys it sets
    assert SearchConfig.from_dict(values) == config


# ---------------------------------------------------------------------------------------------------------------------
# With the toy supernet
# ---------------------------------------------------------------------------------------------------------------------
def test_recalibration_beats_the_shared_statistics(toy_supernet_dir):
    supernet = load_supernet(toy_supernet_dir)
    data = load_evaluation_data(DataConfig(batch_size=32, calibration_batches=2))
    generator = torch.Generator().manual_seed(1)
    archs = [supernet.config.smallest_arch()] + [supernet.sample_active_subnet(generator) for _ in range(2)]
    state = {k: v.clone() for k, v in supernet.state_dict().items()}
    recalibrated, shared = [], []
    with torch_threads(1):
        for arch in archs:
            arch = {**arch, "resolution": 32}  # the toy supernet was trained at 32 px
            recalibrated.append(evaluate_subnet(supernet, arch, data, recalibrate=True))
            shared.append(evaluate_subnet(supernet, arch, data, recalibrate=False))
    assert all(r >= s for r, s in zip(recalibrated, shared)), (recalibrated, shared)
    assert sum(recalibrated) > sum(shared) + 10, (recalibrated, shared)
    for key, value in supernet.state_dict().items():  # evaluation leaves the supernet untouched
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_search_writes_results_within_every_budget(search_dir):
    results = SearchResults(search_dir)
    for name in ("run.json", "search_config.yaml", "predictor.json", "latency_model.json", "pareto.json"):
        assert (search_dir / name).is_file(), name
    assert (search_dir / "pareto.png").stat().st_size > 10_000
    assert len(results.read_jsonl("candidates.jsonl")) == 8
    assert len(results.read_jsonl("latency.jsonl")) == 26
    predictor = results.read_json("predictor.json")
    assert {"kendall_tau", "spearman_rho", "num_train", "num_validation"} <= set(predictor)
    latency = results.read_json("latency_model.json")
    assert latency["holdout"]["num_archs"] == 4 and "measurement_noise_median_relative_iqr_pct" in latency
    assert len(results.read_jsonl("latency_repeat.jsonl")) == 4 and latency["measurement_noise_run_to_run_pct"] >= 0
    assert latency["runtime"]["backend"] == "eager" and latency["runtime"]["versions"]["torch"] == torch.__version__
    named = results.read_json("named.json")
    assert set(named) == {"a0", "a2", "b0"}
    for entry in (named["a0"], named["a2"]):
        assert entry["macs"] <= entry["budget"]["value"]
        assert entry["provenance"].startswith("searched on supernet with search_test.yaml")
    assert named["b0"]["budget"]["value"] == named["a0"]["predicted_latency_ms"]
    assert named["b0"]["budget"]["nominal_measured_ms"] == named["a0"]["latency_ms"]
    budget = named["b0"]["budget"]
    assert budget["near_budget_pct"] == latency["holdout"]["mean_abs_pct_error"]
    assert named["b0"]["predicted_latency_ms"] <= budget["value"]
    assert named["b0"]["latency_measurement"]["runtime"]["backend"] == "eager"
    assert results.read_json("run.json")["status"] == "complete"
    fronts = results.read_json("pareto.json")
    accuracies = [p["accuracy"] for p in fronts["accuracy_vs_macs"]]
    assert accuracies == sorted(accuracies)


def test_search_resumes_where_it_stopped(search_dir, toy_supernet_dir, search_config_file, tmp_path, monkeypatch):
    resumed = tmp_path / "resumed"
    shutil.copytree(search_dir, resumed)
    lines = (resumed / "candidates.jsonl").read_text().splitlines()
    (resumed / "candidates.jsonl").write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])  # interrupted mid-write
    named = json.loads((resumed / "named.json").read_text())
    del named["b0"]
    (resumed / "named.json").write_text(json.dumps(named))
    evaluated = []
    original = SubnetEvaluator.evaluate
    monkeypatch.setattr(
        SubnetEvaluator, "evaluate", lambda self, arch, kind: evaluated.append(kind) or original(self, arch, kind)
    )
    load_recipe("search").main(
        ["--supernet", toy_supernet_dir, "--config", str(search_config_file), "--output_dir", str(resumed)]
    )
    assert evaluated == ["sampled"] * 3 + ["searched:b0"]
    by_index = lambda path: {r["index"]: r for r in SearchResults(path).read_jsonl("candidates.jsonl")}  # noqa: E731
    before, after = by_index(search_dir), by_index(resumed)
    assert before == after  # re-evaluated candidates get the same accuracy: evaluation is deterministic
    old, new = SearchResults(search_dir).read_json("named.json"), SearchResults(resumed).read_json("named.json")
    # Same seed, same stored latencies: the same evolution. (B0's final arch is the first of its candidates that a
    # live, interleaved timing finds no slower than A0, so it may differ between two runs on a busy machine.)
    search_summary = lambda entry: {k: v for k, v in entry["evolution"].items() if k != "seconds"}  # noqa: E731
    assert search_summary(new["b0"]) == search_summary(old["b0"])
    assert new["b0"]["budget"] == old["b0"]["budget"]
    assert new["a0"] == old["a0"]


def test_named_entries_read_back_as_searched_subnets_and_write_the_same_json(search_dir, toy_supernet_dir, tmp_path):
    config = load_supernet(toy_supernet_dir).config
    raw = (search_dir / "named.json").read_text()
    named = read_named(SearchResults(search_dir), config)
    assert set(named) == set(json.loads(raw)) and all(isinstance(e, SearchedSubnet) for e in named.values())
    assert named["b0"].b_vs_a is not None and named["a0"].b_vs_a is None
    write_named(SearchResults(tmp_path), named)
    assert (tmp_path / "named.json").read_text() == raw  # same keys, same order, same values


def test_a_named_entry_written_before_the_rename_reads_its_table12_record_as_b_vs_a(search_dir, tmp_path):
    raw = json.loads((search_dir / "named.json").read_text())
    raw["b0"] = {("table12" if key == "b_vs_a" else key): value for key, value in raw["b0"].items()}
    (tmp_path / "named.json").write_text(json.dumps(raw))
    named = read_named(SearchResults(tmp_path))
    assert named["b0"] == read_named(SearchResults(search_dir))["b0"] and named["b0"].b_vs_a["a_model"] == "a0"
    with pytest.warns(FutureWarning, match="SearchedSubnet.table12 is renamed b_vs_a"):
        assert named["b0"].table12 is named["b0"].b_vs_a
    write_named(SearchResults(tmp_path), named)
    assert "table12" not in (tmp_path / "named.json").read_text()  # written back under the new name


NAMED_DAMAGE = [
    ("not a mapping", lambda e: [e], "not a mapping"),
    ("a key missing", lambda e: {k: v for k, v in e.items() if k != "accuracy"}, "missing ['accuracy']"),
    ("an unknown key", lambda e: {**e, "extra": 1}, "unknown keys ['extra']"),
    ("a text accuracy", lambda e: {**e, "accuracy": "high"}, "accuracy is 'high'"),
    ("an accuracy over 100", lambda e: {**e, "accuracy": 250.0}, "accuracy is 250.0"),
    ("a NaN latency", lambda e: {**e, "latency_ms": float("nan")}, "latency_ms is nan"),
    ("negative MACs", lambda e: {**e, "macs": -5}, "macs is -5"),
    ("a bool for a count", lambda e: {**e, "calibration_batches": True}, "calibration_batches is True"),
    ("an unknown budget metric", lambda e: {**e, "budget": {**e["budget"], "metric": "speed"}}, "budget.metric"),
    ("an unknown budget key", lambda e: {**e, "budget": {**e["budget"], "eval": "x"}}, "budget.eval"),
    ("a name under another key", lambda e: {**e, "name": "a0"}, "name is 'a0' under the key 'b0'"),
    ("an arch outside the space", lambda e: {**e, "arch": {**e["arch"], "resolution": 1000}}, "does not fit"),
    ("a B-model record without its A", lambda e: {**e, "b_vs_a": {**e["b_vs_a"], "a_model": None}}, "a_model"),
    ("the record under both names", lambda e: {**e, "table12": e["b_vs_a"]}, "both b_vs_a and its old name table12"),
]  # fmt: skip


@pytest.mark.parametrize("case, damage, phrase", NAMED_DAMAGE, ids=[row[0] for row in NAMED_DAMAGE])
def test_a_damaged_named_entry_is_refused_naming_the_file_and_key(
    search_dir, toy_supernet_dir, tmp_path, case, damage, phrase
):
    named = json.loads((search_dir / "named.json").read_text())
    named["b0"] = damage(named["b0"])
    (tmp_path / "named.json").write_text(json.dumps(named))
    with pytest.raises(ValueError, match="named.json is damaged") as error:
        read_named(SearchResults(tmp_path), load_supernet(toy_supernet_dir).config)
    assert phrase in str(error.value) and "b0" in str(error.value)


def test_resume_refuses_a_different_config(search_dir, toy_supernet_dir, tmp_path):
    resumed = tmp_path / "other"
    shutil.copytree(search_dir, resumed)
    config = SearchConfig.from_dict({**SEARCH_CONFIG, "seed": 5})
    with pytest.raises(ValueError, match="different config"):
        SearchRun(
            load_supernet(toy_supernet_dir),
            config,
            resumed,
            supernet_name="s",
            config_name="c",
            supernet_id=json.loads((search_dir / "run.json").read_text())["supernet_fingerprint"],
        )


@pytest.mark.parametrize("old, new", [("table12", "b_vs_a"), ("runner", "search_run")])
def test_renamed_search_modules_still_import_from_their_old_path_with_a_future_warning(old, new):
    import importlib
    import sys

    sys.modules.pop(f"nasvit_hf.search.{old}", None)
    with pytest.warns(FutureWarning, match=f"nasvit_hf.search.{old} is renamed nasvit_hf.search.{new}"):
        module = importlib.import_module(f"nasvit_hf.search.{old}")
    renamed = importlib.import_module(f"nasvit_hf.search.{new}")
    assert renamed.__all__ and all(getattr(module, name) is getattr(renamed, name) for name in renamed.__all__)
