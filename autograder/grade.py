"""Batch grading for instructors: every submission of an assignment, sandboxed, in parallel.

    python -m autograder.grade ch04_self_attention [--workers N] [--student ID ...] [--no-sandbox]

(`make autograde` runs it for every assignment.) For each student folder in
``autograder/submitted/<student>/<assignment>/`` one worker process:

1. copies the submission into a private temporary course (the original is only ever read);
2. runs nbgrader's own autograde there, with the kernel in the bubblewrap sandbox
   (:mod:`autograder.sandbox`) and an executor that keeps the cells that completed when the
   kernel dies or hangs, against a private copy of the gradebook;
3. scans the notebook for tampering (:mod:`autograder.scanner`) and runs the trusted cross-check
   (:mod:`autograder.trusted`): the same checks, fed with the student's outputs from another
   sandboxed process, judged in a process that never ran student code;
4. lowers each grade cell's score to the trusted verdict where they disagree, and writes the
   student's HTML feedback (without hidden tests).

The parent then merges the scores into the course gradebook (auto scores only: manual scores and
extra credit are never written), copies the autograded notebooks and the feedback into place,
checks the gradebook's integrity, and always writes ``autograder/reports/<assignment>.csv`` and
``<assignment>-report.md``, one row per student, whatever happened to that student's notebook.
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

__all__ = ["Course", "StudentResult", "grade_assignment", "main"]


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
    def reports(self) -> Path:
        return self.root / "autograder" / "reports"

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
# One student, in a worker process
# --------------------------------------------------------------------------------------------


@dataclass
class StudentResult:
    student: str
    status: str = "graded"  # graded | stopped | error | no notebook | not graded in this run
    reason: str = ""
    score: float = 0.0
    max_score: float = 0.0
    cells: dict[str, float] = field(default_factory=dict)  # grade cell -> final auto score
    needs_manual: list[str] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)  # "cell: nbgrader X, trusted Y (why)"
    findings: list[str] = field(default_factory=list)  # scanner: "cell:line kind: code"
    integrity: list[str] = field(default_factory=list)
    sandboxed: bool = True
    seconds: float = 0.0
    workdir: str = ""  # the worker's temporary course, for the parent to copy from
    grades: list[dict] = field(default_factory=list)  # what the parent merges
    timestamp: str | None = None


def _worker_config(
    course: Course, tmp: Path, sandboxed: bool, incident_file: Path, timeout: int | None
):
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import (
        AssignLatePenalties,
        CheckCellMetadata,
        IgnorePattern,
        LimitOutput,
        SaveAutoGrades,
    )

    from autograder.sandbox import ResilientExecute

    config = load_config(course.root)
    config.CourseDirectory.root = str(tmp)
    config.CourseDirectory.source_directory = "source"
    config.CourseDirectory.submitted_directory = "submitted"
    config.CourseDirectory.autograded_directory = "autograded"
    config.CourseDirectory.feedback_directory = "feedback"
    config.CourseDirectory.db_url = f"sqlite:///{tmp / 'gradebook.db'}"
    config.Autograde.autograde_preprocessors = [
        ResilientExecute,
        IgnorePattern,
        ClearMetadataPreprocessor,
        LimitOutput,
        SaveAutoGrades,
        AssignLatePenalties,
        CheckCellMetadata,
    ]
    config.ResilientExecute.sandboxed = sandboxed
    if timeout is not None:
        config.Execute.timeout = timeout
    config.ResilientExecute.incident_file = str(incident_file)
    return config


def _quiet() -> None:
    """nbgrader 0.9.6 with SQLAlchemy 2 warns on every new submission; it is harmless."""
    warnings.filterwarnings("ignore", message=".*not in session.*")
    logging.getLogger("traitlets").setLevel(logging.ERROR)


def grade_one(
    course: Course,
    assignment: str,
    student: str,
    sandboxed: bool,
    trusted: bool,
    timeout: int | None = None,
) -> StudentResult:
    """Grade one student's submission in a private temporary course; never raises."""
    _quiet()
    started = time.monotonic()
    result = StudentResult(student=student, sandboxed=sandboxed)
    tmp = Path(tempfile.mkdtemp(prefix=f"grade-{assignment}-{student}-"))
    result.workdir = str(tmp)
    try:
        _grade_one(course, assignment, student, sandboxed, trusted, timeout, tmp, result)
    except Exception as exc:
        result.status = "error"
        result.reason = f"the grader failed: {type(exc).__name__}: {exc}"
        (tmp / "grader-error.txt").write_text(traceback.format_exc())
    result.seconds = round(time.monotonic() - started, 2)
    return result


