"""What the chapters' test files share: the devices they run on, a known mistake judged in the
real sandbox next to the rest of the chapter's solution, the behaviour cells a mistake fails, and
what the notebook's visible tests tell a student whose answer holds a given mistake or variant.

Not here: what a chapter's tests assert (each test file says it), and the contract every chapter
meets (test_chapter_contract.py).
"""

from __future__ import annotations

import nbformat
import pytest
import torch

from nbgrader_helpers import REPO, SOLUTION_MARKERS

# Every test that takes a device runs on the CPU, and on CUDA where there is one.
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here"),
    ),
]


def judge_with_mistake(
    slug: str, mistake: str, part_seconds: int = 120, grade_ids: set[str] | None = None
) -> dict:
    """Run the chapter's setup and solution cells, then `mistake` (code that redefines one part
    wrongly), in the sandbox, and judge every part (or those in `grade_ids`):
    {grade id: (passed, message)}."""
    from autograder.chapters import load
    from autograder.engine.judge import Options, judge_notebook

    chapter = load(slug)
    nb = nbformat.read(chapter.notebook(), as_version=4)
    cells = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and (meta.get("solution") or meta.get("grade_id") == "setup"):
            lines = [ln for ln in cell.source.split("\n") if ln.strip() not in SOLUTION_MARKERS]
            cells.append((len(cells), "\n".join(lines)))
    cells.append((len(cells), mistake))
    parts = [p for p in chapter.parts if grade_ids is None or p.grade_id in grade_ids]
    run = judge_notebook(cells, parts, Options(part_seconds=part_seconds, hidden=(str(REPO),)))
    return {v.grade_id: (v.passed, v.message) for v in run.verdicts}


def failing_cells(slug: str, name: str, impl) -> set[str]:
    """The grade ids of the graded cells of `name` (one per behaviour) that `impl` fails."""
    import warnings

    from autograder.chapters import load
    from autograder.toolkit import CheckFailed

    failed = set()
    for part in load(slug).parts_of(name):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                part.check(impl)
        except CheckFailed:
            failed.add(part.grade_id)
    return failed


def visible_failures(slug: str, replacements: dict) -> dict[str, str | None]:
    """The solution notebook's setup and answer cells run in one namespace, `replacements`
    ({name: object}) put in it, then every visible-tests cell in order: {cell id: the message of
    its first failed assert (or "<Type>: message" for another exception), None if it passed}."""
    import contextlib
    import io

    from autograder.chapters import without_markers

    nb = nbformat.read(REPO / "solutions" / slug / f"{slug}.ipynb", as_version=4)
    namespace: dict = {"__name__": "__main__"}
    visible = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or meta.get("grade"):
            continue
        if "visible-tests" in cell.metadata.get("tags", []):
            visible.append(cell)
        elif meta.get("solution") or meta.get("locked"):
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(without_markers(cell.source), cell.id, "exec"), namespace)
    namespace.update(replacements)
    results: dict[str, str | None] = {}
    for cell in visible:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(cell.source, cell.id, "exec"), namespace)
        except AssertionError as exc:
            results[cell.id] = str(exc)
        except Exception as exc:  # a visible test that breaks instead of saying what is wrong
            results[cell.id] = f"{type(exc).__name__}: {exc}"
        else:
            results[cell.id] = None
    return results


def visible_failures_of_correct_answers(slug: str) -> dict[str, dict[str, str]]:
    """{answer: {visible-tests cell: message}} for the solution and each variant of the chapter's
    right bank (each in the solution's namespace) that fails a visible test: a visible test that
    a correct answer fails is as wrong as a hidden check that does."""
    from autograder.chapters import load

    answers = {"the solution": {}}
    for name, variants in load(slug).right.items():
        for variant, impl in variants.items():
            answers[f"{name}: {variant}"] = {name: impl}
    failing = {}
    for answer, replacements in answers.items():
        failed = {cell: m for cell, m in visible_failures(slug, replacements).items() if m}
        if failed:
            failing[answer] = failed
    return failing
