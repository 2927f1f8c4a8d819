"""The README, MODEL_CARD.md and the docs/ pages stay true: their code blocks run and their commands exist.

- Every ```python block compiles and every `nasvit_hf` name it imports or reads resolves.
- Every ```python block is executed, each in its own temporary folder (offline), unless the line before its fence
  is `<!-- not-run: reason -->` (big data, downloads, long runs, objects from elsewhere). Some blocks get extra
  assertions on what they produced (`BLOCK_CHECKS`).
- Every recipe command in a ```bash block names an existing script and config files, and only flags the script
  defines (an `add_argument` flag, or a field of a `...Config` dataclass it imports: the `--key value` overrides).
- Relative links between the pages point to existing files and headings.
- The user's journey (slow): every ```bash block of the README, then of each page in the order the README's
  documentation table lists them, is run as written in one clean temporary folder, with the step counts scaled down
  by `NASVIT_STEP_SCALE` (the one mechanism, nasvit_hf.config_system); each command must exit 0 without a traceback,
  and `COMMAND_CHECKS` check the files and numbers the docs promise. A block whose line before the fence is
  `<!-- not-run: reason -->` is not run (GPUs, ImageNet, downloads, installs, benchmarks, long examples); optional
  `[--flag ...]` groups are left out; a command already run earlier (the manual repeats the README's) is not run again.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib
import io
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import REPO_ROOT

DOC_FILES = sorted([REPO_ROOT / "README.md", REPO_ROOT / "MODEL_CARD.md", *(REPO_ROOT / "docs").glob("*.md")])
# Renamed pages kept so that old links work: {old page: the page it moved to}. Each only points to its new page (no
# code blocks), and is not in the README's documentation table (the journey runs the new page).
MOVED_PAGES = {REPO_ROOT / "docs" / "search-and-export.md": REPO_ROOT / "docs" / "search-and-extract.md"}
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(?P<reason>\S.*?)\s*-->$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")
SCRIPT = re.compile(r"^(recipes|benchmarks|examples)/[\w/]+\.py$")


@dataclass
class CodeBlock:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    heading: str  # the nearest heading above the block
    not_run: str | None  # the reason given by a `<!-- not-run: ... -->` marker

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


def extract_blocks(path: Path) -> list[CodeBlock]:
    """The fenced code blocks of a markdown file, with the heading above each and its not-run marker, if any."""
    lines = path.read_text().split("\n")
    blocks, heading, index = [], "", 0
    while index < len(lines):
        line = lines[index]
        fence = FENCE.match(line)
        if fence is None:
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            index += 1
            continue
        start = index
        marker = NOT_RUN.match(lines[start - 1].strip()) if start else None
        index += 1
        body = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index][len(fence["indent"]) :])
            index += 1
        if index == len(lines):
            raise AssertionError(f"{path.name}:{start + 1}: code block never closed")
        index += 1
        blocks.append(
            CodeBlock(path, start + 1, fence["lang"], "\n".join(body) + "\n", heading, marker and marker["reason"])
        )
    return blocks


ALL_BLOCKS = [block for path in DOC_FILES for block in extract_blocks(path)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.lang == "python"]
BASH_BLOCKS = [block for block in ALL_BLOCKS if block.lang == "bash"]


def _check_readme_classify(namespace: dict, folder: Path) -> None:
    assert (folder / "nasvit-small" / "model.safetensors").is_file()
    assert namespace["model"].active_arch == namespace["model"].config.validate_arch(namespace["arch"])
    assert namespace["__printed__"] == "224 307.2 M MACs\n"  # the number quoted beside the print
    assert namespace["out"].logits.shape == (2, 1000)
    assert namespace["classifier"].model.config.model_type == "nasvit"


def _check_readme_segment(namespace: dict, folder: Path) -> None:
    assert namespace["out"].logits.shape == (2, 3, 16, 16)
    assert (folder / "nasvit-seg" / "preprocessor_config.json").is_file()
    assert namespace["segments"] and all(segment["mask"].size == (80, 60) for segment in namespace["segments"])


# (file name, heading of the section the block is in) -> assertions on the executed block's namespace
BLOCK_CHECKS = {
    ("README.md", "Classify: a supernet, a subnet, the Auto classes"): _check_readme_classify,
    ("README.md", "Segment"): _check_readme_segment,
}


# ----------------------------------------------------------------------------------------------------------- python


def _resolve(dotted: str):
    """Import the longest importable module prefix of `dotted` and read the rest as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)  # AttributeError names the missing attribute
        return obj
    raise ModuleNotFoundError(dotted)


