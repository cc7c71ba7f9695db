"""Correct answers for chapter 2, as unlike the reference as the instructions allow.

Each variant was written from the released notebook's instructions alone (and the chapter's page),
the way a student might: the softmax by hand with a clamped sum, with -1e9 in float64, or in log
space; the attention with einsum, with a loop over the queries, or with the queries flattened into
the batch; the maxout with a view, with strided slices, or with max pooling; keyword arguments,
helper methods and optional extra arguments. The contract test requires every one of them to pass
every check of its name, and grades a notebook made of the *last* variant of each name through the
real grader, so the last one is self-contained: the imports below, the earlier parts by their global
names (``masked_softmax``, ``AdditiveAttention``), nothing else of this module.

``RIGHT`` maps the name of the graded function or class to {variant: implementation}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .reference import AdditiveAttention, masked_softmax

# --- masked_softmax ---------------------------------------------------------------------------


def softmax_by_hand(scores, mask=None):
    """exp of the scores minus the largest allowed one, zero where masked, over a clamped sum."""
    if mask is None:
        mask = torch.ones_like(scores, dtype=torch.bool)
    while mask.dim() < scores.dim():
        mask = mask.unsqueeze(-2)  # (B, 1, S) for (B, L, S) scores
    largest = scores.masked_fill(~mask, float("-inf")).amax(dim=-1, keepdim=True)
    largest = torch.where(torch.isfinite(largest), largest, torch.zeros_like(largest))
    e = (scores - largest).masked_fill(~mask, 0.0).exp() * mask  # 0 where masked, never inf
    total = e.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)
    return e / total


def softmax_large_negative_in_float64(scores, mask=None):
    """-1e9 instead of -inf (exp gives exactly 0 either way), computed in float64, and the
    sentences with no allowed position set to zero afterwards."""
    x = scores.double()
    if mask is None:
        return torch.softmax(x, dim=-1).to(scores.dtype)
    m = mask[:, None, :] if scores.dim() == 3 else mask  # (B, [1,] S)
    weights = torch.softmax(x.masked_fill(~m, -1e9), dim=-1)
    weights = torch.where(m.any(dim=-1, keepdim=True), weights, torch.zeros_like(weights))
    return weights.to(scores.dtype)


def softmax_in_log_space(scores, mask=None, return_log=False):
    """logsumexp over the allowed positions; an optional extra argument."""
    if mask is None:
        mask = torch.ones(scores.shape[0], scores.shape[-1], dtype=torch.bool,
                          device=scores.device)  # fmt: skip
    if scores.dim() == 3:
        mask = mask.reshape(mask.shape[0], 1, mask.shape[1])
    empty = ~mask.any(dim=-1, keepdim=True)
    finite = scores.masked_fill(~mask, float("-inf")).masked_fill(empty, 0.0)
    log_weights = finite - torch.logsumexp(finite, dim=-1, keepdim=True)
    weights = log_weights.exp().masked_fill(empty, 0.0)
    return (weights, log_weights) if return_log else weights


# --- AdditiveAttention ------------------------------------------------------------------------


class AttentionEinsum(nn.Module):
    """Every query shape made (B, L, Eq), einsum for v and the context, squeezed back at the end."""

    def __init__(self, query_dim, key_dim, attn_dim):
        super().__init__()
        self.W_s = nn.Linear(query_dim, attn_dim, bias=False)
        self.W_h = nn.Linear(key_dim, attn_dim, bias=False)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def score(self, query, keys, projected_keys=None):
        one = query.dim() == 2
        q = self.W_s(query[:, None] if one else query)  # (B, L, A)
        k = self.W_h(keys) if projected_keys is None else projected_keys  # (B, S, A)
        hidden = torch.tanh(q[:, :, None, :] + k[:, None, :, :])  # (B, L, S, A)
        e = torch.einsum("blsa,a->bls", hidden, self.v.weight[0])  # (B, L, S)
        return e[:, 0] if one else e

    def forward(self, query, keys, mask=None, projected_keys=None):
        weights = masked_softmax(self.score(query, keys, projected_keys), mask)
        if weights.dim() == 2:
            return torch.einsum("bs,bse->be", weights, keys), weights
        return torch.einsum("bls,bse->ble", weights, keys), weights


class AttentionLoopOverQueries(nn.Module):
    """The page's one-query computation, in a loop over the L queries; a helper method."""

    def __init__(self, query_dim, key_dim, attn_dim):
        super().__init__()
        self.W_s = nn.Linear(query_dim, attn_dim, bias=False)
        self.W_h = nn.Linear(key_dim, attn_dim, bias=False)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def _one_query(self, query, projected):
        """query (B, Eq), projected keys (B, S, A) -> scores (B, S)."""
        return self.v(torch.tanh(projected + self.W_s(query).unsqueeze(1))).squeeze(2)

    def score(self, query, keys, projected_keys=None):
        projected = projected_keys if projected_keys is not None else self.W_h(keys)
        if query.dim() == 2:
            return self._one_query(query, projected)
        columns = [self._one_query(query[:, i], projected) for i in range(query.size(1))]
        return torch.stack(columns, dim=1)  # (B, L, S)

    def forward(self, query, keys, mask=None, projected_keys=None):
        weights = masked_softmax(self.score(query, keys, projected_keys), mask=mask)
        if weights.dim() == 2:
            return torch.bmm(weights.unsqueeze(1), keys).squeeze(1), weights
        return torch.bmm(weights, keys), weights


