"""Chapter 5's reference against nn.MultiheadAttention, and what its checks promise beyond the
contract.

What every chapter must meet (the reference passes its checks, each known mistake fails its part
and only its part, ...) is in test_chapter_contract.py.
"""

import warnings

import pytest
import torch
from torch import nn

from autograder.chapters.ch05_multi_head_attention import checks, wrong
from autograder.chapters.ch05_multi_head_attention import reference as ref
from autograder.toolkit import TOLERANCES, CheckFailed

from chapter_helpers import DEVICES


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


def test_split_and_merge_are_inverse_and_match_torch_head_layout():
    x = torch.randn(2, 5, 12)  # (B, L, E)
    heads = ref.split_heads(x, 3)  # (B, H, L, D)
    assert heads.shape == (2, 3, 5, 4)
    assert torch.equal(heads[:, 1], x[:, :, 4:8])
    assert torch.equal(ref.merge_heads(heads), x)
    with pytest.raises(ValueError):
        ref.split_heads(x, 5)
    with pytest.raises(ValueError):
        ref.MultiHeadAttention(10, 3)


def test_parameter_count_equals_one_wide_head():
    """The paper's layer: 8 heads of 64 in d_model = 512 cost what one head of 512 costs."""
    multi = ref.MultiHeadAttention(512, 8)
    single = ref.MultiHeadAttention(512, 1)
    torch_layer = nn.MultiheadAttention(512, 8, batch_first=True)
    count = [sum(p.numel() for p in m.parameters()) for m in (multi, single, torch_layer)]
    assert count[0] == count[1] == count[2] == 4 * (512 * 512 + 512)


def test_the_missing_transpose_runs_silently_and_the_property_catches_it():
    """The bug the chapter measures: no error in self-attention, caught by the locality check
    before any value is compared."""
    with pytest.raises(CheckFailed, match="across heads, not across positions"):
        checks.check_multi_head_attention(wrong.MHAMissingTranspose)
    torch.manual_seed(0)
    layer = wrong.MHAMissingTranspose(16, 4)
    x = torch.randn(2, 5, 16)
    out, _ = layer(x, x, x, need_weights=False)  # runs: no error
    changed = x.clone()
    changed[:, 0] += 1.0
    after, _ = layer(changed, changed, changed, need_weights=False)
    torch.testing.assert_close(after[:, 1:], out[:, 1:])  # no position sees another


@pytest.mark.parametrize(
    "mistake, words",
    [
        ("MHAScaleByE", "sqrt(E)"),
        ("MHATorchPaddingPolarity", "key_padding_mask is used the wrong way round"),
        ("MHAFlippedAttnMask", "attn_mask is used the wrong way round"),
        ("MHASummedWeights", "do not sum to 1"),
        ("MHANanWhenFullyMasked", "NaN"),
    ],
)
def test_mha_messages_name_the_property(mistake, words):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckFailed, match=words.replace("(", r"\(").replace(")", r"\)")):
            checks.check_multi_head_attention(wrong.WRONG["MultiHeadAttention"][mistake])


def test_split_message_names_the_missing_transpose():
    with pytest.raises(CheckFailed, match="transpose L and H"):
        checks.check_split_heads(wrong.split_no_transpose)
