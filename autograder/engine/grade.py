"""Batch grading for instructors: every submission of an assignment, one sandboxed run each.

    python -m autograder.engine.grade ch04_self_attention [--workers N] [--student ID ...]
        [--scheduler ADDRESS] [--no-sandbox] [--course ROOT]

(`make autograde` runs it for every assignment.) The unit of work is one submission
(:class:`Job`): the notebook's bytes as handed in, the release, and the points of each graded
cell. :func:`grade_submission` turns it into a :class:`StudentResult` without touching any file of
the course, so it runs the same in a local worker process or on a Dask cluster (``--scheduler``).
There, ``autograder.engine.judge`` runs the notebook once in the sandbox and judges every part
outside it.

The parent reads the submissions (never writes them), hands out the jobs, and then, alone, writes:
the autograded notebooks, the scores in nbgrader's gradebook (auto scores only; a score an
instructor gave by hand stays, and so does its "graded" state), the students' HTML feedback
(nbgrader's ``generate_feedback``), and ``<grading>/reports/<assignment>.csv`` and
``-report.md``, one row per student whatever happened to the notebook.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["Course", "Job", "StudentResult", "grade_submission", "grade_assignment", "main"]


# --------------------------------------------------------------------------------------------
# The course on disk
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Course:
    """Where an nbgrader course keeps its folders, read from its nbgrader_config.py."""

    root: Path
    source: Path
    release: Path
    submitted: Path
    autograded: Path
    feedback: Path
    db_path: Path

    @property
    def grading(self) -> Path:
        """The folder of the students' work and everything made from it (never in git)."""
        return self.submitted.parent

    @property
    def reports(self) -> Path:
        return self.grading / "reports"

    @classmethod
    def load(cls, root: str | os.PathLike) -> Course:
        root = Path(root).resolve()
        if not (root / "nbgrader_config.py").is_file():
            raise SystemExit(f"error: {root} has no nbgrader_config.py; pass --course COURSE_ROOT")
        config = load_config(root)
        cd = config.CourseDirectory
        course_root = Path(cd.get("root", root))
        db_url = cd.get("db_url", f"sqlite:///{course_root / 'gradebook.db'}")
        if not db_url.startswith("sqlite:///"):
            raise SystemExit(f"error: the batch grader needs an SQLite gradebook, got {db_url}")
        db_path = Path(db_url.removeprefix("sqlite:///"))
        return cls(
            root=course_root,
            source=course_root / cd.get("source_directory", "source"),
            release=course_root / cd.get("release_directory", "release"),
            submitted=course_root / cd.get("submitted_directory", "submitted"),
            autograded=course_root / cd.get("autograded_directory", "autograded"),
            feedback=course_root / cd.get("feedback_directory", "feedback"),
            db_path=db_path if db_path.is_absolute() else course_root / db_path,
        )


def load_config(root: Path):
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()


# --------------------------------------------------------------------------------------------
# One submission: the unit of work
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GradedCell:
    notebook: str  # the notebook's name, without .ipynb
    points: float
    manual: bool  # graded by hand (a written answer)


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