class AttentionQueriesInTheBatch(nn.Module):
    """L queries become B·L rows of one-query attention (the keys repeated for each); an
    optional extra argument."""

    def __init__(self, query_dim, key_dim, attn_dim):
        super().__init__()
        self.W_s = nn.Linear(query_dim, attn_dim, bias=False)
        self.W_h = nn.Linear(key_dim, attn_dim, bias=False)
        self.v = nn.Linear(attn_dim, 1, bias=False)
        self.attn_dim = attn_dim

    def score(self, query, keys, projected_keys=None):
        if projected_keys is None:
            projected_keys = self.W_h(keys)  # (B, S, A)
        B, S, A = projected_keys.shape
        L = 1 if query.dim() == 2 else query.shape[1]
        flat_q = query.reshape(B * L, -1)  # (B·L, Eq)
        flat_k = projected_keys.repeat_interleave(L, dim=0)  # (B·L, S, A)
        e = self.v(torch.tanh(flat_k + self.W_s(flat_q).reshape(B * L, 1, A)))  # (B·L, S, 1)
        return e.reshape(B, S) if query.dim() == 2 else e.reshape(B, L, S)

    def forward(self, query, keys, mask=None, projected_keys=None, return_scores=False):
        scores = self.score(query, keys, projected_keys)
        weights = masked_softmax(scores, mask)
        if query.dim() == 2:
            context = (weights[:, :, None] * keys).sum(dim=1)  # (B, Ek)
        else:
            context = (weights[:, :, :, None] * keys[:, None, :, :]).sum(dim=2)  # (B, L, Ek)
        if return_scores:
            return context, weights, scores
        return context, weights


# --- AttentiveDecoder -------------------------------------------------------------------------


class DecoderMaxoutByView(nn.Module):
    """The maxout as a view (B, M, 2) and max(...).values; keyword arguments to the attention."""

    def __init__(self, vocab_size, embed_dim, hidden_dim, annotation_dim, attn_dim, maxout_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.attention = AdditiveAttention(hidden_dim, annotation_dim, attn_dim)
        self.cell = nn.GRUCell(embed_dim + annotation_dim, hidden_dim)
        self.readout = nn.Linear(hidden_dim + annotation_dim + embed_dim, 2 * maxout_dim)
        self.out = nn.Linear(maxout_dim, vocab_size)
        self.maxout_dim = maxout_dim

    def step(self, y_prev, s_prev, annotations, mask=None, projected_keys=None):
        e = self.embedding(y_prev)
        c, a = self.attention(s_prev, annotations, mask=mask, projected_keys=projected_keys)
        s = self.cell(torch.cat((e, c), 1), s_prev)
        t = self.readout(torch.cat((s, c, e), 1)).view(-1, self.maxout_dim, 2)
        return self.out(t.max(dim=2).values), s, a


class DecoderMaxoutStrided(nn.Module):
    """The maxout from strided slices, the readout's input as a list, the cell called with hx=."""

    def __init__(self, vocab_size, embed_dim, hidden_dim, annotation_dim, attn_dim, maxout_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.attention = AdditiveAttention(hidden_dim, annotation_dim, attn_dim)
        self.cell = nn.GRUCell(embed_dim + annotation_dim, hidden_dim)
        self.readout = nn.Linear(hidden_dim + annotation_dim + embed_dim, 2 * maxout_dim)
        self.out = nn.Linear(maxout_dim, vocab_size)

    def step(self, y_prev, s_prev, annotations, mask=None, projected_keys=None):
        word = self.embedding(y_prev)  # (B, E)
        context, weights = self.attention(s_prev, annotations, mask, projected_keys)
        state = self.cell(torch.cat([word, context], dim=1), hx=s_prev)  # (B, Eq)
        pieces = [state, context, word]
        t = self.readout(torch.cat(pieces, dim=-1))  # (B, 2M)
        return self.out(torch.maximum(t[..., 0::2], t[..., 1::2])), state, weights


class DecoderWithHelpers(nn.Module):
    """Helper methods, an optional extra argument, and the maxout as max pooling of width 2."""

    def __init__(self, vocab_size, embed_dim, hidden_dim, annotation_dim, attn_dim, maxout_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.attention = AdditiveAttention(hidden_dim, annotation_dim, attn_dim)
        self.cell = nn.GRUCell(embed_dim + annotation_dim, hidden_dim)
        self.readout = nn.Linear(hidden_dim + annotation_dim + embed_dim, 2 * maxout_dim)
        self.out = nn.Linear(maxout_dim, vocab_size)

    def deep_output(self, state, context, word):
        t = self.readout(torch.cat([state, context, word], dim=-1))  # (B, 2M)
        t = F.max_pool1d(t.unsqueeze(1), kernel_size=2).squeeze(1)  # (B, M): units 2j, 2j + 1
        return self.out(t)  # (B, V)

    def step(self, y_prev, s_prev, annotations, mask=None, projected_keys=None,
             return_context=False):  # fmt: skip
        word = self.embedding(y_prev)
        context, weights = self.attention(s_prev, annotations, mask, projected_keys)
        state = self.cell(torch.cat([word, context], dim=-1), s_prev)
        logits = self.deep_output(state, context, word)
        if return_context:
            return logits, state, weights, context
        return logits, state, weights


RIGHT = {
    "masked_softmax": {
        f.__name__: f
        for f in (softmax_by_hand, softmax_large_negative_in_float64, softmax_in_log_space)
    },
    "AdditiveAttention": {
        c.__name__: c
        for c in (AttentionEinsum, AttentionLoopOverQueries, AttentionQueriesInTheBatch)
    },
    "AttentiveDecoder": {
        c.__name__: c for c in (DecoderMaxoutByView, DecoderMaxoutStrided, DecoderWithHelpers)
    },
}
