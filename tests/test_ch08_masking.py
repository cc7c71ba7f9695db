"""Chapter 8's reference against torch's built-ins, and what its checks promise beyond the contract.

What every chapter must meet (the reference passes its checks, each known mistake fails its part
and only its part, ...) is in test_chapter_contract.py.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.bias import causal_lower_right

from autograder.chapters.ch08_masking import checks, wrong
from autograder.chapters.ch08_masking import reference as ref
from autograder.toolkit import TOLERANCES, CheckFailed

from chapter_helpers import DEVICES, failing_cells, judge_with_mistake

DTYPES = [torch.float32, torch.float64]


def _tol(dtype):
    rtol, atol = TOLERANCES[dtype]
    return {"rtol": rtol * 10, "atol": atol * 10}


def _lower_right(L, S, device):
    """torch's bottom-right causal mask, materialized (True = allowed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns that L > S gives NaN rows in its own kernel
        return causal_lower_right(L, S)._materialize(device)


# --- padding_mask -----------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pad_id", [0, 1, 7])
def test_padding_mask_is_true_exactly_at_real_tokens_wherever_the_padding_is(pad_id, device):
    g = torch.Generator().manual_seed(pad_id)
    tokens = torch.randint(0, 10, (4, 9), generator=g).to(device)
    out = ref.padding_mask(tokens, pad_id)
    assert out.dtype == torch.bool and out.shape == tokens.shape
    assert out.device.type == torch.device(device).type
    assert torch.equal(out, torch.tensor([[t != pad_id for t in row] for row in tokens.tolist()],
                                         device=device))


def test_padding_mask_equals_the_mask_from_lengths_for_right_padding_only():
    lengths = torch.tensor([5, 3, 1])
    right = torch.arange(5)[None, :] < lengths[:, None]  # (B, S)
    tokens = torch.full((3, 5), 9).masked_fill(~right, 0)
    assert torch.equal(ref.padding_mask(tokens, 0), right)
    left = tokens.flip(-1)
    assert not torch.equal(ref.padding_mask(left, 0), right)
    assert torch.equal(ref.padding_mask(left, 0), right.flip(-1))


# --- causal_mask ------------------------------------------------------------------------------

SIZES = [(1, 1), (4, 4), (3, 7), (1, 6), (7, 3), (5, 5), (2, 9)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("L, S", SIZES)
def test_causal_mask_is_torchs_lower_right_causal_bias(L, S, device):
    out = ref.causal_mask(L, S, device=device)
    assert out.dtype == torch.bool and out.shape == (L, S)
    assert out.device.type == torch.device(device).type
    assert torch.equal(out, _lower_right(L, S, device))


@pytest.mark.parametrize("L", [1, 3, 6])
def test_square_causal_mask_is_is_causal_and_generate_square_subsequent_mask(L):
    out = ref.causal_mask(L)
    assert torch.equal(out, torch.ones(L, L, dtype=torch.bool).tril())
    # torch's float mask: 0 where allowed, -inf where not
    assert torch.equal(out, nn.Transformer.generate_square_subsequent_mask(L) == 0)


@pytest.mark.parametrize("L, S", [(2, 5), (3, 4), (1, 8)])
def test_top_left_is_causal_differs_from_the_last_l_of_s_positions(L, S):
    assert not torch.equal(ref.causal_mask(L, S), torch.ones(L, S, dtype=torch.bool).tril())
    assert bool(ref.causal_mask(L, S)[-1].all())  # the last query sees every key


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("L, S", [(1, 6), (3, 6), (6, 6)])
def test_the_last_l_queries_with_the_lower_right_mask_equal_the_full_prefix(L, S, device):
    """Attention of the last L queries over all S keys (as with a cache) equals the last L rows
    of the whole sequence's causal attention: with causal_mask(L, S), not with is_causal."""
    g = torch.Generator().manual_seed(L * 10 + S)
    q, k, v = (torch.randn(2, 3, S, 8, generator=g, dtype=torch.float64).to(device)
               for _ in range(3))  # (B, H, S, D) each  # fmt: skip
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, S, D)
    last = F.scaled_dot_product_attention(q[:, :, -L:], k, v,
                                          attn_mask=ref.causal_mask(L, S, device))  # fmt: skip
    torch.testing.assert_close(last, full[:, :, -L:])
    if L != S:
        top_left = F.scaled_dot_product_attention(q[:, :, -L:], k, v, is_causal=True)
        assert (top_left - full[:, :, -L:]).abs().max() > 1e-3


