"""What each graded cell is worth (:func:`graded_cells`) and the gradebook's scores (:func:`read`).

:attr:`Submission.score` is the one place the score after the late penalty is computed: the
grader's CSV and the LMS export both show it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

__all__ = ["GradedCell", "Submission", "graded_cells", "gradebook", "read", "snapshot"]


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
    student: str
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


def read(course, assignment: str) -> tuple[dict[str, Submission], float]:
    """({student: Submission}, the assignment's maximum); ValueError when the gradebook has no
    such assignment."""
    from nbgrader.api import MissingEntry

    if not course.db_path.exists():
        raise ValueError(f"no gradebook at {course.db_path}: grade {assignment!r} first")
    out = {}
    with gradebook(course) as gb:
        try:
            a = gb.find_assignment(assignment)
        except MissingEntry:
            raise ValueError(
                f"the gradebook has no assignment {assignment!r}: grade it first"
            ) from None
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
                student=sub.student.id,
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
