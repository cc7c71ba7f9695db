"""The chapter contract, checked for every chapter in autograder/chapters/.

A new chapter gets all of this by adding its package (declaration, reference, checks, wrong bank),
its source notebook, its release and its page: nothing here names a chapter. Points are read from
the source notebook, the one place they are written.

- every graded code cell is a declared part, and its hidden test calls exactly its declared check;
- the reference passes every check; every known mistake fails its part's check, with a message
  that names a property and prints no tensor values;
- one bug costs one part: with a known mistake in one part and the solution everywhere else,
  every other part still passes;
- the solution notebook, handed in as a student would, gets full automatic marks through the real
  batch grader, and the untouched release gets 0, each with a row and feedback;
- the page is in the book and never reaches for the grader.
"""

from __future__ import annotations

import ast
import csv
import re
import shutil
import warnings

import nbformat
import pytest
import yaml

from autograder import chapters
from autograder.toolkit import CheckFailed

from nbgrader_helpers import (
    HIDDEN_TEST_MARKERS,
    REPO,
    SOLUTION_MARKERS,
    filled_in,
    make_course,
    read_notebook,
    regions,
    submit,
)

SLUGS = chapters.slugs()
# A printed tensor, or three numbers with 3+ decimals in a row: values a message must not show.
VALUES = re.compile(r"tensor\(|(-?\d+\.\d{3,}\D{1,3}){3}")


def _meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def _source(slug: str):
    return read_notebook(REPO / "solutions" / slug / f"{slug}.ipynb")


def _test_cells(nb) -> dict[str, str]:
    """{grade id: source} of the graded code cells that are not answers (the test cells)."""
    return {
        _meta(c)["grade_id"]: c.source
        for c in nb.cells
        if c.cell_type == "code" and _meta(c).get("grade") and not _meta(c).get("solution")
    }


@pytest.mark.parametrize("slug", SLUGS)
def test_every_graded_code_cell_is_a_declared_part(slug):
    chapter = chapters.load(slug)
    declared = [p.grade_id for p in chapter.parts]
    assert sorted(_test_cells(_source(slug))) == sorted(declared)
    assert len(set(declared)) == len(declared)
    points = chapter.points()
    assert all(points[gid] > 0 for gid in declared), points


@pytest.mark.parametrize("slug", SLUGS)
def test_each_hidden_test_calls_its_declared_check(slug):
    chapter = chapters.load(slug)
    package = __import__(f"autograder.chapters.{slug}", fromlist=["CHAPTER"])
    for gid, source in _test_cells(_source(slug)).items():
        part = chapter.part(gid)
        hidden = "\n".join(regions(source, HIDDEN_TEST_MARKERS))
        tree = ast.parse(hidden)
        check_name = part.check.__name__
        assert getattr(package, check_name) is part.check, f"{slug}.{check_name} is not the part's"
        expected = [
            f"from autograder.chapters.{slug} import {check_name}",
            f"{check_name}({part.name})",
        ]
        assert [ast.unparse(node) for node in tree.body] == expected, gid


@pytest.mark.parametrize("slug", SLUGS)
def test_the_reference_passes_every_check(slug):
    chapter = chapters.load(slug)
    reference = __import__(f"autograder.chapters.{slug}.reference", fromlist=["_"])
    for part in chapter.parts:
        part.check(getattr(reference, part.name))


@pytest.mark.parametrize("slug", SLUGS)
def test_every_known_mistake_fails_its_part_and_shows_no_values(slug):
    chapter = chapters.load(slug)
    names = {p.name for p in chapter.parts}
    assert set(chapter.wrong) == names, "every part needs known mistakes, and only parts"
    for part in chapter.parts:
        entries = chapter.wrong[part.name]
        assert len(entries) >= 2, f"{part.name} has fewer than 2 known mistakes"
        for mistake, impl in entries.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with pytest.raises(CheckFailed) as caught:
                    part.check(impl)
            message = str(caught.value)
            assert len(message) > 30, (mistake, message)
            assert not VALUES.search(message), (mistake, message)


