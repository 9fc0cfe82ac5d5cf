"""Import contracts, read from the source with `ast` (nothing is imported): trainer/ has no import circle and
never imports cloud/.

Every import counts, at module level or inside a function: a function-level import still ties the two
modules together (and closes a circle the first time that function runs). `from trainer import x` is an
import of trainer.x when x is a module; an implicit import of a parent package does not count.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("trainer", "cloud")


def module_name(path):
    """trainer/export/common.py -> trainer.export.common; trainer/export/__init__.py -> trainer.export."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def parsed_modules():
    """{module name: (path, ast tree)} of every module under PACKAGES."""
    return {module_name(path): (path, ast.parse(path.read_text(), str(path)))
            for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def imported_names(name, path, tree):
    """The dotted names module NAME imports (`from A import B` as A.B, `from A import *` as A), relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found += [base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names]
    return found


def import_graph(modules):
    """{module: sorted modules of MODULES it imports}: each imported name resolved to the module it names
    (trainer.config.load_params -> trainer.config); `from A import B` counts B when B is a module, else A."""
    graph = {}
    for name, (path, tree) in modules.items():
        targets = set()
        for imported in imported_names(name, path, tree):
            target = imported
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
        graph[name] = sorted(targets)
    return graph


def import_circle(graph):
    """The first import circle of GRAPH as a path [a, b, ..., a], or None (depth-first, in name order)."""
    state = {}  # module -> "open" while on the current path, "done" once every path from it is explored
    path = []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for target in graph.get(module, ()):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (circle := visit(module)):
            return circle
    return None


def cloud_imports(modules):
    """["trainer.x imports cloud.y", ...]: every import of cloud/ by a module of trainer/."""
    return [f"{name} imports {imported}" for name, (path, tree) in sorted(modules.items())
            if name.split(".")[0] == "trainer"
            for imported in imported_names(name, path, tree) if imported.split(".")[0] == "cloud"]


@pytest.fixture(scope="module")
def modules():
    return parsed_modules()


def test_the_graph_sees_function_level_and_from_package_imports(modules):
    """The parser finds what the contracts rest on: function-level imports, `from trainer import x`, relative
    imports; a circle is reported as its path; an import of cloud/ in any form is found."""
    tree = ast.parse("import os\nfrom trainer import console, errors\n"
                     "def f():\n    from trainer.export.common import load_job\n    from . import tflite\n")
    fake = {**modules, "trainer.export.fake": (ROOT / "trainer" / "export" / "fake.py", tree)}
    assert import_graph(fake)["trainer.export.fake"] == [
        "trainer.console", "trainer.errors", "trainer.export.common", "trainer.export.tflite"]
    assert import_circle({"a": ["b"], "b": ["c"], "c": ["b"], "d": []}) == ["b", "c", "b"]
    assert import_circle({"a": ["b"], "b": []}) is None
    assert cloud_imports({**fake, "trainer.fake": (ROOT / "trainer" / "fake.py", ast.parse(
        "def f():\n    import cloud.specs\n    from cloud import jobs\n"))}) == [
        "trainer.fake imports cloud.specs", "trainer.fake imports cloud.jobs"]


def test_trainer_has_no_import_circle(modules):
    graph = import_graph({name: parsed for name, parsed in modules.items() if name.split(".")[0] == "trainer"})
    circle = import_circle(graph)
    assert circle is None, f"import circle in trainer/: {' -> '.join(circle)}"


def test_trainer_never_imports_cloud(modules):
    assert cloud_imports(modules) == []
