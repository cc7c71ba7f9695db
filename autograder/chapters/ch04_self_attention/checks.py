"""Chapter 4's checks: what the hidden tests of ``solutions/ch04_self_attention`` call.

Each check draws its inputs from fixed seeds, runs on the CPU and on CUDA when there is one, in
float32 and float64, and tests what the exercise's instructions promise, properties first (a
tensor of the right shape, dtype and device; rows that sum to 1; masked keys at exactly 0; no
NaN, forward or backward), values after, so that a failure names the property. Where the result is
what a known mistake (``wrong.py``) computes, the message names that mistake.

A large part is graded behaviour by behaviour, one check per graded cell (``attention_weights``:
the softmax, the masks, a fully masked row), so that one missing behaviour costs its own cell.
Each check calls the student's function at least once with ``enable_gqa`` passed explicitly, as
the signature in the instructions has it. A later part runs on the student's own earlier parts
where those pass their checks and on the reference where they do not (``stand_ins``), so that one
mistake costs one part.

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
    close,
    compare,
    draw,
    dtype_name,
    module_state,
    raises,
)

from . import wrong
from .reference import (
    SelfAttention,
    attention_scores,
    attention_weights,
    causal_mask,
    repeat_kv,
    scaled_dot_product_attention,
)

__all__ = [
    "check_attention_scores",
    "check_attention_scores_gqa",
    "check_attention_weights",
    "check_attention_weights_masks",
    "check_attention_weights_fully_masked",
    "check_scaled_dot_product_attention",
    "check_scaled_dot_product_attention_gqa",
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
# Grouped-query shapes as (batch dims, Hq, Hkv, L, S, E, Ev): groups of 3, one key/value head for
# all (multi-query), as many as the query (plain attention), no batch, two batch dims.
_GQA_SHAPES = [
    ((2,), 6, 2, 5, 7, 8, 3),
    ((2,), 4, 1, 3, 6, 16, 16),
    ((1,), 3, 3, 4, 4, 8, 8),
    ((), 8, 4, 6, 5, 4, 2),
    ((2, 1), 4, 2, 2, 3, 8, 5),
]
_DTYPES = (torch.float32, torch.float64)

_SCORES = {"attention_scores": attention_scores}
_WEIGHTS = {**_SCORES, "attention_weights": attention_weights}
_SDPA = {**_WEIGHTS, "scaled_dot_product_attention": scaled_dot_product_attention}

_TRANSPOSE_HINT = (
    "The scores have one row per query and one column per key, (..., L, S): transpose only the "
    "key's last two dimensions."
)
_GQA_HINT = (
    "With enable_gqa=True the key (and the value) has Hkv heads, fewer than the query's Hq, in "
    "dimension -3: each key head serves Hq / Hkv consecutive query heads, query head h reading "
    "key head h // (Hq / Hkv)."
)
_GROUPS_MESSAGE = (
    "query head h was paired with key head h % Hkv (the key heads tiled, as repeat does); "
    "consecutive query heads share a key head: query head h reads key head h // (Hq / Hkv) "
    "(each key head repeated in place, as repeat_interleave does)"
)


def _draw(shape, seed, device, dtype):
    """q (..., L, E), k (..., S, E), v (..., S, Ev) drawn from `seed`."""
    batch, L, S, E, Ev = shape
    q = draw((*batch, L, E), 3 * seed, device, dtype)  # (..., L, E)
    k = draw((*batch, S, E), 3 * seed + 1, device, dtype)  # (..., S, E)
    v = draw((*batch, S, Ev), 3 * seed + 2, device, dtype)  # (..., S, Ev)
    return q, k, v


def _draw_gqa(shape, seed, device, dtype):
    """q (..., Hq, L, E), k (..., Hkv, S, E), v (..., Hkv, S, Ev) drawn from `seed`."""
    batch, Hq, Hkv, L, S, E, Ev = shape
    q = draw((*batch, Hq, L, E), 3 * seed + 500, device, dtype)  # (..., Hq, L, E)
    k = draw((*batch, Hkv, S, E), 3 * seed + 501, device, dtype)  # (..., Hkv, S, E)
    v = draw((*batch, Hkv, S, Ev), 3 * seed + 502, device, dtype)  # (..., Hkv, S, Ev)
    return q, k, v


def _tiled(query, kv):
    """The key/value heads tiled (repeat), the usual wrong pairing of grouped-query heads."""
    times = query.size(-3) // kv.size(-3)
    return kv.repeat(*([1] * (kv.dim() - 3)), times, 1, 1)  # (..., Hq, S, ·)


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
    kind = f"{dtype_name(dtype)}, {device.type}"
    return f"(query ({lead}L={L}, E={E}), key ({lead}S={S}, E={E}), {kind})"


def _where_gqa(device, dtype, shape) -> str:
    batch, Hq, Hkv, L, S, E, Ev = shape
    lead = "".join(f"{b}, " for b in batch)
    return (
        f"(query ({lead}Hq={Hq}, L={L}, E={E}), key ({lead}Hkv={Hkv}, S={S}, E={E}), "
        f"enable_gqa=True, {dtype_name(dtype)}, {device.type})"
    )


def _calling(what: str, fn, *args, hint: str = "", **kwargs):
    """calling(), with `hint` added when the student's code raised; a signature without
    enable_gqa is named."""
    try:
        return calling(what, fn, *args, **kwargs)
    except CheckFailed as exc:
        message = str(exc)
        if "unexpected keyword argument 'enable_gqa'" in message:
            message += (
                " Keep the signature the instructions give, with enable_gqa=False last, as "
                "torch's scaled_dot_product_attention has it."
            )
        elif hint:
            message = f"{message.rstrip('.')}. {hint}"
        raise CheckFailed(message) from None


# --------------------------------------------------------------------------------------------
# Part 1: attention_scores
# --------------------------------------------------------------------------------------------


@check()
def check_attention_scores(fn: Subject) -> None:
    """attention_scores(query, key, scale=None, enable_gqa=False) -> (..., L, S) equals
    scale · Q Kᵀ, in the inputs' dtype and on their device; scale=None means 1/sqrt(E)."""
    for device, dtype, seed, shape in cases(_SHAPES, _DTYPES):
        q, k, _ = _draw(shape, seed, device, dtype)
        where = _where(device, dtype, shape)
        hint = _TRANSPOSE_HINT
        out = _calling(f"attention_scores{where}", fn, q, k, hint=hint)
        raw = q @ k.transpose(-2, -1)  # (..., L, S)
        if close(out, raw) and not close(out, raw / math.sqrt(shape[3])):
            raise CheckFailed(
                f"attention_scores{where}: the scores are not scaled; with scale=None multiply "
                "by 1/sqrt(E), E being the query's last dimension."
            )
        if close(out, raw / shape[3]) and shape[3] != 1:
            raise CheckFailed(
                f"attention_scores{where}: the scores are divided by E; divide by sqrt(E)."
            )
        compare(out, attention_scores(q, k), f"attention_scores{where}", hint=_TRANSPOSE_HINT)
        what = f"attention_scores{where} with scale=0.3, enable_gqa=False"
        out = _calling(what, fn, q, k, scale=0.3, enable_gqa=False, hint=hint)
        if close(out, attention_scores(q, k)):
            raise CheckFailed(
                f"{what}: the given scale is ignored: use it instead of 1/sqrt(E) when it is "
                "not None."
            )
        compare(out, attention_scores(q, k, scale=0.3), what, hint=_TRANSPOSE_HINT)


