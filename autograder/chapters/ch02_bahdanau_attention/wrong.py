"""Known-wrong implementations for chapter 2: the mistakes the checks must catch.

Each entry is a plausible student mistake, right in everything but its mistake. The contract test
runs every check on every entry and requires a check of its own name to fail with a message that
contains the entry's phrase (the words that name the mistake for the student), and every other
name's checks to pass with the solution around it (one bug, one part).

``WRONG`` maps the name of the graded function or class to {mistake: Mistake(implementation,
phrase)}.

Not here, because no check can make it cost one part only: an attention whose results have the wrong
shape (a context of width A, say, averaged from W_h(keys)) or that raises. The decoder's checks
take the context from the student's own attention, and a decoder cannot run on a context of the
wrong width; such a mistake costs Parts 2 and 3.
"""

from __future__ import annotations

import torch
from torch import nn

from autograder.chapters import Mistake

from . import reference as ref


def _context(weights, keys):
    """The weighted sum of the keys, (B, [L,] Ek): right in every entry below but its mistake."""
    rows = weights if weights.dim() == 3 else weights.unsqueeze(1)  # (B, L or 1, S)
    context = rows @ keys  # (B, L or 1, Ek)
    return context if weights.dim() == 3 else context.squeeze(1)


def _per_query(mask, scores):
    return mask if scores.dim() == 2 else mask.unsqueeze(1)  # (B, [1,] S)


# --- masked_softmax ---------------------------------------------------------------------------


def softmax_over_batch_axis(scores, mask=None):
    if mask is not None:
        scores = scores.masked_fill(~_per_query(mask, scores), float("-inf"))
    return scores.softmax(dim=0).nan_to_num(0.0)  # normalises each position across the batch


def softmax_padding_not_masked(scores, mask=None):
    return scores.softmax(dim=-1)  # the padding takes a share of the weight


def softmax_mask_after(scores, mask=None):
    weights = scores.softmax(dim=-1)
    if mask is None:
        return weights
    return weights.masked_fill(~_per_query(mask, scores), 0.0)  # rows no longer sum to 1


def softmax_flipped_polarity(scores, mask=None):
    if mask is not None:
        scores = scores.masked_fill(_per_query(mask, scores), float("-inf"))  # masks the real words
    return scores.softmax(dim=-1).nan_to_num(0.0)


def softmax_nan_when_fully_masked(scores, mask=None):
    if mask is not None:
        scores = scores.masked_fill(~_per_query(mask, scores), float("-inf"))
    return scores.softmax(dim=-1)  # 0/0 for a sentence with no allowed position


def softmax_large_negative_fill(scores, mask=None):
    if mask is not None:
        scores = scores.masked_fill(~_per_query(mask, scores), -1e9)  # an empty sentence: uniform
    return scores.softmax(dim=-1)


def softmax_exp_overflows(scores, mask=None):
    e = scores.exp()  # inf for scores above about 88 in float32, 709 in float64
    if mask is not None:
        e = e * _per_query(mask, scores)
    total = e.sum(dim=-1, keepdim=True)
    return e / torch.where(total == 0, torch.ones_like(total), total)


def softmax_mask_lined_up_with_queries(scores, mask=None):
    """The page's one-query code on (B, L, S) scores: the (B, S) mask broadcast from the right,
    row l applied to query l (an error when B != L, wrong weights when B = L)."""
    if mask is None:
        return scores.softmax(dim=-1)
    scores = scores.masked_fill(~mask, float("-inf"))
    empty = ~mask.any(dim=-1, keepdim=True)
    return scores.masked_fill(empty, 0.0).softmax(dim=-1).masked_fill(empty, 0.0)


def softmax_always_unsqueezes(scores, mask=None):
    """Gives the mask a query dimension even for (B, S) scores: (B, 1, S) against (B, S) makes
    (B, B, S)."""
    if mask is None:
        return scores.softmax(dim=-1)
    mask = mask.unsqueeze(1)  # (B, 1, S)
    empty = ~mask.any(dim=-1, keepdim=True)
    scores = scores.masked_fill(~mask, float("-inf")).masked_fill(empty, 0.0)
    return scores.softmax(dim=-1).masked_fill(empty, 0.0)


