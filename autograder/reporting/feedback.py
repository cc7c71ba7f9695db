"""The students' HTML feedback: small, offline pages that say what each part scored and why.

nbgrader's ``generate_feedback`` writes the pages, through the preprocessor and exporter below,
which ``nbgrader_config.py`` names too: the formgrader's "Generate Feedback" button makes the same
pages as the grader and ``python -m autograder.instructor feedback``. A page

- shows each graded part's verdict and what failed (the grade cell's output), not the grade
  cell's code (a comment and an empty ``In [ ]:``) nor the visible tests, which the grader does
  not run;
- says "graded by hand later" for a written answer not yet graded, instead of "Score: 0.0";
- has its math typeset into SVG when it is made, by MathJax 3 run in node (``make vendor``
  installs it in ``book/vendor/node_modules``): no script, no CDN, a few hundred kB.

:func:`refresh_feedback` redoes every page from the gradebook as it is (after hand grading)
without running a notebook.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from nbconvert.exporters import HTMLExporter
from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

from autograder.course import Course
from autograder.course.grades import last_line
from autograder.reporting.reports import refresh_reports

__all__ = [
    "FeedbackExporter",
    "FeedbackGrades",
    "MathJaxUnavailable",
    "generate",
    "refresh_feedback",
]

PREPROCESSORS = [
    "nbgrader.preprocessors.GetGrades",
    "nbgrader.preprocessors.ClearHiddenTests",
    "autograder.reporting.feedback.FeedbackGrades",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
EXPORTER = "autograder.reporting.feedback.FeedbackExporter"


def _config(course: Course):
    """The course's nbgrader config, with this module's feedback settings whatever it says (a
    course whose config predates them still gets offline pages)."""
    config = course.config()
    config.GenerateFeedback.preprocessors = PREPROCESSORS
    config.GenerateFeedback.exporter_class = EXPORTER
    return config


def _generate(course: Course, assignment: str, students: list[str]) -> dict[str, str]:
    """nbgrader's HTML feedback for `students`; {student: why it failed} for those it failed."""
    from nbgrader.apps import NbGraderAPI

    mathjax_package(course.root)  # fails at once, naming `make vendor`, when MathJax is missing
    api = NbGraderAPI(config=_config(course))
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
            failed[student] = last_line(outcome.get("error", ""))
    return failed


def generate(course: Course, assignment: str, students: list[str]) -> dict[str, str]:
    """The feedback pages of `students`; {student: why it failed} for those it failed."""
    try:
        return _generate(course, assignment, students)
    except MathJaxUnavailable as exc:
        return {student: str(exc) for student in students}


def refresh_feedback(course: Course, assignment: str) -> dict[str, str]:
    """The feedback of every graded student again, from the gradebook as it is now (after hand
    grading), without running a notebook; {student: why it failed} for those it failed.
    MathJaxUnavailable (a ValueError) when the pages' math cannot be typeset."""
    mathjax_package(course.root)  # one clear error rather than one per student

    students = sorted(p.parent.name for p in course.autograded.glob(f"*/{assignment}"))
    if not students:
        raise ValueError(f"no graded notebook of {assignment!r}: grade it first")
    failed = generate(course, assignment, students)
    refresh_reports(course, assignment)
    return failed


# --- the notebook: what each grade cell scored, and whether a hand is still to grade it ---------


class FeedbackGrades(Preprocessor):
    """After nbgrader's GetGrades: mark the cells still waiting for a hand (``pending``) and
    drop the visible-test cells (the grader does not run them; the grade cells say the verdict)."""

    enabled = Bool(True)  # nbconvert's preprocessors are off unless enabled

    def preprocess(self, nb, resources):
        from nbgrader.api import Gradebook, MissingEntry

        info = resources.get("nbgrader", {})
        pending = set()
        if info.get("db_url"):
            with Gradebook(info["db_url"]) as gb:
                try:
                    sub = gb.find_submission_notebook(
                        info["notebook"], info["assignment"], info["student"]
                    )
                    pending = {g.cell.name for g in sub.grades if g.needs_manual_grade}
                except MissingEntry:
                    pass
        kept, graded = [], []
        for cell in nb.cells:
            if "visible-tests" in cell.get("metadata", {}).get("tags", []):
                continue
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("grade"):
                graded.append(
                    {
                        "grade_id": meta.get("grade_id"),
                        "score": meta.get("score"),
                        "points": meta.get("points"),
                        "written": bool(meta.get("solution")),
                        "pending": meta.get("grade_id") in pending,
                        "label": _label(cell.get("source", "")),
                    }
                )
            kept.append(cell)
        nb.cells = kept
        resources["feedback_cells"] = graded  # the exporter reads it (it sees the page, not nb)
        return nb, resources


