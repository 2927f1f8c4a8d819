"""Two CPU processes (gloo) under `accelerate launch`: gradient combination on all-reduced gradients."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_combine_identical_all_reduced_gradients_and_end_with_identical_weights(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), OUTPUT_DIR=str(tmp_path))
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        str(ROOT / "tests" / "_ddp_sandwich.py"),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-5000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank in ranks:
        assert rank["world_size"] == 2 and "MULTI_CPU" in rank["distributed_type"]
        # the ranks saw different data, so their local gradients differ ...
        assert rank["local_gradient_difference"] > 1e-6
        # ... but each combined exactly the average of both ranks' gradients
        assert rank["combine_input_error"] < 1e-6
        # and both end with the same weights and BN statistics
        assert rank["weight_difference"] == 0.0
    assert ranks[0]["conflict_ratios"] == ranks[1]["conflict_ratios"]


def _launch_train(config, *args, timeout=400):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("ACCELERATE_CONFIG_FILE", None)
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), str(ROOT / "recipes" / "train.py"), "--config", str(config), *args,
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-5000:]
    return result


def _log_lines(output_dir):
    return [json.loads(line) for line in (Path(output_dir) / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("sampling", ["per_rank", "synchronized"])
def test_two_process_training_resumes_exactly_with_either_subnet_sampling(tmp_path, sampling):
    """recipes/train.py on 2 gloo processes, 5 steps with a checkpoint at step 2, then resumed from step_2 in the same
    folder: steps 3-5 log the same (rank-averaged) losses and archs. With per-rank sampling the ranks trained
    different random subnets; synchronized, the same."""
    from tests._training_helpers import micro_space

    output_dir = tmp_path / "run"
    config = tmp_path / "config.yaml"
    settings = {
        "search_space": micro_space(), "image_size": 32, "max_train_samples": 24, "validation_split": None,
        "per_device_train_batch_size": 4, "num_train_epochs": 1, "max_steps": 5, "checkpointing_steps": 2,
        "checkpoints_total_limit": 5, "learning_rate": 1e-3, "report_to": "none", "progress_bar": False,
        "num_threads": 1, "deterministic": True, "subnet_sampling": sampling, "output_dir": str(output_dir),
    }  # fmt: skip
    config.write_text(yaml.safe_dump(settings))
    _launch_train(config)
    first = {record["step"]: record for record in _log_lines(output_dir)}
    assert sorted(first) == [1, 2, 3, 4, 5]
    per_rank = [record["archs_per_rank"] for record in first.values()] if sampling == "per_rank" else []
    if sampling == "per_rank":
        assert all(ranks[0] == first[step]["archs"] for step, ranks in zip(first, per_rank))
        assert any(ranks[0]["random0"] != ranks[1]["random0"] for ranks in per_rank)
    else:
        assert all("archs_per_rank" not in record for record in first.values())
    _launch_train(config, "--resume_from_checkpoint", str(output_dir / "checkpoints" / "step_2"))
    resumed = _log_lines(output_dir)[len(first) :]
    assert [record["step"] for record in resumed] == [3, 4, 5]
    for record in resumed:
        expected = first[record["step"]]
        for key in ("loss/largest", "loss/smallest", "loss/random0", "loss/random1", "conflict_ratio", "lr"):
            assert record[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-9), (record["step"], key)
        assert record["archs"] == expected["archs"]
        assert record.get("archs_per_rank") == expected.get("archs_per_rank")