def _grade_one(course, assignment, student, sandboxed, trusted, timeout, tmp, result) -> None:
    from nbgrader.api import Gradebook
    from nbgrader.apps import NbGraderAPI

    from autograder import scanner

    submitted = course.submitted / student / assignment
    notebooks = sorted(p.name for p in submitted.glob("*.ipynb"))
    if not notebooks:
        result.status = "no notebook"
        result.reason = f"no .ipynb file in {submitted}"
        return
    shutil.copytree(course.source / assignment, tmp / "source" / assignment)
    shutil.copytree(submitted, tmp / "submitted" / student / assignment, symlinks=False)
    shutil.copy2(course.db_path, tmp / "gradebook.db")

    # The instructor's manual scores and extra credit from an earlier run come along in the copy;
    # anything else that shows up in it during grading was written by the student's code.
    instructor_set = _manual_marks(tmp / "gradebook.db", assignment, student)

    incident_file = tmp / "incident.json"
    api = NbGraderAPI(config=_worker_config(course, tmp, sandboxed, incident_file, timeout))
    outcome = api.autograde(assignment, student, force=True, create=True)
    if not outcome.get("success", False):
        result.status = "error"
        result.reason = "nbgrader could not grade it: " + _last_line(outcome.get("error", ""))
        return
    if incident_file.exists():
        incident = json.loads(incident_file.read_text())
        result.status = "stopped"
        result.reason = f"grading stopped at cell {incident['cell'] + 1}: {incident['reason']}"

    autograded_dir = tmp / "autograded" / student / assignment
    release = course.release / assignment
    for name in notebooks:
        release_nb = release / name
        for f in scanner.scan_notebook(
            submitted / name,
            forbidden_builtins=scanner.forbidden_builtins_for(assignment),
            release_nb=release_nb if release_nb.exists() else None,
        ):
            result.findings.append(f"{name}:{f.cell_id}:{f.line} {f.kind}: {f.code}")

    verdicts = {}
    if trusted:
        from autograder.trusted import trusted_check

        for name in notebooks:
            verdicts.update(
                trusted_check(
                    autograded_dir / name,
                    assignment,
                    sandboxed=sandboxed,
                    call_timeout=float(timeout or 30),
                )
            )

    with Gradebook(f"sqlite:///{tmp / 'gradebook.db'}") as gb:
        submission = gb.find_submission(assignment, student)
        result.timestamp = submission.timestamp.isoformat() if submission.timestamp else None
        for nb in submission.notebooks:
            for grade in nb.grades:
                cell = grade.cell.name
                auto = grade.auto_score
                verdict = verdicts.get(cell)
                if verdict is not None and auto is not None:
                    trusted_score = grade.max_score if verdict.passed else 0.0
                    if trusted_score != auto:
                        why = f" ({verdict.reason})" if verdict.reason else ""
                        result.disagreements.append(
                            f"{cell}: nbgrader {auto:g}, trusted {trusted_score:g}{why}"
                        )
                        grade.auto_score = min(auto, trusted_score)
                marks = (grade.manual_score, grade.extra_credit)
                if marks != instructor_set.get((nb.name, cell), (None, None)) and any(marks):
                    result.integrity.append(
                        f"{cell}: the worker's gradebook got manual score {grade.manual_score} / "
                        f"extra credit {grade.extra_credit} during grading (ignored)"
                    )
                result.grades.append(
                    {
                        "notebook": nb.name,
                        "cell": cell,
                        "auto_score": grade.auto_score,
                        "needs_manual_grade": grade.needs_manual_grade,
                        "max_score": grade.max_score,
                    }
                )
                if grade.needs_manual_grade:
                    result.needs_manual.append(cell)
                else:
                    result.cells[cell] = grade.auto_score or 0.0
                result.max_score += grade.max_score
            result.grades.append(
                {"notebook": nb.name, "late_penalty": nb.late_submission_penalty or 0.0}
            )
        gb.db.commit()
    result.score = sum(result.cells.values())

    outcome = api.generate_feedback(assignment, student, force=True)
    if not outcome.get("success", False):
        result.reason += (
            (" " if result.reason else "")
            + "(no feedback: "
            + _last_line(outcome.get("error", ""))
            + ")"
        )


