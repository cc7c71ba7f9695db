"""Known-wrong implementations for chapter 6: the mistakes the checks must catch and name.

Each entry is a plausible student mistake and the phrase its check's message must contain.
``tests/test_chapter_contract.py`` runs each name's checks on each entry and requires one to fail
with that phrase (and every other name's to pass, with the mistake in the student's namespace), so
a check that grows lax, or one that charges a mistake to the wrong part, is noticed. The LayerNorm
check computes these same classes to say which mistake a student's LayerNorm made, so each
mistake is written once, here.

``WRONG`` maps the name of the graded class to {mistake: Mistake(impl, says)}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autograder.chapters import Mistake

from . import reference as ref

# --- LayerNorm --------------------------------------------------------------------------------


class _LN(ref.LayerNorm):
    """The reference's parameters and signature; a subclass changes one step of forward."""

    def dims(self, x):
        return tuple(range(-len(self.normalized_shape), 0))

    def stats(self, x):
        dims = self.dims(x)
        return x.mean(dims, keepdim=True), x.var(dims, unbiased=False, keepdim=True)

    def normalize(self, x, mean, var):
        return (x - mean) / torch.sqrt(var + self.eps)

    def affine(self, y):
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y

    def forward(self, x):
        return self.affine(self.normalize(x, *self.stats(x)))


class LayerNormOverBatch(_LN):
    """The statistics of BatchNorm: each feature over the first axis."""

    def dims(self, x):
        return (0,)


class LayerNormOverSequence(_LN):
    """Over the positions of a sequence, axis -2 (the last of the leading dimensions)."""

    def dims(self, x):
        return (-len(self.normalized_shape) - 1,)


class LayerNormUnbiasedVariance(_LN):
    """torch.var's default divides by the number of entries minus 1."""

    def stats(self, x):
        dims = self.dims(x)
        return x.mean(dims, keepdim=True), x.var(dims, keepdim=True)


class LayerNormEpsOutsideSqrt(_LN):
    def normalize(self, x, mean, var):
        return (x - mean) / (var.sqrt() + self.eps)


class LayerNormNoAffine(_LN):
    """Normalizes and stops: the gain and the bias exist but are never used."""

    def affine(self, y):
        return y


class LayerNormIgnoresEps(_LN):
    def normalize(self, x, mean, var):
        return (x - mean) / torch.sqrt(var + 1e-5)


class LayerNormLastDimOnly(_LN):
    """Right for an int normalized_shape; with a tuple, normalizes over the last dimension only."""

    def dims(self, x):
        return (-1,)


class LayerNormAlwaysAffine(_LN):
    """Creates the gain and the bias whatever elementwise_affine and bias say."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__(normalized_shape, eps)


class LayerNormGammaBeta(nn.Module):
    """The paper's names for the parameters, not torch's."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        self.eps = eps
        self.shape = (
            (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        )
        self.gamma = nn.Parameter(torch.ones(self.shape))
        self.beta = nn.Parameter(torch.zeros(self.shape))

    def forward(self, x):
        return F.layer_norm(x, self.shape, self.gamma, self.beta, self.eps)


class LayerNormPageSignature(nn.Module):
    """The chapter page's LayerNorm: one int width and eps, nothing else."""

    def __init__(self, width, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x):
        mu = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, unbiased=False, keepdim=True)
        return (x - mu) / torch.sqrt(var + self.eps) * self.weight + self.bias


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
    def __init__(
        self, d_model, nhead, dim_feedforward=2048, dropout=0.0, norm_first=False, eps=1e-5
    ):
        super().__init__(d_model, nhead, dim_feedforward, dropout, norm_first, eps)
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)


class EncoderLayerAlwaysPostLN(ref.EncoderLayer):
    """Forgets to pass norm_first on to the AddNorm modules."""

    def __init__(
        self, d_model, nhead, dim_feedforward=2048, dropout=0.0, norm_first=False, eps=1e-5
    ):
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
        "LayerNormOverBatch": Mistake(LayerNormOverBatch, "as BatchNorm does"),
        "LayerNormOverSequence": Mistake(LayerNormOverSequence, "across the positions"),
        "LayerNormUnbiasedVariance": Mistake(LayerNormUnbiasedVariance, "unbiased"),
        "LayerNormEpsOutsideSqrt": Mistake(LayerNormEpsOutsideSqrt, "outside the square root"),
        "LayerNormNoAffine": Mistake(LayerNormNoAffine, "are not applied"),
        "LayerNormIgnoresEps": Mistake(LayerNormIgnoresEps, "eps is ignored"),
        "LayerNormLastDimOnly": Mistake(LayerNormLastDimOnly, "the last 2 dimensions together"),
        "LayerNormAlwaysAffine": Mistake(LayerNormAlwaysAffine, "elementwise_affine=False"),
        "LayerNormGammaBeta": Mistake(LayerNormGammaBeta, "a parameter called weight"),
        "LayerNormPageSignature": Mistake(LayerNormPageSignature, "keep the signature"),
    },
    "AddNorm": {
        "AddNormAlwaysPostLN": Mistake(AddNormAlwaysPostLN, "this is post-LN"),
        "AddNormResidualAfterNorm": Mistake(
            AddNormResidualAfterNorm, "the residual adds the normalized input"
        ),
        "AddNormPreLNSublayerOnX": Mistake(AddNormPreLNSublayerOnX, "in pre-LN it gets norm(x)"),
        "AddNormNoResidual": Mistake(AddNormNoResidual, "the residual connection is missing"),
        "AddNormDropsArgs": Mistake(AddNormDropsArgs, "further arguments"),
        "AddNormDropoutOnSum": Mistake(AddNormDropoutOnSum, "the sublayer's output"),
    },
    "PositionwiseFeedForward": {
        "FFNNoNonlinearity": Mistake(FFNNoNonlinearity, "no non-linearity"),
        "FFNGelu": Mistake(FFNGelu, "GELU"),
        "FFNReluAtTheEnd": Mistake(FFNReluAtTheEnd, "after linear2"),
        "FFNIgnoresDimFeedforward": Mistake(FFNIgnoresDimFeedforward, "maps E to dim_feedforward"),
        "FFNDropoutAlwaysOn": Mistake(FFNDropoutAlwaysOn, "identity in eval mode"),
        "FFNMixesPositions": Mistake(FFNMixesPositions, "each position on its own"),
    },
    "EncoderLayer": {
        "EncoderLayerFlippedMask": Mistake(EncoderLayerFlippedMask, "the wrong way round"),
        "EncoderLayerIgnoresMask": Mistake(EncoderLayerIgnoresMask, "does not reach the attention"),
        "EncoderLayerNoBatchFirst": Mistake(EncoderLayerNoBatchFirst, "batch_first=True"),
        "EncoderLayerAlwaysPostLN": Mistake(EncoderLayerAlwaysPostLN, "pass norm_first on"),
        "EncoderLayerFFNFirst": Mistake(EncoderLayerFFNFirst, "the FFN comes before"),
        "EncoderLayerSkipsFFNResidual": Mistake(EncoderLayerSkipsFFNResidual, "through add_norm2"),
    },
}