@check()
def check_attention_scores_gqa(fn: Subject) -> None:
    """attention_scores(query (..., Hq, L, E), key (..., Hkv, S, E), enable_gqa=True) ->
    (..., Hq, L, S): query head h scored against key head h // (Hq / Hkv); ValueError when Hkv
    does not divide Hq."""
    for device, dtype, seed, shape in cases(_GQA_SHAPES, _DTYPES):
        q, k, _ = _draw_gqa(shape, seed, device, dtype)
        where = _where_gqa(device, dtype, shape)
        for kwargs in ({}, {"scale": 0.5}):
            what = f"attention_scores{where}" + (", scale=0.5" if kwargs else "")
            out = _calling(what, fn, q, k, enable_gqa=True, hint=_GQA_HINT, **kwargs)
            expected = attention_scores(q, k, enable_gqa=True, **kwargs)  # (..., Hq, L, S)
            if shape[1] != shape[2] and shape[2] > 1 and not close(out, expected):
                if close(out, attention_scores(q, _tiled(q, k), **kwargs)):
                    raise CheckFailed(f"{what}: {_GROUPS_MESSAGE}.")
            compare(out, expected, what, hint=_GQA_HINT)
    q, k, _ = _draw_gqa(((2,), 6, 4, 3, 3, 8, 8), 9, "cpu", torch.float32)
    raises(ValueError, "attention_scores(query with 6 heads, key with 4 heads, enable_gqa=True)",
           fn, q, k, enable_gqa=True)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Part 2: attention_weights
