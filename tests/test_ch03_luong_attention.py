"""Chapter 3's reference against the formulas and torch's built-in, and what its checks promise
beyond the contract.

What every chapter must meet (the reference passes its checks, each known mistake fails its part
and only its part, ...) is in test_chapter_contract.py.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from autograder.chapters.ch03_luong_attention import checks
from autograder.chapters.ch03_luong_attention import reference as ref
from autograder.toolkit import TOLERANCES, CheckFailed

from chapter_helpers import DEVICES


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


def test_scores_broadcast_over_leading_dimensions():
    q, k, W_gen, W_cat, v = draw((2, 3), 4, 5, 6, 6, 7, seed=0)
    for fn, args in (
        (ref.dot_score, ()),
        (ref.general_score, (W_gen,)),
        (ref.concat_score, (W_cat, v)),
    ):
        out = fn(q, k, *args)  # (2, 3, L, S)
        assert out.shape == (2, 3, 4, 5)
        for b in range(2):
            for h in range(3):
                torch.testing.assert_close(out[b, h], fn(q[b, h], k[b, h], *args))


def test_general_with_identity_is_dot_and_concat_is_bahdanaus_additive_score():
    q, k, _, W_cat, v = draw((2,), 3, 5, 4, 4, 6, seed=1)
    torch.testing.assert_close(ref.general_score(q, k, torch.eye(4, dtype=q.dtype)),
                               ref.dot_score(q, k))  # fmt: skip
    W_s, W_h = W_cat[:, :4], W_cat[:, 4:]  # (A, Dq), (A, Dk)
    additive = torch.tanh((q @ W_s.T).unsqueeze(-2) + (k @ W_h.T).unsqueeze(-3)) @ v  # (B, L, S)
    torch.testing.assert_close(ref.concat_score(q, k, W_cat, v), additive)


@pytest.mark.parametrize("r", [1, 3, 8])
def test_general_score_is_a_dot_product_of_projections(r):
    """h_tᵀ W_a h̄_s = (W_qᵀ h_t) · (W_kᵀ h̄_s) for W_a = W_q W_kᵀ, of rank r (the page's bridge)."""
    g = torch.Generator().manual_seed(r)
    W_q = torch.randn(8, r, generator=g, dtype=torch.float64)  # (Dq, r)
    W_k = torch.randn(6, r, generator=g, dtype=torch.float64)  # (Dk, r)
    q, k, _, _, _ = draw((3,), 4, 5, 8, 6, 2, seed=r)
    W_a = W_q @ W_k.T  # (Dq, Dk)
    torch.testing.assert_close(ref.general_score(q, k, W_a), ref.dot_score(q @ W_q, k @ W_k))
    assert torch.linalg.matrix_rank(W_a) == min(r, 6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("score", ["dot", "general"])
def test_layer_equals_torch_sdpa_with_scale_one(score, device):
    """With no scaling, the dot and general weights and contexts are torch's scaled dot product
    attention with scale=1 (the general score's query multiplied by W_a first)."""
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
def test_padding_gets_zero_weight_and_a_sentence_alone_is_the_same(score):
    torch.manual_seed(1)
    layer = ref.LuongAttention(6, score, attn_dim=4)
    q, k = torch.randn(2, 3, 6), torch.randn(2, 5, 6)  # (B, L, D), (B, S, D)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])  # (B, S)
    w = layer.attention_weights(q, k, mask)  # (B, L, S)
    assert torch.all(w[1, :, 2:] == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3))
    torch.testing.assert_close(w[1:, :, :2], layer.attention_weights(q[1:], k[1:, :2]))
    torch.testing.assert_close(layer(q, k, mask)[1:], layer(q[1:], k[1:, :2]))


@pytest.mark.parametrize("score", ref.SCORES)
def test_a_sentence_that_is_all_padding_gives_zeros_and_finite_gradients(score):
    torch.manual_seed(2)
    layer = ref.LuongAttention(6, score).double()
    q = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, False, False], [False] * 4])  # (B, S)
    w = layer.attention_weights(q, k, mask)
    assert torch.equal(w[1], torch.zeros(3, 4))
    out = layer(q, k, mask)  # (B, L, D)
    torch.testing.assert_close(out[1], torch.tanh(layer.W_c(torch.cat([torch.zeros(3, 6,
                               dtype=torch.float64), q[1]], dim=-1))))  # fmt: skip
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
    assert ref.LuongAttention(8, "concat").v_a.shape == (8,)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ref.dot_score(torch.ones(2, 3), torch.ones(2, 4)), "same width D"),
        (lambda: ref.dot_score(torch.ones(3), torch.ones(2, 3)), "shape (..., length"),
        (lambda: ref.dot_score([[1.0]], torch.ones(1, 1)), "must be a torch.Tensor"),
        (lambda: ref.general_score(torch.ones(2, 3), torch.ones(2, 4), torch.ones(4, 3)),
         "weight must have shape"),  # fmt: skip
        (lambda: ref.concat_score(torch.ones(2, 3), torch.ones(2, 4), torch.ones(5, 6),
                                  torch.ones(5)), "weight must have shape"),  # fmt: skip
        (lambda: ref.concat_score(torch.ones(2, 3), torch.ones(2, 4), torch.ones(5, 7),
                                  torch.ones(4)), "v must have shape"),  # fmt: skip
        (lambda: ref.LuongAttention(8, "cosine"), "score must be one of"),
        (lambda: ref.LuongAttention(0), "widths must be positive"),
        (lambda: ref.LuongAttention(4, "dot").attention_weights(
            torch.ones(1, 2, 4), torch.ones(1, 3, 4), torch.ones(1, 3)), "mask must be boolean"),
    ],
)
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(")):
        call()


def test_the_layer_check_stands_the_reference_scores_in_for_the_students():
    """A wrong dot_score in the student's namespace does not cost the LuongAttention part."""
    namespace = {"__name__": "student"}
    source = '''
import math
import torch
from torch import nn

def dot_score(query, keys):
    return query @ keys.transpose(-2, -1) / math.sqrt(query.size(-1))   # wrong: scaled

def general_score(query, keys, weight):
    raise NotImplementedError()

def concat_score(query, keys, weight, v):
    raise NotImplementedError()
'''
    exec(source, namespace)
    namespace["Reference"] = ref.LuongAttention
    exec(
        "class LuongAttention(Reference):\n"
        "    def scores(self, query, keys):\n"
        "        if self.score == 'dot':\n"
        "            return dot_score(query, keys)\n"
        "        if self.score == 'general':\n"
        "            return general_score(query, keys, self.W_a.weight)\n"
        "        return concat_score(query, keys, self.W_a.weight, self.v_a)\n",
        namespace,
    )
    checks.check_luong_attention(namespace["LuongAttention"])
    with pytest.raises(CheckFailed, match="not scaled|divided by sqrt"):
        checks.check_dot_score(namespace["dot_score"])
    assert namespace["dot_score"](torch.ones(1, 4), torch.ones(1, 4)).item() == 2.0  # put back


def test_failing_check_does_not_print_hidden_values():
    seen = set()

    def spy(query, keys, weight, v):
        seen.update(f"{x:.4f}" for x in query.flatten().tolist()[:20])
        return ref.concat_score(query, keys, weight, v) + 1.0  # wrong everywhere

    with pytest.raises(CheckFailed) as caught:
        checks.check_concat_score(spy)
    assert not any(value in str(caught.value) for value in seen)


def test_check_reports_an_exception_as_a_failure_naming_the_function():
    def broken(query, keys):
        raise NotImplementedError()

    with pytest.raises(CheckFailed, match="dot_score.*raised NotImplementedError"):
        checks.check_dot_score(broken)


def test_unscaled_is_what_the_dot_check_wants():
    q, k = torch.tensor([[2.0, 0.0, 0.0, 0.0]]), torch.tensor([[3.0, 0.0, 0.0, 0.0]])
    assert ref.dot_score(q, k).item() == 6.0 != 6.0 / math.sqrt(4)


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="LOUD SKIP: no CUDA device here; a CPU-only answer is only caught when grading on a GPU",
)
def test_cpu_only_answer_fails_when_the_checks_run_on_cuda():
    def cpu_only(query, keys):
        return ref.dot_score(query.cpu(), keys.cpu())

    with pytest.raises(CheckFailed, match="on cpu but the inputs were on cuda"):
        checks.check_dot_score(cpu_only)
