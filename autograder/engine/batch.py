"""Grading an assignment: the parent reads, hands out, and alone writes.

The parent reads the submissions (never writes them), turns each into a self-contained
:class:`~autograder.engine.submission.Job` that :mod:`.pool` grades, then alone writes the scores
(:mod:`.gradebook`), the feedback and the reports (``autograder.reporting``), one row per student
whatever happened. The course (paths, roster, late policy, what ``collect``
recorded) is the course layer's, ``autograder.course``.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from autograder.course import Course, grades, record
from autograder.engine import gradebook, pool
from autograder.engine.submission import Job, _quiet
from autograder.reporting import feedback
from autograder.reporting.reports import StudentResult, read_back, read_rows, write_reports

__all__ = ["grade_assignment"]


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

    _quiet()
    try:
        chapters.load(assignment)
        policy = course.policy()
        roster = course.roster()
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
    grades.prepare(course, assignment, policy.due(assignment))
    cells = grades.graded_cells(course, assignment)
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
        hidden=tuple(str(p) for p in {course.root, course.grading, feedback.package_root()}),
    )
    todo = [s for s in students if s in found]
    digests = {s: _digest(course.submitted / s / assignment) for s in todo}
    jobs = [_read_job(course, assignment, s, cells, release, **options) for s in todo]
    results: dict[str, StudentResult] = {
        s: StudentResult(
            student=s,
            status="no notebook",
            reason=record.why_missing(course, assignment, s),
            sandboxed=sandboxed,
            max_score=max_score,
        )
        for s in missing
    }
    bar = pool.progress(len(jobs), assignment, progress)
    for result in pool.run(jobs, workers, scheduler):
        rec = record.read(course, assignment, result.student, policy.timezone)
        when = rec.when if rec else None
        result.timestamp = when.isoformat() if when else None
        note = rec.renamed() if rec else ""
        if note:
            result.reason = "; ".join(x for x in (note, result.reason) if x)
        if result.autograded:
            late = policy.lateness(assignment, when, result.max_score, result.student)
            result.penalty = late.penalty
            result.late_by = late.describe()
            started = time.monotonic()
            gradebook.merge(course, assignment, result)
            result.timings["gradebook"] = round(time.monotonic() - started, 4)
        results[result.student] = result
        bar.update(1)
    bar.close()

    for student in missing:  # a student whose notebook is gone or unreadable now: see supersede
        if (course.submitted / student).is_dir():
            gradebook.supersede(course, assignment, results[student])
    for result in results.values():
        if not result.autograded and result.student in todo:
            gradebook.supersede(course, assignment, result)

    merged = [r.student for r in results.values() if r.autograded]
    if merged:
        started = time.monotonic()
        failed = feedback.generate(course, assignment, merged)
        share = round((time.monotonic() - started) / len(merged), 4)  # one call for the class
        for student in merged:
            results[student].timings["feedback"] = share
        for student, why in failed.items():
            r = results[student]
            r.reason += f"{'; ' if r.reason else ''}no feedback: {why}"
    for student, digest in digests.items():
        if _digest(course.submitted / student / assignment) != digest:
            results[student].integrity.append("the original submission changed during grading")

    for student in grades.gone(course, assignment):
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
    earlier = [r for r in read_rows(course, assignment) if r.student not in results]
    rows = [*earlier, *ordered]  # a run with --student keeps the others' rows
    read_back(course, assignment, rows, policy)
    write_reports(course, assignment, rows)
    return ordered


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