# --------------------------------------------------------------------------------------------


def _name_weights_mistake(out, q, k, kwargs: dict, what: str) -> None:
    """Name the known mistake whose weights `out` are, before any property or value is checked."""
    expected = attention_weights(q, k, **kwargs)  # (..., L, S)
    if not isinstance(out, torch.Tensor) or out.shape != expected.shape or close(out, expected):
        return
    mask, causal = kwargs.get("attn_mask"), kwargs.get("is_causal", False)
    scale = kwargs.get("scale")
    L, S = q.size(-2), k.size(-2)
    candidates = [
        (
            lambda: wrong.weights_softmax_zero_softmax(q, k, mask, causal, scale),
            "the softmax is taken twice (softmax, zero the masked keys, softmax again): the "
            "second softmax turns every weight w into exp(w), so the masked keys' zeros become "
            "exp(0) = 1 and get weight; mask the scores with -inf before a single softmax",
        ),
        (
            lambda: wrong.weights_softmax_wrong_axis(q, k, mask, causal, scale),
            "the softmax runs over the queries (dim -2); each query's weights are a softmax over "
            "the keys, the last dimension",
        ),
    ]
    if L == S:
        candidates.append((
            lambda: expected.transpose(-2, -1),
            "the weights are transposed: row l holds query l's weights over the S keys, "
            "(..., L, S)",
        ))  # fmt: skip
    if scale is None:
        candidates.append((
            lambda: attention_weights(q, k, attn_mask=mask, is_causal=causal, scale=1.0),
            "the scores are not scaled: with scale=None they are multiplied by 1/sqrt(E)",
        ))  # fmt: skip
    flipped = (
        "the mask is used the wrong way round; a boolean mask is True where attention is allowed"
    )
    if mask is not None and mask.dtype == torch.bool:
        candidates += [
            (lambda: attention_weights(q, k, attn_mask=~mask, scale=scale), flipped),
            (lambda: attention_weights(q, k, attn_mask=~mask | ~mask.any(-1, True), scale=scale),
             flipped),
        ]  # fmt: skip
    if causal:
        candidates.append(
            (lambda: attention_weights(q, k, attn_mask=~causal_mask(L, S, q.device), scale=scale),
             flipped)
        )  # fmt: skip
        for diagonal, message in (
            (-1, "query l must attend to keys 0..l, itself included"),
            (1, "query l must not attend to key l + 1"),
        ):
            shifted = torch.ones(L, S, dtype=torch.bool, device=q.device).tril(diagonal)
            candidates.append((
                lambda shifted=shifted: attention_weights(q, k, attn_mask=shifted, scale=scale),
                f"the causal mask is off by one: {message}",
            ))  # fmt: skip
    if mask is not None or causal:
        candidates += [
            (
                lambda: attention_weights(q, k, scale=scale),
                "the mask is ignored: with a mask (or is_causal=True) a forbidden key gets "
                "weight exactly 0",
            ),
            (
                lambda: wrong.weights_mask_after_softmax(q, k, mask, causal, scale),
                "the masked keys were zeroed after the softmax, so the rows no longer sum to 1: "
                "mask the scores before the softmax",
            ),
            (
                lambda: wrong.weights_large_negative_fill(q, k, mask, causal, scale),
                "a query whose keys are all masked got equal weights on every key (a large "
                "negative fill such as -1e9 makes such a row uniform); it attends to nothing, so "
                "its weights must be 0",
            ),
        ]
    for compute, message in candidates:
        try:
            wrong_out = compute()
        except (RuntimeError, ValueError):
            continue
        if close(out, wrong_out, equal_nan=True):
            raise CheckFailed(f"{what}: {message}.")


