"""Output folders: a fresh training run never mixes into (or deletes) another run's folder unless told to, pruning
only removes the current run's checkpoints, and nothing a user owns is lost."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nasvit_hf.config_system import ConfigError
from nasvit_hf.training.checkpointing import (
    CHECKPOINT_RECORD,
    RUN_MARKER,
    RunFolderError,
    list_checkpoints,
    start_run,
)

ROOT = Path(__file__).resolve().parents[1]
SAFE = frozenset({"logging_steps"})


def _earlier_run(folder: Path) -> None:
    (folder / "checkpoints" / "step_40").mkdir(parents=True)
    (folder / "checkpoints" / "step_40" / CHECKPOINT_RECORD).write_text(json.dumps({"run_id": "old", "config": {}}))
    (folder / "train_log.jsonl").write_text('{"step": 40}\n')
    (folder / RUN_MARKER).write_text(json.dumps({"run_id": "old"}))
    (folder / "final").mkdir()
    (folder / "my_notes.txt").write_text("not the run's")


def _start(folder, resume=None, overwrite=False, config=None):
    return start_run(
        folder,
        config or {"learning_rate": 0.1},
        kind="classification",
        resume_from_checkpoint=resume,
        overwrite_output_dir=overwrite,
        safe_keys=SAFE,
    )


FOLDER_CASES = [
    # (resume, overwrite, error type, phrase)
    (None, False, RunFolderError, "holds an earlier training run"),
    ("latest", True, ConfigError, "contradict each other"),
    ("{tmp}/nowhere", False, RunFolderError, "is not a checkpoint folder"),
]


@pytest.mark.parametrize(("resume", "overwrite", "error", "phrase"), FOLDER_CASES)
def test_a_folder_holding_a_run_is_refused_and_kept(tmp_path, resume, overwrite, error, phrase):
    _earlier_run(tmp_path)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(error, match=phrase):
        _start(tmp_path, resume and resume.replace("{tmp}", str(tmp_path)), overwrite)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def _users_own_folder(folder: Path) -> None:
    """A folder the package never made (no run marker) holding names a training run would write."""
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "weights.bin").write_text("mine")
    (folder / "checkpoints" / "epoch_3").mkdir(parents=True)
    (folder / "final").mkdir()
    (folder / "summary.json").write_text('{"mine": true}')


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("marker", [None, "[1, 2]", '{"run_id": 7}'])
def test_a_folder_without_a_run_marker_is_never_replaced(tmp_path, overwrite, marker):
    _users_own_folder(tmp_path)
    if marker is not None:  # a damaged marker is no marker
        (tmp_path / RUN_MARKER).write_text(marker)
    before = {str(p.relative_to(tmp_path)): p.is_dir() or p.read_text() for p in tmp_path.rglob("*")}
    with pytest.raises(
        RunFolderError, match=rf"\(checkpoints, summary.json, final, model\) but no valid {RUN_MARKER}"
    ) as error:
        _start(tmp_path, overwrite=overwrite)
    assert "Move them away" in str(error.value) and "pass --overwrite_output_dir" not in str(error.value)
    assert {str(p.relative_to(tmp_path)): p.is_dir() or p.read_text() for p in tmp_path.rglob("*")} == before


def test_latest_without_checkpoints_says_how_to_start(tmp_path):
    with pytest.raises(RunFolderError, match="no checkpoint under .*Start a fresh run"):
        _start(tmp_path / "empty", "latest")
    assert not (tmp_path / "empty").exists()


def test_overwrite_removes_the_old_run_first_and_keeps_other_files(tmp_path):
    _earlier_run(tmp_path)
    run = _start(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([RUN_MARKER, "my_notes.txt", "training_config.json"])
    assert json.loads((tmp_path / RUN_MARKER).read_text())["run_id"] == run.run_id != "old"


def test_a_fresh_run_in_an_empty_or_unrelated_folder_starts(tmp_path):
    (tmp_path / "data.csv").write_text("x")
    run = _start(tmp_path)
    assert json.loads((tmp_path / "training_config.json").read_text()) == {"learning_rate": 0.1}
    assert (tmp_path / "data.csv").read_text() == "x" and run.resume_path is None


def test_resuming_into_a_folder_of_another_run_is_refused(tmp_path):
    _earlier_run(tmp_path / "a")
    other = tmp_path / "b"
    (other / "checkpoints" / "step_3").mkdir(parents=True)
    (other / "checkpoints" / "step_3" / CHECKPOINT_RECORD).write_text(json.dumps({"run_id": "b", "config": {}}))
    with pytest.raises(RunFolderError, match="holds another run"):
        _start(tmp_path / "a", str(other / "checkpoints" / "step_3"))


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("NASVIT_DEBUG", None)
    return env


@pytest.mark.parametrize("recipe", ["train.py", "train_segmentation.py"])
def test_recipes_refuse_a_folder_with_an_earlier_run_before_loading_anything(recipe, tmp_path):
    _earlier_run(tmp_path)
    result = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / recipe), "--output_dir", str(tmp_path), "--report_to", "none"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "holds an earlier training run" in result.stderr and "--overwrite_output_dir" in result.stderr
    assert "Traceback" not in result.stderr
    assert [step for step, _ in list_checkpoints(tmp_path)] == [40]
    assert (tmp_path / "train_log.jsonl").read_text() == '{"step": 40}\n' and (tmp_path / "final").is_dir()


@pytest.mark.parametrize("overwrite", [False, True])
def test_every_process_checks_the_folder_before_the_main_process_claims_it(tmp_path, overwrite):
    """Data-parallel runs: with the barrier, a slow non-main process still sees the folder as it was (no "holds an
    earlier training run" from the main process's fresh marker) and adopts the main process's run id."""
    import threading
    import time

    if overwrite:
        _earlier_run(tmp_path)
    barrier = threading.Barrier(2, timeout=30)
    runs, errors = {}, []

    def process(is_main: bool, delay: float) -> None:
        time.sleep(delay)
        try:
            runs[is_main] = start_run(
                tmp_path,
                {"learning_rate": 0.1},
                kind="classification",
                resume_from_checkpoint=None,
                overwrite_output_dir=overwrite,
                safe_keys=SAFE,
                is_main_process=is_main,
                barrier=barrier.wait,
            )
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=process, args=(True, 0.0)), threading.Thread(target=process, args=(False, 0.3))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    marker = json.loads((tmp_path / RUN_MARKER).read_text())
    assert runs[True].run_id == runs[False].run_id == marker["run_id"] != "old"
    assert (tmp_path / "my_notes.txt").exists() == overwrite  # overwrite removes only the run's own files


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_saved_weights_and_checkpoints_get_the_umask_modes(tmp_path, umask):
    """safetensors creates model.safetensors 0600: the final model, exports, converted folders (all written through
    staging_folder) and checkpoints get the umask's modes like every other file the package writes."""
    import stat

    from accelerate import Accelerator

    from nasvit_hf.training.checkpointing import TrainingRun, save_checkpoint
    from nasvit_hf.utils.io import staging_folder

    from ._training_helpers import micro_model

    previous = os.umask(umask)
    try:
        model = micro_model(num_labels=3)
        with staging_folder(tmp_path / "final") as folder:
            model.save_pretrained(folder)
        accelerator = Accelerator(cpu=True)
        accelerator.prepare(model)
        save_checkpoint(accelerator, TrainingRun(tmp_path, "run"), 1, {}, keep=None)
    finally:
        os.umask(previous)
    written = [*(tmp_path / "final").rglob("*"), *(tmp_path / "checkpoints").rglob("*")]
    assert {p.name for p in written} >= {"model.safetensors", "config.json", "step_1", CHECKPOINT_RECORD}
    for path in [tmp_path / "final", tmp_path / "checkpoints" / "step_1", *written]:
        full = 0o777 if path.is_dir() else 0o666
        assert stat.S_IMODE(path.stat().st_mode) == full & ~umask, path