def _nasvit_names(tree: ast.AST) -> set[str]:
    """Dotted `nasvit_hf` names a block imports (`from nasvit_hf.x import y`) or reads (`nasvit_hf.y.z`)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "nasvit_hf":
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.split(".")[0] == "nasvit_hf")
        elif isinstance(node, ast.Attribute):
            chain, inner = [], node
            while isinstance(inner, ast.Attribute):
                chain.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id == "nasvit_hf":
                names.add(".".join(["nasvit_hf", *reversed(chain)]))
    return names


def test_every_doc_file_is_found():
    names = {path.relative_to(REPO_ROOT).as_posix() for path in DOC_FILES}
    assert {"README.md", "MODEL_CARD.md", "docs/development.md"} <= names
    assert PYTHON_BLOCKS and BASH_BLOCKS


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda block: block.id)
def test_python_block_compiles_and_its_nasvit_names_exist(block):
    tree = ast.parse(block.code, filename=block.id)
    for name in sorted(_nasvit_names(tree)):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as error:
            pytest.fail(f"{block.id}: `{name}` does not exist ({error})")


@pytest.mark.parametrize(
    "block", [block for block in PYTHON_BLOCKS if block.not_run is None], ids=lambda block: block.id
)
def test_python_block_runs(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict = {"__name__": "__docs__"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block.code, block.id, "exec"), namespace)
    namespace["__printed__"] = printed.getvalue()
    check = BLOCK_CHECKS.get((block.path.name, block.heading))
    if check is not None:
        check(namespace, tmp_path)


def test_every_block_check_matches_a_block():
    executed = {(block.path.name, block.heading) for block in PYTHON_BLOCKS if block.not_run is None}
    assert set(BLOCK_CHECKS) <= executed, set(BLOCK_CHECKS) - executed


# ------------------------------------------------------------------------------------------------------------- bash


def _script_flags(script: Path) -> set[str]:
    """The flags `script` accepts: its `add_argument("--x")` literals, the fields of its own options dataclass and of
    the `...Config` dataclasses it imports from nasvit_hf (the `--key value` config overrides), and the flags of the
    `add_..._arguments(parser)` helpers it imports from nasvit_hf (shared argument groups)."""
    tree = ast.parse(script.read_text())
    flags: set[str] = {"help"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            flags.update(
                arg.value[2:].replace("-", "_")
                for arg in node.args
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("--")
            )
        elif isinstance(node, ast.ClassDef) and any(
            getattr(d, "id", None) == "dataclass" for d in node.decorator_list
        ):
            # the recipe's own options dataclass (nasvit_hf.config_system.parse_command_line reads its fields)
            flags.update(
                item.target.id for item in node.body if isinstance(item, ast.AnnAssign) and hasattr(item.target, "id")
            )
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nasvit_hf"):
            if any(alias.name == "parse_command_line" for alias in node.names):
                flags.update({"config", "debug"})  # every recipe on the config system takes these
            for alias in node.names:
                if alias.name.startswith("add_") and alias.name.endswith("_arguments"):
                    import argparse

                    parser = argparse.ArgumentParser(add_help=False)
                    _resolve(f"{node.module}.{alias.name}")(parser)
                    flags.update(
                        option[2:].replace("-", "_")
                        for action in parser._actions
                        for option in action.option_strings
                        if option.startswith("--")
                    )
                    continue
                if not alias.name.endswith("Config"):
                    continue
                obj = _resolve(f"{node.module}.{alias.name}")
                if dataclasses.is_dataclass(obj):
                    flags.update(field.name for field in dataclasses.fields(obj))
    return flags


def _commands(code: str) -> list[list[str]]:
    """Shell words of each command in a bash block (continuation lines joined, comments dropped)."""
    commands = []
    for line in code.replace("\\\n", " ").split("\n"):
        words = shlex.split(line, comments=True)
        command: list[str] = []
        for word in words:
            if word in {"&&", "||", "|", ";"}:
                commands.append(command)
                command = []
            else:
                command.append(word.strip("[]"))
        commands.append(command)
    return [command for command in commands if command]


@pytest.mark.parametrize("block", BASH_BLOCKS, ids=lambda block: block.id)
def test_bash_block_names_existing_scripts_configs_and_flags(block):
    flag_cache: dict[Path, set[str]] = {}
    for words in _commands(block.code):
        for word in words:
            if word.startswith("recipes/configs/") or (word.endswith(".yaml") and "/" in word):
                assert (REPO_ROOT / word).is_file(), f"{block.id}: no config file {word}"
        scripts = [index for index, word in enumerate(words) if SCRIPT.match(word)]
        if not scripts:
            continue
        script = REPO_ROOT / words[scripts[0]]
        assert script.is_file(), f"{block.id}: no script {words[scripts[0]]}"
        known = flag_cache.setdefault(script, _script_flags(script))
        for word in words[scripts[0] + 1 :]:
            if word.startswith("--"):
                flag = word[2:].split("=", 1)[0].split(".", 1)[0]
                assert flag in known, f"{block.id}: {script.name} has no flag --{flag}"


# ------------------------------------------------------------------------------------------------------------ links


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_relative_links_point_to_existing_files_and_headings():
    problems = []
    for path in DOC_FILES:
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                problems.append(f"{path.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md":
                headings = [line.lstrip("#") for line in linked.read_text().split("\n") if line.startswith("#")]
                if anchor not in {_slug(heading) for heading in headings}:
                    problems.append(f"{path.name}: {target} (no such heading)")
    assert not problems, problems


def test_not_run_markers_give_a_reason_and_sit_before_a_python_or_bash_block():
    for path in DOC_FILES:
        lines, in_code = path.read_text().split("\n"), False
        for index, line in enumerate(lines):
            if FENCE.match(line) or (in_code and line.strip() == "```"):
                in_code = not in_code
            elif not in_code and "not-run" in line and line.strip().startswith("<!--"):
                assert NOT_RUN.match(line.strip()), f"{path.name}:{index + 1}: marker without a reason"
                following = lines[index + 1].strip() if index + 1 < len(lines) else ""
                assert following in ("```python", "```bash"), f"{path.name}:{index + 1}: marker not before a block"


def test_extract_blocks_reads_fences_markers_and_headings(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## Part\n\n<!-- not-run: needs data -->\n```python\nx = 1\n```\n\n```bash\nls\n```\n"
        "- item\n\n  ```python\n  y = 2\n  ```\n"
    )
    blocks = extract_blocks(page)
    assert [(block.lang, block.heading, block.not_run, block.code) for block in blocks] == [
        ("python", "Part", "needs data", "x = 1\n"),
        ("bash", "Part", None, "ls\n"),
        ("python", "Part", None, "y = 2\n"),
    ]
    assert _commands("accelerate launch recipes/train.py --a 1 \\\n  --b 2  # comment\nls && pwd\n") == [
        ["accelerate", "launch", "recipes/train.py", "--a", "1", "--b", "2"],
        ["ls"],
        ["pwd"],
    ]
    assert _slug("Ablation: the paper's Table 7 at toy scale") == "ablation-the-papers-table-7-at-toy-scale"


def test_checks_fail_on_a_missing_flag_script_or_name():
    with pytest.raises(AssertionError, match="has no flag --no_such_flag"):
        test_bash_block_names_existing_scripts_configs_and_flags(
            CodeBlock(REPO_ROOT / "README.md", 1, "bash", "python recipes/search.py --no_such_flag 1\n", "", None)
        )
    with pytest.raises(AssertionError, match="no script"):
        test_bash_block_names_existing_scripts_configs_and_flags(
            CodeBlock(REPO_ROOT / "README.md", 1, "bash", "python recipes/export_onnx.py --model x\n", "", None)
        )
    with pytest.raises(pytest.fail.Exception, match="does not exist"):
        test_python_block_compiles_and_its_nasvit_names_exist(
            CodeBlock(REPO_ROOT / "README.md", 1, "python", "from nasvit_hf.deployment import x\n", "", None)
        )


# ------------------------------------------------------------------------------------------------------------ journey
# The user's path through the docs, run as written (slow; CI runs it). See the module docstring and
# docs/development.md#documentation-tests.
STEP_SCALE = "0.04"  # NASVIT_STEP_SCALE for the journey: 164 default training steps -> 7, search sizes to their floors
# Single commands of runnable blocks that cannot run inside the tests, and why (whole blocks take a not-run marker).
NOT_RUN_COMMANDS = {"python -m pytest -n 2 tests": "the test suite itself: this test is part of it"}
COMMAND_TIMEOUT = 600


def journey_pages() -> list[Path]:
    """README.md, then the pages in the order the README's documentation table lists them."""
    readme = REPO_ROOT / "README.md"
    section = readme.read_text().split("## Documentation", 1)[1].split("\n## ", 1)[0]
    linked = re.findall(r"^\|\s*\[[^\]]+\]\(([^)#\s]+)\)", section, flags=re.M)
    return [readme, *(REPO_ROOT / target for target in dict.fromkeys(linked))]


