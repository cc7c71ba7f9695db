"""Chapter 5's reference against nn.MultiheadAttention, and what its checks promise beyond the
contract.

What every chapter must meet (the reference passes its checks, each known mistake fails its part
and only its part, ...) is in test_chapter_contract.py.
"""

import pytest
import torch
from torch import nn

from autograder.chapters.ch05_multi_head_attention import checks, wrong
from autograder.chapters.ch05_multi_head_attention import reference as ref
from autograder.toolkit import TOLERANCES, CheckFailed

from chapter_helpers import DEVICES, visible_failures, visible_failures_of_correct_answers

SLUG = "ch05_multi_head_attention"


def draw(B, L, S, E, seed, dtype, device):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, E, generator=g)  # (B, L, E)
    k = torch.randn(B, S, E, generator=g)  # (B, S, E)
    v = torch.randn(B, S, E, generator=g)  # (B, S, E)
    return (t.to(device=device, dtype=dtype) for t in (x, k, v))


def masks(kind, B, L, S, seed, device, dtype):
    """(our kwargs, torch's kwargs): ours True = allowed, torch's True = not allowed. No query
    has every key masked (torch gives NaN there)."""
    g = torch.Generator().manual_seed(seed + 1)
    lengths = torch.randint(1, S + 1, (B,), generator=g)  # (B,)
    padding = (torch.arange(S)[None, :] < lengths[:, None]).to(device)  # (B, S)
    causal = torch.ones(L, S, dtype=torch.bool, device=device).tril()  # (L, S), key 0 always on
    if kind == "none":
        return {}, {}
    if kind == "padding":
        return {"key_padding_mask": padding}, {"key_padding_mask": ~padding}
    if kind == "causal":
        return {"attn_mask": causal}, {"attn_mask": ~causal}
    if kind == "both":
        ours = {"key_padding_mask": padding, "attn_mask": causal}
        return ours, {"key_padding_mask": ~padding, "attn_mask": ~causal}
    if kind == "float":
        additive = torch.zeros(L, S, dtype=dtype, device=device).masked_fill(~causal, float("-inf"))
        pad = torch.zeros(B, S, dtype=dtype, device=device).masked_fill(~padding, float("-inf"))
        return {"key_padding_mask": padding, "attn_mask": additive}, {
            "key_padding_mask": pad,
            "attn_mask": additive,
        }
    raise ValueError(kind)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "E, H, B, L, S",
    [(16, 4, 2, 5, 5), (24, 3, 3, 4, 7), (8, 8, 1, 1, 6), (12, 1, 2, 3, 3), (64, 8, 2, 9, 2)],
)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mask_kind", ["none", "padding", "causal", "both", "float"])
def test_reference_matches_torch(E, H, B, L, S, bias, dtype, device, mask_kind):
    torch.manual_seed(E + H + L)
    ours = ref.MultiHeadAttention(E, H, bias=bias).to(device=device, dtype=dtype)
    theirs = ref.to_torch(ours)
    x, k, v = draw(B, L, S, E, E * L + S, dtype, device)
    our_kwargs, torch_kwargs = masks(mask_kind, B, L, S, E, device, dtype)
    rtol, atol = TOLERANCES[dtype]
    for average in (True, False):
        out, w = ours(x, k, v, average_attn_weights=average, **our_kwargs)
        t_out, t_w = theirs(x, k, v, average_attn_weights=average, **torch_kwargs)
        assert out.shape == (B, L, E) and out.dtype == dtype
        assert w.shape == ((B, L, S) if average else (B, H, L, S))
        torch.testing.assert_close(out, t_out, rtol=rtol, atol=atol)
        torch.testing.assert_close(w, t_w, rtol=rtol, atol=atol)
    if L == S:  # self-attention: the same tensor three times
        out, _ = ours(x, x, x, **({} if mask_kind in ("padding", "both", "float") else our_kwargs))
        t_out, _ = theirs(
            x, x, x, **({} if mask_kind in ("padding", "both", "float") else torch_kwargs)
        )
        torch.testing.assert_close(out, t_out, rtol=rtol, atol=atol)


@pytest.mark.parametrize("device", DEVICES)
def test_reference_gradients_match_torch(device):
    torch.manual_seed(0)
    ours = ref.MultiHeadAttention(16, 4).to(device=device, dtype=torch.float64)
    theirs = ref.to_torch(ours)
    x, k, v = draw(2, 5, 6, 16, 3, torch.float64, device)
    our_kwargs, torch_kwargs = masks("both", 2, 5, 6, 3, device, torch.float64)
    g = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    (ours(x, k, v, **our_kwargs)[0] * g.to(device)).sum().backward()
    (theirs(x, k, v, **torch_kwargs)[0] * g.to(device)).sum().backward()
    stacked = torch.cat([ours.W_q.weight.grad, ours.W_k.weight.grad, ours.W_v.weight.grad])
    torch.testing.assert_close(stacked, theirs.in_proj_weight.grad)
    torch.testing.assert_close(ours.W_o.weight.grad, theirs.out_proj.weight.grad)


