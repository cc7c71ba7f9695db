"""Tests for the submission scanner: what it flags, what it leaves alone, notebooks.

A bank of malicious snippets, each with the kind (and line) it must produce, and a bank of honest
code (the reference solution of every graded part, visible-test-like code, plotting, magics) that
must produce nothing. Notebooks are built in memory with nbformat and written under tmp_path.
"""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import nbformat
import pytest
from nbformat import v4

from autograder.engine import scanner
from autograder.engine.scanner import (
    Finding,
    scan_notebook,
    scan_source,
)

REPO = Path(__file__).resolve().parents[1]
KINDS = {"forbidden_builtin", "autograder_import", "dynamic_code", "unparsable"}


@pytest.fixture(scope="module")
def forbidden() -> tuple[str, ...]:
    from autograder import chapters

    names = chapters.load("ch04_self_attention").forbidden_builtins
    assert "torch.nn.functional.scaled_dot_product_attention" in names
    return names


def _kinds_at(findings) -> set[tuple[str, int]]:
    return {(kind, line) for kind, line, _, _ in findings}


# --------------------------------------------------------------------------------------------
# Malicious snippets: (source, kind, line)
# --------------------------------------------------------------------------------------------

WRAP_TRANSFORMER = '''
def wrap(lines):
    return ["try:\\n"] + ["    " + line for line in lines] + ["except Exception:\\n", "    pass\\n"]
get_ipython().input_transformers_post.append(wrap)
'''

# Patching torch, IPython hooks, ending the process and reading files outside the folder are no
# longer the scanner's: the sandbox holds nothing to read and the judge runs the checks outside
# it (tests/test_engine.py attacks the grader with each of them).
MALICIOUS = [
    # forbidden_builtin
    pytest.param("import torch.nn.functional as F\n"
                 "def scaled_dot_product_attention(q, k, v):\n"
                 "    return F.scaled_dot_product_attention(q, k, v)",
                 "forbidden_builtin", 3, id="F alias"),
    pytest.param("import torch.nn.functional as fun\n"
                 "out = fun.scaled_dot_product_attention(q, k, v)",
                 "forbidden_builtin", 2, id="other alias"),
    pytest.param("import torch\nout = torch.nn.functional.scaled_dot_product_attention(q, k, v)",
                 "forbidden_builtin", 2, id="full chain"),
    pytest.param("from torch.nn import functional\n"
                 "functional.scaled_dot_product_attention(q, k, v)",
                 "forbidden_builtin", 2, id="from torch.nn import functional"),
    pytest.param("from torch.nn.functional import scaled_dot_product_attention as s",
                 "forbidden_builtin", 1, id="from-import as"),
    pytest.param("from torch.nn.functional import *", "forbidden_builtin", 1, id="star import"),
    pytest.param('import torch.nn.functional as F\nfn = getattr(F, "scaled_dot_product_attention")',
                 "forbidden_builtin", 2, id="getattr literal"),
    pytest.param('fn = getattr(mystery, "scaled_dot_product_attention")', "forbidden_builtin", 1,
                 id="getattr literal on an unknown object"),
    pytest.param("import torch.nn.functional as F\nfn = F.scaled_dot_product_attention",
                 "forbidden_builtin", 2, id="reference without a call"),
    pytest.param("import torch\ntorch.ops.aten.scaled_dot_product_attention(q, k, v)",
                 "forbidden_builtin", 2, id="same op under torch.ops"),
    pytest.param("from torch import nn\nlayer = nn.MultiheadAttention(8, 2)", "forbidden_builtin",
                 2, id="MultiheadAttention"),
    # autograder_import
    pytest.param("from autograder.ch04_self_attention import scaled_dot_product_attention",
                 "autograder_import", 1, id="from autograder"),
    pytest.param("import autograder", "autograder_import", 1, id="import autograder"),
    pytest.param('import importlib\nm = importlib.import_module("autograder.ch04_self_attention")',
                 "autograder_import", 2, id="import_module"),
    pytest.param('ref = __import__("autograder")', "autograder_import", 1, id="__import__"),
    pytest.param('import os\ngraded = os.environ.get("NBGRADER_EXECUTION")', "autograder_import",
                 2, id="detecting nbgrader's environment"),
    pytest.param('import sys\ngraded = "autograder" in sys.modules', "autograder_import", 2,
                 id="detecting the autograder in sys.modules"),
    # dynamic_code
    pytest.param('import base64\nexec(base64.b64decode("dG9yY2g="))', "dynamic_code", 2,
                 id="exec of decoded bytes"),
    pytest.param("eval(code)", "dynamic_code", 1, id="eval of a variable"),
    pytest.param('import torch\nfn = getattr(torch, "all" + "close")', "dynamic_code", 2,
                 id="getattr with a computed name"),
    pytest.param('import sys\nwhere = "/grader/runner.py" in sys.argv[0]', "autograder_import", 2,
                 id="detecting the sandbox's runner"),
    pytest.param('import os\nif os.getcwd() == "/sandbox":\n    pass', "autograder_import", 2,
                 id="detecting the sandbox's folder"),
    pytest.param('import importlib\nm = importlib.import_module(name)', "dynamic_code", 2,
                 id="import_module of a computed name"),
    # a literal passed to exec is read as code
    pytest.param('exec("import torch\\ntorch.nn.functional.scaled_dot_product_attention(q, k, v)")',
                 "forbidden_builtin", 1, id="exec of a literal"),
    pytest.param('exec("import autograder")', "autograder_import", 1, id="exec of an import"),
    # cell magics whose body is code are read as code
    pytest.param("%%time\nimport torch.nn.functional as G\nG.scaled_dot_product_attention(q, k, v)",
                 "forbidden_builtin", 3, id="inside %%time"),
]


