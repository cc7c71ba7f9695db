"""Known-wrong implementations for chapter 5: the mistakes the checks must catch and name.

Each entry is a plausible student mistake and the phrase its check's message must contain. The
contract test runs each name's checks on each entry and requires one to fail with that phrase; it
also puts each entry in the solution notebook's namespace and requires every *other* name to pass,
so a MultiHeadAttention entry may only be wrong in MultiHeadAttention itself: it calls
``split_heads`` and ``merge_heads`` by their global names, as the exercise asks, unless its
mistake is not to. The checks also use some entries to recognise a mistake before they compare
values (``split_no_transpose`` says what a bare view did, say).

``WRONG`` maps the name of the graded function or class to {mistake: Mistake(impl, says)}.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from autograder.chapters import Mistake

from . import reference as ref

# --- split_heads ------------------------------------------------------------------------------


def split_no_transpose(x, num_heads):
    """The study notes' split: a view to (..., L, H, D) and nothing else."""
    return x.unflatten(-1, (num_heads, x.size(-1) // num_heads))  # (..., L, H, D)


def split_view_heads_first(x, num_heads):
    """The right shape by the wrong route, x.view(B, H, L, D): positions and features mixed."""
    *lead, L, E = x.shape
    return x.reshape(*lead, num_heads, L, E // num_heads)  # (..., H, L, D), wrong contents


def split_interleaved(x, num_heads):
    """Head h gets features h, h + H, h + 2H, ...: not the contiguous slice torch uses."""
    x = x.unflatten(-1, (x.size(-1) // num_heads, num_heads))  # (..., L, D, H)
    return x.movedim(-1, -3)  # (..., H, L, D)


def split_transpose_wrong_dims(x, num_heads):
    """Transposes the head and the feature axes instead of the head and the position axes."""
    return x.unflatten(-1, (num_heads, x.size(-1) // num_heads)).transpose(-2, -1)  # (..., L, D, H)


def split_no_value_error(x, num_heads):
    """Right when E divides, but lets view raise its own RuntimeError when it does not."""
    *lead, L, E = x.shape
    return x.view(*lead, L, num_heads, E // num_heads).transpose(-3, -2)  # (..., H, L, D)


# --- merge_heads ------------------------------------------------------------------------------


def merge_no_transpose(x):
    """Reshapes (..., H, L, D) straight to (..., L, E): rows of different positions get mixed."""
    *lead, H, L, D = x.shape
    return x.reshape(*lead, L, H * D)


def merge_feature_major(x):
    """Concatenates feature 0 of every head, then feature 1, ...: the heads interleaved."""
    return x.movedim(-3, -1).flatten(-2)  # (..., L, D, H) -> (..., L, E), wrong order


def merge_reversed_heads(x):
    """Concatenates the heads last one first."""
    return torch.cat(list(reversed(x.unbind(-3))), dim=-1)  # (..., L, E)


def merge_view_after_transpose(x):
    """``view`` on the transposed tensor, which is not contiguous: raises RuntimeError."""
    *lead, H, L, D = x.shape
    return x.transpose(-3, -2).view(*lead, L, H * D)


# --- MultiHeadAttention -----------------------------------------------------------------------


class _Base(nn.Module):
    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        if num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.W_q = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_k = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_v = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_o = nn.Linear(embed_dim, embed_dim, bias=bias)

    def heads(self, query, key, value):
        H = self.num_heads
        q = split_heads(self.W_q(query), H)  # (B, H, L, D): the student's (or the stand-in)
        k = split_heads(self.W_k(key), H)  # (B, H, S, D)
        v = split_heads(self.W_v(value), H)  # (B, H, S, D)
        return q, k, v

    def attend(self, q, k, mask, scale=None):
        return ref.ch04.attention_weights(q, k, attn_mask=mask, scale=scale)  # (B, H, L, S)

    def finish(self, weights, v, need_weights, average_attn_weights):
        output = self.W_o(merge_heads(weights @ v))  # (B, L, E)
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

    def attend(self, q, k, mask, scale=None):
        return super().attend(q, k, mask, scale=1 / math.sqrt(self.embed_dim))


class MHATorchPaddingPolarity(_Base):
    """Reads key_padding_mask as torch does (True = ignore this key)."""

    def forward(self, query, key, value, key_padding_mask=None, *args, **kwargs):
        if key_padding_mask is not None:
            key_padding_mask = ~key_padding_mask
        return super().forward(query, key, value, key_padding_mask, *args, **kwargs)


class MHAFlippedAttnMask(_Base):
    """Reads the boolean attn_mask as True = forbidden."""

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, *args, **kwargs):
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = ~attn_mask
        return super().forward(query, key, value, key_padding_mask, attn_mask, *args, **kwargs)


class MHAIgnoresAttnMask(_Base):
    """Applies the key padding mask but drops attn_mask: a causal mask does nothing."""

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, *args, **kwargs):
        return super().forward(query, key, value, key_padding_mask, None, *args, **kwargs)


class MHANoOutputProjection(_Base):
    """Returns the merged heads without W_o."""

    def finish(self, weights, v, need_weights, average_attn_weights):
        output = merge_heads(weights @ v)  # (B, L, E)
        if not need_weights:
            return output, None
        return output, weights.mean(dim=1) if average_attn_weights else weights


class MHASummedWeights(_Base):
    """Sums the heads' weights instead of averaging them: rows sum to H."""

    def finish(self, weights, v, need_weights, average_attn_weights):
        output = self.W_o(merge_heads(weights @ v))  # (B, L, E)
        if not need_weights:
            return output, None
        return output, weights.sum(dim=1) if average_attn_weights else weights


class MHAKeysAsValues(_Base):
    """Projects the key, not the value, with W_v: wrong as soon as key and value differ."""

    def heads(self, query, key, value):
        return super().heads(query, key, key)


class MHANanWhenFullyMasked(_Base):
    """A plain softmax after -inf: a query with every key masked gets NaN."""

    def attend(self, q, k, mask, scale=None):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, L, S)
        if mask is not None:
            if mask.dtype == torch.bool:
                scores = scores.masked_fill(~mask, float("-inf"))  # (B, H, L, S)
            else:
                scores = scores + mask  # (B, H, L, S)
        return torch.softmax(scores, dim=-1)


class MHANoValueError(_Base):
    """Does not check that num_heads divides embed_dim."""

    def __init__(self, embed_dim, num_heads, bias=True):
        nn.Module.__init__(self)
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        for name in ("W_q", "W_k", "W_v", "W_o"):
            setattr(self, name, nn.Linear(embed_dim, embed_dim, bias=bias))


class MHAIgnoresNeedWeights(_Base):
    """Returns the weights even when need_weights=False."""

    def finish(self, weights, v, need_weights, average_attn_weights):
        return super().finish(weights, v, True, average_attn_weights)


class MHAAlwaysAveraged(_Base):
    """Averages the heads' weights even when average_attn_weights=False."""

    def finish(self, weights, v, need_weights, average_attn_weights):
        return super().finish(weights, v, need_weights, True)


WRONG = {
    "split_heads": {
        "split_no_transpose": Mistake(split_no_transpose, "still after the positions"),
        "split_view_heads_first": Mistake(split_view_heads_first, "straight to (B, H, L, D)"),
        "split_interleaved": Mistake(split_interleaved, "contiguous slice"),
        "split_transpose_wrong_dims": Mistake(split_transpose_wrong_dims, "instead of with L"),
        "split_no_value_error": Mistake(split_no_value_error, "must raise ValueError"),
    },
    "merge_heads": {
        "merge_no_transpose": Mistake(merge_no_transpose, "straight to (B, L, E)"),
        "merge_feature_major": Mistake(merge_feature_major, "interleaved"),
        "merge_reversed_heads": Mistake(merge_reversed_heads, "reverse order"),
        "merge_view_after_transpose": Mistake(merge_view_after_transpose, "not contiguous"),
    },
    "MultiHeadAttention": {
        "MHAMissingTranspose": Mistake(MHAMissingTranspose, "never transposed"),
        "MHAScaleByE": Mistake(MHAScaleByE, "divided by sqrt(E)"),
        "MHATorchPaddingPolarity": Mistake(
            MHATorchPaddingPolarity, "key_padding_mask is used the wrong way round"
        ),
        "MHAFlippedAttnMask": Mistake(MHAFlippedAttnMask, "attn_mask is used the wrong way round"),
        "MHAIgnoresAttnMask": Mistake(MHAIgnoresAttnMask, "attn_mask is ignored"),
        "MHANoOutputProjection": Mistake(MHANoOutputProjection, "W_o is not applied"),
        "MHASummedWeights": Mistake(MHASummedWeights, "summed over the heads"),
        "MHAKeysAsValues": Mistake(MHAKeysAsValues, "W_v projects the key"),
        "MHANanWhenFullyMasked": Mistake(MHANanWhenFullyMasked, "NaN"),
        "MHANoValueError": Mistake(MHANoValueError, "must raise ValueError"),
        "MHAIgnoresNeedWeights": Mistake(MHAIgnoresNeedWeights, "None when need_weights=False"),
        "MHAAlwaysAveraged": Mistake(MHAAlwaysAveraged, "average_attn_weights=False"),
    },
}
