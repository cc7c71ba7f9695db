"""The gradebook writer: the parent alone writes nbgrader's gradebook.

The assignment's cells go in once (as ``make exercises`` would), the due date with them; each
graded submission's automatic scores go in without touching a score given by hand
(:func:`merge`); a re-grade that found nothing to grade retires the earlier grade
(:func:`supersede`). Reading scores back is the course layer's (``autograder.course.grades``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from autograder.course import Course, grades
from autograder.engine.submission import StudentResult

__all__ = ["ensure_assignment", "merge", "read_back", "set_due_date", "supersede"]


def ensure_assignment(course: Course, assignment: str) -> None:
    """Put the assignment's cells in the gradebook (as `make exercises` does), release untouched."""
    from nbgrader.api import MissingEntry
    from nbgrader.apps import NbGraderAPI

    if course.db_path.exists():
        with grades.gradebook(course) as gb:
            try:
                if gb.find_assignment(assignment).notebooks:
                    return
            except MissingEntry:
                pass
    course.db_path.parent.mkdir(parents=True, exist_ok=True)
    config = course.config()
    release = Path(tempfile.mkdtemp(prefix="release-"))
    config.CourseDirectory.release_directory = str(release)
    try:
        outcome = NbGraderAPI(config=config).generate_assignment(assignment, force=True)
        if not outcome.get("success", False):
            raise SystemExit(
                f"error: nbgrader could not read {course.source / assignment}: "
                + last_line(outcome.get("error", ""))
            )
    finally:
        shutil.rmtree(release, ignore_errors=True)


def last_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "unknown error"


def merge(course: Course, assignment: str, result: StudentResult) -> None:
    """Scores into the gradebook and the autograded notebooks into place. A score given by hand
    stays while the cell's text is the one that was graded (the last autograded notebook's);
    a changed answer goes back to hand grading, its earlier score and comment kept in
    <grading>/superseded/, and the row says so."""
    from nbgrader.api import MissingEntry

    target = course.autograded / result.student / assignment
    before = _written(
        {p.name: p.read_text() for p in target.glob("*.ipynb")} if target.is_dir() else {}
    )
    now = _written(result.autograded)
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
            kept = _keep(course, result.student, assignment, grades.snapshot(submission), "hand")
            for gid, grade in sorted(changed.items()):
                result.reason += (
                    f"{'; ' if result.reason else ''}{gid}: the answer changed since it was "
                    f"graded by hand ({grade.manual_score:g} points); it waits for a hand again "
                    f"(the earlier score and comment are kept in {kept}/)"
                )
                grade.manual_score = None
            for nb in submission.notebooks:
                for comment in nb.comments:
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


def _written(notebooks: dict[str, str]) -> dict[str, str]:
    """{grade id: checksum of the text} of the cells graded by hand (answer and grade)."""
    out = {}
    for text in notebooks.values():
        for cell in json.loads(text).get("cells", []):
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("solution") and meta.get("grade"):
                source = "".join(cell.get("source", ""))
                out[meta["grade_id"]] = hashlib.sha256(source.strip().encode()).hexdigest()
    return out


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


def _keep(course: Course, student: str, assignment: str, snapshot: dict, why: str) -> Path:
    """`snapshot` written to <grading>/superseded/<student>/<assignment>/<time>-<why>/; the
    folder, relative to <grading>."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target = course.grading / "superseded" / student / assignment / f"{stamp}-{why}"
    target.mkdir(parents=True, exist_ok=True)
    (target / "grades.json").write_text(json.dumps(snapshot, indent=1))
    return target.relative_to(course.grading)


def set_due_date(course: Course, assignment: str, due) -> None:
    """The due date into the gradebook, where formgrader and `nbgrader export` show it."""
    with grades.gradebook(course) as gb:
        a = gb.find_assignment(assignment)
        value = due.astimezone(dt.UTC).replace(tzinfo=None) if due else None
        if a.duedate != value:
            a.duedate = value
            gb.db.commit()


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
    where = _keep(course, result.student, assignment, old, "grade")
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


def gone(course: Course, assignment: str) -> list[str]:
    """Students with a submission in the gradebook and no folder in submitted/."""
    from nbgrader.api import MissingEntry

    with grades.gradebook(course) as gb:
        try:
            subs = gb.find_assignment(assignment).submissions
        except MissingEntry:
            return []
        ids = [s.student.id for s in subs]
    return sorted(i for i in ids if not (course.submitted / i).is_dir())


def read_back(course: Course, assignment: str, rows: list[StudentResult], policy) -> None:
    """Fill the rows' scores from the gradebook: its total (a hand-given score counts), the
    cells still waiting for a hand, the late penalty; so the CSV says what the gradebook says."""
    submissions, _ = grades.read(course, assignment)
    for r in rows:
        due = policy.due(assignment, r.student)
        r.due = due.isoformat() if due else None
        s = submissions.get(r.student)
        if s is None:
            r.cells, r.raw_score, r.penalty, r.score, r.needs_manual = {}, 0.0, 0.0, 0.0, []
            continue
        r.cells = dict(s.cells)
        r.needs_manual = list(s.needs_manual)
        r.unanswered = [c for c in r.unanswered if c in s.cells and c not in s.by_hand]
        r.raw_score, r.penalty, r.score = s.raw_score, s.penalty, s.score
        r.max_score = s.max_score or r.max_score
        when = dt.datetime.fromisoformat(r.timestamp) if r.timestamp else None
        r.late_by = policy.lateness(assignment, when, r.max_score, r.student).describe()
