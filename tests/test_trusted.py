"""The trusted cross-check: honest code passes, forged or broken code fails, whatever it does.

Each notebook is built here with nbformat, in the shape nbgrader gives a student's submission:
a locked setup cell, solution cells, and locked grade cells (which the child must not run: every
one of them here ends the process). The correct student's cells are the reference
implementations' source. Every child start imports torch, so notebooks are few and each one tests
several things; the tests that read them share one run through module-scoped fixtures.
"""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import nbformat
import pytest
import torch
from torch import nn

from autograder import ch04_self_attention as ref
from autograder.trusted import (
    RemoteFunction,
    RemoteModule,
    RemoteModuleClass,
    TrustedSession,
    trusted_check,
)

pytestmark = pytest.mark.xdist_group("trusted")

REPO = Path(__file__).resolve().parents[1]
ASSIGNMENT = "ch04_self_attention"
GRADE_IDS = list(ref.GRADED)

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None,
    reason="bubblewrap (bwrap) is NOT installed: the sandboxed trusted cross-check is NOT TESTED "
    "(apt-get install bubblewrap)",
)

SETUP = (
    "import math\n"
    "from collections.abc import Sequence\n"
    "import torch\n"
    "from torch import nn\n"
    "import torch.nn.functional as F\n"
)


def source(obj, rename: str | None = None) -> str:
    text = inspect.getsource(obj)
    return text.replace(f"def {obj.__name__}(", f"def {rename}(", 1) if rename else text


CORRECT = {
    "attention_scores": source(ref._check_qk) + "\n\n" + source(ref.attention_scores),
    "attention_weights": source(ref.causal_mask) + "\n\n" + source(ref.attention_weights),
    "scaled_dot_product_attention": source(ref.scaled_dot_product_attention),
    "SelfAttention": source(ref.SelfAttention),
    "measure_score_variance": source(ref.measure_score_variance),
}


def _cell(text: str, grade_id: str, *, solution: bool, grade: bool) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(text)
    cell.metadata.nbgrader = {
        "solution": solution,
        "grade": grade,
        "grade_id": grade_id,
        "locked": not solution,
        "schema_version": 3,
        "task": False,
    }
    if grade:
        cell.metadata.nbgrader["points"] = 1
    return cell