def _without_optional(line: str) -> str:
    """`cmd --a 1 [--b 2] [--c [3]]` -> `cmd --a 1`: optional `[--...]` groups (nested ones too) left out."""
    out, index = [], 0
    while index < len(line):
        if line.startswith("[--", index):
            depth = 0
            while index < len(line):
                depth += {"[": 1, "]": -1}.get(line[index], 0)
                index += 1
                if depth == 0:
                    break
            continue
        out.append(line[index])
        index += 1
    return re.sub(r"[ \t]+", " ", "".join(out)).strip()


def command_key(line: str) -> str:
    """A command's identity: its words without comments; `accelerate launch -q` (it only quiets accelerate's own
    traceback when the script fails) runs the same thing as `accelerate launch`."""
    words = shlex.split(line, comments=True)
    if words[:3] in (["accelerate", "launch", "-q"], ["accelerate", "launch", "--quiet"]):
        words = words[:2] + words[3:]
    return " ".join(words)


@dataclass
class JourneyStep:
    block: CodeBlock
    line: str  # as run by bash: continuation lines joined, optional groups left out
    key: str
    skip: str | None  # why it is not run


def journey_steps() -> list[JourneyStep]:
    """Every command of every bash block, in journey order, with the reason it is not run (if it is not)."""
    blocks = [block for path in journey_pages() for block in extract_blocks(path) if block.lang == "bash"]
    steps, seen = [], set()
    for block in blocks:
        for raw in block.code.replace("\\\n", " ").split("\n"):
            if not shlex.split(raw, comments=True):
                continue
            line = _without_optional(raw)
            key = command_key(line)
            skip = block.not_run or NOT_RUN_COMMANDS.get(key)
            if skip is None and key in seen:
                skip = "already run earlier in the journey"
            if skip is None:
                seen.add(key)
            steps.append(JourneyStep(block, line, key, skip))
    return steps