@check(stand_ins=_SCORES)
def check_attention_weights(fn: Subject) -> None:
    """attention_weights(query, key, attn_mask=None, is_causal=False, scale=None,
    enable_gqa=False) without a mask: rows of non-negative weights that sum to 1 over the keys;
    scale and enable_gqa passed on to the scores; the inputs' dtype and device kept."""
    for device, dtype, seed, shape in cases(_SHAPES, _DTYPES):
        q, k, _ = _draw(shape, seed, device, dtype)
        where = _where(device, dtype, shape)
        for kwargs, label in (({}, "no mask"), ({"scale": 2.0, "enable_gqa": False},
                                                 "scale=2.0, enable_gqa=False")):  # fmt: skip
            what = f"attention_weights{where}, {label}"
            out = _calling(what, fn, q, k, **kwargs)
            _name_weights_mistake(out, q, k, {"scale": kwargs.get("scale")}, what)
            attention_rows(out, None, what)
            compare(out, attention_weights(q, k, **kwargs), what)
    for device, dtype, seed, shape in cases(_GQA_SHAPES[:2], _DTYPES):
        q, k, _ = _draw_gqa(shape, seed, device, dtype)
        what = f"attention_weights{_where_gqa(device, dtype, shape)}"
        out = _calling(what, fn, q, k, enable_gqa=True,
                       hint="Pass scale and enable_gqa on to your attention_scores.")  # fmt: skip
        attention_rows(out, None, what)
        compare(out, attention_weights(q, k, enable_gqa=True), what,
                hint="Pass scale and enable_gqa on to your attention_scores.")  # fmt: skip


@check(stand_ins=_SCORES)
def check_attention_weights_masks(fn: Subject) -> None:
    """attention_weights with masks: a boolean attn_mask broadcastable to (..., L, S) is True
    where attention is allowed and a masked key gets exactly 0; a float attn_mask is added to the
    scores; is_causal is top-left aligned, also when L != S; attn_mask together with is_causal
    raises ValueError."""
    for device, dtype, seed, shape in cases(_SHAPES, _DTYPES):
        batch, L, S = shape[:3]
        q, k, _ = _draw(shape, seed, device, dtype)
        where = _where(device, dtype, shape)
        mask = _random_mask(batch, L, S, seed, device)  # (..., L, S)
        for kwargs, label, allowed in (
            ({"is_causal": True}, "is_causal=True", causal_mask(L, S, device)),
            ({"attn_mask": mask}, "boolean attn_mask", mask),
            ({"attn_mask": _float_mask(mask, dtype), "enable_gqa": False},
             "float attn_mask (0 allowed, -inf not), enable_gqa=False", mask),
            ({"attn_mask": mask[(0,) * len(batch)]},
             "boolean attn_mask of shape (L, S) broadcast over the batch", mask[(0,) * len(batch)]),
        ):  # fmt: skip
            what = f"attention_weights{where}, {label}"
            out = _calling(what, fn, q, k, **kwargs)
            reference_kwargs = {**kwargs, "attn_mask": allowed} if "attn_mask" in kwargs else kwargs
            reference_kwargs = {k_: v for k_, v in reference_kwargs.items() if k_ != "enable_gqa"}
            _name_weights_mistake(out, q, k, reference_kwargs, what)
            attention_rows(out, allowed, what)
            compare(out, attention_weights(q, k, **reference_kwargs), what)

    q, k, _ = _draw(((2,), 4, 6, 8, 8), 7, "cpu", torch.float32)
    mask = _random_mask((2,), 4, 6, 7, "cpu")
    what = "attention_weights with both attn_mask and is_causal=True"
    raises(ValueError, what, fn, q, k, attn_mask=mask, is_causal=True)


