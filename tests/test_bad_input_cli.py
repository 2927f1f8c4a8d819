"""Bad command lines and configs for every recipe: one clear `error:` line on stderr and exit status 2, never a
traceback (unless --debug / NASVIT_DEBUG=1), and nothing on disk touched."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nasvit_hf.config_system import run_recipe
from tests.search_fixtures import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def _fail(recipe: str, argv: list[str], capsys) -> str:
    """Run a recipe's __main__ path in-process; return its stderr after checking the exit status and one line."""
    with pytest.raises(SystemExit) as exit_info:
        run_recipe(load_recipe(recipe).main, [str(a) for a in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture()
def supernet_folder(tmp_path):
    from ._training_helpers import micro_model

    micro_model(num_labels=3).save_pretrained(tmp_path / "supernet")
    return tmp_path / "supernet"


CASES = [
    # (recipe, argv, phrase of the one error line)
    ("train", ["--max_step", "3"], "did you mean 'max_steps'"),
    ("train", ["--max_steps", "ten"], "max_steps must be of type int"),
    ("train", ["--config", "no/such.yaml"], "does not exist"),
    ("train", ["--gradient_priority", "both"], "gradient_priority must be one of"),
    ("train", ["--max_steps"], "needs a value"),
    ("train", ["--resume_from_checkpoint", "latest", "--overwrite_output_dir"], "contradict each other"),
    ("train_segmentation", ["--lr_scheduler_type", "step"], "lr_scheduler_type must be"),
    ("train_segmentation", ["--learning_rte", "1"], "did you mean 'learning_rate'"),
    ("search", ["--supernet", "x"], "--config is required"),
    ("search", ["--config", "recipes/configs/search_tiny.yaml"], "missing required keys --supernet"),
    ("search", ["--supernet", "{tmp}/none", "--config", "recipes/configs/search_tiny.yaml"], "not a NASViT supernet"),
    ("search", ["--supernet", "x", "--config", "recipes/configs/search_tiny.yaml", "--latency.repets", "3"],
     "did you mean 'repeats'"),
    ("export", ["--supernet", "x", "--names", "a0", "--output_dir", "o", "--push_to_hub"], "needs --hub_org"),
    ("export", ["--supernet", "x", "--names", "z9", "--output_dir", "{tmp}/o"], "unknown subnet name"),
    ("deploy", ["--model", "{tmp}/none", "--output", "{tmp}/m.onnx"], "{tmp}/none"),
    ("deploy", ["--model", "m", "--output", "o", "--batch_size", "two"], "batch_size must be of type int"),
    ("convert_official_checkpoint", ["--checkpoint", "{tmp}/none.pth", "--output_dir", "{tmp}/out"], "none.pth"),
    ("convert_official_checkpoint", ["--output_dir", "o"], "missing required keys --checkpoint"),
]  # fmt: skip


@pytest.mark.parametrize(("recipe", "argv", "phrase"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_command_lines_give_one_clear_error_line(recipe, argv, phrase, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("NASVIT_DEBUG", raising=False)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if recipe.startswith("train") and "--output_dir" not in argv:
        argv += ["--output_dir", str(tmp_path / "run")]
    line = _fail(recipe, argv, capsys)
    assert phrase.replace("{tmp}", str(tmp_path)) in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("recipe", ["search", "export"])
def test_a_config_device_that_does_not_exist_names_the_override(recipe, supernet_folder, tmp_path, capsys):
    config = tmp_path / "search.yaml"
    config.write_text("device: cuda\nbudgets:\n  - {name: a0, macs_fraction: 0.01}\n")
    argv = ["--supernet", supernet_folder, "--config", config, "--output_dir", tmp_path / "results"]
    if recipe == "export":
        argv += ["--names", "a0"]
    line = _fail(recipe, argv, capsys)
    assert "device is 'cuda'" in line and "--device cpu" in line
    assert not (tmp_path / "results").exists()


def test_export_refuses_an_existing_folder_without_overwrite_before_any_work(supernet_folder, tmp_path, capsys):
    existing = tmp_path / "exports" / "nasvit-a0"
    existing.mkdir(parents=True)
    (existing / "notes.txt").write_text("mine")
    argv = ["--supernet", supernet_folder, "--names", "a0", "--output_dir", tmp_path / "exports"]
    assert "pass --overwrite" in _fail("export", argv, capsys)
    line = _fail("export", [*argv, "--overwrite"], capsys)
    assert "not an export of this tool" in line
    assert (existing / "notes.txt").read_text() == "mine"


def test_convert_overwrite_never_replaces_a_folder_it_did_not_make(tmp_path, capsys):
    thesis = tmp_path / "thesis"
    (thesis / "src").mkdir(parents=True)
    (thesis / "thesis.tex").write_text("precious")
    checkpoint = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, checkpoint)
    argv = ["--checkpoint", checkpoint, "--output_dir", thesis]
    assert "already exists; pass --overwrite" in _fail("convert_official_checkpoint", argv, capsys)
    line = _fail("convert_official_checkpoint", [*argv, "--overwrite"], capsys)
    assert "was not written by this tool" in line
    assert (thesis / "thesis.tex").read_text() == "precious" and (thesis / "src").is_dir()


def test_debug_flag_and_environment_show_the_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    env.pop("NASVIT_DEBUG", None)
    command = [sys.executable, str(ROOT / "recipes" / "deploy.py"), "--model", str(tmp_path / "none"), "--output", "o"]
    quiet = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr and "error:" in quiet.stderr
    loud = subprocess.run([*command, "--debug"], env=env, capture_output=True, text=True, timeout=300)
    assert loud.returncode != 0 and "Traceback" in loud.stderr
    env["NASVIT_DEBUG"] = "1"
    assert "Traceback" in subprocess.run(command, env=env, capture_output=True, text=True, timeout=300).stderr


def test_under_accelerate_launch_q_a_user_error_is_one_line(tmp_path):
    """The documented commands (`accelerate launch -q recipes/...`): the script's one error line and accelerate's exit
    status 1, no traceback; without -q accelerate 1.16 adds its CalledProcessError traceback (docs/training.md)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ACCELERATE_", "NASVIT_"))}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    script = [str(ROOT / "recipes" / "train.py"), "--max_step", "3", "--output_dir", str(tmp_path / "run")]
    quiet = subprocess.run([*launch, "-q", *script], env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in quiet.stderr.splitlines() if line.startswith("error:")]
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr, quiet.stderr
    assert len(lines) == 1 and "did you mean 'max_steps'" in lines[0]
    loud = subprocess.run([*launch, *script], env=env, capture_output=True, text=True, timeout=300)
    assert loud.returncode == 1 and lines[0] in loud.stderr and "CalledProcessError" in loud.stderr
    assert not (tmp_path / "run").exists()
