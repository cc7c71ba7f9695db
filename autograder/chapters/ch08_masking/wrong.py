"""Known-wrong implementations for chapter 8: the mistakes the checks must catch.

Each entry is a plausible student mistake. ``tests/test_chapter_contract.py`` runs every check on
every entry and requires its part's check to fail (and every other part's to pass, with the
mistake in the student's namespace), so a check that grows lax, or one that charges a mistake to
the wrong part, is noticed.

``WRONG`` maps the name of the graded function or class to {mistake: implementation}.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import reference as ref

# --- padding_mask -----------------------------------------------------------------------------


def padding_mask_flipped(tokens, pad_id):
    """True at the padding: nn.MultiheadAttention's key_padding_mask, not ours."""
    return tokens == pad_id


def padding_mask_pad_is_zero(tokens, pad_id):
    return tokens != 0


def padding_mask_from_lengths(tokens, pad_id):
    """Counts the real tokens and assumes they come first: wrong for left or inner padding."""
    lengths = (tokens != pad_id).sum(-1, keepdim=True)  # (..., 1)
    return torch.arange(tokens.size(-1), device=tokens.device) < lengths  # (..., S)


def padding_mask_float(tokens, pad_id):
    return (tokens != pad_id).float()


def padding_mask_broadcast_ready(tokens, pad_id):
    """Already (B, 1, 1, S): the next part's job, and not what was asked."""
    return (tokens != pad_id)[:, None, None, :]


# --- causal_mask ------------------------------------------------------------------------------


def _tril(L, S, device, diagonal):
    S = L if S is None else S
    return torch.ones(L, S, dtype=torch.bool, device=device).tril(diagonal)


def causal_mask_no_diagonal(L, S=None, device=None):
    """A query may not attend to itself."""
    S = L if S is None else S
    return _tril(L, S, device, S - L - 1)


def causal_mask_one_ahead(L, S=None, device=None):
    """Each query sees one future position."""
    S = L if S is None else S
    return _tril(L, S, device, S - L + 1)


def causal_mask_top_left(L, S=None, device=None):
    """torch's is_causal alignment: right for L == S only."""
    return _tril(L, S, device, 0)


def causal_mask_flipped(L, S=None, device=None):
    """True for the future: nn.MultiheadAttention's polarity."""
    return ~ref.causal_mask(L, S, device)


def causal_mask_float(L, S=None, device=None):
    """0 where allowed, -inf where not: a float mask, not the boolean mask asked for."""
    allowed = ref.causal_mask(L, S, device)
    return torch.zeros(allowed.shape, device=device).masked_fill(~allowed, float("-inf"))


def causal_mask_square(L, S=None, device=None):
    """Ignores S: always (L, L)."""
    return ref.causal_mask(L, L, device)


# --- combine_masks ----------------------------------------------------------------------------


def combine_masks_padding_on_queries(padding_mask=None, attn_mask=None):
    """The padding mask broadcast over the query axis, (B, 1, S, 1), instead of the keys."""
    if padding_mask is None and attn_mask is None:
        return None
    if padding_mask is None:
        return attn_mask[None, None]
    rows = padding_mask[:, None, :, None]  # (B, 1, S, 1): wrong axis
    return rows if attn_mask is None else rows & attn_mask[None, None]


def combine_masks_or(padding_mask=None, attn_mask=None):
    if padding_mask is None or attn_mask is None:
        return ref.combine_masks(padding_mask, attn_mask)
    return padding_mask[:, None, None, :] | attn_mask[None, None]


def combine_masks_no_head_axis(padding_mask=None, attn_mask=None):
    """(B, L, S): against (B, H, L, S) scores, B would line up with H."""
    if padding_mask is None or attn_mask is None:
        return ref.combine_masks(padding_mask, attn_mask)
    return padding_mask[:, None, :] & attn_mask  # (B, L, S)


def combine_masks_torch_polarity(padding_mask=None, attn_mask=None):
    """Returns True where attention is *not* allowed."""
    out = ref.combine_masks(padding_mask, attn_mask)
    return None if out is None else ~out


def combine_masks_ignores_attn_mask(padding_mask=None, attn_mask=None):
    if padding_mask is None:
        return ref.combine_masks(None, attn_mask)
    return padding_mask[:, None, None, :].expand(-1, 1, attn_mask.size(0), -1) if (
        attn_mask is not None
    ) else padding_mask[:, None, None, :]


# --- DecoderLayer -----------------------------------------------------------------------------


class DecoderLayerFlippedCausal(ref.DecoderLayer):
    """Passes tgt_mask to nn.MultiheadAttention as it is: True there means 'do not attend'."""

    def _sa_block(self, x, tgt_mask=None, tgt_padding_mask=None):
        pad = None if tgt_padding_mask is None else ~tgt_padding_mask
        out = self.self_attn(x, x, x, attn_mask=tgt_mask, key_padding_mask=pad,
                             need_weights=False)[0]  # fmt: skip
        return self.dropout1(out)


class DecoderLayerFlippedPadding(ref.DecoderLayer):
    def _sa_block(self, x, tgt_mask=None, tgt_padding_mask=None):
        attn = None if tgt_mask is None else ~tgt_mask
        out = self.self_attn(x, x, x, attn_mask=attn, key_padding_mask=tgt_padding_mask,
                             need_weights=False)[0]  # fmt: skip
        return self.dropout1(out)


