"""Known-wrong implementations for chapter 5: the mistakes the checks must catch.

Each entry is a plausible student mistake. The contract test runs each part's check on each entry
and requires it to fail with a message that names a property; it also puts each entry in the
solution notebook's namespace and requires every *other* part to pass, so a MultiHeadAttention
entry may only be wrong in MultiHeadAttention itself: it calls ``split_heads`` and
``merge_heads`` by their global names, as the exercise asks, unless its mistake is not to.

``WRONG`` maps the name of the graded function to {mistake: implementation}.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import reference as ref

# --- split_heads ------------------------------------------------------------------------------


def split_no_transpose(x, num_heads):
    """The study notes' split: a view to (B, L, H, D) and nothing else."""
    B, L, E = x.shape
    return x.view(B, L, num_heads, E // num_heads)  # (B, L, H, D)


def split_view_heads_first(x, num_heads):
    """The right shape by the wrong route: positions and features get mixed."""
    B, L, E = x.shape
    return x.reshape(B, num_heads, L, E // num_heads)  # (B, H, L, D), wrong contents


def split_interleaved(x, num_heads):
    """Head h gets features h, h + H, h + 2H, ...: not the contiguous slice torch uses."""
    B, L, E = x.shape
    return x.view(B, L, E // num_heads, num_heads).permute(0, 3, 1, 2)  # (B, H, L, D)


def split_transpose_wrong_dims(x, num_heads):
    """Transposes the head and the feature axes instead of the head and the position axes."""
    B, L, E = x.shape
    return x.view(B, L, num_heads, E // num_heads).transpose(2, 3)  # (B, L, D, H)


# --- merge_heads ------------------------------------------------------------------------------


def merge_no_transpose(x):
    """Reshapes (B, H, L, D) straight to (B, L, E): rows of different positions get mixed."""
    B, H, L, D = x.shape
    return x.reshape(B, L, H * D)


def merge_feature_major(x):
    """Concatenates feature 0 of every head, then feature 1, ...: the heads' order is lost."""
    B, H, L, D = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, L, H * D)  # (B, L, E), wrong order


def merge_reversed_heads(x):
    """Concatenates the heads last one first."""
    return torch.cat([x[:, h] for h in reversed(range(x.size(1)))], dim=-1)  # (B, L, E)


def merge_view_after_transpose(x):
    """``view`` on the transposed tensor, which is not contiguous: raises RuntimeError."""
    B, H, L, D = x.shape
    return x.transpose(1, 2).view(B, L, H * D)


# --- MultiHeadAttention -----------------------------------------------------------------------


class _Base(nn.Module):
    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.W_q = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_k = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_v = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_o = nn.Linear(embed_dim, embed_dim, bias=bias)

    def heads(self, query, key, value):
        H = self.num_heads
        q = split_heads(self.W_q(query), H)  # noqa: F821 - the student's (or the stand-in)
        k = split_heads(self.W_k(key), H)  # noqa: F821
        v = split_heads(self.W_v(value), H)  # noqa: F821
        return q, k, v

    def attend(self, q, k, mask, scale=None, weights_fn=None):
        weights_fn = weights_fn or ref.ch04.attention_weights
        return weights_fn(q, k, attn_mask=mask, scale=scale)  # (B, H, L, S)

    def finish(self, weights, v, need_weights, average_attn_weights):
        output = self.W_o(merge_heads(weights @ v))  # noqa: F821
        if not need_weights:
            return output, None
        return output, weights.mean(dim=1) if average_attn_weights else weights

    def forward(
        self,
        query,
        key,
        value,
        key_padding_mask=None,
        attn_mask=None,
        need_weights=True,
        average_attn_weights=True,
    ):
        q, k, v = self.heads(query, key, value)
        weights = self.attend(q, k, ref.combine_masks(key_padding_mask, attn_mask))
        return self.finish(weights, v, need_weights, average_attn_weights)


# The names the classes look up at call time: the solution's (or the check's stand-ins), as in a
# student's notebook; outside one, the reference's.
split_heads = ref.split_heads
merge_heads = ref.merge_heads


class MHAMissingTranspose(_Base):
    """Splits inline with the study notes' view and no transpose: attends across heads."""

    def forward(
        self,
        query,
        key,
        value,
        key_padding_mask=None,
        attn_mask=None,
        need_weights=True,
        average_attn_weights=True,
    ):
        B, L, E = query.shape
        S, H, D = key.size(1), self.num_heads, self.head_dim
        q = self.W_q(query).view(B, L, H, D)  # (B, L, H, D)
        k = self.W_k(key).view(B, S, H, D)  # (B, S, H, D)
        v = self.W_v(value).view(B, S, H, D)  # (B, S, H, D)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(D), dim=-1)  # (B, L, H, H)
        output = self.W_o((weights @ v).reshape(B, L, E))  # (B, L, E)
        if not need_weights:
            return output, None
        return output, weights.mean(dim=1) if average_attn_weights else weights


class MHAScaleByE(_Base):
    """Divides the scores by sqrt(E) instead of sqrt(D)."""

    def forward(
        self,
        query,
        key,
        value,
        key_padding_mask=None,
        attn_mask=None,
        need_weights=True,
        average_attn_weights=True,
    ):
        q, k, v = self.heads(query, key, value)
        mask = ref.combine_masks(key_padding_mask, attn_mask)
        weights = self.attend(q, k, mask, scale=1 / math.sqrt(self.embed_dim))
        return self.finish(weights, v, need_weights, average_attn_weights)


class MHATorchPaddingPolarity(_Base):
    """Reads key_padding_mask as torch does (True = ignore this key)."""

    def forward(
        self,
        query,
        key,
        value,
        key_padding_mask=None,
        attn_mask=None,
        need_weights=True,
        average_attn_weights=True,
    ):
        if key_padding_mask is not None:
            key_padding_mask = ~key_padding_mask
        return super().forward(
            query, key, value, key_padding_mask, attn_mask, need_weights, average_attn_weights
        )


class MHAFlippedAttnMask(_Base):
    """Reads the boolean attn_mask as True = forbidden."""

    def forward(
        self,
        query,
        key,
        value,
        key_padding_mask=None,
        attn_mask=None,
        need_weights=True,
        average_attn_weights=True,
    ):
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = ~attn_mask
        return super().forward(
            query, key, value, key_padding_mask, attn_mask, need_weights, average_attn_weights
        )


class MHANoOutputProjection(_Base):
    """Returns the merged heads without W_o."""

    def finish(self, weights, v, need_weights, average_attn_weights):
        output = merge_heads(weights @ v)  # noqa: F821
        if not need_weights:
            return output, None
        return output, weights.mean(dim=1) if average_attn_weights else weights


class MHASummedWeights(_Base):
    """Sums the heads' weights instead of averaging them: rows sum to H."""

    def finish(self, weights, v, need_weights, average_attn_weights):
        output = self.W_o(merge_heads(weights @ v))  # noqa: F821
        if not need_weights:
            return output, None
        return output, weights.sum(dim=1) if average_attn_weights else weights


class MHAKeysAsValues(_Base):
    """Projects the key, not the value, with W_v: wrong as soon as key and value differ."""

    def heads(self, query, key, value):
        return super().heads(query, key, key)


class MHANanWhenFullyMasked(_Base):
    """A plain softmax after -inf: a query with every key masked gets NaN."""

    def attend(self, q, k, mask, scale=None, weights_fn=None):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, L, S)
        if mask is not None:
            if mask.dtype == torch.bool:
                scores = scores.masked_fill(~mask, float("-inf"))
            else:
                scores = scores + mask
        return torch.softmax(scores, dim=-1)


class MHAIgnoresAttnMask(_Base):
    """Applies the key padding mask but drops attn_mask: a causal mask does nothing."""

    def forward(
        self,
        query,
        key,
        value,
        key_padding_mask=None,
        attn_mask=None,
        need_weights=True,
        average_attn_weights=True,
    ):
        return super().forward(
            query, key, value, key_padding_mask, None, need_weights, average_attn_weights
        )


WRONG = {
    "split_heads": {
        f.__name__: f
        for f in (
            split_no_transpose,
            split_view_heads_first,
            split_interleaved,
            split_transpose_wrong_dims,
        )
    },
    "merge_heads": {
        f.__name__: f
        for f in (
            merge_no_transpose,
            merge_feature_major,
            merge_reversed_heads,
            merge_view_after_transpose,
        )
    },
    "MultiHeadAttention": {
        c.__name__: c
        for c in (
            MHAMissingTranspose,
            MHAScaleByE,
            MHATorchPaddingPolarity,
            MHAFlippedAttnMask,
            MHANoOutputProjection,
            MHASummedWeights,
            MHAKeysAsValues,
            MHANanWhenFullyMasked,
            MHAIgnoresAttnMask,
        )
    },
}
