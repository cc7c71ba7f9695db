"""Chapter 6, Add & Norm and the position-wise feed-forward network: the reference implementation.

What the chapter teaches, as modules whose parameter names follow torch's where torch has the
same thing: ``LayerNorm`` (``weight``, ``bias``: equal to ``nn.LayerNorm``, with its arguments:
one or several normalized dimensions, with or without a gain and a bias), ``AddNorm`` (the
residual connection and its LayerNorm, post-LN as in the 2017 paper or pre-LN),
``PositionwiseFeedForward`` (``linear1``, ``linear2``: E -> F -> E with a ReLU) and an
``EncoderLayer`` equal to ``nn.TransformerEncoderLayer(..., dropout=0.0, batch_first=True)`` for
both values of ``norm_first`` once its weights are copied with :func:`from_torch_state`.

Parameter names: ours mirror the structure (``add_norm1.norm.weight``), torch's are flat
(``norm1.weight``); :data:`TORCH_TO_OURS` is the whole mapping, five prefixes.

Masks: ``padding_mask`` is (B, L) and **True at real tokens** (attention to them is allowed), the
course's polarity; ``nn.MultiheadAttention``'s ``key_padding_mask`` is True at tokens to *ignore*,
so the layer passes ``~padding_mask``. Every sequence needs at least one real token (torch's
attention gives NaN for a query with no key to attend to).

Not here: multi-head attention itself (chapter 5; the layer uses ``nn.MultiheadAttention``),
causal masks and the decoder (later chapters).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "LayerNorm",
    "AddNorm",
    "PositionwiseFeedForward",
    "EncoderLayer",
    "TORCH_TO_OURS",
    "from_torch_state",
]


class LayerNorm(nn.Module):
    """Layer normalization over the last dimensions, equal to ``nn.LayerNorm``.

    Each token is shifted to mean 0 and scaled to variance 1 over its last ``len(normalized_shape)``
    dimensions (the *biased* variance, dividing by their number of entries, with eps inside the
    square root), then multiplied by a learned gain ``weight`` initialised to 1 and shifted by a
    learned ``bias`` initialised to 0, both of shape ``normalized_shape``.

    Args:
        normalized_shape: E (an int) or the shape of the last dimensions to normalize over, e.g.
            (H, D) to normalize the heads of a token together.
        eps: added to the variance inside the square root.
        elementwise_affine: whether there are a gain and a bias (without them both are None).
        bias: whether there is a bias (with elementwise_affine).

    Example: LayerNorm(2)(tensor([[1., 3.]])) -> about [[-1., 1.]]
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
        shape = tuple(shape)
        if not shape or not all(isinstance(n, int) and n > 0 for n in shape):
            raise ValueError(
                "normalized_shape must be a positive int or a tuple of them, got "
                f"{normalized_shape!r}"
            )
        self.normalized_shape = shape
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(shape))  # normalized_shape
            self.bias = nn.Parameter(torch.zeros(shape)) if bias else None  # normalized_shape
        else:
            self.weight = None
            self.bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = len(self.normalized_shape)
        if tuple(x.shape[-k:]) != self.normalized_shape:
            raise ValueError(
                f"expected the last dimensions of the input to be {self.normalized_shape}, got "
                f"shape {tuple(x.shape)}"
            )
        dims = tuple(range(-k, 0))
        mean = x.mean(dim=dims, keepdim=True)  # (..., 1, ..., 1)
        var = x.var(dim=dims, unbiased=False, keepdim=True)  # (..., 1, ..., 1)
        out = (x - mean) / torch.sqrt(var + self.eps)  # x's shape
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out


class AddNorm(nn.Module):
    """A sublayer wrapped in a residual connection and a LayerNorm.

    post-LN (norm_first=False, the 2017 paper): ``norm(x + dropout(sublayer(x)))``;
    pre-LN (norm_first=True): ``x + dropout(sublayer(norm(x)))``.
    Further positional arguments of forward go on to the sublayer: ``add_norm(x, attn, m)``
    calls ``attn(y, m)``.

    Example: AddNorm(4)(x, lambda y: 0 * y) == LayerNorm(4)(x)
    """

    def __init__(
        self, d_model: int, norm_first: bool = False, dropout: float = 0.0, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.norm = LayerNorm(d_model, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, sublayer, *args) -> torch.Tensor:
        if self.norm_first:
            return x + self.dropout(sublayer(self.norm(x), *args))  # (..., E)
        return self.norm(x + self.dropout(sublayer(x, *args)))  # (..., E)


class PositionwiseFeedForward(nn.Module):
    """FFN(x) = linear2(dropout(relu(linear1(x)))), applied to every position on its own.

    linear1: E -> F (``dim_feedforward``), linear2: F -> E; 512 -> 2048 -> 512 in the paper.

    Example: PositionwiseFeedForward(8, 32)(torch.zeros(2, 5, 8)).shape -> (2, 5, 8)
    """

    def __init__(self, d_model: int, dim_feedforward: int = 2048, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.linear1(x))  # (..., F)
        return self.linear2(self.dropout(hidden))  # (..., E)


class EncoderLayer(nn.Module):
    """One Transformer encoder layer: self-attention, then the FFN, each in an AddNorm.

    Equal to ``nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout,
    batch_first=True, norm_first=norm_first)`` (ReLU) after :func:`from_torch_state`.

    forward(x (B, L, E), padding_mask (B, L) bool or None, True at real tokens) -> (B, L, E).
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
        norm_first: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.ffn = PositionwiseFeedForward(d_model, dim_feedforward, dropout)
        self.add_norm1 = AddNorm(d_model, norm_first, dropout, eps)
        self.add_norm2 = AddNorm(d_model, norm_first, dropout, eps)

    def _sa_block(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention of x (B, L, E) with our polarity (True = real token) -> (B, L, E)."""
        ignore = None if padding_mask is None else ~padding_mask  # (B, L): torch's polarity
        return self.self_attn(x, x, x, key_padding_mask=ignore, need_weights=False)[0]

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.add_norm1(x, self._sa_block, padding_mask)  # (B, L, E)
        return self.add_norm2(x, self.ffn)  # (B, L, E)


# torch's nn.TransformerEncoderLayer name prefix -> ours
TORCH_TO_OURS = {
    "self_attn.": "self_attn.",
    "linear1.": "ffn.linear1.",
    "linear2.": "ffn.linear2.",
    "norm1.": "add_norm1.norm.",
    "norm2.": "add_norm2.norm.",
}


def from_torch_state(state: dict) -> dict:
    """nn.TransformerEncoderLayer's state dict with our EncoderLayer's names.

    Example: {"norm1.weight": w} -> {"add_norm1.norm.weight": w}
    """
    out = {}
    for name, value in state.items():
        for theirs, ours in TORCH_TO_OURS.items():
            if name.startswith(theirs):
                out[ours + name[len(theirs) :]] = value
                break
        else:
            raise KeyError(f"no mapping for torch's parameter {name!r}")
    return out