class DecoderLayerCausalIgnored(ref.DecoderLayer):
    def _sa_block(self, x, tgt_mask=None, tgt_padding_mask=None):
        return super()._sa_block(x, None, tgt_padding_mask)


class DecoderLayerCrossFromDecoder(ref.DecoderLayer):
    """Cross-attention whose keys and values come from the decoder instead of the encoder."""

    def _mha_block(self, x, memory, memory_padding_mask=None):
        out = self.multihead_attn(x, x, x, need_weights=False)[0]
        return self.dropout2(out)


class DecoderLayerMemoryPaddingIgnored(ref.DecoderLayer):
    def _mha_block(self, x, memory, memory_padding_mask=None):
        return super()._mha_block(x, memory, None)


class DecoderLayerMemoryPaddingFlipped(ref.DecoderLayer):
    def _mha_block(self, x, memory, memory_padding_mask=None):
        out = self.multihead_attn(x, memory, memory, key_padding_mask=memory_padding_mask,
                                  need_weights=False)[0]  # fmt: skip
        return self.dropout2(out)


def _softmax_zero_softmax(mha, x, allowed):
    """Self-attention by hand with nn.MultiheadAttention's weights, masked the study notes' way:
    softmax over every key, zero the masked weights, softmax again. allowed: True = allowed,
    broadcastable to (B, H, L, L)."""
    B, L, E = x.shape
    H = mha.num_heads
    D = E // H
    q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)  # (B, L, E) each
    q, k, v = (t.view(B, L, H, D).transpose(1, 2) for t in (q, k, v))  # (B, H, L, D) each
    weights = (q @ k.transpose(-2, -1) / math.sqrt(D)).softmax(dim=-1)  # (B, H, L, L)
    weights = weights.masked_fill(~allowed, 0.0).softmax(dim=-1)  # (B, H, L, L)
    out = (weights @ v).transpose(1, 2).reshape(B, L, E)  # (B, L, E)
    return mha.out_proj(out)


class DecoderLayerMaskAfterSoftmax(ref.DecoderLayer):
    """Writes the self-attention by hand and masks after the softmax."""

    def _sa_block(self, x, tgt_mask=None, tgt_padding_mask=None):
        allowed = torch.ones(x.size(1), x.size(1), dtype=torch.bool, device=x.device)
        if tgt_mask is not None:
            allowed = allowed & tgt_mask
        allowed = allowed[None, None]  # (1, 1, L, L)
        if tgt_padding_mask is not None:
            allowed = allowed & tgt_padding_mask[:, None, None, :]  # (B, 1, L, L)
        return self.dropout1(_softmax_zero_softmax(self.self_attn, x, allowed))


class DecoderLayerAlwaysPostLN(ref.DecoderLayer):
    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.0, norm_first=False,
                 eps=1e-5):  # fmt: skip
        super().__init__(d_model, nhead, dim_feedforward, dropout, False, eps)


class DecoderLayerCrossBeforeSelf(ref.DecoderLayer):
    def forward(self, tgt, memory, tgt_mask=None, tgt_padding_mask=None,
                memory_padding_mask=None):  # fmt: skip
        x = tgt
        if self.norm_first:
            x = x + self._mha_block(self.norm2(x), memory, memory_padding_mask)
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_padding_mask)
            return x + self._ff_block(self.norm3(x))
        x = self.norm2(x + self._mha_block(x, memory, memory_padding_mask))
        x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_padding_mask))
        return self.norm3(x + self._ff_block(x))


class DecoderLayerForwardDropsCausal(ref.DecoderLayer):
    """_sa_block is right, but forward never hands it the tgt_mask."""

    def forward(self, tgt, memory, tgt_mask=None, tgt_padding_mask=None,
                memory_padding_mask=None):  # fmt: skip
        return super().forward(tgt, memory, None, tgt_padding_mask, memory_padding_mask)


class DecoderLayerForwardDropsMemoryPadding(ref.DecoderLayer):
    def forward(self, tgt, memory, tgt_mask=None, tgt_padding_mask=None,
                memory_padding_mask=None):  # fmt: skip
        return super().forward(tgt, memory, tgt_mask, tgt_padding_mask, None)


WRONG = {
    "padding_mask": {
        f.__name__: f
        for f in (
            padding_mask_flipped,
            padding_mask_pad_is_zero,
            padding_mask_from_lengths,
            padding_mask_float,
            padding_mask_broadcast_ready,
        )
    },
    "causal_mask": {
        f.__name__: f
        for f in (
            causal_mask_no_diagonal,
            causal_mask_one_ahead,
            causal_mask_top_left,
            causal_mask_flipped,
            causal_mask_float,
            causal_mask_square,
        )
    },
    "combine_masks": {
        f.__name__: f
        for f in (
            combine_masks_padding_on_queries,
            combine_masks_or,
            combine_masks_no_head_axis,
            combine_masks_torch_polarity,
            combine_masks_ignores_attn_mask,
        )
    },
    "DecoderLayer": {
        c.__name__: c
        for c in (
            DecoderLayerFlippedCausal,
            DecoderLayerFlippedPadding,
            DecoderLayerCausalIgnored,
            DecoderLayerCrossFromDecoder,
            DecoderLayerMemoryPaddingIgnored,
            DecoderLayerMemoryPaddingFlipped,
            DecoderLayerMaskAfterSoftmax,
            DecoderLayerAlwaysPostLN,
            DecoderLayerCrossBeforeSelf,
            DecoderLayerForwardDropsCausal,
            DecoderLayerForwardDropsMemoryPadding,
        )
    },
}
