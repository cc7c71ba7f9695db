"""The reports: ``<grading>/reports/<assignment>.csv`` (one row per student, always),
``-report.md`` (what failed and why, for the instructor to read) and ``.json`` (the rows, so that
a run with ``--student`` keeps the others' and drop and rename can edit them).
"""

from __future__ import annotations

import csv
import json
import re
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
    write_class_report(course, assignment, results)
    return path


def _cell(r: StudentResult, c: str) -> str:
    if c in r.unanswered:
        return "unanswered"
    if c in r.needs_manual:
        return "manual"
    return f"{r.cells[c]:g}" if c in r.cells else ""


# --- the class report: which mistakes how many students made, part by part ----------------------

__all__ += ["class_mistakes", "name_mistake", "write_class_report"]

NOT_ATTEMPTED = "not attempted (the stub still raises NotImplementedError)"


def name_mistake(message: str, phrases: list[str]) -> str:
    """The mistake a check's message names: the clause holding one of the chapter's known-mistake
    phrases (``wrong.py``), else what was raised, else the message's first clause."""
    text = message.split(" (While this part was checked")[0].strip()
    if "raised NotImplementedError" in text:
        return NOT_ATTEMPTED
    # "attention_scores(query (L=5, E=8), ..., cpu): the scores are not scaled; with ..." -> what
    # follows the call, when there is one
    head, sep, rest = text.partition("): ")
    said = rest if sep and "(" in head else text
    clauses = [c.strip(" ;.") for c in re.split(r"(?<=[;.])\s+|:\s+", said) if c.strip(" ;.")]
    low = said.lower()
    for phrase in sorted(phrases, key=len, reverse=True):
        if phrase and phrase.lower() in low:
            for clause in clauses:
                if phrase.lower() in clause.lower():
                    return clause
    raised = re.search(r" raised ([A-Za-z_][\w.]*)", text)
    if raised:
        return f"raised {raised.group(1)}"
    return (clauses[0] if clauses else text)[:160]


def class_mistakes(assignment: str, results: list[StudentResult]) -> dict[str, dict[str, list]]:
    """{part: {mistake: [students]}}, most common first; a student counts once per mistake and
    part however many of the part's grade cells failed with it."""
    part_of, phrases = _chapter(assignment)
    out: dict[str, dict[str, set]] = {}
    for r in results:
        for gid, message in r.messages.items():
            part = part_of.get(gid, gid)
            out.setdefault(part, {}).setdefault(name_mistake(message, phrases), set()).add(
                r.student
            )
    return {
        part: {
            mistake: sorted(students)
            for mistake, students in sorted(found.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        }
        for part, found in out.items()
    }


def _chapter(assignment: str) -> tuple[dict[str, str], list[str]]:
    """({grade id: the part's name}, the phrases of the chapter's known mistakes); ({}, []) for an
    assignment that is not one of the course's chapters (a test's own): then by grade cell."""
    from autograder import chapters

    try:
        chapter = chapters.load(assignment)
    except ValueError:
        return {}, []
    part_of = {p.grade_id: p.name for p in chapter.parts}
    return part_of, [m.says for bank in chapter.wrong.values() for m in bank.values()]


def _passed(results: list[StudentResult], gids: list[str]) -> int:
    """How many graded students failed none of these grade cells."""
    return sum(
        1
        for r in results
        if r.status == "graded" and gids and all(g in r.cells and g not in r.messages for g in gids)
    )


def _score_plot(results: list[StudentResult]) -> str:
    """The distribution of scores as a PNG, base64 (the page carries it: no file, no URL)."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    scores = [r.score for r in results if r.status == "graded"]
    top = max((r.max_score for r in results), default=0.0) or 1.0
    fig = Figure(figsize=(6, 2.6), dpi=100)
    ax = fig.add_subplot()
    bins = [x - 0.5 for x in range(int(top) + 2)] if top <= 40 else 20
    ax.hist(scores, bins=bins, range=None if top <= 40 else (0, top), color="#4c72b0")
    ax.set_xlabel(f"score (of {top:g}), after any late penalty")
    ax.set_ylabel("students")
    ax.yaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def write_class_report(course: Course, assignment: str, results: list[StudentResult]) -> Path:
    """``<grading>/reports/<assignment>-class.html``: the score distribution and, part by part,
    which mistakes how many students made, from the checks' messages. One offline page (the plot
    is inside it), for the instructor's next lecture."""
    from html import escape

    course.reports.mkdir(parents=True, exist_ok=True)
    results = sorted(results, key=lambda r: r.student)
    by_status: dict[str, int] = {}
    for r in results:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    waiting = sum(1 for r in results if r.needs_manual)
    mistakes = class_mistakes(assignment, results)
    graded = [r for r in results if r.status == "graded"]
    part_of, _ = _chapter(assignment)
    order = list(dict.fromkeys([*part_of.values(), *mistakes]))
    parts = []
    for part in order:
        found = mistakes.get(part, {})
        gids = [g for g, name in part_of.items() if name == part] or [part]
        passed = _passed(results, gids)
        items = "".join(
            f"<li><strong>{len(students)} student{'s' if len(students) != 1 else ''}</strong>: "
            f"{escape(mistake)} <details><summary>who</summary>{escape(', '.join(students))}"
            "</details></li>"
            for mistake, students in found.items()
        )
        parts.append(
            f"<h3><code>{escape(part)}</code></h3><p>{passed} of {len(graded)} graded "
            f"notebooks passed every check of this part.</p><ul>{items}</ul>"
        )
    statuses = ", ".join(f"{n} {escape(s)}" for s, n in sorted(by_status.items()))
    mean = sum(r.score for r in graded) / len(graded) if graded else 0.0
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Class report: {escape(assignment)}</title>
<style>
body {{font-family: system-ui, sans-serif; max-width: 52em; margin: 2em auto; padding: 0 1em;
      color: #222; line-height: 1.45}}
h3 code {{font-size: 1em}} li {{margin: .3em 0}} details {{display: inline; color: #555}}
summary {{display: inline; cursor: pointer; font-size: .9em}}
</style></head><body>
<h1>Class report: {escape(assignment)}</h1>
<p>{len(results)} students: {statuses}. Mean score of the graded notebooks: {mean:.2f}.
{waiting} still have an answer waiting to be graded by hand.</p>
<h2>Scores</h2>
<img alt="histogram of the scores of the graded notebooks"
     src="data:image/png;base64,{_score_plot(results)}">
<h2>Mistakes, part by part</h2>
<p>From what the checks said to each student (the mistake each check names); a student counts
once per mistake and part.</p>
{"".join(parts) or "<p>No graded part.</p>"}
</body></html>
"""
    path = course.reports / f"{assignment}-class.html"
    path.write_text(page, encoding="utf-8")
    return path
