"""Correct answers for chapter 6, as unlike the reference as the instructions allow.

Each was written from the released notebook's instructions, not from the reference: moments
written out, the normalized dimensions flattened into one, ``torch.var_mean``, float64 inside,
absent parameters registered as None or left out, helper methods and extra attributes, a ReLU
module or a clamp, the sublayer's extra arguments passed through a closure, keyword arguments
passed on too. The contract test requires full marks for each, on its own and in a notebook.

``RIGHT`` maps the name of the graded class to {variant: implementation}. The last variant of each
name is self-contained (this module's imports, the earlier parts by their global names), since the
contract assembles a notebook from them; the module's ``LayerNorm``, ``AddNorm`` and
``PositionwiseFeedForward`` are those last variants, as in that notebook.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# --- LayerNorm --------------------------------------------------------------------------------


class LayerNormMomentsByHand(nn.Module):
    """Mean and variance written out as sums; absent parameters registered as None."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = [normalized_shape]
        self.normalized_shape = torch.Size(normalized_shape)
        self.eps = eps
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(self.normalized_shape))
        else:
            self.register_parameter("weight", None)
        if elementwise_affine and bias:
            self.bias = nn.Parameter(torch.zeros(self.normalized_shape))
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        dims = [-(i + 1) for i in range(len(self.normalized_shape))]
        n = math.prod(self.normalized_shape)
        mean = x.sum(dim=dims, keepdim=True) / n
        var = ((x - mean) ** 2).sum(dim=dims, keepdim=True) / n
        y = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y


class LayerNormFlattenedFloat64(nn.Module):
    """The normalized dimensions flattened into one, computed in float64, cast back; no
    parameter attributes at all when there is no gain or bias."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        self.shape = (
            (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        )
        self.eps = eps
        self.affine = elementwise_affine
        self.has_bias = elementwise_affine and bias
        if self.affine:
            self.weight = nn.Parameter(torch.ones(*self.shape))
        if self.has_bias:
            self.bias = nn.Parameter(torch.zeros(*self.shape))

    def forward(self, x):
        k = len(self.shape)
        flat = x.double().flatten(start_dim=x.dim() - k)  # (..., n)
        centred = flat - flat.mean(-1, keepdim=True)
        normed = centred / (centred.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()
        y = normed.reshape(x.shape).to(x.dtype)
        if self.affine:
            y = y * self.weight
        if self.has_bias:
            y = y + self.bias
        return y


class LayerNormVarMean(nn.Module):
    """torch.var_mean with correction=0, and addcmul for the affine part; a helper method."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        shape = [normalized_shape] if isinstance(normalized_shape, int) else list(normalized_shape)
        self.normalized_shape = tuple(shape)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(shape)) if elementwise_affine else None
        self.bias = nn.Parameter(torch.zeros(shape)) if elementwise_affine and bias else None

    def _dims(self):
        return tuple(range(-len(self.normalized_shape), 0))

    def forward(self, x):
        var, mean = torch.var_mean(x, dim=self._dims(), correction=0, keepdim=True)
        y = (x - mean) / torch.sqrt(var + self.eps)
        if self.weight is None:
            return y
        if self.bias is None:
            return y * self.weight
        return torch.addcmul(self.bias, y, self.weight)


# --- AddNorm ----------------------------------------------------------------------------------


class AddNormTwoMethods(nn.Module):
    """One helper method for each placement."""

    def __init__(self, d_model, norm_first=False, dropout=0.0, eps=1e-5):
        super().__init__()
        self.norm_first = norm_first
        self.norm = LayerNorm(d_model, eps=eps)
        self.dropout = nn.Dropout(p=dropout)

    def _post(self, x, sublayer, args):
        return self.norm(x + self.dropout(sublayer(x, *args)))

    def _pre(self, x, sublayer, args):
        return x + self.dropout(sublayer(self.norm(x), *args))

    def forward(self, x, sublayer, *args):
        return self._pre(x, sublayer, args) if self.norm_first else self._post(x, sublayer, args)


class AddNormKeywordsToo(nn.Module):
    """One path for both placements; keyword arguments go on to the sublayer as well."""

    def __init__(self, d_model, norm_first=False, dropout=0.0, eps=1e-5):
        super().__init__()
        self.d_model, self.eps = d_model, eps
        self.norm_first = bool(norm_first)
        self.norm = LayerNorm(d_model, eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, sublayer, *args, **kwargs):
        inner = self.norm(x) if self.norm_first else x
        total = x + self.dropout(sublayer(inner, *args, **kwargs))
        return total if self.norm_first else self.norm(total)


