"""Chapter 3's reference against the formulas and torch's built-in, and what its checks promise
beyond the contract.

What every chapter must meet (the reference passes its checks, each known mistake fails its part
and only its part, the correct variants pass, ...) is in test_chapter_contract.py. Here: the three
scores the notebook hands out are the reference's; local attention (the positions, the window, the
Gaussian, the layer) against the paper's formulas written out one query at a time; each graded
behaviour's check charges its own mistakes only; checks hide values.
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from autograder.chapters.ch03_luong_attention import checks, wrong
from autograder.chapters.ch03_luong_attention import reference as ref
from autograder.toolkit import TOLERANCES, CheckFailed

from chapter_helpers import DEVICES, failing_cells
from nbgrader_helpers import REPO

SLUG = "ch03_luong_attention"


def draw(batch, L, S, Dq, Dk, A, seed, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    tensors = (
        torch.randn(*batch, L, Dq, generator=g),  # query (..., L, Dq)
        torch.randn(*batch, S, Dk, generator=g),  # keys (..., S, Dk)
        torch.randn(Dq, Dk, generator=g),  # W_a of the general score (Dq, Dk)
        torch.randn(A, Dq + Dk, generator=g),  # W_a of the concat score (A, Dq + Dk)
        torch.randn(A, generator=g),  # v_a (A,)
    )
    return [t.to(device=device, dtype=dtype) for t in tensors]


def one_pair_at_a_time(fn, L, S):
    """A (L, S) tensor of fn(i, j) for every query i and key j."""
    return torch.stack([torch.stack([fn(i, j) for j in range(S)]) for i in range(L)])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("L, S, Dq, Dk, A", [(1, 1, 1, 1, 1), (3, 5, 4, 6, 7), (6, 2, 8, 8, 3)])
def test_scores_match_their_formulas_pair_by_pair(L, S, Dq, Dk, A, dtype, device):
    q, k, W_gen, W_cat, v = draw((), L, S, Dq, Dk, A, seed=L + S, dtype=dtype, device=device)
    k_same = k[:, :Dq] if Dk >= Dq else torch.cat([k, k[:, : Dq - Dk]], dim=-1)  # (S, Dq)
    rtol, atol = TOLERANCES[dtype]
    cases = [
        (ref.dot_score(q, k_same), lambda i, j: q[i] @ k_same[j]),
        (ref.general_score(q, k, W_gen), lambda i, j: q[i] @ W_gen @ k[j]),
        (
            ref.concat_score(q, k, W_cat, v),
            lambda i, j: v @ torch.tanh(W_cat @ torch.cat([q[i], k[j]])),
        ),
    ]
    for batched, formula in cases:
        assert batched.shape == (L, S) and batched.dtype == dtype
        assert batched.device.type == device
        torch.testing.assert_close(batched, one_pair_at_a_time(formula, L, S), rtol=rtol, atol=atol)


def _given_scores() -> dict:
    """The score functions the notebook's setup cell hands out."""
    nb = json.loads((REPO / "solutions" / SLUG / f"{SLUG}.ipynb").read_text())
    setup = next(c for c in nb["cells"] if c.get("id") == "setup")
    namespace: dict = {}
    exec("".join(setup["source"]), namespace)
    return namespace


def test_the_scores_the_notebook_hands_out_are_the_references():
    given = _given_scores()
    q, k, W_gen, W_cat, v = draw((2,), 3, 5, 4, 6, 7, seed=3)
    k_same = k[..., :4]
    torch.testing.assert_close(given["dot_score"](q, k_same), ref.dot_score(q, k_same))
    torch.testing.assert_close(given["general_score"](q, k, W_gen), ref.general_score(q, k, W_gen))
    torch.testing.assert_close(given["concat_score"](q, k, W_cat, v),
                               ref.concat_score(q, k, W_cat, v))  # fmt: skip


def test_predicted_positions_match_the_papers_formula_sentence_by_sentence():
    g = torch.Generator().manual_seed(0)
    query = torch.randn(3, 4, 6, generator=g, dtype=torch.float64)  # (B, L, D)
    W_p = torch.randn(5, 6, generator=g, dtype=torch.float64)  # (A, D)
    v_p = torch.randn(5, generator=g, dtype=torch.float64)  # (A,)
    lengths = torch.tensor([9, 2, 5])
    p = ref.predicted_positions(query, W_p, v_p, lengths)  # (B, L)
    for b in range(3):
        for t in range(4):
            expected = lengths[b] * torch.sigmoid(v_p @ torch.tanh(W_p @ query[b, t]))
            torch.testing.assert_close(p[b, t], expected.to(torch.float64))
    assert bool(((p > 0) & (p < lengths[:, None])).all())
    zeros = ref.predicted_positions(query, torch.zeros_like(W_p), torch.zeros_like(v_p), lengths)
    torch.testing.assert_close(zeros, lengths[:, None].double().expand(3, 4) / 2)