def _manual_marks(db_path: Path, assignment: str, student: str) -> dict[tuple, tuple]:
    """{(notebook, cell): (manual score, extra credit)} of a student's submission, if any."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{db_path}") as gb:
        try:
            submission = gb.find_submission(assignment, student)
        except MissingEntry:
            return {}
        return {
            (nb.name, grade.cell.name): (grade.manual_score, grade.extra_credit)
            for nb in submission.notebooks
            for grade in nb.grades
        }


def _last_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "unknown error"


# --------------------------------------------------------------------------------------------
# The parent: fan out, merge, report
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

    config = load_config(course.root)
    release = Path(tempfile.mkdtemp(prefix="release-"))
    config.CourseDirectory.release_directory = str(release)
    try:
        outcome = NbGraderAPI(config=config).generate_assignment(assignment, force=True)
        if not outcome.get("success", False):
            raise SystemExit(
                f"error: nbgrader could not read solutions/{assignment}: "
                + _last_line(outcome.get("error", ""))
            )
    finally:
        shutil.rmtree(release, ignore_errors=True)


def _snapshot(course: Course, assignment: str) -> dict[str, tuple]:
    """Every manual score and extra credit of the assignment, keyed by student/notebook/cell."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course.db_path}") as gb:
        out = {}
        for submission in gb.assignment_submissions(assignment):
            for nb in submission.notebooks:
                for grade in nb.grades:
                    key = f"{submission.student.id}/{nb.name}/{grade.cell.name}"
                    out[key] = (grade.manual_score, grade.extra_credit)
        return out


def _restore_marks(course: Course, assignment: str, before: dict[str, tuple]) -> dict:
    """Set every manual score and extra credit back to `before`; return what had changed."""
    from nbgrader.api import Gradebook

    changed = {}
    with Gradebook(f"sqlite:///{course.db_path}") as gb:
        for submission in gb.assignment_submissions(assignment):
            for nb in submission.notebooks:
                for grade in nb.grades:
                    key = f"{submission.student.id}/{nb.name}/{grade.cell.name}"
                    now = (grade.manual_score, grade.extra_credit)
                    was = before.get(key, (None, None))
                    if now != was:
                        changed[key] = (was, now)
                        grade.manual_score, grade.extra_credit = was
        gb.db.commit()
    return changed


def _merge(course: Course, assignment: str, result: StudentResult) -> None:
    """Copy auto scores into the course gradebook; manual scores and extra credit stay as set."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{course.db_path}") as gb:
        gb.update_or_create_student(result.student)
        try:
            submission = gb.find_submission(assignment, result.student)
            if result.timestamp:
                submission.timestamp = dt.datetime.fromisoformat(result.timestamp)
        except MissingEntry:
            kwargs = {"timestamp": result.timestamp} if result.timestamp else {}
            gb.add_submission(assignment, result.student, **kwargs)
        for row in result.grades:
            if "late_penalty" in row:
                nb = gb.find_submission_notebook(row["notebook"], assignment, result.student)
                nb.late_submission_penalty = row["late_penalty"]
                continue
            grade = gb.find_grade(row["cell"], row["notebook"], assignment, result.student)
            grade.auto_score = row["auto_score"]
            grade.needs_manual_grade = row["needs_manual_grade"]
        gb.db.commit()
    workdir = Path(result.workdir)
    for stage, dest in (("autograded", course.autograded), ("feedback", course.feedback)):
        src = workdir / stage / result.student / assignment
        if src.is_dir():
            target = dest / result.student / assignment
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(src, target)


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def grade_assignment(
    course: Course,
    assignment: str,
    *,
    students: list[str] | None = None,
    workers: int | None = None,
    sandboxed: bool = True,
    trusted: bool = True,
    timeout: int | None = None,
    progress: bool = True,
) -> list[StudentResult]:
    """Grade every (or the named) student's submission; write the CSV and the report."""
    _quiet()
    if sandboxed:
        from autograder.sandbox import bwrap_path

        bwrap_path()  # raises SandboxUnavailable with instructions
    if not (course.source / assignment).is_dir():
        raise SystemExit(f"error: no assignment {assignment!r} in {course.source}")
    found = sorted(p.parent.name for p in course.submitted.glob(f"*/{assignment}") if p.is_dir())
    students = found if students is None else students
    missing = sorted(set(students) - set(found))
    _ensure_assignment(course, assignment)
    before = _snapshot(course, assignment)
    digests = {s: _digest(course.submitted / s / assignment) for s in students if s in found}

    results: dict[str, StudentResult] = {
        s: StudentResult(
            student=s, status="no notebook", reason="no submission folder", sandboxed=sandboxed
        )
        for s in missing
    }
    todo = [s for s in students if s in found]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    bar = _progress(len(todo), assignment, progress)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {
            pool.submit(grade_one, course, assignment, s, sandboxed, trusted, timeout): s
            for s in todo
        }
        for future in as_completed(futures):
            student = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # the worker process itself died
                result = StudentResult(
                    student=student,
                    status="error",
                    sandboxed=sandboxed,
                    reason=f"the grading worker died: {exc!r}",
                )
            if result.grades:
                _merge(course, assignment, result)
            if result.workdir and not os.environ.get("AUTOGRADER_KEEP_WORKDIR"):
                shutil.rmtree(result.workdir, ignore_errors=True)
            results[student] = result
            bar.update(1)
    bar.close()

    # No instructor grades by hand while the batch runs: any manual score or extra credit that
    # changed meanwhile was written by something else. Put it back and say so.
    tampered = _restore_marks(course, assignment, before)
    for key, (was, now) in tampered.items():
        student = key.split("/", 1)[0]
        note = (
            f"{key}: manual score / extra credit changed from {was} to {now} while grading "
            "ran; restored"
        )
        if student not in results:
            results[student] = next(
                (r for r in _earlier_rows(course, assignment, {}) if r.student == student),
                StudentResult(student=student, status="not graded in this run"),
            )
        results[student].integrity.append(note)
    for student, digest in digests.items():
        if _digest(course.submitted / student / assignment) != digest:
            results[student].integrity.append("the original submission changed during grading")

    ordered = [results[s] for s in sorted(results)]
    write_reports(course, assignment, [*_earlier_rows(course, assignment, results), *ordered])
    return ordered


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
    "needs_manual_grade",
    "sandboxed",
    "flags",
    "disagreements",
    "integrity",
    "reason",
    "seconds",
]


