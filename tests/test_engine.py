"""The grading engine, as an attacker and an instructor would try it, through the real layout.

The course here is a copy of this repository's tracked files, graded the way `make autograde`
grades it: ``python -m autograder.engine.grade`` run in the course, its package and its grading
folder (grading/, beside the code) inside it. Every submission starts from the correct answers; the
honest ones carry a secret, and the attacks look for course material, for other students' secrets,
for the gradebook, write where they should not, leave processes behind, or tamper with their own
run. A submission's expected score is never written down: it is the points of the parts whose check
passes here, in the test process, on the same answers without the attack.

Then the engine's other promises: a fixture chapter with every API kind is judged right, a Dask
cluster gives the same scores as local workers, and a missing bubblewrap stops with instructions.
The heavy runs happen once, here, for chapter 4 and the fixture; every chapter's own end-to-end
run is in test_chapter_contract.py.
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid

import nbformat
import pytest
import torch
from torch import nn

from autograder import chapters
from autograder.engine.grade import Course, _digest, grade_assignment
from autograder.toolkit import CheckFailed

import engine_fixture
from nbgrader_helpers import (
    HIDDEN_TEST_MARKERS,
    REPO,
    cell_by_id,
    delete_cell,
    filled_in,
    read_notebook,
    regions,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("engine"),
    pytest.mark.skipif(
        shutil.which("bwrap") is None,
        reason="LOUD SKIP: bubblewrap (bwrap) is not installed; `apt-get install bubblewrap` "
        "(.ci/run does it)",
    ),
]

A = "ch04_self_attention"
CHAPTER = chapters.load(A)
POINTS = {p.grade_id: CHAPTER.points()[p.grade_id] for p in CHAPTER.parts}
FULL = sum(POINTS.values())
SECRET = "SECRET-" + uuid.uuid4().hex  # in every honest submission; no one else may see it
LINGER = "LINGER-" + uuid.uuid4().hex  # in the command line of a process left running

# Looks everywhere the sandbox might show for course material and other students' work, and
# prints what it found; it also tries every way out that the issue names.
SNOOP = r"""
import os, sys, glob
_hits, _seen = [], set()
_names = ("submitted", "autograded", "feedback", "solutions", "grading", "gradebook.db",
          "autograder", "reports", "exercises", "nbgrader_config.py")
def _look(path, depth=0):
    path = os.path.realpath(path)
    if path in _seen or depth > 4 or path.startswith(("/proc", "/sys", "/dev", "/usr", "/etc")):
        return
    if any(path.startswith(os.path.realpath(p)) for p in (sys.prefix, sys.base_prefix) if p):
        return
    _seen.add(path)
    try:
        entries = os.listdir(path)
    except OSError:
        return
    for name in entries:
        full = os.path.join(path, name)
        if name in _names or name.endswith((".ipynb", ".db", ".csv")):
            _hits.append(full)
        if os.path.isdir(full) and not os.path.islink(full):
            _look(full, depth + 1)
_candidates = {"/", os.getcwd(), os.path.expanduser("~"), "/tmp", "/var/tmp"}
for _p in [*sys.path, *os.environ.values(), sys.prefix, sys.base_prefix]:
    while _p and _p != "/":
        _candidates.add(_p)
        _p = os.path.dirname(_p)
for _f in ["/proc/self/mountinfo", *glob.glob("/proc/*/cmdline"), *glob.glob("/proc/*/environ")]:
    try:
        _text = open(_f, "rb").read().decode("utf-8", "replace")
    except OSError:
        continue
    for _word in _text.replace("\0", " ").split():
        while _word.startswith("/") and _word != "/":
            _candidates.add(_word)
            _word = os.path.dirname(_word)
for _c in sorted(_candidates):
    _look(_c)
try:
    import autograder
    _hits.append("import autograder: " + str(autograder.__file__))
except ImportError:
    pass
