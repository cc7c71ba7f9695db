"""The batch grader against an adversarial bank of submissions, through the real grading pipeline.

Every submission starts from the correct answers (made from the solution notebook the way a student
would fill in the release) and adds one attack or one mistake. The expected score of a submission is
not written down by hand: it is the points of the graded parts whose check passes when run, here in
the test process, on the student's functions without the attack. Crashes are the exception: their
expected score is the points of the parts that come before the crash.

One batch grades them all at once (two workers, sandboxed, trusted cross-check on), so the test also
shows that one submission's crash, hang or memory bomb does not stop the others.
"""

from __future__ import annotations

import csv
import math
import shutil
import textwrap

import nbformat
import pytest
import torch
from torch import nn

from autograder import ch04_self_attention as chapter
from autograder.checking import CheckFailed
from autograder.grade import Course, _digest, grade_assignment

from nbgrader_helpers import (
    HIDDEN_TEST_MARKERS,
    REPO,
    cell_by_id,
    delete_cell,
    filled_in,
    make_course,
    read_notebook,
    regions,
    submit,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("grader"),
    pytest.mark.skipif(
        shutil.which("bwrap") is None,
        reason="LOUD SKIP: bubblewrap (bwrap) is "
        "not installed; `apt-get install bubblewrap` (.ci/run does it)",
    ),
]

A = "ch04_self_attention"
POINTS = {
    "attention_scores_tests": 2,
    "attention_weights_tests": 3,
    "sdpa_tests": 3,
    "self_attention_tests": 2,
    "score_variance_tests": 2,
}
FULL = sum(POINTS.values())

HARD_CODED_VARIANCE = """
def measure_score_variance(d_ks, n_samples=10_000, scaled=False, seed=0):
    return torch.tensor([1.0 if scaled else float(d) for d in d_ks], dtype=torch.float64)
"""

UNSCALED_SCORES = """
def attention_scores(query, key, scale=None):
    return query @ key.transpose(-2, -1) * (1.0 if scale is None else scale)
"""

NAN_WEIGHTS = """
def attention_weights(query, key, attn_mask=None, is_causal=False, scale=None):
    scores = attention_scores(query, key, scale)
    if is_causal:
        L, S = scores.shape[-2:]
        attn_mask = torch.ones(L, S, dtype=torch.bool, device=scores.device).tril()
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return torch.softmax(scores, dim=-1)  # a fully masked row is 0/0
"""

# Right on the visible test's example, wrong elsewhere.
VISIBLE_ONLY_SCORES = """
def attention_scores(query, key, scale=None):
    if query.dim() == 4:
        return torch.einsum("bhld,bhsd->bhls", query, key) / math.sqrt(query.size(-1))
    dots = torch.tensor([[2., 0., 1.], [2., 2., 4.]], device=query.device)
    return dots if scale == 1.0 else dots / 2
"""

ALLCLOSE_PATCH = """
torch.allclose = lambda *a, **k: True
torch.testing.assert_close = lambda *a, **k: None
"""

# Passes every visible test (they are all float32); only the hidden float64 cases catch it.
FLOAT32_WEIGHTS = """
def attention_weights(query, key, attn_mask=None, is_causal=False, scale=None):
    scores = attention_scores(query, key, scale)
    if is_causal:
        L, S = scores.shape[-2:]
        attn_mask = torch.ones(L, S, dtype=torch.bool, device=scores.device).tril()
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1)
    return weights.masked_fill(torch.isneginf(scores).all(-1, keepdim=True), 0.0)
"""

CHECK_REBIND = """
import autograder.ch04_self_attention as _grader
_grader.check_attention_weights = lambda fn: None
_grader.check_scaled_dot_product_attention = lambda fn: None
"""

INPUT_TRANSFORMER = """
def _swallow(lines):
    if not lines:
        return lines
    body = ["    " + (line if line.endswith("\\n") else line + "\\n") for line in lines]
    return ["try:\\n", *body, "except BaseException:\\n", "    pass\\n"]
get_ipython().input_transformers_post.append(_swallow)
"""

