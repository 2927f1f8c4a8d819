"""Unit tests of the library the training recipes are thin over: checkpoints, run state, parameter groups, BN
statistics, the sandwich settings derived from the training config, and the one atomic writer."""

import json
import os
import stat

import pytest
import torch

from nasvit_hf.calibration import preserved_batchnorm_statistics
from nasvit_hf.training import SandwichConfig, SandwichStepOutput, TrainingConfig
from nasvit_hf.training.checkpointing import (
    CHECKPOINT_RECORD,
    TrainingRun,
    TrainState,
    config_changes,
    find_latest_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    save_checkpoint,
)
from nasvit_hf.training.schedule import build_param_groups
from nasvit_hf.utils.io import OwnershipError, atomic_write_json, atomic_write_text, staging_folder

from ._training_helpers import micro_model


class FakeAccelerator:
    """What save_checkpoint needs of an Accelerator: one process, save_state writing a file."""

    is_main_process = True

    def wait_for_everyone(self):
        pass

    def save_state(self, folder):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "model.safetensors"), "w") as handle:
            handle.write("weights")


def _checkpoint(root, step, run_id=None):
    folder = root / "checkpoints" / f"step_{step}"
    folder.mkdir(parents=True)
    if run_id is not None:
        (folder / CHECKPOINT_RECORD).write_text(json.dumps({"run_id": run_id, "step": step, "config": {}}))
    return folder


def test_train_state_round_trips_and_reads_older_checkpoints():
    state = TrainState()
    state.global_step, state.skipped_steps = 12, 2
    restored = TrainState()
    restored.load_state_dict(state.state_dict())
    assert restored.state_dict() == {"global_step": 12, "consecutive_nonfinite": 0, "skipped_steps": 2}
    older = TrainState()
    older.load_state_dict({"global_step": 5})  # segmentation checkpoints before the shared state
    assert (older.global_step, older.skipped_steps) == (5, 0)


def test_save_checkpoint_is_complete_records_the_config_and_prunes_only_its_run(tmp_path):
    _checkpoint(tmp_path, 1, run_id="other")  # another run's checkpoint, and one without a record
    _checkpoint(tmp_path, 2)
    run = TrainingRun(tmp_path, "mine")
    for step in (3, 4, 5):
        save_checkpoint(FakeAccelerator(), run, step, {"learning_rate": 0.1}, keep=2)
    steps = [step for step, _ in list_checkpoints(tmp_path)]
    assert steps == [1, 2, 4, 5]
    record = json.loads((tmp_path / "checkpoints" / "step_5" / CHECKPOINT_RECORD).read_text())
    assert record["run_id"] == "mine" and record["config"] == {"learning_rate": 0.1} and record["step"] == 5
    assert (tmp_path / "checkpoints" / "step_5" / "model.safetensors").is_file()
    assert not list((tmp_path / "checkpoints").glob(".tmp*"))
    assert find_latest_checkpoint(tmp_path, "mine").name == "step_5"
    assert find_latest_checkpoint(tmp_path, "other").name == "step_1"


def test_prune_never_touches_other_runs(tmp_path):
    for step in (10, 20, 30):
        _checkpoint(tmp_path, step, run_id="old")
    _checkpoint(tmp_path, 1, run_id="new")
    prune_checkpoints(tmp_path, keep=1, run_id="new")
    assert [step for step, _ in list_checkpoints(tmp_path)] == [1, 10, 20, 30]


@pytest.mark.parametrize(
    ("old", "new", "safe", "unsafe"),
    [
        ({"learning_rate": 1e-3}, {"learning_rate": 2e-3}, {}, {"learning_rate": [1e-3, 2e-3]}),
        ({"logging_steps": 1}, {"logging_steps": 5}, {"logging_steps": [1, 5]}, {}),
        ({"max_steps": 10}, {"max_steps": 20}, {"max_steps": [10, 20]}, {}),
        ({"max_steps": 10}, {"max_steps": 5}, {}, {"max_steps": [10, 5]}),
        ({"output_dir": "a"}, {"output_dir": "b"}, {"output_dir": ["a", "b"]}, {}),
        ({}, {"new_key": 1}, {}, {}),  # keys added since the checkpoint was written are not compared
    ],
)
def test_config_changes_split_safe_and_unsafe_keys(old, new, safe, unsafe):
    assert config_changes(old, new, TrainingConfig.RESUME_SAFE_KEYS, TrainingConfig.RESUME_GROWABLE_KEYS) == (
        safe,
        unsafe,
    )


