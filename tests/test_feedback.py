"""The students' feedback pages, hand grades from a CSV and the class report (issue 18).

A small class of chapter 4 is graded once, for real (sandbox, gradebook, feedback): two correct
notebooks, two that forget to scale the scores, one that divides by E, one left blank. Then:

- each page is small, loads nothing (no script, no URL), shows each part's verdict and what
  failed rather than grade cells' code and the visible tests, and its math renders in a headless
  Chromium that can reach no host;
- the formgrader's "Generate Feedback" button (nbgrader's API with the course's config) makes
  the same pages;
- hand grades from a CSV land in the gradebook and the reports, and a wrong line is named;
- the class report counts who made which mistake.
"""

from __future__ import annotations

import csv
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder.chapters.ch04_self_attention import wrong
from autograder.course import Course
from autograder.instructor.handgrades import import_hand_grades
from autograder.reporting import feedback
from autograder.reporting.class_report import NOT_ATTEMPTED, name_mistake

A = "ch04_self_attention"
REPO = Path(__file__).resolve().parents[1]
# Measured: about 300 kB a page (nbgrader's inlined CSS is 120 kB of it, the typeset math 90 kB);
# it was 2.6 MB with MathJax inlined into every page.
PAGE_BYTES = 400_000


def _as(fn, name: str) -> str:
    """A known-wrong implementation from the chapter's bank, as the student would write it."""
    return inspect.getsource(fn).replace(f"def {fn.__name__}(", f"def {name}(", 1)


CLASS = {
    "ann": {},
    # a correct answer that looks for the grader: flagged for review, its score unchanged
    "ben": {
        "attention_scores_solution": lambda own: (
            f"import os\nGRADED = 'NBGRADER_EXECUTION' in os.environ\n{own}"
        )
    },
    "cat": {"attention_scores_solution": _as(wrong.scores_no_scaling, "attention_scores")},
    "dan": {"attention_scores_solution": _as(wrong.scores_no_scaling, "attention_scores")},
    "eve": {"attention_scores_solution": _as(wrong.scores_divide_by_d, "attention_scores")},
    "fay": None,  # the release, as it was handed out
}


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "ATTENTION_GRADING_DIR"}
    env["PYTHONPATH"] = str(REPO)
    return env


