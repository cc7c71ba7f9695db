"""Dropping, renaming or extending one student, everywhere at once: folders, gradebook, roster,
extensions, reports. A dropped student's folders and gradebook grades (as JSON) are moved to
``<grading>/dropped/<student>/<time>/``: nothing they handed in is deleted. Their rows leave every
report; the roster keeps them, marked ``dropped``, so that ``collect`` skips what they hand in
later (empty the mark to take them back).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import replace

from autograder.course import grades, record
from autograder.course import policy as late_policy
from autograder.course.roster import _ID, Student
from autograder.engine.gradebook import set_penalty
from autograder.reporting.reports import read_rows, refresh_reports, write_reports

__all__ = ["drop", "extend", "rename"]

FOLDERS = ("submitted", "autograded", "feedback")  # a student's, in the course's own folders


def _folders(course, student: str):
    return {name: getattr(course, name) / student for name in FOLDERS}


def _known(course, student: str, must: bool = True) -> bool:
    """Whether `student` has a folder, a roster row or a gradebook entry; ValueError if `must`."""
    from nbgrader.api import MissingEntry

    found = any(p.exists() for p in _folders(course, student).values())
    found = found or student in course.roster()
    if not found and course.db_path.exists():
        with grades.gradebook(course) as gb:
            try:
                found = bool(gb.find_student(student))
            except MissingEntry:
                pass
    if must and not found:
        raise ValueError(f"no student {student!r}: not in submitted/, the roster or the gradebook")
    return found


def drop(course, student: str) -> str:
    """Drop `student`; return where their work was moved."""
    from nbgrader.api import MissingEntry

    _known(course, student)
    roster = course.roster()
    if (entry := roster.students.get(student)) and entry.dropped:
        raise ValueError(f"{student} was dropped already ({entry.dropped})")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = course.grading / "dropped" / student / stamp
    target.mkdir(parents=True)
    for name, folder in _folders(course, student).items():
        if folder.exists():
            shutil.move(str(folder), str(target / name))
    if course.db_path.exists():
        with grades.gradebook(course) as gb:
            try:
                subs = gb.find_student(student).submissions
                held = {sub.assignment.name: grades.snapshot(sub) for sub in subs}
                (target / "gradebook.json").write_text(json.dumps(held, indent=1))
                gb.remove_student(student)
            except MissingEntry:
                pass
    # The roster keeps the student, marked dropped, so that collect skips them from now on.
    roster.add(Student(student_id=student)).dropped = stamp
    roster.save()
    _edit_reports(course, lambda rows: [r for r in rows if r.student != student])
    return str(target)


def rename(course, old: str, new: str) -> None:
    """Give `old` the id `new` everywhere; refuse if `new` is taken or not a valid id."""
    from nbgrader.api import MissingEntry

    if not _ID.match(new):
        raise ValueError(f"{new!r} is not a student id: letters, digits, '_', '-' or '.'")
    _known(course, old)
    if _known(course, new, must=False):
        raise ValueError(f"{new!r} is already a student; drop one of them first")
    for name, folder in _folders(course, old).items():
        if folder.exists():
            shutil.move(str(folder), str(_folders(course, new)[name]))
    if course.db_path.exists():
        with grades.gradebook(course) as gb:
            try:
                s = gb.find_student(old)
            except MissingEntry:
                s = None
            if s is not None:
                moved = gb.add_student(
                    new, first_name=s.first_name, last_name=s.last_name, email=s.email
                )
                for sub in list(s.submissions):
                    sub.student = moved
                gb.db.commit()
                gb.db.expire_all()  # so that removing `old` finds no submission left to delete
                gb.remove_student(old)
    late_policy.rename_student(course.extensions_path, old, new)
    roster = course.roster()
    if (entry := roster.students.pop(old, None)) is not None:
        entry.student_id = new
        roster.students[new] = entry
        roster.save()
    _edit_reports(
        course, lambda rows: [replace(r, student=new) if r.student == old else r for r in rows]
    )


def _edit_reports(course, edit) -> None:
    """Every assignment's reports written again, `edit` applied to their rows."""
    for path in sorted(course.reports.glob("*.json")):
        if rows := read_rows(course, path.stem):
            write_reports(course, path.stem, edit(rows))


def extend(course, assignment: str, student: str, due: str) -> str:
    """Give `student` until `due` for `assignment` ("" takes the extension back), and charge
    their graded submission the late penalty again; what changed, in one line."""
    _known(course, student)
    tz = course.policy().timezone
    when = late_policy.extend(course.extensions_path, assignment, student, due, tz)
    policy = course.policy()
    said = f"{student}: {assignment} is due {policy.due(assignment, student) or 'never'}"
    said += " (an extension)" if when else " (the course's due date)"
    try:
        submissions, max_score = grades.read(course, assignment)
    except ValueError:  # not graded yet
        submissions, max_score = {}, 0.0
    if student not in submissions:
        return said + "; not graded yet, grading will use it"
    rec = record.read(course, assignment, student, tz)
    late = policy.lateness(assignment, rec.when if rec else None, max_score, student)
    set_penalty(course, assignment, student, late.penalty)
    refresh_reports(course, assignment)
    return said + f"; late penalty now {late.penalty:g} ({late.describe() or 'on time'})"
