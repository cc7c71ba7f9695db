"""Known-wrong implementations for chapter 2: the mistakes the checks must catch.

Each entry is a plausible student mistake. The contract test runs every check on every entry and
requires its own part's check to fail, with a message that names a property, and every other part
to pass with the solution around it (one bug, one part).

``WRONG`` maps the name of the graded function or class to {mistake: implementation}.

Not here, because no check can make it cost one part only: an attention whose results have the wrong
shape (a context of width A, say, averaged from W_h(keys)) or that raises. The decoder's check
takes the context from the student's own attention, and a decoder cannot run on a context of the
wrong width; such a mistake costs Parts 2 and 3.
"""

from __future__ import annotations

import torch
from torch import nn

from . import reference as ref

# --- masked_softmax ---------------------------------------------------------------------------


def softmax_over_batch_axis(scores, mask=None):
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=0).nan_to_num(0.0)  # normalises each position across the batch


def softmax_padding_not_masked(scores, mask=None):
    return scores.softmax(dim=-1)  # the padding takes a share of the weight


def softmax_mask_after(scores, mask=None):
    weights = scores.softmax(dim=-1)
    return weights if mask is None else weights.masked_fill(~mask, 0.0)  # rows no longer sum to 1


def softmax_flipped_polarity(scores, mask=None):
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))  # masks the real words
    return scores.softmax(dim=-1).nan_to_num(0.0)


def softmax_nan_when_fully_masked(scores, mask=None):
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1)  # 0/0 for a row with no allowed position


def softmax_large_negative_fill(scores, mask=None):
    if mask is not None:
        scores = scores.masked_fill(~mask, -1e9)  # a row with no allowed position becomes uniform
    return scores.softmax(dim=-1)


def softmax_exp_overflows(scores, mask=None):
    e = scores.exp()  # inf for scores above about 88 in float32, 709 in float64
    if mask is not None:
        e = e * mask
    total = e.sum(dim=-1, keepdim=True)
    return e / torch.where(total == 0, torch.ones_like(total), total)


# --- AdditiveAttention ------------------------------------------------------------------------


class AttentionSoftmaxOverBatch(ref.AdditiveAttention):
    """Normalises over the batch axis: each position's weights sum to 1 across the sentences."""

    def forward(self, query, keys, mask=None, projected_keys=None):
        scores = self.score(query, keys, projected_keys)  # (B, S)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=0).nan_to_num(0.0)  # (B, S), normalised over B
        return (weights.unsqueeze(-2) @ keys).squeeze(-2), weights


class AttentionPaddingNotMasked(ref.AdditiveAttention):
    """Forgets the mask: the padding takes a share of the weight."""

    def forward(self, query, keys, mask=None, projected_keys=None):
        weights = masked_softmax(self.score(query, keys, projected_keys), None)  # (B, S)
        return (weights.unsqueeze(-2) @ keys).squeeze(-2), weights


class AttentionIgnoresQuery(ref.AdditiveAttention):
    """Scores the keys alone, v^T tanh(W_h h): the same weights at every decoder step."""

    def score(self, query, keys, projected_keys=None):
        projected = self.W_h(keys) if projected_keys is None else projected_keys  # (B, S, A)
        return self.v(torch.tanh(projected)).squeeze(-1)  # (B, S)


class AttentionNoTanh(ref.AdditiveAttention):
    """Leaves out the tanh: v^T W_s s is then the same for every position and cancels in the
    softmax, so the query no longer matters."""

    def score(self, query, keys, projected_keys=None):
        projected = self.W_h(keys) if projected_keys is None else projected_keys  # (B, S, A)
        return self.v(projected + self.W_s(query).unsqueeze(-2)).squeeze(-1)  # (B, S)


class AttentionTanhOutside(ref.AdditiveAttention):
    """Puts the tanh after v: tanh(v^T (W_s s + W_h h_j)), a squashed linear score."""

    def score(self, query, keys, projected_keys=None):
        projected = self.W_h(keys) if projected_keys is None else projected_keys  # (B, S, A)
        return torch.tanh(self.v(projected + self.W_s(query).unsqueeze(-2))).squeeze(-1)  # (B, S)


class AttentionIgnoresProjectedKeys(ref.AdditiveAttention):
    """Recomputes W_h(keys) at every call, whatever projected_keys holds."""

    def forward(self, query, keys, mask=None, projected_keys=None):
        return super().forward(query, keys, mask, None)


class AttentionWithBiases(ref.AdditiveAttention):
    """nn.Linear's default bias=True: the paper's score has no bias."""

    def __init__(self, query_dim, key_dim, attn_dim):
        super().__init__(query_dim, key_dim, attn_dim)
        self.W_s = nn.Linear(query_dim, attn_dim)
        self.W_h = nn.Linear(key_dim, attn_dim)
        self.v = nn.Linear(attn_dim, 1)


class AttentionDotProduct(ref.AdditiveAttention):
    """A multiplicative score, (W_s s) . (W_h h_j), instead of the additive one."""

    def score(self, query, keys, projected_keys=None):
        projected = self.W_h(keys) if projected_keys is None else projected_keys  # (B, S, A)
        return (projected * self.W_s(query).unsqueeze(-2)).sum(dim=-1)  # (B, S)