print("SNOOP-HITS", _hits)
"""

# Leaves files and a process behind, and tries to write where the submission lies.
PLANT = f'''
import os, subprocess, sys
for _d in ("/tmp", "/sandbox", "/dev/shm", "/var/tmp"):
    try:
        open(os.path.join(_d, "planted-{LINGER}"), "w").write("{LINGER}")
    except OSError:
        pass
for _up in ("..", "../..", "../../..", "/sandbox/..", "/"):
    try:
        open(os.path.join(_up, "x-{LINGER}.ipynb"), "w").write("overwritten")
    except OSError:
        pass
subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(600)", "{LINGER}"],
    start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
'''

# Looks for what an earlier student left behind.
READ_LEFTOVERS = f'''
import os
_left = [d + "/" + n for d in ("/tmp", "/sandbox", "/dev/shm", "/var/tmp") if os.path.isdir(d)
         for n in os.listdir(d) if "{LINGER}" in n]
_procs = []
for _pid in os.listdir("/proc"):
    try:
        if "{LINGER}" in open(f"/proc/{{_pid}}/cmdline").read():
            _procs.append(_pid)
    except OSError:
        pass
print("LEFTOVERS", _left, _procs)
'''

ALLCLOSE_PATCH = """
torch.allclose = lambda *a, **k: True
torch.testing.assert_close = lambda *a, **k: None
"""

CHECK_REBIND = """
import autograder.chapters.ch04_self_attention as _grader
_grader.check_attention_weights = lambda fn: None
"""

INPUT_TRANSFORMER = """
def _swallow(lines):
    if not lines:
        return lines
    body = ["    " + (line if line.endswith("\\n") else line + "\\n") for line in lines]
    return ["try:\\n", *body, "except BaseException:\\n", "    pass\\n"]
get_ipython().input_transformers_post.append(_swallow)
"""

# Every folder above the working directory, and the usual places, for the gradebook.
_ABOVE = """
import os
_up = [os.getcwd()]
while _up[-1] != "/":
    _up.append(os.path.dirname(_up[-1]))
_places = [p + s for p in _up for s in ("", "/grading", "/autograder", "/course/grading")]
"""

GRADEBOOK_WRITE = (
    _ABOVE
    + """
import sqlite3
for _db in [p + "/gradebook.db" for p in _places]:
    try:
        _con = sqlite3.connect(_db)
        _con.execute("UPDATE grade SET extra_credit = 10")
        _con.commit()
    except Exception:
        pass
"""
)

HANGING_CELL = "while True:\n    pass\n"
OS_EXIT = "import os\nos._exit(1)\n"

UNSCALED_SCORES = """
def attention_scores(query, key, scale=None):
    return query @ key.transpose(-2, -1) * (1.0 if scale is None else scale)
"""

KEY_T_SCORES = """
def attention_scores(query, key, scale=None):
    return query @ key.T * (query.size(-1) ** -0.5 if scale is None else scale)
"""

FLOAT32_WEIGHTS = """
def attention_weights(query, key, attn_mask=None, is_causal=False, scale=None):
    scores = attention_scores(query, key, scale)
    if is_causal:
        if attn_mask is not None:
            raise ValueError("not both")
        L, S = scores.shape[-2:]
        attn_mask = torch.ones(L, S, dtype=torch.bool, device=scores.device).tril()
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    empty = torch.isneginf(scores).all(-1, keepdim=True)
    weights = torch.softmax(scores.masked_fill(empty, 0.0).float(), dim=-1)
    return weights.masked_fill(empty, 0.0)
"""

HARD_CODED_VARIANCE = """
def measure_score_variance(d_ks, n_samples=10_000, scaled=False, seed=0):
    return torch.tensor([1.0 if scaled else float(d) for d in d_ks], dtype=torch.float64)
"""

READ_SOLUTIONS = (
    _ABOVE
    + """
