"""Correct answers for chapter 4, as unlike the reference as the instructions allow.

Each was written from the released notebook's instructions, not from the reference: einsum, a
broadcast product summed by hand, float64 inside, the scale applied to the query first, the
key/value heads grouped by indexing or by viewing the query's heads in groups, -1e9 fills with the
fully masked rows zeroed by hand, a softmax written out with its maximum subtracted, an extra
helper method, numpy's or a forked torch generator for the measurement. The contract test requires
full marks for each, on its own and in a notebook.

``RIGHT`` maps the name of the graded function or class to {variant: implementation}. The last
variant of each name is self-contained (this module's imports, the earlier parts by their global
names), since the contract assembles a notebook from them; the module's ``attention_scores``,
``attention_weights`` and ``scaled_dot_product_attention`` are those last variants, as in that
notebook.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

# --- attention_scores -------------------------------------------------------------------------


def scores_einsum_grouped_view(query, key, scale=None, enable_gqa=False):
    """einsum; grouped-query heads by viewing the query's Hq heads as (Hkv, Hq / Hkv)."""
    if scale is None:
        scale = query.shape[-1] ** -0.5
    if not enable_gqa:
        return torch.einsum("...le,...se->...ls", query, key) * scale
    Hq, Hkv = query.shape[-3], key.shape[-3]
    if Hq % Hkv != 0:
        raise ValueError(f"{Hkv} key heads cannot serve {Hq} query heads")
    q = query.unflatten(-3, (Hkv, Hq // Hkv))  # (..., Hkv, G, L, E)
    scores = torch.einsum("...hgle,...hse->...hgls", q, key) * scale  # (..., Hkv, G, L, S)
    return scores.flatten(-4, -3)  # (..., Hq, L, S)


def scores_float64_inside(query, key, scale=None, enable_gqa=False):
    """Computes in float64 and casts back; the key heads repeated with repeat_interleave."""
    if enable_gqa:
        groups, rest = divmod(query.size(-3), key.size(-3))
        if rest:
            raise ValueError("the key's heads must divide the query's")
        key = key.repeat_interleave(groups, dim=-3)
    s = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    return (query.double() @ key.double().mT * s).to(query.dtype)


def scores_broadcast_sum(query, key, scale=None, enable_gqa=False):
    """Every product written out by broadcasting, (..., L, 1, E) * (..., 1, S, E), then summed."""
    if enable_gqa:
        if query.shape[-3] % key.shape[-3] != 0:
            raise ValueError("query heads must be a multiple of key heads")
        key = torch.repeat_interleave(key, query.shape[-3] // key.shape[-3], dim=-3)
    if scale is None:
        scale = 1 / math.sqrt(query.shape[-1])
    products = query.unsqueeze(-2) * key.unsqueeze(-3)  # (..., L, S, E)
    return products.sum(dim=-1) * scale  # (..., L, S)


def scores_scaled_query_index_select(query, key, scale=None, enable_gqa=False):
    """Scales the query before the product; picks key head h // G for query head h by index."""
    scale = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    if enable_gqa:
        Hq, Hkv = query.size(-3), key.size(-3)
        if Hq % Hkv:
            raise ValueError(f"enable_gqa: {Hq} query heads and {Hkv} key heads")
        heads = torch.arange(Hq, device=key.device) // (Hq // Hkv)
        key = key.index_select(-3, heads)
    return torch.matmul(query * scale, key.transpose(-1, -2))


# --- attention_weights ------------------------------------------------------------------------


def weights_large_negative(query, key, attn_mask=None, is_causal=False, scale=None,
                           enable_gqa=False):  # fmt: skip
    """-1e9 for the forbidden keys, then the rows that allow no key set to 0 by hand."""
    if attn_mask is not None and is_causal:
        raise ValueError("attn_mask and is_causal=True together")
    scores = scores_float64_inside(query, key, scale, enable_gqa)
    L, S = scores.shape[-2:]
    allowed = torch.ones(L, S, dtype=torch.bool, device=scores.device)
    if is_causal:
        allowed = torch.tril(allowed)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            allowed = allowed & attn_mask
        else:
            scores = scores + attn_mask
            allowed = allowed & (attn_mask != float("-inf"))
    scores = scores.masked_fill(~allowed, -1e9)
    weights = torch.softmax(scores, dim=-1)
    return weights * allowed.any(dim=-1, keepdim=True)


def weights_softmax_by_hand(query, key, attn_mask=None, is_causal=False, scale=None,
                            enable_gqa=False):  # fmt: skip
    """The softmax written out, its maximum subtracted; exp(-inf) is 0 by itself."""
    if is_causal and attn_mask is not None:
        raise ValueError("give attn_mask or is_causal, not both")
    scores = scores_einsum_grouped_view(query, key, scale=scale, enable_gqa=enable_gqa)
    if is_causal:
        L, S = scores.shape[-2], scores.shape[-1]
        attn_mask = torch.ones(L, S, dtype=torch.bool, device=scores.device).tril()
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = torch.where(attn_mask, scores, torch.full_like(scores, -math.inf))
        else:
            scores = scores + attn_mask
    top = scores.amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # a row of -inf
    e = torch.exp(scores - top)
    total = e.sum(dim=-1, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def weights_float64_softmax(query, key, attn_mask=None, is_causal=False, scale=None,
                            enable_gqa=False):  # fmt: skip
    """The softmax in float64, cast back; attention_scores called with keywords."""
    if is_causal:
        if attn_mask is not None:
            raise ValueError("attn_mask and is_causal are exclusive")
        L, S = query.shape[-2], key.shape[-2]
        attn_mask = torch.ones(L, S, device=query.device).tril().bool()
    scores = attention_scores(query, key, scale=scale, enable_gqa=enable_gqa).double()
    if attn_mask is not None:
        if attn_mask.is_floating_point():
            scores = scores + attn_mask.double()
        else:
            scores = scores.masked_fill(attn_mask.logical_not(), -math.inf)
    dead = torch.isneginf(scores).all(-1, keepdim=True)
    weights = torch.softmax(scores.masked_fill(dead, 0.0), -1).masked_fill(dead, 0.0)
    return weights.to(query.dtype)


def weights_additive_mask(query, key, attn_mask=None, is_causal=False, scale=None,
                          enable_gqa=False):  # fmt: skip
    """Every mask turned into numbers added to the scores first."""
    scores = attention_scores(query, key, scale, enable_gqa)  # (..., L, S)
    if attn_mask is not None and is_causal:
        raise ValueError("is_causal=True cannot be combined with attn_mask")
    if is_causal:
        L, S = scores.shape[-2:]
        causal = torch.ones(L, S, dtype=torch.bool, device=scores.device).tril()
        attn_mask = causal
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros_like(attn_mask, dtype=scores.dtype).masked_fill(
                ~attn_mask, float("-inf")
            )
        scores = scores + attn_mask
    nothing = scores.isneginf().all(dim=-1, keepdim=True)  # (..., L, 1)
    weights = scores.masked_fill(nothing, 0.0).softmax(dim=-1)
    return weights.masked_fill(nothing, 0.0)


# --- scaled_dot_product_attention -------------------------------------------------------------


def sdpa_einsum(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    w = attention_weights(query, key, attn_mask, is_causal, scale, enable_gqa)  # (..., L, S)
    if enable_gqa:
        value = value.repeat_interleave(query.size(-3) // value.size(-3), dim=-3)
    return torch.einsum("...ls,...sv->...lv", w, value)


def sdpa_grouped_view(query, key, value, attn_mask=None, is_causal=False, scale=None,
                      enable_gqa=False):  # fmt: skip
    """The weights' query heads viewed in groups, each group against its own value head."""
    weights = attention_weights(query, key, attn_mask=attn_mask, is_causal=is_causal,
                                scale=scale, enable_gqa=enable_gqa)  # fmt: skip
    if not enable_gqa:
        return weights @ value
    Hkv = value.shape[-3]
    grouped = weights.unflatten(-3, (Hkv, -1))  # (..., Hkv, G, L, S)
    return (grouped @ value.unsqueeze(-3)).flatten(-4, -3)  # (..., Hq, L, Ev)


def sdpa_index_select(query, key, value, attn_mask=None, is_causal=False, scale=None,
                      enable_gqa=False):  # fmt: skip
    if enable_gqa:
        Hq, Hkv = query.size(-3), value.size(-3)
        value = value.index_select(-3, torch.arange(Hq, device=value.device) // (Hq // Hkv))
    weights = attention_weights(query, key, attn_mask, is_causal, scale, enable_gqa=enable_gqa)
    return torch.matmul(weights, value)


# The names the later parts call, as in a notebook assembled from the last variants.
attention_scores = scores_scaled_query_index_select
attention_weights = weights_additive_mask
scaled_dot_product_attention = sdpa_index_select


# --- SelfAttention ----------------------------------------------------------------------------


class SelfAttentionHelper(nn.Module):
    """An extra helper method for the projections and extra attributes."""

    def __init__(self, embed_dim, bias=False):
        super().__init__()
        self.embed_dim, self.has_bias = embed_dim, bias
        self.W_q = nn.Linear(embed_dim, embed_dim, bias)
        self.W_k = nn.Linear(embed_dim, embed_dim, bias)
        self.W_v = nn.Linear(embed_dim, embed_dim, bias)

    def project(self, x):
        return self.W_q(x), self.W_k(x), self.W_v(x)

    def forward(self, x, attn_mask=None, is_causal=False):
        q, k, v = self.project(x)
        return scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)


class SelfAttentionPositional(nn.Module):
    """The mask and is_causal passed on by position; the three layers made in a loop."""

    def __init__(self, embed_dim, bias=False):
        super().__init__()
        for name in ("W_q", "W_k", "W_v"):
            setattr(self, name, nn.Linear(embed_dim, embed_dim, bias=bias))

    def forward(self, x, attn_mask=None, is_causal=False):
        q, k, v = (layer(x) for layer in (self.W_q, self.W_k, self.W_v))
        return scaled_dot_product_attention(q, k, v, attn_mask, is_causal)


class SelfAttentionWeightMatrices(nn.Module):
    """The projections applied as x @ Wᵀ + b from the layers' own parameters."""

    def __init__(self, embed_dim, bias=False):
        super().__init__()
        self.W_q = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_k = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_v = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(self, x, attn_mask=None, is_causal=False):
        projected = []
        for layer in (self.W_q, self.W_k, self.W_v):
            y = x @ layer.weight.T
            if layer.bias is not None:
                y = y + layer.bias
            projected.append(y)
        return scaled_dot_product_attention(*projected, attn_mask=attn_mask, is_causal=is_causal)


# --- measure_score_variance -------------------------------------------------------------------


def variance_one_draw(d_ks, n_samples=10_000, scaled=False, seed=0):
    """Both vectors of each pair in one (2, N, d_k) draw; the variance computed by hand."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(len(d_ks), dtype=torch.float64)
    for i, d in enumerate(d_ks):
        pair = torch.randn(2, n_samples, d, generator=g, dtype=torch.float64)
        dots = (pair[0] * pair[1]).sum(-1)
        if scaled:
            dots = dots / d**0.5
        out[i] = ((dots - dots.mean()) ** 2).sum() / (n_samples - 1)
    return out


def variance_numpy(d_ks, n_samples=10_000, scaled=False, seed=0):
    """numpy's generator, seeded; returned as a float64 torch tensor."""
    rng = np.random.default_rng(seed)
    result = []
    for d in d_ks:
        q = rng.standard_normal((n_samples, d))
        k = rng.standard_normal((n_samples, d))
        dots = np.einsum("nd,nd->n", q, k)
        result.append(np.var(dots / np.sqrt(d) if scaled else dots))
    return torch.tensor(result, dtype=torch.float64)


def variance_forked_global_seed(d_ks, n_samples=10_000, scaled=False, seed=0):
    """torch's global generator, seeded inside fork_rng so the notebook's own is left alone."""
    variances = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for d_k in d_ks:
            q = torch.randn(n_samples, d_k).double()
            k = torch.randn(n_samples, d_k).double()
            s = torch.sum(q * k, dim=1)
            if scaled:
                s = s / math.sqrt(d_k)
            variances.append(torch.var(s).item())
    return torch.tensor(variances, dtype=torch.float64)


RIGHT = {
    "attention_scores": {
        f.__name__: f
        for f in (
            scores_einsum_grouped_view,
            scores_float64_inside,
            scores_broadcast_sum,
            scores_scaled_query_index_select,
        )
    },
    "attention_weights": {
        f.__name__: f
        for f in (
            weights_large_negative,
            weights_softmax_by_hand,
            weights_float64_softmax,
            weights_additive_mask,
        )
    },
    "scaled_dot_product_attention": {
        f.__name__: f for f in (sdpa_einsum, sdpa_grouped_view, sdpa_index_select)
    },
    "SelfAttention": {
        c.__name__: c
        for c in (SelfAttentionHelper, SelfAttentionPositional, SelfAttentionWeightMatrices)
    },
    "measure_score_variance": {
        f.__name__: f for f in (variance_one_draw, variance_numpy, variance_forked_global_seed)
    },
}
