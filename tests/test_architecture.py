"""The layering of src/conceal, read from the code: no import cycle, nothing but training imports ``train``,
and every registered method declares every facet of its spec."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import conceal
from conceal.methods import METHODS, ModelAPI, ReleaseGraph
from conceal.methods.registry import BUILTIN, FACETS

SRC = Path(conceal.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = ("conceal", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the conceal modules it imports, anywhere in its body (lazy imports inside functions count)."""
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        tree = ast.parse(path.read_text())
        type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and getattr(block.test, "id", "") == "TYPE_CHECKING"
                     for stmt in block.body for n in ast.walk(stmt)}  # imports for type hints only never run
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                stem = ".".join([*base, *(node.module.split(".") if node.module else [])])
                # ``from X import y`` imports module X.y when y is one, else X itself
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in files else stem for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in files and t != name}
        graph[name] = edges
    # The registry imports the built-in methods by name (BUILTIN's "module:Class"): edges too.
    graph["conceal.methods.registry"] |= {target.split(":")[0] for target in BUILTIN.values()}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_is_read_from_the_code():
    graph = import_graph()
    assert "conceal.modelfile" in graph["conceal.methods.registry"]
    assert "conceal.train" in graph["conceal.cli"]  # a lazy import inside cmd_train
    assert "conceal.methods.concealer" in graph["conceal.methods.registry"]


def test_src_has_no_import_cycle():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("layer", ["conceal.methods", "conceal.audit", "conceal.modelfile", "conceal.data", "conceal.export"])
def test_only_training_imports_train(layer):
    graph = import_graph()
    importers = [m for m, edges in graph.items() if m == layer or m.startswith(layer + ".") for e in edges if e.startswith("conceal.train")]
    assert not importers, f"{importers} import conceal.train"


def test_the_model_file_format_knows_no_method():
    graph = import_graph()
    assert not {e for e in graph["conceal.modelfile"] if e.startswith(("conceal.methods", "conceal.train", "conceal.audit"))}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_declares_each_facet(name):
    cls = METHODS[name]
    for facet in FACETS:
        assert hasattr(cls, facet), facet
    assert cls.name == name
    assert dataclasses.is_dataclass(cls.Config) and isinstance(cls.Config.tiny(), cls.Config)
    assert issubclass(cls.API, ModelAPI) and cls.API.method_class is cls
    assert issubclass(cls.Graph, ReleaseGraph) and cls.Graph.inputs[0] == "images"
    assert cls.releases and set(cls.releases) <= {"codes", "images"}
    assert cls.shown_losses and all(isinstance(k, str) for k in cls.shown_losses)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    assert set(cls.cli_options) <= fields
    module, _, function = cls.audit.partition(":")
    assert module.startswith("conceal.audit.") and function


def test_registering_a_method_without_a_facet_fails():
    from conceal.methods import Method, register_method

    class Incomplete(Method):
        name = "incomplete"

    with pytest.raises(TypeError, match="does not declare"):
        register_method(Incomplete)
    assert "incomplete" not in METHODS


def test_listing_the_methods_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom conceal.methods import method_names\nprint(method_names())\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and "concealer" in done.stdout, done.stderr
