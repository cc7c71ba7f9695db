"""The course's chapters, as the grader, the tests and the benchmark see them.

Each chapter is a package ``autograder/chapters/<slug>/`` with the same slug as its page in
``book/``, its notebooks in ``solutions/`` and ``exercises/`` and its tests in ``tests/``:

- ``reference.py``: the reference implementation, mirroring torch's names where torch has one;
- ``checks.py``: the checks its hidden tests call (built with :mod:`autograder.toolkit`);
- ``wrong.py``: known-wrong implementations, ``WRONG = {name: {mistake: Mistake(impl, says)}}``,
  each with a phrase the check's message must contain;
- ``right.py``: correct variants as unlike the reference as the instructions allow,
  ``RIGHT = {name: {variant: impl}}``, each of which must get full marks;
- ``__init__.py``: the checks (the hidden tests import them from the package) and
  ``FORBIDDEN_BUILTINS``, the torch built-ins the exercise asks students not to call.

What is graded is read from the source notebook (``solutions/<slug>/<slug>.ipynb``), the one place
it is written: each graded code cell's hidden test is exactly ::

    from autograder.chapters.<slug> import check_<x>
    check_<x>(<Name>)

which makes it a :class:`Part`: its grade id, the name the student defines, the check, its points.
One name may have several graded cells (a large class graded behaviour by behaviour).

The markers nbgrader uses (solution regions, hidden tests) are parsed here once
(:data:`SOLUTION`, :data:`HIDDEN_TESTS`, :func:`regions`, :func:`without_markers`) for the grader,
the tests, the publish check and the tools. A slug is never renumbered once students have handed
work in.
"""

from __future__ import annotations

import ast
import functools
import importlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "Part",
    "Chapter",
    "Mistake",
    "load",
    "slugs",
    "chapter_of",
    "SOLUTIONS",
    "SOLUTION",
    "HIDDEN_TESTS",
    "MARKERS",
    "regions",
    "without_markers",
]

SOLUTIONS = Path(__file__).resolve().parents[2] / "solutions"

SOLUTION = ("### BEGIN SOLUTION", "### END SOLUTION")
HIDDEN_TESTS = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
MARKERS = (*SOLUTION, *HIDDEN_TESTS)


def regions(text: str, markers: tuple[str, str]) -> Iterator[str]:
    """The blocks of lines strictly between each pair of begin/end markers in `text`.

    Example: regions("a\\n### BEGIN SOLUTION\\nb\\nc\\n### END SOLUTION", SOLUTION) -> ["b\\nc"]
    """
    block: list[str] | None = None
    for line in text.split("\n"):
        if markers[0] in line:
            block = []
        elif markers[1] in line:
            if block is not None:
                yield "\n".join(block)
            block = None
        elif block is not None:
            block.append(line)


def without_markers(text: str) -> str:
    """`text` with every marker line removed, as a student who got it right would hand it in."""
    return "\n".join(line for line in text.split("\n") if line.strip() not in MARKERS)


class Mistake(NamedTuple):
    """A known-wrong implementation and a phrase its check's message must contain (any case)."""

    impl: object
    says: str


@dataclass(frozen=True)
class Part:
    """One graded code cell: its grade id, the name the student defines, the check, its points."""

    grade_id: str
    name: str
    check: Callable
    points: float


@dataclass(frozen=True)
class Chapter:
    """A chapter's graded parts (from its source notebook), its banks, its forbidden built-ins."""

    slug: str
    parts: tuple[Part, ...]
    forbidden_builtins: tuple[str, ...] = ()
    wrong: dict[str, dict[str, Mistake]] = field(default_factory=dict)
    right: dict[str, dict[str, object]] = field(default_factory=dict)

    def part(self, grade_id: str) -> Part:
        for part in self.parts:
            if part.grade_id == grade_id:
                return part
        raise KeyError(f"{self.slug} has no graded part {grade_id!r}")

    @property
    def names(self) -> tuple[str, ...]:
        """The names the student defines that are graded, in notebook order."""
        return tuple(dict.fromkeys(p.name for p in self.parts))

    def parts_of(self, name: str) -> tuple[Part, ...]:
        """The graded cells of `name` (several when it is graded behaviour by behaviour)."""
        return tuple(p for p in self.parts if p.name == name)

    def notebook(self, root: Path | None = None) -> Path:
        """The source notebook: solutions/<slug>/<slug>.ipynb."""
        return (root or SOLUTIONS) / self.slug / f"{self.slug}.ipynb"

    def points(self, root: Path | None = None) -> dict[str, float]:
        """{grade id: points} of every graded cell of the source notebook, auto and manual."""
        return {gid: cell.points for gid, cell in _graded_cells(self.notebook(root)).items()}