def measure_score_variance(d_ks, n_samples=10_000, scaled=False, seed=0):
    import json
    for place in _places:
        path = place + "/solutions/ch04_self_attention/ch04_self_attention.ipynb"
        if not os.path.exists(path):
            continue
        for cell in json.load(open(path))["cells"]:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("grade_id") == "score_variance_solution":
                namespace = dict(torch=torch, math=math)
                exec("".join(cell["source"]), namespace)
                return namespace["measure_score_variance"](d_ks, n_samples, scaled, seed)
    return torch.tensor([1.0 if scaled else float(d) for d in d_ks], dtype=torch.float64)
"""
)

INFINITE_LOOP = """
def measure_score_variance(d_ks, n_samples=10_000, scaled=False, seed=0):
    while True:
        pass
"""

# Catches the grader's time limit and goes on: only the hard kill stops it.
STUBBORN_LOOP = """
def measure_score_variance(d_ks, n_samples=10_000, scaled=False, seed=0):
    while True:
        try:
            while True:
                pass
        except BaseException:
            pass
"""

MEMORY_BOMB = """
def measure_score_variance(d_ks, n_samples=10_000, scaled=False, seed=0):
    hoard = []
    while True:
        hoard.append(torch.ones(2 * 10**8))
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

# student -> (solution cell -> its new code, [(code of a cell the student adds, before which
# cell)], how the notebook is edited, names that count as undefined for the expected score (the
# attack removes them, or calling them would never return), scanner kinds the row must show:
# the sandbox and the judge make patching, hooks, exits and outside reads moot, so the scanner
# flags only what points at the grader)
BANK = {
    "alice": ({}, [], None, (), set()),
    "bob": ({}, [], None, (), set()),
    "snoop": ({}, [(SNOOP, "attention_scores_solution")], None, (), {"autograder_import"}),
    "allclose_patch": (
        {"attention_scores_solution": UNSCALED_SCORES},
        [(ALLCLOSE_PATCH, "attention_scores_solution")],
        None,
        (),
        set(),
    ),
    "check_rebind": (
        {"attention_weights_solution": FLOAT32_WEIGHTS},
        [(CHECK_REBIND, "attention_weights_solution")],
        None,
        (),
        {"autograder_import"},
    ),
    "input_transformer": (
        {"score_variance_solution": HARD_CODED_VARIANCE},
        [(INPUT_TRANSFORMER, "attention_scores_solution")],
        None,
        (),
        set(),
    ),
    # Here, in the repository, it would find the solutions; its honest score is without them.
    "read_solutions": (
        {"score_variance_solution": READ_SOLUTIONS},
        [],
        None,
        ("measure_score_variance",),
        set(),
    ),
    "gradebook_write": ({}, [(GRADEBOOK_WRITE, "score_variance_solution")], None, (), set()),
    "os_exit": (
        {},
        [],
        "exit_in_self_attention",
        ("SelfAttention",),
        set(),
    ),
    "hanging_cell": ({}, [(HANGING_CELL, "sdpa_solution")], None, (), set()),
    # These never return: here, their part counts as failed without running them.
    "infinite_loop": (
        {"score_variance_solution": INFINITE_LOOP},
        [],
        None,
        ("measure_score_variance",),
        set(),
    ),
    "stubborn_loop": (
        {"score_variance_solution": STUBBORN_LOOP},
        [],
        None,
        ("measure_score_variance",),
        set(),
    ),
    "memory_bomb": (
        {"score_variance_solution": MEMORY_BOMB},
        [],
        None,
        ("measure_score_variance",),
        set(),
    ),
    "edited_visible_test": (
        {"score_variance_solution": HARD_CODED_VARIANCE},
        [],
        "edit_tests",
        (),
        set(),
    ),
    "deleted_grade_cell": (
        {"score_variance_solution": HARD_CODED_VARIANCE},
        [],
        "delete_grade_cell",
        (),
        set(),
    ),
    "key_t": ({"attention_scores_solution": KEY_T_SCORES}, [], None, (), set()),
    "nan_weights": ({"attention_weights_solution": NAN_WEIGHTS}, [], None, (), set()),
}