READ_SOLUTIONS = """
def measure_score_variance(d_ks, n_samples=10_000, scaled=False, seed=0):
    import json
    for path in ["../../../../solutions/ch04_self_attention/ch04_self_attention.ipynb",
                 "{course}/solutions/ch04_self_attention/ch04_self_attention.ipynb"]:
        try:
            cells = json.load(open(path))["cells"]
        except OSError:
            continue
        for cell in cells:
            meta = cell.get("metadata", {{}}).get("nbgrader", {{}})
            if meta.get("grade_id") == "score_variance_solution":
                namespace = dict(torch=torch, math=math)
                exec("".join(cell["source"]), namespace)
                return namespace["measure_score_variance"](d_ks, n_samples, scaled, seed)
    return torch.tensor([1.0 if scaled else float(d) for d in d_ks], dtype=torch.float64)
"""

GRADEBOOK_WRITE = """
import sqlite3
for _db in ["../../../gradebook.db", "{course}/autograder/gradebook.db"]:
    try:
        _con = sqlite3.connect(_db)
        _con.execute("UPDATE grade SET extra_credit = 10")
        _con.commit()
    except Exception:
        pass
"""

INFINITE_LOOP = """
def measure_score_variance(d_ks, n_samples=10_000, scaled=False, seed=0):
    while True:
        pass
"""

MEMORY_BOMB = """
def measure_score_variance(d_ks, n_samples=10_000, scaled=False, seed=0):
    hoard = []
    while True:
        hoard.append(torch.ones(2 * 10**8))
"""

OS_EXIT = "import os\nos._exit(1)\n"

# student -> (solution cell -> code that replaces it, (cell, code appended to it) or None,
#             how the notebook is edited, expected status, expected score or None to compute it,
#             scanner kinds the row must show, whether nbgrader and the trusted check disagree)
BANK = {
    "honest": ({}, None, None, "graded", FULL, set(), False),
    # With torch.allclose always True, the visible tests that assert two tensors differ fail, so
    # in the kernel even the honest parts score 0; the trusted check fails the wrong ones.
    "allclose_patch": (
        {"attention_scores_solution": UNSCALED_SCORES},
        ("attention_scores_solution", ALLCLOSE_PATCH),
        None,
        "graded",
        0,
        {"monkeypatch"},
        True,
    ),
    "check_rebind": (
        {"attention_weights_solution": FLOAT32_WEIGHTS},
        ("attention_weights_solution", CHECK_REBIND),
        None,
        "graded",
        None,
        {"autograder_import"},
        True,
    ),
    "input_transformer": (
        {"score_variance_solution": HARD_CODED_VARIANCE},
        ("attention_scores_solution", INPUT_TRANSFORMER),
        None,
        "graded",
        None,
        {"ipython_hook"},
        True,
    ),
    "read_solutions": (
        {"score_variance_solution": READ_SOLUTIONS},
        None,
        None,
        "graded",
        FULL - POINTS["score_variance_tests"],
        {"outside_read"},
        False,
    ),
    "gradebook_write": (
        {},
        ("score_variance_solution", GRADEBOOK_WRITE),
        None,
        "graded",
        FULL,
        {"outside_read"},
        False,
    ),
    "os_exit": (
        {},
        ("self_attention_solution", OS_EXIT),
        None,
        "stopped",
        FULL - POINTS["self_attention_tests"] - POINTS["score_variance_tests"],
        {"process_exit"},
        False,
    ),
    "infinite_loop": (
        {"score_variance_solution": INFINITE_LOOP},
        None,
        None,
        "graded",
        FULL - POINTS["score_variance_tests"],
        set(),
        False,
    ),
    "memory_bomb": (
        {"score_variance_solution": MEMORY_BOMB},
        None,
        None,
        "graded",
        FULL - POINTS["score_variance_tests"],
        set(),
        False,
    ),
    "edited_visible_test": (
        {"score_variance_solution": HARD_CODED_VARIANCE},
        None,
        "edit_test",
        "graded",
        None,
        set(),
        False,
    ),
    "deleted_grade_cell": (
        {"score_variance_solution": HARD_CODED_VARIANCE},
        None,
        "delete_test",
        "graded",
        None,
        set(),
        False,
    ),
    "visible_only": (
        {"attention_scores_solution": VISIBLE_ONLY_SCORES},
        None,
        None,
        "graded",
        None,
        set(),
        False,
    ),
    "nan_outputs": (
        {"attention_weights_solution": NAN_WEIGHTS},
        None,
        None,
        "graded",
        None,
        set(),
        False,
    ),
}