@dataclass(frozen=True)
class _Cell:
    points: float
    manual: bool
    source: str


def _graded_cells(path: Path) -> dict[str, _Cell]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    out = {}
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade"):
            source = cell["source"]
            out[meta["grade_id"]] = _Cell(
                float(meta.get("points", 0)),
                bool(meta.get("solution")) or cell["cell_type"] != "code",
                "".join(source) if isinstance(source, list) else source,
            )
    return out


def _hidden_call(slug: str, grade_id: str, source: str) -> tuple[str, str]:
    """(check name, student name) of a grade cell's hidden test, or ValueError saying why not."""
    expected = f"from autograder.chapters.{slug} import check_<x>\ncheck_<x>(<Name>)"
    hidden = "\n".join(regions(source, HIDDEN_TESTS))
    try:
        body = ast.parse(hidden).body
    except SyntaxError as exc:
        raise ValueError(f"{slug}: the hidden test of {grade_id!r} is not Python: {exc}") from None
    if (
        len(body) == 2
        and isinstance(body[0], ast.ImportFrom)
        and body[0].module == f"autograder.chapters.{slug}"
        and len(body[0].names) == 1
        and body[0].names[0].asname is None
        and isinstance(body[1], ast.Expr)
        and isinstance(call := body[1].value, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == body[0].names[0].name
        and len(call.args) == 1
        and isinstance(call.args[0], ast.Name)
        and not call.keywords
    ):
        return call.func.id, call.args[0].id
    raise ValueError(
        f"{slug}: the hidden test of graded cell {grade_id!r} must be exactly\n{expected}\n"
        f"not:\n{hidden}"
    )


def slugs() -> list[str]:
    """Every chapter that has a package here, in book order."""
    here = Path(__file__).parent
    return sorted(p.name for p in here.iterdir() if (p / "__init__.py").is_file())


@functools.cache
def load(slug: str) -> Chapter:
    """Chapter `slug`, its parts read from its source notebook; a clear error for a name that is
    not a chapter, or a graded cell whose hidden test is not one check of one name."""
    if not slug.isidentifier() or slug not in slugs():
        raise ValueError(f"no chapter {slug!r}; the chapters are: {', '.join(slugs())}")
    package = importlib.import_module(f"{__name__}.{slug}")
    path = SOLUTIONS / slug / f"{slug}.ipynb"
    parts = []
    for gid, cell in _graded_cells(path).items():
        if cell.manual:
            continue
        check_name, name = _hidden_call(slug, gid, cell.source)
        check = getattr(package, check_name, None)
        if not callable(check):
            raise ValueError(f"{slug}: {gid!r} calls {check_name}, which the package does not have")
        parts.append(Part(gid, name, check, cell.points))

    def bank(module: str, attribute: str) -> dict:
        qualified = f"{__name__}.{slug}.{module}"
        try:
            return getattr(importlib.import_module(qualified), attribute)
        except ModuleNotFoundError as exc:
            if exc.name != qualified:
                raise
            return {}

    return Chapter(
        slug=slug,
        parts=tuple(parts),
        forbidden_builtins=tuple(getattr(package, "FORBIDDEN_BUILTINS", ())),
        wrong=bank("wrong", "WRONG"),
        right=bank("right", "RIGHT"),
    )


def chapter_of(fn: Callable) -> str | None:
    """The slug of the chapter package `fn` was defined in (a check, a reference), or None."""
    parts = (getattr(fn, "__module__", "") or "").split(".")
    if parts[:2] == ["autograder", "chapters"] and len(parts) > 2 and parts[2] in slugs():
        return parts[2]
    return None
