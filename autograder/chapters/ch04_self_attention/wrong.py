"""Known-wrong implementations for chapter 4: the mistakes the checks must catch and name.

Each entry is a plausible student mistake and the phrase its check's message must contain; the
contract test runs each name's checks on each entry and requires one to fail with that phrase. The
checks also call some of these to recognise a mistake before they compare values (softmax, zero,
softmax again, say), so each mistake is written once, here.

``WRONG`` maps the name of the graded function or class to {mistake: Mistake(impl, says)}.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from autograder.chapters import Mistake

from . import reference as ref


def _scores(query, key, scale=None, enable_gqa=False):
    if enable_gqa:
        key = ref.repeat_kv(query, key)  # (..., Hq, S, E)
    scale = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    return query @ key.transpose(-2, -1) * scale  # (..., L, S)


# --- attention_scores -------------------------------------------------------------------------


def scores_no_scaling(query, key, scale=None, enable_gqa=False):
    return query @ key.transpose(-2, -1) * (1.0 if scale is None else scale)  # (..., L, S)


def scores_divide_by_d(query, key, scale=None, enable_gqa=False):
    return query @ key.transpose(-2, -1) * (1 / query.size(-1) if scale is None else scale)


def scores_missing_transpose(query, key, scale=None, enable_gqa=False):
    # works, wrongly, only when L = S = E
    return query @ key * (1 / math.sqrt(query.size(-1)) if scale is None else scale)


def scores_ignores_scale(query, key, scale=None, enable_gqa=False):
    return query @ key.transpose(-2, -1) / math.sqrt(query.size(-1))  # (..., L, S)


def scores_transpose_2d_only(query, key, scale=None, enable_gqa=False):
    # key.mT would do; permuting every dimension (what key.T does) is wrong as soon as there is a
    # batch dimension
    key = key.permute(*reversed(range(key.dim())))
    return query @ key * (1 / math.sqrt(query.size(-1)) if scale is None else scale)


def scores_no_gqa_argument(query, key, scale=None):
    """The page's signature, without enable_gqa."""
    return _scores(query, key, scale)


def scores_gqa_tiled(query, key, scale=None, enable_gqa=False):
    """Pairs query head h with key head h % Hkv: repeat, not repeat_interleave."""
    if enable_gqa:
        times = query.size(-3) // key.size(-3)
        key = key.repeat(*([1] * (key.dim() - 3)), times, 1, 1)  # (..., Hq, S, E), tiled
    return _scores(query, key, scale)


def scores_gqa_ignored(query, key, scale=None, enable_gqa=False):
    """Takes the argument and does nothing with it: the heads only broadcast when Hkv is 1."""
    return _scores(query, key, scale)