class AddNormResidualNamed(nn.Module):
    """The residual kept under its own name; the dropout applied functionally."""

    def __init__(self, d_model, norm_first=False, dropout=0.0, eps=1e-5):
        super().__init__()
        self.norm_first = norm_first
        self.norm = LayerNorm(normalized_shape=d_model, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.p = dropout

    def forward(self, x, sublayer, *args):
        residual = x
        if self.norm_first:
            x = self.norm(x)
        x = F.dropout(sublayer(x, *args), p=self.p, training=self.training)
        x = residual + x
        if not self.norm_first:
            x = self.norm(x)
        return x


# --- PositionwiseFeedForward ------------------------------------------------------------------


class FFNClamp(nn.Module):
    """The ReLU as a clamp at 0."""

    def __init__(self, d_model, dim_feedforward=2048, dropout=0.0):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.linear2(self.dropout(self.linear1(x).clamp(min=0)))


class FFNReluModule(nn.Module):
    """An nn.ReLU module beside the two layers, extra attributes for the widths."""

    def __init__(self, d_model, dim_feedforward=2048, dropout=0.0):
        super().__init__()
        self.d_model, self.d_ff = d_model, dim_feedforward
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=True)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(p=dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=True)

    def forward(self, x):
        hidden = self.dropout(self.activation(self.linear1(x)))
        return self.linear2(hidden)


class FFNFunctionalLinear(nn.Module):
    """The layers' own parameters used through F.linear."""

    def __init__(self, d_model, dim_feedforward=2048, dropout=0.0):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        h = F.relu(F.linear(x, self.linear1.weight, self.linear1.bias))
        return F.linear(self.dropout(h), self.linear2.weight, self.linear2.bias)


# The names the later parts build, as in a notebook assembled from the last variants.
LayerNorm = LayerNormVarMean
AddNorm = AddNormResidualNamed
PositionwiseFeedForward = FFNFunctionalLinear


# --- EncoderLayer -----------------------------------------------------------------------------


class EncoderLayerClosure(nn.Module):
    """The padding mask reaches the attention through a closure, not as a further argument."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.0, norm_first=False,
                 eps=1e-5):  # fmt: skip
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.ffn = PositionwiseFeedForward(d_model, dim_feedforward, dropout)
        self.add_norm1 = AddNorm(d_model, norm_first, dropout, eps)
        self.add_norm2 = AddNorm(d_model, norm_first, dropout, eps)

    def _sa_block(self, x, padding_mask=None):
        ignore = None if padding_mask is None else padding_mask.logical_not()
        out, _ = self.self_attn(x, x, x, key_padding_mask=ignore, need_weights=False)
        return out

    def forward(self, x, padding_mask=None):
        x = self.add_norm1(x, lambda y: self._sa_block(y, padding_mask))
        return self.add_norm2(x, self.ffn)


class EncoderLayerKeywords(nn.Module):
    """Everything built with keyword arguments; a helper method for the FFN block."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.0, norm_first=False,
                 eps=1e-5):  # fmt: skip
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = nn.MultiheadAttention(
            embed_dim=d_model, num_heads=nhead, dropout=dropout, batch_first=True
        )
        self.ffn = PositionwiseFeedForward(
            d_model=d_model, dim_feedforward=dim_feedforward, dropout=dropout
        )
        self.add_norm1 = AddNorm(d_model, norm_first=norm_first, dropout=dropout, eps=eps)
        self.add_norm2 = AddNorm(d_model, norm_first=norm_first, dropout=dropout, eps=eps)

    def _sa_block(self, x, padding_mask=None):
        kpm = ~padding_mask if padding_mask is not None else None
        return self.self_attn(query=x, key=x, value=x, key_padding_mask=kpm,
                              need_weights=False)[0]  # fmt: skip

    def _ff_block(self, x):
        return self.add_norm2(x, self.ffn)

    def forward(self, x, padding_mask=None):
        return self._ff_block(self.add_norm1(x, self._sa_block, padding_mask))


class EncoderLayerLoop(nn.Module):
    """The two sublayers in a loop over (AddNorm, sublayer, arguments)."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.0, norm_first=False,
                 eps=1e-5):  # fmt: skip
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout, batch_first=True)
        self.ffn = PositionwiseFeedForward(d_model, dim_feedforward, dropout)
        self.add_norm1 = AddNorm(d_model, norm_first, dropout, eps)
        self.add_norm2 = AddNorm(d_model, norm_first, dropout, eps)

    def _sa_block(self, x, padding_mask=None):
        if padding_mask is None:
            return self.self_attn(x, x, x, need_weights=False)[0]
        return self.self_attn(x, x, x, key_padding_mask=~padding_mask, need_weights=False)[0]

    def forward(self, x, padding_mask=None):
        for add_norm, sublayer, args in ((self.add_norm1, self._sa_block, (padding_mask,)),
                                         (self.add_norm2, self.ffn, ())):  # fmt: skip
            x = add_norm(x, sublayer, *args)
        return x


RIGHT = {
    "LayerNorm": {
        c.__name__: c for c in (LayerNormMomentsByHand, LayerNormFlattenedFloat64, LayerNormVarMean)
    },
    "AddNorm": {
        c.__name__: c for c in (AddNormTwoMethods, AddNormKeywordsToo, AddNormResidualNamed)
    },
    "PositionwiseFeedForward": {
        c.__name__: c for c in (FFNClamp, FFNReluModule, FFNFunctionalLinear)
    },
    "EncoderLayer": {
        c.__name__: c for c in (EncoderLayerClosure, EncoderLayerKeywords, EncoderLayerLoop)
    },
}
