"""The chapter contract, checked for every chapter in autograder/chapters/.

A new chapter gets all of this by adding its package (checks, reference, wrong and right banks),
its source notebook, its release and its page: nothing here names a chapter. What is graded is
read from the source notebook (``autograder.chapters.load``), the one place it is written.

- every graded code cell's hidden test is one check of one name, and no cell that is graded all
  or nothing is worth more than 3 points;
- the reference passes every check;
- every known mistake (the wrong bank) fails a check of its name, with a message that contains the
  phrase the bank gives for it and prints no tensor values;
- every correct variant (the right bank: at least three per graded name) passes every check of its
  name: a check stricter than its instructions fails here;
- one bug costs one name: with a known mistake, or a correct variant, in one name and the solution
  everywhere else, every other name's checks pass;
- the solution notebook, handed in as a student would, gets full automatic marks through the real
  batch grader, and so does a notebook assembled from right variants; the untouched release gets 0,
  each with a row and feedback;
- the page is in the book and never reaches for the grader.
"""

from __future__ import annotations

import ast
import csv
import inspect
import re
import shutil
import textwrap
import warnings
from pathlib import Path

import nbformat
import pytest
import yaml

from autograder import chapters
from autograder.toolkit import CheckFailed

from nbgrader_helpers import REPO, filled_in, make_course, read_notebook, submit

SLUGS = chapters.slugs()
# A printed tensor, or three numbers with 3+ decimals in a row: values a message must not show.
VALUES = re.compile(r"tensor\(|(-?\d+\.\d{3,}\D{1,3}){3}")
ALL_OR_NOTHING_MAX = 3  # points a graded cell may be worth when its check passes or fails whole
RIGHT_VARIANTS_MIN = 3


def _meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def _source(slug: str):
    return read_notebook(REPO / "solutions" / slug / f"{slug}.ipynb")


def _quietly(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)


def _failures(chapter: chapters.Chapter, name: str, impl) -> dict[str, str]:
    """{grade id: message} of the checks of `name` that `impl` fails."""
    failed = {}
    for part in chapter.parts_of(name):
        try:
            _quietly(part.check, impl)
        except CheckFailed as exc:
            failed[part.grade_id] = str(exc)
    return failed


@pytest.mark.parametrize("slug", SLUGS)
def test_every_graded_code_cell_is_one_check_of_one_name(slug):
    chapter = chapters.load(slug)  # raises, naming the cell, for a hidden test of another form
    auto = {
        _meta(c)["grade_id"]
        for c in _source(slug).cells
        if c.cell_type == "code" and _meta(c).get("grade") and not _meta(c).get("solution")
    }
    assert sorted(p.grade_id for p in chapter.parts) == sorted(auto)
    for part in chapter.parts:
        assert 0 < part.points <= ALL_OR_NOTHING_MAX, (
            f"{part.grade_id} is worth {part.points:g} points, all or nothing: split it into "
            f"graded cells of at most {ALL_OR_NOTHING_MAX} points, one per behaviour"
        )


@pytest.mark.parametrize("slug", SLUGS)
def test_the_reference_passes_every_check(slug):
    chapter = chapters.load(slug)
    reference = __import__(f"autograder.chapters.{slug}.reference", fromlist=["_"])
    for part in chapter.parts:
        _quietly(part.check, getattr(reference, part.name))


@pytest.mark.parametrize("slug", SLUGS)
def test_every_known_mistake_is_caught_and_named(slug):
    chapter = chapters.load(slug)
    assert set(chapter.wrong) == set(chapter.names), "every graded name needs known mistakes"
    problems = []
    for name in chapter.names:
        entries = chapter.wrong[name]
        assert len(entries) >= 2, f"{name} has fewer than 2 known mistakes"
        for mistake, entry in entries.items():
            if not isinstance(entry, chapters.Mistake):
                problems.append(f"{name}: {mistake!r} needs the phrase its message must contain")
                continue
            failed = _failures(chapter, name, entry.impl)
            if not failed:
                problems.append(f"{name}: {mistake!r} passes every check of {name}")
                continue
            messages = " | ".join(failed.values())
            if entry.says.lower() not in messages.lower():
                problems.append(f"{name}: {mistake!r}: no message says {entry.says!r}: {messages}")
            for message in failed.values():
                if len(message) <= 30 or VALUES.search(message):
                    problems.append(f"{name}: {mistake!r}: a message too short or with values: "
                                    f"{message}")  # fmt: skip
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("slug", SLUGS)
def test_every_correct_variant_gets_full_marks(slug):
    chapter = chapters.load(slug)
    assert set(chapter.right) == set(chapter.names), "every graded name needs correct variants"
    problems = []
    for name in chapter.names:
        variants = chapter.right[name]
        if len(variants) < RIGHT_VARIANTS_MIN:
            problems.append(f"{name} has fewer than {RIGHT_VARIANTS_MIN} correct variants")
        for variant, impl in variants.items():
            for gid, message in _failures(chapter, name, impl).items():
                problems.append(f"{name}: the correct variant {variant!r} fails {gid}: {message}")
    assert not problems, "\n".join(problems)


def _solution_namespace(slug: str) -> dict:
    """What a student's kernel holds after running the solution notebook's setup and answers."""
    namespace: dict = {"__name__": "__main__"}
    for cell in _source(slug).cells:
        meta = _meta(cell)
        if cell.cell_type != "code" or not (meta.get("solution") or meta.get("locked")):
            continue
        if meta.get("grade") or "visible-tests" in cell.metadata.get("tags", []):
            continue
        code = chapters.without_markers(cell.source)
        exec(compile(code, f"<{meta['grade_id']}>", "exec"), namespace)
    return namespace


