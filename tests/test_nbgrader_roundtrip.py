"""nbgrader end to end: the release is current and clean, and grading gives the scores we expect.

One temporary course serves every test here (nbgrader costs seconds per notebook): it generates the
release of every assignment, then five made-up students submit chapter 4, nbgrader autogrades them,
writes their feedback and exports the grades. The tests then read what nbgrader wrote. This is
plain nbgrader, the hidden tests running in the student's kernel: the course's own grader
(autograder/engine) is tested in test_engine.py, and the benchmark shows it gives the same scores.

Students (chapter 4's points are read from its source notebook):
- correct: every solution cell filled in from the source notebook, and the written answer;
- untouched: the release as it was handed out;
- wrong: attention_weights takes its softmax in float32 (a common "for stability" habit, without
  the cast back); the hidden checks' float64 cases catch it in each of the part's three graded
  cells, and it costs that part only;
- raises: the SelfAttention cell fails at import time; measure_score_variance raises when called;
- deleted_cell: all correct, but the grade cell attention_weights_tests deleted.

Not here: the checks themselves (tests/test_ch04_self_attention.py) and the batch grader.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from autograder import chapters

from nbgrader_helpers import (
    HIDDEN_TEST_MARKERS,
    REPO,
    SOLUTION_MARKERS,
    assignments,
    cell_by_id,
    delete_cell,
    filled_in,
    make_course,
    nbgrader,
    read_notebook,
    regions,
    replace_in_cell,
    submit,
    tree_digest,
)

# One worker runs them all, so that the module's fixtures (one course) are built once.
pytestmark = pytest.mark.xdist_group("nbgrader")

COURSE_ID = "attention-step-by-step"
CH04 = "ch04_self_attention"
_CHAPTER = chapters.load(CH04)
POINTS = {p.grade_id: _CHAPTER.points()[p.grade_id] for p in _CHAPTER.parts}  # automatic
WRITTEN = "scaling_gradients_answer"  # graded by hand
TOTAL = sum(_CHAPTER.points().values())

# What each student should get for each autograded cell.
EXPECTED = {
    "correct": POINTS,
    "untouched": dict.fromkeys(POINTS, 0),
    # attention_weights is wrong (every one of its cells has float64 cases);
    # scaled_dot_product_attention, built on it, is checked with the reference standing in for it,
    # so the mistake costs one part.
    "wrong": {
        **POINTS,
        "attention_weights_tests": 0,
        "attention_weights_masks_tests": 0,
        "attention_weights_fully_masked_tests": 0,
    },
    "raises": {**POINTS, "self_attention_tests": 0, "score_variance_tests": 0},
    # add_missing_cells puts the deleted grade cell back, hidden tests included, and it is graded.
    "deleted_cell": POINTS,
}
DELETED = "attention_weights_tests"


def make_submissions(course: Path) -> dict[str, object]:
    source = read_notebook(course / "solutions" / CH04 / f"{CH04}.ipynb")
    release = read_notebook(course / "exercises" / CH04 / f"{CH04}.ipynb")
    correct = filled_in(release, source)

    wrong = filled_in(release, source)
    replace_in_cell(
        wrong,
        "attention_weights_solution",
        "weights = torch.softmax(scores, dim=-1)",
        "weights = torch.softmax(scores.float(), dim=-1)",
    )

    raises = filled_in(release, source)
    cell = cell_by_id(raises, "self_attention_solution")
    cell.source = "import attention_helpers  # only on the student's laptop\n\n" + cell.source
    replace_in_cell(
        raises,
        "score_variance_solution",
        "generator = torch.Generator().manual_seed(seed)",
        "generator = torch.Generator().manual_seed(d_ks)",  # raises when called
    )

    deleted = filled_in(release, source)
    delete_cell(deleted, DELETED)

    students = {
        "correct": correct,
        "untouched": release,
        "wrong": wrong,
        "raises": raises,
        "deleted_cell": deleted,
    }
    for student, nb in students.items():
        submit(course, student, CH04, nb)
    return students


# Session scope: under xdist a worker can run another file's tests between two of this file's,
# and pytest would tear a module fixture down and build it again (see tests/conftest.py).
@pytest.fixture(scope="session")
def released(tmp_path_factory) -> Path:
    """A course after generate_assignment of every assignment, as `make exercises` runs it."""
    course = make_course(tmp_path_factory.mktemp("nbgrader"))
    for slug in assignments():
        nbgrader(course, "generate_assignment", slug, "--force")
    return course


@pytest.fixture(scope="session")
def graded(released):
    """The course after autograde, generate_feedback and export of chapter 4's submissions."""
    course = released
    make_submissions(course)
    submitted = course / "grading" / "submitted"
    before = tree_digest(submitted)
    nbgrader(course, "autograde", CH04)
    nbgrader(course, "generate_feedback", CH04)
    nbgrader(course, "export")  # nbgrader_config.py sends it to the grading folder
    assert not (course / "grades.csv").exists(), "grades were exported into the working tree"
    after = tree_digest(submitted)
    with open(course / "grading" / "grades.csv", newline="") as fh:
        # one row per assignment and student: chapter 4's are the ones graded here
        grades = {r["student_id"]: r for r in csv.DictReader(fh) if r["assignment"] == CH04}
    return {"course": course, "before": before, "after": after, "grades": grades}


