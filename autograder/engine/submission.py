"""One submission, the unit of work: a :class:`Job` in, a :class:`StudentResult` out.

:func:`grade_submission` touches no file of the course, so it runs the same in a local worker
process or on a Dask worker. The plan of the notebook (:func:`_plan`) says which cells run;
``autograder.engine.judge`` runs them once in the sandbox and judges every part outside it.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass

from autograder.course.grades import GradedCell
from autograder.reporting.reports import StudentResult

__all__ = ["GradedCell", "Job", "StudentResult", "grade_submission"]


@dataclass(frozen=True)
class Job:
    """Everything needed to grade one submission, and nothing of the course's files."""

    assignment: str
    student: str
    notebooks: dict[str, bytes]  # file name -> bytes, as handed in
    release: dict[str, str]  # file name -> the released notebook's JSON
    cells: dict[str, GradedCell]  # grade id -> what it is worth
    sandboxed: bool = True
    cell_seconds: float = 120.0
    part_seconds: float = 120.0
    hidden: tuple[str, ...] = ()  # folders the sandbox must not show


def grade_submission(job: Job) -> StudentResult:
    """Grade one submission; never raises (a crash becomes a row with the reason)."""
    _quiet()
    started = time.monotonic()
    result = StudentResult(student=job.student, sandboxed=job.sandboxed)
    try:
        _grade(job, result)
    except Exception as exc:  # the grader's own failure still gives the student a row
        result.status = "error"
        result.grader_fault = True
        result.reason = f"the grader failed: {type(exc).__name__}: {exc}"
        logging.getLogger(__name__).error(
            "grading %s failed:\n%s", job.student, traceback.format_exc()
        )
    result.max_score = sum(c.points for c in job.cells.values())
    result.score = sum(result.cells.values())
    result.seconds = round(time.monotonic() - started, 2)
    return result


def _grade(job: Job, result: StudentResult) -> None:
    import nbformat

    from autograder import chapters
    from autograder.engine import scanner
    from autograder.engine.judge import Options, judge_notebook

    chapter = chapters.load(job.assignment)
    options = Options(
        sandboxed=job.sandboxed,
        cell_seconds=job.cell_seconds,
        part_seconds=job.part_seconds,
        hidden=job.hidden,
    )
    problems, timings = [], Counter()
    for name, release_json in sorted(job.release.items()):
        release = nbformat.reads(release_json, as_version=4)
        stem = name.removesuffix(".ipynb")
        graded = {gid: c for gid, c in job.cells.items() if c.notebook == stem}
        raw = job.notebooks.get(name)
        if raw is None and len(job.notebooks) == 1 and len(job.release) == 1:
            # One notebook under another name ("Copy of ...", "... (1).ipynb"): it is the one.
            ((other, raw),) = job.notebooks.items()
            problems.append(f"graded {other} as {name} (the only notebook handed in)")
        if raw is None:
            found = ", ".join(sorted(job.notebooks)) or "no notebook at all"
            problems.append(f"{name} is missing (found: {found})")
            continue
        try:
            nb = _read_notebook(raw)
        except ValueError as exc:
            problems.append(f"{name} could not be read as a notebook: {exc}")
            continue

        scan_started = time.monotonic()
        for f in scanner.scan_notebook(
            nb, forbidden_builtins=chapter.forbidden_builtins, release_nb=release
        ):
            message = f.message.replace(" | ", "; ")  # " | " separates findings in the CSV
            result.findings.append(f"{name}:{f.cell_id}:{f.line} {f.kind}: {message} `{f.code}`")
        timings["scanner"] += time.monotonic() - scan_started

        plan = _plan(nb, release, graded)
        parts = [p for p in chapter.parts if p.grade_id in graded]
        run = judge_notebook(plan.to_run, parts, options)
        timings.update(getattr(run, "timings", {}))  # adds up, notebook after notebook
        if run.aborted:
            problems.append(f"{name}: {run.aborted}")
            result.status = "error"
        for index, why in run.skipped.items():
            problems.append(f"{name}: cell {index + 1} was skipped: {why}")
        for index, outputs in sorted(run.outputs.items()):
            if any(o.get("ename") == "TimeLimit" for o in outputs):
                problems.append(f"{name}: cell {index + 1} ran past the time limit and was stopped")
        verdicts = {v.grade_id: v for v in run.verdicts}
        if plan.blank:
            problems.append(f"{name} is the release as it was: nothing was answered")
        for gid, cell in graded.items():
            if cell.manual:
                (result.unanswered if gid in plan.unanswered else result.needs_manual).append(gid)
                continue
            verdict = verdicts.get(gid)
            result.cells[gid] = cell.points if verdict is not None and verdict.passed else 0.0
            if verdict is not None and not verdict.passed:
                result.messages[gid] = verdict.message
                if "time limit" in verdict.message:
                    problems.append(f"{name}: the checks of {gid} ran past the time limit")
            elif verdict is None:
                result.messages[gid] = "no check is declared for this cell"
        result.autograded[name] = nbformat.writes(_autograded(plan, run, verdicts, graded))
    result.timings = {stage: round(seconds, 4) for stage, seconds in timings.items()}
    extra = sorted(set(job.notebooks) - set(job.release))
    if extra and any(n in job.notebooks for n in job.release):
        problems.append(f"also handed in, not graded: {', '.join(extra)}")
    if problems:
        result.reason = "; ".join(problems)
        if not result.autograded:
            result.status = "no notebook" if all("missing" in p for p in problems) else "error"