def test_param_groups_follow_no_weight_decay_and_lr_multipliers():
    model = micro_model(num_labels=3)
    skip = model.no_weight_decay()
    assert skip and all("switchable_scaling" in n or "layer_scale" in n or "bias_table" in n for n in skip)
    decay, no_decay = build_param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 and names[id(p)] not in skip for p in decay["params"])
    assert {names[id(p)] for p in no_decay["params"]} >= skip
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    groups = build_param_groups(
        model, 0.01, {"classifier.": 10.0}, learning_rate=1e-3, no_decay_for_norms_and_tables=False
    )
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-2)]
    assert all(names[id(p)].startswith("classifier.") for p in groups[1]["params"])
    with pytest.raises(ValueError, match="need learning_rate"):
        build_param_groups(model, 0.01, {"classifier.": 10.0})


def test_sandwich_config_is_derived_from_the_training_config():
    config = TrainingConfig(num_random_subnets=3, gradient_priority="sup", gradient_granularity="global", iw_clip=2.0)
    sandwich = SandwichConfig.from_training_config(config)
    assert (sandwich.num_random_subnets, sandwich.priority, sandwich.granularity, sandwich.iw_clip) == (
        3,
        "sup",
        "global",
        2.0,
    )
    assert sandwich.max_grad_norm == config.max_grad_norm and sandwich.dropout == config.dropout


def test_preserved_batchnorm_statistics_restores_running_stats():
    model = micro_model(num_labels=3)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    with preserved_batchnorm_statistics(model):
        model.train()(torch.randn(2, 3, 32, 32))
        assert any(not torch.equal(m.running_mean, b) for m, b in zip(norms, before))
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_and_folders_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "b.json", {"x": 1})
        with staging_folder(tmp_path / "folder") as folder:
            (folder / "inside.txt").write_text("y")
    finally:
        os.umask(previous)
    for path, full in ((tmp_path / "a.txt", 0o666), (tmp_path / "b.json", 0o666), (tmp_path / "folder", 0o777)):
        assert stat.S_IMODE(path.stat().st_mode) == full & ~umask, path


def test_staging_folder_replaces_only_its_own_folders_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "out"
    with staging_folder(target, marker=".made_by_me") as folder:
        (folder / "v1").write_text("1")
    with staging_folder(target, marker=".made_by_me") as folder:
        (folder / "v2").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == [".made_by_me", "v2"]
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("precious")
    with pytest.raises(OwnershipError, match="was not written by this tool"):
        with staging_folder(foreign, marker=".made_by_me"):
            pass
    assert (foreign / "chapter1.tex").read_text() == "precious"
    with pytest.raises(RuntimeError):
        with staging_folder(target, marker=".made_by_me") as folder:
            raise RuntimeError("interrupted")
    assert (target / "v2").is_file() and not list(tmp_path.glob(".out.tmp-*"))


def test_staging_folder_replaces_a_folder_holding_an_earlier_name_of_its_marker(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / ".made_by_me_v1").write_text("{}")
    with pytest.raises(OwnershipError, match="was not written by this tool"):
        with staging_folder(old, marker=".made_by_me"):  # without the earlier name it is not ours
            pass
    with staging_folder(old, marker=".made_by_me", legacy_markers=(".made_by_me_v1",)) as folder:
        (folder / "v2").write_text("2")
    assert sorted(p.name for p in old.iterdir()) == [".made_by_me", "v2"]  # the new marker, not the old one
    with staging_folder(tmp_path / "plain") as folder:  # no marker: any existing folder is replaced (overwrite=True)
        (folder / "a").write_text("a")
    with staging_folder(tmp_path / "plain") as folder:
        (folder / "b").write_text("b")
    assert [p.name for p in (tmp_path / "plain").iterdir()] == ["b"]


def test_the_summary_of_a_resumed_run_counts_this_sessions_steps(tmp_path):
    from nasvit_hf.training.loop import write_summary

    fresh = {"steps": 30, "session_steps": 30, "resumed_from_step": None, "seconds": 12.0, "skipped_steps": 0}
    assert write_summary(tmp_path, fresh, {}).startswith("Trained 30 sandwich steps in 12 s (0 skipped).")
    resumed = dict(fresh, session_steps=10, resumed_from_step=20)
    text = write_summary(tmp_path, resumed, {})
    assert text.startswith("Trained 10 sandwich steps in 12 s, resumed at step 20: the run is at step 30")
    assert json.loads((tmp_path / "summary.json").read_text())["session_steps"] == 10