def local_weights_one_query_at_a_time(scores, centres, mask, window, gaussian):
    """Luong et al.'s equations (7) and (10) for each query on its own, in plain Python."""
    B, L, S = scores.shape
    out = torch.zeros_like(scores)
    sigma = window / 2
    for b in range(B):
        for t in range(L):
            p = centres[b, t].item()
            inside = [s for s in range(S) if abs(s - p) <= window and bool(mask[b, s])]
            if not inside:
                continue
            e = torch.exp(scores[b, t, inside] - scores[b, t, inside].max())
            for s, a in zip(inside, e / e.sum(), strict=True):
                out[b, t, s] = a * (math.exp(-((s - p) ** 2) / (2 * sigma**2)) if gaussian else 1)
    return out


@pytest.mark.parametrize("gaussian", [False, True])
@pytest.mark.parametrize("window", [1, 2, 4])
def test_local_weights_are_the_papers_equations_one_query_at_a_time(window, gaussian):
    g = torch.Generator().manual_seed(window)
    scores = torch.randn(3, 5, 9, generator=g, dtype=torch.float64)  # (B, L, S)
    lengths = torch.tensor([9, 4, 1])
    mask = torch.arange(9) < lengths[:, None]  # (B, S)
    centres = torch.rand(3, 5, generator=g, dtype=torch.float64) * lengths[:, None]  # (B, L)
    centres[0, 0], centres[1, 1], centres[2, 2] = 3.0, 6.0, 7.5  # an integer centre; empty windows
    got = ref.local_weights(scores, centres, mask, window, gaussian)
    torch.testing.assert_close(
        got, local_weights_one_query_at_a_time(scores, centres, mask, window, gaussian)
    )


def test_local_m_with_a_window_over_everything_is_global_attention():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(2, 4, 6, generator=g)  # (B, L, S)
    mask = torch.tensor([[True] * 6, [True, True, True, False, False, False]])
    t = torch.arange(4.0).expand(2, 4)  # p_t = t: local-m
    local = ref.local_weights(scores, t, mask, window=10)
    expected = scores.masked_fill(~mask[:, None, :], float("-inf")).softmax(dim=-1)
    torch.testing.assert_close(local, expected)


def test_the_gaussian_carries_the_gradient_to_the_centres():
    """The window's edges have no gradient; the Gaussian's does, and it is the derivative of
    exp(−(s − p)² / (2σ²)) (torch.autograd.gradcheck against finite differences)."""
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(2, 3, 7, generator=g, dtype=torch.float64)
    centres = (torch.rand(2, 3, generator=g, dtype=torch.float64) * 6).requires_grad_()
    mask = torch.ones(2, 7, dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda c: ref.local_weights(scores, c, mask, 2, True), centres)
    assert not ref.local_weights(scores, centres, mask, 2).requires_grad  # no Gaussian: no path


def test_an_empty_window_gives_zeros_and_finite_gradients():
    scores = torch.randn(1, 2, 5, dtype=torch.float64, requires_grad=True)
    centres = torch.tensor([[2.0, 12.0]], dtype=torch.float64, requires_grad=True)
    w = ref.local_weights(scores, centres, torch.ones(1, 5, dtype=torch.bool), 2, gaussian=True)
    assert torch.equal(w[0, 1], torch.zeros(5, dtype=torch.float64))
    (w * torch.randn_like(w)).sum().backward()
    assert torch.isfinite(scores.grad).all() and torch.isfinite(centres.grad).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("score", ["dot", "general"])