# --- AdditiveAttention ------------------------------------------------------------------------


class AttentionSoftmaxOverBatch(ref.AdditiveAttention):
    """Normalises over the batch axis: each position's weights sum to 1 across the sentences."""

    def forward(self, query, keys, mask=None, projected_keys=None):
        scores = self.score(query, keys, projected_keys)  # (B, [L,] S)
        if mask is not None:
            scores = scores.masked_fill(~_per_query(mask, scores), float("-inf"))
        weights = scores.softmax(dim=0).nan_to_num(0.0)  # normalised over B
        return _context(weights, keys), weights


class AttentionPaddingNotMasked(ref.AdditiveAttention):
    """Forgets the mask: the padding takes a share of the weight."""

    def forward(self, query, keys, mask=None, projected_keys=None):
        weights = masked_softmax(self.score(query, keys, projected_keys), None)  # (B, [L,] S)
        return _context(weights, keys), weights


class AttentionIgnoresQuery(ref.AdditiveAttention):
    """Scores the keys alone, v^T tanh(W_h h): the same weights at every decoder step."""

    def score(self, query, keys, projected_keys=None):
        projected = self.W_h(keys) if projected_keys is None else projected_keys  # (B, S, A)
        scores = self.v(torch.tanh(projected)).squeeze(-1)  # (B, S)
        return scores if query.dim() == 2 else scores.unsqueeze(1).expand(-1, query.size(1), -1)


class AttentionNoTanh(ref.AdditiveAttention):
    """Leaves out the tanh: v^T W_s s is then the same for every position and cancels in the
    softmax, so the query no longer matters."""

    def score(self, query, keys, projected_keys=None):
        projected = self.W_h(keys) if projected_keys is None else projected_keys  # (B, S, A)
        if query.dim() == 3:
            projected = projected.unsqueeze(1)
        return self.v(projected + self.W_s(query).unsqueeze(-2)).squeeze(-1)  # (B, [L,] S)


class AttentionTanhOutside(ref.AdditiveAttention):
    """Puts the tanh after v: tanh(v^T (W_s s + W_h h_j)), a squashed linear score."""

    def score(self, query, keys, projected_keys=None):
        projected = self.W_h(keys) if projected_keys is None else projected_keys  # (B, S, A)
        if query.dim() == 3:
            projected = projected.unsqueeze(1)
        return torch.tanh(self.v(projected + self.W_s(query).unsqueeze(-2))).squeeze(-1)


class AttentionOneQueryOnly(ref.AdditiveAttention):
    """The page's score for one query per sentence, given (B, L, Eq): W_s(query).unsqueeze(-2)
    (B, L, 1, A) plus W_h(keys) (B, S, A) lines the keys of sentence l up with query l."""

    def score(self, query, keys, projected_keys=None):
        projected = self.W_h(keys) if projected_keys is None else projected_keys  # (B, S, A)
        hidden = torch.tanh(projected + self.W_s(query).unsqueeze(-2))
        return self.v(hidden).squeeze(-1)


class AttentionIgnoresProjectedKeys(ref.AdditiveAttention):
    """Recomputes W_h(keys) at every call, whatever projected_keys holds."""

    def score(self, query, keys, projected_keys=None):
        return super().score(query, keys, None)


class AttentionForwardDropsProjectedKeys(ref.AdditiveAttention):
    """score uses projected_keys, but forward does not hand it on."""

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
        if query.dim() == 3:
            projected = projected.unsqueeze(1)
        return (projected * self.W_s(query).unsqueeze(-2)).sum(dim=-1)  # (B, [L,] S)


