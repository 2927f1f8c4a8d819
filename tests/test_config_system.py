"""The one config system (nasvit_hf.config_system): loading, coercion, closest-key hints, overrides and --help, for
every recipe's config and options."""

import dataclasses
import warnings

import numpy as np
import pytest

from nasvit_hf.config_system import (
    ConfigError,
    coerce_value,
    config_help,
    field_help,
    load_yaml_mapping,
    parse_command_line,
    parse_overrides,
)
from nasvit_hf.search import SearchConfig
from nasvit_hf.training import TrainingConfig
from nasvit_hf.training.segmentation import SegmentationTrainingConfig
from tests.search_fixtures import load_recipe

CONFIGS = [TrainingConfig, SegmentationTrainingConfig]


@pytest.mark.parametrize("cls", CONFIGS)
def test_exponent_strings_are_floats_in_every_config(cls):
    assert cls.from_dict({"learning_rate": "1e-5"}).learning_rate == pytest.approx(1e-5)
    assert cls.from_yaml(None, {"learning_rate": "2e-4"}).learning_rate == pytest.approx(2e-4)


def test_exponent_strings_are_floats_in_nested_search_sections_and_recipe_options():
    config = SearchConfig.from_dict({"evolution": {"mutation_probability": "1e-1"}})
    assert config.evolution.mutation_probability == pytest.approx(0.1)
    deploy = load_recipe("deploy")
    assert deploy.parse_args(["--model", "m", "--output", "o.onnx", "--atol", "1e-3"]).atol == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("annotation", "value", "expected"),
    [
        (float, 3, 3.0),
        (float, "1e-5", 1e-5),
        (float, "3E4", 3e4),
        (float, np.float32(0.5), 0.5),
        (int, 4.0, 4),
        (int, np.int64(7), 7),
        (int | None, None, None),
        (bool, True, True),
        (list[int], (1, 2), [1, 2]),
        (str | None, "x", "x"),
    ],
)
def test_coercion_accepts_lossless_conversions(annotation, value, expected):
    assert coerce_value("key", value, annotation) == expected


@pytest.mark.parametrize(
    ("annotation", "value", "phrase"),
    [
        (int, "ten", "key must be of type int"),
        (int, "12", "key must be of type int"),  # a quoted number in a YAML file is a string, not a number
        (float, "0.5", "key must be of type float"),
        (int, 2.5, "key must be of type int"),
        (bool, "yes", "key must be of type bool"),  # no truthy strings
        (bool, 1, "key must be of type bool"),
        (str, False, "quote it"),  # YAML reads `no` as false
        (int, None, "cannot be null"),
        (list[int], [1, "a"], r"key\[1\] must be of type int"),
    ],
)
def test_coercion_refuses_other_types_naming_the_key(annotation, value, phrase):
    with pytest.raises(ConfigError, match=phrase):
        coerce_value("key", value, annotation)


@pytest.mark.parametrize(
    ("cls", "values", "hint"),
    [
        (TrainingConfig, {"max_step": 3}, "did you mean 'max_steps'"),
        (SegmentationTrainingConfig, {"learning_rte": 1.0}, "did you mean 'learning_rate'"),
        (SearchConfig, {"evolution": {"populaton_size": 3}}, "did you mean 'population_size'"),
        (SearchConfig, {"predictr": {}}, "did you mean 'predictor'"),
    ],
)
def test_typos_name_the_closest_key_in_every_config(cls, values, hint):
    with pytest.raises(ConfigError, match=hint):
        cls.from_dict(values)