def _read(folder: Path, name: str):
    return json.loads((folder / name).read_text())


def _scaled(steps: int) -> int:
    return math.ceil(steps * float(STEP_SCALE))


def _check_default_training(folder: Path, result) -> None:
    run = folder / "outputs" / "digits_tiny"
    summary = _read(run, "summary.json")
    # digits_tiny.yaml: 4 epochs of 41 steps (1,338 training images, batch 32), scaled
    assert "epochs of 41)" in result.stderr
    assert summary["steps"] == math.ceil(4 * float(STEP_SCALE) * 41)
    assert set(summary["validation"]) == {"smallest", "largest"}
    assert (run / "checkpoints" / f"step_{summary['steps']}").is_dir()
    assert (run / "train_log.jsonl").is_file() and list((run / "nasvit_train").rglob("events.out.tfevents*"))
    assert f"Trained {summary['steps']} sandwich steps" in result.stdout
    from transformers import AutoModelForImageClassification

    import nasvit_hf
    from nasvit_hf.data import load_digits_dataset

    model = AutoModelForImageClassification.from_pretrained(run / "final")
    config = model.config
    assert config.search_space["resolutions"] == [32, 48, 64]  # "32/48/64 px, 0.8-12.5 M MACs"
    macs = [nasvit_hf.count_macs(config, arch) / 1e6 for arch in (config.smallest_arch(), config.largest_arch())]
    assert [round(value, 1) for value in macs] == [0.8, 12.5], macs
    splits = load_digits_dataset()  # "1,338 train / 100 search / 359 validation"
    assert {name: len(split) for name, split in splits.items()} == {"train": 1338, "search": 100, "validation": 359}


