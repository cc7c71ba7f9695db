"""The students' HTML feedback: nbgrader's ``generate_feedback``, then made truthful and offline.

A written answer not yet graded by hand says so instead of "Score: 0.0", and the math is typeset
by the vendored MathJax 3, inlined. :func:`refresh_feedback` redoes every page from the gradebook
as it is (after hand grading) without running a notebook.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from autograder.course import Course, grades
from autograder.engine.reports import refresh_reports

__all__ = ["generate", "refresh_feedback"]


def _generate(course: Course, assignment: str, students: list[str]) -> dict[str, str]:
    """nbgrader's HTML feedback for `students`; {student: why it failed} for those it failed."""
    from nbgrader.apps import NbGraderAPI

    api = NbGraderAPI(config=course.config())
    for student in students:
        shutil.rmtree(course.feedback / student / assignment, ignore_errors=True)
    everyone = {p.parent.name for p in course.autograded.glob(f"*/{assignment}")}
    if set(students) == everyone and len(students) > 1:
        # One call for the whole class: nbgrader's set-up is paid once.
        if api.generate_feedback(assignment).get("success", False):
            return {}
    failed = {}
    for student in students:
        outcome = api.generate_feedback(assignment, student)
        if not outcome.get("success", False):
            failed[student] = grades.last_line(outcome.get("error", ""))
    return failed


def generate(course: Course, assignment: str, students: list[str]) -> dict[str, str]:
    """The feedback pages of `students`; {student: why it failed} for those it failed."""
    failed = _generate(course, assignment, students)
    _polish_feedback(course, assignment, [s for s in students if s not in failed])
    return failed


def refresh_feedback(course: Course, assignment: str) -> dict[str, str]:
    """The feedback of every graded student again, from the gradebook as it is now (after hand
    grading), without running a notebook; {student: why it failed} for those it failed."""
    students = sorted(p.parent.name for p in course.autograded.glob(f"*/{assignment}"))
    if not students:
        raise ValueError(f"no graded notebook of {assignment!r}: grade it first")
    failed = generate(course, assignment, students)
    refresh_reports(course, assignment)
    return failed


MATHJAX_CONFIG = """window.MathJax = {
  tex: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], processEscapes: true},
  svg: {fontCache: "global"},
  options: {enableMenu: false}
};"""


def _polish_feedback(course: Course, assignment: str, students: list[str]) -> None:
    """Make nbgrader's feedback pages tell the truth and stand alone: a written answer not yet
    graded by hand says so instead of "Score: 0.0", and the math is typeset by the vendored
    MathJax 3, inlined (the page is one file a student keeps; nbgrader's loads MathJax 2 from a
    CDN). Without the vendored copy (`make vendor`) the math stays as nbgrader left it."""
    from bs4 import BeautifulSoup
    from nbgrader.api import MissingEntry

    scripts = [
        root / "book" / "_vendor" / "mathjax" / "tex-svg-full.js"
        for root in (course.root, package_root().parent)  # the course's, else the grader's
    ]
    mathjax = next((p.read_text(encoding="utf-8") for p in scripts if p.is_file()), None)
    with grades.gradebook(course) as gb:
        pending = {}
        for student in students:
            try:
                sub = gb.find_submission(assignment, student)
            except MissingEntry:
                continue
            pending[student] = {
                nb.name: {g.cell.name: g.max_score for g in nb.grades if g.needs_manual_grade}
                for nb in sub.notebooks
            }
    for student, notebooks in pending.items():
        for name, cells in notebooks.items():
            page = course.feedback / student / assignment / f"{name}.html"
            if not page.is_file():
                continue
            soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
            for gid, points in cells.items():
                later = f"graded by hand later ({points:g} points)"
                for link in soup.select(f'a[href="#{gid}"]'):
                    for text in link.find_next_siblings(string=True, limit=1):
                        text.replace_with(f" ({later})")
                for mark in soup.select(f'a[name="{gid}"]'):
                    heading = mark.find_next_sibling("div", class_="panel-heading")
                    score = heading.find("span", class_="pull-right") if heading else None
                    if score is not None and score.contents:
                        score.contents[0].replace_with(f"{later[0].upper()}{later[1:]} ")
            if cells and soup.h4 is not None:
                waiting = sum(cells.values())
                soup.h4.append(f" and {waiting:g} points graded by hand later")
            if mathjax is not None and soup.head is not None:
                for tag in soup.find_all("script"):
                    src = (tag.get("src") or "").lower()
                    if "mathjax" in src or tag.get("type") == "text/x-mathjax-config":
                        tag.decompose()
                config = soup.new_tag("script")
                config.string = MATHJAX_CONFIG
                code = soup.new_tag("script")
                code.string = mathjax
                soup.head.append(config)
                soup.head.append(code)
            page.write_text(str(soup), encoding="utf-8")


def package_root() -> Path:
    import autograder

    return Path(autograder.__file__).resolve().parent