@check(stand_ins=_SCORES)
def check_attention_weights_fully_masked(fn: Subject) -> None:
    """A query whose keys are all masked (a boolean row of False, a float row of -inf) gets
    weights 0, never NaN, and the backward pass through it stays finite and equals the
    reference's."""
    for device, dtype, seed, shape in cases(_SHAPES, _DTYPES):
        batch, L, S = shape[:3]
        q, k, _ = _draw(shape, seed, device, dtype)
        where = _where(device, dtype, shape)
        full = _random_mask(batch, L, S, seed, device, fully_masked_row=True)  # (..., L, S)
        masks = (("boolean", full, {}), ("float", _float_mask(full, dtype), {"enable_gqa": False}))
        for label, m, extra in masks:
            what = f"attention_weights{where}, {label} mask, a query whose keys are all masked"
            out = _calling(what, fn, q, k, attn_mask=m, **extra)
            if isinstance(out, torch.Tensor) and bool(torch.isnan(out).any()):
                raise CheckFailed(
                    f"{what}: the weights contain NaN; the softmax of a row of -inf is 0/0. A "
                    "query whose keys are all masked attends to nothing: its weights are 0."
                )
            _name_weights_mistake(out, q, k, {"attn_mask": full}, what)
            attention_rows(out, full, what)
            compare(out, attention_weights(q, k, attn_mask=full), what)
    _check_gradients(fn, "attention_weights", with_value=False)


# --------------------------------------------------------------------------------------------
# Part 3: scaled_dot_product_attention
# --------------------------------------------------------------------------------------------


