"""The package's shape: no import cycles (static, function-level imports included), light entry points."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "agebatch"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> agebatch modules it imports, anywhere in the file (function bodies too).

    Imports under ``if TYPE_CHECKING:`` never run, so they are left out. Importing
    ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``, so those count as edges.
    """
    files = {_module_name(p, package.parent): p for p in package.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node) for n in ast.walk(node)}
        is_pkg = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module's package
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets.add(mod)
                targets.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import submodule`
        edges = set()
        for t in targets:
            if t not in modules:
                continue
            parts = t.split(".")
            edges.update(".".join(parts[:k]) for k in range(1, len(parts) + 1))  # parents run first
        # A module's own parent packages always run before it; a package may import its submodules.
        own_parents = {".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 1)}
        graph[name] = edges - own_parents - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "agebatch"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from agebatch.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from agebatch import a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from agebatch import d\n")
    (pkg / "d.py").write_text("import agebatch.c\n")
    found = cycles(import_graph(pkg))
    assert found == [["agebatch.a", "agebatch.sub.b"]], "a function-level import cycle is found; a TYPE_CHECKING one is not"


def test_agebatch_has_no_import_cycles() -> None:
    graph = import_graph()
    assert "agebatch.pipeline.run" in graph and "agebatch.backends.registry" in graph["agebatch.pipeline.stream"]
    found = cycles(graph)
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def folder_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph seen a folder at a time: ``agebatch.train.trainer`` is ``agebatch.train``; a root module is itself.

    A cycle here (train -> a root module -> train) is a layering mistake even when no two
    modules import each other.
    """

    def unit(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:2]) if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() else module

    folders: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if module == "agebatch":
            continue
        folders.setdefault(unit(module), set()).update(unit(t) for t in targets if t != "agebatch")
    return {k: v - {k} for k, v in folders.items()}


def test_folders_have_no_import_cycles() -> None:
    graph = folder_graph(import_graph())
    assert "agebatch.train" in graph and "agebatch.models" in graph["agebatch.train"]
    found = cycles(graph)
    assert found == [], "folder-level import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_every_command_loads_and_help_imports_no_framework() -> None:
    """`agebatch --help` lists every lazily loaded command and imports no ML runtime or OpenCV."""
    code = (
        "import sys\n"
        "from agebatch.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('tensorflow', 'keras', 'onnxruntime', 'cv2', 'ray', 'tensorrt', 'matplotlib', 'pyarrow')\n"
        "print('HEAVY=' + ','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for command in ("manifest", "train", "build-engine", "infer", "evaluate", "compare", "bench"):
        assert f"  {command}" in out, command
    assert "HEAVY=\n" in out
