"""Chapter 7, positional encoding: the reference implementation.

What the chapter's exercise asks for, in the form its instructions fix:

- :func:`sinusoidal_positional_encoding`: the encoding of Vaswani et al. (2017), section 3.5, in
  the paper's interleaved layout (even columns sines, odd columns cosines), for the positions
  0..n-1 (a table) or for any tensor of positions (a batch of position ids, positions that
  continue a prefix). An odd width is allowed: the formula still defines every column, and the
  last one, being even, is a sine with no cosine beside it.
- :class:`PositionalEncoding`: adds the table's first L rows to a (..., L, E) input, then applies
  dropout. The table is a registered buffer called ``pe`` of shape (max_len, E), so it moves with
  ``.to()`` and never receives a gradient. It does **not** multiply its input by sqrt(E): that is
  the embedding's job, done before this module (the paper's section 3.4).
- :func:`permutation_equivariance_gap`: how far plain self-attention, with or without positions
  and a causal mask, is from being permutation-equivariant.

Not here: learned position tables (an ``nn.Embedding(max_len, E)`` needs no reference), relative
positions and rotary embeddings (the page shows them; no exercise asks for them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "sinusoidal_positional_encoding",
    "PositionalEncoding",
    "permutation_equivariance_gap",
    "self_attention_no_projections",
]

BASE = 10000.0


def sinusoidal_positional_encoding(
    positions: int | torch.Tensor,
    embed_dim: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """PE of the positions 0, ..., n - 1 (`positions` an int n): (n, embed_dim); or PE of every
    entry of a tensor of integer positions of shape (...): (..., embed_dim).

    PE[p, 2i] = sin(p * w_i) and PE[p, 2i + 1] = cos(p * w_i), with w_i = 10000 ** (-2i / E).
    Computed in float64 and returned in `dtype`, so that a float32 table is as accurate as
    float32 allows even for large positions; on `device`, by default the CPU for an int and the
    positions' device for a tensor. With an odd E the last column, E - 1, is a sine (of frequency
    10000 ** (-(E - 1) / E)) with no cosine partner.

    Example: sinusoidal_positional_encoding(2, 4) -> [[0, 1, 0, 1],
                                                     [sin 1, cos 1, sin 0.01, cos 0.01]]
             sinusoidal_positional_encoding(torch.tensor([[1], [0]]), 4).shape -> (2, 1, 4)
    """
    if embed_dim < 1:
        raise ValueError(f"need embed_dim >= 1, got {embed_dim}")
    if isinstance(positions, torch.Tensor):
        if positions.is_floating_point() or positions.is_complex():
            raise ValueError(f"positions must be integers, not {positions.dtype}")
        device = positions.device if device is None else device
        position = positions.to(device=device, dtype=torch.float64)  # (...)
    else:
        if positions < 0:
            raise ValueError(f"need a number of positions >= 0, got {positions}")
        position = torch.arange(positions, dtype=torch.float64, device=device)  # (n,)
    even = torch.arange(0, embed_dim, 2, dtype=torch.float64, device=device)  # (ceil(E/2),)
    angles = position[..., None] * BASE ** (-even / embed_dim)  # (..., ceil(E/2))
    pe = angles.new_empty(*position.shape, embed_dim)  # (..., E)
    pe[..., 0::2] = torch.sin(angles)
    pe[..., 1::2] = torch.cos(angles[..., : embed_dim // 2])
    return pe.to(dtype)


class PositionalEncoding(nn.Module):
    """x + PE[:L], then dropout, for x of shape (..., L, E) with L <= max_len.

    Args:
        embed_dim: E.
        dropout: the dropout probability, applied to the sum (the paper's P_drop = 0.1).
        max_len: the number of rows of the table, the longest sequence it accepts.

    The table is the buffer ``pe`` (max_len, E), built by :func:`sinusoidal_positional_encoding`.
    A sequence longer than max_len raises ValueError. The input is not scaled by sqrt(E).

    Example: PositionalEncoding(4, dropout=0.0)(torch.zeros(1, 2, 4)) -> the table's first 2 rows
    """

    def __init__(self, embed_dim: int, dropout: float = 0.1, max_len: int = 5000) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("pe", sinusoidal_positional_encoding(max_len, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L, max_len = x.size(-2), self.pe.size(0)
        if L > max_len:
            raise ValueError(
                f"a sequence of length {L} is longer than this PositionalEncoding's "
                f"max_len={max_len}; build it with a larger max_len"
            )
        return self.dropout(x + self.pe[:L])  # (..., L, E)


def self_attention_no_projections(h: torch.Tensor, is_causal: bool = False) -> torch.Tensor:
    """softmax(h hᵀ / sqrt(E)) h: self-attention with the tokens as queries, keys and values.

    (..., L, E) -> (..., L, E). A real layer projects h three ways first; that changes nothing
    about permutations, so the exercise leaves the projections out.
    """
    return F.scaled_dot_product_attention(h, h, h, is_causal=is_causal)  # (..., L, E)


def permutation_equivariance_gap(
    x: torch.Tensor,
    perm: torch.Tensor,
    pe: torch.Tensor | None = None,
    is_causal: bool = False,
) -> float:
    """max |A(x[..., perm, :] + P) - A(x + P)[..., perm, :]|, a Python float.

    A is :func:`self_attention_no_projections` (with `is_causal`), P the first L rows of `pe`
    (max_len, E), or 0 when `pe` is None. The positions stay where they are while the tokens
    move: position p gets P[p] whichever token lands there. About 0 (rounding) means A is
    permutation-equivariant: permuting the tokens permutes the outputs the same way.

    Example: permutation_equivariance_gap(torch.randn(2, 5, 8), torch.randperm(5)) -> about 1e-7
    """
    L = x.size(-2)
    positions = 0.0 if pe is None else pe[:L]  # (L, E)
    out = self_attention_no_projections(x + positions, is_causal)  # (..., L, E)
    moved = x[..., perm, :]  # (..., L, E): token perm[p] now at position p
    out_of_moved = self_attention_no_projections(moved + positions, is_causal)  # (..., L, E)
    return (out_of_moved - out[..., perm, :]).abs().max().item()