def test_fully_masked_query_gives_zeros_not_nan_with_finite_gradients():
    torch.manual_seed(1)
    mha = ref.MultiHeadAttention(8, 2)
    x, k, v = draw(2, 3, 4, 8, 0, torch.float32, "cpu")
    padding = torch.tensor([[True, True, False, False], [False] * 4])  # (B, S)
    out, w = mha(x, k, v, key_padding_mask=padding)
    assert not out.isnan().any() and not w.isnan().any()
    assert torch.equal(w[1], torch.zeros(3, 4))
    torch.testing.assert_close(out[1], mha.W_o.bias.expand(3, 8))
    out.sum().backward()
    assert all(p.grad.isfinite().all() for p in mha.parameters())
    # torch's layer gives NaN for such a query: the reason the checks never compare with it there
    _, t_w = ref.to_torch(mha)(x, k, v, key_padding_mask=~padding)
    assert t_w[1].isnan().all()


@pytest.mark.parametrize(
    "shape, heads", [((5, 12), 3), ((2, 5, 12), 3), ((2, 3, 5, 12), 4), ((1, 1, 2, 3, 8), 2)]
)
def test_split_and_merge_are_inverse_for_any_leading_dimensions(shape, heads):
    x = torch.randn(*shape)  # (..., L, E)
    D = shape[-1] // heads
    split = ref.split_heads(x, heads)  # (..., H, L, D)
    assert split.shape == (*shape[:-2], heads, shape[-2], D)
    assert torch.equal(split[..., 1, :, :], x[..., D : 2 * D])  # torch's contiguous head layout
    assert torch.equal(ref.merge_heads(split), x)
    with pytest.raises(ValueError):
        ref.split_heads(x, 5)


def test_multi_head_attention_needs_heads_that_divide_the_width():
    with pytest.raises(ValueError, match="divisible"):
        ref.MultiHeadAttention(10, 3)


def test_parameter_count_equals_one_wide_head():
    """The paper's layer: 8 heads of 64 in d_model = 512 cost what one head of 512 costs."""
    multi = ref.MultiHeadAttention(512, 8)
    single = ref.MultiHeadAttention(512, 1)
    torch_layer = nn.MultiheadAttention(512, 8, batch_first=True)
    count = [sum(p.numel() for p in m.parameters()) for m in (multi, single, torch_layer)]
    assert count[0] == count[1] == count[2] == 4 * (512 * 512 + 512)


def test_the_missing_transpose_runs_silently_and_no_position_sees_another():
    """The bug the chapter measures: no error in self-attention, and each position's output
    depends on that position alone (so a changed later token, or a permutation, cannot catch it)."""
    torch.manual_seed(0)
    layer = wrong.MHAMissingTranspose(16, 4)
    x = torch.randn(2, 5, 16)
    out, _ = layer(x, x, x, need_weights=False)  # runs: no error
    changed = x.clone()
    changed[:, 0] += 1.0
    after, _ = layer(changed, changed, changed, need_weights=False)
    torch.testing.assert_close(after[:, 1:], out[:, 1:])
    perm = torch.randperm(5)
    permuted, _ = layer(x[:, perm], x[:, perm], x[:, perm], need_weights=False)
    torch.testing.assert_close(permuted, out[:, perm])


class _SelfOnly(ref.MultiHeadAttention):
    """Each query attends to its own position only: local like the missing transpose, but another
    computation, so the message must not claim the student's code is that bug."""

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None,
                need_weights=True, average_attn_weights=True):  # fmt: skip
        L = query.size(1)
        own = torch.eye(L, dtype=torch.bool, device=query.device)  # (L, L)
        return super().forward(query, key, value, key_padding_mask, own, need_weights,
                               average_attn_weights)  # fmt: skip


def test_a_layer_that_sees_no_other_position_is_named_only_when_it_is_the_missing_transpose():
    with pytest.raises(CheckFailed) as caught:
        checks.check_mha_forward(_SelfOnly)
    assert "no query looked at the changed token" in str(caught.value)
    assert "never transposed" not in str(caught.value)
    with pytest.raises(CheckFailed, match="never transposed"):
        checks.check_mha_forward(wrong.MHAMissingTranspose)


def test_split_messages_describe_the_code_that_was_written():
    """Issue 19: x.view(B, H, L, D) was told it was x.view(B, L, H, D) (the example had L = H)."""
    with pytest.raises(CheckFailed) as caught:
        checks.check_split_heads(wrong.split_view_heads_first)
    assert "reshaped straight to" in str(caught.value)
    assert "viewed as (..., L, H, D)" not in str(caught.value)
    failures = visible_failures(SLUG, {"split_heads": wrong.split_view_heads_first})
    assert "reshaped straight to (B, H, L, D)" in failures["split_heads_visible_tests"]
    failures = visible_failures(SLUG, {"split_heads": wrong.split_no_transpose})
    assert "viewed as (B, L, H, D)" in failures["split_heads_visible_tests"]


@pytest.mark.parametrize(
    "name, mistake, part",
    [
        ("split_heads", wrong.split_view_heads_first, 1),
        ("split_heads", wrong.split_interleaved, 1),
        ("merge_heads", wrong.merge_no_transpose, 2),
        ("merge_heads", wrong.merge_view_after_transpose, 2),
    ],
)
def test_the_layers_visible_test_sends_an_earlier_mistake_to_its_part(name, mistake, part):
    failures = visible_failures(SLUG, {name: mistake})
    assert f"fix Part {part} first" in failures["multi_head_attention_visible_tests"]


def test_the_solution_and_every_correct_variant_pass_the_visible_tests():
    assert not visible_failures_of_correct_answers(SLUG)
