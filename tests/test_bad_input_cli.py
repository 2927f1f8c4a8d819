"""Bad command lines and configs for every recipe: one clear `error:` line on stderr and exit status 2, never a
traceback (unless --debug / NASVIT_DEBUG=1), and nothing on disk touched."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nasvit_hf.config_system import checked_hints, recipe_keys, run_recipe
from tests.search_fixtures import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def _fail(recipe: str, argv: list[str], capsys) -> str:
    """Run a recipe's __main__ path in-process; return its stderr after checking the exit status, the one line, and
    that every `--key` the line names is a key of that recipe."""
    with pytest.raises(SystemExit) as exit_info:
        run_recipe(load_recipe(recipe).main, [str(a) for a in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert checked_hints(lines[0]) == (lines[0], []), f"a hint names no key of {recipe}: {lines[0]}"
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
    ("extract", ["--supernet", "x", "--names", "a0", "--output_dir", "o", "--push_to_hub"], "needs --hub_org"),
    ("extract", ["--supernet", "x", "--names", "z9", "--output_dir", "{tmp}/o"], "unknown subnet name"),
    ("deploy", ["--model", "{tmp}/none", "--output", "{tmp}/m.onnx"], "{tmp}/none"),
    ("deploy", ["--model", "m", "--output", "o", "--batch_size", "two"], "batch_size must be of type int"),
    ("convert_official_checkpoint", ["--checkpoint", "{tmp}/none.pth", "--output_dir", "{tmp}/out"], "none.pth"),
    ("convert_official_checkpoint", ["--output_dir", "o"], "missing required keys --checkpoint"),
]  # fmt: skip


TINY = "recipes/configs/search_tiny.yaml"
DIGITS = "recipes/configs/digits_tiny.yaml"
# Rows whose argv needs a folder or file: {supernet} a micro supernet folder, {segmentation} a segmentation subnet
# folder, {users_folder} a folder holding the user's own model/, checkpoints/, final/ and summary.json (no run
# marker), {damaged_holdout} a holdout.json whose indices point past the training rows, {arch} an arch file.
INPUT_CASES = [
    ("search", ["--supernet", "{supernet}", "--config", TINY, "--output_dir", "{tmp}/o", "--names", "a9"], "no budget named 'a9'"),
    ("search", ["--supernet", "{supernet}", "--config", TINY, "--output_dir", "{tmp}/o", "--num_threads", "-3"], "num_threads must be in [1, 1024]"),
    ("search", ["--supernet", "{supernet}", "--config", TINY, "--output_dir", "{tmp}/o", "--data.dataset", "imagefolder",
                "--data.data_dir", "{tmp}/none"], "is not a folder: name the image folder (--data.data_dir)"),
    ("search", ["--supernet", "{supernet}", "--config", TINY, "--output_dir", "{tmp}/o", "--data.holdout", "{damaged_holdout}"],
     "indices outside the 1797 training rows"),
    ("search", ["--supernet", "{supernet}", "--config", TINY, "--output_dir", "{tmp}/o", "--latency.repeats", "nan"], "latency.repeats must be of type int"),
    ("search", ["--supernet", "{supernet}", "--config", TINY, "--output_dir", "{tmp}/o", "--evolution.mutation_probability", ".nan"],
     "mutation_probability must be a finite number"),
    ("search", ["--supernet", "{supernet}", "--config", TINY, "--output_dir", "{tmp}/o", "--data.calibration_batches", "3"],
     "keep one (on the command line: --calibration.num_batches N)"),
    ("search", ["--supernet", "{segmentation}", "--config", TINY, "--output_dir", "{tmp}/o"], "holds a single extracted subnet"),
    ("extract", ["--supernet", "{supernet}", "--arch_file", "{arch}", "--name", "family", "--output_dir", "{tmp}/o"], "is reserved"),
    ("extract", ["--supernet", "{supernet}", "--arch_file", "{arch}", "--name", "../x", "--output_dir", "{tmp}/o"], "not usable as a folder name"),
    ("extract", ["--supernet", "{supernet}", "--names", "a0", "--prefix", "../", "--output_dir", "{tmp}/o"], "must be a folder-name prefix"),
    ("train_segmentation", ["--id2label", "[a, b]"], "id2label must be of type dict"),
    ("deploy", ["--model", "{segmentation}", "--output", "{tmp}/o/m.onnx", "--image_size", "100000"], "more than the 67,108,864 allowed"),
    ("deploy", ["--model", "{segmentation}", "--output", "{tmp}/o/m.onnx", "--batch_size", "0"], "batch_size must be in [1, 65536]"),
    ("deploy", ["--model", "{supernet}", "--output", "{tmp}/o/m.onnx", "--atol", ".nan"], "atol must be a finite number"),
    ("train", ["--output_dir", "{users_folder}", "--overwrite_output_dir"], "no valid nasvit_run.json"),
    ("train", ["--output_dir", "{users_folder}"], "no valid nasvit_run.json"),
    ("train", ["--learning_rate", ".nan"], "learning_rate must be a finite number"),
    ("train", ["--learning_rate", "nan"], "learning_rate must be of type float"),
    ("train", ["--weight_decay", ".inf"], "weight_decay must be a finite number"),
    ("train", ["--num_threads", "-3"], "num_threads must be in [1, 1024]"),
    ("train", ["--seed", "-1"], "seed must be in [0, 4294967295]"),
    ("train", ["--model_name_or_path", "{segmentation}/../bert"], "has model_type 'bert', not 'nasvit'"),
    ("train", ["--dataset", "imagefolder", "--data_dir", "{tmp}/none"], "{tmp}/none"),  # fails after the run started
    ("train", ["--output_dir", "{users_folder}/..", "--dataset", "imagefolder", "--data_dir", "{tmp}/none"], "{tmp}/none"),
    # the recipe-option sweep's finds: each used to be a traceback, run with the bad value, or leave a run behind
    ("train", ["--image_size", "100000"], "image_size must be in [16, 4096]"),
    ("train", ["--warmup_steps", "-5"], "warmup_steps must be in [0, inf)"),
    ("train", ["--projection_start_epoch", "-1"], "projection_start_epoch must be in [0, inf)"),
    ("train", ["--search_space", "tiyn"], "did you mean 'tiny'"),
    ("train", ["--train_split", "nope"], "has no split 'nope'"),
    ("train", ["--holdout_per_class", "100000"], "would hold out every training image"),
    ("train", ["--crop_scale", "[0.9, 0.1]"], "crop_scale must satisfy"),
    ("train", ["--lr_scheduler_type", "nope"], "nope is not a valid SchedulerType"),
    ("train", ["--teachers", "{tmp}/none"], "cannot load teacher"),
    ("train_segmentation", ["--arch", "nope"], "unknown subnet name 'nope'"),
    ("train_segmentation", ["--eval_short_side", "1"], "eval_short_side must be in [16, 8192]"),
    ("train_segmentation", ["--learning_rate", ".inf"], "learning_rate must be a finite number"),
    ("train_segmentation", ["--model_name_or_path", "{segmentation}/../bert"], "not a NASViT model"),
    ("search", ["--supernet", "{supernet}", "--config", TINY, "--output_dir", "{tmp}/o", "--data.evaluation_split", "nope"],
     "split 'nope' is not in dataset 'digits'"),
    ("search", ["--supernet", "{supernet}", "--config", TINY, "--output_dir", "{tmp}/o", "--data.image_column", "nope"],
     "column 'nope' is not in the dataset"),
    ("deploy", ["--model", "{segmentation}", "--output", "{tmp}/o/m.onnx", "--image_size", "8", "4000"], "more elongated than 100:1"),
    ("conflict_ratio", ["--supernet", "{supernet}", "--config", DIGITS, "--num_threads", "-3"], "num_threads must be in [1, 1024]"),
    ("convert_official_checkpoint", ["--checkpoint", "{segmentation}/config.json", "--output_dir", "{tmp}/out", "--trust_checkpoint"],
     "damaged or not a checkpoint"),
    ("train_segmentation", ["--output_dir", "{users_folder}", "--overwrite_output_dir"], "no valid nasvit_run.json"),
    ("train_segmentation", ["--digits_size", "1000"], "digits_size must be in [32, 427]"),
    ("train_segmentation", ["--num_labels", "-5"], "num_labels must be in [1, 1000000]"),
    ("conflict_ratio", ["--supernet", "x"], "--config is required"),
    ("conflict_ratio", ["--supernet", "{tmp}/none", "--config", DIGITS], "not a NASViT supernet"),
    ("conflict_ratio", ["--supernet", "{supernet}", "--config", DIGITS, "--max_batches", "0"], "max_batches must be in [1, inf)"),
    ("conflict_ratio", ["--supernet", "{supernet}", "--config", DIGITS, "--max_batch", "3"], "did you mean 'max_batches'"),
    ("conflict_ratio", ["--supernet", "{supernet}", "--config", DIGITS, "--device", "cuda:7"], "--device cpu"),
]  # fmt: skip
CASES += INPUT_CASES


def _inputs(tmp_path: Path) -> dict[str, Path]:
    """The folders and files the {placeholders} of the rows stand for (made on demand)."""
    import json

    from ._training_helpers import micro_model

    def supernet():
        micro_model(num_labels=10).save_pretrained(tmp_path / "supernet")
        return tmp_path / "supernet"

    def segmentation():
        import nasvit_hf

        (tmp_path / "bert").mkdir()
        (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
        config = nasvit_hf.NASViTConfig(search_space=micro_model().config.search_space, num_labels=3)
        model = nasvit_hf.NASViTForSemanticSegmentation(config)
        model.extract_subnet(config.smallest_arch()).save_pretrained(tmp_path / "segmentation")
        return tmp_path / "segmentation"

    def users_folder():
        folder = tmp_path / "mine"
        (folder / "model").mkdir(parents=True)
        (folder / "checkpoints").mkdir()
        (folder / "final").mkdir()
        (folder / "summary.json").write_text('{"mine": true}')
        return folder

    def damaged_holdout():
        record = {"per_class": 1, "seed": 0, "label_column": "label", "image_column": "image", "format": 1,
                  "source": {"dataset": "digits", "split": "train", "num_rows": 1797}, "indices": [3, 99999],
                  "labels": [0, 1]}  # fmt: skip
        (tmp_path / "holdout.json").write_text(json.dumps(record))
        return tmp_path / "holdout.json"

    def arch():
        (tmp_path / "arch.json").write_text(json.dumps(micro_model().config.smallest_arch()))
        return tmp_path / "arch.json"

    return {"supernet": supernet, "segmentation": segmentation, "users_folder": users_folder,
            "damaged_holdout": damaged_holdout, "arch": arch}  # fmt: skip


@pytest.mark.parametrize(("recipe", "argv", "phrase"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_command_lines_give_one_clear_error_line(recipe, argv, phrase, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("NASVIT_DEBUG", raising=False)
    makers = _inputs(tmp_path)
    for name, make in makers.items():
        if any("{" + name + "}" in a for a in argv):
            path = str(make())
            argv = [a.replace("{" + name + "}", path) for a in argv]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if recipe.startswith("train") and "--output_dir" not in argv:
        argv += ["--output_dir", str(tmp_path / "run")]
    line = _fail(recipe, argv, capsys)
    assert phrase.replace("{tmp}", str(tmp_path)) in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists() and not (tmp_path / "o").exists()
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written, nothing removed


def test_hints_name_the_recipes_own_keys():
    """A library message naming a nested key by its last part gets the recipe's full key; keys of no recipe are
    reported (the table above requires none)."""
    search = recipe_keys(load_recipe("search").SearchOptions, load_recipe("search").SearchConfig)
    assert checked_hints("name the image folder (--data_dir).", search) == (
        "name the image folder (--data.data_dir).",
        [],
    )
    assert checked_hints("pass --device cpu or --calibration.num_batches 2", search)[1] == []
    assert checked_hints("pass --no_such_key 1", search)[1] == ["no_such_key"]
    train = recipe_keys(None, load_recipe("train").TrainingConfig)
    assert checked_hints("name --data_dir", train) == ("name --data_dir", [])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("recipe", ["search", "extract"])
def test_a_config_device_that_does_not_exist_names_the_override(recipe, supernet_folder, tmp_path, capsys):
    config = tmp_path / "search.yaml"
    config.write_text("device: cuda\nbudgets:\n  - {name: a0, macs_fraction: 0.01}\n")
    argv = ["--supernet", supernet_folder, "--config", config, "--output_dir", tmp_path / "results"]
    if recipe == "extract":
        argv += ["--names", "a0"]
    line = _fail(recipe, argv, capsys)
    assert "device is 'cuda'" in line and "--device cpu" in line
    assert not (tmp_path / "results").exists()


def test_extract_refuses_an_existing_folder_without_overwrite_before_any_work(supernet_folder, tmp_path, capsys):
    existing = tmp_path / "exports" / "nasvit-a0"
    existing.mkdir(parents=True)
    (existing / "notes.txt").write_text("mine")
    argv = ["--supernet", supernet_folder, "--names", "a0", "--output_dir", tmp_path / "exports"]
    assert "pass --overwrite" in _fail("extract", argv, capsys)
    line = _fail("extract", [*argv, "--overwrite"], capsys)
    assert "not a subnet saved by this tool" in line
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


def _all_recipe_keys() -> frozenset[str]:
    from nasvit_hf.search import SearchConfig
    from nasvit_hf.training import TrainingConfig
    from nasvit_hf.training.segmentation import SegmentationTrainingConfig

    keys = recipe_keys(None, TrainingConfig) | recipe_keys(None, SegmentationTrainingConfig)
    keys |= recipe_keys(load_recipe("search").SearchOptions, SearchConfig)
    keys |= recipe_keys(load_recipe("extract").ExtractOptions, SearchConfig)
    keys |= recipe_keys(load_recipe("deploy").DeployOptions) | recipe_keys(
        load_recipe("conflict_ratio").ConflictOptions
    )
    return keys | recipe_keys(load_recipe("convert_official_checkpoint").ConvertOptions)


def test_every_hint_in_the_source_names_a_key_of_some_recipe():
    """Every `--key` written in a string of the package or the recipes is a key some recipe accepts (or a nested key
    that `checked_hints` completes, or a flag of accelerate): a hint can only send the user to a real key."""
    import ast

    keys = _all_recipe_keys()
    unknown = []
    for path in [*sorted((ROOT / "nasvit_hf").rglob("*.py")), *sorted((ROOT / "recipes").glob("*.py"))]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                unknown += [f"{path.name}: --{key}" for key in checked_hints(node.value, keys)[1]]
    assert unknown == []
