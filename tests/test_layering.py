"""The package's layers: no import cycles between sub-packages, architectures below everything
that runs them, and no code outside ``archs``/``zoo`` that knows an architecture by name."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from superres.archs import REGISTRY

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "superres"


def _unit(path: Path) -> str:
    """The sub-package (or top-level module) a file belongs to."""
    first = path.relative_to(PACKAGE).parts[0]
    return first.removesuffix(".py")


def _imports() -> dict[str, set[str]]:
    """Sub-package -> the sub-packages it imports, lazy imports inside functions included."""
    graph: dict[str, set[str]] = defaultdict(set)
    for file in PACKAGE.rglob("*.py"):
        unit = _unit(file)
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "superres" and len(parts) > 1 and parts[1] != unit:
                    graph[unit].add(parts[1])
    return graph


def test_no_import_cycles_between_sub_packages():
    graph = _imports()
    done: set[str] = set()

    def visit(unit: str, path: list[str]) -> None:
        if unit in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(unit):], unit]))
        if unit in done:
            return
        for other in graph.get(unit, ()):
            visit(other, [*path, unit])
        done.add(unit)

    for unit in list(graph):
        visit(unit, [])


def test_architectures_import_nothing_that_runs_them():
    assert _imports()["archs"] <= {"ops", "runtime", "errors"}
    assert _imports()["runner"] <= {"ops", "runtime", "errors"}


def _code_names(file: Path) -> set[str]:
    """Identifiers and string values in a file's code (docstrings left out: they may cite papers)."""
    tree = ast.parse(file.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[-1])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            names.add(node.value)
    return names


def test_no_architecture_names_in_inference_faces_metrics_training_or_serving():
    archs = set(REGISTRY)
    for folder in ("infer", "faces", "metrics", "train", "serve"):
        for file in (PACKAGE / folder).rglob("*.py"):
            found = _code_names(file) & archs
            assert not found, f"{file.relative_to(PACKAGE)} names {sorted(found)}"
    assert not _code_names(PACKAGE / "runner.py") & archs


def test_upscaling_imports_no_heavy_optional_modules():
    """Loading a model imports every architecture's code (detection needs them all), so none may pull in
    torchvision (3.5 s here) or torch._dynamo at import: only the networks that use them, when they run."""
    import subprocess
    import sys

    code = ("import sys, numpy as np, superres\n"
            "superres.upscale(np.zeros((8, 8, 3), np.uint8), model='realesr-animevideov3', device='cpu')\n"
            "heavy = ('torchvision', 'torch._dynamo')\n"
            "print(sorted(m for m in sys.modules if m.startswith(heavy)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