@dataclass
class StudentResult:
    student: str
    status: str = "graded"  # graded | error | no notebook | folder gone
    reason: str = ""
    score: float = 0.0  # what counts: the gradebook's total (hand-given scores too) less penalty
    max_score: float = 0.0
    raw_score: float = 0.0  # before the late penalty
    penalty: float = 0.0
    due: str | None = None
    late_by: str = ""
    grader_fault: bool = False  # the grader failed, not the notebook
    cells: dict[str, float] = field(default_factory=dict)  # grade id -> auto score
    needs_manual: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)  # manual cells left as released
    messages: dict[str, str] = field(default_factory=dict)  # grade id -> what failed
    findings: list[str] = field(default_factory=list)  # scanner: "nb:cell:line kind: code"
    integrity: list[str] = field(default_factory=list)
    sandboxed: bool = True
    seconds: float = 0.0
    timestamp: str | None = None
    autograded: dict[str, str] = field(default_factory=dict)  # file name -> notebook JSON


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
    problems = []
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

        for f in scanner.scan_notebook(
            nb, forbidden_builtins=chapter.forbidden_builtins, release_nb=release
        ):
            result.findings.append(f"{name}:{f.cell_id}:{f.line} {f.kind}: {f.code}")

        plan = _plan(nb, release, graded)
        parts = [p for p in chapter.parts if p.grade_id in graded]
        run = judge_notebook(plan.to_run, parts, options)
        if run.aborted:
            problems.append(f"{name}: {run.aborted}")
            result.status = "error"
        for index, why in run.skipped.items():
            problems.append(f"{name}: cell {index + 1} was skipped: {why}")
        verdicts = {v.grade_id: v for v in run.verdicts}
        for gid, cell in graded.items():
            if cell.manual:
                if gid in plan.unanswered:
                    result.unanswered.append(gid)
                else:
                    result.needs_manual.append(gid)
                continue
            verdict = verdicts.get(gid)
            result.cells[gid] = cell.points if verdict is not None and verdict.passed else 0.0
            if verdict is not None and not verdict.passed:
                result.messages[gid] = verdict.message
            elif verdict is None:
                result.messages[gid] = "no check is declared for this cell"
        result.autograded[name] = nbformat.writes(_autograded(plan, run, verdicts, graded))
    if problems:
        result.reason = "; ".join(problems)
        if not result.autograded:
            result.status = "no notebook" if all("missing" in p for p in problems) else "error"


def _collect_rows(course: Course, assignment: str) -> dict[str, dict]:
    """The last `collect`'s rows for `assignment` (instructor.collect), by student."""
    path = course.reports / f"{assignment}-collect.csv"
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return {row["student_id"]: row for row in csv.DictReader(f)}
    except (OSError, KeyError, csv.Error):
        return {}


def _no_folder_reason(course: Course, assignment: str, student: str) -> str:
    """Why a student has no submission of `assignment`, in words an instructor can act on."""
    collected = _collect_rows(course, assignment).get(student)
    if collected and collected.get("status") == "no notebook":
        return f"collect found no notebook: {collected.get('note', '')}"
    folder = course.submitted / student
    stray = sorted(p.name for p in folder.glob("*.ipynb")) if folder.is_dir() else []
    if stray:
        return (
            f"{', '.join(stray)} is in submitted/{student}/, one folder too high: move it to "
            f"submitted/{student}/{assignment}/ and grade again"
        )
    if folder.is_dir() and not any(folder.iterdir()):
        return f"submitted/{student}/ is empty: no notebook was handed in"
    return f"no submitted/{student}/{assignment}/ folder: no notebook was handed in"


@dataclass
class _Plan:
    nb: object  # the notebook to autograde: the student's, locked cells as released
    to_run: list[tuple[int, str]]  # (index in nb, source) of the code cells the runner runs
    tests: dict[int, str]  # index in nb -> grade id of a test cell
    unanswered: set[str]  # manual cells the student left as released


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
    return _Plan(out, to_run, tests, unanswered)


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
            nb.cells[index].outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        else:
            message = verdict.message if verdict is not None else "not checked"
            nb.cells[index].outputs = [
                nbformat.v4.new_output(
                    "error",
                    ename="CheckFailed",
                    evalue=message,
                    traceback=[f"CheckFailed: {message}"],
                )
            ]
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
        nb = nbformat.reads(text, as_version=4)  # not validated: Colab's notebooks bend the schema
    except Exception as exc:  # nbformat raises several kinds for a malformed notebook
        raise ValueError(f"it is JSON but not a notebook: {_first_line(exc)}") from None
    return nb


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def _quiet() -> None:
    """nbgrader 0.9.6 with SQLAlchemy 2 warns on every new submission; it is harmless."""
    warnings.filterwarnings("ignore", message=".*not in session.*")
    logging.getLogger("traitlets").setLevel(logging.ERROR)


