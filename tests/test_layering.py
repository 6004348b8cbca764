"""Imports run one way: `rnn_lm_hf.cli` -> `training/` -> the library (`rnn_lm_hf.*`), and the library has no cycle.

Checked twice: statically, over every import in the source (also those inside functions and `importlib` calls), and in
fresh processes, by what importing each script, the CLI and each library module actually loads.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
PACKAGE, TRAINING = REPO / "rnn_lm_hf", REPO / "training"
CLI = "rnn_lm_hf.cli"


def module_name(path: Path) -> str:
    if path.is_relative_to(TRAINING):
        return "rnn_lm_hf.training." + path.relative_to(TRAINING).with_suffix("").as_posix().replace("/", ".")
    return path.relative_to(REPO).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")


SOURCES = {module_name(path): path for root in (PACKAGE, TRAINING) for path in sorted(root.rglob("*.py"))}
# The command line: `rnn-lm` and `python -m rnn_lm_hf`.
COMMAND_LINE = (CLI, "rnn_lm_hf.__main__")
LIBRARY = sorted(name for name in SOURCES if name not in COMMAND_LINE and not name.startswith("rnn_lm_hf.training"))
SCRIPTS = sorted(name for name in SOURCES if name.startswith("rnn_lm_hf.training."))


def imported_modules(name: str) -> set[str]:
    """Every module of ours that `name` imports anywhere in its source, `importlib.import_module("...")` included."""
    path = SOURCES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            # `from package import module` imports the module itself.
            found |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in SOURCES} or {base}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif (
            isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
        ):
            if node.args and isinstance(node.args[0], ast.Constant):
                found.add(node.args[0].value)
            else:
                found.add("<dynamic>")
    return {module for module in found if module in SOURCES or module == "<dynamic>"} - {name}


GRAPH = {name: imported_modules(name) for name in SOURCES}


def test_no_module_imports_a_dynamic_name():
    assert not [name for name, imports in GRAPH.items() if "<dynamic>" in imports]


def test_the_library_never_imports_the_cli_or_the_training_scripts():
    wrong = {
        name: sorted(m for m in GRAPH[name] if m == CLI or m.startswith("rnn_lm_hf.training")) for name in LIBRARY
    }
    assert not {name: imports for name, imports in wrong.items() if imports}


def test_the_training_scripts_never_import_the_cli():
    # The scan sees imports inside functions: the CLI loads the scripts lazily, one per command.
    assert {f"rnn_lm_hf.training.{script}" for script in ("train_clm", "train_token_classification")} <= GRAPH[CLI]
    assert not [name for name in SCRIPTS if set(COMMAND_LINE) & GRAPH[name]]


def test_the_import_graph_has_no_cycle():
    """Package `__init__` files aside (importing `rnn_lm_hf.x` runs `rnn_lm_hf/__init__.py` first by Python's rules,
    which is no dependency of x on the package)."""
    graph = {name: {m for m in imports if SOURCES[m].name != "__init__.py"} for name, imports in GRAPH.items()}
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*path, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, node])):
                return cycle
        state[node] = "done"
        return None

    for name in sorted(graph):
        if name not in state:
            assert (cycle := visit(name, [])) is None, " -> ".join(cycle)


def loaded_by(module: str) -> list[str]:
    code = (
        f"import sys, json; import {module}; print(json.dumps([m for m in sys.modules if m.startswith('rnn_lm_hf')]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("script", ["train_clm", "train_token_classification", "train_sequence_classification"])
def test_importing_a_script_loads_no_cli(script):
    loaded = loaded_by(f"rnn_lm_hf.training.{script}")
    assert f"rnn_lm_hf.training.{script}" in loaded and CLI not in loaded


def test_importing_the_cli_loads_no_training_script_until_a_command_runs():
    loaded = loaded_by(CLI)
    assert not [m for m in loaded if m.startswith("rnn_lm_hf.training")]


def test_importing_the_library_loads_neither_cli_nor_training():
    loaded = loaded_by("rnn_lm_hf.model_card, rnn_lm_hf.hub, rnn_lm_hf.trainer, rnn_lm_hf.evaluation")
    assert not [m for m in loaded if m == CLI or m.startswith("rnn_lm_hf.training")]
