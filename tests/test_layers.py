"""The grader's four layers import in one direction only (issue 21).

    autograder.course       the course on disk: paths, roster, late policy, records, scores
    autograder.reporting    feedback pages and reports: may use the course layer alone
    autograder.engine       grading: may use the course layer and reporting, never the
                            instructor's commands
    autograder.instructor   the instructor's commands: may use every layer

Every import is read with `ast`, at any depth (an import inside a function counts), relative
imports resolved, and `importlib.import_module("...")` / `__import__("...")` with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "autograder"
LAYERS = ("course", "reporting", "engine", "instructor")
ALLOWED = {
    "course": {"course"},
    "reporting": {"reporting", "course"},
    "engine": {"engine", "reporting", "course"},
    "instructor": {"instructor", "engine", "reporting", "course"},
}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "autograder" and parts[1] in LAYERS:
        return parts[1]
    return None


def imported(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, module name) of every import in `source`, the code of `module`."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            # `from autograder import instructor` imports the package itself
            out += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if called in ("import_module", "__import__") and isinstance(first, ast.Constant):
                if isinstance(first.value, str):
                    out.append((node.lineno, first.value))
    return out


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """The imports of `module` that go against the layers' direction."""
    own = _layer(module)
    if own is None:
        return []
    found = {}  # one per statement: `from a import b` names both a and a.b
    for line, name in imported(source, module, is_package):
        other = _layer(name)
        if other is not None and other not in ALLOWED[own]:
            found.setdefault(line, f"{module}:{line} ({own}) imports {name} ({other})")
    return list(found.values())


def _modules():
    for layer in LAYERS:
        root = PACKAGE / layer
        paths = sorted(root.rglob("*.py")) if root.is_dir() else [PACKAGE / f"{layer}.py"]
        for path in paths:
            rel = path.relative_to(PACKAGE.parent).with_suffix("")
            parts = list(rel.parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            yield path, ".".join(parts), is_package


def test_every_layer_exists_and_holds_code():
    layers = {_layer(module) for _, module, _ in _modules()}
    assert layers == set(LAYERS)


def test_the_layers_import_in_one_direction_only():
    found = []
    for path, module, is_package in _modules():
        found += violations(path.read_text(encoding="utf-8"), module, is_package)
    assert not found, "imports against the layers' direction:\n" + "\n".join(found)


def test_every_layer_above_the_course_uses_it():
    users = {"engine": False, "instructor": False, "reporting": False}
    for path, module, is_package in _modules():
        layer = _layer(module)
        if layer in users:
            names = imported(path.read_text(encoding="utf-8"), module, is_package)
            users[layer] |= any(_layer(name) == "course" for _, name in names)
    assert users == {"engine": True, "instructor": True, "reporting": True}


@pytest.mark.parametrize(
    "module, source",
    [
        ("autograder.engine.batch", "def f():\n    from autograder.instructor.collect import x\n"),
        ("autograder.engine.batch", "from ..instructor import students\n"),
        ("autograder.engine.batch", "from autograder import instructor\n"),
        ("autograder.engine.batch", "importlib.import_module('autograder.instructor')\n"),
        ("autograder.course.record", "import autograder.engine.grade\n"),
        ("autograder.course.record", "from . import roster\nfrom ..engine import pool\n"),
        ("autograder.course", "from .. import instructor\n"),
        ("autograder.course.grades", "from autograder.reporting.reports import StudentResult\n"),
        ("autograder.reporting.reports", "from autograder.engine import gradebook\n"),
        ("autograder.reporting.feedback", "def f():\n    from ..instructor import export\n"),
    ],
)
def test_the_check_finds_an_import_against_the_direction(module, source):
    is_package = module == "autograder.course"
    assert len(violations(source, module, is_package)) == 1


@pytest.mark.parametrize(
    "module, source",
    [
        ("autograder.engine.batch", "from autograder.course import record\nfrom . import pool\n"),
        ("autograder.instructor.export", "from autograder.engine.grade import write_reports\n"),
        ("autograder.course.record", "from . import roster\nimport csv\n"),
        ("autograder.engine.batch", "from autograder.reporting.reports import write_reports\n"),
        ("autograder.instructor.export", "from autograder.reporting import reports\n"),
    ],
)
def test_the_check_lets_the_allowed_imports_through(module, source):
    assert violations(source, module) == []