def _reaches(namespace: dict, obj, name: str, seen: set | None = None) -> bool:
    """Whether `obj`'s code can reach the global `name` of `namespace`, directly or through the
    other functions and classes defined there (a part that cannot is not touched by a swap)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return False
    seen.add(id(obj))
    codes = []
    if inspect.isclass(obj):
        codes = [getattr(v, "__func__", v).__code__ for v in vars(obj).values()
                 if inspect.isfunction(getattr(v, "__func__", v))]  # fmt: skip
        codes += [b for b in obj.__mro__[1:] if b.__module__ == obj.__module__]
    elif inspect.isfunction(obj):
        codes = [obj.__code__]
    for code in codes:
        if inspect.isclass(code):
            if _reaches(namespace, code, name, seen):
                return True
            continue
        stack = [code]
        while stack:
            c = stack.pop()
            stack += [k for k in c.co_consts if inspect.iscode(k)]
            for global_name in c.co_names:
                if global_name == name:
                    return True
                other = namespace.get(global_name)
                if (inspect.isfunction(other) or inspect.isclass(other)) and _reaches(
                    namespace, other, name, seen
                ):
                    return True
    return False


@pytest.mark.parametrize("slug", SLUGS)
def test_one_bug_costs_one_name_and_a_correct_variant_costs_nothing(slug):
    """A known mistake, or a correct variant, in one name, the solution everywhere else: every
    other name's checks pass (a later part runs on an earlier one when it passes its checks,
    and on the reference when it does not)."""
    chapter = chapters.load(slug)
    namespace = _solution_namespace(slug)  # one kernel: the verdicts on its parts are reused
    failures = []
    for name in chapter.names:
        entries = {
            **{f"wrong {k}": getattr(v, "impl", v) for k, v in chapter.wrong.get(name, {}).items()},
            **{f"right {k}": v for k, v in chapter.right.get(name, {}).items()},
        }
        solution = namespace[name]
        for label, impl in entries.items():
            namespace[name] = impl
            try:
                for other in chapter.names:
                    if other == name or not _reaches(namespace, namespace[other], name):
                        continue
                    for gid, message in _failures(chapter, other, namespace[other]).items():
                        failures.append(f"{name}: {label} cost {gid}: {message}")
            finally:
                namespace[name] = solution
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


# --- a notebook of correct variants, as a student would hand it in ---------------------------


def _imports_of(module) -> str:
    """The top-level imports of a right bank, minus the package's own (the notebook has no
    package)."""
    tree = ast.parse(Path(inspect.getsourcefile(module)).read_text())
    keep = [
        node
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and not (isinstance(node, ast.ImportFrom) and (node.level or node.module == "__future__"))
    ]
    return "\n".join(ast.unparse(node) for node in keep)


def right_variant_notebook(slug: str, release, source):
    """The release with each answer cell holding the *last* correct variant of each name it
    defines (its source, renamed to the name), so the real grader sees answers unlike the
    reference. The variants must be self-contained: the bank's imports and nothing else."""
    chapter = chapters.load(slug)
    bank = __import__(f"autograder.chapters.{slug}.right", fromlist=["RIGHT"])
    imports = _imports_of(bank)
    names_after: dict[str, list[str]] = {}  # answer cell -> the names graded after it
    current = None
    for cell in source.cells:
        meta = _meta(cell)
        if cell.cell_type == "code" and meta.get("solution") and not meta.get("grade"):
            current = meta["grade_id"]
            names_after[current] = []
        elif current and meta.get("grade") and meta["grade_id"] in {
            p.grade_id for p in chapter.parts
        }:
            name = chapter.part(meta["grade_id"]).name
            if name not in names_after[current]:
                names_after[current].append(name)
    nb = filled_in(release, source)
    for cell in nb.cells:
        gid = _meta(cell).get("grade_id")
        if not names_after.get(gid):
            continue
        code = [imports]
        for name in names_after[gid]:
            impl = list(chapter.right[name].values())[-1]
            code.append(textwrap.dedent(inspect.getsource(impl)))
            if impl.__name__ != name:
                code.append(f"{name} = {impl.__name__}")
        cell.source = "\n\n".join(code)
    return nb


class _Graded:
    """Each chapter's solution, right-variant notebook and blank release through the real batch
    grader (2 workers), graded the first time a test asks for that chapter, so `-k <slug>`
    grades one chapter."""

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
            submit(self.root, "variants", slug, right_variant_notebook(slug, release, source))
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
def test_correct_notebooks_get_full_marks_and_the_blank_release_zero(graded, slug):
    course = graded.course
    results, rows = graded[slug]
    chapter = chapters.load(slug)
    auto = sum(p.points for p in chapter.parts)
    for student in ("solution", "variants"):
        result = results[student]
        assert (result.status, result.score) == ("graded", auto), (student, result.messages)
        assert not result.messages and not result.findings, (student, result.findings)
    blank = results["blank"]
    assert (blank.status, blank.score) == ("graded", 0)
    assert set(blank.messages) == {p.grade_id for p in chapter.parts}
    assert set(rows) == {"solution", "variants", "blank"}
    for student in rows:
        assert (course.feedback / student / slug / f"{slug}.html").is_file()
        nb = nbformat.read(course.autograded / student / slug / f"{slug}.ipynb", 4)
        verdicts = [c for c in nb.cells if _meta(c).get("grade") and c.cell_type == "code"]
        assert all(c.outputs for c in verdicts)