@pytest.mark.parametrize(
    ("epochs", "value", "expected"),
    [
        (360, "table4", [1, 90, 180, 270, 360]),
        (400, "table4", [1, 100, 200, 300, 400]),
        (4, "table4", [1, 2, 3, 4]),
        (2, "table4", [1, 2]),
        (10, [3, 12, 3], [3]),
        (10, None, []),
    ],
)
def test_snapshot_epochs_scale_table4_to_the_run(epochs, value, expected):
    from nasvit_hf.training.classification import resolve_snapshot_epochs

    assert resolve_snapshot_epochs(value, epochs) == expected


def test_snapshot_saves_a_loadable_supernet_and_keeps_the_active_arch(tmp_path):
    from nasvit_hf.search import load_supernet
    from nasvit_hf.training import TrainingConfig
    from nasvit_hf.training.classification import save_snapshot

    model = micro_model()
    arch = model.sample_min_subnet()
    folder = save_snapshot(tmp_path, model, 3)
    assert folder == tmp_path / "snapshots" / "epoch_3" and model.active_arch == arch
    loaded = load_supernet(folder)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    with pytest.raises(ValueError, match="snapshot_epochs"):
        TrainingConfig(snapshot_epochs="table5")


@pytest.mark.parametrize(
    ("every", "expected"), [(3, [3, 6, 7]), (10, [7]), (None, []), (0, [])], ids=["every3", "past_end", "none", "zero"]
)
def test_checkpoints_are_due_every_checkpointing_steps_and_at_the_last_step(tmp_path, every, expected):
    from nasvit_hf.training.loop import save_checkpoint_if_due
    from nasvit_hf.training.segmentation import SegmentationTrainingConfig

    run = TrainingRun(tmp_path, "mine")
    settings = {"checkpointing_steps": every, "checkpoints_total_limit": 10, "output_dir": str(tmp_path)}
    configs = [SegmentationTrainingConfig(**settings)]
    if every != 0:  # 0 is segmentation's "no checkpoints"; classification says null
        configs.append(TrainingConfig(**settings))
    for config in configs:
        saved = [step for step in range(1, 8) if save_checkpoint_if_due(FakeAccelerator(), run, config, step, 7)]
        assert saved == expected
        assert [step for step, _ in list_checkpoints(tmp_path)] == expected
        for step in expected:
            record = json.loads((tmp_path / "checkpoints" / f"step_{step}" / CHECKPOINT_RECORD).read_text())
            assert record["config"] == config.to_dict() and record["total_steps"] == 7


def test_session_counts_say_where_a_resumed_session_started():
    from nasvit_hf.training.loop import session_counts

    assert session_counts(30, 0, resumed=False) == {"session_steps": 30, "resumed_from_step": None}
    assert session_counts(30, 20, resumed=True) == {"session_steps": 10, "resumed_from_step": 20}


def test_skipped_steps_are_counted_and_too_many_in_a_row_stop_the_run():
    from accelerate import PartialState

    from nasvit_hf.config_system import RecipeError
    from nasvit_hf.training.loop import check_nonfinite_limit, count_skipped_step

    PartialState(cpu=True)  # the loop's logger is Accelerate's (main-process warnings)
    nan = float("nan")
    good = SandwichStepOutput({"total": 1.0}, [], 0.1, 1.0, 1.0, True, False)
    bad = SandwichStepOutput({"total": nan}, [], nan, nan, nan, False, True, "non-finite loss")
    state = TrainState()
    for output in (bad, good, bad, bad):
        count_skipped_step(state, output)
        check_nonfinite_limit(state, output, max_consecutive=3)
        state.global_step += 1
    assert (state.skipped_steps, state.consecutive_nonfinite) == (3, 2)
    count_skipped_step(state, bad)
    with pytest.raises(RecipeError, match="3 consecutive steps .*non-finite loss.*Lower learning_rate"):
        check_nonfinite_limit(state, bad, max_consecutive=3)


@pytest.mark.parametrize("name", ["write_summary", "sandwich_update", "multi_cpu_launch", "step_record"])
def test_the_loop_helpers_still_import_from_classification_with_a_future_warning(name):
    from nasvit_hf.training import classification, loop

    with pytest.warns(FutureWarning, match=f"moved to nasvit_hf.training.loop.{name}"):
        assert getattr(classification, name) is getattr(loop, name)
    with pytest.raises(AttributeError, match="no attribute 'save_checkpoint_if_due'"):
        getattr(classification, "save_checkpoint_if_due")  # noqa: B009  (a name that never lived here)