@pytest.mark.parametrize(
    ("recipe", "argv", "hint"),
    [
        ("search", ["--supernet", "s", "--config", "c.yaml", "--ouput_dir", "x"], "did you mean 'output_dir'"),
        (
            "extract",
            ["--supernet", "s", "--names", "a0", "--output_dir", "o", "--overwrit"],
            "did you mean 'overwrite'",
        ),
        ("deploy", ["--model", "m", "--output", "o", "--dynamic_bach"], "did you mean 'dynamic_batch'"),
        ("convert_official_checkpoint", ["--checkpoint", "c", "--output_dir", "o", "--trust"], "trust_checkpoint"),
    ],
)
def test_typos_on_every_recipe_command_line_name_the_closest_key(recipe, argv, hint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_recipe(recipe).parse_args(argv)
    assert exit_info.value.code == 2
    assert hint in capsys.readouterr().err


def test_overrides_parse_yaml_values_dotted_keys_flags_and_lists():
    overrides = parse_overrides(
        ["--max_steps", "7", "--ema_decay=null", "--crop-scale", "[0.5,1.0]", "--latency.repeats", "3", "--overwrite",
         "--names", "a0", "b1", "--output_dir=my-run"],
        flag_keys={"overwrite"},
        list_keys={"names"},
    )  # fmt: skip
    assert overrides == {
        "max_steps": 7,
        "ema_decay": None,
        "crop_scale": [0.5, 1.0],
        "latency.repeats": 3,
        "overwrite": True,
        "names": ["a0", "b1"],
        "output_dir": "my-run",
    }


def test_overrides_win_over_the_file_and_reach_nested_sections(tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text("seed: 1\nlatency:\n  repeats: 30\n  warmup: 4\n")
    config = SearchConfig.from_yaml(path, {"latency.repeats": 3})
    assert (config.latency.repeats, config.latency.warmup, config.seed) == (3, 4, 1)


def test_string_options_keep_what_was_typed():
    # a folder named 2024 or true stays a string: YAML would read a number or a boolean
    # (a str-typed field: `teacher` became the list-valued `teachers`; `auto_augment` is a str field)
    _, overrides, _ = parse_command_line(["--output_dir", "2024", "--auto_augment", "true"], None, TrainingConfig)
    assert overrides == {"output_dir": "2024", "auto_augment": "true"}


def test_bad_yaml_and_other_shapes_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_yaml_mapping(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_yaml_mapping(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml_mapping(tmp_path / "broken.yaml")


def test_renamed_keys_still_load_with_a_future_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = TrainingConfig.from_yaml(None, {"layer_scale": "width"})
    assert config.switchable_scaling == "width"
    assert any(issubclass(w.category, FutureWarning) and "switchable_scaling" in str(w.message) for w in caught)


def test_renamed_section_keys_still_load_from_a_config_file_with_a_future_warning(tmp_path):
    path = tmp_path / "search.yaml"  # e.g. a search_config.yaml saved before the rename
    path.write_text("latency:\n  table12_rounds: 3\n  table12_candidates: 2\n  repeats: 5\n")
    with pytest.warns(FutureWarning) as caught:
        config = SearchConfig.from_yaml(path)
    assert [str(w.message).split(": ", 1)[1] for w in caught] == [
        "key 'latency.table12_rounds' is deprecated, it is now 'latency.b_vs_a_rounds'.",
        "key 'latency.table12_candidates' is deprecated, it is now 'latency.b_vs_a_candidates'.",
    ]  # once each
    assert (config.latency.b_vs_a_rounds, config.latency.b_vs_a_candidates, config.latency.repeats) == (3, 2, 5)
    with pytest.warns(FutureWarning, match="latency.table12_candidates"):
        assert SearchConfig.from_dict({"latency": {"table12_candidates": 4}}).latency.b_vs_a_candidates == 4


def test_renamed_section_keys_still_load_from_the_command_line_with_a_future_warning():
    with pytest.warns(FutureWarning, match="'latency.table12_rounds' is deprecated"):
        _, overrides, _ = parse_command_line(["--latency.table12_rounds", "4"], None, SearchConfig)
        config = SearchConfig.from_yaml(None, overrides)
    assert config.latency.b_vs_a_rounds == 4 and config.latency.b_vs_a_candidates == 8
    with pytest.raises(ConfigError, match="sets both 'latency.table12_rounds' .* keep only 'latency.b_vs_a_rounds'"):
        SearchConfig.from_yaml(None, {"latency.table12_rounds": 4, "latency.b_vs_a_rounds": 5})


def test_renamed_section_keys_keep_the_fingerprints_a_search_recorded_before_the_rename():
    """run.json's section fingerprints (checked on resume) were hashed under the old names: a search started before the
    rename resumes. The values are what the code before the rename computed for these configs."""
    assert SearchConfig().fingerprint("latency") == "6a72587ee8cc53ed"
    config = SearchConfig.from_dict({"latency": {"b_vs_a_rounds": 3, "b_vs_a_candidates": 2, "repeats": 5}})
    assert (config.fingerprint("latency"), config.fingerprint()) == ("91b4370a67d9ae95", "6031b4a992ac2e6b")


def test_field_help_comes_from_the_comment_on_the_field_line():
    helps = field_help(TrainingConfig)
    assert 'or "kl"' in helps["distill_loss"]
    assert helps["overwrite_output_dir"].startswith("delete an earlier run")
    assert "# sandwich step" in config_help(TrainingConfig)


@pytest.mark.parametrize("cls", CONFIGS)
def test_training_configs_declare_no_key_of_their_base_again(cls):
    """The shared keys are TrainingRunConfig's; a recipe's config only adds keys and sets defaults (recipe_defaults)."""
    import ast
    import inspect
    import textwrap

    from nasvit_hf.training.config import TrainingRunConfig

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    declared = {node.target.id for node in tree.body if isinstance(node, ast.AnnAssign)}
    shared = {f.name for f in dataclasses.fields(TrainingRunConfig)}
    assert issubclass(cls, TrainingRunConfig) and declared & shared == set()
    assert shared <= set(cls.field_names())


def test_recipe_defaults_change_only_the_default_of_a_base_key():
    from nasvit_hf.training.config import TrainingRunConfig

    assert SegmentationTrainingConfig().learning_rate == 1e-3 and TrainingConfig().learning_rate == 3e-4
    assert SegmentationTrainingConfig.FIELD_RANGES["learning_rate"] == TrainingRunConfig.FIELD_RANGES["learning_rate"]
    assert field_help(SegmentationTrainingConfig)["max_steps"] == "overrides num_train_epochs"  # the base's comment
    text = config_help(SegmentationTrainingConfig)
    optimisation = text[text.index("# optimisation") : text.index("# evaluation, logging, checkpoints")]
    assert "--learning_rate (float, in (0, inf), default 0.001)" in optimisation  # in its base section
    assert "--head_learning_rate_multiplier" in optimisation  # with the recipe's own keys of that section


def test_recipe_defaults_refuses_a_key_no_base_declares():
    from nasvit_hf.config_system import recipe_defaults
    from nasvit_hf.training.config import TrainingRunConfig

    with pytest.raises(TypeError, match="no base config declaring 'learning_rat'"):

        @dataclasses.dataclass
        @recipe_defaults(learning_rat=1.0)
        class Misspelled(TrainingRunConfig):
            pass


def _fields(cls, prefix=""):
    names = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type) or f.name in {"data", "predictor", "evolution", "latency"}:
            nested = getattr(cls(), f.name) if cls is SearchConfig else None
            names += _fields(type(nested), f"{prefix}{f.name}.") if nested is not None else []
        else:
            names.append(prefix + f.name)
    return names


@pytest.mark.parametrize(
    ("recipe", "classes"),
    [
        ("train", ["TrainingConfig"]),
        ("train_segmentation", ["SegmentationTrainingConfig"]),
        ("search", ["SearchOptions", "SearchConfig"]),
        ("extract", ["ExtractOptions", "SearchConfig"]),
        ("deploy", ["DeployOptions"]),
        ("convert_official_checkpoint", ["ConvertOptions"]),
    ],
)
def test_help_of_every_recipe_lists_every_key(recipe, classes, capsys):
    module = load_recipe(recipe)
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in classes:
        for key in _fields(getattr(module, name)):
            assert f"--{key} " in text, (recipe, key)
    assert "--config FILE" in text and "--debug" in text


# ------------------------------------------------------------------------------------------- NASVIT_STEP_SCALE
def test_step_scale_multiplies_the_declared_counts_from_file_defaults_and_command_line(monkeypatch, tmp_path, caplog):
    path = tmp_path / "train.yaml"
    path.write_text("num_train_epochs: 4\nwarmup_epochs: 0.5\nlearning_rate: 0.002\n")
    monkeypatch.setenv("NASVIT_STEP_SCALE", "0.05")
    with caplog.at_level("WARNING", logger="nasvit_hf.config_system"):
        config = TrainingConfig.from_yaml(path, {"max_steps": 50})
    assert (config.max_steps, config.num_train_epochs, config.warmup_epochs) == (3, pytest.approx(0.2), 0.025)
    assert config.learning_rate == 0.002 and config.warmup_steps is None  # not a count; unset stays unset
    assert "NASVIT_STEP_SCALE=0.05" in caplog.text and "max_steps 50 -> 3" in caplog.text
    search = SearchConfig.from_yaml(None, {"latency.repeats": 10})  # defaults of nested sections are scaled too
    assert (search.latency.repeats, search.predictor.num_subnets, search.evolution.generations) == (3, 52, 2)
    assert search.latency.num_archs == 29  # the floor: what still fits a latency model (22 after the held-out quarter)


def test_step_scale_never_raises_a_count_and_is_off_when_unset(monkeypatch):
    monkeypatch.setenv("NASVIT_STEP_SCALE", "0.5")
    assert TrainingConfig.from_yaml(None, {"max_steps": 1, "warmup_steps": 0}).max_steps == 1
    search = SearchConfig.from_yaml(None, {"latency.num_archs": 24, "latency.holdout_fraction": 0.05})
    assert search.latency.num_archs == 24  # below its floor (29): kept
    monkeypatch.setenv("NASVIT_STEP_SCALE", "")
    assert TrainingConfig.from_yaml(None, {"max_steps": 50}).max_steps == 50
    assert SegmentationTrainingConfig.from_dict({"max_steps": 50}).max_steps == 50  # only from_yaml scales


@pytest.mark.parametrize("value", ["0", "2", "-0.1", "fast", "nan"])
def test_step_scale_outside_zero_to_one_is_refused(monkeypatch, value):
    monkeypatch.setenv("NASVIT_STEP_SCALE", value)
    with pytest.raises(ConfigError, match=r"NASVIT_STEP_SCALE=.* must be a number in \(0, 1\]"):
        TrainingConfig.from_yaml(None, {})


@pytest.mark.parametrize(
    "build, phrase",
    [
        (lambda: TrainingConfig(hflip=None), "hflip must be of type float in [0, 1], got None"),
        (lambda: SegmentationTrainingConfig(hflip=None), "hflip must be of type float in [0, 1], got None"),
        (lambda: TrainingConfig(num_random_subnets=None), "num_random_subnets must be of type int"),
    ],
)
def test_a_ranged_field_that_may_not_be_null_refuses_none_built_in_python(build, phrase):
    with pytest.raises(ValueError) as raised:
        build()
    assert phrase in str(raised.value)


def test_a_ranged_field_that_may_be_null_accepts_none():
    assert TrainingConfig(image_size=None).image_size is None
