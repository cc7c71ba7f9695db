"""The gradebook writer: the parent alone writes nbgrader's gradebook.

Each graded submission's automatic scores go in without touching a score given by hand on the
same answer (:func:`merge`); a re-grade that found nothing to grade retires the earlier grade
(:func:`supersede`). Setting the assignment up and reading scores are the course layer's
(``autograder.course.grades``).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil

from autograder.course import Course, grades
from autograder.reporting.reports import StudentResult

__all__ = ["merge", "set_penalty", "supersede"]


def merge(course: Course, assignment: str, result: StudentResult) -> None:
    """Scores into the gradebook and the autograded notebooks into place. A score given by hand
    stays while the cell's text is the one that was graded (the last autograded notebook's);
    a changed answer goes back to hand grading, its earlier score and comment kept in
    <grading>/superseded/, and the row says so."""
    from nbgrader.api import MissingEntry

    target = course.autograded / result.student / assignment
    before = grades.answer_checksums(
        {p.name: p.read_text() for p in target.glob("*.ipynb")} if target.is_dir() else {}
    )
    now = grades.answer_checksums(result.autograded)
    with grades.gradebook(course) as gb:
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
        _set_penalty(submission, result.penalty)
        changed = {
            g.cell.name: g
            for nb in submission.notebooks
            for g in nb.grades
            if g.manual_score is not None
            and g.cell.name in now
            and before.get(g.cell.name) != now[g.cell.name]
        }
        if changed:
            kept = course.superseded(result.student, assignment, "hand")
            (kept / "grades.json").write_text(json.dumps(grades.snapshot(submission), indent=1))
            kept = kept.relative_to(course.grading)
            for gid, grade in sorted(changed.items()):
                result.reason += (
                    f"{'; ' if result.reason else ''}{gid}: the answer changed since it was "
                    f"graded by hand ({grade.manual_score:g} points); it waits for a hand again "
                    f"(the earlier score and comment are kept in {kept}/)"
                )
                grade.manual_score = None
            for comment in (c for nb in submission.notebooks for c in nb.comments):
                if comment.cell.name in changed:
                    comment.manual_comment = None
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
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name, text in result.autograded.items():
        (target / name).write_text(text)
    if result.timestamp:
        (target / "timestamp.txt").write_text(result.timestamp)


def _set_penalty(submission, penalty: float) -> None:
    # The penalty is a share of the maximum (autograder.course.policy); nbgrader adds up the
    # notebooks' penalties, so it goes on one.
    for i, nb in enumerate(sorted(submission.notebooks, key=lambda n: n.name)):
        nb.late_submission_penalty = penalty if i == 0 else 0.0


def set_penalty(course: Course, assignment: str, student: str, penalty: float) -> bool:
    """A new late penalty for a graded submission (after an extension); False if none."""
    from nbgrader.api import MissingEntry

    with grades.gradebook(course) as gb:
        try:
            _set_penalty(gb.find_submission(assignment, student), penalty)
        except MissingEntry:
            return False
        gb.db.commit()
    return True


def supersede(course: Course, assignment: str, result: StudentResult) -> None:
    """A re-grade that found nothing to grade: the earlier grade stops standing. Its gradebook
    entry is removed (kept as JSON), its autograded notebook and feedback are moved, all to
    <grading>/superseded/<student>/<assignment>/. When the grader itself failed, the earlier
    grade stays and the row says it is not this notebook's."""
    from nbgrader.api import MissingEntry

    with grades.gradebook(course) as gb:
        try:
            sub = gb.find_submission(assignment, result.student)
        except MissingEntry:
            return
        old = grades.snapshot(sub)
        if result.grader_fault:
            result.reason += (
                f"; the gradebook still holds the earlier grade ({old['score']:g} / "
                f"{old['max_score']:g}), which is not this notebook's: grade again"
            )
            return
        gb.remove_submission(assignment, result.student)
    target = course.superseded(result.student, assignment, "grade")
    (target / "grades.json").write_text(json.dumps(old, indent=1))
    where = target.relative_to(course.grading)
    for name, folder in (
        ("autograded", course.autograded / result.student / assignment),
        ("feedback", course.feedback / result.student / assignment),
    ):
        if folder.exists():
            shutil.move(str(folder), str(course.grading / where / name))
    result.reason += (
        f"{'; ' if result.reason else ''}the earlier grade ({old['score']:g} / "
        f"{old['max_score']:g}) no longer stands; it is kept in {where}/"
    )