def test_causal_mask_for_more_queries_than_keys_has_empty_rows():
    out = ref.causal_mask(5, 2)
    assert not out[:3].any() and bool(out[3:].any(-1).all())


# --- combine_masks ----------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("B, L, S", [(2, 4, 4), (3, 2, 5), (1, 1, 1)])
def test_combine_masks_shapes_and_values(B, L, S, device):
    g = torch.Generator().manual_seed(B + L + S)
    pad = (torch.rand(B, S, generator=g) < 0.7).to(device)  # (B, S)
    attn = (torch.rand(L, S, generator=g) < 0.7).to(device)  # (L, S)
    both = ref.combine_masks(pad, attn)
    assert both.shape == (B, 1, L, S) and both.dtype == torch.bool
    for b in range(B):
        for i in range(L):
            for j in range(S):
                assert bool(both[b, 0, i, j]) == (bool(pad[b, j]) and bool(attn[i, j]))
    assert ref.combine_masks(pad, None).shape == (B, 1, 1, S)
    assert ref.combine_masks(None, attn).shape == (1, 1, L, S)
    assert ref.combine_masks(None, None) is None


@pytest.mark.parametrize("device", DEVICES)
def test_combined_mask_in_sdpa_equals_each_sequence_cut_to_its_length(device):
    """A padded, causally masked batch gives each sequence the outputs of that sequence alone."""
    g = torch.Generator().manual_seed(0)
    lengths = [6, 4, 1]
    B, H, L, D = len(lengths), 2, 6, 8
    q, k, v = (torch.randn(B, H, L, D, generator=g, dtype=torch.float64).to(device)
               for _ in range(3))  # (B, H, L, D) each  # fmt: skip
    pad = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]  # (B, L)
    mask = ref.combine_masks(pad.to(device), ref.causal_mask(L, device=device))  # (B, 1, L, L)
    batched = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, L, D)
    for b, n in enumerate(lengths):
        alone = F.scaled_dot_product_attention(q[b : b + 1, :, :n], k[b : b + 1, :, :n],
                                               v[b : b + 1, :, :n], is_causal=True)  # fmt: skip
        torch.testing.assert_close(batched[b : b + 1, :, :n], alone)


# --- DecoderLayer -----------------------------------------------------------------------------


def _torch_layer(E, H, Fw, norm_first, device, dtype, seed=0):
    torch.manual_seed(seed)
    layer = nn.TransformerDecoderLayer(E, H, Fw, dropout=0.0, batch_first=True,
                                       norm_first=norm_first)  # fmt: skip
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.startswith("norm"):
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.3)
    return layer.to(device=device, dtype=dtype)


def _lengths_mask(B, n, shorten, device):
    """(B, n) bool, True at real tokens: sequence b has max(1, n - shorten * b) of them."""
    lengths = torch.tensor([max(1, n - shorten * b) for b in range(B)])
    return (torch.arange(n)[None, :] < lengths[:, None]).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("B, L, S, E, H, Fw", [(1, 1, 1, 8, 1, 8), (2, 5, 7, 16, 4, 32),
                                                (3, 6, 4, 12, 3, 24)])  # fmt: skip
