"""Chapter 4, self-attention and scaled dot-product attention: the reference and its checks.

The reference is the clear version that the chapter teaches: a matmul, a softmax over the keys and
a second matmul, with the whole (L, S) score matrix in memory. It mirrors the names and keyword
arguments of ``torch.nn.functional.scaled_dot_product_attention`` so that one check can hold the
student's function, the reference and torch's built-in side by side; it never calls that built-in.

Masks follow torch: a boolean ``attn_mask`` is True where attention is **allowed**; a float mask is
added to the scores. Masked scores are filled with -inf before the softmax, and a row in which every
key is masked attends to nothing: its weights, and its output, are zeros rather than NaN (as torch's
built-in does). Note that ``nn.MultiheadAttention``'s ``key_padding_mask`` has the opposite polarity
(True there means "ignore this key").

The ``check_*`` functions are what the hidden tests of ``solutions/ch04_self_attention`` call with
the student's callable. Each draws its inputs from fixed seeds, runs on the CPU and on CUDA when
there is one, and raises :class:`~autograder.checking.CheckFailed` naming the property that failed.

Not here: multiple heads and the output projection (chapter 5), padding masks built from lengths
(chapter 8).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from autograder.checking import TOLERANCES, CheckFailed, calling, check_devices, compare

__all__ = [
    "attention_scores",
    "causal_mask",
    "attention_weights",
    "scaled_dot_product_attention",
    "SelfAttention",
    "measure_score_variance",
    "check_attention_scores",
    "check_attention_weights",
    "check_scaled_dot_product_attention",
    "check_self_attention",
    "check_measure_score_variance",
    "GRADED",
    "FORBIDDEN_BUILTINS",
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


def attention_scores(
    query: torch.Tensor, key: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    """Scaled dot products of every query with every key.

    Args:
        query: (..., L, E).
        key: (..., S, E); leading dimensions broadcast against the query's.
        scale: factor applied to the dot products; None means 1/sqrt(E).

    Returns:
        (..., L, S): entry [l, s] is scale * <query[l], key[s]>.

    Example: query [[1., 0.]], key [[1., 0.], [0., 1.]] -> [[0.7071, 0.]]
    """
    _check_qk(query, key)
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

    Returns:
        (..., L, S); every row sums to 1, except a row whose keys are all masked, which is 0.

    Example: query [[0., 0.]], key [[1., 2.], [3., 4.]] -> [[0.5, 0.5]]
    """
    scores = attention_scores(query, key, scale)  # (..., L, S)
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
    weights = torch.softmax(scores, dim=-1)  # (..., L, S)
    # A row with every key masked is all -inf, and softmax gives 0/0 = NaN there. Such a query
    # attends to nothing, so its weights are 0; torch's built-in gives the same.
    attends_to_nothing = torch.isneginf(scores).all(dim=-1, keepdim=True)  # (..., L, 1)
    return weights.masked_fill(attends_to_nothing, 0.0)


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
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

    Returns:
        (..., L, Ev).

    Example: query [[0., 0.]], key [[1., 2.], [3., 4.]], value [[2.], [4.]] -> [[3.]]
    """
    if value.size(-2) != key.size(-2):
        raise ValueError(
            "key and value must have the same length S (second to last dimension); got key "
            f"{tuple(key.shape)} and value {tuple(value.shape)}"
        )
    weights = attention_weights(query, key, attn_mask, is_causal, scale)  # (..., L, S)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
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


# --------------------------------------------------------------------------------------------
# Checks called by the hidden tests
# --------------------------------------------------------------------------------------------

# Shapes as (batch dims, L, S, E, Ev): no batch, one batch dim, (B, H), L != S, E != Ev, tiny.
_SHAPES = [
    ((), 5, 5, 8, 8),
    ((3,), 4, 7, 16, 5),
    ((2, 3), 6, 6, 4, 4),
    ((2,), 1, 9, 8, 3),
    ((1, 2), 7, 3, 32, 16),
]
_DTYPES = (torch.float32, torch.float64)


def _draw(shape, seed, device, dtype):
    """q (..., L, E), k (..., S, E), v (..., S, Ev) drawn from `seed`."""
    batch, L, S, E, Ev = shape
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*batch, L, E, generator=g, dtype=torch.float64)  # (..., L, E)
    k = torch.randn(*batch, S, E, generator=g, dtype=torch.float64)  # (..., S, E)
    v = torch.randn(*batch, S, Ev, generator=g, dtype=torch.float64)  # (..., S, Ev)
    return (t.to(device=device, dtype=dtype) for t in (q, k, v))


def _random_mask(batch, L, S, seed, device, fully_masked_row=False):
    """Boolean (..., L, S) mask, True = allowed, with at least one allowed key per row."""
    g = torch.Generator().manual_seed(seed + 1000)
    mask = torch.rand(*batch, L, S, generator=g) < 0.6  # (..., L, S)
    keep = torch.randint(S, (*batch, L, 1), generator=g)  # (..., L, 1)
    mask.scatter_(-1, keep, True)
    if fully_masked_row:
        mask[..., L // 2, :] = False
    return mask.to(device)


def _cases():
    for device in check_devices():
        for dtype in _DTYPES:
            for seed, shape in enumerate(_SHAPES):
                yield device, dtype, seed, shape


def _where(device, dtype, shape) -> str:
    batch, L, S, E, Ev = shape
    lead = "".join(f"{b}, " for b in batch)
    return f"(query ({lead}L={L}, E={E}), key ({lead}S={S}, E={E}), {dtype}, {device.type})"


def check_attention_scores(fn: Callable) -> None:
    """attention_scores(query, key, scale=None) -> (..., L, S) equals scale · Q Kᵀ."""
    for device, dtype, seed, shape in _cases():
        q, k, _ = _draw(shape, seed, device, dtype)
        where = _where(device, dtype, shape)
        out = calling(f"attention_scores{where}", fn, q, k)
        if isinstance(out, torch.Tensor) and out.shape == (*shape[0], shape[1], shape[2]):
            raw = q @ k.transpose(-2, -1)
            rtol, atol = TOLERANCES[dtype]
            if not torch.allclose(out, raw * (1 / math.sqrt(shape[3])), rtol=rtol, atol=atol):
                if torch.allclose(out, raw, rtol=rtol, atol=atol):
                    raise CheckFailed(
                        "attention_scores: the scores are not scaled; with scale=None divide by "
                        "sqrt(E), the query's last dimension."
                    )
                if torch.allclose(out, raw / shape[3], rtol=rtol, atol=atol):
                    raise CheckFailed(
                        "attention_scores: the scores are divided by E; divide by sqrt(E)."
                    )
        compare(out, attention_scores(q, k), f"attention_scores{where}")
        out = calling(f"attention_scores{where} with scale=0.3", fn, q, k, scale=0.3)
        compare(out, attention_scores(q, k, scale=0.3), f"attention_scores{where} with scale=0.3")


def _check_rows(weights: torch.Tensor, mask: torch.Tensor | None, what: str) -> None:
    """Properties of attention weights: finite, >= 0, exact zeros where masked, rows sum to 1."""
    if bool(torch.isnan(weights).any()):
        raise CheckFailed(f"{what}: the weights contain NaN.")
    if bool((weights < 0).any()):
        raise CheckFailed(f"{what}: some weights are negative; softmax output is never negative.")
    rtol, atol = TOLERANCES[weights.dtype]
    sums = weights.double().sum(dim=-1)  # (..., L)
    if mask is not None:
        if bool((weights.masked_select(~mask.expand_as(weights)) != 0).any()):
            raise CheckFailed(
                f"{what}: a masked position (mask False) got a nonzero weight; fill masked scores "
                "with -inf *before* the softmax."
            )
        attends = mask.expand_as(weights).any(dim=-1)  # (..., L)
        if bool((sums[~attends] != 0).any()):
            raise CheckFailed(
                f"{what}: a row whose keys are all masked must have weights 0 (attend to nothing)."
            )
        sums = sums[attends]
    if not torch.allclose(sums, torch.ones_like(sums), rtol=0, atol=10 * atol):
        raise CheckFailed(
            f"{what}: the weights of a query do not sum to 1; mask the scores first, then take "
            "the softmax over the keys (the last dimension)."
        )


def check_attention_weights(fn: Callable) -> None:
    """attention_weights(query, key, attn_mask=None, is_causal=False, scale=None) -> (..., L, S)."""
    for device, dtype, seed, shape in _cases():
        batch, L, S = shape[:3]
        q, k, _ = _draw(shape, seed, device, dtype)
        where = _where(device, dtype, shape)

        what = f"attention_weights{where}, no mask"
        out = calling(what, fn, q, k)
        compare(out, attention_weights(q, k), what)
        _check_rows(out, None, what)

        what = f"attention_weights{where}, scale=2.0"
        out = calling(what, fn, q, k, scale=2.0)
        compare(out, attention_weights(q, k, scale=2.0), what)

        mask = _random_mask(batch, L, S, seed, device)  # (..., L, S)
        what = f"attention_weights{where}, boolean attn_mask"
        out = calling(what, fn, q, k, attn_mask=mask)
        _check_rows(out, mask, what)
        compare(out, attention_weights(q, k, attn_mask=mask), what)

        what = f"attention_weights{where}, attn_mask of shape (L, S) broadcast over the batch"
        out = calling(what, fn, q, k, attn_mask=mask[(0,) * len(batch)])
        compare(out, attention_weights(q, k, attn_mask=mask[(0,) * len(batch)]), what)

        what = f"attention_weights{where}, is_causal=True"
        out = calling(what, fn, q, k, is_causal=True)
        _check_rows(out, causal_mask(L, S, device), what)
        compare(out, attention_weights(q, k, is_causal=True), what)

        if L > 1:
            full = _random_mask(batch, L, S, seed, device, fully_masked_row=True)  # (..., L, S)
            what = f"attention_weights{where}, a row with every key masked"
            out = calling(what, fn, q, k, attn_mask=full)
            _check_rows(out, full, what)
            compare(out, attention_weights(q, k, attn_mask=full), what)


def check_scaled_dot_product_attention(fn: Callable) -> None:
    """scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False, scale=None).

    Compared with the reference and with torch's built-in, and checked for properties: a constant
    value gives that constant back; permuting the key/value pairs together changes nothing;
    permuting the queries permutes the output; a fully masked query gives zeros; gradients flow.
    """
    for device, dtype, seed, shape in _cases():
        batch, L, S = shape[:3]
        q, k, v = _draw(shape, seed, device, dtype)
        where = _where(device, dtype, shape)
        mask = _random_mask(batch, L, S, seed, device)  # (..., L, S)
        for kwargs, label in (
            ({}, "no mask"),
            ({"attn_mask": mask}, "boolean attn_mask"),
            ({"attn_mask": mask[(0,) * len(batch)]}, "attn_mask of shape (L, S)"),
            ({"is_causal": True}, "is_causal=True"),
            ({"scale": 0.5}, "scale=0.5"),
        ):
            what = f"scaled_dot_product_attention{where}, {label}"
            out = calling(what, fn, q, k, v, **kwargs)
            compare(out, scaled_dot_product_attention(q, k, v, **kwargs), what)
            compare(out, F.scaled_dot_product_attention(q, k, v, **kwargs), f"{what} vs torch")

        what = f"scaled_dot_product_attention{where}, constant value"
        ones = torch.ones_like(v)
        out = calling(what, fn, q, k, ones, attn_mask=mask)
        if isinstance(out, torch.Tensor) and out.shape == ones.shape[:-2] + (L, ones.size(-1)):
            if not torch.allclose(out, torch.ones_like(out), atol=10 * TOLERANCES[dtype][1]):
                raise CheckFailed(
                    f"{what}: when every value is 1 the output must be 1, because each query's "
                    "weights sum to 1; take the softmax over the keys (the last dimension)."
                )

        reference = scaled_dot_product_attention(q, k, v)  # (..., L, Ev)
        g = torch.Generator().manual_seed(seed + 2000)
        perm = torch.randperm(S, generator=g).to(device)
        what = f"scaled_dot_product_attention{where}, key/value pairs permuted together"
        out = calling(what, fn, q, k[..., perm, :], v[..., perm, :])
        compare(out, reference, what)
        perm = torch.randperm(L, generator=g).to(device)
        what = f"scaled_dot_product_attention{where}, queries permuted"
        out = calling(what, fn, q[..., perm, :], k, v)
        compare(out, reference[..., perm, :], what)

        if L > 1:
            full = _random_mask(batch, L, S, seed, device, fully_masked_row=True)  # (..., L, S)
            what = f"scaled_dot_product_attention{where}, a row with every key masked"
            out = calling(what, fn, q, k, v, attn_mask=full)
            compare(out, scaled_dot_product_attention(q, k, v, attn_mask=full), what)

    _check_gradients(fn)


def _check_gradients(fn: Callable) -> None:
    q, k, v = (t.requires_grad_() for t in _draw(((2,), 4, 6, 8, 8), 99, "cpu", torch.float64))
    mask = _random_mask((2,), 4, 6, 99, "cpu")
    out = calling(
        "scaled_dot_product_attention with requires_grad inputs", fn, q, k, v, attn_mask=mask
    )
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        raise CheckFailed(
            "scaled_dot_product_attention: the output does not depend differentiably on the "
            "inputs; use torch operations only (no .detach(), .numpy() or .item())."
        )
    calling("backward through scaled_dot_product_attention", out.sum().backward)
    for name, t in (("query", q), ("key", k), ("value", v)):
        if t.grad is None or not bool(torch.isfinite(t.grad).all()):
            raise CheckFailed(
                f"scaled_dot_product_attention: the gradient with respect to {name} is missing "
                "or not finite."
            )


def check_self_attention(cls: Callable) -> None:
    """SelfAttention(embed_dim) with nn.Linear projections W_q, W_k, W_v; forward (B, L, E)."""
    for device in check_devices():
        for E, B, L, seed in ((8, 2, 5, 0), (16, 3, 7, 1), (4, 1, 1, 2)):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                module = calling(f"SelfAttention({E})", cls, E)
            for name in ("W_q", "W_k", "W_v"):
                layer = getattr(module, name, None)
                if not isinstance(layer, nn.Linear):
                    raise CheckFailed(f"SelfAttention({E}) must have an nn.Linear called {name}.")
                if (layer.in_features, layer.out_features) != (E, E):
                    raise CheckFailed(
                        f"SelfAttention({E}).{name} must map width {E} to width {E}, it maps "
                        f"{layer.in_features} to {layer.out_features}."
                    )
            module = module.to(device)
            reference = SelfAttention(E, bias=module.W_q.bias is not None).to(device)
            with torch.no_grad():
                for name in ("W_q", "W_k", "W_v"):
                    getattr(reference, name).load_state_dict(getattr(module, name).state_dict())
            g = torch.Generator().manual_seed(seed + 3000)
            x = torch.randn(B, L, E, generator=g).to(device)  # (B, L, E)
            where = f"(x of shape (B={B}, L={L}, E={E}), {device.type})"

            what = f"SelfAttention{where}"
            out = calling(what, module, x)
            with torch.no_grad():
                expected = reference(x)  # (B, L, E)
            compare(out.detach() if isinstance(out, torch.Tensor) else out, expected, what)

            what = f"SelfAttention{where} with is_causal=True"
            out = calling(what, module, x, is_causal=True)
            with torch.no_grad():
                expected = reference(x, is_causal=True)
            compare(out.detach() if isinstance(out, torch.Tensor) else out, expected, what)

            if L > 2:
                t = L // 2
                changed = x.clone()
                changed[:, t + 1 :] = torch.randn(B, L - t - 1, E, generator=g).to(device)
                what = f"SelfAttention{where}, is_causal=True, future tokens changed"
                before = calling(what, module, x, is_causal=True)[:, : t + 1]
                after = calling(what, module, changed, is_causal=True)[:, : t + 1]
                if not torch.allclose(before, after, rtol=1e-5, atol=1e-6):
                    raise CheckFailed(
                        f"{what}: the outputs up to a position changed when only later tokens "
                        "changed; under a causal mask the future must not leak into the past."
                    )

                perm = torch.randperm(L, generator=g).to(device)
                what = f"SelfAttention{where}, tokens permuted"
                out = calling(what, module, x[:, perm])
                if not torch.allclose(out, module(x)[:, perm], rtol=1e-5, atol=1e-6):
                    raise CheckFailed(
                        f"{what}: self-attention without a mask is permutation-equivariant "
                        "(permuting the tokens permutes the outputs the same way); yours is "
                        "not."
                    )

    # Gradients need L > 1: with one key the softmax is constant and W_q, W_k get none.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = calling("SelfAttention(8)", cls, 8)
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(4000))  # (B, L, E)
    out = calling("SelfAttention(8) on x of shape (B=2, L=5, E=8)", module, x)
    calling("backward through SelfAttention", out.sum().backward)
    for name in ("W_q", "W_k", "W_v"):
        grad = getattr(module, name).weight.grad
        if grad is None or not bool(grad.abs().sum() > 0):
            raise CheckFailed(
                f"SelfAttention: no gradient reaches {name}.weight; is it used in forward?"
            )


def check_measure_score_variance(fn: Callable) -> None:
    """measure_score_variance(d_ks, n_samples, scaled, seed) measures, it does not assume.

    Unscaled variances are within 10% of d_k, scaled ones within 10% of 1 (with 20,000 samples the
    sampling error is about 1%); the same seed gives the same numbers, another seed other numbers.
    """
    d_ks = [2, 8, 32, 128]
    what = "measure_score_variance(d_ks, n_samples=20000, scaled=False, seed=1)"
    got = calling(what, fn, d_ks, n_samples=20_000, scaled=False, seed=1)
    try:
        got = torch.as_tensor(got, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError):
        raise CheckFailed(f"{what}: return a tensor or a list of numbers.") from None
    if got.numel() != len(d_ks):
        raise CheckFailed(
            f"{what}: return one variance for each d_k ({len(d_ks)}), got {got.numel()}."
        )
    expected = torch.tensor(d_ks, dtype=torch.float64)
    if not torch.allclose(got, expected, rtol=0.1):
        if torch.allclose(got**2, expected, rtol=0.1):
            raise CheckFailed(f"{what}: these look like standard deviations; return variances.")
        raise CheckFailed(
            f"{what}: the variance of q·k for unit-variance entries should come out close to d_k; "
            "yours is not within 10%. Draw q and k with torch.randn and take the variance over "
            "the samples."
        )
    what = "measure_score_variance(d_ks, n_samples=20000, scaled=True, seed=1)"
    scaled = calling(what, fn, d_ks, n_samples=20_000, scaled=True, seed=1)
    scaled = torch.as_tensor(scaled, dtype=torch.float64).flatten()
    if scaled.numel() != len(d_ks) or not torch.allclose(scaled, torch.ones_like(scaled), rtol=0.1):
        raise CheckFailed(
            f"{what}: after dividing by sqrt(d_k) every variance should be close to 1."
        )
    again = torch.as_tensor(fn(d_ks, n_samples=20_000, scaled=False, seed=1), dtype=torch.float64)
    if not torch.equal(again.flatten(), got):
        raise CheckFailed(
            "measure_score_variance: the same seed gave different numbers; draw with a "
            "torch.Generator seeded from `seed`."
        )
    other = torch.as_tensor(fn(d_ks, n_samples=20_000, scaled=False, seed=2), dtype=torch.float64)
    if torch.equal(other.flatten(), got):
        raise CheckFailed(
            "measure_score_variance: another seed gave exactly the same numbers; the variances "
            "must be measured from random draws, not computed from d_k."
        )
    small = torch.as_tensor(fn([64], n_samples=50, scaled=False, seed=3), dtype=torch.float64)
    if bool((small.flatten() == 64).all()):
        raise CheckFailed(
            "measure_score_variance: with 50 samples the measured variance cannot be exactly d_k; "
            "measure it from random draws."
        )


# The graded parts of solutions/ch04_self_attention: grade cell id -> (the name the student
# defines, the check its hidden test calls). The batch grader uses this map for its trusted
# cross-check, which runs the same checks outside the student's kernel.
GRADED: dict[str, tuple[str, Callable[[Callable], None]]] = {
    "attention_scores_tests": ("attention_scores", check_attention_scores),
    "attention_weights_tests": ("attention_weights", check_attention_weights),
    "sdpa_tests": ("scaled_dot_product_attention", check_scaled_dot_product_attention),
    "self_attention_tests": ("SelfAttention", check_self_attention),
    "score_variance_tests": ("measure_score_variance", check_measure_score_variance),
}

# Built-ins that do the work this chapter asks the student to write; the submission scanner flags
# a call of any of them for the instructor to look at (it does not change the score).
FORBIDDEN_BUILTINS: tuple[str, ...] = (
    "torch.nn.functional.scaled_dot_product_attention",
    "torch._C._nn.scaled_dot_product_attention",
    "torch.nn.MultiheadAttention",
    "torch.nn.functional.multi_head_attention_forward",
)