def cell_grades(course: Path, student: str) -> dict[str, object]:
    """{grade cell id: auto score, manual-grade flag, max score} for a chapter 4 submission."""
    from nbgrader.api import Gradebook

    url = "sqlite:///" + str(course / "grading" / "gradebook.db")
    with Gradebook(url, COURSE_ID) as gb:
        notebook = gb.find_submission_notebook(CH04, CH04, student)
        return {
            g.name: {
                "auto_score": g.auto_score,
                "needs_manual_grade": g.needs_manual_grade,
                "max_score": g.max_score,
            }
            for g in notebook.grades
        }


@pytest.mark.slow
def test_release_matches_committed_exercises(released):
    fresh = tree_digest(released / "exercises")
    committed = tree_digest(REPO / "exercises")
    differ = sorted(p for p in fresh.keys() | committed.keys() if fresh.get(p) != committed.get(p))
    assert not differ, f"exercises/ is stale: run `make exercises` (differs: {differ})"


def test_release_has_no_solutions_hidden_tests_or_model_answers():
    """Nothing from inside the source's markers, and no model answer, reaches the students."""
    for slug in assignments():
        source = read_notebook(REPO / "solutions" / slug / f"{slug}.ipynb")
        release_path = REPO / "exercises" / slug / f"{slug}.ipynb"
        release = read_notebook(release_path)
        text = release_path.read_text()
        released_lines = {
            line.strip() for cell in release.cells for line in cell.source.split("\n")
        }
        for marker in (*SOLUTION_MARKERS, *HIDDEN_TEST_MARKERS, "BEGIN MARK SCHEME", "autograder"):
            assert marker not in text, f"{release_path.name} contains {marker!r}"
        for cell in source.cells:
            secret = [
                *regions(cell.source, SOLUTION_MARKERS),
                *regions(cell.source, HIDDEN_TEST_MARKERS),
            ]
            nbgrader_meta = cell.metadata.get("nbgrader", {})
            if nbgrader_meta.get("solution") and not any(
                m in cell.source for m in SOLUTION_MARKERS
            ):
                secret += cell.source.split("\n")  # a whole-cell answer, like the written one
            # Short lines ("else:", "return out") may honestly appear elsewhere too.
            leaked = [
                s for s in (x.strip() for x in secret) if len(s) >= 15 and s in released_lines
            ]
            assert not leaked, (
                f"{release_path.name}: text from the source's solutions leaked: {leaked}"
            )
        for cell in release.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, (
                    f"{release_path.name}: cell {cell.id} has outputs"
                )


@pytest.mark.slow
def test_scores_in_exported_csv(graded):
    grades = graded["grades"]
    assert set(grades) == set(EXPECTED)
    for student, expected in EXPECTED.items():
        row = grades[student]
        assert float(row["max_score"]) == TOTAL, row
        assert float(row["score"]) == sum(expected.values()), f"{student}: {row}"


@pytest.mark.slow
def test_each_grade_cell(graded):
    for student, expected in EXPECTED.items():
        cells = cell_grades(graded["course"], student)
        got = {name: cells[name]["auto_score"] for name in POINTS}
        assert got == expected, f"{student}: {got}"
        for name in POINTS:
            assert cells[name]["needs_manual_grade"] is False, f"{student}: {name} {cells[name]}"


@pytest.mark.slow
def test_written_answer_is_left_for_manual_grading(graded):
    answered = cell_grades(graded["course"], "correct")[WRITTEN]
    points = _CHAPTER.points()[WRITTEN]
    assert answered == {"auto_score": None, "needs_manual_grade": True, "max_score": points}
    # An untouched answer cell scores 0 with no manual grading needed: nbgrader's "No response".
    blank = cell_grades(graded["course"], "untouched")[WRITTEN]
    assert blank == {"auto_score": 0.0, "needs_manual_grade": False, "max_score": points}


@pytest.mark.slow
def test_deleted_grade_cell_is_restored_and_graded(graded):
    path = graded["course"] / "grading" / "autograded" / "deleted_cell" / CH04 / f"{CH04}.ipynb"
    nb = read_notebook(path)
    ids = [cell.metadata.get("nbgrader", {}).get("grade_id") for cell in nb.cells]
    # Put back where it was, right after its solution cell, with its hidden tests, and it ran.
    assert ids.index(DELETED) == ids.index("attention_weights_solution") + 1
    restored = cell_by_id(nb, DELETED)
    assert restored.source.startswith(f"# This cell (id:{DELETED}) was missing")
    assert HIDDEN_TEST_MARKERS[0] in restored.source
    assert not [o for o in restored.outputs if o.output_type == "error"], restored.outputs


@pytest.mark.slow
def test_submissions_are_not_modified(graded):
    assert graded["before"] == graded["after"]


@pytest.mark.slow
def test_feedback_shows_failures_but_not_hidden_tests(graded):
    feedback = graded["course"] / "grading" / "feedback"
    pages = {p.parts[-3]: p.read_text() for p in feedback.glob(f"*/{CH04}/{CH04}.html")}
    assert set(pages) == set(EXPECTED)
    for student, html in pages.items():
        for hidden in (
            "BEGIN HIDDEN TESTS",
            "check_attention_scores(",
            "check_attention_weights(",
            "autograder.chapters",
            "_random_mask",
        ):
            assert hidden not in html, f"{student}'s feedback shows hidden test text {hidden!r}"
    # The failing check's message (the property that failed) is what the student needs to see.
    assert "the result is torch.float32 but the inputs were torch.float64" in pages["wrong"]
    assert "CheckFailed" in pages["wrong"]
    assert "ModuleNotFoundError" in pages["raises"]
    assert "NotImplementedError" in pages["untouched"]