def student_answers(source_nb) -> dict[str, str]:
    """The correct answer of every code solution cell, without the solution markers."""
    answers = {}
    for cell in source_nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution"):
            lines = [ln for ln in cell.source.split("\n") if "### " not in ln]
            answers[meta["grade_id"]] = "\n".join(lines)
    return answers


def honest_points(answers: dict[str, str], removed: tuple[str, ...]) -> float:
    """Points the answers earn when the checks run on them here, without any attack."""
    namespace = {"torch": torch, "nn": nn, "math": math, "F": torch.nn.functional}
    namespace["__name__"] = "__main__"
    for code in answers.values():
        exec(textwrap.dedent(code), namespace)
    for name in removed:
        namespace.pop(name)
    total = 0.0
    for part in CHAPTER.parts:
        try:
            part.check(namespace[part.name])
        except (CheckFailed, KeyError):
            continue
        total += POINTS[part.grade_id]
    return total


def _new_cell(code: str):
    cell = nbformat.v4.new_code_cell(code)
    cell.metadata = {}
    return cell


def _copy_repository(dest):
    """The repository's tracked files (and the fresh release), as a course laid out for real."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _grade(course_root, *args: str) -> subprocess.CompletedProcess:
    """What `make autograde` runs, in the course, with the course's own package."""
    env = {k: v for k, v in os.environ.items() if k != "ATTENTION_GRADING_DIR"}
    env["PYTHONPATH"] = str(course_root)
    return subprocess.run(
        [sys.executable, "-m", "autograder.engine.grade", A, "--no-progress", *args],
        cwd=course_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


# Session scope: under xdist a worker can run another file's tests between two of this file's,
# and pytest would tear a module fixture down and build it again (see tests/conftest.py).
@pytest.fixture(scope="session")
def graded(tmp_path_factory):
    course_root = _copy_repository(tmp_path_factory.mktemp("layout") / "course")
    source = read_notebook(course_root / "solutions" / A / f"{A}.ipynb")
    release = read_notebook(course_root / "exercises" / A / f"{A}.ipynb")
    correct = student_answers(source)
    submitted = course_root / "grading" / "submitted"
    expected = {}
    for student, (replace, added, edit, removed, _) in BANK.items():
        answers = {**correct, **replace}
        nb = filled_in(release, source)
        for cell_id, code in answers.items():
            cell_by_id(nb, cell_id).source = code
        if student in ("alice", "bob"):
            cell = cell_by_id(nb, "attention_scores_solution")
            cell.source = f"# {SECRET}-{student}\n" + cell.source
        for code, before in added:
            nb.cells.insert(nb.cells.index(cell_by_id(nb, before)), _new_cell(code))
        if edit == "edit_tests":
            cell_by_id(nb, "score_variance_visible_tests").source = "assert True"
            cell_by_id(nb, "score_variance_tests").source = "assert True"
        elif edit == "delete_grade_cell":
            delete_cell(nb, "score_variance_tests")
        elif edit == "exit_in_self_attention":
            cell = cell_by_id(nb, "self_attention_solution")
            cell.source = OS_EXIT + cell.source
        path = submitted / student / A / f"{A}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)
        expected[student] = honest_points(answers, removed)
    # The planter and the reader go through one worker, one after the other.
    for student, code in (("leftovers_1_plant", PLANT), ("leftovers_2_read", READ_LEFTOVERS)):
        nb = filled_in(release, source)
        nb.cells.insert(1, _new_cell(code))
        path = submitted / student / A / f"{A}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)
    digests = {s.name: _digest(s / A) for s in submitted.iterdir()}

    main = _grade(course_root, "--workers", "2", "--timeout", "20")
    assert main.returncode == 0, main.stderr[-3000:]
    rows = {
        r["student"]: r for r in csv.DictReader(open(course_root / "grading/reports" / f"{A}.csv"))
    }
    leftovers = _grade(
        course_root,
        "--workers",
        "1",
        "--student",
        "leftovers_1_plant",
        "--student",
        "leftovers_2_read",
    )
    assert leftovers.returncode == 0, leftovers.stderr[-3000:]
    return Course.load(course_root), rows, expected, digests


def _outputs(course, student) -> str:
    nb = nbformat.read(course.autograded / student / A / f"{A}.ipynb", 4)
    return json.dumps([c.get("outputs", []) for c in nb.cells])


def test_every_submission_gets_a_row_with_the_honest_score(graded):
    course, rows, expected, _ = graded
    assert set(expected) <= set(rows)
    wrong = []
    for student, points in expected.items():
        row = rows[student]
        if row["status"] != "graded" or float(row["score"]) != points:
            wrong.append(
                f"{student}: {row['status']} {row['score']} ({row['reason']}), expected {points}"
            )
        assert row["sandboxed"] == "yes"
    assert not wrong, "\n".join(wrong)
    assert float(rows["alice"]["score"]) == FULL


def test_a_key_t_bug_in_part_1_costs_part_1_only(graded):
    _, rows, _, _ = graded
    part_1 = [p.grade_id for p in CHAPTER.parts_of("attention_scores")]
    assert float(rows["key_t"]["score"]) == FULL - sum(POINTS[g] for g in part_1)
    assert all(rows["key_t"][g] == "0" for g in part_1)


def test_the_sandbox_shows_nothing_of_the_course_or_of_other_students(graded):
    course, _, _, _ = graded
    out = _outputs(course, "snoop")
    assert "SNOOP-HITS []" in out, out[:3000]
    for student in BANK:
        if student not in ("alice", "bob"):
            assert SECRET not in _outputs(course, student), student
    assert "extra_credit" not in out


def test_nothing_is_left_behind_for_the_next_student_or_on_the_host(graded):
    course, rows, _, _ = graded
    assert "LEFTOVERS [] []" in _outputs(course, "leftovers_2_read")
    assert float(rows["leftovers_1_plant"]["score"]) == FULL
    time.sleep(1)
    for pid in os.listdir("/proc"):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        assert LINGER.encode() not in cmdline, f"process {pid} outlived its grading"
    assert not list((course.root).rglob(f"x-{LINGER}.ipynb"))


def test_the_originals_are_untouched_and_the_gradebook_holds_no_extra_credit(graded):
    from nbgrader.api import Gradebook

    course, rows, _, digests = graded
    for student, digest in digests.items():
        assert _digest(course.submitted / student / A) == digest, student
    with Gradebook(f"sqlite:///{course.db_path}") as gb:
        for submission in gb.assignment_submissions(A):
            grades = [g for nb in submission.notebooks for g in nb.grades]
            assert not [g.extra_credit for g in grades if g.extra_credit]
            assert submission.code_score == pytest.approx(
                float(rows[submission.student.id]["score"])
            )


def test_a_crash_a_hang_or_a_bomb_costs_only_where_it_is(graded):
    course, rows, _, _ = graded
    assert "skipped" in rows["os_exit"]["reason"] and "ended" in rows["os_exit"]["reason"]
    assert rows["os_exit"]["self_attention_tests"] == "0"
    assert rows["os_exit"]["score_variance_tests"] == str(int(POINTS["score_variance_tests"]))
    out = _outputs(course, "hanging_cell")
    assert "time limit" in out
    for student in ("infinite_loop", "stubborn_loop", "memory_bomb"):
        assert rows[student]["score_variance_tests"] == "0", student
        assert rows[student]["self_attention_tests"] == str(int(POINTS["self_attention_tests"]))


def test_the_scanner_flags_each_attack(graded):
    _, rows, _, _ = graded
    for student, (*_, kinds) in BANK.items():
        found = {
            f.split(" ", 1)[1].split(":", 1)[0] for f in rows[student]["flags"].split(" | ") if f
        }
        assert kinds <= found, (student, rows[student]["flags"])
    assert not rows["alice"]["flags"]


def test_feedback_names_what_failed_and_hides_the_checks(graded):
    course, _, _, _ = graded
    source = nbformat.read(course.source / A / f"{A}.ipynb", 4)
    hidden = [
        line.strip()
        for cell in source.cells
        for line in regions(cell.source, HIDDEN_TEST_MARKERS)
        if line.strip()
    ]
    assert hidden
    secrets = [*hidden, "### BEGIN HIDDEN TESTS", "_random_mask", "_TRANSPOSE_HINT"]
    for student in BANK:
        html = (course.feedback / student / A / f"{A}.html").read_text()
        assert not [s for s in secrets if s in html], student
    html = (course.feedback / "nan_weights" / A / f"{A}.html").read_text()
    assert "the weights contain NaN" in html


def test_regrading_one_student_keeps_the_other_rows(graded):
    course, rows, _, _ = graded
    again = grade_assignment(course, A, students=["alice"], workers=1, timeout=20, progress=False)
    assert [(r.student, r.score) for r in again] == [("alice", FULL)]
    now = {r["student"]: r for r in csv.DictReader(open(course.reports / f"{A}.csv"))}
    assert set(now) == set(rows)


def test_a_grade_given_by_hand_survives_a_regrade(graded):
    from nbgrader.api import Gradebook

    course, _, _, _ = graded
    with Gradebook(f"sqlite:///{course.db_path}") as gb:
        grade = gb.find_grade("scaling_gradients_answer", A, A, "bob")
        grade.manual_score = 1.5
        gb.db.commit()
    grade_assignment(course, A, students=["bob"], workers=1, timeout=20, progress=False)
    with Gradebook(f"sqlite:///{course.db_path}") as gb:
        grade = gb.find_grade("scaling_gradients_answer", A, A, "bob")
        assert (grade.manual_score, grade.needs_manual_grade) == (1.5, False)
        assert gb.find_submission(A, "bob").score == FULL + 1.5


# --- every API kind, judged in the sandbox ----------------------------------------------------

FIXTURE_ANSWERS = "\n\n".join(
    [
        "import torch\nfrom torch import nn",
        *(
            textwrap.dedent(inspect.getsource(obj))
            for obj in (
                engine_fixture.pair_counts,
                engine_fixture.to_bytes,
                engine_fixture.scale_all,
                engine_fixture.full,
                engine_fixture.first_scaled,
                engine_fixture._merge,
                engine_fixture.Tokenizer,
                engine_fixture.TinyDecoder,
            )
        ),
    ]
)

FIXTURE_MISTAKES = """
def pair_counts(ids):
    return {(a, b): 1 for a, b in zip(ids, ids[1:])}

def to_bytes(text):
    return text.encode("latin-1", errors="replace")

def scale_all(x, factors):
    return [x * f for f in factors]

def full(shape, value, dtype, device):
    out = torch.full(shape, value, device=device)
    return out, out.dtype, out.device

def first_scaled(x, f):
    return x.detach() * f

class Tokenizer(Tokenizer):
    def decode(self, ids):
        return super().decode(ids)[:-1]

class TinyDecoder(TinyDecoder):
    def greedy_decode(self, start, steps):
        return super().greedy_decode(start, steps)[1:]
"""


def test_every_api_kind_is_judged_in_the_sandbox():
    from autograder.engine.judge import Options, judge_notebook

    options = Options(part_seconds=60, hidden=(str(REPO),))
    right = judge_notebook([(0, FIXTURE_ANSWERS)], engine_fixture.PARTS, options)
    assert [(v.grade_id, v.passed, v.message) for v in right.verdicts] == [
        (p.grade_id, True, "") for p in engine_fixture.PARTS
    ]
    wrong = judge_notebook(
        [(0, FIXTURE_ANSWERS), (1, FIXTURE_MISTAKES)], engine_fixture.PARTS, options
    )
    failed = {v.grade_id: v.message for v in wrong.verdicts if not v.passed}
    assert set(failed) == {p.grade_id for p in engine_fixture.PARTS}, failed
    assert "first_scaled" in failed["first_scaled_tests"]
    assert "decode" in failed["tokenizer_tests"] and "greedy_decode" in failed["tiny_decoder_tests"]


# minbpe's signature: pair_counts(ids, counts=None) adds to `counts`; the tokenizer calls it so.
MINBPE_PAIR_COUNTS = """
def pair_counts(ids, counts=None):
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts

class Tokenizer(Tokenizer):
    def train(self, text, vocab_size):
        ids = list(text.encode("utf-8"))
        for new in range(256, vocab_size):
            counts = pair_counts(ids, {})
            if not counts:
                break
            pair = max(counts, key=lambda p: (counts[p], -p[0], -p[1]))
            self.merges[pair] = new
            ids = _merge(ids, pair, new)
"""


def test_a_later_part_runs_on_the_students_own_earlier_part_when_it_passes():
    """The reference stands in only for an earlier part that fails its own check: a correct
    pair_counts with an extra optional argument is what the tokenizer runs on; a wrong one is
    replaced, and then the tokenizer's failing call says which part was replaced and why."""
    from autograder.engine.judge import Options, judge_notebook

    options = Options(part_seconds=60, hidden=(str(REPO),))
    right = judge_notebook(
        [(0, FIXTURE_ANSWERS), (1, MINBPE_PAIR_COUNTS)], engine_fixture.PARTS, options
    )
    assert all(v.passed for v in right.verdicts), [v.message for v in right.verdicts]

    broken = MINBPE_PAIR_COUNTS.replace("counts.get(pair, 0) + 1", "1")
    wrong = judge_notebook([(0, FIXTURE_ANSWERS), (1, broken)], engine_fixture.PARTS, options)
    verdicts = {v.grade_id: v for v in wrong.verdicts}
    assert not verdicts["pair_counts_tests"].passed
    message = verdicts["tokenizer_tests"].message
    assert not verdicts["tokenizer_tests"].passed
    assert "stood in for yours" in message and "pair_counts fails its own" in message, message
    others = set(verdicts) - {"pair_counts_tests", "tokenizer_tests"}
    assert all(verdicts[g].passed for g in others)


def test_dtypes_and_devices_cross_the_wire_by_name_and_nothing_else_does():
    from autograder.engine.protocol import ProtocolError, decode, encode
    from autograder.engine.protocol import device as _device

    value = (torch.float64, torch.device("cpu"), {("a", 1): torch.bool})
    assert decode(encode(value)) == value
    # a device is mapped like a tensor's: a GPU the other side lacks becomes its CPU
    here = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert decode(encode(torch.device("cuda")), device_map=_device) == here
    for forged in (("Y", "__class__"), ("Y", "Tensor"), ("Y",), ("V", "meta"), ("V", 0)):
        with pytest.raises(ProtocolError):
            decode(forged)


def test_a_frame_holds_plain_data_and_tensors_by_their_bytes_only():
    import pickle

    from autograder.engine.protocol import HEADER, ProtocolError, decode, encode, pack, unpack

    value = (
        torch.randn(2, 3).double(),
        torch.tensor(True),
        torch.zeros(0, 4).bfloat16(),
        torch.randn(3, 2).t(),  # not contiguous
        torch.randn(2, dtype=torch.complex64).conj(),  # a lazy conjugate
    )
    back = decode(unpack(pack({"v": encode(value)})[HEADER.size :])["v"])
    assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(value, back, strict=True))

    class Evil:
        def __reduce__(self):
            return (os.system, ("exit 3",))

    for payload in (pickle.dumps({"x": Evil()}), pickle.dumps({"t": torch.ones(1)}), b"\x80"):
        with pytest.raises(ProtocolError):
            unpack(payload)
    with pytest.raises(ProtocolError):
        unpack(pickle.dumps([1]))  # a frame is a dict
    for forged in (
        ("T", "float32", [2], b"\0" * 4, "cpu"),  # bytes that do not match the shape
        ("T", "float32", [-1], b"", "cpu"),
        ("T", "object", [1], b"\0" * 8, "cpu"),
        ("T", "float32", [2**20, 2**20], b"", "cpu"),  # too large
        ("T", "float32", [1], "\0" * 4, "cpu"),
    ):
        with pytest.raises(ProtocolError):
            decode(forged)