def write_reports(course: Course, assignment: str, results: list[StudentResult]) -> Path:
    """Write <assignment>.csv (one row per student, always) and <assignment>-report.md."""
    course.reports.mkdir(parents=True, exist_ok=True)
    results = sorted(results, key=lambda r: r.student)
    cells = sorted({c for r in results for c in [*r.cells, *r.needs_manual]})
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
                    " ".join(r.needs_manual),
                    "yes" if r.sandboxed else "NO (--no-sandbox)",
                    " | ".join(r.findings),
                    " | ".join(r.disagreements),
                    " | ".join(r.integrity),
                    r.reason,
                    r.seconds,
                ]
                + [
                    "manual" if c in r.needs_manual else f"{r.cells[c]:g}" if c in r.cells else ""
                    for c in cells
                ]
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
        n_flags = len(r.findings) + len(r.disagreements) + len(r.integrity)
        lines.append(f"| {r.student} | {r.status} | {r.score:g} / {r.max_score:g} | {n_flags} |")
    for title, attr in (
        ("Stopped or failed notebooks", "reason"),
        ("Scanner findings (review these; scores are not changed by them)", "findings"),
        (
            "nbgrader and the trusted cross-check disagree (the lower score was kept)",
            "disagreements",
        ),
        ("Gradebook integrity", "integrity"),
    ):
        rows = [(r.student, getattr(r, attr)) for r in results if getattr(r, attr)]
        if rows:
            lines += ["", f"## {title}", ""]
            for student, value in rows:
                items = value if isinstance(value, list) else [value]
                lines += [f"- **{student}**: {item}" for item in items]
    (course.reports / f"{assignment}-report.md").write_text("\n".join(lines) + "\n")
    (course.reports / f"{assignment}.json").write_text(
        json.dumps(
            [
                {k: v for k, v in asdict(r).items() if k not in ("workdir", "grades")}
                for r in results
            ],
            indent=1,
        )
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m autograder.grade",
        description="Grade every submission of an assignment: sandboxed, in parallel, with a "
        "trusted cross-check. Writes autograder/reports/<assignment>.csv and -report.md.",
    )
    parser.add_argument("assignments", nargs="+", help="assignment slugs: ch04_self_attention")
    parser.add_argument("--course", default=".", help="the course root (holds nbgrader_config.py)")
    parser.add_argument("--student", action="append", help="only this student (repeatable)")
    parser.add_argument("--workers", type=int, default=None, help="workers (default: cores)")
    parser.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run student code without bubblewrap; every row is marked unsandboxed",
    )
    parser.add_argument("--no-trusted", action="store_true", help="skip the trusted cross-check")
    parser.add_argument(
        "--timeout",
        type=int,
        default=None,
        help="seconds a cell may run (default: nbgrader_config.py's)",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from autograder.sandbox import SandboxUnavailable

    course = Course.load(args.course)
    for assignment in args.assignments:
        try:
            results = grade_assignment(
                course,
                assignment,
                students=args.student,
                workers=args.workers,
                sandboxed=not args.no_sandbox,
                trusted=not args.no_trusted,
                timeout=args.timeout,
                progress=not args.no_progress,
            )
        except SandboxUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        flagged = [r for r in results if r.findings or r.disagreements or r.integrity]
        print(f"{assignment}: graded {len(results)} submissions; {len(flagged)} flagged for review")
        print(f"  grades:  {course.reports / (assignment + '.csv')}")
        print(f"  report:  {course.reports / (assignment + '-report.md')}")
        print(f"  feedback: {course.feedback}/<student>/{assignment}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