def masked_softmax(scores, mask=None):
    """What a student's AdditiveAttention calls: the name the check's stand-in replaces."""
    return ref.masked_softmax(scores, mask)


# --- AttentiveDecoder -------------------------------------------------------------------------


class DecoderIgnoresContext(ref.AttentiveDecoder):
    """Computes the attention and throws its context away: chapter 1's decoder again."""

    def step(self, y_prev, s_prev, annotations, mask=None, projected_keys=None):
        embedded = self.embedding(y_prev)  # (B, E)
        context, weights = self.attention(s_prev, annotations, mask, projected_keys)
        blind = torch.zeros_like(context)  # (B, Ek)
        state = self.cell(torch.cat([embedded, blind], dim=-1), s_prev)  # (B, Eq)
        logits = self.out(torch.cat([state, blind, embedded], dim=-1))  # (B, V)
        return logits, state, weights


class DecoderQueriesNewState(ref.AttentiveDecoder):
    """Luong's order: update the state first, then let the new state ask."""

    def step(self, y_prev, s_prev, annotations, mask=None, projected_keys=None):
        embedded = self.embedding(y_prev)  # (B, E)
        blind = annotations.new_zeros(annotations.size(0), annotations.size(-1))  # (B, Ek)
        state = self.cell(torch.cat([embedded, blind], dim=-1), s_prev)  # (B, Eq)
        context, weights = self.attention(state, annotations, mask, projected_keys)
        logits = self.out(torch.cat([state, context, embedded], dim=-1))  # (B, V)
        return logits, state, weights


class DecoderContextOnlyAtOutput(ref.AttentiveDecoder):
    """The context reaches the output layer but not the GRU cell."""

    def step(self, y_prev, s_prev, annotations, mask=None, projected_keys=None):
        embedded = self.embedding(y_prev)  # (B, E)
        context, weights = self.attention(s_prev, annotations, mask, projected_keys)
        blind = torch.zeros_like(context)  # (B, Ek)
        state = self.cell(torch.cat([embedded, blind], dim=-1), s_prev)  # (B, Eq)
        logits = self.out(torch.cat([state, context, embedded], dim=-1))  # (B, V)
        return logits, state, weights


class DecoderReturnsPreviousState(ref.AttentiveDecoder):
    """Returns s_prev: the decoder never moves on."""

    def step(self, y_prev, s_prev, annotations, mask=None, projected_keys=None):
        logits, _, weights = super().step(y_prev, s_prev, annotations, mask, projected_keys)
        return logits, s_prev, weights


class DecoderSwapsCellInput(ref.AttentiveDecoder):
    """Feeds [context; embedding] to a cell whose weights expect [embedding; context]."""

    def step(self, y_prev, s_prev, annotations, mask=None, projected_keys=None):
        embedded = self.embedding(y_prev)  # (B, E)
        context, weights = self.attention(s_prev, annotations, mask, projected_keys)
        state = self.cell(torch.cat([context, embedded], dim=-1), s_prev)  # (B, Eq)
        logits = self.out(torch.cat([state, context, embedded], dim=-1))  # (B, V)
        return logits, state, weights


class DecoderOutputFromPreviousState(ref.AttentiveDecoder):
    """Reads the output from s_{i-1} rather than the new state s_i."""

    def step(self, y_prev, s_prev, annotations, mask=None, projected_keys=None):
        embedded = self.embedding(y_prev)  # (B, E)
        context, weights = self.attention(s_prev, annotations, mask, projected_keys)
        state = self.cell(torch.cat([embedded, context], dim=-1), s_prev)  # (B, Eq)
        logits = self.out(torch.cat([s_prev, context, embedded], dim=-1))  # (B, V)
        return logits, state, weights


class DecoderDropsProjectedKeys(ref.AttentiveDecoder):
    """Does not pass projected_keys on to the attention."""

    def step(self, y_prev, s_prev, annotations, mask=None, projected_keys=None):
        return super().step(y_prev, s_prev, annotations, mask, None)


WRONG = {
    "masked_softmax": {
        f.__name__: f
        for f in (
            softmax_over_batch_axis,
            softmax_padding_not_masked,
            softmax_mask_after,
            softmax_flipped_polarity,
            softmax_nan_when_fully_masked,
            softmax_large_negative_fill,
            softmax_exp_overflows,
        )
    },
    "AdditiveAttention": {
        c.__name__: c
        for c in (
            AttentionSoftmaxOverBatch,
            AttentionPaddingNotMasked,
            AttentionIgnoresQuery,
            AttentionNoTanh,
            AttentionTanhOutside,
            AttentionIgnoresProjectedKeys,
            AttentionWithBiases,
            AttentionDotProduct,
        )
    },
    "AttentiveDecoder": {
        c.__name__: c
        for c in (
            DecoderIgnoresContext,
            DecoderQueriesNewState,
            DecoderContextOnlyAtOutput,
            DecoderReturnsPreviousState,
            DecoderSwapsCellInput,
            DecoderOutputFromPreviousState,
            DecoderDropsProjectedKeys,
        )
    },
}
