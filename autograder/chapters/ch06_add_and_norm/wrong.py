"""Known-wrong implementations for chapter 6: the mistakes the checks must catch.

Each entry is a plausible student mistake. ``tests/test_chapter_contract.py`` runs every check on
every entry and requires its part's check to fail (and every other part's to pass, with the
mistake in the student's namespace), so a check that grows lax, or one that charges a mistake to
the wrong part, is noticed.

``WRONG`` maps the name of the graded class to {mistake: implementation}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import reference as ref

# --- LayerNorm --------------------------------------------------------------------------------


class _LN(ref.LayerNorm):
    def stats(self, x):
        return x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)

    def forward(self, x):
        mean, var = self.stats(x)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


class LayerNormOverBatch(_LN):
    """The statistics of BatchNorm: over the first axis."""

    def stats(self, x):
        return x.mean(0, keepdim=True), x.var(0, unbiased=False, keepdim=True)


class LayerNormOverSequence(_LN):
    """Over the positions of a sequence, axis -2."""

    def stats(self, x):
        return x.mean(-2, keepdim=True), x.var(-2, unbiased=False, keepdim=True)


class LayerNormUnbiasedVariance(_LN):
    """torch.var's default divides by E - 1."""

    def stats(self, x):
        return x.mean(-1, keepdim=True), x.var(-1, keepdim=True)


class LayerNormEpsOutsideSqrt(_LN):
    def forward(self, x):
        mean, var = self.stats(x)
        return (x - mean) / (var.sqrt() + self.eps) * self.weight + self.bias


class LayerNormNoAffine(_LN):
    def forward(self, x):
        mean, var = self.stats(x)
        return (x - mean) / torch.sqrt(var + self.eps)


class LayerNormIgnoresEps(_LN):
    def forward(self, x):
        mean, var = self.stats(x)
        return (x - mean) / torch.sqrt(var + 1e-5) * self.weight + self.bias


class LayerNormGammaBeta(nn.Module):
    """The paper's names for the parameters, not torch's."""

    def __init__(self, normalized_shape, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(normalized_shape))
        self.beta = nn.Parameter(torch.zeros(normalized_shape))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.gamma, self.beta, self.eps)


# --- AddNorm ----------------------------------------------------------------------------------


class AddNormAlwaysPostLN(ref.AddNorm):
    def forward(self, x, sublayer, *args):
        return self.norm(x + self.dropout(sublayer(x, *args)))


class AddNormResidualAfterNorm(ref.AddNorm):
    """pre-LN that adds the normalized input: norm(x) + sublayer(norm(x))."""

    def forward(self, x, sublayer, *args):
        if self.norm_first:
            y = self.norm(x)
            return y + self.dropout(sublayer(y, *args))
        return self.norm(x + self.dropout(sublayer(x, *args)))


class AddNormPreLNSublayerOnX(ref.AddNorm):
    def forward(self, x, sublayer, *args):
        if self.norm_first:
            return x + self.dropout(sublayer(x, *args))
        return self.norm(x + self.dropout(sublayer(x, *args)))


class AddNormNoResidual(ref.AddNorm):
    def forward(self, x, sublayer, *args):
        if self.norm_first:
            return self.dropout(sublayer(self.norm(x), *args))
        return self.norm(self.dropout(sublayer(x, *args)))


class AddNormDropsArgs(ref.AddNorm):
    """Forgets to pass the padding mask (or any further argument) on to the sublayer."""

    def forward(self, x, sublayer, *args):
        if self.norm_first:
            return x + self.dropout(sublayer(self.norm(x)))
        return self.norm(x + self.dropout(sublayer(x)))


class AddNormDropoutOnSum(ref.AddNorm):
    """Drops out the residual too: x is zeroed along with the sublayer's output."""

    def forward(self, x, sublayer, *args):
        if self.norm_first:
            return self.dropout(x + sublayer(self.norm(x), *args))
        return self.norm(self.dropout(x + sublayer(x, *args)))


# --- PositionwiseFeedForward ------------------------------------------------------------------


class FFNNoNonlinearity(ref.PositionwiseFeedForward):
    def forward(self, x):
        return self.linear2(self.dropout(self.linear1(x)))