@check(stand_ins=_WEIGHTS)
def check_scaled_dot_product_attention(fn: Subject) -> None:
    """scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False,
    scale=None, enable_gqa=False).

    Compared with the reference and with torch's built-in, and checked for properties: a constant
    value gives that constant back; with the identity as the value the output is the weights;
    permuting the key/value pairs together changes nothing; permuting the queries permutes the
    output; a fully masked query gives zeros; gradients flow and stay finite.
    """
    for device, dtype, seed, shape in cases(_SHAPES, _DTYPES):
        batch, L, S = shape[:3]
        q, k, v = _draw(shape, seed, device, dtype)
        where = _where(device, dtype, shape)
        mask = _random_mask(batch, L, S, seed, device)  # (..., L, S)

        eye = torch.eye(S, dtype=dtype, device=device).expand(*batch, S, S)  # (..., S, S)
        for kwargs, label in (({"attn_mask": mask}, "boolean attn_mask"),
                              ({"is_causal": True}, "is_causal=True")):  # fmt: skip
            what = f"scaled_dot_product_attention{where}, {label}, the identity as the value"
            try:
                out = calling(what, fn, q, k, eye, **kwargs)
            except CheckFailed:  # the cases below say what is wrong
                continue
            _name_weights_mistake(out, q, k, kwargs, what)

        what = f"scaled_dot_product_attention{where}, constant value"
        ones = torch.ones_like(v)  # (..., S, Ev)
        out = _calling(what, fn, q, k, ones, attn_mask=mask)
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
            ({"scale": 0.5, "enable_gqa": False}, "scale=0.5, enable_gqa=False"),
        ):
            what = f"scaled_dot_product_attention{where}, {label}"
            out = _calling(what, fn, q, k, v, **kwargs)
            expected = scaled_dot_product_attention(q, k, v, **kwargs)  # (..., L, Ev)
            if not close(out, expected) and shape[3] == shape[4]:
                if close(out, scaled_dot_product_attention(q, v, v, **kwargs)):
                    raise CheckFailed(
                        f"{what}: the scores compare the queries with the values; compare them "
                        "with the keys, and weigh the values."
                    )
            if L == S and not close(out, expected):
                transposed = attention_weights(
                    q, k, **{n: a for n, a in kwargs.items() if n != "enable_gqa"}
                ).transpose(-2, -1)
                if close(out, transposed @ v):
                    raise CheckFailed(
                        f"{what}: the weights are transposed: row l of the weights is query l's, "
                        "(..., L, S) @ (..., S, Ev)."
                    )
            compare(out, expected, what)
            compare(out, F.scaled_dot_product_attention(q, k, v, **kwargs), f"{what} vs torch")

        reference = scaled_dot_product_attention(q, k, v)  # (..., L, Ev)
        g = torch.Generator().manual_seed(seed + 2000)
        perm = torch.randperm(S, generator=g).to(device)
        what = f"scaled_dot_product_attention{where}, key/value pairs permuted together"
        out = _calling(what, fn, q, k[..., perm, :], v[..., perm, :])
        compare(out, reference, what)
        perm = torch.randperm(L, generator=g).to(device)
        what = f"scaled_dot_product_attention{where}, queries permuted"
        out = _calling(what, fn, q[..., perm, :], k, v)
        compare(out, reference[..., perm, :], what)

        if L > 1:
            full = _random_mask(batch, L, S, seed, device, fully_masked_row=True)  # (..., L, S)
            what = f"scaled_dot_product_attention{where}, a query whose keys are all masked"
            out = _calling(what, fn, q, k, v, attn_mask=full)
            compare(out, scaled_dot_product_attention(q, k, v, attn_mask=full), what)

    _check_gradients(fn, "scaled_dot_product_attention", with_value=True)


@check(stand_ins=_WEIGHTS)
def check_scaled_dot_product_attention_gqa(fn: Subject) -> None:
    """scaled_dot_product_attention(query (..., Hq, L, E), key (..., Hkv, S, E), value
    (..., Hkv, S, Ev), enable_gqa=True) -> (..., Hq, L, Ev), equal to torch's, with and without
    masks: each query head reads the key and value heads of its group."""
    for device, dtype, seed, shape in cases(_GQA_SHAPES, _DTYPES):
        batch, Hq, Hkv, L, S = shape[:5]
        q, k, v = _draw_gqa(shape, seed, device, dtype)
        where = _where_gqa(device, dtype, shape)
        mask = _random_mask((), L, S, seed, device)  # (L, S)
        variants = (
            ({}, ""),
            ({"attn_mask": mask}, ", boolean attn_mask (L, S)"),
            ({"is_causal": True, "scale": 0.7}, ", is_causal=True, scale=0.7"),
        )
        for kwargs, label in variants:
            what = f"scaled_dot_product_attention{where}{label}"
            out = _calling(what, fn, q, k, v, enable_gqa=True, hint=_GQA_HINT, **kwargs)
            expected = scaled_dot_product_attention(q, k, v, enable_gqa=True, **kwargs)
            if Hq != Hkv and Hkv > 1 and not close(out, expected):
                tilings = (
                    (_tiled(q, k), _tiled(q, v), "the key and value"),
                    (repeat_kv(q, k), _tiled(q, v), "the value"),
                )
                for key, value, which in tilings:
                    if close(out, scaled_dot_product_attention(q, key, value, **kwargs)):
                        raise CheckFailed(
                            f"{what}: for {which}, {_GROUPS_MESSAGE}; the value's heads are "
                            "grouped as the key's."
                        )
            compare(out, expected, what, hint=_GQA_HINT)
            compare(out, F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kwargs),
                    f"{what} vs torch")  # fmt: skip


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
                    "either (the backward pass goes through every operation, also those whose "
                    "result is overwritten afterwards)."
                )
            compare(got, want, f"{what}, gradient with respect to the {input_name}")