def _check_try_run(folder: Path, result) -> None:
    run = folder / "runs" / "try"
    assert _read(run, "summary.json")["steps"] == _scaled(50)
    assert (run / "checkpoints" / f"step_{_scaled(50)}").is_dir()
    assert _read(run, "training_config.json")["seed"] == 1


def _check_try_resumed(folder: Path, result) -> None:
    summary = _read(folder / "runs" / "try", "summary.json")
    assert (summary["steps"], summary["session_steps"], summary["resumed_from_step"]) == (_scaled(50), 0, _scaled(50))
    assert "Trained 0 sandwich steps" in result.stdout and f"resumed at step {_scaled(50)}" in result.stdout
    assert not (folder / "runs" / "try" / "config_history.jsonl").exists()  # nothing changed: the run's own config


def _check_default_resumed(folder: Path, result) -> None:
    summary = _read(folder / "outputs" / "digits_tiny", "summary.json")
    assert summary["session_steps"] == 0 and summary["resumed_from_step"] == summary["steps"]
    assert f"resumed at step {summary['steps']}" in result.stdout


def _check_conflicts(folder: Path, result) -> None:
    report = _read(folder / "outputs" / "digits_tiny", "conflicts.json")
    assert report["num_batches"] == 10 and report["num_images"] == 320  # ten batches of the config's 32
    assert 0.0 <= report["conflict_ratio_after"] <= report["conflict_ratio_before"] <= 1.0


def _check_search(folder: Path, result) -> None:
    results = folder / "runs" / "tiny_search"
    assert set(_read(results, "named.json")) == {"a0", "a1", "a2", "a3", "a4", "a5", "b0", "b1", "b2"}
    assert (results / "pareto.json").is_file() and (results / "pareto.png").is_file()
    assert "results in runs/tiny_search" in result.stdout


