"""Hand grades from a CSV (``student,cell,score,comment``; ``cell`` a grade id), for instructors
who grade offline instead of in the formgrader. An empty score with a comment sets the comment
only. Every line is checked before anything is written: one problem stops the import, the
gradebook left as it was. A score on an autograded cell overrides the grader's (nbgrader keeps
both; a re-grade keeps the hand-given one), and the import says so. Then the reports are
rewritten from the gradebook; ``feedback`` refreshes the students' pages.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from autograder.course import Course, grades
from autograder.reporting.reports import refresh_reports

__all__ = ["HandGrade", "import_hand_grades", "read_hand_grades"]

COLUMNS = ("student", "cell", "score", "comment")


@dataclass(frozen=True)
class HandGrade:
    line: int
    student: str
    cell: str
    score: float | None  # None: the comment only
    comment: str | None  # None: the comment is left as it is


def read_hand_grades(path: Path) -> list[HandGrade]:
    """The CSV's rows; ValueError naming the line of one that cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if missing := [c for c in COLUMNS[:3] if c not in header]:
        raise ValueError(
            f"{path}: the first line must name the columns student,cell,score[,comment]; "
            f"{', '.join(missing)} missing (found: {', '.join(header) or 'nothing'})"
        )
    reader.fieldnames = header
    out, problems = [], []
    for line, row in enumerate(reader, start=2):
        student, cell, raw = ((row.get(c) or "").strip() for c in COLUMNS[:3])
        comment = row.get("comment")
        if not student and not cell and not raw and not (comment or "").strip():
            continue  # a blank line
        score = None
        if raw:
            try:
                score = float(raw)
            except ValueError:
                problems.append(f"line {line}: the score {raw!r} is not a number")
                continue
        elif comment is None or not comment.strip():
            problems.append(f"line {line}: neither a score nor a comment for {student}, {cell}")
            continue
        out.append(HandGrade(line, student, cell, score, comment.strip() if comment else None))
    if problems:
        raise ValueError(f"{path}:\n  " + "\n  ".join(problems))
    return out


def import_hand_grades(course: Course, assignment: str, path: Path) -> list[str]:
    """Write the CSV's hand grades into the gradebook, then rewrite the reports; the notes to
    show (each automatic score overridden). ValueError naming every problem, by line, when a
    line is wrong: then nothing is written."""
    from nbgrader.api import MissingEntry

    rows = read_hand_grades(path)
    cells = grades.graded_cells(course, assignment)
    if not cells:
        raise ValueError(f"no assignment {assignment!r} in {course.source}")
    problems, notes, seen, todo = [], [], {}, []
    with grades.graded(course, assignment) as (gb, a):
        graded = {s.student.id for s in a.submissions}
        for r in rows:
            # first: the line that first gave this student and cell (an unknown one fails earlier)
            cell, first = cells.get(r.cell), seen.setdefault((r.student, r.cell), r.line)
            why = ""
            if r.student not in graded:
                why = (
                    f"no graded submission of {r.student!r} for {assignment} "
                    f"(graded: {', '.join(sorted(graded)) or 'nobody'})"
                )
            elif cell is None:
                why = (
                    f"{assignment} has no graded cell {r.cell!r}; the cells are "
                    f"{', '.join(sorted(cells))}"
                )
            elif first != r.line:
                why = f"{r.student}, {r.cell} was given on line {first}"
            elif r.score is not None and not 0 <= r.score <= cell.points:
                why = f"the score {r.score:g} for {r.cell} is outside 0..{cell.points:g}"
            else:
                grade = gb.find_grade(r.cell, cell.notebook, assignment, r.student)
                comment = None
                if r.comment is not None:
                    try:
                        comment = gb.find_comment(r.cell, cell.notebook, assignment, r.student)
                    except MissingEntry:
                        why = (
                            f"{r.cell} takes no comment (comments go on written answers and "
                            "solution cells)"
                        )
                todo.append((r, cell, grade, comment))  # applied only if no line has a problem
            if why:
                problems.append(f"line {r.line}: {why}")
        if problems:
            raise ValueError(f"{path}: nothing was imported:\n  " + "\n  ".join(problems))
        for r, cell, grade, comment in todo:
            if r.score is not None:
                if not cell.manual and grade.auto_score is not None:
                    notes.append(
                        f"{r.student}, {r.cell}: {r.score:g} replaces the grader's "
                        f"{grade.auto_score:g} (a re-grade keeps yours)"
                    )
                grade.manual_score = r.score
                grade.needs_manual_grade = False
            if comment is not None:
                comment.manual_comment = r.comment
        gb.db.commit()
    refresh_reports(course, assignment)
    return notes
