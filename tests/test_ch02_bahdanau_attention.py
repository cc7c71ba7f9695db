"""Chapter 2's reference against the formulas written out, and what its checks promise beyond the
contract.

What every chapter must meet (the reference passes its checks, each known mistake fails its part
and only its part, the solution gets full marks through the sandboxed grader, ...) is in
test_chapter_contract.py. Here: the reference computes the paper's equations, for one query per
sentence and for L; each graded behaviour's check charges its own mistakes and no other behaviour's;
the decoder's checks really are independent of the student's attention, and say so when they cannot
be; checks hide values.
"""

import pytest
import torch
from torch import nn

from autograder.chapters.ch02_bahdanau_attention import checks, wrong
from autograder.chapters.ch02_bahdanau_attention import reference as ref
from autograder.toolkit import CheckFailed

from chapter_helpers import DEVICES, failing_cells, judge_with_mistake


def draw(B, S, Eq, Ek, seed, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(B, Eq, generator=g, dtype=dtype).to(device)  # (B, Eq)
    keys = torch.randn(B, S, Ek, generator=g, dtype=dtype).to(device)  # (B, S, Ek)
    lengths = torch.randint(1, S + 1, (B,), generator=g).to(device)
    lengths[0] = S
    return query, keys, ref.padding_mask(lengths, S)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("B, S, Eq, Ek, A", [(1, 1, 3, 3, 2), (3, 7, 8, 6, 5), (4, 12, 16, 32, 8)])
@pytest.mark.parametrize("seed", [0, 1])
def test_reference_is_the_papers_formula_written_out(B, S, Eq, Ek, A, seed, device):
    """e_j = v^T tanh(W_s s + W_h h_j), alpha = softmax over the real positions, c = sum alpha h."""
    torch.manual_seed(seed)
    attention = ref.AdditiveAttention(Eq, Ek, A).to(device, torch.float64)
    query, keys, mask = draw(B, S, Eq, Ek, seed, device=device)
    W_s, W_h, v = attention.W_s.weight, attention.W_h.weight, attention.v.weight[0]
    context, weights = attention(query, keys, mask)
    for b in range(B):
        n = int(mask[b].sum())
        e = torch.stack([v @ torch.tanh(W_s @ query[b] + W_h @ keys[b, j]) for j in range(n)])
        alpha = torch.exp(e - e.max()) / torch.exp(e - e.max()).sum()
        torch.testing.assert_close(weights[b, :n], alpha)
        assert torch.all(weights[b, n:] == 0)
        torch.testing.assert_close(context[b], (alpha[:, None] * keys[b, :n]).sum(0))


@pytest.mark.parametrize("B, L", [(3, 4), (3, 3), (1, 2)])
def test_l_queries_are_each_query_alone(B, L):
    """(B, L, Eq) queries give, row by row, what each (B, Eq) query gives alone, mask included."""
    torch.manual_seed(0)
    attention = ref.AdditiveAttention(5, 4, 3).double()
    _, keys, mask = draw(B, 6, 5, 4, seed=L)
    queries = torch.randn(B, L, 5, dtype=torch.float64)
    context, weights = attention(queries, keys, mask)  # (B, L, Ek), (B, L, S)
    assert context.shape == (B, L, 4) and weights.shape == (B, L, 6)
    for i in range(L):
        one_context, one_weights = attention(queries[:, i], keys, mask)
        torch.testing.assert_close(context[:, i], one_context)
        torch.testing.assert_close(weights[:, i], one_weights)
    torch.testing.assert_close(ref.masked_softmax(attention.score(queries, keys), mask), weights)


def test_padding_changes_nothing_and_projected_keys_are_the_same_computation():
    torch.manual_seed(0)
    attention = ref.AdditiveAttention(5, 4, 3).double()
    query, keys, mask = draw(3, 6, 5, 4, 2)
    context, weights = attention(query, keys, mask)
    for b in range(3):
        n = int(mask[b].sum())
        alone_context, alone_weights = attention(query[b : b + 1], keys[b : b + 1, :n])
        torch.testing.assert_close(context[b], alone_context[0])
        torch.testing.assert_close(weights[b, :n], alone_weights[0])
    garbage = keys.masked_fill(~mask[..., None], 1e3)  # (B, S, Ek): huge keys at the padding
    torch.testing.assert_close(attention(query, garbage, mask)[0], context)
    again = attention(query, keys, mask, projected_keys=attention.W_h(keys))
    torch.testing.assert_close(again[0], context)
    torch.testing.assert_close(again[1], weights)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_softmax_rows_with_nothing_allowed_give_zeros_and_finite_gradients(dtype):
    scores = torch.randn(3, 5, dtype=dtype, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    weights = ref.masked_softmax(scores, mask)
    assert weights.dtype == dtype and torch.equal(weights[1], torch.zeros(5, dtype=dtype))
    assert torch.all(weights[~mask] == 0)
    torch.testing.assert_close(weights[[0, 2]].sum(-1), torch.ones(2, dtype=dtype))
    (weights * torch.randn_like(weights)).sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert torch.equal(scores.grad[1], torch.zeros(5, dtype=dtype))


def test_masked_softmax_holds_a_mask_row_for_every_query_and_rejects_other_masks():
    scores = torch.randn(3, 3, 4)  # (B, L, S) with B = L
    mask = torch.tensor([[True, True, False, False], [True] * 4, [True, False, False, False]])
    weights = ref.masked_softmax(scores, mask)
    for b in range(3):
        torch.testing.assert_close(weights[b], ref.masked_softmax(scores[b], mask[b].expand(3, 4)))
    with pytest.raises(TypeError, match="boolean"):
        ref.masked_softmax(scores, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="mask \\(B, S\\)"):
        ref.masked_softmax(scores, mask[:, None, :])


def test_maxout_takes_consecutive_pairs():
    pairs = ref.maxout(torch.tensor([1.0, 3.0, 5.0, 2.0]))
    torch.testing.assert_close(pairs, torch.tensor([3.0, 5.0]))
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(ref.maxout(x), torch.maximum(x[..., 0::2], x[..., 1::2]))


def test_decoder_step_is_the_papers_gru_with_the_context_as_a_second_input():
    """GRUCell on [E y; c] is the paper's GRU, whose gates read E y and c through separate
    matrices: the input weights split into an embedding block and a context block; the deep
    output takes the larger of each consecutive pair of readout units."""
    torch.manual_seed(0)
    V, E, Eq, Ek, A, B, S = 9, 4, 6, 5, 3, 2, 4
    decoder = ref.AttentiveDecoder(V, E, Eq, Ek, A, 3).double()
    _, annotations, mask = draw(B, S, Eq, Ek, 3)
    s_prev = torch.randn(B, Eq, dtype=torch.float64)
    y_prev = torch.tensor([3, 7])
    logits, state, weights = decoder.step(y_prev, s_prev, annotations, mask)

    context, expected_weights = decoder.attention(s_prev, annotations, mask)  # s_{i-1} asks
    torch.testing.assert_close(weights, expected_weights)
    ey = decoder.embedding(y_prev)  # (B, E)
    W_ih, W_hh = decoder.cell.weight_ih, decoder.cell.weight_hh  # (3 Eq, E + Ek), (3 Eq, Eq)
    W, C = W_ih[:, :E], W_ih[:, E:]  # the paper's W (for E y) and C (for c)
    gi = ey @ W.T + context @ C.T + decoder.cell.bias_ih  # (B, 3 Eq)
    gh = s_prev @ W_hh.T + decoder.cell.bias_hh  # (B, 3 Eq)
    r = torch.sigmoid(gi[:, :Eq] + gh[:, :Eq])
    z = torch.sigmoid(gi[:, Eq : 2 * Eq] + gh[:, Eq : 2 * Eq])
    candidate = torch.tanh(gi[:, 2 * Eq :] + r * gh[:, 2 * Eq :])
    torch.testing.assert_close(state, (1 - z) * candidate + z * s_prev)
    t = decoder.readout(torch.cat([state, context, ey], dim=-1))  # (B, 2M)
    torch.testing.assert_close(logits, decoder.out(torch.maximum(t[:, 0::2], t[:, 1::2])))


DECODER_CHECKS = (checks.check_attentive_decoder_state, checks.check_attentive_decoder_readout)


class _DecoderWithWrongAttention(ref.AttentiveDecoder):
    """A correct decoder step around a wrong attention (softmax over the batch)."""

    def __init__(self, vocab_size, embed_dim, hidden_dim, annotation_dim, attn_dim, maxout_dim):
        super().__init__(vocab_size, embed_dim, hidden_dim, annotation_dim, attn_dim, maxout_dim)
        self.attention = wrong.AttentionSoftmaxOverBatch(hidden_dim, annotation_dim, attn_dim)


def test_the_decoders_checks_do_not_depend_on_the_attention_being_right():
    with pytest.raises(CheckFailed):
        checks.check_additive_weights(wrong.AttentionSoftmaxOverBatch)
    for check in DECODER_CHECKS:
        check(_DecoderWithWrongAttention)


class _BrokenAttention(ref.AdditiveAttention):
    def forward(self, query, keys, mask=None, projected_keys=None):
        raise NotImplementedError()


class _DecoderWithBrokenAttention(ref.AttentiveDecoder):
    def __init__(self, vocab_size, embed_dim, hidden_dim, annotation_dim, attn_dim, maxout_dim):
        super().__init__(vocab_size, embed_dim, hidden_dim, annotation_dim, attn_dim, maxout_dim)
        self.attention = _BrokenAttention(hidden_dim, annotation_dim, attn_dim)


def test_an_attention_that_cannot_run_is_named_when_the_decoder_cannot_be_checked():
    for check in DECODER_CHECKS:
        with pytest.raises(CheckFailed, match="raised NotImplementedError"):
            check(_DecoderWithBrokenAttention)


def test_the_attentions_checks_have_the_reference_stand_in_for_a_broken_masked_softmax():
    namespace = {"torch": torch, "nn": nn, "masked_softmax": wrong.softmax_over_batch_axis}
    exec(
        "class AdditiveAttention(nn.Module):\n"
        "    def __init__(self, query_dim, key_dim, attn_dim):\n"
        "        super().__init__()\n"
        "        self.W_s = nn.Linear(query_dim, attn_dim, bias=False)\n"
        "        self.W_h = nn.Linear(key_dim, attn_dim, bias=False)\n"
        "        self.v = nn.Linear(attn_dim, 1, bias=False)\n"
        "    def score(self, query, keys, projected_keys=None):\n"
        "        p = self.W_h(keys) if projected_keys is None else projected_keys\n"
        "        p = p if query.dim() == 2 else p.unsqueeze(1)\n"
        "        return self.v(torch.tanh(p + self.W_s(query).unsqueeze(-2))).squeeze(-1)\n"
        "    def forward(self, query, keys, mask=None, projected_keys=None):\n"
        "        w = masked_softmax(self.score(query, keys, projected_keys), mask)\n"
        "        rows = w if w.dim() == 3 else w.unsqueeze(1)\n"
        "        c = rows @ keys\n"
        "        return (c if w.dim() == 3 else c.squeeze(1)), w\n",
        namespace,
    )
    for check in (checks.check_additive_weights, checks.check_additive_projected_keys):
        check(namespace["AdditiveAttention"])
    assert namespace["masked_softmax"] is wrong.softmax_over_batch_axis  # put back afterwards


@pytest.mark.parametrize(
    "name, mistake, failing",
    [
        ("AdditiveAttention", "AttentionNoTanh", {"additive_attention_score_tests"}),
        ("AdditiveAttention", "AttentionPaddingNotMasked", {"additive_attention_weights_tests"}),
        (
            "AdditiveAttention",
            "AttentionContextFromFirstQuery",
            {"additive_attention_weights_tests"},
        ),
        (
            "AdditiveAttention",
            "AttentionForwardDropsProjectedKeys",
            {"additive_attention_projected_keys_tests"},
        ),
        ("AttentiveDecoder", "DecoderQueriesNewState", {"attentive_decoder_state_tests"}),
        ("AttentiveDecoder", "DecoderReturnsPreviousState", {"attentive_decoder_state_tests"}),
        ("AttentiveDecoder", "DecoderMaxoutOverHalves", {"attentive_decoder_readout_tests"}),
    ],
)
def test_a_mistake_costs_its_own_behaviours_points_only(name, mistake, failing):
    """The behaviours of one class are graded apart: a wrong score does not cost the weights, a
    wrong state does not cost the deep output, and so on."""
    assert (
        failing_cells("ch02_bahdanau_attention", name, wrong.WRONG[name][mistake].impl) == failing
    )


def test_failing_check_does_not_print_hidden_values():
    seen = set()

    def spy(scores, mask=None):
        seen.update(f"{x:.4f}" for x in scores.flatten().tolist()[:20])
        return scores.softmax(dim=-1)  # ignores the mask: fails

    with pytest.raises(CheckFailed) as caught:
        checks.check_masked_softmax(spy)
    assert not any(value in str(caught.value) for value in seen)


def test_check_reports_an_exception_as_a_failure_naming_the_function():
    def broken(scores, mask=None):
        raise NotImplementedError()

    with pytest.raises(CheckFailed, match="masked_softmax.*raised NotImplementedError"):
        checks.check_masked_softmax(broken)


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="LOUD SKIP: no CUDA device here; a CPU-only answer is only caught when grading on a GPU",
)
def test_cpu_only_answer_fails_when_the_checks_run_on_cuda():
    def cpu_only(scores, mask=None):
        return ref.masked_softmax(scores.cpu(), None if mask is None else mask.cpu())

    with pytest.raises(CheckFailed, match="on cpu but the inputs were on cuda"):
        checks.check_masked_softmax(cpu_only)


_WRONG_SOFTMAX = """
def masked_softmax(scores, mask=None):
    if mask is not None:
        scores = scores.masked_fill(~(mask if scores.dim() == 2 else mask[:, None]), float("-inf"))
    return scores.softmax(dim=0).nan_to_num(0.0)  # over the batch
"""

_WRONG_ATTENTION = """
class AdditiveAttention(AdditiveAttention):
    def forward(self, query, keys, mask=None, projected_keys=None):
        weights = torch.softmax(self.score(query, keys, projected_keys), dim=-1)  # no mask
        rows = weights if weights.dim() == 3 else weights.unsqueeze(1)
        context = rows @ keys
        return (context if weights.dim() == 3 else context.squeeze(1)), weights
"""


@pytest.mark.slow
@pytest.mark.xdist_group("engine")
@pytest.mark.parametrize(
    "mistake, failing",
    [
        (_WRONG_SOFTMAX, "masked_softmax_tests"),
        (_WRONG_ATTENTION, "additive_attention_weights_tests"),
    ],
)
def test_in_the_sandbox_a_wrong_part_costs_that_part_only(mistake, failing):
    """Through the sandbox's handles: the attention's check has the judge's masked_softmax stand
    in, and the decoder's check asks the student's own attention, held in the sandbox."""
    verdicts = judge_with_mistake("ch02_bahdanau_attention", mistake)
    assert {gid for gid, (passed, _) in verdicts.items() if not passed} == {failing}, verdicts
    assert "padding" in verdicts[failing][1] or "batch" in verdicts[failing][1], verdicts