# --------------------------------------------------------------------------------------------
# The parent: read, hand out, write
# --------------------------------------------------------------------------------------------


def _ensure_assignment(course: Course, assignment: str) -> None:
    """Put the assignment's cells in the gradebook (as `make exercises` does), release untouched."""
    from nbgrader.api import Gradebook, MissingEntry
    from nbgrader.apps import NbGraderAPI

    if course.db_path.exists():
        with Gradebook(f"sqlite:///{course.db_path}") as gb:
            try:
                if gb.find_assignment(assignment).notebooks:
                    return
            except MissingEntry:
                pass
    course.db_path.parent.mkdir(parents=True, exist_ok=True)
    config = load_config(course.root)
    release = Path(tempfile.mkdtemp(prefix="release-"))
    config.CourseDirectory.release_directory = str(release)
    try:
        outcome = NbGraderAPI(config=config).generate_assignment(assignment, force=True)
        if not outcome.get("success", False):
            raise SystemExit(
                f"error: nbgrader could not read {course.source / assignment}: "
                + _last_line(outcome.get("error", ""))
            )
    finally:
        shutil.rmtree(release, ignore_errors=True)


def graded_cells(course: Course, assignment: str) -> dict[str, GradedCell]:
    """{grade id: GradedCell} from the source notebooks: the one place points are written."""
    out = {}
    for path in sorted((course.source / assignment).glob("*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("grade"):
                out[meta["grade_id"]] = GradedCell(
                    path.stem, float(meta.get("points", 0)), bool(meta.get("solution"))
                )
    return out


def _last_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "unknown error"


def _merge(course: Course, assignment: str, result: StudentResult) -> None:
    """Scores into the gradebook and the autograded notebooks into place; a score given by hand
    stays, and a cell graded by hand is not asked for again."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{course.db_path}") as gb:
        gb.update_or_create_student(result.student)
        try:
            submission = gb.find_submission(assignment, result.student)
        except MissingEntry:
            submission = gb.add_submission(assignment, result.student)
        if result.timestamp:
            when = dt.datetime.fromisoformat(result.timestamp)
            if when.tzinfo is not None:  # the gradebook keeps naive UTC, as nbgrader does
                when = when.astimezone(dt.UTC).replace(tzinfo=None)
            submission.timestamp = when
        # The penalty is a share of the maximum (instructor.policy); nbgrader adds up the
        # notebooks' penalties, so it goes on one.
        for i, nb in enumerate(sorted(submission.notebooks, key=lambda n: n.name)):
            nb.late_submission_penalty = result.penalty if i == 0 else 0.0
        for nb in submission.notebooks:
            for grade in nb.grades:
                gid = grade.cell.name
                if gid in result.cells:
                    grade.auto_score = result.cells[gid]
                    grade.needs_manual_grade = False
                elif gid in result.unanswered:
                    grade.auto_score = 0.0
                    grade.needs_manual_grade = False
                elif gid in result.needs_manual:
                    grade.auto_score = None
                    grade.needs_manual_grade = grade.manual_score is None
        gb.db.commit()
    target = course.autograded / result.student / assignment
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name, text in result.autograded.items():
        (target / name).write_text(text)
    if result.timestamp:
        (target / "timestamp.txt").write_text(result.timestamp)


def _feedback(course: Course, assignment: str, students: list[str]) -> dict[str, str]:
    """nbgrader's HTML feedback for `students`; {student: why it failed} for those it failed."""
    from nbgrader.apps import NbGraderAPI

    api = NbGraderAPI(config=load_config(course.root))
    for student in students:
        shutil.rmtree(course.feedback / student / assignment, ignore_errors=True)
    everyone = {p.parent.name for p in course.autograded.glob(f"*/{assignment}")}
    if set(students) == everyone and len(students) > 1:
        # One call for the whole class: nbgrader's set-up is paid once.
        if api.generate_feedback(assignment).get("success", False):
            return {}
    failed = {}
    for student in students:
        outcome = api.generate_feedback(assignment, student)
        if not outcome.get("success", False):
            failed[student] = _last_line(outcome.get("error", ""))
    return failed


def refresh_feedback(course: Course, assignment: str) -> dict[str, str]:
    """The feedback of every graded student again, from the gradebook as it is now (after hand
    grading), without running a notebook; {student: why it failed} for those it failed."""
    students = sorted(p.parent.name for p in course.autograded.glob(f"*/{assignment}"))
    if not students:
        raise ValueError(f"no graded notebook of {assignment!r}: grade it first")
    failed = _feedback(course, assignment, students)
    _polish_feedback(course, assignment, [s for s in students if s not in failed])
    return failed


MATHJAX_CONFIG = """window.MathJax = {
  tex: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], processEscapes: true},
  svg: {fontCache: "global"},
  options: {enableMenu: false}
};"""


def _polish_feedback(course: Course, assignment: str, students: list[str]) -> None:
    """Make nbgrader's feedback pages tell the truth and stand alone: a written answer not yet
    graded by hand says so instead of "Score: 0.0", and the math is typeset by the vendored
    MathJax 3, inlined (the page is one file a student keeps; nbgrader's loads MathJax 2 from a
    CDN). Without the vendored copy (`make vendor`) the math stays as nbgrader left it."""
    from bs4 import BeautifulSoup
    from nbgrader.api import Gradebook, MissingEntry

    scripts = [
        root / "book" / "_vendor" / "mathjax" / "tex-svg-full.js"
        for root in (course.root, _package_root().parent)  # the course's, else the grader's
    ]
    mathjax = next((p.read_text(encoding="utf-8") for p in scripts if p.is_file()), None)
    with Gradebook(f"sqlite:///{course.db_path}") as gb:
        pending = {}
        for student in students:
            try:
                sub = gb.find_submission(assignment, student)
            except MissingEntry:
                continue
            pending[student] = {
                nb.name: {g.cell.name: g.max_score for g in nb.grades if g.needs_manual_grade}
                for nb in sub.notebooks
            }
    for student, notebooks in pending.items():
        for name, cells in notebooks.items():
            page = course.feedback / student / assignment / f"{name}.html"
            if not page.is_file():
                continue
            soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
            for gid, points in cells.items():
                later = f"graded by hand later ({points:g} points)"
                for link in soup.select(f'a[href="#{gid}"]'):
                    for text in link.find_next_siblings(string=True, limit=1):
                        text.replace_with(f" ({later})")
                for mark in soup.select(f'a[name="{gid}"]'):
                    heading = mark.find_next_sibling("div", class_="panel-heading")
                    score = heading.find("span", class_="pull-right") if heading else None
                    if score is not None and score.contents:
                        score.contents[0].replace_with(f"{later[0].upper()}{later[1:]} ")
            if cells and soup.h4 is not None:
                waiting = sum(cells.values())
                soup.h4.append(f" and {waiting:g} points graded by hand later")
            if mathjax is not None and soup.head is not None:
                for tag in soup.find_all("script"):
                    src = (tag.get("src") or "").lower()
                    if "mathjax" in src or tag.get("type") == "text/x-mathjax-config":
                        tag.decompose()
                config = soup.new_tag("script")
                config.string = MATHJAX_CONFIG
                code = soup.new_tag("script")
                code.string = mathjax
                soup.head.append(config)
                soup.head.append(code)
            page.write_text(str(soup), encoding="utf-8")


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def _read_job(course: Course, assignment: str, student: str, cells, release, **options) -> Job:
    folder = course.submitted / student / assignment
    notebooks = {p.name: p.read_bytes() for p in sorted(folder.glob("*.ipynb")) if p.is_file()}
    return Job(assignment, student, notebooks, release, cells, **options)


def _timestamp(course: Course, assignment: str, student: str) -> str | None:
    path = course.submitted / student / assignment / "timestamp.txt"
    if not path.is_file():
        return None
    try:
        from dateutil.parser import parse

        return parse(path.read_text().strip()).isoformat()
    except (ValueError, OverflowError, ImportError):
        return None


def grade_assignment(
    course: Course,
    assignment: str,
    *,
    students: list[str] | None = None,
    workers: int | None = None,
    sandboxed: bool = True,
    timeout: float | None = None,
    scheduler: str | None = None,
    progress: bool = True,
) -> list[StudentResult]:
    """Grade every (or the named) student's submission; write the gradebook, the feedback, the
    CSV and the report. `scheduler` is a Dask scheduler's address (tcp://host:8786) or a
    ``distributed.Client``; without it, `workers` local processes grade.

    Every student folder and every roster student gets a row; a full run also reports the
    students the gradebook holds whose folders are gone. The CSV's scores are read back from the
    gradebook after the run, so that the two agree, hand-given scores and late penalties too."""
    from autograder import chapters
    from autograder.instructor.policy import Policy
    from autograder.instructor.roster import Roster

    _quiet()
    try:
        chapters.load(assignment)
        policy = Policy.from_config(load_config(course.root))
        roster = Roster.load(course.grading / "roster.csv")
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    if sandboxed:
        from autograder.engine.sandbox import bwrap_path

        bwrap_path()  # raises SandboxUnavailable with instructions
    if not (course.source / assignment).is_dir():
        raise SystemExit(f"error: no assignment {assignment!r} in {course.source}")
    found = sorted(p.parent.name for p in course.submitted.glob(f"*/{assignment}") if p.is_dir())
    full_run = students is None
    if full_run:  # every student folder and every roster student gets a row
        students = sorted({p.name for p in course.submitted.glob("*") if p.is_dir()} | set(roster))
    missing = sorted(set(students) - set(found))
    _ensure_assignment(course, assignment)
    _set_due_date(course, assignment, policy.due(assignment))
    cells = graded_cells(course, assignment)
    max_score = sum(c.points for c in cells.values())
    release = {p.name: p.read_text() for p in sorted((course.release / assignment).glob("*.ipynb"))}
    if not release:
        raise SystemExit(
            f"error: no released notebook in {course.release / assignment}; run `make exercises`"
        )
    seconds = float(timeout or 120)
    options = dict(
        sandboxed=sandboxed,
        cell_seconds=seconds,
        part_seconds=seconds,
        hidden=tuple(str(p) for p in {course.root, course.grading, _package_root()}),
    )
    todo = [s for s in students if s in found]
    digests = {s: _digest(course.submitted / s / assignment) for s in todo}
    jobs = [_read_job(course, assignment, s, cells, release, **options) for s in todo]
    results: dict[str, StudentResult] = {
        s: StudentResult(
            student=s,
            status="no notebook",
            reason=_no_folder_reason(course, assignment, s),
            sandboxed=sandboxed,
            max_score=max_score,
        )
        for s in missing
    }
    bar = _progress(len(jobs), assignment, progress)
    for result in _run(jobs, workers, scheduler):
        when = _when(_timestamp(course, assignment, result.student))
        if when is not None and when.tzinfo is None:  # written without a zone: the course's
            when = when.replace(tzinfo=policy.timezone)
        result.timestamp = when.isoformat() if when else None
        note = _collect_note(course, assignment, result.student)
        if note:
            result.reason = "; ".join(x for x in (note, result.reason) if x)
        if result.autograded:
            late = policy.lateness(assignment, when, result.max_score)
            result.penalty = late.penalty
            result.late_by = late.describe()
            _merge(course, assignment, result)
        results[result.student] = result
        bar.update(1)
    bar.close()

    for student in missing:  # a student whose notebook is gone or unreadable now: see _supersede
        if (course.submitted / student).is_dir():
            _supersede(course, assignment, results[student])
    for result in results.values():
        if not result.autograded and result.student in todo:
            _supersede(course, assignment, result)

    merged = [r.student for r in results.values() if r.autograded]
    if merged:
        for student, why in _feedback(course, assignment, merged).items():
            results[
                student
            ].reason += f"{'; ' if results[student].reason else ''}no feedback: {why}"
        _polish_feedback(course, assignment, merged)
    for student, digest in digests.items():
        if _digest(course.submitted / student / assignment) != digest:
            results[student].integrity.append("the original submission changed during grading")

    for student in _gone(course, assignment):
        if full_run or student in results:
            results[student] = StudentResult(
                student=student,
                status="folder gone",
                reason=f"submitted/{student}/ is gone but the gradebook still holds a grade: "
                f"drop the student (python -m autograder.instructor drop {student}) or put "
                "the folder back",
                sandboxed=sandboxed,
                max_score=max_score,
            )
    ordered = [results[s] for s in sorted(results)]
    rows = [*_earlier_rows(course, assignment, results), *ordered]
    _read_back(course, assignment, rows, policy)
    write_reports(course, assignment, rows)
    return ordered


def _when(timestamp: str | None):
    return dt.datetime.fromisoformat(timestamp) if timestamp else None


def _collect_note(course: Course, assignment: str, student: str) -> str:
    """What `collect` wrote about a renamed notebook, for the row."""
    path = course.submitted / student / assignment / "collect.json"
    try:
        handed = json.loads(path.read_text()).get("handed_in", {})
    except (OSError, ValueError, AttributeError):
        return ""
    renamed = [f"{old!r} as {new}" for new, old in handed.items() if old != new]
    return f"handed in {', '.join(renamed)}; graded as the released notebook" if renamed else ""


def _set_due_date(course: Course, assignment: str, due) -> None:
    """The due date into the gradebook, where formgrader and `nbgrader export` show it."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course.db_path}") as gb:
        a = gb.find_assignment(assignment)
        value = due.astimezone(dt.UTC).replace(tzinfo=None) if due else None
        if a.duedate != value:
            a.duedate = value
            gb.db.commit()


def _supersede(course: Course, assignment: str, result: StudentResult) -> None:
    """A re-grade that found nothing to grade: the earlier grade stops standing. Its gradebook
    entry is removed (kept as JSON), its autograded notebook and feedback are moved, all to
    <grading>/superseded/<student>/<assignment>/. When the grader itself failed, the earlier
    grade stays and the row says it is not this notebook's."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{course.db_path}") as gb:
        try:
            sub = gb.find_submission(assignment, result.student)
        except MissingEntry:
            return
        old = {
            "score": sub.score,
            "max_score": sub.max_score,
            "late_submission_penalty": sub.late_submission_penalty,
            "timestamp": str(sub.timestamp or ""),
            "grades": {
                g.cell.name: {"auto_score": g.auto_score, "manual_score": g.manual_score}
                for nb in sub.notebooks
                for g in nb.grades
            },
        }
        if result.grader_fault:
            result.reason += (
                f"; the gradebook still holds the earlier grade ({old['score']:g} / "
                f"{old['max_score']:g}), which is not this notebook's: grade again"
            )
            return
        gb.remove_submission(assignment, result.student)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = course.grading / "superseded" / result.student / assignment / f"{stamp}-grade"
    target.mkdir(parents=True, exist_ok=True)
    (target / "grades.json").write_text(json.dumps(old, indent=1))
    for name, folder in (
        ("autograded", course.autograded / result.student / assignment),
        ("feedback", course.feedback / result.student / assignment),
    ):
        if folder.exists():
            shutil.move(str(folder), str(target / name))
    where = target.relative_to(course.grading)
    result.reason += (
        f"{'; ' if result.reason else ''}the earlier grade ({old['score']:g} / "
        f"{old['max_score']:g}) no longer stands; it is kept in {where}/"
    )


def _gone(course: Course, assignment: str) -> list[str]:
    """Students with a submission in the gradebook and no folder in submitted/."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{course.db_path}") as gb:
        try:
            subs = gb.find_assignment(assignment).submissions
        except MissingEntry:
            return []
        ids = [s.student.id for s in subs]
    return sorted(i for i in ids if not (course.submitted / i).is_dir())


def _read_back(course: Course, assignment: str, rows: list[StudentResult], policy) -> None:
    """Fill the rows' scores from the gradebook: its total (a hand-given score counts), the
    cells still waiting for a hand, the late penalty; so the CSV says what the gradebook says."""
    from nbgrader.api import Gradebook, MissingEntry

    due = policy.due(assignment)
    with Gradebook(f"sqlite:///{course.db_path}") as gb:
        for r in rows:
            r.due = due.isoformat() if due else None
            try:
                sub = gb.find_submission(assignment, r.student)
            except MissingEntry:
                r.cells, r.raw_score, r.penalty, r.score = {}, 0.0, 0.0, 0.0
                r.needs_manual = []
                continue
            cells, manual = {}, []
            for nb in sub.notebooks:
                for g in nb.grades:
                    if g.needs_manual_grade:
                        manual.append(g.cell.name)
                    elif g.score is not None:
                        cells[g.cell.name] = float(g.score)
            r.cells = cells
            r.needs_manual = sorted(manual)
            r.unanswered = [c for c in r.unanswered if c not in cells]
            r.raw_score = float(sub.score or 0.0)
            r.penalty = float(sub.late_submission_penalty or 0.0)
            r.score = max(0.0, r.raw_score - r.penalty)
            r.max_score = float(sub.max_score or r.max_score)


def _package_root() -> Path:
    import autograder

    return Path(autograder.__file__).resolve().parent


def _run(jobs: list[Job], workers: int | None, scheduler):
    """Yield a StudentResult for every job, locally or on a Dask cluster, as they finish."""
    if not jobs:
        return
    if scheduler is not None:
        from distributed import Client
        from distributed import as_completed as dask_completed

        client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
        try:
            futures = client.map(grade_submission, jobs, pure=False)
            for future in dask_completed(futures):
                yield _collect(future.result, future.key, jobs)
        finally:
            if client is not scheduler:
                client.close()
        return
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(grade_submission, job): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            yield _collect(future.result, job.student, jobs)


def _collect(get, key, jobs) -> StudentResult:
    try:
        return get()
    except Exception as exc:  # the worker itself died
        student = key if any(j.student == key for j in jobs) else str(key)
        return StudentResult(
            student=student,
            status="error",
            reason=f"the grading worker died: {exc!r}",
            grader_fault=True,
        )


def _earlier_rows(course: Course, assignment: str, now: dict) -> list[StudentResult]:
    """The last report's rows for the students not graded this time (a run with --student)."""
    path = course.reports / f"{assignment}.json"
    if not path.exists():
        return []
    try:
        rows = [StudentResult(**row) for row in json.loads(path.read_text())]
    except (ValueError, TypeError):  # unreadable or from another version: start afresh
        return []
    return [r for r in rows if r.student not in now]


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total: int, assignment: str, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=f"grading {assignment}", unit="notebook", file=sys.stderr)


CSV_FIELDS = [
    "student",
    "assignment",
    "status",
    "score",
    "max_score",
    "raw_score",
    "late_penalty",
    "submitted_at",
    "due",
    "late_by",
    "needs_manual_grade",
    "sandboxed",
    "flags",
    "integrity",
    "reason",
    "seconds",
]


def write_reports(course: Course, assignment: str, results: list[StudentResult]) -> Path:
    """Write <assignment>.csv (one row per student, always) and <assignment>-report.md."""
    course.reports.mkdir(parents=True, exist_ok=True)
    results = sorted(results, key=lambda r: r.student)
    cells = sorted({c for r in results for c in [*r.cells, *r.needs_manual, *r.unanswered]})
    path = course.reports / f"{assignment}.csv"
    tmp_path = path.with_suffix(".csv.tmp")
    with tmp_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS + cells)
        for r in results:
            writer.writerow(
                [
                    r.student,
                    assignment,
                    r.status,
                    f"{r.score:g}",
                    f"{r.max_score:g}",
                    f"{r.raw_score:g}",
                    f"{r.penalty:g}",
                    r.timestamp or "",
                    r.due or "",
                    r.late_by,
                    " ".join(r.needs_manual),
                    "yes" if r.sandboxed else "NO (--no-sandbox)",
                    " | ".join(r.findings),
                    " | ".join(r.integrity),
                    r.reason,
                    r.seconds,
                ]
                + [_cell(r, c) for c in cells]
            )
    tmp_path.replace(path)

    lines = [f"# Grading report: {assignment}", ""]
    if not all(r.sandboxed for r in results):
        lines += [
            "**Graded WITHOUT the sandbox (--no-sandbox): student code ran with your "
            "permissions.**",
            "",
        ]
    lines += ["| student | status | score | flags |", "|---|---|---|---|"]
    for r in results:
        n_flags = len(r.findings) + len(r.integrity)
        lines.append(f"| {r.student} | {r.status} | {r.score:g} / {r.max_score:g} | {n_flags} |")
    for title, attr in (
        ("Notebooks with problems", "reason"),
        ("What failed, part by part", "messages"),
        ("Scanner findings (review these; scores are not changed by them)", "findings"),
        ("Integrity", "integrity"),
    ):
        rows = [(r.student, getattr(r, attr)) for r in results if getattr(r, attr)]
        if rows:
            lines += ["", f"## {title}", ""]
            for student, value in rows:
                if isinstance(value, dict):
                    items = [f"{k}: {v}" for k, v in value.items()]
                else:
                    items = value if isinstance(value, list) else [value]
                lines += [f"- **{student}**: {item}" for item in items]
    (course.reports / f"{assignment}-report.md").write_text("\n".join(lines) + "\n")
    (course.reports / f"{assignment}.json").write_text(
        json.dumps(
            [{k: v for k, v in asdict(r).items() if k != "autograded"} for r in results], indent=1
        )
    )
    return path


