"""The reports: ``<grading>/reports/<assignment>.csv`` (one row per student, always),
``-report.md`` (what failed and why, for the instructor to read), ``.json`` (the rows, so that
a run with ``--student`` keeps the others' and drop and rename can edit them) and the class
report (:mod:`.class_report`). Every score in them is read back from the gradebook.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autograder.course import Course, grades
from autograder.reporting.class_report import write_class_report

__all__ = [
    "CSV_FIELDS",
    "StudentResult",
    "read_back",
    "read_rows",
    "refresh_reports",
    "write_reports",
]


@dataclass
class StudentResult:
    student: str
    status: str = "graded"  # graded | error | no notebook | folder gone
    reason: str = ""
    score: float = 0.0  # what counts: the gradebook's total (hand-given scores too) less penalty
    max_score: float = 0.0
    raw_score: float = 0.0  # before the late penalty
    penalty: float = 0.0
    due: str | None = None
    late_by: str = ""
    grader_fault: bool = False  # the grader failed, not the notebook
    cells: dict[str, float] = field(default_factory=dict)  # grade id -> auto score
    needs_manual: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)  # manual cells left as released
    messages: dict[str, str] = field(default_factory=dict)  # grade id -> what failed
    findings: list[str] = field(default_factory=list)  # scanner: "nb:cell:line kind: code"
    integrity: list[str] = field(default_factory=list)
    sandboxed: bool = True
    seconds: float = 0.0
    # Seconds by stage: the judge's own (sandbox start, execution, judging, ...), then the
    # parent's "gradebook" and "feedback" (the bench prints them).
    timings: dict[str, float] = field(default_factory=dict)
    timestamp: str | None = None
    autograded: dict[str, str] = field(default_factory=dict)  # file name -> notebook JSON


def read_rows(course: Course, assignment: str) -> list[StudentResult]:
    """The last report's rows ([] when there is none, or it is from another version)."""
    path = course.reports / f"{assignment}.json"
    try:
        return [StudentResult(**row) for row in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):
        return []


def refresh_reports(course: Course, assignment: str) -> list[StudentResult]:
    """The reports written again with the gradebook's scores as they are now: every command that
    changes a grade (hand grading, feedback, an extension, export) calls it."""
    rows = read_rows(course, assignment)
    if rows:
        read_back(course, assignment, rows, course.policy())
        write_reports(course, assignment, rows)
    return rows


CSV_FIELDS = (
    "student assignment status score max_score raw_score late_penalty submitted_at due late_by "
    "needs_manual_grade sandboxed flags integrity reason seconds"
).split()


def write_reports(course: Course, assignment: str, results: list[StudentResult]) -> Path:
    """Write <assignment>.csv (one row per student, always) and <assignment>-report.md."""
    course.reports.mkdir(parents=True, exist_ok=True)
    results = sorted(results, key=lambda r: r.student)
    cells = sorted({c for r in results for c in [*r.cells, *r.needs_manual, *r.unanswered]})
    path = course.reports / f"{assignment}.csv"
    tmp_path = path.with_suffix(".csv.tmp")
    with tmp_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS + cells)
        for r in results:
            writer.writerow(
                [
                    r.student,
                    assignment,
                    r.status,
                    f"{r.score:g}",
                    f"{r.max_score:g}",
                    f"{r.raw_score:g}",
                    f"{r.penalty:g}",
                    r.timestamp or "",
                    r.due or "",
                    r.late_by,
                    " ".join(r.needs_manual),
                    "yes" if r.sandboxed else "NO (--no-sandbox)",
                    " | ".join(r.findings),
                    " | ".join(r.integrity),
                    r.reason,
                    r.seconds,
                ]
                + [_cell(r, c) for c in cells]
            )
    tmp_path.replace(path)

    lines = [f"# Grading report: {assignment}", ""]
    if not all(r.sandboxed for r in results):
        lines += [
            "**Graded WITHOUT the sandbox (--no-sandbox): student code ran with your "
            "permissions.**",
            "",
        ]
    lines += ["| student | status | score | flags |", "|---|---|---|---|"]
    for r in results:
        n_flags = len(r.findings) + len(r.integrity)
        lines.append(f"| {r.student} | {r.status} | {r.score:g} / {r.max_score:g} | {n_flags} |")
    for title, attr in (
        ("Notebooks with problems", "reason"),
        ("What failed, part by part", "messages"),
        ("Scanner findings (review these; scores are not changed by them)", "findings"),
        ("Integrity", "integrity"),
    ):
        rows = [(r.student, getattr(r, attr)) for r in results if getattr(r, attr)]
        if rows:
            lines += ["", f"## {title}", ""]
            for student, value in rows:
                if isinstance(value, dict):
                    items = [f"{k}: {v}" for k, v in value.items()]
                else:
                    items = value if isinstance(value, list) else [value]
                lines += [f"- **{student}**: {item}" for item in items]
    (course.reports / f"{assignment}-report.md").write_text("\n".join(lines) + "\n")
    (course.reports / f"{assignment}.json").write_text(
        json.dumps(
            [{k: v for k, v in asdict(r).items() if k != "autograded"} for r in results], indent=1
        )
    )
    write_class_report(course, assignment, results)
    return path


def _cell(r: StudentResult, c: str) -> str:
    if c in r.unanswered:
        return "unanswered"
    if c in r.needs_manual:
        return "manual"
    return f"{r.cells[c]:g}" if c in r.cells else ""


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