@pytest.mark.parametrize(("source", "kind", "line"), MALICIOUS)
def test_malicious_snippet_is_flagged(source, kind, line, forbidden):
    findings = scan_source(source, forbidden_builtins=forbidden)
    assert (kind, line) in _kinds_at(findings), findings
    lines = source.splitlines()
    for found_kind, found_line, code, message in findings:
        assert found_kind in KINDS
        assert code == lines[found_line - 1].strip()[:120]
        assert message[:1].isupper() and message.endswith(".")


# --------------------------------------------------------------------------------------------
# Honest code: nothing to flag
# --------------------------------------------------------------------------------------------

STUDENT_SOLUTION = '''
import math

import torch
import torch.nn.functional as F
from torch import nn


def attention_scores(query, key, scale=None):
    if scale is None:
        scale = 1.0 / math.sqrt(query.size(-1))
    return query @ key.transpose(-2, -1) * scale  # (..., L, S)


def attention_weights(query, key, attn_mask=None, is_causal=False, scale=None):
    scores = attention_scores(query, key, scale)  # (..., L, S)
    if is_causal:
        L, S = scores.shape[-2:]
        attn_mask = torch.ones(L, S, dtype=torch.bool, device=scores.device).tril()
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    weights = F.softmax(scores, dim=-1)
    empty = torch.isneginf(scores).all(dim=-1, keepdim=True)  # (..., L, 1)
    return weights.masked_fill(empty, 0.0)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None):
    weights = attention_weights(query, key, attn_mask, is_causal, scale)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ value  # (..., L, Ev)


class SelfAttention(nn.Module):
    def __init__(self, embed_dim, bias=False):
        super().__init__()
        self.embed_dim = embed_dim
        self.W_q = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_k = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_v = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(self, x, attn_mask=None, is_causal=False):
        q, k, v = self.W_q(x), self.W_k(x), self.W_v(x)  # (B, L, E) each
        return scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)


def measure_score_variance(d_ks, n_samples=10_000, scaled=False, seed=0):
    generator = torch.Generator().manual_seed(seed)
    variances = []
    for d_k in d_ks:
        q = torch.randn(n_samples, d_k, generator=generator, dtype=torch.float64)
        k = torch.randn(n_samples, d_k, generator=generator, dtype=torch.float64)
        dots = (q * k).sum(dim=-1)
        if scaled:
            dots = dots / math.sqrt(d_k)
        variances.append(dots.var())
    return torch.stack(variances)
'''

VISIBLE_TESTS = '''
"""attention_scores: a tiny example you can check by hand."""
q = torch.tensor([[1.0, 0.0]])
k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
out = attention_scores(q, k)
assert isinstance(out, torch.Tensor), f"return a tensor, not {type(out).__name__}"
assert out.shape == (1, 2), f"expected shape (1, 2), got {tuple(out.shape)}"
assert torch.allclose(out, torch.tensor([[0.7071, 0.0]]), atol=1e-4), "scale by 1/sqrt(E)"
torch.testing.assert_close(out.sum(), torch.tensor(0.7071), atol=1e-4, rtol=0)
w = attention_weights(q, k)
assert abs(w.sum().item() - 1) < 1e-6 and len(w) == 1 and max(w.shape) == 2
try:
    attention_scores(q, torch.zeros(3))
except (ValueError, RuntimeError) as err:
    print("a helpful error:", err)
print("all visible tests passed")
'''

PLOTTING = '''
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np

d_ks = [2, 8, 32, 128]
variances = measure_score_variance(d_ks)
fig, ax = plt.subplots(figsize=(4, 3))
ax.plot(d_ks, variances, marker="o", label="q·k")
ax.set_xscale("log", base=2)
plt.rcParams["figure.dpi"] = 100
np.random.seed(0)
plt.show()
'''

