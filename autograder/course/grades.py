"""What each graded cell is worth (:func:`graded_cells`), the assignment in nbgrader's gradebook
(:func:`prepare`) and the gradebook's scores (:func:`read`).

:attr:`Submission.score` is the one place the score after the late penalty is computed: the
grader's CSV and the LMS export both show it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "GradedCell",
    "Submission",
    "answer_checksums",
    "graded",
    "graded_cells",
    "gone",
    "gradebook",
    "prepare",
    "read",
    "snapshot",
]


@dataclass(frozen=True)
class GradedCell:
    notebook: str  # the notebook's name, without .ipynb
    points: float
    manual: bool  # graded by hand (a written answer)


def graded_cells(course, assignment: str) -> dict[str, GradedCell]:
    """{grade id: GradedCell} from the source notebooks: the one place points are written."""
    out = {}
    for path in sorted((course.source / assignment).glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("grade"):
                manual = bool(meta.get("solution"))
                out[meta["grade_id"]] = GradedCell(path.stem, float(meta.get("points", 0)), manual)
    return out


def gradebook(course):
    """nbgrader's gradebook of `course`, as a context manager."""
    from nbgrader.api import Gradebook

    return Gradebook(course.db_url)


@dataclass(frozen=True)
class Submission:
    raw_score: float  # the gradebook's total, hand-given scores included
    penalty: float  # the late penalty, in points
    max_score: float
    cells: dict[str, float] = field(default_factory=dict)  # grade id -> score, graded cells
    needs_manual: tuple[str, ...] = ()  # grade ids still waiting for a hand
    by_hand: tuple[str, ...] = ()  # grade ids with a score given by hand

    @property
    def score(self) -> float:
        """What counts: the total less the late penalty, never below 0."""
        return max(0.0, self.raw_score - self.penalty)


@contextmanager
def graded(course, assignment: str):
    """(the gradebook, `assignment` in it); ValueError when it has not been graded yet."""
    from nbgrader.api import MissingEntry

    if not course.db_path.exists():  # opening it would make an empty one
        raise ValueError(f"no gradebook at {course.db_path}: grade {assignment!r} first")
    with gradebook(course) as gb:
        try:
            a = gb.find_assignment(assignment)
        except MissingEntry:
            raise ValueError(
                f"the gradebook has no assignment {assignment!r}: grade it first"
            ) from None
        yield gb, a


def read(course, assignment: str) -> tuple[dict[str, Submission], float]:
    """({student: Submission}, the assignment's maximum); ValueError as :func:`graded`."""
    out = {}
    with graded(course, assignment) as (_, a):
        for sub in a.submissions:
            cells, manual, by_hand = {}, [], []
            for nb in sub.notebooks:
                for g in nb.grades:
                    if g.manual_score is not None:
                        by_hand.append(g.cell.name)
                    if g.needs_manual_grade:
                        manual.append(g.cell.name)
                    elif g.score is not None:
                        cells[g.cell.name] = float(g.score)
            out[sub.student.id] = Submission(
                raw_score=float(sub.score or 0.0),
                penalty=float(sub.late_submission_penalty or 0.0),
                max_score=float(sub.max_score or 0.0),
                cells=cells,
                needs_manual=tuple(sorted(manual)),
                by_hand=tuple(sorted(by_hand)),
            )
        return out, float(a.max_score or 0.0)


def snapshot(sub) -> dict:
    """A gradebook submission as JSON, kept when it leaves the gradebook (superseded, dropped)."""
    return {
        "score": sub.score,
        "max_score": sub.max_score,
        "late_submission_penalty": sub.late_submission_penalty,
        "timestamp": str(sub.timestamp or ""),
        "grades": {
            g.cell.name: {"auto_score": g.auto_score, "manual_score": g.manual_score}
            for nb in sub.notebooks
            for g in nb.grades
        },
        "comments": {c.cell.name: c.manual_comment for nb in sub.notebooks for c in nb.comments},
    }


def prepare(course, assignment: str, due) -> None:
    """The assignment's cells in the gradebook (as `make exercises` puts them; the release is
    untouched) and its due date, where the formgrader and `nbgrader export` show it."""
    _add_cells(course, assignment)
    with gradebook(course) as gb:
        a = gb.find_assignment(assignment)
        value = due.astimezone(dt.UTC).replace(tzinfo=None) if due else None
        if a.duedate != value:
            a.duedate = value
            gb.db.commit()


def _add_cells(course, assignment: str) -> None:
    from nbgrader.apps import NbGraderAPI

    try:
        with graded(course, assignment) as (_, a):
            if a.notebooks:
                return
    except ValueError:
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


def answer_checksums(notebooks: dict[str, str]) -> dict[str, str]:
    """{grade id: checksum of the text} of the cells graded by hand (answer and grade)."""
    out = {}
    for text in notebooks.values():
        for cell in json.loads(text).get("cells", []):
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("solution") and meta.get("grade"):
                source = "".join(cell.get("source", ""))
                out[meta["grade_id"]] = hashlib.sha256(source.strip().encode()).hexdigest()
    return out


def gone(course, assignment: str) -> list[str]:
    """Students with a submission in the gradebook and no folder in submitted/."""
    try:
        with graded(course, assignment) as (_, a):
            ids = [s.student.id for s in a.submissions]
    except ValueError:
        return []
    return sorted(i for i in ids if not (course.submitted / i).is_dir())
