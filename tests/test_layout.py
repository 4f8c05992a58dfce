"""The package's shape: its modules import down the pipeline's layers, never up, and no two import each other.

Every import counts, at the top of a module or inside a function. A model kind's `network.py` is reached by name at
run time (`models.kind.network_of`), on purpose: the kinds' declarations sit below `config`, which builds its
sections from them, while their Keras code sits with the rest of `models`.
"""

import ast
import re
from pathlib import Path

import pytest

import cnnlab
from cnnlab.models import KINDS

PACKAGE = Path(cnnlab.__file__).parent

# Lowest first. An entry names a module and everything under it, unless a longer entry names the module itself.
LAYERS = [
    ["common"],
    # the kinds' declarations: each kind's own package, the transfer recipe's and the Keras Applications table
    ["models", "models.kind", "models.registry", "models.transfer", "models.applications",
     *(f"models.{kind}" for kind in KINDS if (PACKAGE / "models" / kind).is_dir())],
    ["config"],
    ["data"],
    ["backends"],
    ["models.*"],  # the networks, and how models are built, compiled, saved and loaded
    ["evaluation"],
    ["runs"],
    ["training"],
    ["tracking"],  # told of runs as they train (training.observer)
    ["report"],
    ["serving"],
    ["experiment"],
    ["tuning"],  # a search's trials are whole runs (experiment)
    ["cli", "__main__"],
]
DECLARATIONS = set(LAYERS[1])


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return [name for name in names if name]  # the root package itself only holds lazy exports and the version


def source_of(module: str) -> Path:
    folder = PACKAGE.joinpath(*module.split("."))
    return folder / "__init__.py" if folder.is_dir() else folder.with_suffix(".py")


def layer_of(module: str) -> int:
    if module in DECLARATIONS:
        return 1
    for index, entries in enumerate(LAYERS):
        for entry in entries if index != 1 else ():  # the declarations are named one by one (DECLARATIONS)
            prefix = entry.removesuffix(".*")
            if module == prefix or module.startswith(prefix + "."):
                return index
    raise AssertionError(f"cnnlab.{module} is in no layer: add it to tests/test_layout.py's LAYERS")


def imports_of(module: str, known: set[str]) -> set[str]:
    """The cnnlab modules `module` imports (without the 'cnnlab.' prefix). A package's `__init__` that Python runs
    before a submodule is not counted: it runs first, before the submodule, and cannot import it back half-made."""
    tree = ast.parse(source_of(module).read_text(encoding="utf-8"))
    type_hints_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                       for statement in node.body for inner in ast.walk(statement)}  # never run
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_hints_only:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}"[7:] in known else node.module
                       for alias in node.names]
        else:
            continue
        found |= {target.removeprefix("cnnlab.") for target in targets if target.startswith("cnnlab.")}
    return (found & known) - {module}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = set(module_names())
    return {module: imports_of(module, known) for module in known}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"cnnlab.{module} ({layer_of(module)}) imports cnnlab.{target} ({layer_of(target)})"
            for module, targets in graph.items() for target in targets if layer_of(target) > layer_of(module)]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Some import cycle of `graph`, as the modules along it; None when there is none."""
    state = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        if state.get(module) == "open":
            return [*path[path.index(module):], module]
        if state.get(module) == "done":
            return None
        state[module] = "open"
        for target in sorted(graph[module]):
            cycle = visit(target, [*path, module])
            if cycle:
                return cycle
        state[module] = "done"
        return None

    return next(filter(None, (visit(module, []) for module in sorted(graph))), None)


def test_every_import_goes_down_the_layers(graph):
    assert upward_imports(graph) == []


def test_no_import_cycles(graph):
    assert find_cycle(graph) is None


def test_the_checks_see_an_upward_import_and_a_cycle():
    assert upward_imports({"common.files": {"config"}, "config": set()}) == [
        "cnnlab.common.files (0) imports cnnlab.config (2)"]
    assert find_cycle({"data.a": {"data.b"}, "data.b": {"data.c"}, "data.c": {"data.a"}}) == [
        "data.a", "data.b", "data.c", "data.a"]
    assert "config" in imports_of("runs.run", set(module_names()))  # a real module's imports are seen


def test_the_top_level_shows_the_pipeline():
    entries = sorted(path.name for path in PACKAGE.iterdir() if path.name != "__pycache__")
    assert entries == ["__init__.py", "__main__.py", "backends", "cli.py", "common", "config", "data", "evaluation",
                       "experiment.py", "models", "report", "runs", "serving", "tracking", "training", "tuning"]


def test_config_names_no_model_kind():
    source = source_of("config").read_text(encoding="utf-8").lower()
    assert [kind for kind in KINDS if re.search(rf"\b{kind}\b", source)] == []
