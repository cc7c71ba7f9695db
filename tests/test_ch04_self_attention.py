"""Chapter 4's reference against torch's built-in, and what its checks promise beyond the contract.

What every chapter must meet (the reference passes its checks, each known mistake fails its part
and only its part, ...) is in test_chapter_contract.py.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from autograder.chapters.ch04_self_attention import checks, wrong
from autograder.chapters.ch04_self_attention import reference as ref
from autograder.toolkit import TOLERANCES, CheckFailed

from chapter_helpers import DEVICES, visible_failures, visible_failures_of_correct_answers

SLUG = "ch04_self_attention"


def draw(batch, L, S, E, Ev, seed, dtype, device):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*batch, L, E, generator=g)  # (..., L, E)
    k = torch.randn(*batch, S, E, generator=g)  # (..., S, E)
    v = torch.randn(*batch, S, Ev, generator=g)  # (..., S, Ev)
    return (t.to(device=device, dtype=dtype) for t in (q, k, v))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize(
    "batch, L, S, E, Ev",
    [
        ((), 1, 1, 1, 1),
        ((), 7, 7, 16, 16),
        ((2,), 5, 9, 8, 3),
        ((2, 4), 6, 3, 32, 32),
        ((3, 1, 2), 4, 4, 4, 8),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "bool_broadcast", "float", "causal"])
def test_reference_matches_torch(batch, L, S, E, Ev, seed, dtype, device, mask_kind):
    q, k, v = draw(batch, L, S, E, Ev, seed, dtype, device)
    g = torch.Generator().manual_seed(seed + 7)
    kwargs = {}
    if mask_kind == "bool":
        kwargs["attn_mask"] = (torch.rand(*batch, L, S, generator=g) < 0.7).to(device)
    elif mask_kind == "bool_broadcast":
        kwargs["attn_mask"] = (torch.rand(L, S, generator=g) < 0.7).to(device)
    elif mask_kind == "float":
        kwargs["attn_mask"] = torch.randn(L, S, generator=g).to(device=device, dtype=dtype)
    elif mask_kind == "causal":
        kwargs["is_causal"] = True
    for scale in (None, 0.37):
        ours = ref.scaled_dot_product_attention(q, k, v, scale=scale, **kwargs)  # (..., L, Ev)
        theirs = F.scaled_dot_product_attention(q, k, v, scale=scale, **kwargs)
        assert ours.shape == (*batch, L, Ev) and ours.dtype == dtype
        rtol, atol = TOLERANCES[dtype]
        torch.testing.assert_close(ours, theirs, rtol=rtol, atol=atol)


def test_fully_masked_row_gives_zeros_not_nan():
    q, k, v = draw((2,), 3, 4, 8, 5, 0, torch.float32, "cpu")
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1] = False
    weights = ref.attention_weights(q, k, attn_mask=mask)  # (2, 3, 4)
    out = ref.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (2, 3, 5)
    assert not torch.isnan(weights).any() and not torch.isnan(out).any()
    assert torch.equal(weights[:, 1], torch.zeros(2, 4))
    assert torch.equal(out[:, 1], torch.zeros(2, 5))
    torch.testing.assert_close(weights[:, [0, 2]].sum(-1), torch.ones(2, 2))
    # the same through a float mask of -inf
    float_mask = torch.zeros(3, 4).masked_fill(~mask, float("-inf"))
    torch.testing.assert_close(ref.attention_weights(q, k, attn_mask=float_mask), weights)


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_fully_masked_row_has_finite_gradients_equal_to_torch(kind):
    q, k, v = draw((2,), 3, 4, 8, 5, 1, torch.float64, "cpu")
    allowed = torch.ones(3, 4, dtype=torch.bool)
    allowed[1] = False
    mask = allowed if kind == "bool" else torch.zeros(3, 4, dtype=torch.float64).masked_fill(
        ~allowed, float("-inf")
    )
    grad_out = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grads = []
    for fn in (ref.scaled_dot_product_attention, F.scaled_dot_product_attention):
        inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        (fn(*inputs, attn_mask=mask) * grad_out).sum().backward()
        grads.append([t.grad for t in inputs])
    for ours, theirs in zip(*grads, strict=True):
        assert torch.isfinite(ours).all()
        torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("L, S", [(3, 3), (2, 5), (5, 2)])
def test_causal_mask_is_top_left_aligned_like_torch(L, S):
    q, k, v = draw((), L, S, 4, S, 3, torch.float64, "cpu")
    v = torch.eye(S, dtype=torch.float64)  # output row l = the weights of query l
    theirs = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (L, S)
    allowed_by_torch = theirs != 0
    assert torch.equal(ref.causal_mask(L, S), allowed_by_torch)
    torch.testing.assert_close(ref.attention_weights(q, k, is_causal=True), theirs)


def test_masked_positions_get_exactly_zero_weight_and_rows_sum_to_one():
    q, k, _ = draw((4,), 6, 6, 8, 8, 5, torch.float32, "cpu")
    mask = torch.rand(4, 6, 6, generator=torch.Generator().manual_seed(0)) < 0.5
    mask[..., 0] = True
    w = ref.attention_weights(q, k, attn_mask=mask)  # (4, 6, 6)
    assert torch.all(w[~mask] == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(4, 6))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ref.attention_scores(torch.ones(3, 4), torch.ones(3, 5)), "same width E"),
        (lambda: ref.attention_scores(torch.ones(4), torch.ones(3, 4)), "shape (..., length"),
        (lambda: ref.attention_scores([[1.0]], torch.ones(1, 1)), "must be a torch.Tensor"),
        (
            lambda: ref.scaled_dot_product_attention(
                torch.ones(2, 4), torch.ones(3, 4), torch.ones(2, 4)
            ),
            "same length S",
        ),
        (
            lambda: ref.attention_weights(
                torch.ones(2, 4),
                torch.ones(2, 4),
                attn_mask=torch.ones(2, 2, dtype=torch.bool),
                is_causal=True,
            ),
            "not both",
        ),
        (
            lambda: ref.attention_weights(
                torch.ones(2, 4), torch.ones(2, 4), attn_mask=torch.ones(2, 2, dtype=torch.long)
            ),
            "bool or floating point",
        ),
        (lambda: ref.SelfAttention(0), "embed_dim must be positive"),
        (lambda: ref.SelfAttention(4)(torch.ones(1, 2, 3)), "expected input width 4"),
    ],
)
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(")):
        call()


@pytest.mark.parametrize("device", DEVICES)
def test_self_attention_reference_is_sdpa_over_three_projections(device):
    torch.manual_seed(0)
    module = ref.SelfAttention(16, bias=True).to(device)
    x = torch.randn(2, 5, 16, device=device)  # (B, L, E)
    expected = F.scaled_dot_product_attention(module.W_q(x), module.W_k(x), module.W_v(x))
    torch.testing.assert_close(module(x), expected)
    perm = torch.randperm(5, device=device)
    torch.testing.assert_close(module(x[:, perm]), module(x)[:, perm])


def test_measured_variance_grows_like_d_k_and_scaling_removes_it():
    d_ks = [1, 16, 256]
    unscaled = ref.measure_score_variance(d_ks, n_samples=20_000, seed=0)
    scaled = ref.measure_score_variance(d_ks, n_samples=20_000, scaled=True, seed=0)
    torch.testing.assert_close(unscaled, torch.tensor(d_ks, dtype=torch.float64), rtol=0.05, atol=0)
    torch.testing.assert_close(scaled, torch.ones(3, dtype=torch.float64), rtol=0.05, atol=0)
    assert torch.equal(unscaled, ref.measure_score_variance(d_ks, n_samples=20_000, seed=0))


def test_torch_builtin_passes_the_sdpa_checks():
    def builtin(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
        return F.scaled_dot_product_attention(
            query, key, value, attn_mask=attn_mask, is_causal=is_causal, scale=scale,
            enable_gqa=enable_gqa,
        )  # fmt: skip

    checks.check_scaled_dot_product_attention(builtin)
    checks.check_scaled_dot_product_attention_gqa(builtin)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "batch, Hq, Hkv", [((), 4, 2), ((2,), 6, 3), ((2,), 8, 1), ((1, 2), 4, 4), ((3,), 6, 2)]
)
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float", "causal"])
def test_grouped_query_reference_matches_torch(batch, Hq, Hkv, dtype, device, mask_kind):
    g = torch.Generator().manual_seed(Hq * 10 + Hkv)
    q = torch.randn(*batch, Hq, 5, 8, generator=g).to(device=device, dtype=dtype)
    k = torch.randn(*batch, Hkv, 7, 8, generator=g).to(device=device, dtype=dtype)
    v = torch.randn(*batch, Hkv, 7, 3, generator=g).to(device=device, dtype=dtype)
    kwargs = {}
    allowed = torch.rand(5, 7, generator=g) < 0.6
    allowed[:, 0] = True
    if mask_kind == "bool":
        kwargs["attn_mask"] = allowed.to(device)
    elif mask_kind == "float":
        additive = torch.zeros(5, 7).masked_fill(~allowed, float("-inf"))
        kwargs["attn_mask"] = additive.to(device, dtype)
    elif mask_kind == "causal":
        kwargs["is_causal"] = True
    ours = ref.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kwargs)
    theirs = F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kwargs)
    assert ours.shape == (*batch, Hq, 5, 3)
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=atol)
    # consecutive query heads share a key/value head: head h reads head h // (Hq / Hkv)
    head = Hq - 1
    alone = ref.scaled_dot_product_attention(
        q[..., head, :, :], k[..., head // (Hq // Hkv), :, :], v[..., head // (Hq // Hkv), :, :],
        **kwargs,
    )  # fmt: skip
    torch.testing.assert_close(ours[..., head, :, :], alone, rtol=rtol, atol=atol)


def test_grouped_query_heads_that_do_not_divide_are_an_error():
    with pytest.raises(ValueError, match="must divide"):
        ref.attention_scores(torch.ones(6, 2, 4), torch.ones(4, 2, 4), enable_gqa=True)
    with pytest.raises(ValueError, match="head dimension"):
        ref.attention_scores(torch.ones(2, 4), torch.ones(2, 4), enable_gqa=True)


@pytest.mark.parametrize(
    "name, mistake, cell, part",
    [
        ("attention_scores", wrong.scores_gqa_tiled, "attention_weights_visible_tests", 1),
        ("attention_scores", wrong.scores_ignores_scale, "attention_weights_visible_tests", 1),
        ("attention_weights", wrong.weights_flipped_polarity, "sdpa_visible_tests", 2),
        ("attention_weights", wrong.weights_drops_gqa, "sdpa_visible_tests", 2),
        ("scaled_dot_product_attention", wrong.sdpa_cpu_only, "self_attention_visible_tests", 3),
        (
            "scaled_dot_product_attention",
            wrong.WRONG["scaled_dot_product_attention"]["sdpa_causal_off_by_one"].impl,
            "self_attention_visible_tests",
            3,
        ),
    ],
)
def test_a_later_parts_visible_test_sends_an_earlier_mistake_to_its_part(name, mistake, cell, part):
    assert f"fix Part {part} first" in visible_failures(SLUG, {name: mistake})[cell]


def test_the_solution_and_every_correct_variant_pass_the_visible_tests():
    assert not visible_failures_of_correct_answers(SLUG)


def test_the_visible_tests_tell_the_usual_head_pairing_from_the_right_one():
    """repeat (0, 1, 0, 1) against repeat_interleave (0, 0, 1, 1): the promise the instructions
    make about grouped-query heads, in the visible tests as in the hidden ones."""
    failures = visible_failures(SLUG, {"attention_scores": wrong.scores_gqa_tiled})
    assert "repeat_interleave" in failures["attention_scores_visible_tests"]
    with pytest.raises(CheckFailed, match="repeat_interleave"):
        checks.check_attention_scores_gqa(wrong.scores_gqa_tiled)


def test_failing_check_does_not_print_hidden_values():
    seen = set()

    def spy(query, key, scale=None, enable_gqa=False):
        seen.update(f"{x:.4f}" for x in query.flatten().tolist()[:20])
        return query @ key.transpose(-2, -1)  # unscaled: fails

    with pytest.raises(CheckFailed) as caught:
        checks.check_attention_scores(spy)
    assert not any(value in str(caught.value) for value in seen)


def test_check_reports_an_exception_as_a_failure_naming_the_function():
    def broken(query, key, scale=None, enable_gqa=False):
        raise NotImplementedError()

    with pytest.raises(CheckFailed, match="attention_scores.*raised NotImplementedError"):
        checks.check_attention_scores(broken)


def test_scale_default_is_inverse_sqrt_of_width():
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    k = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    assert ref.attention_scores(q, k).item() == pytest.approx(2.0 / math.sqrt(4))


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="LOUD SKIP: no CUDA device here; a CPU-only answer is only caught when grading on a GPU",
)
def test_cpu_only_answer_fails_when_the_checks_run_on_cuda():
    def cpu_only(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
        mask = None if attn_mask is None else attn_mask.cpu()
        return ref.scaled_dot_product_attention(
            query.cpu(), key.cpu(), value.cpu(), attn_mask=mask, is_causal=is_causal, scale=scale,
            enable_gqa=enable_gqa,
        )  # fmt: skip

    with pytest.raises(CheckFailed, match="on cpu but the inputs were on cuda"):
        checks.check_scaled_dot_product_attention(cpu_only)
