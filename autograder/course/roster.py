"""Who the students are: ``<grading>/roster.csv``, a header row and one row per student, the
columns :class:`Student`'s (only ``student_id`` required). ``collect`` finds a download's owner
by LMS id or name, ``export`` writes the LMS ids back. Every student on the roster gets a row in
the grades unless ``dropped`` says when they were dropped.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import asdict, dataclass, fields
from pathlib import Path

__all__ = ["Student", "Roster", "safe_id"]

_ID = re.compile(r"^[\w][\w.-]*$")


@dataclass
class Student:
    student_id: str
    name: str = ""
    email: str = ""
    canvas_id: str = ""
    moodle_id: str = ""
    sis_id: str = ""
    dropped: str = ""  # when the student was dropped; "" while enrolled


COLUMNS = [f.name for f in fields(Student)]


def safe_id(text: str) -> str:
    """A student id made from a name: 'Jane  Doe' -> 'jane-doe'."""
    text = unicodedata.normalize("NFC", text).strip().lower()
    text = re.sub(r"[^\w.-]+", "-", text).strip("-.")
    return text or "student"


def name_key(name: str) -> str:
    """How names are compared: case, accents' composition, spaces and punctuation ignored."""
    return re.sub(r"[\W_]+", "", unicodedata.normalize("NFC", name).casefold())


class Roster:
    """The roster file, read and written whole (it is small)."""

    def __init__(self, path: Path, students: list[Student] | None = None):
        self.path = Path(path)
        self.students: dict[str, Student] = {s.student_id: s for s in students or []}

    @classmethod
    def load(cls, path: Path) -> Roster:
        path = Path(path)
        if not path.is_file():
            return cls(path)
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "student_id" not in reader.fieldnames:
                raise ValueError(
                    f"{path}: the first row must name the columns, one of them student_id "
                    f"(columns: {','.join(COLUMNS)})"
                )
            if unknown := set(reader.fieldnames) - set(COLUMNS):
                raise ValueError(
                    f"{path}: unknown columns {sorted(unknown)}; the roster has {COLUMNS}"
                )
            students = []
            for line, row in enumerate(reader, start=2):
                sid = (row.get("student_id") or "").strip()
                if not _ID.match(sid):
                    raise ValueError(
                        f"{path}, line {line}: student_id {sid!r} must be letters, digits, '_', "
                        "'-' or '.', starting with a letter or digit"
                    )
                if any(s.student_id == sid for s in students):
                    raise ValueError(f"{path}, line {line}: student_id {sid!r} appears twice")
                students.append(Student(**{k: (row.get(k) or "").strip() for k in COLUMNS}))
        return cls(path, students)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(asdict(self.students[sid]) for sid in sorted(self.students))
        tmp.replace(self.path)

    def __contains__(self, student_id: str) -> bool:
        return student_id in self.students

    def __iter__(self):
        """The ids of the students not dropped, sorted."""
        return iter(sorted(s for s, student in self.students.items() if not student.dropped))

    def find(self, *, lms: str, lms_id: str = "", names: tuple[str, ...] = ()) -> Student | None:
        """The student with this LMS id, else the one whose name matches one of `names`
        (compared without case, spaces or punctuation), else None. A name two students share
        finds no one: ids must then be in the roster."""
        for s in self.students.values():
            if lms_id and getattr(s, f"{lms}_id", "") == lms_id:
                return s
        keys = {name_key(n) for n in names if n}
        matches = [
            s
            for s in self.students.values()
            if s.name and ({name_key(s.name), name_key(" ".join(reversed(s.name.split())))} & keys)
        ]
        return matches[0] if len(matches) == 1 else None

    def add(self, student: Student) -> Student:
        """Add a student, or fill in the empty fields of the one with the same id."""
        old = self.students.setdefault(student.student_id, student)
        for k in COLUMNS:
            if not getattr(old, k):
                setattr(old, k, getattr(student, k))
        return old