def test_message_names_are_written_once_in_the_protocol_module():
    """The runner and the judge name every message through autograder.engine.protocol; the
    protocol's docstring lists every one."""
    import ast

    from autograder.engine import judge, protocol, runner

    names = {
        value
        for cls in (protocol.Op, protocol.Event)
        for key, value in vars(cls).items()
        if not key.startswith("_")
    }
    assert {"fork", "ended", "exit", "run", "call", "stand_in"} <= names
    for name in names:
        assert f"``{name}``" in protocol.__doc__, name
    for module in (runner, judge):
        tree = ast.parse(inspect.getsource(module))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        literals = [
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and id(node) not in docstrings
        ]
        assert not names & set(literals), (module.__name__, names & set(literals))


def test_a_dask_cluster_grades_like_local_workers(graded, tmp_path):
    from distributed import Client, LocalCluster

    course, rows, _, _ = graded
    students = ["alice", "key_t", "nan_weights"]
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        with Client(cluster) as client:
            results = grade_assignment(
                course, A, students=students, scheduler=client, timeout=20, progress=False
            )
    assert {r.student: r.score for r in results} == {s: float(rows[s]["score"]) for s in students}


def test_a_missing_bubblewrap_stops_with_instructions(monkeypatch, tmp_path):
    from autograder.engine import grade, sandbox

    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap"):
        sandbox.bwrap_path()
    assert grade.main([A, "--course", str(REPO), "--no-progress", "--student", "nobody"]) == 2


