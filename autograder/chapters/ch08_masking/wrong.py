"""Known-wrong implementations for chapter 8: the mistakes the checks must catch.

Each entry is a plausible student mistake. ``tests/test_chapter_contract.py`` runs every check on
every entry and requires a check of its name to fail with a message that holds the entry's phrase
(and every other name's checks to pass, with the mistake in the student's namespace), so a check
that grows lax, or one that charges a mistake to the wrong part, is noticed.

``WRONG`` maps the name of the graded function or class to {mistake: Mistake(implementation,
phrase)}.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from autograder.chapters import Mistake

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


class DecoderLayerForwardDropsDecoderPadding(ref.DecoderLayer):
    def forward(self, tgt, memory, tgt_mask=None, tgt_padding_mask=None,
                memory_padding_mask=None):  # fmt: skip
        return super().forward(tgt, memory, tgt_mask, None, memory_padding_mask)


class DecoderLayerGELU(ref.DecoderLayer):
    """A GELU in the feed-forward network, where torch's layer (and the paper) has a ReLU."""

    def _ff_block(self, x):
        return self.dropout3(self.linear2(self.dropout(F.gelu(self.linear1(x)))))


class DecoderLayerNoResidualAroundFFN(ref.DecoderLayer):
    def forward(self, tgt, memory, tgt_mask=None, tgt_padding_mask=None,
                memory_padding_mask=None):  # fmt: skip
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_padding_mask)
            x = x + self._mha_block(self.norm2(x), memory, memory_padding_mask)
            return self._ff_block(self.norm3(x))
        x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_padding_mask))
        x = self.norm2(x + self._mha_block(x, memory, memory_padding_mask))
        return self.norm3(self._ff_block(x))


class DecoderLayerNoDropout(ref.DecoderLayer):
    """Ignores the dropout argument: nothing is ever dropped."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.0, norm_first=False,
                 eps=1e-5):  # fmt: skip
        super().__init__(d_model, nhead, dim_feedforward, 0.0, norm_first, eps)


class DecoderLayerDropoutAlwaysOn(ref.DecoderLayer):
    """F.dropout with training=True on the sublayers' outputs: it drops in eval mode too."""

    def _ff_block(self, x):
        hidden = self.dropout(F.relu(self.linear1(x)))
        return F.dropout(self.linear2(hidden), self.dropout3.p, training=True)


class DecoderLayerOwnNames(ref.DecoderLayer):
    """Submodules named in its own way: torch's state dict does not load."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.0, norm_first=False,
                 eps=1e-5):  # fmt: skip
        super().__init__(d_model, nhead, dim_feedforward, dropout, norm_first, eps)
        self.ln_cross = self.norm2
        del self.norm2

    def forward(self, tgt, memory, tgt_mask=None, tgt_padding_mask=None,
                memory_padding_mask=None):  # fmt: skip
        self.norm2 = self.ln_cross
        return super().forward(tgt, memory, tgt_mask, tgt_padding_mask, memory_padding_mask)


class DecoderLayerDetachesMemory(ref.DecoderLayer):
    """Detaches the encoder's output: no gradient reaches the encoder."""

    def _mha_block(self, x, memory, memory_padding_mask=None):
        return super()._mha_block(x, memory.detach(), memory_padding_mask)


class DecoderLayerAttentionWithoutBatchFirst(ref.DecoderLayer):
    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.0, norm_first=False,
                 eps=1e-5):  # fmt: skip
        super().__init__(d_model, nhead, dim_feedforward, dropout, norm_first, eps)
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)


WRONG = {
    "padding_mask": {
        "True at padding": Mistake(padding_mask_flipped, "wrong way round"),
        "padding is id 0": Mistake(padding_mask_pad_is_zero, "not id 0"),
        "padding assumed at the end": Mistake(padding_mask_from_lengths, "at the end"),
        "a float mask": Mistake(padding_mask_float, "boolean"),
        "already broadcast": Mistake(padding_mask_broadcast_ready, "one entry per token"),
    },
    "causal_mask": {
        "no diagonal": Mistake(causal_mask_no_diagonal, "its own position"),
        "one ahead": Mistake(causal_mask_one_ahead, "one future position"),
        "top-left aligned": Mistake(causal_mask_top_left, "top-left"),
        "True for the future": Mistake(causal_mask_flipped, "wrong way round"),
        "a float mask": Mistake(causal_mask_float, "boolean"),
        "always square": Mistake(causal_mask_square, "wrong shape"),
    },
    "combine_masks": {
        "padding on the query axis": Mistake(combine_masks_padding_on_queries, "over the queries"),
        "or instead of and": Mistake(combine_masks_or, "'or'"),
        "no head axis": Mistake(combine_masks_no_head_axis, "head axis"),
        "torch's polarity": Mistake(combine_masks_torch_polarity, "wrong way round"),
        "attn_mask ignored": Mistake(combine_masks_ignores_attn_mask, "attn_mask is ignored"),
    },
    "DecoderLayer": {
        "tgt_mask not inverted": Mistake(DecoderLayerFlippedCausal, "tgt_mask reaches"),
        "tgt_padding_mask not inverted": Mistake(DecoderLayerFlippedPadding,
                                                 "tgt_padding_mask reaches"),
        "tgt_mask ignored": Mistake(DecoderLayerCausalIgnored, "tgt_mask is not used"),
        "cross-attention over the decoder": Mistake(DecoderLayerCrossFromDecoder,
                                                    "keys and values come from the decoder"),
        "memory_padding_mask ignored": Mistake(DecoderLayerMemoryPaddingIgnored,
                                               "memory_padding_mask is not used"),
        "memory_padding_mask not inverted": Mistake(DecoderLayerMemoryPaddingFlipped,
                                                    "memory_padding_mask reaches"),
        "softmax, zero, softmax": Mistake(DecoderLayerMaskAfterSoftmax, "before the softmax"),
        "always post-LN": Mistake(DecoderLayerAlwaysPostLN, "this is post-LN"),
        "cross-attention before self-attention": Mistake(DecoderLayerCrossBeforeSelf,
                                                         "wrong order"),
        "forward drops tgt_mask": Mistake(DecoderLayerForwardDropsCausal, "the future leaks in"),
        "forward drops memory_padding_mask": Mistake(DecoderLayerForwardDropsMemoryPadding,
                                                     "encoder's padding"),
        "forward drops tgt_padding_mask": Mistake(DecoderLayerForwardDropsDecoderPadding,
                                                  "decoder's padding"),
        "GELU in the feed-forward network": Mistake(DecoderLayerGELU, "feed-forward"),
        "no residual around the feed-forward network": Mistake(DecoderLayerNoResidualAroundFFN,
                                                               "residual"),
        "dropout ignored": Mistake(DecoderLayerNoDropout, "the dropout does nothing"),
        "dropout in eval mode too": Mistake(DecoderLayerDropoutAlwaysOn, "eval mode"),
        "submodules named otherwise": Mistake(DecoderLayerOwnNames, "nn.TransformerDecoderLayer"),
        "the encoder's output detached": Mistake(DecoderLayerDetachesMemory,
                                                  "no gradient reaches memory"),
        "self-attention without batch_first": Mistake(DecoderLayerAttentionWithoutBatchFirst,
                                                      "batch_first=True"),
    },
}