class FFNGelu(ref.PositionwiseFeedForward):
    def forward(self, x):
        return self.linear2(self.dropout(F.gelu(self.linear1(x))))


class FFNReluAtTheEnd(ref.PositionwiseFeedForward):
    def forward(self, x):
        return torch.relu(self.linear2(self.dropout(self.linear1(x))))


class FFNIgnoresDimFeedforward(ref.PositionwiseFeedForward):
    """Always 4 * d_model wide."""

    def __init__(self, d_model, dim_feedforward=2048, dropout=0.0):
        super().__init__(d_model, 4 * d_model, dropout)


class FFNDropoutAlwaysOn(ref.PositionwiseFeedForward):
    def forward(self, x):
        hidden = F.dropout(torch.relu(self.linear1(x)), self.dropout.p, training=True)
        return self.linear2(hidden)


class FFNMixesPositions(ref.PositionwiseFeedForward):
    """Adds the sequence's mean to every position: no longer position-wise."""

    def forward(self, x):
        hidden = torch.relu(self.linear1(x + x.mean(-2, keepdim=True)))
        return self.linear2(self.dropout(hidden))


# --- EncoderLayer -----------------------------------------------------------------------------
# Built, like a student's, from the names LayerNorm, AddNorm and PositionwiseFeedForward of the
# namespace they run in (the reference's here; the student's own in a notebook).


class EncoderLayerFlippedMask(ref.EncoderLayer):
    def _sa_block(self, x, padding_mask=None):
        return self.self_attn(x, x, x, key_padding_mask=padding_mask, need_weights=False)[0]


class EncoderLayerIgnoresMask(ref.EncoderLayer):
    def forward(self, x, padding_mask=None):
        x = self.add_norm1(x, self._sa_block)
        return self.add_norm2(x, self.ffn)


class EncoderLayerNoBatchFirst(ref.EncoderLayer):
    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.0, norm_first=False,
                 eps=1e-5):
        super().__init__(d_model, nhead, dim_feedforward, dropout, norm_first, eps)
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)


class EncoderLayerAlwaysPostLN(ref.EncoderLayer):
    """Forgets to pass norm_first on to the AddNorm modules."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.0, norm_first=False,
                 eps=1e-5):
        super().__init__(d_model, nhead, dim_feedforward, dropout, False, eps)


class EncoderLayerFFNFirst(ref.EncoderLayer):
    def forward(self, x, padding_mask=None):
        x = self.add_norm2(x, self.ffn)
        return self.add_norm1(x, self._sa_block, padding_mask)


class EncoderLayerSkipsFFNResidual(ref.EncoderLayer):
    """The FFN's output replaces x instead of being added to it."""

    def forward(self, x, padding_mask=None):
        x = self.add_norm1(x, self._sa_block, padding_mask)
        return self.ffn(x)


WRONG = {
    "LayerNorm": {
        c.__name__: c
        for c in (
            LayerNormOverBatch,
            LayerNormOverSequence,
            LayerNormUnbiasedVariance,
            LayerNormEpsOutsideSqrt,
            LayerNormNoAffine,
            LayerNormIgnoresEps,
            LayerNormGammaBeta,
        )
    },
    "AddNorm": {
        c.__name__: c
        for c in (
            AddNormAlwaysPostLN,
            AddNormResidualAfterNorm,
            AddNormPreLNSublayerOnX,
            AddNormNoResidual,
            AddNormDropsArgs,
            AddNormDropoutOnSum,
        )
    },
    "PositionwiseFeedForward": {
        c.__name__: c
        for c in (
            FFNNoNonlinearity,
            FFNGelu,
            FFNReluAtTheEnd,
            FFNIgnoresDimFeedforward,
            FFNDropoutAlwaysOn,
            FFNMixesPositions,
        )
    },
    "EncoderLayer": {
        c.__name__: c
        for c in (
            EncoderLayerFlippedMask,
            EncoderLayerIgnoresMask,
            EncoderLayerNoBatchFirst,
            EncoderLayerAlwaysPostLN,
            EncoderLayerFFNFirst,
            EncoderLayerSkipsFFNResidual,
        )
    },
}