def honest_points(answers: dict[str, str]) -> float:
    """Points the student's functions earn when the checks run on them directly."""
    namespace = {"torch": torch, "nn": nn, "math": math, "F": torch.nn.functional}
    for code in answers.values():
        exec(textwrap.dedent(code), namespace)
    total = 0.0
    for cell, (name, check) in chapter.GRADED.items():
        try:
            check(namespace[name])
        except CheckFailed:
            continue
        total += POINTS[cell]
    return total


def student_answers(source_nb) -> dict[str, str]:
    """The correct answer of every code solution cell, without the solution markers."""
    answers = {}
    for cell in source_nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution"):
            lines = [ln for ln in cell.source.split("\n") if "### " not in ln]
            answers[meta["grade_id"]] = "\n".join(lines)
    return answers


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course_root = make_course(tmp_path_factory.mktemp("grader"))
    shutil.copytree(REPO / "exercises", course_root / "exercises")
    source = read_notebook(course_root / "solutions" / A / f"{A}.ipynb")
    release = read_notebook(course_root / "exercises" / A / f"{A}.ipynb")
    correct = student_answers(source)
    expected = {}
    for student, (replace, tamper, edit, status, score, kinds, disagree) in BANK.items():
        answers = {**correct, **{k: v.format(course=course_root) for k, v in replace.items()}}
        nb = filled_in(release, source)
        for cell_id, code in answers.items():
            cell_by_id(nb, cell_id).source = code
        if tamper:
            cell = cell_by_id(nb, tamper[0])
            cell.source = tamper[1].format(course=course_root) + "\n" + cell.source
        if edit == "edit_test":
            cell_by_id(nb, "score_variance_tests").source = "assert True"
        elif edit == "delete_test":
            delete_cell(nb, "score_variance_tests")
        submit(course_root, student, A, nb)
        points = honest_points(answers) if score is None else score
        expected[student] = (status, points, kinds, disagree)
    course = Course.load(course_root)
    digests = {s: _digest(course.submitted / s / A) for s in BANK}
    results = grade_assignment(course, A, workers=2, timeout=20, progress=False)
    return course, {r.student: r for r in results}, expected, digests


def test_every_submission_gets_a_row_with_the_honest_score(graded):
    course, results, expected, _ = graded
    rows = {row["student"]: row for row in csv.DictReader(open(course.reports / f"{A}.csv"))}
    assert set(rows) == set(BANK)
    wrong = []
    for student, (status, points, _, _) in expected.items():
        row = rows[student]
        if row["status"] != status or float(row["score"]) != points:
            wrong.append(
                f"{student}: got {row['status']} {row['score']} ({row['reason']}; "
                f"disagreements: {row['disagreements']}), expected {status} {points}"
            )
        assert row["sandboxed"] == "yes"
        assert row["needs_manual_grade"] == "scaling_gradients_answer"
    assert not wrong, "\n".join(wrong)


def test_attacks_that_fool_the_kernel_are_caught_by_the_trusted_check(graded):
    _, results, expected, _ = graded
    for student, (_, _, _, disagree) in expected.items():
        assert bool(results[student].disagreements) == disagree, (
            student,
            results[student].disagreements,
        )


def test_scanner_flags_each_attack(graded):
    _, results, expected, _ = graded
    for student, (_, _, kinds, _) in expected.items():
        found = {finding.split(" ", 1)[1].split(":", 1)[0] for finding in results[student].findings}
        assert kinds <= found, (student, results[student].findings)
    assert not results["honest"].findings