@pytest.mark.parametrize("masks", ["none", "causal", "all"])
def test_decoder_layer_matches_torch(B, L, S, E, H, Fw, norm_first, dtype, device, masks):
    theirs = _torch_layer(E, H, Fw, norm_first, device, dtype, seed=B * 100 + L)
    ours = ref.DecoderLayer(E, H, Fw, norm_first=norm_first).to(device=device, dtype=dtype)
    ours.load_state_dict(theirs.state_dict())  # torch's names: no mapping needed
    g = torch.Generator().manual_seed(L + S)
    tgt = torch.randn(B, L, E, generator=g, dtype=torch.float64).to(device, dtype)  # (B, L, E)
    memory = torch.randn(B, S, E, generator=g, dtype=torch.float64).to(device, dtype)
    causal = ref.causal_mask(L, device=device)  # (L, L)
    tgt_pad, mem_pad = _lengths_mask(B, L, 2, device), _lengths_mask(B, S, 3, device)
    if masks == "none":
        ours_kw, their_kw = {}, {}
    elif masks == "causal":
        ours_kw, their_kw = {"tgt_mask": causal}, {"tgt_mask": ~causal}
    else:
        ours_kw = {"tgt_mask": causal, "tgt_padding_mask": tgt_pad, "memory_padding_mask": mem_pad}
        their_kw = {"tgt_mask": ~causal, "tgt_key_padding_mask": ~tgt_pad,
                    "memory_key_padding_mask": ~mem_pad}  # fmt: skip
    out = ours(tgt, memory, **ours_kw)
    assert out.shape == (B, L, E) and out.dtype == dtype
    torch.testing.assert_close(out, theirs(tgt, memory, **their_kw), **_tol(dtype))


def test_decoder_layer_has_torchs_parameter_names():
    theirs = nn.TransformerDecoderLayer(16, 4, 32, batch_first=True)
    assert set(ref.DecoderLayer(16, 4, 32).state_dict()) == set(theirs.state_dict())


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_gradients_match_torch(norm_first):
    theirs = _torch_layer(8, 2, 16, norm_first, "cpu", torch.float64, seed=3)
    ours = ref.DecoderLayer(8, 2, 16, norm_first=norm_first).double()
    ours.load_state_dict(theirs.state_dict())
    g = torch.Generator().manual_seed(1)
    tgt = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
    memory = torch.randn(2, 6, 8, generator=g, dtype=torch.float64)
    causal, mem_pad = ref.causal_mask(5), _lengths_mask(2, 6, 3, "cpu")
    grads = []
    for layer, kw in ((ours, {"tgt_mask": causal, "memory_padding_mask": mem_pad}),
                      (theirs, {"tgt_mask": ~causal, "memory_key_padding_mask": ~mem_pad})):
        t, m = tgt.clone().requires_grad_(), memory.clone().requires_grad_()
        layer(t, m, **kw).pow(2).sum().backward()
        grads.append([t.grad, m.grad] + [p.grad for _, p in sorted(layer.named_parameters())])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_outputs_ignore_the_future_and_the_padding(norm_first):
    torch.manual_seed(0)
    layer = ref.DecoderLayer(16, 4, 32, norm_first=norm_first)
    tgt, memory = torch.randn(2, 6, 16), torch.randn(2, 5, 16)  # (B, L, E), (B, S, E)
    causal, mem_pad = ref.causal_mask(6), _lengths_mask(2, 5, 2, "cpu")
    out = layer(tgt, memory, tgt_mask=causal, memory_padding_mask=mem_pad)
    later = tgt.clone()
    later[:, 4:] = 100.0
    assert torch.equal(layer(later, memory, causal, None, mem_pad)[:, :4], out[:, :4])
    padded = memory.clone()
    padded[~mem_pad] = -50.0
    torch.testing.assert_close(layer(tgt, padded, causal, None, mem_pad), out)


def test_whole_prefix_with_the_causal_mask_equals_generating_step_by_step():
    """What training computes in one pass is what generation computes one token at a time."""
    torch.manual_seed(0)
    layers = nn.ModuleList(ref.DecoderLayer(16, 4, 32) for _ in range(2)).double()
    tgt, memory = torch.randn(2, 7, 16, dtype=torch.float64), torch.randn(2, 5, 16,
                                                                             dtype=torch.float64)

    def run(x, mask):
        for layer in layers:
            x = layer(x, memory, tgt_mask=mask)
        return x

    whole = run(tgt, ref.causal_mask(7))
    steps = torch.stack([run(tgt[:, : t + 1], ref.causal_mask(t + 1))[:, -1] for t in range(7)], 1)
    torch.testing.assert_close(steps, whole)
    leaky = run(tgt, None)  # no mask: training would see what generation cannot
    assert (leaky - steps).abs().max() > 1e-2


