"""Correct answers to chapter 8's exercise, as unlike the reference as its instructions allow.

Each variant was written from the released notebook's instructions alone: other tensor
operations for the masks (comparisons of positions, ``triu`` and ``logical_not``, a loop,
``reshape`` and ``unsqueeze``), and decoder layers with a LayerNorm written by hand, float masks
filled with -1e9, one mask that carries the padding too, a forward that inlines its blocks, helper
methods and attributes of their own. ``tests/test_chapter_contract.py`` requires every variant to
get full marks, in this process and, for the last variant of each name, handed in as a notebook
through the sandboxed grader; so the last variant of each name uses only this module's imports.

``RIGHT`` maps the name the student defines to {variant: implementation}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# --- padding_mask -----------------------------------------------------------------------------


def padding_mask_ne(tokens, pad_id):
    return torch.ne(tokens, pad_id)


def padding_mask_nonzero_difference(tokens, pad_id):
    """A token is real where its difference from the pad id is not zero."""
    return (tokens - pad_id).bool()


def padding_mask_filled(tokens, pad_id):
    """All True, then False where the padding is."""
    return torch.ones_like(tokens, dtype=torch.bool).masked_fill(tokens == pad_id, False)


# --- causal_mask ------------------------------------------------------------------------------


def causal_mask_positions(L, S=None, device=None):
    """Key s is allowed for query l when s <= S - L + l, compared as position tensors."""
    S = L if S is None else S
    queries = torch.arange(L, device=device).unsqueeze(1) + (S - L)  # (L, 1)
    keys = torch.arange(S, device=device).unsqueeze(0)  # (1, S)
    return keys <= queries  # (L, S)


def causal_mask_not_upper(L, S=None, device=None):
    """The complement of the strict upper triangle above the bottom-right diagonal."""
    S = L if S is None else S
    future = torch.ones(L, S, dtype=torch.bool, device=device).triu(S - L + 1)  # (L, S)
    return torch.logical_not(future)


def causal_mask_loop(L, S=None, device=None):
    """Row by row: query l sees the first S - L + l + 1 keys (none when that is <= 0)."""
    if S is None:
        S = L
    mask = torch.zeros(L, S, dtype=torch.bool, device=device)  # (L, S)
    for row in range(L):
        mask[row, : max(0, S - L + row + 1)] = True
    return mask


# --- combine_masks ----------------------------------------------------------------------------


def combine_masks_unsqueeze(padding_mask=None, attn_mask=None):
    """unsqueeze for the singleton axes, torch.logical_and to combine."""
    keys = None if padding_mask is None else padding_mask.unsqueeze(1).unsqueeze(2)  # (B,1,1,S)
    queries = None if attn_mask is None else attn_mask.unsqueeze(0).unsqueeze(0)  # (1,1,L,S)
    if keys is None or queries is None:
        return queries if keys is None else keys
    return torch.logical_and(keys, queries)  # (B, 1, L, S)


def combine_masks_reshape(padding_mask=None, attn_mask=None):
    """reshape to the exact shapes, then & (broadcasting)."""
    parts = []
    if padding_mask is not None:
        B, S = padding_mask.shape
        parts.append(padding_mask.reshape(B, 1, 1, S))
    if attn_mask is not None:
        L, S = attn_mask.shape
        parts.append(attn_mask.reshape(1, 1, L, S))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else parts[0] & parts[1]


def combine_masks_three_axes_then_heads(padding_mask=None, attn_mask=None):
    """Combine as (B, L, S) first, then give it its head axis."""
    if padding_mask is None and attn_mask is None:
        return None
    if attn_mask is None:
        return padding_mask[:, None, None, :]  # (B, 1, 1, S)
    if padding_mask is None:
        return attn_mask.expand(1, 1, *attn_mask.shape)  # (1, 1, L, S)
    both = padding_mask[:, None, :] & attn_mask[None]  # (B, L, S)
    return both.unsqueeze(1)  # (B, 1, L, S)


# --- DecoderLayer -----------------------------------------------------------------------------


class LayerNormByHand(nn.Module):
    """Chapter 6's LayerNorm, in float64 inside: a gain `weight` and a shift `bias`."""

    def __init__(self, width, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x):
        h = x.double()
        mean = h.mean(-1, keepdim=True)
        var = h.var(-1, unbiased=False, keepdim=True)
        normed = ((h - mean) / torch.sqrt(var + self.eps)).to(x.dtype)
        return normed * self.weight + self.bias