# --------------------------------------------------------------------------------------------
# Part 4: SelfAttention
# --------------------------------------------------------------------------------------------


@check(stand_ins=_SDPA)
def check_self_attention(cls: Subject) -> None:
    """SelfAttention(embed_dim, bias=False): nn.Linear projections W_q, W_k, W_v from E to E
    (with a bias only when bias=True); forward(x (B, L, E), attn_mask=None, is_causal=False)
    -> (B, L, E), the attention of the three projections, passing the mask on. Properties first:
    under a causal mask later tokens do not change earlier outputs; without a mask, permuting
    the tokens permutes the outputs."""
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

            if L > 2:
                t = L // 2
                changed = x.clone()
                changed[:, t + 1 :] = torch.randn(B, L - t - 1, E, generator=g).to(device)
                what = f"{label}{where}, is_causal=True, later tokens changed"
                before = calling(what, module, x, is_causal=True)
                after = calling(what, module, changed, is_causal=True)
                if (isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor)
                        and before.shape == after.shape == x.shape
                        and not torch.allclose(before[:, : t + 1], after[:, : t + 1],
                                               rtol=1e-5, atol=1e-6)):  # fmt: skip
                    raise CheckFailed(
                        f"{what}: the outputs up to a position changed when only later tokens "
                        "changed; under a causal mask the future must not leak into the past "
                        "(pass is_causal on to the attention)."
                    )
                perm = torch.randperm(L, generator=g).to(device)
                what = f"{label}{where}, tokens permuted"
                out = calling(what, module, x[:, perm])
                unpermuted = calling(what, module, x)
                if isinstance(unpermuted, torch.Tensor) and unpermuted.shape == x.shape:
                    if not close(out, unpermuted[:, perm], torch.float32):
                        raise CheckFailed(
                            f"{what}: self-attention without a mask is permutation-equivariant "
                            "(permuting the tokens permutes the outputs the same way); yours is "
                            "not: nothing in it may depend on a token's position."
                        )

            with torch.no_grad():
                q, k, v = reference.W_q(x), reference.W_k(x), reference.W_v(x)  # (B, L, E) each
                for kwargs, what in (
                    ({}, f"{label}{where}"),
                    ({"is_causal": True}, f"{label}{where} with is_causal=True"),
                    ({"attn_mask": causal_mask(L, L, device)}, f"{label}{where} with attn_mask"),
                ):
                    out = calling(what, module, x, **kwargs)
                    mistakes = [
                        (scaled_dot_product_attention(q, q, v, **kwargs),
                         "the keys are W_q(x); the keys are W_k(x)"),
                        (scaled_dot_product_attention(q, k, x, **kwargs),
                         "the values are x itself; the values are W_v(x)"),
                    ]  # fmt: skip
                    if kwargs:
                        mistakes.append((
                            scaled_dot_product_attention(q, k, v),
                            "the mask is not passed on: pass attn_mask and is_causal on to "
                            "scaled_dot_product_attention",
                        ))  # fmt: skip
                    if not close(out, reference(x, **kwargs)):
                        for wrong_out, message in mistakes:
                            if close(out, wrong_out):
                                raise CheckFailed(f"{what}: {message}.")
                    compare(out, reference(x, **kwargs), what)

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


# --------------------------------------------------------------------------------------------
# Part 5: measure_score_variance
# --------------------------------------------------------------------------------------------


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
            "from random draws that depend on the seed, not computed from d_k."
        )
    what = "measure_score_variance([64], n_samples=50, seed=3)"
    small = calling(what, fn, [64], n_samples=50, scaled=False, seed=3)
    if isinstance(small, torch.Tensor) and bool((small == 64).all()):
        raise CheckFailed(
            f"{what}: with 50 samples the measured variance cannot be exactly d_k; measure it "
            "from random draws."
        )