def _check_extract(names: list[str]):
    def check(folder: Path, result) -> None:
        from transformers import AutoModelForImageClassification, pipeline

        import nasvit_hf  # noqa: F401

        for name in names:
            export = folder / "subnets" / f"nasvit-{name}"
            for file in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md"):
                assert (export / file).is_file(), export / file
        first = folder / "subnets" / f"nasvit-{names[0]}"
        assert AutoModelForImageClassification.from_pretrained(first).config.num_labels == 10
        from PIL import Image

        labels = pipeline("image-classification", model=str(first))(Image.new("RGB", (40, 30)))
        assert labels and {"label", "score"} <= set(labels[0])
        assert (folder / "subnets" / "nasvit-family" / "README.md").is_file()

    return check


def _check_segmentation(folder: Path, result) -> None:
    run = folder / "outputs" / "segmentation_digits"
    summary = _read(run, "summary.json")
    assert summary["steps"] == math.ceil(4 * float(STEP_SCALE) * 32)  # 4 epochs of 512 scenes / 16
    assert 0.0 <= summary["mean_iou"] <= 1.0 and set(summary["per_category_iou"]) == {"background", "digit"}
    from PIL import Image
    from transformers import pipeline

    import nasvit_hf  # noqa: F401

    segments = pipeline("image-segmentation", model=str(run / "model"))(Image.new("RGB", (48, 48)))
    assert segments and all(segment["mask"].size == (48, 48) for segment in segments)


def _check_segmentation_resumed(folder: Path, result) -> None:
    run = folder / "outputs" / "segmentation_digits"
    summary = _read(run, "summary.json")
    assert summary["steps"] == _scaled(200) and summary["session_steps"] == _scaled(200) - summary["resumed_from_step"]
    history = [json.loads(line) for line in (run / "config_history.jsonl").read_text().splitlines()]
    assert history[-1]["changes"] == {"max_steps": [summary["resumed_from_step"], _scaled(200)]}


def _check_files(*names: str):
    def check(folder: Path, result) -> None:
        for name in names:
            assert (folder / name).is_file(), name

    return check


def _check_help(*keys: str):
    def check(folder: Path, result) -> None:
        for key in keys:
            assert f"--{key} " in result.stdout, key

    return check


# command (as `command_key` gives it) -> checks of what it wrote and printed
COMMAND_CHECKS = {
    "accelerate launch recipes/train.py": _check_default_training,
    "accelerate launch recipes/train.py --max_steps 50 --output_dir runs/try --seed 1": _check_try_run,
    "accelerate launch recipes/train.py --output_dir runs/try --resume_from_checkpoint latest": _check_try_resumed,
    "python recipes/search.py --supernet outputs/digits_tiny/final --config recipes/configs/search_tiny.yaml "
    "--output_dir runs/tiny_search": _check_search,
    "python recipes/extract.py --supernet outputs/digits_tiny/final --names a0 a1 a2 b0 --output_dir subnets "
    "--search_dir runs/tiny_search": _check_extract(["a0", "a1", "a2", "b0"]),
    "accelerate launch recipes/train_segmentation.py": _check_segmentation,
    "python recipes/deploy.py --model subnets/nasvit-a0 --output nasvit-a0.onnx --dynamic_batch --program "
    "nasvit-a0.pt2": _check_files("nasvit-a0.onnx", "nasvit-a0.pt2"),
    "accelerate launch recipes/train.py --resume_from_checkpoint latest": _check_default_resumed,
    "python recipes/conflict_ratio.py --supernet outputs/digits_tiny/final --config "
    "outputs/digits_tiny/training_config.json --max_batches 10 --output outputs/digits_tiny/conflicts.json": (
        _check_conflicts
    ),
    "python recipes/train.py --help": _check_help("max_steps", "resume_from_checkpoint", "seed"),
    "python recipes/search.py --help": _check_help("supernet", "latency.repeats", "predictor.num_subnets"),
    "python recipes/extract.py --supernet outputs/digits_tiny/final --names a0 a1 a2 a3 a4 a5 b0 b1 b2 --output_dir "
    "subnets --search_dir runs/tiny_search --overwrite": _check_extract(
        ["a0", "a1", "a2", "a3", "a4", "a5", "b0", "b1", "b2"]
    ),
    "accelerate launch recipes/train_segmentation.py --max_steps 200 --resume_from_checkpoint latest": (
        _check_segmentation_resumed
    ),
}


