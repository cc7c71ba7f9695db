"""The page is not the answer: no function or class that the book defines passes a graded check.

A page teaches an idea in its own cells; its exercise asks for what the page does not contain (a
generalisation, another decomposition, the other variant). A check that the page's own code passes
would grade copying, and renaming would hide it from any comparison of text. So this test runs the
code itself:

- each chapter page's *definitions* are executed, without the training and the plots: top-level
  imports, functions, classes and assignments, each under a short time limit (a statement that
  trains, fails or runs out of time is skipped, and what needs it fails its checks, as it would
  for a student who pasted the page without it);
- every graded check of chapter N is run against every function and class defined on pages 1..N
  and in the public ``attention_data`` package (a student has all of them), each under a time
  limit. None may pass. A function is tried for a function's part and a class for a class's part.

Not here: whether the page's *text* repeats a model answer (tests/test_book.py does that on the
built book).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import inspect
import os
import pkgutil
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from autograder import chapters
from autograder.toolkit import CheckFailed

REPO = Path(__file__).resolve().parents[1]
SLUGS = chapters.slugs()
STATEMENT_SECONDS = 5  # a definition or a cheap assignment; more is training
CHECK_SECONDS = 60  # the slowest check on a correct answer takes a few seconds


class _TimeUp(BaseException):
    """Raised by the alarm; a BaseException so that the code under test cannot catch it."""


@contextlib.contextmanager
def _limit(seconds: float) -> Iterator[None]:
    def expire(signum, frame):
        raise _TimeUp

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _code_cells(page: Path) -> list[str]:
    from myst_nb.core.read import read_myst_markdown_notebook

    nb = read_myst_markdown_notebook(page.read_text(encoding="utf-8"))
    return [c.source for c in nb.cells if c.cell_type == "code"]


KEPT = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)


def page_definitions(slug: str) -> dict:
    """The namespace of `slug`'s page after its definitions have run (see the module docstring)."""
    module = f"book_page_{slug}"
    namespace: dict = {"__name__": module}
    cwd = os.getcwd()
    os.chdir(REPO / "book")  # where the book build runs the pages
    try:
        for cell in _code_cells(REPO / "book" / f"{slug}.md"):
            lines = [ln for ln in cell.split("\n") if not ln.lstrip().startswith(("%", "!"))]
            try:
                tree = ast.parse("\n".join(lines))
            except SyntaxError:
                continue
            for node in tree.body:
                if not isinstance(node, KEPT):
                    continue
                code = compile(ast.Module([node], []), f"<{slug}>", "exec")
                try:
                    with warnings.catch_warnings(), _limit(STATEMENT_SECONDS):
                        warnings.simplefilter("ignore")
                        exec(code, namespace)
                except (Exception, _TimeUp):
                    continue
    finally:
        os.chdir(cwd)
    return namespace


def _defined_in(namespace: dict, module: str) -> dict[str, object]:
    return {
        f"{module}.{name}": value
        for name, value in namespace.items()
        if (inspect.isfunction(value) or inspect.isclass(value))
        and getattr(value, "__module__", None) == module
    }


@functools.cache
def _public_package() -> dict[str, object]:
    """Every function and class that the public attention_data package defines."""
    import attention_data

    found = {}
    for info in pkgutil.walk_packages(attention_data.__path__, "attention_data."):
        if info.name.rsplit(".", 1)[-1] in {"__main__"}:
            continue
        module = importlib.import_module(info.name)
        found.update(_defined_in(vars(module), info.name))
    # A command line is no answer, and calling it would start a training run.
    return {k: v for k, v in found.items() if k.rsplit(".", 1)[-1] not in {"main", "_main"}}


@functools.cache
def _page(slug: str) -> dict[str, object]:
    return _defined_in(page_definitions(slug), f"book_page_{slug}")


def candidates(slug: str) -> dict[str, object]:
    """Every function and class of `slug`'s page, of the earlier pages and of attention_data."""
    found = _public_package()
    for earlier in SLUGS[: SLUGS.index(slug) + 1]:
        found.update(_page(earlier))
    return found


def _passes(check, candidate) -> bool:
    try:
        with warnings.catch_warnings(), _limit(CHECK_SECONDS):
            warnings.simplefilter("ignore")
            check(candidate)
    except (CheckFailed, _TimeUp):
        return False
    except Exception:  # a check that breaks on a strange candidate has not been passed
        return False
    return True


def test_the_pages_define_something():
    """The mechanism sees the pages' code: a page that defines nothing here would pass vacuously."""
    for slug in SLUGS:
        assert _page(slug), f"book/{slug}.md: no function or class was found on the page"


@pytest.mark.slow
@pytest.mark.parametrize("slug", SLUGS)
def test_no_page_definition_passes_a_graded_check(slug):
    chapter = chapters.load(slug)
    reference = importlib.import_module(f"autograder.chapters.{slug}.reference")
    passing = []
    for part in chapter.parts:
        wants_class = inspect.isclass(getattr(reference, part.name))
        for where, candidate in candidates(slug).items():
            if inspect.isclass(candidate) != wants_class:
                continue
            if _passes(part.check, candidate):
                passing.append(f"{where} passes {part.grade_id} ({part.check.__name__})")
    assert not passing, (
        "the book answers its own exercise: change the exercise to ask for what the page does "
        "not contain (or the page's decomposition):\n" + "\n".join(passing)
    )