@dataclass
class _Plan:
    nb: object  # the notebook to autograde: the student's, locked cells as released
    to_run: list[tuple[int, str]]  # (index in nb, source) of the code cells the runner runs
    tests: dict[int, str]  # index in nb -> grade id of a test cell
    unanswered: set[str]  # manual cells the student left as released
    blank: bool  # every answer cell is as released


def _plan(nb, release, graded: dict[str, GradedCell]) -> _Plan:
    """What runs: the student's cells in their order, every locked cell as released (put back
    where it was if deleted). Not run: grade cells of tests (the checks run outside, and their
    verdict becomes the cell's output), cells tagged ``visible-tests`` (they teach; the student's
    own outputs stay), and cells that the release holds as they are, unchanged and neither locked
    nor answers (they only illustrate; the student's own outputs stay)."""
    import nbformat

    def meta(cell) -> dict:
        return cell.get("metadata", {}).get("nbgrader", {})

    released = {meta(c).get("grade_id"): c for c in release.cells if meta(c).get("grade_id")}
    locked = {gid: c for gid, c in released.items() if meta(c).get("locked")}
    plain = {c.source for c in release.cells if c.cell_type == "code" and not meta(c)}
    cells = []
    seen = set()
    for cell in nb.cells:
        gid = meta(cell).get("grade_id")
        if gid in locked:
            if gid in seen:
                continue  # a copied locked cell: one is enough
            outputs = cell.get("outputs", [])
            cell = nbformat.from_dict(locked[gid])
            if cell.cell_type == "code":
                cell.outputs = outputs
        if gid:
            seen.add(gid)
        cells.append(cell)
    for position, cell in enumerate(release.cells):  # put back deleted locked cells
        gid = meta(cell).get("grade_id")
        if gid in locked and gid not in seen:
            before = {meta(c).get("grade_id") for c in release.cells[:position]}
            at = max(
                (i + 1 for i, c in enumerate(cells) if meta(c).get("grade_id") in before), default=0
            )
            cells.insert(at, nbformat.from_dict(cell))
            seen.add(gid)
    out = nbformat.from_dict({**nb, "cells": cells})
    to_run, tests, unanswered = [], {}, set()
    for index, cell in enumerate(out.cells):
        m = meta(cell)
        gid = m.get("grade_id")
        if gid in graded and graded[gid].manual and gid in released:
            if cell.source.strip() == released[gid].source.strip():
                unanswered.add(gid)
        if cell.cell_type != "code":
            continue
        if m.get("grade") and not m.get("solution"):
            tests[index] = gid
            cell.outputs = []
            continue
        if "visible-tests" in cell.metadata.get("tags", []):
            continue  # they teach; the grade cell after them holds the checks
        if not m and cell.source in plain:
            continue
        cell.outputs = []
        to_run.append((index, cell.source))
    blank = [c.source.strip() for c in nb.cells] == [c.source.strip() for c in release.cells]
    return _Plan(out, to_run, tests, unanswered, blank)


def _autograded(plan: _Plan, run, verdicts: dict, graded: dict[str, GradedCell]):
    """The notebook with the runner's outputs, and each test cell's verdict as its output."""
    import nbformat

    nb = nbformat.from_dict(plan.nb)
    for index, outputs in run.outputs.items():
        nb.cells[index].outputs = [nbformat.from_dict(o) for o in outputs]
    for index, gid in plan.tests.items():
        verdict = verdicts.get(gid)
        points = graded[gid].points if gid in graded else 0
        if verdict is not None and verdict.passed:
            text = f"Passed: every check of this part holds ({points:g} of {points:g} points).\n"
            out = nbformat.v4.new_output("stream", name="stdout", text=text)
        else:
            message = verdict.message if verdict is not None else "not checked"
            out = nbformat.v4.new_output(
                "error", ename="CheckFailed", evalue=message, traceback=[f"CheckFailed: {message}"]
            )
        nb.cells[index].outputs = [out]
    return nb


def _read_notebook(raw: bytes):
    """The notebook in `raw`, or ValueError saying where it stops being one."""
    import nbformat

    try:
        text = raw.decode("utf-8")
        json.loads(text)
    except UnicodeDecodeError as exc:
        raise ValueError(f"it is not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"it is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "was it saved from Jupyter, and handed in whole?"
        ) from None
    try:
        return nbformat.reads(text, as_version=4)  # unvalidated: Colab bends the schema
    except Exception as exc:  # nbformat raises several kinds for a malformed notebook
        lines = str(exc).strip().splitlines()
        said = f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__
        raise ValueError(f"it is JSON but not a notebook: {said}") from None


def _quiet() -> None:
    """nbgrader 0.9.6 with SQLAlchemy 2 warns on every new submission; it is harmless."""
    warnings.filterwarnings("ignore", message=".*not in session.*")
    logging.getLogger("traitlets").setLevel(logging.ERROR)
