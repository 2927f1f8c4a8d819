"""Resume: every checkpoint records the config it ran with; changing a key that changes the model, data,
optimisation or schedule fails with one error listing each key, safe changes are appended to a history, and the
record of what ran is never overwritten."""

import json
import sys
from pathlib import Path

import pytest

from nasvit_hf.training import TrainingConfig
from nasvit_hf.training.checkpointing import (
    CHECKPOINT_RECORD,
    CONFIG_HISTORY,
    ResumeConfigError,
    RunFolderError,
    load_run_config,
    start_run,
    start_run_from_config,
)
from nasvit_hf.training.segmentation import SegmentationTrainingConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRAINING_CONFIG = ROOT / "recipes" / "configs" / "digits_tiny.yaml"
RAN = TrainingConfig(learning_rate=1e-3, seed=1, max_steps=10).to_dict()


def _run_folder(tmp_path):
    folder = tmp_path / "run"
    checkpoint = folder / "checkpoints" / "step_4"
    checkpoint.mkdir(parents=True)
    (checkpoint / CHECKPOINT_RECORD).write_text(json.dumps({"run_id": "r", "step": 4, "config": RAN}))
    (folder / "nasvit_run.json").write_text(json.dumps({"run_id": "r"}))
    (folder / "training_config.json").write_text(json.dumps(RAN))
    return folder


def _resume(folder, **changes):
    config = dict(RAN, **changes)
    return start_run(
        folder,
        config,
        kind="classification",
        resume_from_checkpoint="latest",
        overwrite_output_dir=False,
        safe_keys=TrainingConfig.RESUME_SAFE_KEYS,
        growable_keys=TrainingConfig.RESUME_GROWABLE_KEYS,
    )


UNSAFE = [
    ({"learning_rate": 2e-3}, ["learning_rate: 0.001 -> 0.002"]),
    ({"seed": 2, "per_device_train_batch_size": 8}, ["per_device_train_batch_size: 32 -> 8", "seed: 1 -> 2"]),
    ({"num_random_subnets": 4}, ["num_random_subnets: 2 -> 4"]),
    ({"switchable_scaling": "width"}, ["switchable_scaling: 'tokens' -> 'width'"]),
    ({"max_steps": 5}, ["max_steps: 10 -> 5"]),
    ({"dataset": "imagefolder", "data_dir": "x"}, ["data_dir: None -> 'x'", "dataset: 'digits' -> 'imagefolder'"]),
]


@pytest.mark.parametrize(("changes", "listed"), UNSAFE)
def test_unsafe_changes_fail_with_every_key_listed_and_nothing_written(tmp_path, changes, listed):
    folder = _run_folder(tmp_path)
    with pytest.raises(ResumeConfigError, match="cannot resume") as error:
        _resume(folder, **changes)
    message = str(error.value)
    for item in listed:
        assert item in message
    assert message.count("->") == len(listed)
    assert json.loads((folder / "training_config.json").read_text()) == RAN
    assert not (folder / CONFIG_HISTORY).exists()


def test_safe_changes_are_appended_to_the_history_never_over_the_record(tmp_path):
    folder = _run_folder(tmp_path)
    run = _resume(folder, logging_steps=10, max_steps=20, num_workers=2)
    assert run.changes == {"logging_steps": [1, 10], "max_steps": [10, 20], "num_workers": [0, 2]}
    run = _resume(folder, report_to="none")
    history = [json.loads(line) for line in (folder / CONFIG_HISTORY).read_text().splitlines()]
    assert [entry["changes"] for entry in history] == [
        {"logging_steps": [1, 10], "max_steps": [10, 20], "num_workers": [0, 2]},
        {"report_to": ["tensorboard", "none"]},
    ]
    assert json.loads((folder / "training_config.json").read_text()) == RAN


def _segmentation_args(output_dir, **overrides):
    values = {
        "output_dir": str(output_dir),
        "report_to": "none",
        "search_space": "tiny",
        "arch": "smallest",
        "decoder_hidden_size": 16,
        "digits_size": 32,
        "crop_size": [32, 32],
        "scale_base": [32, 32],
        "digits_num_train": 16,
        "digits_num_validation": 4,
        "per_device_train_batch_size": 8,
        "checkpointing_steps": 2,
        "eval_every_steps": 100,
        **overrides,
    }
    return [item for key, value in values.items() for item in (f"--{key}", json.dumps(value))]