def _run(course_root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=course_root,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check:
        assert proc.returncode == 0, f"{args}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="session")
def graded_class(tmp_path_factory):
    from nbgrader_helpers import cell_by_id, filled_in, make_course, read_notebook

    try:
        feedback.mathjax_package()
    except feedback.MathJaxUnavailable as exc:
        pytest.skip(f"SKIPPED LOUDLY: {exc}")
    course_root = make_course(tmp_path_factory.mktemp("feedback"))
    shutil.copytree(REPO / "exercises", course_root / "exercises")
    source = read_notebook(course_root / "solutions" / A / f"{A}.ipynb")
    release = read_notebook(course_root / "exercises" / A / f"{A}.ipynb")
    for student, edits in CLASS.items():
        nb = release if edits is None else filled_in(release, source)
        for gid, code in (edits or {}).items():
            cell = cell_by_id(nb, gid)
            cell.source = code(cell.source) if callable(code) else code
        path = course_root / "grading" / "submitted" / student / A / f"{A}.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(nb, path)
    _run(course_root, "autograder.engine.grade", A, "--no-progress", "--workers", "2")
    return course_root


def _page(course: Course, student: str) -> Path:
    return course.feedback / student / A / f"{A}.html"


def _urls(html: str) -> list[str]:
    """Every address the page would fetch: src= and href= (links to anchors aside), CSS url()."""
    found = re.findall(r"""(?:src|href)\s*=\s*["']([^"'#][^"']*)["']""", html, re.I)
    found += re.findall(r"url\(\s*['\"]?([^)'\"]+)", html, re.I)
    return [u for u in found if not u.startswith("data:")]


@pytest.mark.slow
def test_feedback_pages_are_small_offline_and_say_each_verdict(graded_class):
    course = Course.load(graded_class)
    release = nbformat.read(course.release / A / f"{A}.ipynb", 4)
    visible = [
        line
        for c in release.cells
        if "visible-tests" in c.metadata.get("tags", [])
        for line in c.source.splitlines()
        if len(line) > 30
    ]
    assert visible
    for student in CLASS:
        html = _page(course, student).read_text(encoding="utf-8")
        assert len(html.encode()) < PAGE_BYTES, (student, len(html))
        assert "<script" not in html and not _urls(html), (student, _urls(html))
        assert "In [" not in html, student  # no empty prompts
        assert not [line for line in visible if line in html], student  # no visible tests
        assert "mjx-container" in html, student  # the math was typeset when the page was made
        assert ">Test cell<" not in html, student  # the contents name what each cell grades
        if student != "fay":  # a written answer left blank is not waiting for a hand
            assert "graded by hand later (2 points)" in html, student
    cat = _page(course, "cat").read_text(encoding="utf-8")
    assert cat.count('class="verdict failed"') == 2  # the two cells of attention_scores
    assert "Not passed: 0 / 1 point. What failed is below." in cat
    assert "the scores are not scaled" in cat
    assert '">Part 1, attention_scores, the scaled scores (1 point)</a> (Score: 0.0 / 1.0)' in cat
    ann = _page(course, "ann").read_text(encoding="utf-8")
    assert 'class="verdict failed"' not in ann and "Passed: 3 / 3 points." in ann


@pytest.mark.slow
def test_the_math_renders_in_a_browser_that_can_reach_nothing(graded_class):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("SKIPPED LOUDLY: needs Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # every host resolves to nothing
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        driver.get(_page(Course.load(graded_class), "cat").as_uri())
        state = driver.execute_script(
            """
            const math = Array.from(document.querySelectorAll("mjx-container > svg"));
            const body = document.body.cloneNode(true);
            body.querySelectorAll("pre, code, mjx-container, style").forEach(e => e.remove());
            return {
              math: math.length,
              drawn: math.filter(s => s.getBoundingClientRect().width > 0).length,
              errors: document.querySelectorAll('[data-mml-node="merror"]').length,
              raw: ["\\\\(", "\\\\[", "$$"].filter(s => body.textContent.includes(s)),
              fetched: performance.getEntriesByType("resource").map(e => e.name),
            };
            """
        )
    finally:
        driver.quit()
    assert state["math"] > 10 and state["drawn"] == state["math"], state
    assert state["errors"] == 0 and state["raw"] == [] and state["fetched"] == [], state


@pytest.mark.slow
def test_the_formgraders_button_makes_the_same_pages(graded_class, tmp_path):
    """The button calls nbgrader's API with the course's nbgrader_config.py: the same page."""
    from nbgrader.apps import NbGraderAPI

    course = Course.load(graded_class)
    config = course.config()
    assert config.GenerateFeedback.exporter_class == feedback.EXPORTER
    assert list(config.GenerateFeedback.preprocessors) == feedback.PREPROCESSORS
    ours = _page(course, "cat").read_bytes()
    _page(course, "cat").unlink()
    outcome = NbGraderAPI(config=config).generate_feedback(A, "cat")
    assert outcome.get("success"), outcome.get("error")
    assert _page(course, "cat").read_bytes() == ours


def test_without_mathjax_the_feedback_names_make_vendor(tmp_path, monkeypatch):
    monkeypatch.setattr(feedback, "package_root", lambda: tmp_path / "autograder")
    monkeypatch.setattr(feedback, "_installed_from", lambda: [])
    with pytest.raises(feedback.MathJaxUnavailable, match="make vendor"):
        feedback.mathjax_package(tmp_path)
    with pytest.raises(feedback.MathJaxUnavailable, match="make vendor"):
        feedback.typeset("<p>$x$</p>", tmp_path)


def test_mistakes_are_named_by_the_clause_the_chapter_knows():
    phrases = ["not scaled", "each key head serves"]
    message = (
        "attention_scores(query (L=5, E=8), key (S=5, E=8), float32, cpu): the scores are not "
        "scaled; with scale=None multiply by 1/sqrt(E), E being the query's last dimension."
    )
    assert name_mistake(message, phrases) == "the scores are not scaled"
    stub = "f(x) raised NotImplementedError:  (in your code at cell 4, line 18: raise ...)"
    assert name_mistake(stub, phrases) == NOT_ATTEMPTED
    assert name_mistake("f(x) raised KeyError: 'a'", phrases) == "raised KeyError"
    assert name_mistake("f(x): the rows do not sum to 1; see the softmax.", []) == (
        "the rows do not sum to 1"
    )


@pytest.mark.slow
def test_the_class_report_counts_who_made_which_mistake(graded_class):
    course = Course.load(graded_class)
    page = (course.reports / f"{A}-class.html").read_text(encoding="utf-8")
    assert not _urls(page) and "<script" not in page
    assert 'src="data:image/png;base64,' in page  # the score distribution, inside the page
    scores_part = page.split("<code>attention_scores</code>")[1].split("<h3>")[0]
    assert "<strong>2 students</strong>: the scores are not scaled" in scores_part
    assert "<strong>1 student</strong>: the scores are divided by E" in scores_part
    assert f"<strong>1 student</strong>: {NOT_ATTEMPTED}" in scores_part
    assert "2 of 6 graded notebooks passed every check of this part" in scores_part
    for part in ("attention_weights", "SelfAttention", "measure_score_variance"):
        section = page.split(f"<code>{part}</code>")[1].split("<h3>")[0]
        assert f"<strong>1 student</strong>: {NOT_ATTEMPTED}" in section, part
        assert "not scaled" not in section, part  # the stand-in kept part 1 out of the rest
        assert "5 of 6 graded notebooks passed every check" in section, part
    assert "6 students: 6 graded" in page
    flagged = page.split("<h2>Flagged for review</h2>")[1]
    assert flagged.count("<li>") == 1 and "<strong>ben</strong>" in flagged
    assert "NBGRADER_EXECUTION" in flagged and "No score was changed" in flagged


@pytest.mark.slow
def test_hand_grades_from_a_csv(graded_class, tmp_path):
    from nbgrader.api import Gradebook

    root = shutil.copytree(graded_class, tmp_path / "course")  # the config pins its own folder
    course = Course.load(root)
    db = course.db_path.read_bytes()
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "student,cell,score,comment\n"
        "nobody,scaling_gradients_answer,1,\n"
        "ann,no_such_cell,1,\n"
        "ann,scaling_gradients_answer,3,too many\n"
        "ben,scaling_gradients_answer,two,\n"
        "ben,attention_scores_tests,,well done\n"
    )
    with pytest.raises(ValueError, match="is not a number") as not_a_number:
        import_hand_grades(course, A, bad)
    assert "line 5" in str(not_a_number.value)
    bad.write_text(bad.read_text().replace("two", "2"))
    with pytest.raises(ValueError) as problems:
        import_hand_grades(course, A, bad)
    said = str(problems.value)
    assert "line 2: no graded submission of 'nobody'" in said
    assert "line 3: ch04_self_attention has no graded cell 'no_such_cell'" in said
    assert "line 4: the score 3 for scaling_gradients_answer is outside 0..2" in said
    assert "line 6: attention_scores_tests takes no comment" in said
    assert "nothing was imported" in said and course.db_path.read_bytes() == db

    marks = tmp_path / "marks.csv"
    marks.write_text(
        "student,cell,score,comment\n"
        "ann,scaling_gradients_answer,2,Clear and right.\n"
        "cat,scaling_gradients_answer,1.5,\n"
        "cat,attention_scores_tests,0.5,\n"
    )
    out = _run(root, "autograder.instructor", "handgrades", A, str(marks)).stdout
    assert "cat, attention_scores_tests: 0.5 replaces the grader's 0" in out
    with Gradebook(course.db_url) as gb:
        ann = gb.find_grade("scaling_gradients_answer", A, A, "ann")
        assert (ann.score, ann.needs_manual_grade) == (2.0, False)
        assert gb.find_comment("scaling_gradients_answer", A, A, "ann").comment == (
            "Clear and right."
        )
        assert gb.find_submission(A, "cat").score == pytest.approx(11 + 1.5 + 0.5)
    with open(course.reports / f"{A}.csv", newline="") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert rows["ann"]["needs_manual_grade"] == "" and float(rows["ann"]["score"]) == 15
    assert float(rows["cat"]["score"]) == 13 and rows["cat"]["attention_scores_tests"] == "0.5"
    assert rows["ben"]["needs_manual_grade"] == "scaling_gradients_answer"  # not in the CSV
    proc = _run(root, "autograder.instructor", "handgrades", A, str(bad), check=False)
    assert proc.returncode == 2 and "no graded submission of 'nobody'" in proc.stderr