def test_the_sandbox_refuses_to_mount_a_folder_that_holds_the_course():
    from autograder.engine import sandbox

    with pytest.raises(sandbox.SandboxUnavailable, match="holds"):
        sandbox.bwrap_argv(["true"], workdir="/tmp", hidden=(sys.prefix + "/lib",))


def test_every_student_folder_gets_a_row_an_instructor_can_act_on(tmp_path):
    """A renamed notebook is graded; a broken one, one at the wrong depth and an empty folder
    each get a row that says what to do."""
    from nbgrader_helpers import make_course, submit

    course_root = make_course(tmp_path)
    shutil.copytree(REPO / "exercises", course_root / "exercises")
    source = read_notebook(course_root / "solutions" / A / f"{A}.ipynb")
    release = read_notebook(course_root / "exercises" / A / f"{A}.ipynb")
    path = submit(course_root, "renamed", A, filled_in(release, source))
    path.rename(path.with_name(f"Copy of {A}.ipynb"))
    broken = submit(course_root, "not_json", A, release)
    broken.write_text(broken.read_text()[:5000])
    submitted = course_root / "grading" / "submitted"
    (submitted / "too_high").mkdir()
    nbformat.write(release, submitted / "too_high" / f"{A}.ipynb")
    (submitted / "empty").mkdir()

    results = grade_assignment(Course.load(course_root), A, workers=1, timeout=60, progress=False)
    rows = {r.student: r for r in results}
    assert set(rows) == {"renamed", "not_json", "too_high", "empty"}
    renamed = rows["renamed"]
    assert (renamed.status, renamed.score) == ("graded", FULL), renamed.reason
    assert f"graded Copy of {A}.ipynb as {A}.ipynb" in renamed.reason
    assert rows["not_json"].status == "error"
    assert "not valid JSON (line " in rows["not_json"].reason
    assert rows["too_high"].status == "no notebook"
    assert f"move it to submitted/too_high/{A}/" in rows["too_high"].reason
    assert rows["empty"].status == "no notebook" and "is empty" in rows["empty"].reason
    csv_rows = list(csv.DictReader(open(course_root / "grading" / "reports" / f"{A}.csv")))
    assert sorted(r["student"] for r in csv_rows) == sorted(rows)
    assert all(r["reason"] for r in csv_rows if r["student"] != "renamed")
