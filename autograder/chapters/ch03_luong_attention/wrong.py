"""Known-wrong implementations for chapter 3: the mistakes the checks must catch.

Each entry is a plausible student mistake. The contract test runs every check on every entry and
requires its own part's check to fail, with a message that shows no values, and every other part
to pass.

``WRONG`` maps the name of the graded function or class to {mistake: implementation}.
"""

from __future__ import annotations

import math

import torch

from . import reference as ref
from .reference import concat_score, dot_score, general_score

# --- dot_score ------------------------------------------------------------------------------


def dot_scaled(query, keys):
    """Chapter 4's scaling, which Luong's dot score does not have."""
    return query @ keys.transpose(-2, -1) / math.sqrt(query.size(-1))


def dot_softmax(query, keys):
    """Returns the weights instead of the scores."""
    return (query @ keys.transpose(-2, -1)).softmax(dim=-1)


def dot_transpose_2d_only(query, keys):
    """keys.T reverses every dimension: wrong as soon as there is a batch dimension."""
    return query @ keys.T


def dot_keys_first(query, keys):
    """One row per key instead of one per query: (..., S, L)."""
    return keys @ query.transpose(-2, -1)


def dot_no_grad(query, keys):
    with torch.no_grad():
        return query @ keys.transpose(-2, -1)


# --- general_score --------------------------------------------------------------------------


def general_weight_transposed(query, keys, weight):
    return query @ weight.T @ keys.transpose(-2, -1)


def general_ignores_weight(query, keys, weight):
    return query @ keys.transpose(-2, -1)


def general_scaled(query, keys, weight):
    return query @ weight @ keys.transpose(-2, -1) / math.sqrt(keys.size(-1))


def general_transpose_2d_only(query, keys, weight):
    return query @ weight @ keys.T


# --- concat_score ---------------------------------------------------------------------------


def _halves(query, keys, weight):
    Dq = query.size(-1)
    return (query @ weight[:, :Dq].T).unsqueeze(-2), (keys @ weight[:, Dq:].T).unsqueeze(-3)


def concat_no_tanh(query, keys, weight, v):
    """Linear in the query and the key: the softmax over the keys then ignores the query."""
    a, b = _halves(query, keys, weight)
    return (a + b) @ v


def concat_halves_swapped(query, keys, weight, v):
    """[h̄_s; h_t] instead of [h_t; h̄_s] (only runs when Dq = Dk)."""
    Dk = keys.size(-1)
    a = (query @ weight[:, Dk:].T).unsqueeze(-2)
    b = (keys @ weight[:, :Dk].T).unsqueeze(-3)
    return torch.tanh(a + b) @ v


def concat_tanh_after_v(query, keys, weight, v):
    a, b = _halves(query, keys, weight)
    return torch.tanh((a + b) @ v)


def concat_without_v(query, keys, weight, v):
    a, b = _halves(query, keys, weight)
    return torch.tanh(a + b).sum(dim=-1)


def concat_pairs_by_position(query, keys, weight, v):
    """Scores query l against key l only (runs only when L = S), then repeats them."""
    Dq = query.size(-1)
    hidden = torch.tanh(query @ weight[:, :Dq].T + keys @ weight[:, Dq:].T)  # (..., L, A)
    return (hidden @ v).unsqueeze(-1).expand(*query.shape[:-1], keys.size(-2))


# --- LuongAttention -------------------------------------------------------------------------


class _Layer(ref.LuongAttention):
    """The reference's parameters, with score functions looked up in this module."""

    def scores(self, query, keys):
        if self.score == "dot":
            return dot_score(query, keys)
        if self.score == "general":
            return general_score(query, keys, self.W_a.weight)
        return concat_score(query, keys, self.W_a.weight, self.v_a)

    def forward(self, query, keys, mask=None):
        context = self.attention_weights(query, keys, mask) @ keys  # (B, L, D)
        return torch.tanh(self.W_c(torch.cat([context, query], dim=-1)))


class LuongSoftmaxOverBatch(_Layer):
    def attention_weights(self, query, keys, mask=None):
        scores = self.scores(query, keys)
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(-2), float("-inf"))
        return scores.softmax(dim=0).nan_to_num(0.0)


