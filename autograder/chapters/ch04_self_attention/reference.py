"""Chapter 4, self-attention and scaled dot-product attention: the reference implementation.

The reference is the clear version that the chapter teaches: a matmul, a softmax over the keys and
a second matmul, with the whole (L, S) score matrix in memory. It mirrors the names and keyword
arguments of ``torch.nn.functional.scaled_dot_product_attention`` so that one check can hold the
student's function, the reference and torch's built-in side by side; it never calls that built-in.

With ``enable_gqa=True`` (torch's grouped-query attention) the query has more heads than the key
and the value, ``(..., Hq, L, E)`` against ``(..., Hkv, S, E)``: consecutive query heads share one
key/value head, query head h reading head h // (Hq / Hkv), as ``repeat_interleave`` lays them out.

Masks follow torch: a boolean ``attn_mask`` is True where attention is **allowed**; a float mask is
added to the scores. Masked scores are filled with -inf before the softmax, and a row in which every
key is masked attends to nothing: its weights, and its output, are zeros rather than NaN (as torch's
built-in does), with finite gradients. Note that ``nn.MultiheadAttention``'s ``key_padding_mask``
has the opposite polarity (True there means "ignore this key").

Not here: multiple heads and the output projection (chapter 5), padding masks built from lengths
(chapter 8).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "attention_scores",
    "causal_mask",
    "attention_weights",
    "scaled_dot_product_attention",
    "SelfAttention",
    "measure_score_variance",
]


# --------------------------------------------------------------------------------------------
# Reference implementation
# --------------------------------------------------------------------------------------------


def _check_qk(query: torch.Tensor, key: torch.Tensor) -> None:
    for name, t in (("query", query), ("key", key)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., length, width); got {tuple(t.shape)}")
    if query.size(-1) != key.size(-1):
        raise ValueError(
            "query and key must have the same width E (last dimension); got query "
            f"{tuple(query.shape)} and key {tuple(key.shape)}"
        )


def repeat_kv(query: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
    """The key (or value) heads repeated to match the query's, for grouped-query attention.

    query (..., Hq, L, E), kv (..., Hkv, S, Ev) with Hkv dividing Hq -> (..., Hq, S, Ev): head h is
    kv head h // (Hq / Hkv), so consecutive query heads share a head, as torch's enable_gqa does.

    Example: kv heads [a, b], 4 query heads -> [a, a, b, b]
    """
    if query.dim() < 3 or kv.dim() < 3:
        raise ValueError(
            "enable_gqa=True needs a head dimension: query (..., Hq, L, E) and key/value "
            f"(..., Hkv, S, E); got query {tuple(query.shape)} and {tuple(kv.shape)}"
        )
    Hq, Hkv = query.size(-3), kv.size(-3)
    if Hq % Hkv:
        raise ValueError(
            f"enable_gqa=True: the key/value's {Hkv} heads must divide the query's {Hq} heads"
        )
    return kv.repeat_interleave(Hq // Hkv, dim=-3)  # (..., Hq, S, Ev)


def attention_scores(
    query: torch.Tensor, key: torch.Tensor, scale: float | None = None, enable_gqa: bool = False
) -> torch.Tensor:
    """Scaled dot products of every query with every key.

    Args:
        query: (..., L, E); with enable_gqa, (..., Hq, L, E).
        key: (..., S, E); leading dimensions broadcast against the query's. With enable_gqa,
            (..., Hkv, S, E), Hkv dividing Hq: query head h is scored against key head
            h // (Hq / Hkv).
        scale: factor applied to the dot products; None means 1/sqrt(E).
        enable_gqa: grouped-query attention, as torch's scaled_dot_product_attention has it.

    Returns:
        (..., L, S) (with enable_gqa, (..., Hq, L, S)): entry [l, s] is
        scale * <query[l], key[s]>.

    Example: query [[1., 0.]], key [[1., 0.], [0., 1.]] -> [[0.7071, 0.]]
    """
    _check_qk(query, key)
    if enable_gqa:
        key = repeat_kv(query, key)  # (..., Hq, S, E)
    if scale is None:
        scale = 1.0 / math.sqrt(query.size(-1))
    return query @ key.transpose(-2, -1) * scale  # (..., L, S)


def causal_mask(L: int, S: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean (L, S) mask, True where query l may attend to key s, i.e. s <= l.

    Aligned to the top-left corner as torch's ``is_causal=True`` is, also when L != S.

    Example: causal_mask(2, 3) -> [[True, False, False], [True, True, False]]
    """
    return torch.ones(L, S, dtype=torch.bool, device=device).tril()  # (L, S)