class DecoderLayerFloatMasks(nn.Module):
    """Hand-written LayerNorms, masks handed to the attention as float masks filled with -1e9
    (every query has a key it may see, so -1e9 and -inf give the same weights), the sublayers
    run from a list of (norm, block) pairs."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.0, norm_first=False,
                 eps=1e-5):  # fmt: skip
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout,
                                                    batch_first=True)  # fmt: skip
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2, self.norm3 = (LayerNormByHand(d_model, eps) for _ in range(3))
        self.dropout = nn.Dropout(dropout)
        self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(3))

    @staticmethod
    def _blocked(allowed, like):
        """0 where attention is allowed, -1e9 where it is not, in the inputs' dtype."""
        if allowed is None:
            return None
        return torch.zeros(allowed.shape, dtype=like.dtype, device=like.device).masked_fill(
            ~allowed, -1e9
        )

    def _sa_block(self, x, tgt_mask=None, tgt_padding_mask=None):
        out = self.self_attn(x, x, x, attn_mask=self._blocked(tgt_mask, x),
                             key_padding_mask=self._blocked(tgt_padding_mask, x),
                             need_weights=False)[0]  # fmt: skip
        return self.dropout1(out)  # (B, L, E)

    def _mha_block(self, x, memory, memory_padding_mask=None):
        out = self.multihead_attn(x, memory, memory,
                                  key_padding_mask=self._blocked(memory_padding_mask, x),
                                  need_weights=False)[0]  # fmt: skip
        return self.dropout2(out)  # (B, L, E)

    def _ff_block(self, x):
        return self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(x)))))

    def forward(self, tgt, memory, tgt_mask=None, tgt_padding_mask=None, memory_padding_mask=None):
        steps = [
            (self.norm1, lambda h: self._sa_block(h, tgt_mask, tgt_padding_mask)),
            (self.norm2, lambda h: self._mha_block(h, memory, memory_padding_mask)),
            (self.norm3, self._ff_block),
        ]
        x = tgt
        for norm, block in steps:
            x = x + block(norm(x)) if self.norm_first else norm(x + block(x))
        return x  # (B, L, E)


