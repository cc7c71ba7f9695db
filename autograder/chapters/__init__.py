"""The course's chapters, as the grader, the tests and the benchmark see them.

Each chapter is a package ``autograder/chapters/<slug>/`` with the same slug as its page in
``book/``, its notebooks in ``solutions/`` and ``exercises/`` and its tests in ``tests/``:

- ``reference.py``: the reference implementation, mirroring torch's names where torch has one;
- ``checks.py``: the checks its hidden tests call (built with :mod:`autograder.toolkit`);
- ``wrong.py``: known-wrong implementations,
  ``WRONG = {name the student defines: {mistake: implementation}}``;
- ``__init__.py``: its declaration, ``CHAPTER = Chapter(...)``, one :class:`Part` per graded cell.

A chapter's points are written in one place, its source notebook; :meth:`Chapter.points` reads
them from there. A slug is never renumbered once students have handed work in.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Part", "Chapter", "load", "slugs", "SOLUTIONS"]

SOLUTIONS = Path(__file__).resolve().parents[2] / "solutions"


@dataclass(frozen=True)
class Part:
    """One graded cell: its grade id, the name the student defines, and the check of that name."""

    grade_id: str
    name: str
    check: Callable

    @property
    def stand_ins(self) -> dict[str, Callable]:
        """The earlier parts' names that reach the reference while this part is checked."""
        return dict(getattr(self.check, "stand_ins", {}))


@dataclass(frozen=True)
class Chapter:
    """A chapter's graded parts and the torch built-ins its exercise asks students not to call."""

    slug: str
    parts: tuple[Part, ...]
    forbidden_builtins: tuple[str, ...] = ()
    wrong: dict[str, dict[str, object]] = field(default_factory=dict)

    def part(self, grade_id: str) -> Part:
        for part in self.parts:
            if part.grade_id == grade_id:
                return part
        raise KeyError(f"{self.slug} has no graded part {grade_id!r}")

    def notebook(self, root: Path | None = None) -> Path:
        """The source notebook: solutions/<slug>/<slug>.ipynb."""
        return (root or SOLUTIONS) / self.slug / f"{self.slug}.ipynb"

    def points(self, root: Path | None = None) -> dict[str, float]:
        """{grade id: points} of every graded cell of the source notebook, auto and manual."""
        nb = json.loads(self.notebook(root).read_text())
        out = {}
        for cell in nb["cells"]:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("grade"):
                out[meta["grade_id"]] = float(meta.get("points", 0))
        return out


def slugs() -> list[str]:
    """Every chapter that has a package here, in book order."""
    here = Path(__file__).parent
    return sorted(p.name for p in here.iterdir() if (p / "__init__.py").is_file())


def load(slug: str) -> Chapter:
    """The declaration of chapter `slug`; a clear error for a name that is not a chapter."""
    if not slug.isidentifier() or slug not in slugs():
        raise ValueError(f"no chapter {slug!r}; the chapters are: {', '.join(slugs())}")
    return importlib.import_module(f"{__name__}.{slug}").CHAPTER
