"""What ``collect`` knows about one submission, read by one function, :func:`read`.

The record is ``collect.json`` in the student's folder, ``<grading>/submitted/<student>/
<assignment>/``: the names the student gave the notebooks, the upload time, the LMS and its id.
A folder put there by hand may hold only notebooks and nbgrader's ``timestamp.txt``; a student
``collect`` found without a notebook has no folder, only a row in ``<grading>/reports/
<assignment>-collect.csv``. :func:`read` looks in all three, so nothing else has to.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["COLLECT_TABLE", "Record", "read", "why_missing", "write"]

COLLECT_TABLE = "{assignment}-collect.csv"  # in <grading>/reports/


@dataclass
class Record:
    handed_in: dict[str, str] = field(default_factory=dict)  # collected as -> the student's name
    submitted_at: str = ""  # ISO 8601 with a zone, or "" when unknown
    lms: str = ""  # canvas | moodle | folder | "" (put there by hand)
    lms_id: str = ""
    late_by_lms: bool = False
    download: str = ""
    status: str = ""  # collect's word for a student without a folder ("no notebook")
    note: str = ""

    @property
    def when(self) -> dt.datetime | None:
        return dt.datetime.fromisoformat(self.submitted_at) if self.submitted_at else None

    def renamed(self) -> str:
        """What the grader's row says about a notebook handed in under another name."""
        moved = [f"{old!r} as {new}" for new, old in self.handed_in.items() if old != new]
        return f"handed in {', '.join(moved)}; graded as the released notebook" if moved else ""


def write(folder: Path, record: Record) -> None:
    """The record into a collected folder (and nbgrader's timestamp.txt, which its tools read)."""
    data = {k: v for k, v in asdict(record).items() if k not in ("status", "note")}
    (folder / "collect.json").write_text(json.dumps(data, indent=1))
    if record.submitted_at:
        (folder / "timestamp.txt").write_text(record.submitted_at)


def read(course, assignment: str, student: str, tz: dt.tzinfo = dt.UTC) -> Record | None:
    """The record of `student`'s submission of `assignment`, None when nothing is known. A time
    written without a zone is in `tz` (the course's)."""
    folder = course.submitted / student / assignment
    if not folder.is_dir():
        row = _table(course, assignment).get(student)
        return Record(status=row.get("status", ""), note=row.get("note", "")) if row else None
    try:
        data = json.loads((folder / "collect.json").read_text())
        record = Record(**{k: v for k, v in data.items() if k in Record.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        record = Record()
    if not record.submitted_at:
        record.submitted_at = _timestamp(folder / "timestamp.txt", tz)
    elif record.when.tzinfo is None:
        record.submitted_at = record.when.replace(tzinfo=tz).isoformat()
    return record


def _timestamp(path: Path, tz: dt.tzinfo) -> str:
    try:
        from dateutil.parser import parse

        when = parse(path.read_text().strip())
    except (OSError, ValueError, OverflowError, ImportError):
        return ""
    return (when if when.tzinfo else when.replace(tzinfo=tz)).isoformat()


def _table(course, assignment: str) -> dict[str, dict]:
    path = course.reports / COLLECT_TABLE.format(assignment=assignment)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return {row["student_id"]: row for row in csv.DictReader(f)}
    except (OSError, KeyError, csv.Error):
        return {}


def why_missing(course, assignment: str, student: str) -> str:
    """Why `student` has no submission of `assignment`, in words an instructor can act on."""
    collected = read(course, assignment, student)
    if collected and collected.status == "no notebook":
        return f"collect found no notebook: {collected.note}"
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