def _label(source: str) -> str | None:
    """What a grade cell grades, from its docstring's first line ("Part 1, `attention_scores`,
    the scaled scores (1 point)"), for the page's table of contents; None without one."""
    found = re.match(r'\s*[rRuU]?("""|\'\'\')\s*([^\n]*?)\s*(?:\1|\n)', source)
    if not found or not found.group(2):
        return None
    return re.split(r":\s+graded here", found.group(2))[0].replace("`", "").strip() or None


# --- the page ---------------------------------------------------------------------------------


class FeedbackExporter(HTMLExporter):
    """nbgrader's feedback page, finished: verdicts in place of grade cells' code, no empty
    prompts, "graded by hand later" for what waits for a hand, the math typeset into SVG."""

    def from_notebook_node(self, nb, resources=None, **kw):
        output, resources = super().from_notebook_node(nb, resources, **kw)
        root = getattr(getattr(self.parent, "coursedir", None), "root", None)
        return finish_page(output, resources.get("feedback_cells", []), root), resources


def finish_page(html: str, graded: list[dict], course_root: str | None = None) -> str:
    """The page nbgrader's template made, finished; `graded` is what FeedbackGrades found."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    waiting = 0.0
    for meta in graded:
        gid, points = meta["grade_id"], float(meta.get("points") or 0)
        score = meta.get("score")
        mark = soup.find("a", attrs={"name": gid})
        panel = mark.parent if mark is not None else None
        heading = panel.find("div", class_="panel-heading") if panel else None
        right = heading.find("span", class_="pull-right") if heading else None
        if meta.get("label") and not meta.get("written"):
            for link in soup.select(f'#toc a[href="#{gid}"]'):
                link.string = meta["label"]  # instead of nbgrader's "Test cell"
        if meta.get("pending"):
            waiting += points
            later = f"graded by hand later ({points:g} points)"
            for link in soup.select(f'a[href="#{gid}"]'):
                for text in link.find_next_siblings(string=True, limit=1):
                    text.replace_with(f" ({later})")
            if right is not None and right.contents:
                right.contents[0].replace_with(f"{later[0].upper()}{later[1:]} ")
        if meta.get("written") or panel is None:
            continue  # a written answer or the student's code: shown as it is
        # An autograded cell: its verdict, then (below the cell) what failed, not its code.
        for area in panel.find_all("div", class_="input_area"):
            area.decompose()
        passed = score is not None and float(score) >= points
        kind = "passed" if passed else "failed"
        verdict = soup.new_tag("p", attrs={"class": f"verdict {kind}"})
        got = "?" if score is None else f"{float(score):g}"
        verdict.string = (
            f"Passed: {got} / {points:g} {_points(points)}."
            if passed
            else f"Not passed: {got} / {points:g} {_points(points)}. What failed is below."
        )
        body = panel.find("div", class_="panel-body")
        (body or panel).append(verdict)
    if waiting and soup.h4 is not None:
        soup.h4.append(f" and {waiting:g} points graded by hand later")
    for prompt in soup.select("div.prompt"):
        prompt.clear()  # "In [ ]:": the grader's run has no execution counts worth showing
    for tag in soup.find_all("script"):
        src = (tag.get("src") or "").lower()
        if src or "mathjax" in (tag.string or "").lower():
            tag.decompose()  # nbgrader's MathJax 2 from a CDN, and its configuration
    for sheet in soup.find_all("style"):
        # bootstrap's icon font (no page uses an icon) is the one file the CSS would fetch
        css = sheet.string or ""
        if "@font-face" in css:
            sheet.string = re.sub(r"@font-face\s*\{[^}]*url\([^}]*\}", "", css)
    style = soup.new_tag("style")
    style.string = (
        ".verdict{font-weight:bold;margin:.3em 0}.verdict.passed{color:#2b6e2b}"
        ".verdict.failed{color:#a12b2b}"
    )
    if soup.head is not None:
        soup.head.append(style)
    return typeset(str(soup), course_root)


# --- the math, typeset once by MathJax 3 in node -------------------------------------------------


class MathJaxUnavailable(ValueError):
    """The feedback's math cannot be typeset: MathJax's npm package or node is missing."""


def package_root() -> Path:
    import autograder

    return Path(autograder.__file__).resolve().parent


def mathjax_package(course_root: str | Path | None = None) -> Path:
    """The MathJax 3 npm package that `make vendor` installs (the course's, else the grader's);
    MathJaxUnavailable naming `make vendor` (and node) when it cannot be used."""
    roots = [Path(course_root)] if course_root else []
    roots += [package_root().parent, *_installed_from()]
    for root in roots:
        package = root / "book" / "vendor" / "node_modules" / "mathjax"
        if (package / "package.json").is_file():
            break
    else:
        raise MathJaxUnavailable(
            "the feedback pages' math is typeset by MathJax 3, which is not installed: run "
            f"`make vendor` in {roots[-1]} (it needs node and npm); no page loads it from a CDN"
        )
    if shutil.which("node") is None:
        raise MathJaxUnavailable(
            "the feedback pages' math is typeset by MathJax 3 in node, and `node` is not on "
            "PATH: install Node.js (sudo apt-get install nodejs)"
        )
    return package


def _installed_from() -> list[Path]:
    """The checkout this package was installed from (`make install`: pip install -e), where
    `make vendor` ran; [] when it was not installed that way. A course copied elsewhere (a test's,
    a grading server's folder) finds MathJax there."""
    import importlib.metadata
    from urllib.parse import unquote, urlparse

    try:
        text = importlib.metadata.distribution("attention-step-by-step").read_text(
            "direct_url.json"
        )
        url = json.loads(text or "{}").get("url", "")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return []
    return [Path(unquote(urlparse(url).path))] if url.startswith("file://") else []


TYPESET_JS = r"""
const readline = require("readline");
require(process.argv[process.argv.length - 1]).init({
  loader: {load: ["input/tex-full", "output/svg", "adaptors/liteDOM"]},
  tex: {inlineMath: [["$", "$"], ["\\(", "\\)"]], processEscapes: true},
  svg: {fontCache: "global"},
  startup: {typeset: false},
}).then((MathJax) => {
  const adaptor = MathJax.startup.adaptor;
  const {mathjax} = MathJax._.mathjax;
  const {TeX} = MathJax._.input.tex_ts;
  const {SVG} = MathJax._.output.svg_ts;
  const lines = readline.createInterface({input: process.stdin, terminal: false});
  lines.on("line", (line) => {
    let answer;
    try {
      // a fresh input and output jax for each page: each page gets the stylesheet and the
      // glyphs it uses (one output jax adds its stylesheet and glyph to the first page only)
      const doc = mathjax.document(JSON.parse(line), {
        InputJax: new TeX(MathJax.config.tex),
        OutputJax: new SVG(MathJax.config.svg),
      });
      doc.render();
      const doctype = adaptor.doctype(doc.document);
      const page = adaptor.outerHTML(adaptor.root(doc.document));
      answer = {html: (doctype ? doctype + "\n" : "") + page};
    } catch (err) {
      answer = {error: String((err && err.message) || err)};
    }
    process.stdout.write(JSON.stringify(answer) + "\n");
  });
}).catch((err) => {
  process.stderr.write("MathJax did not start: " + String((err && err.message) || err) + "\n");
  process.exit(1);
});
"""

_node: dict[Path, tuple[subprocess.Popen, object]] = {}  # MathJax package -> (node, its stderr)
_lock = threading.Lock()


def typeset(html: str, course_root: str | Path | None = None) -> str:
    """`html` with its TeX typeset into inline SVG (code blocks untouched). One node process,
    started on first use, serves every page of this Python process."""
    package = mathjax_package(course_root)
    with _lock:
        proc, errors = _node.get(package, (None, None))
        if proc is None or proc.poll() is not None:
            errors = tempfile.TemporaryFile()  # read only when node stops
            proc = subprocess.Popen(
                ["node", "-e", TYPESET_JS, str(package)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                encoding="utf-8",
            )
            _node[package] = proc, errors
        try:
            proc.stdin.write(json.dumps(html) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            _node.pop(package, None)
            proc.wait()
            errors.seek(0)
            said = last_line(errors.read().decode(errors="replace"))
            raise MathJaxUnavailable(f"MathJax in node stopped: {said}")
    answer = json.loads(line)
    if "error" in answer:
        raise ValueError(f"MathJax could not typeset the page: {answer['error']}")
    return answer["html"]


def _points(n: float) -> str:
    return "point" if n == 1 else "points"