def test_journey_covers_every_page_and_every_check_names_a_command_it_runs():
    assert sorted(journey_pages()) == [path for path in DOC_FILES if path not in MOVED_PAGES]
    steps = journey_steps()
    run = {step.key for step in steps if step.skip is None}
    assert set(COMMAND_CHECKS) <= run, set(COMMAND_CHECKS) - run
    assert set(NOT_RUN_COMMANDS) <= {step.key for step in steps}, "a NOT_RUN_COMMANDS entry names no command"
    for step in steps:
        if step.skip is None:
            assert not re.search(r"<[^>]*>", step.line), f"{step.block.id}: placeholder in a runnable command"
            assert "benchmarks/" not in step.key, (
                f"{step.block.id}: a benchmark never runs in the tests: mark it not-run"
            )


@pytest.mark.parametrize("old, new", MOVED_PAGES.items(), ids=[path.name for path in MOVED_PAGES])
def test_a_moved_page_only_links_to_its_new_page(old, new):
    assert old.is_file() and new in journey_pages()
    assert extract_blocks(old) == [], f"{old.name} moved: its commands live in {new.name}"
    assert f"]({new.name})" in old.read_text() and len(old.read_text().splitlines()) <= 10


def test_optional_groups_are_left_out_and_accelerate_q_is_the_same_command():
    assert _without_optional("x --a 1 [--b 2] [--c [3]] # [--d]") == "x --a 1 #"
    assert _without_optional("x --crop_scale [0.5,1.0]") == "x --crop_scale [0.5,1.0]"
    assert command_key("accelerate launch -q recipes/train.py  # c") == command_key(
        "accelerate launch recipes/train.py"
    )


def _journey_environment(folder: Path) -> dict[str, str]:
    binaries = folder / ".bin"
    binaries.mkdir()
    python = binaries / "python"  # the documented `python` is this interpreter (a symlink would lose its venv)
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ACCELERATE_", "NASVIT_"))}
    env.update(
        NASVIT_STEP_SCALE=STEP_SCALE,
        HF_HUB_OFFLINE="1",
        HF_HOME=str(folder / ".hf_home"),  # no saved `accelerate config`, no caches from elsewhere
        PYTHONPATH=str(REPO_ROOT),  # this checkout's package (CI installs it editable from here anyway)
        PATH=os.pathsep.join([str(binaries), str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        OMP_NUM_THREADS="1",
    )
    return env


def _children_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.slow
def test_the_documented_commands_run_in_order_as_written(tmp_path):
    """The README and every page, in order, on a clean folder (a copy of recipes/ beside nothing else)."""
    repo_before = sorted(path.name for path in REPO_ROOT.iterdir())
    shutil.copytree(REPO_ROOT / "recipes", tmp_path / "recipes", ignore=shutil.ignore_patterns("__pycache__"))
    env = _journey_environment(tmp_path)
    timings = []
    for step in journey_steps():
        if step.skip is not None:
            continue
        start, cpu = time.time(), _children_cpu_seconds()
        result = subprocess.run(
            ["bash", "-c", step.line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
        )
        timings.append(
            f"{time.time() - start:6.1f} s wall {_children_cpu_seconds() - cpu:6.1f} s CPU  {step.block.id}: {step.line}"
        )
        context = f"{step.block.id}: `{step.line}` exited {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        assert result.returncode == 0, context
        assert "Traceback" not in result.stderr, context
        check = COMMAND_CHECKS.get(step.key)
        if check is not None:
            check(tmp_path, result)
    print("\n".join(timings))
    assert sorted(path.name for path in REPO_ROOT.iterdir()) == repo_before, "the journey wrote into the repository"