def test_the_global_layer_equals_torch_sdpa_with_scale_one(score, device):
    """With no window and no scaling, the dot and general weights and contexts are torch's scaled
    dot product attention with scale=1 (the general score's query multiplied by W_a first)."""
    torch.manual_seed(0)
    layer = ref.LuongAttention(8, score).to(device)
    q = torch.randn(3, 4, 8, device=device)  # (B, L, D)
    k = torch.randn(3, 6, 8, device=device)  # (B, S, D)
    mask = torch.arange(6, device=device) < torch.tensor([6, 2, 4], device=device)[:, None]
    q_torch = q if score == "dot" else q @ layer.W_a.weight  # (B, L, D)
    allowed = mask[:, None, :]  # (B, 1, S)
    context = F.scaled_dot_product_attention(q_torch, k, k, attn_mask=allowed, scale=1.0)
    identity = torch.eye(6, device=device).expand(3, 6, 6)  # values that return the weights
    weights = F.scaled_dot_product_attention(q_torch, k, identity, attn_mask=allowed, scale=1.0)
    torch.testing.assert_close(layer.attention_weights(q, k, mask), weights)
    expected = torch.tanh(layer.W_c(torch.cat([context, q], dim=-1)))
    torch.testing.assert_close(layer(q, k, mask), expected)


@pytest.mark.parametrize("score", ref.SCORES)
def test_local_p_weights_and_a_sentence_alone_is_the_same(score):
    torch.manual_seed(1)
    layer = ref.LuongAttention(6, score, attn_dim=4, window=2).double()
    q, k = torch.randn(2, 3, 6, dtype=torch.float64), torch.randn(2, 5, 6, dtype=torch.float64)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])  # (B, S)
    w = layer.attention_weights(q, k, mask)  # (B, L, S)
    p = ref.predicted_positions(q, layer.W_p.weight, layer.v_p, mask.sum(-1))
    torch.testing.assert_close(
        w, local_weights_one_query_at_a_time(layer.scores(q, k), p, mask, 2, gaussian=True)
    )
    assert torch.all(w[1, :, 2:] == 0)
    assert bool((w.sum(-1) <= 1 + 1e-12).all())  # not renormalised after the Gaussian
    torch.testing.assert_close(w[1:, :, :2], layer.attention_weights(q[1:], k[1:, :2]))
    torch.testing.assert_close(layer(q, k, mask)[1:], layer(q[1:], k[1:, :2]))


@pytest.mark.parametrize("window", [None, 2])
@pytest.mark.parametrize("score", ref.SCORES)
def test_a_sentence_that_is_all_padding_gives_zeros_and_finite_gradients(score, window):
    torch.manual_seed(2)
    layer = ref.LuongAttention(6, score, window=window).double()
    q = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, False, False], [False] * 4])  # (B, S)
    w = layer.attention_weights(q, k, mask)
    assert torch.equal(w[1], torch.zeros(3, 4, dtype=torch.float64))
    out = layer(q, k, mask)  # (B, L, D)
    zero_context = torch.zeros(3, 6, dtype=torch.float64)
    torch.testing.assert_close(out[1], torch.tanh(layer.W_c(torch.cat([zero_context, q[1]], -1))))
    (out * torch.randn_like(out)).sum().backward()
    for t in (q, k, *layer.parameters()):
        assert t.grad is not None and torch.isfinite(t.grad).all()