def _solution_namespace(slug: str) -> dict:
    """What a student's kernel holds after running the solution notebook's setup and answers."""
    namespace: dict = {"__name__": "__main__"}
    for cell in _source(slug).cells:
        meta = _meta(cell)
        if cell.cell_type != "code" or not (meta.get("solution") or meta.get("locked")):
            continue
        if meta.get("grade") or "visible-tests" in cell.metadata.get("tags", []):
            continue
        lines = [ln for ln in cell.source.split("\n") if ln.strip() not in SOLUTION_MARKERS]
        exec(compile("\n".join(lines), f"<{meta['grade_id']}>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("slug", SLUGS)
def test_one_bug_costs_one_part(slug):
    """A known mistake in one part, the solution everywhere else: every other part passes."""
    chapter = chapters.load(slug)
    failures = []
    for part in chapter.parts:
        for mistake, impl in chapter.wrong[part.name].items():
            namespace = _solution_namespace(slug)
            namespace[part.name] = impl
            for other in chapter.parts:
                if other is part:
                    continue
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        other.check(namespace[other.name])
                except CheckFailed as exc:
                    failures.append(f"{part.name}:{mistake} cost {other.name}: {exc}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("slug", SLUGS)
def test_the_page_is_in_the_book_and_never_reaches_for_the_grader(slug):
    page = REPO / "book" / f"{slug}.md"
    assert page.is_file()
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = re.findall(r"'file': '([^']+)'", str(toc))
    assert f"book/{slug}" in files and f"exercises/{slug}/{slug}" in files
    text = page.read_text()
    assert not re.search(r"^\s*(from|import)\s+autograder", text, re.M), (
        "the page imports the grader"
    )
    assert "autograder" not in text and "solutions/" not in text


class _Graded:
    """Each chapter's solution and blank release through the real batch grader (2 workers),
    graded the first time a test asks for that chapter, so `-k <slug>` grades one chapter."""

    def __init__(self, root):
        from autograder.engine.grade import Course

        self.root = make_course(root)
        shutil.copytree(REPO / "exercises", self.root / "exercises")
        self.course = Course.load(self.root)
        self._done: dict[str, tuple] = {}

    def __getitem__(self, slug: str) -> tuple:
        if slug not in self._done:
            from autograder.engine.grade import grade_assignment

            source = read_notebook(self.root / "solutions" / slug / f"{slug}.ipynb")
            release = read_notebook(self.root / "exercises" / slug / f"{slug}.ipynb")
            submit(self.root, "solution", slug, filled_in(release, source))
            submit(self.root, "blank", slug, release)
            results = grade_assignment(self.course, slug, workers=2, timeout=60, progress=False)
            with open(self.course.reports / f"{slug}.csv") as f:
                rows = {r["student"]: r for r in csv.DictReader(f)}
            self._done[slug] = ({r.student: r for r in results}, rows)
        return self._done[slug]


# Session scope: under xdist a worker can run another file's tests between two of this file's,
# and pytest would tear a module fixture down and build it again (see tests/conftest.py).
@pytest.fixture(scope="session")
def graded(tmp_path_factory):
    """The chapters' grading runs, one course for all of them."""
    return _Graded(tmp_path_factory.mktemp("contract"))


@pytest.mark.slow
# its own group: the graded course is built once, on one worker, beside the book or the engine
@pytest.mark.xdist_group("contract")
@pytest.mark.parametrize("slug", SLUGS)
def test_the_solution_gets_full_marks_and_the_blank_release_zero(graded, slug):
    course = graded.course
    results, rows = graded[slug]
    chapter = chapters.load(slug)
    auto = sum(chapter.points()[p.grade_id] for p in chapter.parts)
    solution, blank = results["solution"], results["blank"]
    assert (solution.status, solution.score) == ("graded", auto), solution.messages
    assert not solution.messages and not solution.findings
    assert (blank.status, blank.score) == ("graded", 0)
    assert set(blank.messages) == {p.grade_id for p in chapter.parts}
    assert set(rows) == {"solution", "blank"}
    for student in ("solution", "blank"):
        assert (course.feedback / student / slug / f"{slug}.html").is_file()
        nb = nbformat.read(course.autograded / student / slug / f"{slug}.ipynb", 4)
        verdicts = [c for c in nb.cells if _meta(c).get("grade") and c.cell_type == "code"]
        assert all(c.outputs for c in verdicts)
