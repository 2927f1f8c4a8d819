"""Every third-party import is declared in pyproject.toml, and every optional one fails with one line naming its extra.

The check reads the imports statically (ast) and maps import names to distributions with the metadata of the
environment the tests run in (CI: a fresh virtual environment with `.[test]` only, .ci/run), so an import that only
works because of a package installed by hand fails here. Rules:
- `nasvit_hf/`, `recipes/`, `examples/`, `benchmarks/`: core dependencies anywhere; a distribution of an extra only
  inside a function that first calls `require_extra("<that extra>", ...)` (nasvit_hf/utils/extras.py), so a missing
  one is a one-line error naming the extra;
- `tests/`: core dependencies and the `test` extra.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

from nasvit_hf.utils.extras import EXTRAS, MissingExtraError, require_extra

tomllib = pytest.importorskip("tomllib", reason="the standard library's TOML reader (Python >= 3.11, as CI)")

ROOT = Path(__file__).resolve().parents[1]
CODE_FOLDERS = ("nasvit_hf", "recipes", "examples", "benchmarks")


def _dist_name(spec: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    """(core distributions, {extra: its distributions}) from pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_dist_name(spec) for spec in project["dependencies"]}
    extras = {name: {_dist_name(spec) for spec in specs} for name, specs in project["optional-dependencies"].items()}
    return core, extras


def _providers() -> dict[str, set[str]]:
    return {
        module: {dist.lower().replace("_", "-") for dist in dists}
        for module, dists in importlib.metadata.packages_distributions().items()
    }


def _local_names(root: Path) -> set[str]:
    names = {path.name for path in root.iterdir() if path.is_dir()}
    for folder in ("recipes", "benchmarks", "examples", "tests"):
        names |= {path.stem for path in (root / folder).glob("*.py")}
    return names


class _Imports(ast.NodeVisitor):
    """(module, line, extras required by `require_extra` calls in the enclosing functions) for every import."""

    def __init__(self):
        self.found: list[tuple[str, int, frozenset[str]]] = []
        self._required: list[frozenset[str]] = [frozenset()]

    def _visit_function(self, node):
        calls = {
            call.args[0].value
            for call in ast.walk(node)
            if isinstance(call, ast.Call)
            and getattr(call.func, "id", getattr(call.func, "attr", None)) == "require_extra"
            and call.args
            and isinstance(call.args[0], ast.Constant)
        }
        self._required.append(self._required[-1] | calls)
        self.generic_visit(node)
        self._required.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _visit_function

    def visit_If(self, node):
        if "TYPE_CHECKING" in ast.unparse(node.test):  # annotations only
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node):
        for alias in node.names:
            self.found.append((alias.name.split(".")[0], node.lineno, self._required[-1]))

    def visit_ImportFrom(self, node):
        if node.level == 0 and node.module:
            self.found.append((node.module.split(".")[0], node.lineno, self._required[-1]))


def _imports(path: Path) -> list[tuple[str, int, frozenset[str]]]:
    visitor = _Imports()
    visitor.visit(ast.parse(path.read_text(), str(path)))
    return visitor.found


def _undeclared(root: Path, folders, allowed_everywhere: set[str], extras: dict[str, set[str]]) -> list[str]:
    """The imports under `root/folders` that come from neither `allowed_everywhere` nor, behind
    `require_extra(extra)`, from that extra's distributions."""
    providers, local = _providers(), _local_names(root) | {"nasvit_hf", "tests"}
    problems = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            for module, line, required in _imports(path):
                if module in sys.stdlib_module_names or module in local or module == "__future__":
                    continue
                where = f"{path.relative_to(root)}:{line}: imports {module!r}"
                dists = providers.get(module)
                if not dists:
                    problems.append(f"{where}, which no installed distribution provides")
                elif dists & allowed_everywhere:
                    continue
                elif not any(dists & extras.get(extra, set()) for extra in required):
                    homes = sorted(name for name, members in extras.items() if dists & members)
                    problems.append(
                        f"{where} ({sorted(dists)[0]}): declared in {homes or 'no extra'}, but imported without "
                        f"require_extra({homes[0] if homes else '...'!r}, ...) before it"
                        if homes
                        else f"{where} ({sorted(dists)[0]}): not declared in pyproject.toml"
                    )
    return problems


def test_library_recipes_examples_and_benchmarks_import_only_declared_distributions():
    core, extras = _declared()
    runtime_extras = {name: extras[name] for name in EXTRAS}
    assert _undeclared(ROOT, CODE_FOLDERS, core, runtime_extras) == []


def test_tests_import_only_core_and_test_distributions():
    core, extras = _declared()
    assert _undeclared(ROOT, ["tests"], core | extras["test"], {}) == []


def test_extras_table_matches_pyproject():
    """EXTRAS (what require_extra imports and names) and pyproject's extras say the same."""
    _, extras = _declared()
    providers = _providers()
    for name, modules in EXTRAS.items():
        assert name in extras, f"EXTRAS names {name!r}, which pyproject.toml does not declare"
        provided = set().union(*(providers.get(module, set()) for module in modules))
        assert provided == extras[name], f"extra {name!r}: modules {modules} come from {provided}, not {extras[name]}"
    assert extras["export"] <= extras["test"], "the test extra must install what the tests of deployment import"


def test_the_checker_catches_an_undeclared_import(tmp_path):
    """The rules above are not vacuous: a test-only import in the library, and an extra imported without (or before)
    require_extra, are reported; an extra behind require_extra is not."""
    (tmp_path / "nasvit_hf").mkdir()
    (tmp_path / "nasvit_hf" / "bad.py").write_text(
        "import pytest\n\n\ndef f():\n    import onnx\n\n\ndef g():\n    require_extra('export', 'x')\n    import onnx\n"
    )
    core, extras = _declared()
    problems = _undeclared(tmp_path, ["nasvit_hf"], core, {name: extras[name] for name in EXTRAS})
    assert [problem.split(":")[1] for problem in problems] == ["1", "5"], problems


@pytest.mark.parametrize("missing", EXTRAS["export"])
def test_missing_export_extra_is_one_line_naming_it(missing, monkeypatch):
    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` now raises ImportError
    with pytest.raises(MissingExtraError) as info:
        require_extra("export", "ONNX export")
    message = str(info.value)
    assert "\n" not in message and missing in message and "pip install 'nasvit_hf[export]'" in message


def test_export_onnx_and_onnx_runner_name_the_extra(tmp_path, monkeypatch):
    from nasvit_hf.deploy import OnnxRunner, export_onnx

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r"nasvit_hf\[export\]"):
        export_onnx(tmp_path / "no-model", tmp_path / "model.onnx")
    with pytest.raises(MissingExtraError, match=r"nasvit_hf\[export\]"):
        OnnxRunner(tmp_path / "model.onnx")


def test_deploy_recipe_without_the_extra_prints_one_error_line(tmp_path, monkeypatch, capsys):
    import runpy

    from nasvit_hf.config_system import run_recipe

    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.delenv("NASVIT_DEBUG", raising=False)
    deploy = runpy.run_path(str(ROOT / "recipes" / "deploy.py"))
    with pytest.raises(SystemExit) as info:
        run_recipe(deploy["main"], ["--model", str(tmp_path / "subnet"), "--output", str(tmp_path / "m.onnx")])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "pip install 'nasvit_hf[export]'" in lines[0]
