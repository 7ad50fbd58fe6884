"""The layering of src/conceal, read from the code: no import cycle, nothing but training imports ``train``,
and every registered method declares every facet of its spec."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import conceal
from conceal.data import BUILTIN as DATASET_BUILTIN, DATASETS
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
    graph["conceal.data"] |= {target.split(":")[0] for target in DATASET_BUILTIN.values()}  # the datasets' alike
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
    assert cls.audit_release is None or cls.audit_release.startswith("conceal.audit.")


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


# --- datasets: one registry, each class its dataset's spec ----------------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_every_registered_dataset_declares_its_spec(name):
    from conceal.data import dataset_class

    cls = dataset_class(name)
    assert cls.name == name and isinstance(cls.needs_root, bool) and 0 < cls.default_crop <= 1
    assert dataclasses.is_dataclass(cls.Options) and isinstance(cls.Options(), cls.Options)
    assert set(cls.cli_options) <= {f.name for f in dataclasses.fields(cls.Options)}


def test_shared_code_never_branches_on_a_dataset_name():
    """The CLI, training, the audit and the config read a dataset's spec; only its own module names it."""
    hits = [f"{path.relative_to(SRC)}: {line.strip()}" for path in SRC.rglob("*.py") if path.parent.name != "data"
            for line in path.read_text().splitlines()
            if any(f'== "{name}"' in line or f"== '{name}'" in line for name in DATASETS)]
    assert not hits, hits


OLD_FLAT_CONFIG = """method = "masker"

[data]
dataset = "fer2013"
root = "../shared/datasets/fer2013"
size = 48
labels = "ferplus"
synthetic_n = 10000
synthetic_seed = 0

[model]
task = "emotion"
"""  # the [data] section of the first masker-fer-emotion's config.toml (2026-12-01), written before datasets had options


def test_old_flat_data_keys_still_read(tmp_path):
    """Configs and model.json files written before datasets had options (synthetic_n, labels, ... in [data])."""
    from conceal.config import build_run_config
    from conceal.data import dataset_options, open_configured
    from conceal.data.fer2013 import FER2013Options
    from conceal.data.synthetic import SyntheticOptions
    from conceal.methods.masker import MaskerConfig

    old = tmp_path / "config.toml"
    old.write_text(OLD_FLAT_CONFIG)
    cfg = build_run_config("masker", old, [], MaskerConfig, dataset_options)
    assert cfg.data.dataset == "fer2013" and cfg.data.options == FER2013Options(labels="ferplus")
    cfg = build_run_config("masker", None, ["data.synthetic_n=60", "data.synthetic_seed=3"], MaskerConfig, dataset_options)
    assert cfg.data.options == SyntheticOptions(n=60, seed=3)
    assert build_run_config("masker", None, ["data.options.n=70"], MaskerConfig, dataset_options).data.options.n == 70
    old_model_json = {"dataset": "synthetic", "root": None, "size": 16, "labels": "fer2013", "synthetic_n": 30, "synthetic_seed": 2}
    opened = open_configured(old_model_json)
    assert (opened.n, opened.seed) == (30, 2)


@pytest.mark.parametrize("overrides, error", [
    (["data.options.n=0"], "data.options.n must be at least 1"),
    (["data.dataset=nope"], "data.dataset must be one of"),
    (["data.options.m=3"], "unknown config key 'data.options.m'"),
    (["data.dataset=lfw", "data.options.n=3"], "dataset 'lfw' takes no options"),
])
def test_a_dataset_option_is_checked_like_any_config_key(overrides, error):
    from conceal.config import ConfigError, build_run_config
    from conceal.data import dataset_options
    from conceal.methods.masker import MaskerConfig

    with pytest.raises(ConfigError, match=error):
        build_run_config("masker", None, overrides, MaskerConfig, dataset_options)
