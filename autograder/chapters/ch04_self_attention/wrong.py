"""Known-wrong implementations for chapter 4: the mistakes the checks must catch.

Each entry is a plausible student mistake. ``tests/test_ch04_self_attention.py`` runs every check on
every entry and requires at least one check to fail, so a check that grows lax is noticed.

``WRONG`` maps the name of the graded function to {mistake: implementation}.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import reference as ref


def _scores(query, key, scale=None):
    scale = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    return query @ key.transpose(-2, -1) * scale  # (..., L, S)


# --- attention_scores -------------------------------------------------------------------------


def scores_no_scaling(query, key, scale=None):
    return query @ key.transpose(-2, -1) * (1.0 if scale is None else scale)  # (..., L, S)


def scores_divide_by_d(query, key, scale=None):
    return query @ key.transpose(-2, -1) * (1 / query.size(-1) if scale is None else scale)


def scores_missing_transpose(query, key, scale=None):
    # works, wrongly, only when L = S = E
    return query @ key * (1 / math.sqrt(query.size(-1)) if scale is None else scale)


def scores_ignores_scale(query, key, scale=None):
    return query @ key.transpose(-2, -1) / math.sqrt(query.size(-1))  # (..., L, S)


def scores_transpose_2d_only(query, key, scale=None):
    # key.T reverses every dimension, which is wrong as soon as there is a batch dimension
    return query @ key.T * (1 / math.sqrt(query.size(-1)) if scale is None else scale)


# --- attention_weights ------------------------------------------------------------------------


def _masked(scores, attn_mask, is_causal, allowed_value=False):
    if is_causal:
        L, S = scores.shape[-2:]
        attn_mask = torch.ones(L, S, dtype=torch.bool, device=scores.device).tril()
    if attn_mask is not None:
        scores = scores.masked_fill(attn_mask == allowed_value, float("-inf"))
    return scores


def weights_softmax_wrong_axis(query, key, attn_mask=None, is_causal=False, scale=None):
    scores = _masked(_scores(query, key, scale), attn_mask, is_causal)
    return torch.softmax(scores, dim=-2).nan_to_num(0.0)  # normalises over queries


def weights_mask_after_softmax(query, key, attn_mask=None, is_causal=False, scale=None):
    weights = torch.softmax(_scores(query, key, scale), dim=-1)
    if is_causal:
        L, S = weights.shape[-2:]
        attn_mask = torch.ones(L, S, dtype=torch.bool, device=weights.device).tril()
    if attn_mask is not None:
        weights = weights.masked_fill(~attn_mask, 0.0)  # rows no longer sum to 1
    return weights


def weights_softmax_zero_softmax(query, key, attn_mask=None, is_causal=False, scale=None):
    """The recipe that circulates in study notes: softmax, zero the future, softmax again."""
    weights = torch.softmax(_scores(query, key, scale), dim=-1)
    if is_causal:
        L, S = weights.shape[-2:]
        attn_mask = torch.ones(L, S, dtype=torch.bool, device=weights.device).tril()
    if attn_mask is not None:
        weights = weights.masked_fill(~attn_mask, 0.0)
    return torch.softmax(weights, dim=-1)  # zeros become exp(0) = 1: masked keys get weight


def weights_flipped_polarity(query, key, attn_mask=None, is_causal=False, scale=None):
    scores = _masked(_scores(query, key, scale), attn_mask, is_causal, allowed_value=True)
    return torch.softmax(scores, dim=-1).nan_to_num(0.0)


def weights_causal_off_by_one(query, key, attn_mask=None, is_causal=False, scale=None):
    scores = _scores(query, key, scale)
    if is_causal:
        L, S = scores.shape[-2:]
        attn_mask = torch.ones(L, S, dtype=torch.bool, device=scores.device).tril(-1)
    return torch.softmax(_masked(scores, attn_mask, False), dim=-1).nan_to_num(0.0)


def weights_nan_when_fully_masked(query, key, attn_mask=None, is_causal=False, scale=None):
    scores = _masked(_scores(query, key, scale), attn_mask, is_causal)
    return torch.softmax(scores, dim=-1)  # 0/0 for a row with every key masked


def weights_large_negative_fill(query, key, attn_mask=None, is_causal=False, scale=None):
    scores = _scores(query, key, scale)
    if is_causal:
        L, S = scores.shape[-2:]
        attn_mask = torch.ones(L, S, dtype=torch.bool, device=scores.device).tril()
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, -1e9)  # a fully masked row becomes uniform
    return torch.softmax(scores, dim=-1)


def weights_ignores_mask(query, key, attn_mask=None, is_causal=False, scale=None):
    return torch.softmax(_scores(query, key, scale), dim=-1)


# --- scaled_dot_product_attention -------------------------------------------------------------


def _sdpa_from(weights_fn):
    def sdpa(query, key, value, attn_mask=None, is_causal=False, scale=None):
        return weights_fn(query, key, attn_mask, is_causal, scale) @ value  # (..., L, Ev)

    sdpa.__name__ = f"sdpa_{weights_fn.__name__}"
    return sdpa


def sdpa_no_scaling(query, key, value, attn_mask=None, is_causal=False, scale=None):
    return ref.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attn_mask,
        is_causal=is_causal,
        scale=1.0 if scale is None else scale,
    )


def sdpa_values_not_keys(query, key, value, attn_mask=None, is_causal=False, scale=None):
    # scores against the values instead of the keys (only runs when E = Ev)
    weights = ref.attention_weights(query, value, attn_mask, is_causal, scale)
    return weights @ value


def sdpa_weights_transposed(query, key, value, attn_mask=None, is_causal=False, scale=None):
    weights = ref.attention_weights(query, key, attn_mask, is_causal, scale)  # (..., L, S)
    return weights.transpose(-2, -1) @ value  # only runs when L = S


def sdpa_cpu_only(query, key, value, attn_mask=None, is_causal=False, scale=None):
    # numpy works on the CPU only; it also cuts the autograd graph
    q, k, v = (t.detach().cpu().numpy() for t in (query, key, value))
    import numpy as np

    scores = q @ np.swapaxes(k, -2, -1) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    if is_causal:
        scores = np.where(np.tril(np.ones(scores.shape[-2:], dtype=bool)), scores, -np.inf)
    if attn_mask is not None:
        scores = np.where(attn_mask.cpu().numpy(), scores, -np.inf)
    scores = scores - scores.max(-1, keepdims=True)
    weights = np.exp(scores)
    weights = np.nan_to_num(weights / weights.sum(-1, keepdims=True))
    return torch.from_numpy(weights @ v)


# --- SelfAttention ----------------------------------------------------------------------------


class SelfAttentionSharedQK(nn.Module):
    """Uses W_q for the keys too: the scores become symmetric."""

    def __init__(self, embed_dim, bias=False):
        super().__init__()
        self.W_q = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_k = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_v = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(self, x, attn_mask=None, is_causal=False):
        q, k, v = self.W_q(x), self.W_q(x), self.W_v(x)
        return ref.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)


class SelfAttentionNoValueProjection(SelfAttentionSharedQK):
    """Forgets W_v: attends over the raw inputs."""

    def forward(self, x, attn_mask=None, is_causal=False):
        q, k = self.W_q(x), self.W_k(x)
        return ref.scaled_dot_product_attention(q, k, x, attn_mask=attn_mask, is_causal=is_causal)


class SelfAttentionIgnoresCausal(SelfAttentionSharedQK):
    """Drops is_causal on the floor: the future leaks into the past."""

    def forward(self, x, attn_mask=None, is_causal=False):
        q, k, v = self.W_q(x), self.W_k(x), self.W_v(x)
        return ref.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


class SelfAttentionPositionalBias(SelfAttentionSharedQK):
    """Adds a bias that depends on the position, which breaks permutation equivariance."""

    def forward(self, x, attn_mask=None, is_causal=False):
        L = x.size(-2)
        x = x + torch.arange(L, device=x.device, dtype=x.dtype)[:, None] * 0.1  # (B, L, E)
        q, k, v = self.W_q(x), self.W_k(x), self.W_v(x)
        return ref.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)


# --- measure_score_variance -------------------------------------------------------------------


def variance_hard_coded(d_ks, n_samples=10_000, scaled=False, seed=0):
    return torch.tensor([1.0 if scaled else float(d) for d in d_ks], dtype=torch.float64)


def variance_returns_std(d_ks, n_samples=10_000, scaled=False, seed=0):
    return ref.measure_score_variance(d_ks, n_samples, scaled, seed).sqrt()


def variance_ignores_scaled(d_ks, n_samples=10_000, scaled=False, seed=0):
    return ref.measure_score_variance(d_ks, n_samples, False, seed)


def variance_ignores_seed(d_ks, n_samples=10_000, scaled=False, seed=0):
    return ref.measure_score_variance(d_ks, n_samples, scaled, 0)


def variance_unseeded(d_ks, n_samples=10_000, scaled=False, seed=0):
    generator = torch.Generator()
    generator.seed()
    out = []
    for d in d_ks:
        q = torch.randn(n_samples, d, generator=generator, dtype=torch.float64)
        k = torch.randn(n_samples, d, generator=generator, dtype=torch.float64)
        dots = (q * k).sum(-1) / (math.sqrt(d) if scaled else 1.0)
        out.append(dots.var())
    return torch.stack(out)


WRONG = {
    "attention_scores": {
        f.__name__: f
        for f in (
            scores_no_scaling,
            scores_divide_by_d,
            scores_missing_transpose,
            scores_ignores_scale,
            scores_transpose_2d_only,
        )
    },
    "attention_weights": {
        f.__name__: f
        for f in (
            weights_softmax_wrong_axis,
            weights_mask_after_softmax,
            weights_softmax_zero_softmax,
            weights_flipped_polarity,
            weights_causal_off_by_one,
            weights_nan_when_fully_masked,
            weights_large_negative_fill,
            weights_ignores_mask,
        )
    },
    "scaled_dot_product_attention": {
        f.__name__: f
        for f in (
            sdpa_no_scaling,
            sdpa_values_not_keys,
            sdpa_weights_transposed,
            sdpa_cpu_only,
            _sdpa_from(weights_softmax_wrong_axis),
            _sdpa_from(weights_mask_after_softmax),
            _sdpa_from(weights_flipped_polarity),
            _sdpa_from(weights_causal_off_by_one),
            _sdpa_from(weights_nan_when_fully_masked),
        )
    },
    "SelfAttention": {
        c.__name__: c
        for c in (
            SelfAttentionSharedQK,
            SelfAttentionNoValueProjection,
            SelfAttentionIgnoresCausal,
            SelfAttentionPositionalBias,
        )
    },
    "measure_score_variance": {
        f.__name__: f
        for f in (
            variance_hard_coded,
            variance_returns_std,
            variance_ignores_scaled,
            variance_ignores_seed,
            variance_unseeded,
        )
    },
}