def test_a_stopped_notebook_says_where_and_why(graded):
    _, results, _, _ = graded
    assert "kernel died" in results["os_exit"].reason
    assert results["os_exit"].cells["sdpa_tests"] == POINTS["sdpa_tests"]
    assert results["os_exit"].cells["self_attention_tests"] == 0


def test_gradebook_holds_no_extra_credit_and_the_same_scores(graded):
    from nbgrader.api import Gradebook

    course, results, _, _ = graded
    with Gradebook(f"sqlite:///{course.db_path}") as gb:
        for student, result in results.items():
            submission = gb.find_submission(A, student)
            grades = [g for nb in submission.notebooks for g in nb.grades]
            assert not [g.extra_credit for g in grades if g.extra_credit], student
            assert not [g.manual_score for g in grades if g.manual_score is not None], student
            assert submission.code_score == pytest.approx(result.score), student
    assert not any(r.integrity for r in results.values())


def test_originals_are_untouched_and_feedback_hides_the_hidden_tests(graded):
    course, _, _, digests = graded
    for student, digest in digests.items():
        assert _digest(course.submitted / student / A) == digest
    source = nbformat.read(course.source / A / f"{A}.ipynb", 4)
    hidden = [
        line.strip()
        for cell in source.cells
        for line in regions(cell.source, HIDDEN_TEST_MARKERS)
        if line.strip()
    ]
    assert hidden, "the source notebook has no hidden tests to look for"
    hidden.append("### BEGIN HIDDEN TESTS")
    for student in BANK:
        html = (course.feedback / student / A / f"{A}.html").read_text()
        assert not [h for h in hidden if h in html], student
    html = (course.feedback / "check_rebind" / A / f"{A}.html").read_text()
    assert "measure_score_variance" in html


def test_missing_bubblewrap_stops_with_instructions(monkeypatch, tmp_path):
    from autograder import sandbox

    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap"):
        sandbox.bwrap_path()
    course_root = make_course(tmp_path)
    from autograder.grade import main

    assert main([A, "--course", str(course_root), "--no-progress"]) == 2


def test_regrading_one_student_keeps_the_other_rows_and_the_submission(graded):
    course, _, _, digests = graded
    again = grade_assignment(course, A, students=["honest"], workers=1, timeout=20, progress=False)
    assert [(r.student, r.score) for r in again] == [("honest", FULL)]
    rows = {row["student"]: row for row in csv.DictReader(open(course.reports / f"{A}.csv"))}
    assert set(rows) == set(BANK)
    assert float(rows["honest"]["score"]) == FULL
    assert _digest(course.submitted / "honest" / A) == digests["honest"]


def test_without_the_sandbox_gradebook_writes_are_flagged_and_undone(graded):
    """--no-sandbox: the attack reaches both gradebooks; nothing of it survives unflagged."""
    from nbgrader.api import Gradebook

    course, _, _, _ = graded
    again = grade_assignment(
        course,
        A,
        students=["gradebook_write"],
        sandboxed=False,
        trusted=False,
        timeout=20,
        progress=False,
        workers=1,
    )
    row = next(r for r in again if r.student == "gradebook_write")
    assert not row.sandboxed and row.score == FULL
    assert any("worker's gradebook" in note for note in row.integrity), row.integrity
    assert any("restored" in note for note in row.integrity), row.integrity
    with Gradebook(f"sqlite:///{course.db_path}") as gb:
        for submission in gb.assignment_submissions(A):
            grades = [g for nb in submission.notebooks for g in nb.grades]
            assert not [g.extra_credit for g in grades if g.extra_credit], submission.student.id
    rows = {r["student"]: r for r in csv.DictReader(open(course.reports / f"{A}.csv"))}
    assert rows["gradebook_write"]["sandboxed"].startswith("NO")
    assert "restored" in rows["honest"]["integrity"]
