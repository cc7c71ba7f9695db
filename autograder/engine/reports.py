"""The reports: ``<grading>/reports/<assignment>.csv`` (one row per student, always),
``-report.md`` (what failed and why, for the instructor to read) and ``.json`` (the rows, so that
a run with ``--student`` keeps the others' and drop and rename can edit them).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

from autograder.course import Course
from autograder.engine.submission import StudentResult

__all__ = ["CSV_FIELDS", "read_rows", "refresh_reports", "write_reports"]


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
    from autograder.engine.gradebook import read_back

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
    return path


def _cell(r: StudentResult, c: str) -> str:
    if c in r.unanswered:
        return "unanswered"
    if c in r.needs_manual:
        return "manual"
    return f"{r.cells[c]:g}" if c in r.cells else ""