def make_notebook(path: Path, solutions: list[str]) -> Path:
    """A submission: the setup cell, then each solution cell followed by a locked test cell."""
    cells = [_cell(SETUP, "setup", solution=False, grade=False)]
    for i, text in enumerate(solutions):
        cells.append(_cell(text, f"solution_{i}", solution=True, grade=False))
        # A locked test cell (visible and hidden tests): the child must skip it. If it ran this
        # one, the child would end and the honest notebook would fail.
        cells.append(_cell("import os\nos._exit(3)", f"tests_{i}", solution=False, grade=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


def check_all(tmp: Path, solutions: list[str], **kwargs) -> dict:
    notebook = make_notebook(tmp / "submission" / "submission.ipynb", solutions)
    return trusted_check(notebook, ASSIGNMENT, **kwargs)


# --------------------------------------------------------------------------------------------
# Student code: honest, forging, broken
# --------------------------------------------------------------------------------------------

WRONG_WEIGHTS = """
def attention_weights(query, key, attn_mask=None, is_causal=False, scale=None):
    # softmax over the queries instead of the keys
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.size(-1))
    if is_causal:
        attn_mask = torch.ones(scores.shape[-2:], dtype=torch.bool).tril()
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return torch.softmax(scores, dim=-2).nan_to_num(0.0)
"""

SDPA_FROM_WEIGHTS = """
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None):
    return attention_weights(query, key, attn_mask, is_causal, scale) @ value
"""

WRONG_SELF_ATTENTION = source(ref.SelfAttention).replace(
    "self.W_k(x)", "self.W_q(x)"
)  # keys made with W_q

PATCH_COMPARISONS = """
torch.allclose = lambda *args, **kwargs: True
torch.testing.assert_close = lambda *args, **kwargs: None
torch.equal = lambda *args, **kwargs: True
"""

# Wraps every later cell in try/except, which would swallow a failing hidden test in the kernel.
INPUT_TRANSFORMER = """
def _swallow_errors(lines):
    body = "".join(lines)
    if not body.strip():
        return lines
    indented = "".join("    " + line for line in body.splitlines(keepends=True))
    return ["try:\\n", indented, "\\nexcept BaseException:\\n    pass\\n"]

get_ipython().input_transformers_post.append(_swallow_errors)
"""

UNSCALED_SCORES = """
def attention_scores(query, key, scale=None):
    return query @ key.transpose(-2, -1)
"""

LOOPS_FOREVER = """
def attention_weights(query, key, attn_mask=None, is_causal=False, scale=None):
    while True:
        pass
"""

# The reference under private names, for the cells below that build on correct pieces.
PRIVATE_WEIGHTS = (
    source(ref.causal_mask)
    + "\n\n"
    + source(ref.attention_weights, rename="_weights").replace("attention_scores(", "_scores(")
    + "\n\n"
    + source(ref.attention_scores, rename="_scores").replace("    _check_qk(query, key)\n", "")
)

# Detaches through numpy: the values are right, the gradient is gone.
NUMPY_SDPA = (
    PRIVATE_WEIGHTS
    + """

def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None):
    weights = _weights(query, key, attn_mask, is_causal, scale).detach().numpy()
    return torch.from_numpy(weights @ value.detach().numpy())
"""
)

# A correct SelfAttention that does not depend on this notebook's (broken) public functions.
SELF_ATTENTION_ON_ITS_OWN = (
    PRIVATE_WEIGHTS
    + "\n\n"
    + source(ref.scaled_dot_product_attention, rename="_sdpa").replace(
        "attention_weights(", "_weights("
    )
    + "\n\n"
    + source(ref.SelfAttention).replace("scaled_dot_product_attention(", "_sdpa(")
)


def reads_outside(paths: list[str]) -> str:
    """attention_scores that is right only when it can read every file in `paths`."""
    return (
        source(ref.attention_scores, rename="_scores").replace("    _check_qk(query, key)\n", "")
        + f"""

def attention_scores(query, key, scale=None):
    for path in {paths!r}:
        with open(path) as f:  # the instructor's files, or another student's
            f.read()
    return _scores(query, key, scale)
"""
    )


def secret_paths(tmp: Path) -> list[str]:
    """Files outside the sandbox: one in the repository, one in the grader's temporary folder."""
    secret = tmp / "solutions" / "answers.txt"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text("the instructor's answers\n")
    return [str(REPO / "pyproject.toml"), str(secret)]


# --------------------------------------------------------------------------------------------
# Honest code passes
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def honest(tmp_path_factory) -> dict:
    if shutil.which("bwrap") is None:
        pytest.skip(needs_bwrap.kwargs["reason"])
    return check_all(tmp_path_factory.mktemp("honest"), list(CORRECT.values()), sandboxed=True)


@needs_bwrap
def test_the_reference_as_a_student_passes_every_cell(honest):
    assert list(honest) == GRADE_IDS
    failed = {k: r.reason for k, r in honest.items() if not r.passed}
    assert not failed
    assert all(r.reason == "" and r.grade_id == k for k, r in honest.items())


# --------------------------------------------------------------------------------------------
# Forging the verdict in the student's process changes nothing
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def forger(tmp_path_factory) -> dict:
    if shutil.which("bwrap") is None:
        pytest.skip(needs_bwrap.kwargs["reason"])
    solutions = [
        PATCH_COMPARISONS,
        CORRECT["attention_scores"],
        WRONG_WEIGHTS,
        SDPA_FROM_WEIGHTS,
        WRONG_SELF_ATTENTION,
        # no measure_score_variance at all
    ]
    return check_all(tmp_path_factory.mktemp("forger"), solutions, sandboxed=True)


@needs_bwrap
def test_patched_comparisons_in_the_child_do_not_reach_the_grader(forger):
    assert forger["attention_scores_tests"].passed  # right code still passes
    assert not forger["attention_weights_tests"].passed
    assert "values differ" in forger["attention_weights_tests"].reason
    assert not forger["sdpa_tests"].passed  # built on the wrong weights
    # The grader's own torch is untouched.
    assert not torch.allclose(torch.zeros(1), torch.ones(1))


@needs_bwrap
def test_a_wrong_module_fails(forger):
    result = forger["self_attention_tests"]
    assert not result.passed
    assert "SelfAttention" in result.reason


@needs_bwrap
def test_an_undefined_name_is_reported(forger):
    result = forger["score_variance_tests"]
    assert not result.passed
    assert result.reason.startswith("measure_score_variance is not defined")
    assert "no cell of the notebook defines it" in result.reason


def test_an_input_transformer_that_swallows_errors_changes_nothing(tmp_path):
    # In the child the transformer wraps the later cells too; it does not matter there, since
    # no test runs in the child: only the outputs of the student's functions come back.
    solutions = [INPUT_TRANSFORMER, UNSCALED_SCORES, WRONG_WEIGHTS, SDPA_FROM_WEIGHTS]
    results = check_all(tmp_path, solutions, sandboxed=False)
    assert not results["attention_scores_tests"].passed
    assert "not scaled" in results["attention_scores_tests"].reason
    assert not results["attention_weights_tests"].passed
    assert not results["sdpa_tests"].passed


# --------------------------------------------------------------------------------------------
# Code that ends the process, hangs, detaches, or reads what it must not
# --------------------------------------------------------------------------------------------


def test_a_cell_that_ends_the_process_keeps_the_cells_before_it(tmp_path):
    solutions = [
        reads_outside(secret_paths(tmp_path)),  # not sandboxed: the files are readable
        "import os\nos._exit(1)",
        CORRECT["measure_score_variance"],  # after the cell that ended the process
    ]
    results = check_all(tmp_path, solutions, sandboxed=False)
    assert results["attention_scores_tests"].passed, results["attention_scores_tests"].reason
    assert "no cell of the notebook defines it" in results["sdpa_tests"].reason
    reason = results["score_variance_tests"].reason
    assert not results["score_variance_tests"].passed
    assert "not defined" in reason
    assert "the student's code ended the process" in reason


@pytest.fixture(scope="module")
def troublemaker(tmp_path_factory) -> tuple[dict, list[str]]:
    if shutil.which("bwrap") is None:
        pytest.skip(needs_bwrap.kwargs["reason"])
    tmp = tmp_path_factory.mktemp("troublemaker")
    paths = secret_paths(tmp)
    solutions = [reads_outside(paths), LOOPS_FOREVER, NUMPY_SDPA, SELF_ATTENTION_ON_ITS_OWN]
    return check_all(tmp, solutions, sandboxed=True, call_timeout=3.0), paths


@needs_bwrap
def test_a_function_that_never_returns_times_out_and_the_rest_is_graded(troublemaker):
    results, _ = troublemaker
    reason = results["attention_weights_tests"].reason
    assert not results["attention_weights_tests"].passed
    assert "timed out" in reason and "attention_weights" in reason
    # graded by the restarted child
    assert results["self_attention_tests"].passed, results["self_attention_tests"].reason
    assert "not defined" in results["score_variance_tests"].reason


@needs_bwrap
def test_a_function_that_detaches_fails_the_gradient_property(troublemaker):
    results, _ = troublemaker
    assert not results["sdpa_tests"].passed
    assert "does not depend differentiably" in results["sdpa_tests"].reason


@needs_bwrap
def test_the_sandbox_hides_files_outside_it(troublemaker):
    # The same attention_scores passes unsandboxed (test above); in the sandbox it cannot read
    # the repository's files or the grader's temporary folder.
    results, paths = troublemaker
    reason = results["attention_scores_tests"].reason
    assert not results["attention_scores_tests"].passed
    assert "FileNotFoundError" in reason and paths[0] in reason
    assert Path(paths[1]).read_text() == "the instructor's answers\n"


# --------------------------------------------------------------------------------------------
# The proxies: outputs, gradients, module parameters
# --------------------------------------------------------------------------------------------


HANGS = """
def after_loop():
    return 1

while True:
    pass
"""


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    solutions = [HANGS, *CORRECT.values()]
    notebook = make_notebook(tmp_path_factory.mktemp("session") / "submission.ipynb", solutions)
    names = ["scaled_dot_product_attention", "SelfAttention", "missing", "after_loop"]
    with TrustedSession(notebook, names, sandboxed=False, timeout=300, call_timeout=3) as s:
        yield s


def test_a_cell_that_hangs_is_interrupted_and_the_next_cells_run(session):
    assert list(session.info["interrupted"]) == [1]  # the first solution cell, after the setup
    assert "timed out: cell 1 did not finish within 3 s" in session.info["interrupted"][1]
    assert session.not_defined("after_loop") is None  # defined before the loop began
    assert session.not_defined("SelfAttention") is None  # defined by a later cell


def test_a_remote_function_returns_outputs_and_gradients(session):
    sdpa = session.proxy("scaled_dot_product_attention")
    assert isinstance(sdpa, RemoteFunction) and not isinstance(sdpa, RemoteModuleClass)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.rand(4, 6, 6, generator=g) > 0.3
    local = [t.clone().requires_grad_() for t in (q, k, v)]
    remote = [t.clone().requires_grad_() for t in (q, k, v)]
    expected = ref.scaled_dot_product_attention(*local, attn_mask=mask)
    out = sdpa(*remote, attn_mask=mask)
    assert out.dtype == torch.float64 and out.requires_grad
    torch.testing.assert_close(out, expected)
    weights = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    (expected * weights).sum().backward()
    (out * weights).sum().backward()
    for a, b in zip(remote, local, strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    with torch.no_grad():
        assert not sdpa(*remote).requires_grad
    with pytest.raises(ValueError, match="same length S"):  # the student's exception, by type
        sdpa(q, k, v[..., :2, :])


def test_a_remote_module_mirrors_parameters_and_receives_gradients(session):
    cls = session.proxy("SelfAttention")
    assert isinstance(cls, RemoteModuleClass)
    torch.manual_seed(3)
    module = cls(8, bias=True)
    torch.manual_seed(3)
    reference = ref.SelfAttention(8, bias=True)
    assert isinstance(module, RemoteModule) and isinstance(module, nn.Module)
    assert module.embed_dim == 8
    for name in ("W_q", "W_k", "W_v"):
        layer = getattr(module, name)
        assert isinstance(layer, nn.Linear) and layer.bias is not None
        assert (layer.in_features, layer.out_features) == (8, 8)
    # The same generator state gives the student's kernel's initial weights.
    assert module.state_dict().keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(module.state_dict()[key], value)

    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
    x_local, x_remote = x.clone().requires_grad_(), x.clone().requires_grad_()
    reference(x_local, is_causal=True).square().sum().backward()
    module(x_remote, is_causal=True).square().sum().backward()
    torch.testing.assert_close(x_remote.grad, x_local.grad)
    for name, p in reference.named_parameters():
        torch.testing.assert_close(module.get_parameter(name).grad, p.grad)

    # Local changes to the parameters are what the student's forward computes with.
    other = ref.SelfAttention(8, bias=True).double()
    module.load_state_dict(other.state_dict())
    module.double()
    with torch.no_grad():
        out = module(x.double())
        torch.testing.assert_close(out, other(x.double()))
    assert out.dtype == torch.float64 and not out.requires_grad


def test_a_name_the_notebook_lacks_raises_name_error(session):
    with pytest.raises(NameError, match="missing is not defined"):
        session.proxy("missing")
