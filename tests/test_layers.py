"""The import graph of ``src/cachelab``: no cycle anywhere, and no module imports from a layer above it.

The graph is read from the source with :mod:`ast` (nothing is imported), so a
function-local import counts as much as one at the top of a module — it is the
same dependency, only later — and so does a ``"cachelab.x:attr"`` string that
is imported by name (the worker's handlers, uvicorn's app factory). The layer
map is :data:`cachelab._layers.LAYERS`; the README's layout table must say the
same thing and name every module folder there is.
"""

from __future__ import annotations

import ast
import graphlib
import re
from pathlib import Path

import pytest

from cachelab._layers import LAYERS, layer_of

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
NAMED_IMPORT = re.compile(r"^(cachelab(?:\.\w+)*):\w+$")


def _modules(src: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Every module under ``src/package``: dotted name → (file, is a package ``__init__``)."""
    found = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


def _target(name: str, modules: dict[str, tuple[Path, bool]]) -> str | None:
    """The module a dotted name lands in (``a.b.C`` → ``a.b``), if it is one of ours."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(src: Path = SRC, package: str = "cachelab") -> dict[str, set[str]]:
    """Module → the modules of ``package`` it imports, anywhere in its body."""
    modules = _modules(src, package)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the package that holds this module
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                # `from pkg import sub` depends on the submodule; `from mod import thing` on the module.
                subs = [f"{origin}.{alias.name}" for alias in node.names]
                names = [sub if sub in modules else origin for sub in subs]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                match = NAMED_IMPORT.match(node.value)
                names = [match[1]] if match else []
            for imported in names:
                if imported == package or imported.startswith(package + "."):
                    target = _target(imported, modules)
                    if target and target != name:
                        deps.add(target)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as ``[a, b, ..., a]``, or None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(reversed(exc.args[1]))
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a higher layer, as readable lines."""
    found = []
    for module, deps in sorted(graph.items()):
        mine = layer_of(module)
        for dep in sorted(deps):
            theirs = layer_of(dep)
            if mine is not None and theirs is not None and theirs > mine:
                found.append(f"{module} (layer {mine}) imports {dep} (layer {theirs})")
    return found


GRAPH = import_graph()


def test_every_module_has_a_layer():
    missing = sorted(m for m in GRAPH if layer_of(m) is None)
    assert missing == [], f"add these to cachelab._layers.LAYERS (and the README's layout): {missing}"


def test_no_module_imports_from_a_layer_above_its_own():
    assert upward_imports(GRAPH) == []


def test_there_is_no_import_cycle_in_src():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH) or [])


def test_the_graph_sees_function_local_imports_and_named_imports():
    # Known edges of each kind, so a silently empty graph cannot pass the tests above.
    assert "cachelab.servers.redis_server" in GRAPH["cachelab.app.main"]  # module level
    assert "cachelab.experiments.chaos_cli" in GRAPH["cachelab.cli"]  # inside build_parser()
    assert "cachelab.app.main" in GRAPH["cachelab.harness.app_server"]  # uvicorn's "module:attr"
    assert "cachelab.config" not in GRAPH["cachelab.client"]  # the client takes options
    assert "cachelab.cli" not in GRAPH["cachelab.worker"]


def test_a_cycle_through_a_function_local_relative_import_is_found(tmp_path):
    pkg = tmp_path / "demo"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from .sub.high import g\n    return g\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "high.py").write_text("from .. import low\nfrom demo.low import f as g\n")
    graph = import_graph(tmp_path, "demo")
    assert graph["demo.low"] == {"demo.sub.high"} and graph["demo.sub.high"] == {"demo.low"}
    cycle = find_cycle(graph)
    assert cycle is not None and set(cycle) == {"demo.low", "demo.sub.high"}


def _readme_layout() -> list[tuple[str, list[str]]]:
    """The README's layout table as (layer, [paths]) rows; later paths in a cell are beside the first."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.fullmatch(r"\d+|–|-", cells[0]):
            continue
        first, *beside = re.findall(r"`([^`]+)`", cells[1])
        parent = first.rstrip("/").rpartition("/")[0]
        rows.append((cells[0], [first] + [f"{parent}/{p}" if parent else p for p in beside]))
    return rows


def _module_of(path: str) -> str:
    return path.removeprefix("src/").removesuffix("/").removesuffix(".py").replace("/", ".")


def test_the_readme_layout_table_matches_the_folders_and_the_layers():
    rows = _readme_layout()
    assert rows, "README.md has no layout table under '## Layout'"
    named = set()
    for layer, paths in rows:
        for path in paths:
            assert (ROOT / path).exists(), f"README layout names {path}, which does not exist"
            if path.startswith("src/cachelab/"):
                module = _module_of(path)
                named.add(module)
                assert str(layer_of(module)) == layer, f"README says {path} is layer {layer}"
    top = {
        f"cachelab.{p.stem}"
        for p in (SRC / "cachelab").iterdir()
        if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").exists()
    }
    assert top - named == set(), "modules or packages missing from the README's layout table"
    assert {name for name in LAYERS if name != "cachelab"} == top, "cachelab._layers.LAYERS is out of date"


@pytest.mark.parametrize("package", sorted(m for m, (_, pkg) in _modules(SRC, "cachelab").items() if pkg))
def test_every_package_says_its_layer_in_its_docstring(package):
    path = _modules(SRC, "cachelab")[package][0]
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    if package == "cachelab":
        assert "cachelab._layers" in doc
    else:
        assert f"Layer {layer_of(package)}" in doc, f"{path}: say 'Layer {layer_of(package)}: ...'"