class AttentionContextFromFirstQuery(ref.AdditiveAttention):
    """Averages the keys with the first query's weights for every query."""

    def forward(self, query, keys, mask=None, projected_keys=None):
        weights = masked_softmax(self.score(query, keys, projected_keys), mask)
        if weights.dim() == 3:
            first = weights[:, :1].expand_as(weights)
            return first @ keys, weights
        return _context(weights, keys), weights


def masked_softmax(scores, mask=None):
    """What a student's AdditiveAttention calls: the name the check's stand-in replaces."""
    return ref.masked_softmax(scores, mask)


# --- AttentiveDecoder -------------------------------------------------------------------------


def _deep_output(decoder, state, context, embedded):
    return decoder.out(ref.maxout(decoder.readout(torch.cat([state, context, embedded], dim=-1))))


class DecoderIgnoresContext(ref.AttentiveDecoder):
    """Computes the attention and throws its context away: chapter 1's decoder again."""

    def step(self, y_prev, s_prev, annotations, mask=None, projected_keys=None):
        embedded = self.embedding(y_prev)  # (B, E)
        context, weights = self.attention(s_prev, annotations, mask, projected_keys)
        blind = torch.zeros_like(context)  # (B, Ek)
        state = self.cell(torch.cat([embedded, blind], dim=-1), s_prev)  # (B, Eq)
        return _deep_output(self, state, blind, embedded), state, weights


class DecoderQueriesNewState(ref.AttentiveDecoder):
    """Luong's order: update the state first, then let the new state ask."""

    def step(self, y_prev, s_prev, annotations, mask=None, projected_keys=None):
        embedded = self.embedding(y_prev)  # (B, E)
        blind = annotations.new_zeros(annotations.size(0), annotations.size(-1))  # (B, Ek)
        state = self.cell(torch.cat([embedded, blind], dim=-1), s_prev)  # (B, Eq)
        context, weights = self.attention(state, annotations, mask, projected_keys)
        return _deep_output(self, state, context, embedded), state, weights


class DecoderContextOnlyAtOutput(ref.AttentiveDecoder):
    """The context reaches the output layer but not the GRU cell."""

    def step(self, y_prev, s_prev, annotations, mask=None, projected_keys=None):
        embedded = self.embedding(y_prev)  # (B, E)
        context, weights = self.attention(s_prev, annotations, mask, projected_keys)
        blind = torch.zeros_like(context)  # (B, Ek)
        state = self.cell(torch.cat([embedded, blind], dim=-1), s_prev)  # (B, Eq)
        return _deep_output(self, state, context, embedded), state, weights


class DecoderReturnsPreviousState(ref.AttentiveDecoder):
    """Returns s_prev: the decoder never moves on."""

    def step(self, y_prev, s_prev, annotations, mask=None, projected_keys=None):
        embedded = self.embedding(y_prev)  # (B, E)
        context, weights = self.attention(s_prev, annotations, mask, projected_keys)
        state = self.cell(torch.cat([embedded, context], dim=-1), s_prev)  # (B, Eq)
        return _deep_output(self, state, context, embedded), s_prev, weights


class DecoderSwapsCellInput(ref.AttentiveDecoder):
    """Feeds [context; embedding] to a cell whose weights expect [embedding; context]."""

    def step(self, y_prev, s_prev, annotations, mask=None, projected_keys=None):
        embedded = self.embedding(y_prev)  # (B, E)
        context, weights = self.attention(s_prev, annotations, mask, projected_keys)
        state = self.cell(torch.cat([context, embedded], dim=-1), s_prev)  # (B, Eq)
        return _deep_output(self, state, context, embedded), state, weights


class DecoderDropsProjectedKeys(ref.AttentiveDecoder):
    """Does not pass projected_keys on to the attention."""

    def step(self, y_prev, s_prev, annotations, mask=None, projected_keys=None):
        return super().step(y_prev, s_prev, annotations, mask, None)


