"""Grades as the LMS's gradebook imports them (Canvas's Gradebook "Import", which finds students
by ``canvas_id``; Moodle's "Upload grading worksheet", by ``Participant <moodle_id>``), from the
gradebook, one row per roster student, into ``<grading>/exports/``. A student with a part still
waiting for hand grading gets an empty grade (the LMS then keeps what it had); every row that is
not a plain grade, and every student without an LMS id, is listed with what it is.
"""

from __future__ import annotations

import csv
from pathlib import Path

from autograder.course import grades
from autograder.reporting.reports import refresh_reports

__all__ = ["export"]


def export(course, assignment: str, lms: str, column: str | None = None) -> tuple[Path, list[str]]:
    """Write the import file; return its path and the warnings to show."""
    if lms not in ("canvas", "moodle"):
        raise ValueError(f"--lms must be canvas or moodle, not {lms!r}")
    roster = course.roster()
    if not roster.students:
        raise ValueError(
            f"{roster.path} is missing or empty: the LMS needs its own ids "
            "(collect writes them, or give collect --roster)"
        )
    submissions, max_score = grades.read(course, assignment)
    # the score after the late penalty, or None while a part awaits hand grading
    scores = {s: None if g.needs_manual else g.score for s, g in submissions.items()}
    rows = {r.student: r for r in refresh_reports(course, assignment)}
    warnings = [
        f"{sid}: {why}" for sid in roster if (why := _check(rows.get(sid), scores.get(sid, 0.0)))
    ]
    if unknown := sorted(s for s in scores if s not in roster):
        warnings.append(f"graded but not on the roster, not exported: {', '.join(unknown)}")
    if no_id := sorted(s for s in roster if not getattr(roster.students[s], f"{lms}_id")):
        warnings.append(f"no {lms}_id on the roster, not exported: {', '.join(no_id)}")
    path = course.grading / "exports" / f"{assignment}-{lms}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    title = column or assignment
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if lms == "canvas":
            writer.writerow(["Student", "ID", "SIS User ID", "SIS Login ID", "Section", title])
            writer.writerow(["Points Possible", "", "", "", "", f"{max_score:g}"])
        else:
            writer.writerow(["Identifier", "Full name", "Email address", "Grade", "Maximum Grade"])
        for sid in roster:
            s = roster.students[sid]
            if not (lms_id := getattr(s, f"{lms}_id")):
                continue
            grade = scores.get(sid, 0.0)  # on the roster, nothing handed in: 0
            shown = "" if grade is None else f"{grade:g}"
            if lms == "canvas":
                writer.writerow([s.name or sid, lms_id, s.sis_id, "", "", shown])
            else:
                writer.writerow([f"Participant {lms_id}", s.name, s.email, shown, f"{max_score:g}"])
    return path, warnings


def _check(row, grade: float | None) -> str:
    """What the instructor should know before `grade` goes to the LMS ("" when nothing)."""
    shown = "grade left empty" if grade is None else f"exported as {grade:g}"
    if row is None:
        return f"no row in the grades (not graded yet?), {shown}"
    why = []
    if row.status != "graded":
        why.append(f"{row.status} ({row.reason})" if row.reason else row.status)
    elif "nothing was answered" in row.reason:
        why.append("nothing was answered")
    elif row.unanswered:
        why.append(f"unanswered: {', '.join(row.unanswered)}")
    if n := len(row.findings) + len(row.integrity):
        why.append(f"flagged for review ({n} finding{'s' * (n > 1)}; see the -report.md)")
    if row.needs_manual:
        why.append(f"waiting for hand grading: {', '.join(row.needs_manual)}")
    return f"{'; '.join(why)}; {shown}" if why else ""