def scores_gqa_no_value_error(query, key, scale=None, enable_gqa=False):
    """Groups the heads without checking that Hkv divides Hq."""
    if enable_gqa:
        key = key.repeat_interleave(query.size(-3) // key.size(-3), dim=-3)
    return _scores(query, key, scale)


# --- attention_weights ------------------------------------------------------------------------


def _allowed(scores, attn_mask, is_causal):
    """The boolean mask (True = allowed) that attn_mask or is_causal stand for, or None; a float
    mask allows the keys it does not set to -inf."""
    if is_causal:
        L, S = scores.shape[-2:]
        return torch.ones(L, S, dtype=torch.bool, device=scores.device).tril()
    if attn_mask is None or attn_mask.dtype == torch.bool:
        return attn_mask
    return ~torch.isneginf(attn_mask)


def _masked(scores, attn_mask, is_causal, fill=float("-inf"), flip=False):
    """The scores with the mask applied, -inf (or `fill`) where it forbids; with flip, the
    boolean mask read the wrong way round (a float mask is added either way)."""
    if attn_mask is not None and attn_mask.is_floating_point() and not is_causal:
        return scores + attn_mask if fill == float("-inf") else scores + attn_mask.clamp(min=fill)
    allowed = _allowed(scores, attn_mask, is_causal)
    if allowed is None:
        return scores
    return scores.masked_fill(allowed if flip else ~allowed, fill)


def weights_softmax_wrong_axis(
    query, key, attn_mask=None, is_causal=False, scale=None, enable_gqa=False
):
    scores = _masked(_scores(query, key, scale, enable_gqa), attn_mask, is_causal)
    return torch.softmax(scores, dim=-2).nan_to_num(0.0)  # normalises over queries


def weights_mask_after_softmax(
    query, key, attn_mask=None, is_causal=False, scale=None, enable_gqa=False
):
    weights = torch.softmax(_scores(query, key, scale, enable_gqa), dim=-1)
    allowed = _allowed(weights, attn_mask, is_causal)
    if allowed is not None:
        weights = weights.masked_fill(~allowed, 0.0)  # rows no longer sum to 1
    return weights


def weights_softmax_zero_softmax(
    query, key, attn_mask=None, is_causal=False, scale=None, enable_gqa=False
):
    """The recipe that circulates in study notes: softmax, zero the future, softmax again."""
    weights = torch.softmax(_scores(query, key, scale, enable_gqa), dim=-1)
    allowed = _allowed(weights, attn_mask, is_causal)
    if allowed is not None:
        weights = weights.masked_fill(~allowed, 0.0)
    return torch.softmax(weights, dim=-1)  # zeros become exp(0) = 1: masked keys get weight


def weights_flipped_polarity(
    query, key, attn_mask=None, is_causal=False, scale=None, enable_gqa=False
):
    scores = _masked(_scores(query, key, scale, enable_gqa), attn_mask, is_causal, flip=True)
    return torch.softmax(scores, dim=-1).nan_to_num(0.0)


def weights_causal_off_by_one(
    query, key, attn_mask=None, is_causal=False, scale=None, enable_gqa=False
):
    scores = _scores(query, key, scale, enable_gqa)
    if is_causal:
        L, S = scores.shape[-2:]
        attn_mask = torch.ones(L, S, dtype=torch.bool, device=scores.device).tril(-1)
    return torch.softmax(_masked(scores, attn_mask, False), dim=-1).nan_to_num(0.0)


def weights_nan_when_fully_masked(
    query, key, attn_mask=None, is_causal=False, scale=None, enable_gqa=False
):
    if is_causal and attn_mask is not None:
        raise ValueError("attn_mask and is_causal=True together")
    scores = _masked(_scores(query, key, scale, enable_gqa), attn_mask, is_causal)
    return torch.softmax(scores, dim=-1)  # 0/0 for a row with every key masked


def weights_large_negative_fill(
    query, key, attn_mask=None, is_causal=False, scale=None, enable_gqa=False
):
    if is_causal and attn_mask is not None:
        raise ValueError("attn_mask and is_causal=True together")
    scores = _masked(_scores(query, key, scale, enable_gqa), attn_mask, is_causal, fill=-1e9)
    return torch.softmax(scores, dim=-1)  # a fully masked row becomes uniform


def weights_ignores_mask(query, key, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    return torch.softmax(_scores(query, key, scale, enable_gqa), dim=-1)


def weights_no_value_error(query, key, attn_mask=None, is_causal=False, scale=None,
                           enable_gqa=False):  # fmt: skip
    """Lets is_causal win silently when an attn_mask is given too."""
    if is_causal:
        attn_mask = None
    return ref.attention_weights(query, key, attn_mask, is_causal, scale, enable_gqa)


def weights_nan_gradient(query, key, attn_mask=None, is_causal=False, scale=None,
                         enable_gqa=False):  # fmt: skip
    """The obvious repair: softmax, then zero the rows with no finite score. The forward pass is
    right; the softmax of a row of -inf still sends NaN back through a float mask."""
    if is_causal and attn_mask is not None:
        raise ValueError("attn_mask and is_causal=True together")
    scores = _scores(query, key, scale, enable_gqa)
    if is_causal:
        L, S = scores.shape[-2:]
        attn_mask = torch.ones(L, S, dtype=torch.bool, device=scores.device).tril()
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    empty = torch.isneginf(scores).all(dim=-1, keepdim=True)
    return torch.softmax(scores, dim=-1).masked_fill(empty, 0.0)


def weights_drops_gqa(query, key, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    """Takes enable_gqa but does not pass it on to attention_scores."""
    return ref.attention_weights(query, key, attn_mask, is_causal, scale)


# --- scaled_dot_product_attention -------------------------------------------------------------


def _sdpa_from(weights_fn):
    def sdpa(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
        if enable_gqa:
            value = ref.repeat_kv(query, value)  # (..., Hq, S, Ev)
        weights = weights_fn(query, key, attn_mask, is_causal, scale, enable_gqa)  # (..., L, S)
        return weights @ value  # (..., L, Ev)

    sdpa.__name__ = f"sdpa_{weights_fn.__name__}"
    return sdpa


def sdpa_no_scaling(
    query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False
):
    return ref.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attn_mask,
        is_causal=is_causal,
        scale=1.0 if scale is None else scale,
        enable_gqa=enable_gqa,
    )


def sdpa_values_not_keys(
    query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False
):
    # scores against the values instead of the keys (only runs when E = Ev)
    weights = ref.attention_weights(query, value, attn_mask, is_causal, scale)
    return weights @ value


def sdpa_weights_transposed(
    query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False
):
    weights = ref.attention_weights(query, key, attn_mask, is_causal, scale)  # (..., L, S)
    return weights.transpose(-2, -1) @ value  # only runs when L = S


def sdpa_gqa_values_tiled(query, key, value, attn_mask=None, is_causal=False, scale=None,
                          enable_gqa=False):  # fmt: skip
    """Groups the key's heads right (through attention_weights) and tiles the value's."""
    weights = ref.attention_weights(query, key, attn_mask, is_causal, scale, enable_gqa)
    if enable_gqa:
        times = query.size(-3) // value.size(-3)
        value = value.repeat(*([1] * (value.dim() - 3)), times, 1, 1)  # (..., Hq, S, Ev), tiled
    return weights @ value


def sdpa_gqa_values_not_grouped(query, key, value, attn_mask=None, is_causal=False, scale=None,
                                enable_gqa=False):  # fmt: skip
    """Passes enable_gqa on for the weights and forgets the value's heads."""
    return ref.attention_weights(query, key, attn_mask, is_causal, scale, enable_gqa) @ value


def sdpa_cpu_only(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
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


class SelfAttentionBiasIgnored(SelfAttentionSharedQK):
    """Never gives the projections a bias, whatever bias says."""

    def __init__(self, embed_dim, bias=False):
        super().__init__(embed_dim, bias=False)

    def forward(self, x, attn_mask=None, is_causal=False):
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
        "scores_no_scaling": Mistake(scores_no_scaling, "not scaled"),
        "scores_divide_by_d": Mistake(scores_divide_by_d, "divided by E"),
        "scores_missing_transpose": Mistake(
            scores_missing_transpose, "transpose only the key's last two dimensions"
        ),
        "scores_ignores_scale": Mistake(scores_ignores_scale, "given scale is ignored"),
        "scores_transpose_2d_only": Mistake(
            scores_transpose_2d_only, "transpose only the key's last two dimensions"
        ),
        "scores_no_gqa_argument": Mistake(scores_no_gqa_argument, "keep the signature"),
        "scores_gqa_tiled": Mistake(scores_gqa_tiled, "consecutive query heads share a key head"),
        "scores_gqa_ignored": Mistake(scores_gqa_ignored, "each key head serves"),
        "scores_gqa_no_value_error": Mistake(scores_gqa_no_value_error, "must raise ValueError"),
    },
    "attention_weights": {
        "weights_softmax_wrong_axis": Mistake(weights_softmax_wrong_axis, "softmax over the keys"),
        "weights_mask_after_softmax": Mistake(
            weights_mask_after_softmax, "mask the scores before the softmax"
        ),
        "weights_softmax_zero_softmax": Mistake(weights_softmax_zero_softmax, "second softmax"),
        "weights_flipped_polarity": Mistake(weights_flipped_polarity, "wrong way round"),
        "weights_causal_off_by_one": Mistake(weights_causal_off_by_one, "off by one"),
        "weights_nan_when_fully_masked": Mistake(
            weights_nan_when_fully_masked, "attends to nothing"
        ),
        "weights_large_negative_fill": Mistake(weights_large_negative_fill, "-1e9"),
        "weights_ignores_mask": Mistake(weights_ignores_mask, "mask is ignored"),
        "weights_no_value_error": Mistake(weights_no_value_error, "must raise ValueError"),
        "weights_nan_gradient": Mistake(weights_nan_gradient, "backward pass"),
        "weights_drops_gqa": Mistake(weights_drops_gqa, "pass scale and enable_gqa on"),
    },
    "scaled_dot_product_attention": {
        "sdpa_no_scaling": Mistake(sdpa_no_scaling, "not scaled"),
        "sdpa_values_not_keys": Mistake(sdpa_values_not_keys, "compare them with the keys"),
        "sdpa_weights_transposed": Mistake(sdpa_weights_transposed, "weights are transposed"),
        "sdpa_cpu_only": Mistake(sdpa_cpu_only, "use torch operations only"),
        "sdpa_softmax_wrong_axis": Mistake(
            _sdpa_from(weights_softmax_wrong_axis), "softmax over the keys"
        ),
        "sdpa_mask_after_softmax": Mistake(
            _sdpa_from(weights_mask_after_softmax), "mask the scores before the softmax"
        ),
        "sdpa_flipped_polarity": Mistake(_sdpa_from(weights_flipped_polarity), "wrong way round"),
        "sdpa_causal_off_by_one": Mistake(_sdpa_from(weights_causal_off_by_one), "off by one"),
        "sdpa_nan_when_fully_masked": Mistake(_sdpa_from(weights_nan_when_fully_masked), "NaN"),
        "sdpa_gqa_values_tiled": Mistake(
            sdpa_gqa_values_tiled, "the value's heads are grouped as the key's"
        ),
        "sdpa_gqa_values_not_grouped": Mistake(sdpa_gqa_values_not_grouped, "each key head serves"),
    },
    "SelfAttention": {
        "SelfAttentionSharedQK": Mistake(SelfAttentionSharedQK, "the keys are W_q(x)"),
        "SelfAttentionNoValueProjection": Mistake(
            SelfAttentionNoValueProjection, "the values are x itself"
        ),
        "SelfAttentionIgnoresCausal": Mistake(SelfAttentionIgnoresCausal, "leak into the past"),
        "SelfAttentionPositionalBias": Mistake(
            SelfAttentionPositionalBias, "permutation-equivariant"
        ),
        "SelfAttentionBiasIgnored": Mistake(SelfAttentionBiasIgnored, "must have a bias"),
    },
    "measure_score_variance": {
        "variance_hard_coded": Mistake(variance_hard_coded, "measured from random draws"),
        "variance_returns_std": Mistake(variance_returns_std, "standard deviations"),
        "variance_ignores_scaled": Mistake(variance_ignores_scaled, "after dividing by sqrt(d_k)"),
        "variance_ignores_seed": Mistake(variance_ignores_seed, "another seed"),
        "variance_unseeded": Mistake(variance_unseeded, "the same seed gave different numbers"),
    },
}