class DecoderReadoutFromPreviousState(ref.AttentiveDecoder):
    """The deep output reads s_{i-1} (the paper's readout) where the instructions say s_i."""

    def step(self, y_prev, s_prev, annotations, mask=None, projected_keys=None):
        embedded = self.embedding(y_prev)  # (B, E)
        context, weights = self.attention(s_prev, annotations, mask, projected_keys)
        state = self.cell(torch.cat([embedded, context], dim=-1), s_prev)  # (B, Eq)
        return _deep_output(self, s_prev, context, embedded), state, weights


class DecoderMaxoutOverHalves(ref.AttentiveDecoder):
    """Takes the larger of unit j and unit j + M instead of the consecutive pair 2j, 2j + 1."""

    def step(self, y_prev, s_prev, annotations, mask=None, projected_keys=None):
        embedded = self.embedding(y_prev)  # (B, E)
        context, weights = self.attention(s_prev, annotations, mask, projected_keys)
        state = self.cell(torch.cat([embedded, context], dim=-1), s_prev)  # (B, Eq)
        t = self.readout(torch.cat([state, context, embedded], dim=-1))  # (B, 2M)
        t = t.view(t.size(0), 2, -1).amax(dim=1)  # (B, M): the two halves
        return self.out(t), state, weights


class DecoderReadoutOrder(ref.AttentiveDecoder):
    """Reads out [c_i; s_i; E y] into a layer whose weights expect [s_i; c_i; E y]."""

    def step(self, y_prev, s_prev, annotations, mask=None, projected_keys=None):
        embedded = self.embedding(y_prev)  # (B, E)
        context, weights = self.attention(s_prev, annotations, mask, projected_keys)
        state = self.cell(torch.cat([embedded, context], dim=-1), s_prev)  # (B, Eq)
        t = self.readout(torch.cat([context, state, embedded], dim=-1))  # (B, 2M)
        return self.out(ref.maxout(t)), state, weights


WRONG = {
    "masked_softmax": {
        f.__name__: Mistake(f, says)
        for f, says in (
            (softmax_over_batch_axis, "first dimension (the batch)"),
            (softmax_padding_not_masked, "the mask is ignored"),
            (softmax_mask_after, "sum to 1"),
            (softmax_flipped_polarity, "wrong way round"),
            (softmax_nan_when_fully_masked, "contain NaN"),
            (softmax_large_negative_fill, "attends to nothing"),
            (softmax_exp_overflows, "not finite"),
            (softmax_mask_lined_up_with_queries, "lined up with the queries"),
            (softmax_always_unsqueezes, "shape"),
        )
    },
    "AdditiveAttention": {
        c.__name__: Mistake(c, says)
        for c, says in (
            (AttentionSoftmaxOverBatch, "softmax runs over the batch"),
            (AttentionPaddingNotMasked, "padding is not masked"),
            (AttentionIgnoresQuery, "W_s(query) is added"),
            (AttentionNoTanh, "then tanh"),
            (AttentionTanhOutside, "then tanh"),
            (AttentionOneQueryOnly, "keys of sentence l"),
            (AttentionIgnoresProjectedKeys, "projected_keys is ignored"),
            (AttentionForwardDropsProjectedKeys, "not passed on to score"),
            (AttentionWithBiases, "has a bias"),
            (AttentionDotProduct, "then tanh"),
            (AttentionContextFromFirstQuery, "weighted sum of the keys"),
        )
    },
    "AttentiveDecoder": {
        c.__name__: Mistake(c, says)
        for c, says in (
            (DecoderIgnoresContext, "does not see the context"),
            (DecoderQueriesNewState, "asked with the new state"),
            (DecoderContextOnlyAtOutput, "does not see the context"),
            (DecoderReturnsPreviousState, "the state returned is s_prev"),
            (DecoderSwapsCellInput, "the embedding first"),
            (DecoderDropsProjectedKeys, "not passed on to self.attention"),
            (DecoderReadoutFromPreviousState, "the readout reads s_prev"),
            (DecoderMaxoutOverHalves, "consecutive pair"),
            (DecoderReadoutOrder, "in that order"),
        )
    },
}
