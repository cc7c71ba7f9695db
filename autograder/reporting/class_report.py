"""The class report, ``<grading>/reports/<assignment>-class.html``: the score distribution and,
part by part, which mistakes how many students made, named from the checks' messages and the
chapter's known mistakes (``wrong.py``). One offline page, for the instructor's next lecture.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from autograder.course import Course

if TYPE_CHECKING:  # reports.py imports this module
    from autograder.reporting.reports import StudentResult

__all__ = ["NOT_ATTEMPTED", "class_mistakes", "name_mistake", "write_class_report"]

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
    """``<grading>/reports/<assignment>-class.html``: the score distribution, part by part which
    mistakes how many students made (from the checks' messages), and what was flagged for review.
    One offline page (the plot is inside it), for the instructor's next lecture."""
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
    flagged = "".join(
        f"<li><strong>{escape(r.student)}</strong>: {escape(item)}</li>"
        for r in results
        for item in [*r.findings, *r.integrity]
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
<h2>Flagged for review</h2>
<p>What the scanner found in the notebooks without running them (a built-in the exercise asks
students to write, code that imports or looks for the grader, code built at run time, a cell that
is not Python), and submissions that changed while they were graded. No score was changed by
them: read the code and decide.</p>
{f"<ul>{flagged}</ul>" if flagged else "<p>Nothing was flagged.</p>"}
</body></html>
"""
    path = course.reports / f"{assignment}-class.html"
    path.write_text(page, encoding="utf-8")
    return path
