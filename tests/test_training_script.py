"""End-to-end tests of recipes/train.py (subprocesses: one Accelerate state per run)."""

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from ._training_helpers import micro_model, micro_space

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "recipes" / "train.py"


def _config(tmp_path, **overrides):
    values = {
        "search_space": micro_space(),
        "image_size": 32,
        "max_train_samples": 40,
        "max_eval_samples": 20,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 20,
        "calibration_batches": 1,
        "num_train_epochs": 1,
        "learning_rate": 1e-3,
        "report_to": "none",
        "progress_bar": False,
        "num_threads": 1,
        "deterministic": True,
        "output_dir": str(tmp_path / "run"),
    }
    values.update(overrides)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("ACCELERATE_CONFIG_FILE", None)
    return env


def _run(args, launcher=(sys.executable,), check=True, timeout=240):
    result = subprocess.run(
        [*launcher, str(SCRIPT), *map(str, args)], env=_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"train.py failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def _log(output_dir):
    records = {}
    for line in (Path(output_dir) / "train_log.jsonl").read_text().splitlines():
        record = json.loads(line)
        records[record["step"]] = record  # a resumed run re-logs steps after its checkpoint: keep the last
    return records


def test_accelerate_launch_trains_logs_and_saves_an_auto_loadable_supernet(tmp_path):
    teacher = micro_model(num_labels=10)  # any AutoModelForImageClassification folder can be the teacher
    teacher.save_pretrained(tmp_path / "teacher")
    config = _config(tmp_path, report_to="tensorboard", ema_decay=0.9, teachers=str(tmp_path / "teacher"))
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]  # no flags, no saved config: as in the README
    result = _run(["--config", config, "--max_steps", 3], launcher=accelerate)
    output_dir = tmp_path / "run"
    assert "Trained 3 sandwich steps" in result.stdout
    records = _log(output_dir)
    assert sorted(records) == [1, 2, 3]
    assert set(records[1]["archs"]) == {"largest", "smallest", "random0", "random1"}
    assert 0.0 <= records[1]["conflict_ratio"] <= 1.0
    summary = json.loads((output_dir / "summary.json").read_text())
    assert set(summary["validation"]) == {"smallest", "largest"}
    assert list((output_dir / "nasvit_train").rglob("events.out.tfevents*"))
    assert (output_dir / "checkpoints" / "step_3").is_dir()

    from transformers import AutoModelForImageClassification

    import nasvit_hf  # noqa: F401

    model = AutoModelForImageClassification.from_pretrained(output_dir / "final")
    assert model.config.num_labels == 10 and model.config.is_supernet
    # final/ holds the EMA weights (what validation evaluated), final/raw/ the raw weights beside it
    assert AutoModelForImageClassification.from_pretrained(output_dir / "final" / "raw").config.num_labels == 10
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 32, 32)).logits.shape == (1, 10)


def test_sigkill_then_resume_logs_the_same_losses_as_an_uninterrupted_run(tmp_path):
    # 12 images in batches of 4: 3 steps per epoch, so the resumed run crosses an epoch boundary (validation, a new
    # shuffle) and the projection switch (projection_start_epoch=1).
    settings = {"checkpointing_steps": 2, "max_train_samples": 12, "projection_start_epoch": 1}
    reference = _config(tmp_path / "a", **settings)
    _run(["--config", reference, "--max_steps", 5])
    expected = _log(tmp_path / "a" / "run")

    assert [expected[step]["projected"] for step in range(1, 6)] == [0, 0, 0, 1, 1]

    killed = _config(tmp_path / "b", **settings)
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--config", str(killed), "--max_steps", "5"],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = tmp_path / "b" / "run" / "train_log.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (tmp_path / "b" / "run" / "checkpoints" / "step_2").is_dir()
    assert not (tmp_path / "b" / "run" / "final").exists()

    result = _run(["--config", killed, "--max_steps", 5, "--resume_from_checkpoint", "latest"])
    assert "step_2 at step 2" in result.stderr  # resumed from the checkpoint before the kill, mid-epoch
    resumed = _log(tmp_path / "b" / "run")
    for step in (3, 4, 5):
        for key in ("loss/largest", "loss/smallest", "loss/random0", "loss/random1", "conflict_ratio", "lr"):
            assert resumed[step][key] == pytest.approx(expected[step][key], rel=1e-6, abs=1e-9), (step, key)
        assert resumed[step]["archs"] == expected[step]["archs"]


def _load_script():
    spec = importlib.util.spec_from_file_location("nasvit_train_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bad_config_key_fails_at_start_up_with_a_hint(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _load_script().parse_args(["--config", str(_config(tmp_path)), "--max_step", "3"])
    assert "did you mean 'max_steps'" in capsys.readouterr().err


def test_arch_outside_the_space_fails_at_start_up(tmp_path, capsys):
    arch = {"resolution": 999, "width": [8] * 9, "depth": [1] * 7, "kernel_size": [3] * 7, "expand_ratio": [4] * 7}
    with pytest.raises(SystemExit):
        _load_script().parse_args(["--config", str(_config(tmp_path, eval_archs=[arch]))])
    assert re.search(r"eval_archs\[0\] is not in the search space.*resolution", capsys.readouterr().err)


def test_consecutive_non_finite_steps_stop_the_run_with_a_clear_error(tmp_path):
    # lr 1e30: the first step blows the weights up, every later loss is NaN, each such step is skipped.
    config = _config(tmp_path, learning_rate=1e30, max_grad_norm=None, max_consecutive_nonfinite=2)
    result = _run(["--config", config, "--max_steps", 6], check=False)
    assert result.returncode != 0
    assert "2 consecutive steps had non-finite losses or gradients" in result.stderr
    assert "step skipped, weights and optimizer state untouched" in result.stderr
    records = _log(tmp_path / "run")
    assert [records[step]["skipped"] for step in sorted(records)] == [0, 1, 1]