TINKERING = '''
torch.manual_seed(0)
torch.set_printoptions(precision=3)
model = SelfAttention(4)
model.W_q.weight.data = torch.eye(4)
with torch.no_grad():
    model.W_k.weight.copy_(torch.eye(4))
    nn.init.xavier_uniform_(model.W_v.weight)
x = torch.randn(2, 3, 4)
x.masked_fill_(x > 2, 0.0)
torch.save(model.state_dict(), "weights.pt")
model.load_state_dict(torch.load("weights.pt"))
model.eval()
with open("notes.txt", "w") as fh:
    fh.write("done")
with torch.set_grad_enabled(False):
    y = model(x)
from IPython.display import Markdown, display
display(Markdown("**done**"))
'''

HONEST = [
    pytest.param(STUDENT_SOLUTION, id="student solution of every graded part"),
    pytest.param(VISIBLE_TESTS, id="visible-test-like code"),
    pytest.param(PLOTTING, id="plotting"),
    pytest.param(TINKERING, id="ordinary tensor and module code"),
    pytest.param("%matplotlib inline", id="%matplotlib inline"),
    pytest.param("torch.manual_seed(0)", id="manual_seed"),
    pytest.param("import math\nfrom torch import nn\nimport torch.nn.functional as F\n"
                 "p = F.softmax(torch.randn(3), dim=-1)", id="imports and F.softmax"),
    pytest.param("# YOUR CODE HERE\nraise NotImplementedError()", id="untouched stub"),
    pytest.param("%load_ext autoreload\n%autoreload 2", id="autoreload"),
    pytest.param("%%time\nout = scaled_dot_product_attention(q, k, v)", id="%%time"),
    pytest.param("%timeit -n 3 -r 1 attention_scores(q, k)\nattention_scores?", id="%timeit, ?"),
    pytest.param("def f(x):\n    max = x.max()\n    len = 3\n    return max + len\n"
                 "class A:\n    sum = 0", id="local names shadowing built-ins"),
    pytest.param("import os\nos.environ['OMP_NUM_THREADS'] = '1'\nprint(os.getcwd())",
                 id="environment variable"),
    pytest.param("def helper(F):\n    F.scaled_dot_product_attention = 1\n    return F",
                 id="parameter named like a module"),
    pytest.param('"""Checked by the autograder (nbgrader) against hidden tests."""\n'
                 'print("nbgrader will grade this")', id="strings that mention the grader"),
]


@pytest.mark.parametrize("source", HONEST)
def test_honest_code_is_not_flagged(source, forbidden):
    assert scan_source(source, forbidden_builtins=forbidden) == []


def test_reference_implementations_are_not_flagged(forbidden):
    """The reference of every graded part, as the autograder has it, is clean."""
    from autograder import chapters
    from autograder.chapters.ch04_self_attention import reference

    for part in chapters.load("ch04_self_attention").parts:
        source = textwrap.dedent(inspect.getsource(getattr(reference, part.name)))
        assert scan_source(source, forbidden_builtins=forbidden) == [], part.name


def test_forbidden_names_are_only_flagged_when_given():
    source = "import torch.nn.functional as F\nF.scaled_dot_product_attention(q, k, v)"
    assert scan_source(source) == []
    assert _kinds_at(scan_source(source, forbidden_builtins=[
        "torch.nn.functional.scaled_dot_product_attention"])) == {("forbidden_builtin", 2)}


def test_code_is_stripped_and_cut_to_120_characters():
    long_line = "    import autograder, " + ", ".join(["os"] * 40)
    (finding,) = scan_source("import torch\nif True:\n" + long_line)
    kind, line, code, _ = finding
    assert (kind, line) == ("autograder_import", 3)
    assert code == long_line.strip()[:117] + "..." and len(code) == 120


def test_unparsable_cell_gives_one_finding_and_does_not_raise():
    findings = scan_source("x = 1\ndef broken(:\n    pass\n%%%not a magic")
    assert [(kind, line) for kind, line, _, _ in findings] == [("unparsable", 2)]
    assert findings[0][2] == "def broken(:"


@pytest.mark.parametrize(("source", "parses"), [
    ("x = " + "+".join(["1"] * 600), True),  # parses, but is too deep for the walk
    ("x = " + "(" * 5000 + "1" + ")" * 5000, False),  # too deep for Python's parser
])
def test_deeply_nested_code_gives_one_finding_and_does_not_crash(source, parses):
    assert (scanner._parse(source)[0] is not None) == parses
    findings = scan_source(source + "\nimport autograder")
    assert [kind for kind, *_ in findings] == ["unparsable"]


# --------------------------------------------------------------------------------------------
# Notebooks
# --------------------------------------------------------------------------------------------