# --- the checks -------------------------------------------------------------------------------


def test_check_reports_an_exception_as_a_failure_naming_the_class():
    class Broken(nn.Module):
        def __init__(self, *args, **kwargs):
            raise NotImplementedError()

    for check in (checks.check_decoder_self_attention, checks.check_decoder_cross_attention,
                  checks.check_decoder_layer):  # fmt: skip
        with pytest.raises(CheckFailed, match="DecoderLayer.*raised NotImplementedError"):
            check(Broken)


_CELLS = {
    "sa": "decoder_self_attention_tests",
    "mha": "decoder_cross_attention_tests",
    "layer": "decoder_layer_tests",
}


@pytest.mark.parametrize(
    ("mistake", "cells"),
    [
        ("softmax, zero, softmax", {"sa"}),
        ("cross-attention over the decoder", {"mha"}),
        ("cross-attention before self-attention", {"layer"}),
        ("submodules named otherwise", {"sa", "mha", "layer"}),
    ],
)
def test_a_mistake_in_one_block_costs_that_blocks_cell_only(mistake, cells):
    """The whole layer is judged through the student's own blocks: a block's mistake is charged
    to the block's cell, a wiring mistake to the layer's; wrong names (no weights load) to all."""
    impl = wrong.WRONG["DecoderLayer"][mistake].impl
    assert failing_cells("ch08_masking", "DecoderLayer", impl) == {_CELLS[c] for c in cells}


def test_the_notes_recipe_leaks_the_future_and_masking_first_does_not():
    """softmax, zero the future, softmax again: earlier outputs depend on later tokens."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).double()
    x = torch.randn(1, 5, 8, dtype=torch.float64)  # (B, L, E)
    allowed = ref.causal_mask(5)[None, None]  # (1, 1, L, L)
    later = x.clone()
    later[:, 3:] += 1.0
    notes = wrong._softmax_zero_softmax
    assert (notes(mha, x, allowed)[:, :3] - notes(mha, later, allowed)[:, :3]).abs().max() > 1e-3
    right = mha(x, x, x, attn_mask=~allowed[0, 0], need_weights=False)[0]
    right_later = mha(later, later, later, attn_mask=~allowed[0, 0], need_weights=False)[0]
    torch.testing.assert_close(right[:, :3], right_later[:, :3])


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="LOUD SKIP: no CUDA device here; a mask built on the CPU is only caught when grading "
    "on a GPU",
)
def test_causal_mask_that_ignores_device_fails_when_the_checks_run_on_cuda():
    def cpu_only(L, S=None, device=None):
        return ref.causal_mask(L, S)

    with pytest.raises(CheckFailed, match="device"):
        checks.check_causal_mask(cpu_only)


_SA_BLOCK_FLIPPED = """
class DecoderLayer(DecoderLayer):
    def _sa_block(self, x, tgt_mask=None, tgt_padding_mask=None):
        pad = None if tgt_padding_mask is None else ~tgt_padding_mask
        out = self.self_attn(x, x, x, attn_mask=tgt_mask, key_padding_mask=pad,
                             need_weights=False)[0]
        return self.dropout1(out)
"""


@pytest.mark.slow
@pytest.mark.xdist_group("engine")
def test_in_the_sandbox_a_wrong_self_attention_block_costs_its_cell_only():
    """Through the sandbox: the whole layer's check calls the student's own blocks there."""
    verdicts = judge_with_mistake("ch08_masking", _SA_BLOCK_FLIPPED)
    failed = {gid for gid, (passed, _) in verdicts.items() if not passed}
    assert failed == {"decoder_self_attention_tests"}, verdicts
    assert "wrong way round" in verdicts["decoder_self_attention_tests"][1]