def _cell(r: StudentResult, c: str) -> str:
    if c in r.needs_manual:
        return "manual"
    if c in r.unanswered:
        return "unanswered"
    return f"{r.cells[c]:g}" if c in r.cells else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m autograder.engine.grade",
        description="Grade every submission of an assignment, each in one sandboxed run, judged "
        "outside the sandbox. Writes <grading>/reports/<assignment>.csv and -report.md.",
    )
    parser.add_argument("assignments", nargs="+", help="assignment slugs: ch04_self_attention")
    parser.add_argument("--course", default=".", help="the course root (holds nbgrader_config.py)")
    parser.add_argument("--student", action="append", help="only this student (repeatable)")
    parser.add_argument("--workers", type=int, default=None, help="local workers (default: cores)")
    parser.add_argument(
        "--scheduler",
        default=None,
        help="grade on a Dask cluster: the scheduler's address, e.g. tcp://10.0.0.5:8786",
    )
    parser.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run student code without bubblewrap; every row is marked unsandboxed",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds a cell, or a part's check, may run"
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from autograder.engine.sandbox import SandboxUnavailable

    course = Course.load(args.course)
    for assignment in args.assignments:
        try:
            results = grade_assignment(
                course,
                assignment,
                students=args.student,
                workers=args.workers,
                sandboxed=not args.no_sandbox,
                timeout=args.timeout,
                scheduler=args.scheduler,
                progress=not args.no_progress,
            )
        except SandboxUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        flagged = [r for r in results if r.findings or r.integrity]
        print(f"{assignment}: graded {len(results)} submissions; {len(flagged)} flagged for review")
        print(f"  grades:   {course.reports / (assignment + '.csv')}")
        print(f"  report:   {course.reports / (assignment + '-report.md')}")
        print(f"  feedback: {course.feedback}/<student>/{assignment}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