def test_layer_parameters_and_their_shapes():
    shapes = {
        "dot": {"W_c.weight": (8, 16)},
        "general": {"W_a.weight": (8, 8), "W_c.weight": (8, 16)},
        "concat": {"W_a.weight": (5, 16), "v_a": (5,), "W_c.weight": (8, 16)},
    }
    for score, expected in shapes.items():
        layer = ref.LuongAttention(8, score, attn_dim=5)
        assert {n: tuple(p.shape) for n, p in layer.named_parameters()} == expected
        local = ref.LuongAttention(8, score, attn_dim=5, window=3)
        assert {n: tuple(p.shape) for n, p in local.named_parameters()} == {
            **expected,
            "W_p.weight": (5, 8),
            "v_p": (5,),
        }
    assert ref.LuongAttention(8, "concat").v_a.shape == (8,)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ref.dot_score(torch.ones(2, 3), torch.ones(2, 4)), "same width D"),
        (lambda: ref.dot_score([[1.0]], torch.ones(1, 1)), "must be a torch.Tensor"),
        (
            lambda: ref.general_score(torch.ones(2, 3), torch.ones(2, 4), torch.ones(4, 3)),
            "weight must have shape",
        ),
        (
            lambda: ref.predicted_positions(
                torch.ones(1, 2, 3), torch.ones(4, 5), torch.ones(4), torch.tensor([2])
            ),
            "weight must be (A, D)",
        ),
        (lambda: ref.local_weights(torch.ones(1, 2, 3), torch.ones(1, 2), None, 0), "window must"),
        (
            lambda: ref.local_weights(torch.ones(1, 2, 3), torch.ones(2, 1), None, 1),
            "centres (B, L)",
        ),
        (lambda: ref.LuongAttention(8, "cosine"), "score must be one of"),
        (lambda: ref.LuongAttention(8, window=0), "window must be None or an int"),
        (lambda: ref.LuongAttention(0), "widths must be positive"),
        (
            lambda: ref.LuongAttention(4, "dot").attention_weights(
                torch.ones(1, 2, 4), torch.ones(1, 3, 4), torch.ones(1, 3)
            ),
            "mask must be boolean",
        ),
    ],
)
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises(
        (ValueError, TypeError), match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        call()


def test_the_layer_checks_stand_the_reference_in_for_the_students_broken_parts():
    """A wrong local_weights in the student's namespace costs Part 2 only: the layer is checked
    with the reference's standing in for it."""
    namespace = {"__name__": "student", "torch": torch}
    exec(
        "def predicted_positions(query, weight, v, lengths):\n"
        "    raise NotImplementedError()\n"
        "def local_weights(scores, centres, mask, window, gaussian=False):\n"
        "    return scores.softmax(dim=-1)   # wrong: no window, no mask\n",
        namespace,
    )
    namespace["Reference"] = ref.LuongAttention
    exec(
        "class LuongAttention(Reference):\n"
        "    def attention_weights(self, query, keys, mask=None):\n"
        "        if self.window is None:\n"
        "            return super().attention_weights(query, keys, mask)\n"
        "        B, S = keys.shape[:2]\n"
        "        n = mask.sum(-1) if mask is not None else torch.full((B,), S)\n"
        "        p = predicted_positions(query, self.W_p.weight, self.v_p, n)\n"
        "        e = self.scores(query, keys)\n"
        "        return local_weights(e, p, mask, self.window, gaussian=True)\n",
        namespace,
    )
    checks.check_local_attention_weights(namespace["LuongAttention"])
    checks.check_local_attention_output(namespace["LuongAttention"])
    with pytest.raises(CheckFailed, match="raised NotImplementedError"):
        checks.check_predicted_positions(namespace["predicted_positions"])
    with pytest.raises(CheckFailed):
        checks.check_local_window(namespace["local_weights"])
    assert namespace["local_weights"](torch.zeros(1, 1, 2), None, None, 1).sum() == 1  # put back


@pytest.mark.parametrize(
    "name, mistake, failing",
    [
        ("local_weights", "window_excludes_its_ends", {"local_weights_window_tests"}),
        ("local_weights", "window_ignores_the_mask", {"local_weights_window_tests"}),
        ("local_weights", "gaussian_sigma_is_the_window", {"local_weights_gaussian_tests"}),
        ("local_weights", "gaussian_centres_detached", {"local_weights_gaussian_tests"}),
        ("LuongAttention", "LuongNoGaussian", {"luong_attention_weights_tests"}),
        ("LuongAttention", "LuongPositionsDetached", {"luong_attention_weights_tests"}),
        ("LuongAttention", "LuongRenormalisedContext", {"luong_attention_output_tests"}),
    ],
)
def test_a_mistake_costs_its_own_behaviours_points_only(name, mistake, failing):
    """The window and the Gaussian, the weights and the output, are graded apart."""
    assert failing_cells(SLUG, name, wrong.WRONG[name][mistake].impl) == failing


def test_failing_check_does_not_print_hidden_values():
    seen = set()

    def spy(scores, centres, mask, window, gaussian=False):
        seen.update(f"{x:.4f}" for x in scores.flatten().tolist()[:20])
        return ref.local_weights(scores, centres, mask, window, gaussian) + 1.0  # wrong everywhere

    with pytest.raises(CheckFailed) as caught:
        checks.check_local_window(spy)
    assert not any(value in str(caught.value) for value in seen)


def test_check_reports_an_exception_as_a_failure_naming_the_function():
    def broken(query, weight, v, lengths):
        raise NotImplementedError()

    with pytest.raises(CheckFailed, match="predicted_positions.*raised NotImplementedError"):
        checks.check_predicted_positions(broken)


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="LOUD SKIP: no CUDA device here; a CPU-only answer is only caught when grading on a GPU",
)
def test_cpu_only_answer_fails_when_the_checks_run_on_cuda():
    def cpu_only(scores, centres, mask, window, gaussian=False):
        mask = None if mask is None else mask.cpu()
        return ref.local_weights(scores.cpu(), centres.cpu(), mask, window, gaussian)

    with pytest.raises(CheckFailed, match="on cpu but the inputs were on cuda"):
        checks.check_local_window(cpu_only)
