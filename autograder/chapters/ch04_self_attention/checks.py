"""Chapter 4's checks: what the hidden tests of ``solutions/ch04_self_attention`` call.

Each check draws its inputs from fixed seeds, runs on the CPU and on CUDA when there is one, in
float32 and float64, and tests what the exercise's instructions promise, properties first (a
tensor of the right shape, dtype and device; rows that sum to 1; masked keys at exactly 0; no
NaN, forward or backward), values after, so that a failure names the property. A later part is
checked with the reference standing in for the earlier parts it calls (``stand_ins``), so that
one mistake costs one part.

Not here: the reference (``reference.py``) and the known-wrong implementations (``wrong.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from autograder.toolkit import (
    TOLERANCES,
    CheckFailed,
    LocalSubject,
    Subject,
    attention_rows,
    calling,
    cases,
    check,
    check_devices,
    compare,
    module_state,
    raises,
)

from .reference import (
    SelfAttention,
    attention_scores,
    attention_weights,
    causal_mask,
    scaled_dot_product_attention,
)

__all__ = [
    "check_attention_scores",
    "check_attention_weights",
    "check_scaled_dot_product_attention",
    "check_self_attention",
    "check_measure_score_variance",
]

# Shapes as (batch dims, L, S, E, Ev): no batch, one batch dim, (B, H), L != S, E != Ev, tiny.
_SHAPES = [
    ((), 5, 5, 8, 8),
    ((3,), 4, 7, 16, 5),
    ((2, 3), 6, 6, 4, 4),
    ((2,), 1, 9, 8, 3),
    ((1, 2), 7, 3, 32, 16),
]
_DTYPES = (torch.float32, torch.float64)

_SCORES = {"attention_scores": attention_scores}
_WEIGHTS = {**_SCORES, "attention_weights": attention_weights}
_SDPA = {**_WEIGHTS, "scaled_dot_product_attention": scaled_dot_product_attention}

_TRANSPOSE_HINT = (
    "The scores have one row per query and one column per key, (..., L, S): transpose only the "
    "key's last two dimensions."
)


def _draw(shape, seed, device, dtype):
    """q (..., L, E), k (..., S, E), v (..., S, Ev) drawn from `seed`."""
    batch, L, S, E, Ev = shape
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*batch, L, E, generator=g, dtype=torch.float64)  # (..., L, E)
    k = torch.randn(*batch, S, E, generator=g, dtype=torch.float64)  # (..., S, E)
    v = torch.randn(*batch, S, Ev, generator=g, dtype=torch.float64)  # (..., S, Ev)
    return (t.to(device=device, dtype=dtype) for t in (q, k, v))


def _random_mask(batch, L, S, seed, device, fully_masked_row=False):
    """Boolean (..., L, S) mask, True = allowed, with at least one allowed key per row (except,
    with fully_masked_row, row L // 2, which allows none)."""
    g = torch.Generator().manual_seed(seed + 1000)
    mask = torch.rand(*batch, L, S, generator=g) < 0.6  # (..., L, S)
    keep = torch.randint(S, (*batch, L, 1), generator=g)  # (..., L, 1)
    mask.scatter_(-1, keep, True)
    if fully_masked_row:
        mask[..., L // 2, :] = False
    return mask.to(device)


def _float_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive form of a boolean mask: 0 where allowed, -inf where not."""
    zeros = torch.zeros(mask.shape, dtype=dtype, device=mask.device)  # (..., L, S)
    return zeros.masked_fill(~mask, float("-inf"))


def _where(device, dtype, shape) -> str:
    batch, L, S, E, Ev = shape
    lead = "".join(f"{b}, " for b in batch)
    dtype = str(dtype).removeprefix("torch.")
    return f"(query ({lead}L={L}, E={E}), key ({lead}S={S}, E={E}), {dtype}, {device.type})"


def _close(a, b, dtype) -> bool:
    rtol, atol = TOLERANCES[dtype]
    return isinstance(a, torch.Tensor) and a.shape == b.shape and torch.allclose(a, b, rtol, atol)


@check()
def check_attention_scores(fn: Subject) -> None:
    """attention_scores(query, key, scale=None) -> (..., L, S) equals scale · Q Kᵀ, in the
    inputs' dtype and on their device; scale=None means 1/sqrt(E)."""
    for device, dtype, seed, shape in cases(_SHAPES, _DTYPES):
        q, k, _ = _draw(shape, seed, device, dtype)
        where = _where(device, dtype, shape)
        out = calling(f"attention_scores{where}", fn, q, k)
        raw = q @ k.transpose(-2, -1)  # (..., L, S)
        if _close(out, raw, dtype) and not _close(out, raw / math.sqrt(shape[3]), dtype):
            raise CheckFailed(
                f"attention_scores{where}: the scores are not scaled; with scale=None multiply "
                "by 1/sqrt(E), E being the query's last dimension."
            )
        if _close(out, raw / shape[3], dtype) and shape[3] != 1:
            raise CheckFailed(
                f"attention_scores{where}: the scores are divided by E; divide by sqrt(E)."
            )
        compare(out, attention_scores(q, k), f"attention_scores{where}", hint=_TRANSPOSE_HINT)
        what = f"attention_scores{where} with scale=0.3"
        out = calling(what, fn, q, k, scale=0.3)
        compare(out, attention_scores(q, k, scale=0.3), what, hint=_TRANSPOSE_HINT)


def _causal_hint(out, q, k, dtype, what: str) -> None:
    """Name an off-by-one causal mask before the values are compared."""
    L, S = q.size(-2), k.size(-2)
    for diagonal, message in (
        (-1, "query l must attend to keys 0..l, itself included"),
        (1, "query l must not attend to key l + 1"),
    ):
        shifted = torch.ones(L, S, dtype=torch.bool, device=q.device).tril(diagonal)  # (L, S)
        if _close(out, attention_weights(q, k, attn_mask=shifted), dtype):
            raise CheckFailed(f"{what}: the causal mask is off by one: {message}.")


@check(stand_ins=_SCORES)
def check_attention_weights(fn: Subject) -> None:
    """attention_weights(query, key, attn_mask=None, is_causal=False, scale=None) -> (..., L, S).

    Rows sum to 1 over the keys; a boolean mask is True where attention is allowed and masked
    keys get exactly 0; a float mask is added; is_causal is top-left aligned; attn_mask together
    with is_causal raises ValueError; a query whose keys are all masked gets zeros, and finite
    gradients; the inputs' dtype and device are kept.
    """
    for device, dtype, seed, shape in cases(_SHAPES, _DTYPES):
        batch, L, S = shape[:3]
        q, k, _ = _draw(shape, seed, device, dtype)
        where = _where(device, dtype, shape)

        what = f"attention_weights{where}, no mask"
        out = calling(what, fn, q, k)
        attention_rows(out, None, what)
        compare(out, attention_weights(q, k), what)

        what = f"attention_weights{where}, scale=2.0"
        out = calling(what, fn, q, k, scale=2.0)
        compare(out, attention_weights(q, k, scale=2.0), what)

        what = f"attention_weights{where}, is_causal=True"
        out = calling(what, fn, q, k, is_causal=True)
        _causal_hint(out, q, k, dtype, what)
        attention_rows(out, causal_mask(L, S, device), what)
        compare(out, attention_weights(q, k, is_causal=True), what)

        mask = _random_mask(batch, L, S, seed, device)  # (..., L, S)
        what = f"attention_weights{where}, boolean attn_mask"
        out = calling(what, fn, q, k, attn_mask=mask)
        if _close(out, attention_weights(q, k, attn_mask=~mask | ~mask.any(-1, True)), dtype):
            raise CheckFailed(
                f"{what}: the mask is used the wrong way round; a boolean mask is True where "
                "attention is allowed."
            )
        attention_rows(out, mask, what)
        compare(out, attention_weights(q, k, attn_mask=mask), what)

        full = _random_mask(batch, L, S, seed, device, fully_masked_row=True)  # (..., L, S)
        for label, m in (("boolean", full), ("float", _float_mask(full, dtype))):
            what = f"attention_weights{where}, {label} mask, a query whose keys are all masked"
            out = calling(what, fn, q, k, attn_mask=m)
            attention_rows(out, full, what)
            compare(out, attention_weights(q, k, attn_mask=full), what)

        what = f"attention_weights{where}, float attn_mask (0 allowed, -inf not)"
        out = calling(what, fn, q, k, attn_mask=_float_mask(mask, dtype))
        attention_rows(out, mask, what)
        compare(out, attention_weights(q, k, attn_mask=mask), what)

        what = f"attention_weights{where}, attn_mask of shape (L, S) broadcast over the batch"
        out = calling(what, fn, q, k, attn_mask=mask[(0,) * len(batch)])
        compare(out, attention_weights(q, k, attn_mask=mask[(0,) * len(batch)]), what)

    q, k, _ = _draw(((2,), 4, 6, 8, 8), 7, "cpu", torch.float32)
    mask = _random_mask((2,), 4, 6, 7, "cpu")
    what = "attention_weights with both attn_mask and is_causal=True"
    raises(ValueError, what, fn, q, k, attn_mask=mask, is_causal=True)
    _check_gradients(fn, "attention_weights", with_value=False)


@check(stand_ins=_WEIGHTS)
def check_scaled_dot_product_attention(fn: Subject) -> None:
    """scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False, scale=None).

    Compared with the reference and with torch's built-in, and checked for properties: a constant
    value gives that constant back; permuting the key/value pairs together changes nothing;
    permuting the queries permutes the output; a fully masked query gives zeros; gradients flow
    and stay finite.
    """
    for device, dtype, seed, shape in cases(_SHAPES, _DTYPES):
        batch, L, S = shape[:3]
        q, k, v = _draw(shape, seed, device, dtype)
        where = _where(device, dtype, shape)
        mask = _random_mask(batch, L, S, seed, device)  # (..., L, S)

        what = f"scaled_dot_product_attention{where}, constant value"
        ones = torch.ones_like(v)  # (..., S, Ev)
        out = calling(what, fn, q, k, ones, attn_mask=mask)
        expected_shape = (*q.shape[:-1], v.size(-1))
        if isinstance(out, torch.Tensor) and tuple(out.shape) == expected_shape:
            if not torch.allclose(out, torch.ones_like(out), atol=10 * TOLERANCES[dtype][1]):
                raise CheckFailed(
                    f"{what}: when every value is 1 the output must be 1, because each query's "
                    "weights sum to 1; the weights multiply the values, (..., L, S) @ (..., S, Ev)."
                )

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
            what = f"scaled_dot_product_attention{where}, a query whose keys are all masked"
            out = calling(what, fn, q, k, v, attn_mask=full)
            compare(out, scaled_dot_product_attention(q, k, v, attn_mask=full), what)

    _check_gradients(fn, "scaled_dot_product_attention", with_value=True)


def _check_gradients(fn: Subject, name: str, with_value: bool) -> None:
    """Gradients flow to every input, stay finite with a fully masked row (boolean and float
    masks), and equal the reference's."""
    reference = scaled_dot_product_attention if with_value else attention_weights
    q, k, v = _draw(((2,), 4, 6, 8, 8), 99, "cpu", torch.float64)
    full = _random_mask((2,), 4, 6, 99, "cpu", fully_masked_row=True)  # (B, L, S)
    g = torch.Generator().manual_seed(98)
    grad_output = torch.randn(2, 4, 8 if with_value else 6, generator=g, dtype=torch.float64)
    inputs = (q, k, v) if with_value else (q, k)
    names = ("query", "key", "value")[: len(inputs)]

    for label, mask in (("boolean", full), ("float", _float_mask(full, torch.float64))):
        what = f"{name}: gradients with a {label} mask in which one query's keys are all masked"
        kwargs = {"attn_mask": mask}
        _, grads, _ = calling(what, fn.gradients, inputs, kwargs, grad_output=grad_output)
        _, expected, _ = LocalSubject(reference).gradients(inputs, kwargs, grad_output=grad_output)
        for input_name, got, want in zip(names, grads, expected, strict=False):
            if got is None:
                raise CheckFailed(f"{what}: no gradient reaches the {input_name}.")
            if not bool(torch.isfinite(got).all()):
                raise CheckFailed(
                    f"{what}: the gradient with respect to the {input_name} is not finite; a "
                    "query that attends to nothing must not produce NaN in the backward pass "
                    "either."
                )
            compare(got, want, f"{what}, gradient with respect to the {input_name}")


@check(stand_ins=_SDPA)
def check_self_attention(cls: Subject) -> None:
    """SelfAttention(embed_dim, bias=False): nn.Linear projections W_q, W_k, W_v from E to E
    (with a bias only when bias=True); forward(x (B, L, E), attn_mask=None, is_causal=False)
    -> (B, L, E), the attention of the three projections, passing the mask on."""
    for device in check_devices():
        for E, B, L, seed, bias in ((8, 2, 5, 0, False), (16, 3, 7, 1, True), (4, 1, 1, 2, False)):
            label = f"SelfAttention({E}{', bias=True' if bias else ''})"
            args = (E, True) if bias else (E,)
            module = calling(label, cls.seeded(seed), *args)
            if not isinstance(module, Subject):
                raise CheckFailed(f"{label} must construct an nn.Module.")
            state = module_state(
                module, label, {n: ("Linear", (E, E)) for n in ("W_q", "W_k", "W_v")}
            )
            for name in ("W_q", "W_k", "W_v"):
                if (f"{name}.bias" in state) != bias:
                    raise CheckFailed(
                        f"{label}.{name} must {'' if bias else 'not '}have a bias (bias={bias})."
                    )
            reference = SelfAttention(E, bias=bias)
            reference.load_state_dict(
                {n: t for n, t in state.items() if n.split(".")[0] in ("W_q", "W_k", "W_v")}
            )
            module.to(device)
            reference.to(device)
            g = torch.Generator().manual_seed(seed + 3000)
            x = torch.randn(B, L, E, generator=g).to(device)  # (B, L, E)
            where = f"(x of shape (B={B}, L={L}, E={E}), {device.type})"

            with torch.no_grad():
                for kwargs, what in (
                    ({}, f"{label}{where}"),
                    ({"is_causal": True}, f"{label}{where} with is_causal=True"),
                    ({"attn_mask": causal_mask(L, L, device)}, f"{label}{where} with attn_mask"),
                ):
                    out = calling(what, module, x, **kwargs)
                    compare(out, reference(x, **kwargs), what)

            if L > 2:
                t = L // 2
                changed = x.clone()
                changed[:, t + 1 :] = torch.randn(B, L - t - 1, E, generator=g).to(device)
                what = f"{label}{where}, is_causal=True, later tokens changed"
                before = calling(what, module, x, is_causal=True)
                after = calling(what, module, changed, is_causal=True)
                if not torch.allclose(before[:, : t + 1], after[:, : t + 1], rtol=1e-5, atol=1e-6):
                    raise CheckFailed(
                        f"{what}: the outputs up to a position changed when only later tokens "
                        "changed; under a causal mask the future must not leak into the past."
                    )
                perm = torch.randperm(L, generator=g).to(device)
                what = f"{label}{where}, tokens permuted"
                out = calling(what, module, x[:, perm])
                unpermuted = calling(what, module, x)
                if not _close(out, unpermuted[:, perm], torch.float32):
                    raise CheckFailed(
                        f"{what}: self-attention without a mask is permutation-equivariant "
                        "(permuting the tokens permutes the outputs the same way); yours is not."
                    )

    # Gradients need L > 1: with one key the softmax is constant and W_q, W_k get none.
    module = calling("SelfAttention(8)", cls.seeded(0), 8)
    state = module_state(module, "SelfAttention(8)", {})
    reference = SelfAttention(8)
    reference.load_state_dict({n: state[n] for n in reference.state_dict()})
    g = torch.Generator().manual_seed(4000)
    x = torch.randn(2, 5, 8, generator=g)  # (B, L, E)
    grad_output = torch.randn(2, 5, 8, generator=g)  # (B, L, E)
    what = "SelfAttention(8) on x of shape (B=2, L=5, E=8), backward"
    _, _, grads = calling(what, module.gradients, (x,), params=True, grad_output=grad_output)
    (reference(x) * grad_output).sum().backward()
    for name, param in reference.named_parameters():
        got = grads.get(name)
        if got is None:
            raise CheckFailed(f"{what}: no gradient reaches {name}; is it used in forward?")
        compare(got, param.grad, f"{what}, gradient of {name}")


@check()
def check_measure_score_variance(fn: Subject) -> None:
    """measure_score_variance(d_ks, n_samples, scaled, seed) measures, it does not assume.

    A float64 tensor of shape (len(d_ks),); unscaled variances within 10% of d_k, scaled ones
    within 10% of 1 (with 20,000 samples the relative sampling error is below 2% even at d_k = 2,
    where q·k is far from normal: a correct answer fails with odds of about 1e-9); the same seed
    gives the same numbers, another seed other numbers.
    """
    d_ks = [2, 8, 32]
    what = "measure_score_variance(d_ks, n_samples=20000, scaled=False, seed=1)"
    got = calling(what, fn, d_ks, n_samples=20_000, scaled=False, seed=1)
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"{what}: return a tensor, not a {type(got).__name__}.")
    if tuple(got.shape) != (len(d_ks),):
        raise CheckFailed(
            f"{what}: return one variance for each d_k, shape ({len(d_ks)},), not "
            f"{tuple(got.shape)}."
        )
    if got.dtype != torch.float64:
        raise CheckFailed(f"{what}: return float64 variances, not {got.dtype}.")
    expected = torch.tensor(d_ks, dtype=torch.float64)
    if not torch.allclose(got, expected, rtol=0.1):
        if torch.allclose(got**2, expected, rtol=0.1):
            raise CheckFailed(f"{what}: these look like standard deviations; return variances.")
        raise CheckFailed(
            f"{what}: the variance of q·k for unit-variance entries should come out close to d_k; "
            "yours is not within 10%."
        )
    what = "measure_score_variance(d_ks, n_samples=20000, scaled=True, seed=1)"
    scaled = calling(what, fn, d_ks, n_samples=20_000, scaled=True, seed=1)
    if not isinstance(scaled, torch.Tensor) or tuple(scaled.shape) != (len(d_ks),):
        raise CheckFailed(f"{what}: return a tensor of shape ({len(d_ks)},).")
    if not torch.allclose(scaled.double(), torch.ones(len(d_ks), dtype=torch.float64), rtol=0.1):
        raise CheckFailed(
            f"{what}: after dividing by sqrt(d_k) every variance should be close to 1."
        )
    what = "measure_score_variance called twice with seed=1"
    again = calling(what, fn, d_ks, n_samples=20_000, scaled=False, seed=1)
    if not isinstance(again, torch.Tensor) or not torch.equal(again, got):
        raise CheckFailed(
            f"{what}: the same seed gave different numbers; draw from a generator "
            "seeded with `seed`."
        )
    what = "measure_score_variance with seed=2"
    other = calling(what, fn, d_ks, n_samples=20_000, scaled=False, seed=2)
    if isinstance(other, torch.Tensor) and torch.equal(other, got):
        raise CheckFailed(
            f"{what}: another seed gave exactly the same numbers; the variances must be measured "
            "from random draws, not computed from d_k."
        )
    what = "measure_score_variance([64], n_samples=50, seed=3)"
    small = calling(what, fn, [64], n_samples=50, scaled=False, seed=3)
    if isinstance(small, torch.Tensor) and bool((small == 64).all()):
        raise CheckFailed(
            f"{what}: with 50 samples the measured variance cannot be exactly d_k; measure it "
            "from random draws."
        )