def attention_weights(
    query: torch.Tensor,
    key: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """Attention weights: softmax over the keys of the (masked) scaled scores.

    Args:
        query: (..., L, E).
        key: (..., S, E).
        attn_mask: None, or broadcastable to (..., L, S). Boolean: True where attention is
            allowed. Float: added to the scores (use -inf to forbid).
        is_causal: mask every key after the query's position (top-left aligned); cannot be
            combined with attn_mask, as in torch.
        scale: None means 1/sqrt(E).
        enable_gqa: grouped-query attention (see attention_scores).

    Returns:
        (..., L, S); every row sums to 1, except a row whose keys are all masked, which is 0.

    Example: query [[0., 0.]], key [[1., 2.], [3., 4.]] -> [[0.5, 0.5]]
    """
    scores = attention_scores(query, key, scale, enable_gqa)  # (..., L, S)
    if is_causal:
        if attn_mask is not None:
            raise ValueError("pass either attn_mask or is_causal=True, not both (as in torch)")
        attn_mask = causal_mask(scores.size(-2), scores.size(-1), device=scores.device)  # (L, S)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))  # (..., L, S)
        elif attn_mask.is_floating_point():
            scores = scores + attn_mask  # (..., L, S)
        else:
            raise TypeError(f"attn_mask must be bool or floating point, got {attn_mask.dtype}")
    # A row with every key masked is all -inf, and its softmax is 0/0 = NaN, forward and (through
    # the softmax's Jacobian) backward. Such a query attends to nothing: its scores are made finite
    # before the softmax and its weights 0 after it, so that both passes stay finite, as torch's
    # built-in does.
    attends_to_nothing = torch.isneginf(scores).all(dim=-1, keepdim=True)  # (..., L, 1)
    scores = scores.masked_fill(attends_to_nothing, 0.0)  # (..., L, S)
    weights = torch.softmax(scores, dim=-1)  # (..., L, S)
    return weights.masked_fill(attends_to_nothing, 0.0)


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """softmax(Q Kᵀ · scale + mask) V, with torch's arguments and semantics.

    Args:
        query: (..., L, E).
        key: (..., S, E).
        value: (..., S, Ev).
        attn_mask: None, or broadcastable to (..., L, S); boolean True = allowed, or float added
            to the scores.
        dropout_p: probability of dropping an attention weight (training only; 0 by default).
        is_causal: mask the future, top-left aligned; not together with attn_mask.
        scale: None means 1/sqrt(E).
        enable_gqa: grouped-query attention: key and value (..., Hkv, S, ·) serve query heads
            (..., Hq, L, E) in groups of Hq / Hkv consecutive heads.

    Returns:
        (..., L, Ev).

    Example: query [[0., 0.]], key [[1., 2.], [3., 4.]], value [[2.], [4.]] -> [[3.]]
    """
    if value.size(-2) != key.size(-2):
        raise ValueError(
            "key and value must have the same length S (second to last dimension); got key "
            f"{tuple(key.shape)} and value {tuple(value.shape)}"
        )
    weights = attention_weights(query, key, attn_mask, is_causal, scale, enable_gqa)  # (..., L, S)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    if enable_gqa:
        value = repeat_kv(query, value)  # (..., Hq, S, Ev)
    return weights @ value  # (..., L, Ev)


class SelfAttention(nn.Module):
    """Single-head self-attention: queries, keys and values are three projections of one sequence.

    Args:
        embed_dim: E, the width of the input and of each projection.
        bias: whether the projections W_q, W_k, W_v have a bias.

    Shapes: forward(x (B, L, E), attn_mask=None, is_causal=False) -> (B, L, E).
    """

    def __init__(self, embed_dim: int, bias: bool = False) -> None:
        super().__init__()
        if embed_dim <= 0:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}")
        self.embed_dim = embed_dim
        self.W_q = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_k = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_v = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        if x.size(-1) != self.embed_dim:
            raise ValueError(f"expected input width {self.embed_dim}, got shape {tuple(x.shape)}")
        q, k, v = self.W_q(x), self.W_k(x), self.W_v(x)  # (B, L, E) each
        return scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)


def measure_score_variance(
    d_ks: Sequence[int], n_samples: int = 10_000, scaled: bool = False, seed: int = 0
) -> torch.Tensor:
    """Measure Var(q·k) for q, k with independent unit-variance entries, for each width d_k.

    Args:
        d_ks: the widths to measure.
        n_samples: how many (q, k) pairs to draw for each width.
        scaled: measure q·k / sqrt(d_k) instead of q·k.
        seed: seeds the draw, so that the same call gives the same numbers.

    Returns:
        float64 tensor (len(d_ks),) of sample variances: about d_k each unscaled, about 1 scaled.

    Example: measure_score_variance([1, 64]) -> about [1., 64.]
    """
    generator = torch.Generator().manual_seed(seed)
    variances = []
    for d_k in d_ks:
        q = torch.randn(n_samples, d_k, generator=generator, dtype=torch.float64)  # (N, d_k)
        k = torch.randn(n_samples, d_k, generator=generator, dtype=torch.float64)  # (N, d_k)
        dots = (q * k).sum(dim=-1)  # (N,)
        if scaled:
            dots = dots / math.sqrt(d_k)
        variances.append(dots.var())
    return torch.stack(variances)  # (len(d_ks),)
