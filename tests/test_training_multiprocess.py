"""Two CPU processes (gloo) under `accelerate launch`: gradient combination on all-reduced gradients."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

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
