"""The README, MODEL_CARD.md and the docs/ pages stay true: their code blocks run and their commands exist.

- Every ```python block compiles and every `nasvit_hf` name it imports or reads resolves.
- Every ```python block is executed, each in its own temporary folder (offline), unless the line before its fence
  is `<!-- not-run: reason -->` (big data, downloads, long runs, objects from elsewhere). Some blocks get extra
  assertions on what they produced (`BLOCK_CHECKS`).
- Every recipe command in a ```bash block names an existing script and config files, and only flags the script
  defines (an `add_argument` flag, or a field of a `...Config` dataclass it imports: the `--key value` overrides).
- Relative links between the pages point to existing files and headings.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import REPO_ROOT

DOC_FILES = sorted([REPO_ROOT / "README.md", REPO_ROOT / "MODEL_CARD.md", *(REPO_ROOT / "docs").glob("*.md")])
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
    exec(compile(block.code, block.id, "exec"), namespace)
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


def test_not_run_markers_give_a_reason_and_sit_before_a_python_block():
    for path in DOC_FILES:
        lines, in_code = path.read_text().split("\n"), False
        for index, line in enumerate(lines):
            if FENCE.match(line) or (in_code and line.strip() == "```"):
                in_code = not in_code
            elif not in_code and "not-run" in line and line.strip().startswith("<!--"):
                assert NOT_RUN.match(line.strip()), f"{path.name}:{index + 1}: marker without a reason"
                following = lines[index + 1] if index + 1 < len(lines) else ""
                assert following.strip() == "```python", f"{path.name}:{index + 1}: marker not before a python block"


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