class DecoderLayerOneMask(nn.Module):
    """The decoder's padding folded into one boolean attn_mask per head, (B·H, L, L), in torch's
    polarity; a forward that calls the attention modules itself instead of the block methods;
    F.dropout driven by self.training; attributes of its own."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.0, norm_first=False,
                 eps=1e-5):  # fmt: skip
        super().__init__()
        self.d_model, self.nhead, self.norm_first = d_model, nhead, norm_first
        self.activation = F.relu
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=eps)
        self.norm2 = nn.LayerNorm(d_model, eps=eps)
        self.norm3 = nn.LayerNorm(d_model, eps=eps)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def _forbidden(self, x, tgt_mask, tgt_padding_mask):
        """One boolean mask, True where attention is NOT allowed: (L, L) or (B·H, L, L)."""
        B, L, _ = x.shape
        allowed = torch.ones(1, L, L, dtype=torch.bool, device=x.device)  # (1, L, L)
        if tgt_mask is not None:
            allowed = allowed & tgt_mask
        if tgt_padding_mask is None:
            return ~allowed[0]  # (L, L)
        allowed = allowed & tgt_padding_mask[:, None, :]  # (B, L, L)
        return ~allowed.repeat_interleave(self.nhead, dim=0)  # (B·H, L, L)

    def _sa_block(self, x, tgt_mask=None, tgt_padding_mask=None):
        if tgt_mask is None and tgt_padding_mask is None:
            out = self.self_attn(x, x, x, need_weights=False)[0]
        else:
            out = self.self_attn(x, x, x, attn_mask=self._forbidden(x, tgt_mask, tgt_padding_mask),
                                 need_weights=False)[0]  # fmt: skip
        return F.dropout(out, self.dropout1.p, self.training)

    def _mha_block(self, x, memory, memory_padding_mask=None):
        ignore = None if memory_padding_mask is None else torch.logical_not(memory_padding_mask)
        out = self.multihead_attn(x, memory, memory, key_padding_mask=ignore,
                                  need_weights=False)[0]  # fmt: skip
        return F.dropout(out, self.dropout2.p, self.training)

    def _ff_block(self, x):
        hidden = F.dropout(self.activation(self.linear1(x)), self.dropout.p, self.training)
        return F.dropout(self.linear2(hidden), self.dropout3.p, self.training)

    def forward(self, tgt, memory, tgt_mask=None, tgt_padding_mask=None, memory_padding_mask=None):
        ignore = None if memory_padding_mask is None else ~memory_padding_mask  # (B, S)
        x = tgt
        if self.norm_first:
            h = self.norm1(x)
            x = x + self._sa_block(h, tgt_mask, tgt_padding_mask)
            h = self.norm2(x)
            x = x + self.dropout2(self.multihead_attn(h, memory, memory, key_padding_mask=ignore,
                                                      need_weights=False)[0])  # fmt: skip
            return x + self._ff_block(self.norm3(x))
        x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_padding_mask))
        cross = self.multihead_attn(x, memory, memory, key_padding_mask=ignore,
                                    need_weights=False)[0]  # fmt: skip
        x = self.norm2(x + self.dropout2(cross))
        return self.norm3(x + self._ff_block(x))


class DecoderLayerResidualHelper(nn.Module):
    """A helper that applies one sublayer post-LN or pre-LN, masks inverted with
    torch.logical_not, the FFN's activation kept as a module-free function attribute."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.0, norm_first=False,
                 eps=1e-5):  # fmt: skip
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = nn.MultiheadAttention(embed_dim=d_model, num_heads=nhead,
                                               dropout=dropout, batch_first=True)  # fmt: skip
        self.multihead_attn = nn.MultiheadAttention(embed_dim=d_model, num_heads=nhead,
                                                    dropout=dropout, batch_first=True)  # fmt: skip
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout = nn.Dropout(p=dropout)
        self.dropout1 = nn.Dropout(p=dropout)
        self.dropout2 = nn.Dropout(p=dropout)
        self.dropout3 = nn.Dropout(p=dropout)
        self.norm1 = nn.LayerNorm(d_model, eps)
        self.norm2 = nn.LayerNorm(d_model, eps)
        self.norm3 = nn.LayerNorm(d_model, eps)

    @staticmethod
    def _torch_polarity(mask):
        return mask if mask is None else torch.logical_not(mask)

    def _sa_block(self, x, tgt_mask=None, tgt_padding_mask=None):
        out, _ = self.self_attn(query=x, key=x, value=x,
                                attn_mask=self._torch_polarity(tgt_mask),
                                key_padding_mask=self._torch_polarity(tgt_padding_mask),
                                need_weights=False)  # fmt: skip
        return self.dropout1(out)

    def _mha_block(self, x, memory, memory_padding_mask=None):
        out, _ = self.multihead_attn(query=x, key=memory, value=memory,
                                     key_padding_mask=self._torch_polarity(memory_padding_mask),
                                     need_weights=False)  # fmt: skip
        return self.dropout2(out)

    def _ff_block(self, x):
        return self.dropout3(self.linear2(self.dropout(torch.relu(self.linear1(x)))))

    def _sublayer(self, x, norm, block):
        if self.norm_first:
            return x + block(norm(x))
        return norm(x + block(x))

    def forward(self, tgt, memory, tgt_mask=None, tgt_padding_mask=None, memory_padding_mask=None):
        x = self._sublayer(tgt, self.norm1,
                           lambda h: self._sa_block(h, tgt_mask, tgt_padding_mask))  # fmt: skip
        x = self._sublayer(x, self.norm2,
                           lambda h: self._mha_block(h, memory, memory_padding_mask))  # fmt: skip
        return self._sublayer(x, self.norm3, self._ff_block)


RIGHT = {
    "padding_mask": {
        "torch.ne": padding_mask_ne,
        "a nonzero difference": padding_mask_nonzero_difference,
        "ones, filled with False at the padding": padding_mask_filled,
    },
    "causal_mask": {
        "position tensors compared": causal_mask_positions,
        "not the strict upper triangle": causal_mask_not_upper,
        "a loop over the rows": causal_mask_loop,
    },
    "combine_masks": {
        "unsqueeze and logical_and": combine_masks_unsqueeze,
        "reshape to the exact shapes": combine_masks_reshape,
        "(B, L, S) first, then the head axis": combine_masks_three_axes_then_heads,
    },
    "DecoderLayer": {
        "LayerNorm by hand, -1e9 float masks, a loop over the sublayers": DecoderLayerFloatMasks,
        "one mask per head, a forward that inlines cross-attention": DecoderLayerOneMask,
        "a residual helper": DecoderLayerResidualHelper,
    },
}