def test_segmentation_resume_checks_the_recorded_config_end_to_end(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        import train_segmentation
    finally:
        sys.path.remove(str(ROOT / "recipes"))
    from nasvit_hf.config_system import run_recipe

    train_segmentation.main(_segmentation_args(tmp_path, max_steps=2))
    record = json.loads((tmp_path / "checkpoints" / "step_2" / CHECKPOINT_RECORD).read_text())
    assert SegmentationTrainingConfig.from_dict(record["config"]).max_steps == 2
    with pytest.raises(SystemExit) as exit_info:
        run_recipe(
            train_segmentation.main,
            _segmentation_args(tmp_path, max_steps=4, learning_rate=0.01, resume_from_checkpoint="latest"),
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"learning_rate: {record['config']['learning_rate']} -> 0.01" in err, err[-600:]
    summary = train_segmentation.main(
        _segmentation_args(tmp_path, max_steps=4, logging_steps=1, resume_from_checkpoint="latest")
    )
    assert summary["steps"] == 4
    history = [json.loads(line) for line in (tmp_path / CONFIG_HISTORY).read_text().splitlines()]
    assert history[-1]["changes"] == {"max_steps": [2, 4], "logging_steps": [record["config"]["logging_steps"], 1]}
    assert json.loads((tmp_path / "training_config.json").read_text())["max_steps"] == 2


# --------------------------------------------------------------------------- the config a resumed run starts from
def _recorded_run(tmp_path, **config):
    """A run folder as `train.py --max_steps 50 --output_dir <folder> --seed 1` leaves it (checkpoint step_50)."""
    folder = tmp_path / "runs" / "try"
    recorded = TrainingConfig(max_steps=50, seed=1, output_dir=str(folder), **config).to_dict()
    checkpoint = folder / "checkpoints" / "step_50"
    checkpoint.mkdir(parents=True)
    record = {"run_id": "r", "step": 50, "total_steps": 50, "config": recorded}
    (checkpoint / CHECKPOINT_RECORD).write_text(json.dumps(record))
    (folder / "nasvit_run.json").write_text(json.dumps({"run_id": "r"}))
    (folder / "training_config.json").write_text(json.dumps(recorded))
    return folder, recorded


def _start(config):
    return start_run_from_config(config, "classification")


def test_resume_latest_takes_the_runs_recorded_config_not_the_yaml_defaults(tmp_path):
    folder, recorded = _recorded_run(tmp_path)
    overrides = {"output_dir": str(folder), "resume_from_checkpoint": "latest"}
    config = load_run_config(TrainingConfig, overrides, None, DEFAULT_TRAINING_CONFIG)
    assert (config.max_steps, config.seed) == (50, 1)  # the YAML file says max_steps null, seed 42
    assert {k: v for k, v in config.to_dict().items() if k != "resume_from_checkpoint"} == {
        k: v for k, v in recorded.items() if k != "resume_from_checkpoint"
    }
    run = _start(config)
    assert run.resume_path == folder / "checkpoints" / "step_50" and run.changes == {}


def test_resume_from_a_checkpoint_path_continues_in_that_runs_folder(tmp_path, monkeypatch):
    folder, _ = _recorded_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    overrides = {"resume_from_checkpoint": "runs/try/checkpoints/step_50"}  # no --output_dir: docs/training.md
    config = load_run_config(TrainingConfig, overrides, None, DEFAULT_TRAINING_CONFIG)
    assert Path(config.output_dir) == Path("runs/try") and config.seed == 1
    assert _start(config).run_id == "r"


def test_resume_checks_only_what_the_command_line_changes(tmp_path):
    folder, _ = _recorded_run(tmp_path)
    base = {"output_dir": str(folder), "resume_from_checkpoint": "latest"}
    config = load_run_config(TrainingConfig, {**base, "seed": 2, "logging_steps": 5}, None, DEFAULT_TRAINING_CONFIG)
    with pytest.raises(ResumeConfigError, match=r"\(seed: 1 -> 2\)"):
        _start(config)
    config = load_run_config(TrainingConfig, {**base, "max_steps": 80}, None, DEFAULT_TRAINING_CONFIG)
    assert _start(config).changes == {"max_steps": [50, 80]}


def test_resume_with_a_named_config_file_compares_that_files_keys(tmp_path):
    folder, _ = _recorded_run(tmp_path)
    base = {"output_dir": str(folder), "resume_from_checkpoint": "latest"}
    config = load_run_config(TrainingConfig, base, str(DEFAULT_TRAINING_CONFIG), DEFAULT_TRAINING_CONFIG)
    with pytest.raises(ResumeConfigError) as error:  # the file sets seed 42 and the digits recipe's learning rate
        _start(config)
    assert "seed: 1 -> 42" in str(error.value) and "max_steps" not in str(error.value)


def test_resume_of_a_run_without_a_record_falls_back_to_the_yaml_file(tmp_path):
    overrides = {"output_dir": str(tmp_path / "nothing"), "resume_from_checkpoint": "latest"}
    config = load_run_config(TrainingConfig, overrides, None, DEFAULT_TRAINING_CONFIG)
    assert config.seed == 42
    with pytest.raises(RunFolderError, match="no checkpoint under"):
        _start(config)


def test_max_steps_may_grow_past_the_length_the_epochs_gave_the_run(tmp_path):
    folder, recorded = _recorded_run(tmp_path)
    record_path = folder / "checkpoints" / "step_50" / CHECKPOINT_RECORD
    record = json.loads(record_path.read_text())
    record["config"]["max_steps"] = None  # the run's length came from its epochs: 50 steps
    record_path.write_text(json.dumps(record))
    base = {"output_dir": str(folder), "resume_from_checkpoint": "latest"}
    config = load_run_config(TrainingConfig, {**base, "max_steps": 200}, None, DEFAULT_TRAINING_CONFIG)
    assert _start(config).changes == {"max_steps": [50, 200]}
    config = load_run_config(TrainingConfig, {**base, "max_steps": 20}, None, DEFAULT_TRAINING_CONFIG)
    with pytest.raises(ResumeConfigError, match="max_steps: 50 -> 20"):
        _start(config)


def test_segmentation_resume_needs_only_the_output_dir_and_counts_this_sessions_steps(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        import train_segmentation
    finally:
        sys.path.remove(str(ROOT / "recipes"))
    monkeypatch.chdir(tmp_path)
    train_segmentation.main(_segmentation_args("run", max_steps=2, seed=3))
    summary = train_segmentation.main(
        ["--output_dir", "run", "--resume_from_checkpoint", "latest", "--max_steps", "3"]
    )
    assert (summary["steps"], summary["session_steps"], summary["resumed_from_step"]) == (3, 1, 2)
    history = [json.loads(line) for line in Path("run", CONFIG_HISTORY).read_text().splitlines()]
    assert history == [dict(history[0], changes={"max_steps": [2, 3]})]  # seed 3 and the rest came from the record
    summary = train_segmentation.main(["--resume_from_checkpoint", "run/checkpoints/step_3"])
    assert (summary["steps"], summary["session_steps"]) == (3, 0)