def _code(source: str, grade_id: str | None = None, locked: bool = False):
    cell = v4.new_code_cell(source)
    if grade_id is not None:
        cell.metadata["nbgrader"] = {
            "grade_id": grade_id, "grade": locked, "locked": locked, "solution": not locked,
            "schema_version": 3,
        }
    return cell


IMPORTS = "import torch\nimport torch.nn.functional as fun\nfrom torch.testing import assert_close"
LOCKED_TEST = 'assert_close(attention_scores(q, k), expected)\nprint("ok")'


def _release():
    return v4.new_notebook(cells=[
        v4.new_markdown_cell("# Attention\nRun `!cat ../../x` at your peril."),
        _code(IMPORTS, "imports", locked=True),
        _code("def attention_scores(query, key, scale=None):\n    # YOUR CODE HERE\n"
              "    raise NotImplementedError()", "attention_scores_impl"),
        _code(LOCKED_TEST + "\nfrom autograder.toolkit import CheckFailed",
              "attention_scores_tests", locked=True),
    ])


def _submission(answer: str, test_cell: str | None = None):
    nb = _release()
    nb.cells[2].source = answer
    if test_cell is not None:
        nb.cells[3].source = test_cell
    return nb


def test_scan_notebook_uses_grade_id_and_reports_lines(forbidden):
    nb = _submission("def attention_scores(query, key, scale=None):\n"
                     "    return fun.scaled_dot_product_attention(query, key, key)")
    findings = scan_notebook(nb, forbidden_builtins=forbidden, release_nb=_release())
    assert findings == [Finding(
        "forbidden_builtin", "attention_scores_impl", 2,
        "return fun.scaled_dot_product_attention(query, key, key)", findings[0].message)]


def test_untouched_release_cells_are_skipped_but_their_imports_count(forbidden):
    nb = _submission("x = 1\nfun.scaled_dot_product_attention(q, k, v)")
    findings = scan_notebook(nb, forbidden_builtins=forbidden, release_nb=_release())
    # The locked test cell imports autograder, but it is the instructor's and is skipped; its
    # import of torch.nn.functional as fun still tells what fun is.
    assert [(f.cell_id, f.kind, f.line) for f in findings] == [
        ("attention_scores_impl", "forbidden_builtin", 2)]
    assert "torch.nn.functional.scaled_dot_product_attention" in findings[0].message


def test_edited_locked_cell_is_scanned(forbidden):
    edited = LOCKED_TEST + "\nfrom autograder.toolkit import CheckFailed\nimport os\neval(s)"
    nb = _submission("def attention_scores(query, key, scale=None):\n    return query",
                     test_cell=edited)
    findings = scan_notebook(nb, forbidden_builtins=forbidden, release_nb=_release())
    assert [(f.kind, f.cell_id, f.line) for f in findings] == [
        ("autograder_import", "attention_scores_tests", 3),
        ("dynamic_code", "attention_scores_tests", 5),
    ]


def test_without_a_release_every_code_cell_is_scanned(forbidden):
    findings = scan_notebook(_release(), forbidden_builtins=forbidden)
    assert [(f.kind, f.cell_id) for f in findings] == [
        ("autograder_import", "attention_scores_tests")]


def test_cell_id_falls_back_to_the_id_then_the_index():
    with_id = v4.new_code_cell("import sys\nimport nbgrader")
    with_id.id = "my-cell"
    without_id = v4.new_code_cell("import autograder")
    nb = v4.new_notebook(cells=[v4.new_markdown_cell("hi"), with_id, without_id])
    del nb.cells[2]["id"]  # after new_notebook, whose validation would put an id back
    assert [(f.cell_id, f.kind) for f in scan_notebook(nb)] == [
        ("my-cell", "autograder_import"), ("cell-2", "autograder_import")]


def test_unparsable_cell_in_a_notebook_does_not_stop_the_scan():
    nb = v4.new_notebook(cells=[_code("def broken(:", "a"), _code("import os\neval(s)", "b")])
    assert [(f.kind, f.cell_id, f.line) for f in scan_notebook(nb)] == [
        ("unparsable", "a", 1), ("dynamic_code", "b", 2)]


def test_scan_notebook_reads_paths(tmp_path, forbidden):
    submitted, release = tmp_path / "submitted.ipynb", tmp_path / "release.ipynb"
    nbformat.write(_submission("!ls /grader\nimport nbgrader.api"), submitted)
    nbformat.write(_release(), release)
    findings = scan_notebook(submitted, forbidden_builtins=forbidden, release_nb=str(release))
    assert [(f.kind, f.cell_id, f.code) for f in findings] == [
        ("autograder_import", "attention_scores_impl", "import nbgrader.api")]


def test_kinds_are_documented():
    for kind in KINDS:
        assert f"``{kind}``" in scanner.__doc__