class LuongPaddingNotMasked(_Layer):
    def attention_weights(self, query, keys, mask=None):
        return self.scores(query, keys).softmax(dim=-1)


class LuongMaskFlipped(_Layer):
    """Treats True as 'padding', as nn.MultiheadAttention's key_padding_mask does."""

    def attention_weights(self, query, keys, mask=None):
        scores = self.scores(query, keys)
        if mask is not None:
            scores = scores.masked_fill(mask.unsqueeze(-2), float("-inf"))
        return scores.softmax(dim=-1).nan_to_num(0.0)


class LuongMaskAfterSoftmax(_Layer):
    """Zeros the padding's weights after the softmax: the rest no longer sums to 1."""

    def attention_weights(self, query, keys, mask=None):
        weights = self.scores(query, keys).softmax(dim=-1)
        return weights if mask is None else weights.masked_fill(~mask.unsqueeze(-2), 0.0)


class LuongNanWhenAllPadding(_Layer):
    def attention_weights(self, query, keys, mask=None):
        scores = self.scores(query, keys)
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(-2), float("-inf"))
        return scores.softmax(dim=-1)  # 0/0 for a sentence that is all padding


class LuongLargeNegativeFill(_Layer):
    """-1e9 instead of -inf: a sentence that is all padding gets uniform weights, not zeros."""

    def attention_weights(self, query, keys, mask=None):
        scores = self.scores(query, keys)
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(-2), -1e9)
        return scores.softmax(dim=-1)


class LuongSoftmaxOverSteps(_Layer):
    def attention_weights(self, query, keys, mask=None):
        scores = self.scores(query, keys)
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(-2), float("-inf"))
        return scores.softmax(dim=-2).nan_to_num(0.0)


class LuongNoTanh(_Layer):
    def forward(self, query, keys, mask=None):
        context = self.attention_weights(query, keys, mask) @ keys
        return self.W_c(torch.cat([context, query], dim=-1))


class LuongQueryFirst(_Layer):
    """tanh(W_c [h_t; c_t]) instead of tanh(W_c [c_t; h_t])."""

    def forward(self, query, keys, mask=None):
        context = self.attention_weights(query, keys, mask) @ keys
        return torch.tanh(self.W_c(torch.cat([query, context], dim=-1)))


class LuongContextFromScores(_Layer):
    """Averages the keys with the raw scores instead of the weights."""

    def forward(self, query, keys, mask=None):
        scores = self.scores(query, keys)
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(-2), 0.0)
        return torch.tanh(self.W_c(torch.cat([scores @ keys, query], dim=-1)))


class LuongWeightsDetached(_Layer):
    """The weights are cut from the graph: no gradient reaches W_a, v_a or the query's score."""

    def forward(self, query, keys, mask=None):
        context = self.attention_weights(query, keys, mask).detach() @ keys
        return torch.tanh(self.W_c(torch.cat([context, query], dim=-1)))


WRONG = {
    "dot_score": {
        f.__name__: f
        for f in (dot_scaled, dot_softmax, dot_transpose_2d_only, dot_keys_first, dot_no_grad)
    },
    "general_score": {
        f.__name__: f
        for f in (
            general_weight_transposed,
            general_ignores_weight,
            general_scaled,
            general_transpose_2d_only,
        )
    },
    "concat_score": {
        f.__name__: f
        for f in (
            concat_no_tanh,
            concat_halves_swapped,
            concat_tanh_after_v,
            concat_without_v,
            concat_pairs_by_position,
        )
    },
    "LuongAttention": {
        c.__name__: c
        for c in (
            LuongSoftmaxOverBatch,
            LuongPaddingNotMasked,
            LuongMaskFlipped,
            LuongMaskAfterSoftmax,
            LuongNanWhenAllPadding,
            LuongLargeNegativeFill,
            LuongSoftmaxOverSteps,
            LuongNoTanh,
            LuongQueryFirst,
            LuongContextFromScores,
            LuongWeightsDetached,
        )
    },
}
