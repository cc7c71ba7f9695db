"""Chapter 3's checks: what the hidden tests of ``solutions/ch03_luong_attention`` call.

The page builds Luong's global attention; the exercise asks for his local attention with a
predicted position (local-p), which the page leaves out: the positions, the local weights (the
window, then the Gaussian), and the page's layer with a window. The three score functions are given
in the notebook (they are the page's) and not graded.

Each check draws its inputs from fixed seeds, runs on the CPU and on CUDA when there is one, in
float32 and float64, and tests what the exercise's instructions promise, properties first (a
tensor of the right shape, dtype and device; weights that are exactly 0 outside the window and at
the padding; no NaN, forward or backward), values after, so that a failure names the property.

One bug, one part, one behaviour:

- ``LuongAttention`` calls the student's ``predicted_positions`` and ``local_weights`` by name: its
  checks run on the student's own where they pass their checks, and on the reference otherwise
  (``stand_ins``).
- The Gaussian is checked on top of the student's own window weights (``gaussian=False``), so a
  mistake in the window costs the window's cell only; the layer's output is checked on top of the
  student's own ``attention_weights``, so a mistake in the weights costs the weights' cell only.

Not here: the reference (``reference.py``) and the banks (``wrong.py``, ``right.py``).
"""

from __future__ import annotations

import math

import torch

from autograder.toolkit import (
    TOLERANCES,
    CheckFailed,
    LocalSubject,
    Subject,
    calling,
    cases,
    check,
    check_devices,
    close,
    compare,
    draw,
    label,
    module_state,
    raises,
)

from .reference import LuongAttention, local_weights, predicted_positions

__all__ = [
    "check_predicted_positions",
    "check_local_window",
    "check_local_gaussian",
    "check_local_attention_weights",
    "check_local_attention_output",
]

_DTYPES = (torch.float32, torch.float64)
_PARTS = {"predicted_positions": predicted_positions, "local_weights": local_weights}


def _gradients_equal(
    fn: Subject, what: str, args: tuple, names: tuple, reference, kwargs=None, grad_output=None
) -> None:
    """The gradients of <fn(*args), grad_output> with respect to the floating-point inputs named
    in `names` (the first ones) equal the reference's, and are finite."""
    _, grads, _ = calling(what, fn.gradients, args, kwargs, grad_output=grad_output)
    _, expected, _ = LocalSubject(reference).gradients(args, kwargs, grad_output=grad_output)
    n = len(names)  # the first n floating-point inputs; any others are not asked about
    for name, got, want in zip(names, grads[:n], expected[:n], strict=True):
        if got is None:
            raise CheckFailed(f"{what}: no gradient reaches the {name}; use torch operations only.")
        if not bool(torch.isfinite(got).all()):
            raise CheckFailed(
                f"{what}: the gradient of the {name} is not finite. A query with no allowed "
                "position attends to nothing, and must not produce NaN in the backward pass "
                "either (chapter 2, 'Softmax over the source positions, padding masked out')."
            )
        compare(got, want, f"{what}, the gradient of the {name}")


# --------------------------------------------------------------------------------------------
# Part 1: predicted_positions
# --------------------------------------------------------------------------------------------

# (B, L, D, A, lengths): A == D first (a transposed W_p runs there), A != D, one query, one word.
_POSITION_SHAPES = [
    (2, 3, 6, 6, (4, 9)),
    (3, 4, 8, 5, (7, 3, 1)),
    (4, 1, 5, 3, (2, 2, 6, 1)),
    (1, 5, 4, 7, (1,)),
]


@check()
def check_predicted_positions(fn: Subject) -> None:
    """predicted_positions(query (B, L, D), weight W_p (A, D), v v_p (A,), lengths (B,)) -> (B, L):
    p_t = S_b · sigmoid(v_pᵀ tanh(W_p h_t)) with S_b sentence b's own length; lengths on the CPU
    or on the query's device; the query's dtype and device; gradients reach the query, W_p and v_p.
    """
    for device, dtype, seed, (B, L, D, A, lengths) in cases(_POSITION_SHAPES, _DTYPES):
        query = draw((B, L, D), seed, device, dtype)  # (B, L, D)
        weight = draw((A, D), seed + 10, device, dtype) / math.sqrt(D)  # (A, D)
        v = 2 * draw((A,), seed + 20, device, dtype)  # (A,): p_t spread over (0, S_b)
        for where_lengths in ("cpu", device):
            S_b = torch.tensor(lengths, device=where_lengths)  # (B,)
            what = (
                f"predicted_positions(query (B={B}, L={L}, D={D}), W_p (A={A}, D={D}), lengths "
                f"{list(lengths)} on {torch.device(where_lengths).type}, {label(dtype, device)})"
            )
            out = calling(what, fn, query, weight, v, S_b)
            expected = predicted_positions(query, weight, v, S_b)  # (B, L)
            if A == D and close(out, predicted_positions(query, weight.T, v, S_b)):
                raise CheckFailed(
                    f"{what}: W_p is used transposed. W_p h_t with W_p of shape (A, D), the "
                    "layout of nn.Linear(D, A).weight, is query @ W_p.T."
                )
            unit = predicted_positions(query, weight, v, torch.ones_like(S_b))  # (B, L)
            if close(out, unit) and not close(expected, unit):
                raise CheckFailed(
                    f"{what}: the positions are not scaled by the sentence's length: p_t = S_b · "
                    "sigmoid(...), a real number between 0 and S_b."
                )
            if close(out, unit * max(lengths)) and not close(expected, unit * max(lengths)):
                raise CheckFailed(
                    f"{what}: every sentence is scaled by the longest length; p_t = S_b · "
                    "sigmoid(...) with S_b the length of sentence b itself."
                )
            linear = S_b.to(device, dtype)[:, None] * torch.sigmoid((query @ weight.T) @ v)
            if close(out, linear) and not close(expected, linear):
                raise CheckFailed(
                    f"{what}: there is no tanh: p_t = S_b · sigmoid(v_pᵀ tanh(W_p h_t))."
                )
            compare(
                out,
                expected,
                what,
                hint="p_t = S_b · sigmoid(v_pᵀ tanh(W_p h_t)), one per query: (B, L).",
            )
        if dtype == torch.float64 and device.type == "cpu":
            what = f"predicted_positions(query (B={B}, L={L}, D={D}), float64, cpu), backward"
            lengths_t = torch.tensor(lengths)
            _gradients_equal(
                fn,
                what,
                (query, weight, v, lengths_t),
                ("query", "W_p", "v_p"),
                predicted_positions,
            )


# --------------------------------------------------------------------------------------------
# Part 2: local_weights
# --------------------------------------------------------------------------------------------

# (B, L, S, window, lengths): padding in most sentences; windows of 1, 2 and 3; one query; a
# sentence of one word.
_LOCAL_SHAPES = [
    (3, 5, 9, 2, (9, 6, 3)),
    (2, 4, 7, 1, (7, 4)),
    (1, 6, 10, 3, (10,)),
    (3, 1, 5, 2, (2, 5, 1)),
]


def _local_inputs(shape, seed, device, dtype, integer=False):
    """scores (B, L, S), centres (B, L) (real in [0, S_b], or the integers 0..L-1: local-m),
    mask (B, S), upstream gradient (B, L, S)."""
    B, L, S, _, lengths = shape
    scores = 3 * draw((B, L, S), seed, device, dtype)  # (B, L, S)
    if integer:
        centres = torch.arange(L, dtype=torch.float64).expand(B, L)  # (B, L): p_t = t
    else:
        g = torch.Generator().manual_seed(seed + 1)
        centres = torch.rand(B, L, generator=g, dtype=torch.float64) * torch.tensor(
            lengths, dtype=torch.float64
        ).unsqueeze(-1)  # (B, L): in [0, S_b]
    centres = centres.to(device, dtype).contiguous()
    mask = (torch.arange(S) < torch.tensor(lengths).unsqueeze(-1)).to(device)  # (B, S)
    return scores, centres, mask


def _rounded(scores, centres, mask, window, gaussian=False):
    """What rounding p_t to the nearest position first gives."""
    return local_weights(scores, centres.round(), mask, window, gaussian)


def _window_cases(fn: Subject):
    """For every device, dtype, shape and kind of centre: (scores, centres, mask, window,
    what, the student's weights with gaussian=False, (B, L, S))."""
    for device, dtype, seed, shape in cases(_LOCAL_SHAPES, _DTYPES):
        B, L, S, window, _ = shape
        for integer in (False, True):
            scores, centres, mask = _local_inputs(shape, seed, device, dtype, integer)
            kind = "p_t = t (local-m)" if integer else "real p_t"
            what = (
                f"local_weights(scores (B={B}, L={L}, S={S}), centres (B={B}, L={L}), {kind}, "
                f"window={window}, {label(dtype, device)})"
            )
            out = calling(what, fn, scores, centres, mask, window)
            yield scores, centres, mask, window, what, out, (B, L, S)


def _window_allowed(scores, centres, mask, window) -> torch.Tensor:
    """(B, L, S): True at the words within the window |s − p_t| <= D."""
    positions = torch.arange(scores.size(-1), device=scores.device, dtype=scores.dtype)
    distance = (positions - centres.unsqueeze(-1)).abs()  # (B, L, S)
    return (distance <= window) & mask.unsqueeze(1)


def _window_rows(weights, allowed, what) -> None:
    """Properties first: a tensor of the right shape, finite, >= 0, exactly 0 outside the allowed
    positions, all 0 for a query with none, rows that sum to 1 over them."""
    if not isinstance(weights, torch.Tensor):
        raise CheckFailed(f"{what}: expected a torch.Tensor, got {type(weights).__name__}.")
    if weights.shape != allowed.shape:
        raise CheckFailed(
            f"{what}: wrong shape {tuple(weights.shape)}, expected {tuple(allowed.shape)}: one "
            "weight per query and source position, (B, L, S)."
        )
    if bool(torch.isnan(weights).any()):
        raise CheckFailed(f"{what}: the weights contain NaN.")
    if bool((weights < 0).any()):
        raise CheckFailed(f"{what}: some weights are negative; a softmax is never negative.")
    any_allowed = allowed.any(dim=-1)  # (B, L)
    if bool((weights[~any_allowed] != 0).any()):
        raise CheckFailed(
            f"{what}: a query whose window holds no word must get weights 0 (it attends to "
            "nothing), not NaN and not a uniform row."
        )
    outside = weights.masked_select(~allowed.to(weights.device))
    if bool((outside != 0).any()):
        raise CheckFailed(
            f"{what}: a position outside the window, or a padded one, got a nonzero weight; "
            "they must get exactly 0: fill their scores with -inf before the softmax."
        )
    _, atol = TOLERANCES.get(weights.dtype, (0, 1e-3))
    sums = weights.double().sum(dim=-1)[any_allowed]
    if not torch.allclose(sums, torch.ones_like(sums), rtol=0, atol=10 * atol):
        raise CheckFailed(
            f"{what}: a query's weights do not sum to 1 over the words in its window; the "
            "softmax runs over those positions only (the others set to -inf first)."
        )


@check()
def check_local_window(fn: Subject) -> None:
    """local_weights(scores (B, L, S), centres (B, L), mask (B, S) or None, window D) ->
    (B, L, S): the softmax of the scores over the positions s (from 0) that are real words and lie
    in the window |s − p_t| <= D, both ends included, around the real-valued p_t (not rounded);
    exactly 0 elsewhere; all 0 for a query whose window holds no word, with finite gradients; the
    scores' dtype and device; gradients reach the scores."""
    for scores, centres, mask, window, what, out, (_, _, S) in _window_cases(fn):
        positions = torch.arange(S, device=scores.device, dtype=scores.dtype)
        distance = (positions - centres.unsqueeze(-1)).abs()  # (B, L, S)
        allowed = _window_allowed(scores, centres, mask, window)  # (B, L, S)
        expected = local_weights(scores, centres, mask, window)
        if close(out, local_weights(scores, centres, None, window)) and not close(out, expected):
            raise CheckFailed(
                f"{what}: padded positions inside the window got weight; a position counts only "
                "where the mask is True (a real word) *and* it lies in the window."
            )
        exclusive = (distance < window) & mask.unsqueeze(1)
        if bool((exclusive != allowed).any()) and isinstance(out, torch.Tensor):
            if out.shape == allowed.shape and bool(
                (out.masked_select(allowed & ~exclusive) == 0).all()
            ):
                raise CheckFailed(
                    f"{what}: the positions at distance exactly D from p_t get no weight; the "
                    "window includes both ends: |s − p_t| <= D."
                )
        rounded = _rounded(scores, centres, mask, window)
        if close(out, rounded) and not close(rounded, expected):
            raise CheckFailed(
                f"{what}: p_t is rounded to a whole position; the window is [p_t − D, p_t + D] "
                "around the real-valued p_t, so |s − p_t| <= D with p_t as it is."
            )
        _window_rows(out, allowed, what)
        compare(
            out,
            expected,
            what,
            hint="The softmax of the scores over the allowed positions of each query.",
        )

    for device, dtype, seed, shape in cases(_LOCAL_SHAPES[:2], _DTYPES):
        B, L, S, window, lengths = shape
        scores, centres, mask = _local_inputs(shape, seed + 20, device, dtype)
        centres = centres.clone()
        centres[-1] = lengths[-1] - 1 + window + 1.5  # past the end: no word in the window
        what = (
            f"local_weights(scores (B={B}, L={L}, S={S}), window={window}, "
            f"{label(dtype, device)}), the last sentence's queries centred past its end, where "
            "the window holds no word"
        )
        out = calling(what, fn, scores, centres, mask, window)
        allowed = _window_allowed(scores, centres, mask, window)
        _window_rows(out, allowed, what)
        compare(out, local_weights(scores, centres, mask, window), what)

    for device in check_devices():
        scores, centres, _ = _local_inputs(_LOCAL_SHAPES[0], 7, device, torch.float32)
        what = f"local_weights(scores (B=3, L=5, S=9), mask=None, window=2, {device.type})"
        out = calling(what, fn, scores, centres, None, 2)
        compare(
            out,
            local_weights(scores, centres, None, 2),
            what,
            hint="With mask=None every position is a word; only the window limits them.",
        )

        what = f"local_weights(scores in the hundreds, window=2, {device.type})"
        scores, centres, mask = _local_inputs(_LOCAL_SHAPES[0], 8, device, torch.float32)
        out = calling(what, fn, 300 * scores, centres, mask, 2)
        if isinstance(out, torch.Tensor) and not bool(torch.isfinite(out).all()):
            raise CheckFailed(
                f"{what}: the result is not finite; exp(x) / sum(exp(x)) overflows for large x, "
                "torch.softmax does not."
            )
        compare(out, local_weights(300 * scores, centres, mask, 2), what)

    # Gradients, with queries whose window holds no word (centres past the end of a sentence).
    scores, centres, mask = _local_inputs(_LOCAL_SHAPES[0], 9, "cpu", torch.float64)
    centres = centres.clone()
    centres[2] = 8.0  # sentence 2 has 3 words: a window of 2 around 8 holds none
    upstream = draw(scores.shape, 10)
    what = (
        "local_weights(float64, cpu), backward, with queries whose window holds no word "
        "(gaussian=False)"
    )
    _gradients_equal(fn, what, (scores, centres, mask, 2), ("scores",), local_weights,
                     grad_output=upstream)  # fmt: skip


def _gaussian(centres, S, window, dtype):
    positions = torch.arange(S, device=centres.device, dtype=dtype)
    distance = positions - centres.unsqueeze(-1)  # (B, L, S)
    return torch.exp(-(distance**2) / (2 * (window / 2) ** 2))  # (B, L, S)


@check()
def check_local_gaussian(fn: Subject) -> None:
    """local_weights(..., gaussian=True): the window's weights (the student's own, gaussian=False)
    times exp(−(s − p_t)² / (2σ²)) with σ = D / 2 around the real-valued p_t, not renormalised;
    gradients reach the centres through the Gaussian."""
    for scores, centres, mask, window, what, plain, (B, L, S) in _window_cases(fn):
        if not isinstance(plain, torch.Tensor) or plain.shape != (B, L, S):
            raise CheckFailed(
                f"{what}: with gaussian=False the result is not a (B, L, S) tensor, so the "
                "Gaussian cannot be checked on top of it; fix the window first."
            )
        what = f"{what}, gaussian=True"
        out = calling(what, fn, scores, centres, mask, window, gaussian=True)
        bump = _gaussian(centres, S, window, scores.dtype)  # (B, L, S)
        expected = plain * bump
        if close(out, plain) and not close(expected, plain):
            raise CheckFailed(f"{what}: the Gaussian is not applied; multiply by it.")
        wide = plain * _gaussian(centres, S, 2 * window, scores.dtype)
        if close(out, wide) and not close(expected, wide):
            raise CheckFailed(
                f"{what}: the Gaussian's width is D; the paper sets σ = D / 2, so the factor is "
                "exp(−(s − p_t)² / (2σ²)) = exp(−2 (s − p_t)² / D²)."
            )
        sums = expected.sum(dim=-1, keepdim=True)
        renormalised = torch.where(sums > 0, expected / sums.clamp_min(1e-30), expected)
        if close(out, renormalised) and not close(expected, renormalised):
            raise CheckFailed(
                f"{what}: the weights are renormalised after the Gaussian; the paper multiplies "
                "the softmax's weights by it and leaves them so (they then sum to less than 1)."
            )
        rounded = plain * _gaussian(centres.round(), S, window, scores.dtype)
        if close(out, rounded) and not close(expected, rounded):
            raise CheckFailed(
                f"{what}: the Gaussian is centred on p_t rounded to a whole position; centre it "
                "on the real-valued p_t (that is how the gradient reaches p_t)."
            )
        compare(
            out,
            expected,
            what,
            hint="The weights of the window (gaussian=False) times exp(−(s − p_t)² / (2σ²)), "
            "σ = D / 2.",
        )

    # The gradient that reaches the centres, from the student's own window weights.
    scores, centres, mask = _local_inputs(_LOCAL_SHAPES[0], 11, "cpu", torch.float64)
    window = _LOCAL_SHAPES[0][3]
    upstream = draw(scores.shape, 12)  # (B, L, S)
    what = "local_weights(float64, cpu, gaussian=True), backward"
    plain = calling(what, fn, scores, centres, mask, window)
    _, grads, _ = calling(
        what,
        fn.gradients,
        (scores, centres, mask, window),
        {"gaussian": True},
        grad_output=upstream,
    )
    got = grads[1] if len(grads) > 1 else None
    if got is None:
        raise CheckFailed(
            f"{what}: no gradient reaches the centres; the Gaussian must be computed from p_t "
            "with torch operations (p_t learns where to look through it)."
        )
    S = scores.size(-1)
    distance = torch.arange(S, dtype=torch.float64) - centres.unsqueeze(-1)  # (B, L, S)
    sigma = window / 2
    d_bump = _gaussian(centres, S, window, torch.float64) * distance / sigma**2  # d/dp_t
    expected = (upstream * plain * d_bump).sum(dim=-1)  # (B, L)
    compare(got, expected, f"{what}, the gradient of the centres")


# --------------------------------------------------------------------------------------------
# Part 3: LuongAttention with a window
# --------------------------------------------------------------------------------------------

# (score, D, attn_dim passed or None, window): local-p for every score; one global layer.
_LAYERS = [
    ("general", 8, None, 2),
    ("dot", 8, None, 1),
    ("concat", 6, 5, 3),
    ("general", 8, 4, None),
]
# (B, L, S, source lengths): padding in most sentences, one query, one source word.
_BATCHES = [(3, 4, 9, (9, 5, 2)), (2, 1, 6, (3, 6)), (1, 3, 1, (1,))]


def _layer_label(score, D, attn_dim, window) -> str:
    extra = "" if attn_dim is None else f", attn_dim={attn_dim}"
    extra += "" if window is None else f", window={window}"
    return f'LuongAttention({D}, score="{score}"{extra})'


def _build(cls: Subject, score, D, attn_dim, window, seed):
    """The student's layer and the reference with the student's parameters copied in."""
    title = _layer_label(score, D, attn_dim, window)
    kwargs = {"score": score}
    if attn_dim is not None:
        kwargs["attn_dim"] = attn_dim
    if window is not None:
        kwargs["window"] = window
    module = calling(title, cls.seeded(seed), D, **kwargs)
    if not isinstance(module, Subject):
        raise CheckFailed(f"{title} must construct an nn.Module.")
    A = attn_dim or D
    layers = {"W_c": ("Linear", (D, 2 * D))}
    if score == "general":
        layers["W_a"] = ("Linear", (D, D))
    elif score == "concat":
        layers["W_a"] = ("Linear", (A, 2 * D))
    if window is not None:
        layers["W_p"] = ("Linear", (A, D))
    state = module_state(module, title, layers)
    for name in layers:
        if f"{name}.bias" in state:
            raise CheckFailed(f"{title}.{name} must not have a bias (bias=False), as in the paper.")
    vectors = (["v_a"] if score == "concat" else []) + (["v_p"] if window is not None else [])
    for name in vectors:
        v = state.get(name)
        if v is None or tuple(v.shape) != (A,):
            got = None if v is None else tuple(v.shape)
            raise CheckFailed(
                f"{title} must have a parameter {name} of shape ({A},) (attn_dim, or hidden_size "
                f"when attn_dim is None), not {got}."
            )
    reference = LuongAttention(D, score, attn_dim, window)
    reference.load_state_dict({name: state[name] for name in reference.state_dict()})
    return module, reference, title


def _inputs(B, L, S, lengths, D, seed, device, dtype):
    query = draw((B, L, D), seed, device, dtype)  # (B, L, D)
    keys = draw((B, S, D), seed + 1, device, dtype)  # (B, S, D), padding too
    mask = (torch.arange(S) < torch.tensor(lengths).unsqueeze(-1)).to(device)  # (B, S)
    return query, keys, mask


def _layer_cases(cls: Subject):
    for device in check_devices():
        for seed, (score, D, attn_dim, window) in enumerate(_LAYERS):
            module, reference, title = _build(cls, score, D, attn_dim, window, seed)
            for dtype in _DTYPES:
                module.to(device, dtype)
                reference.to(device, dtype)
                for B, L, S, lengths in _BATCHES:
                    q, k, mask = _inputs(B, L, S, lengths, D, seed * 7 + S, device, dtype)
                    where = (
                        f"(query (B={B}, L={L}, D={D}), keys (B={B}, S={S}, D={D}), "
                        f"{label(dtype, device)})"
                    )
                    yield module, reference, title, window, q, k, mask, where


@check(stand_ins=_PARTS)
def check_local_attention_weights(cls: Subject) -> None:
    """LuongAttention(hidden_size, score="general", attn_dim=None, window=None): W_a (per score),
    v_a (concat), W_p (nn.Linear D -> A) and v_p ((A,)) with a window, W_c (nn.Linear 2D -> D),
    no biases. attention_weights(query (B, L, D), keys (B, S, D), mask=None) -> (B, L, S): with a
    window D, local_weights(scores, p_t, mask, D, gaussian=True) around p_t =
    predicted_positions(query, W_p, v_p, S_b) with S_b each sentence's number of words (S without
    a mask); without, the global softmax over the real words. A sentence that is all padding gets
    zeros; gradients reach the query, the keys and every parameter, finite."""
    for module, reference, title, _, q, k, mask, where in _layer_cases(cls):
        weights = module.method("attention_weights")
        with torch.no_grad():
            what = f"{title}.attention_weights{where}, mask (B, S)"
            w = calling(what, weights, q, k, mask)
            expected = reference.attention_weights(q, k, mask)
            _layer_diagnosis(w, expected, reference, q, k, mask, what)
            compare(w, expected, what)
            what = f"{title}.attention_weights{where}, mask=None"
            w = calling(what, weights, q, k)
            compare(
                w,
                reference.attention_weights(q, k),
                what,
                hint="Without a mask every sentence has S words: S_b = S.",
            )

    for seed, (score, D, attn_dim, window) in enumerate(_LAYERS):
        module, reference, title = _build(cls, score, D, attn_dim, window, seed + 300)
        module.to("cpu", torch.float64)
        reference.to(dtype=torch.float64)
        q, k, mask = _inputs(3, 2, 5, (5, 0, 2), D, seed + 300, "cpu", torch.float64)
        upstream = draw((3, 2, 5), seed + 400)  # (B, L, S)
        what = f"{title}.attention_weights, backward, with a sentence that is all padding"
        _, grads, params = calling(
            what,
            module.gradients,
            (q, k),
            {"mask": mask},
            params=True,
            grad_output=upstream,
            method="attention_weights",
        )
        inputs = [t.clone().requires_grad_() for t in (q, k)]
        reference.zero_grad()
        (reference.attention_weights(*inputs, mask) * upstream).sum().backward()
        for name, param in reference.named_parameters():
            if param.grad is not None and params.get(name) is None:
                raise CheckFailed(
                    f"{what}: no gradient arrives at {name}; compute the weights from it with "
                    "torch operations only (no .detach(), .item() or torch.no_grad())."
                )
        for name, got, t in zip(("query", "keys"), grads, inputs, strict=True):
            _finite_and_equal(got, t.grad, f"{what}: the gradient of the {name}")
        for name, param in reference.named_parameters():
            if param.grad is not None:
                _finite_and_equal(params.get(name), param.grad, f"{what}: the gradient of {name}")


def _layer_diagnosis(w, expected, reference, q, k, mask, what) -> None:
    """Name the likely mistakes of the layer's weights before the values are compared."""
    if not isinstance(w, torch.Tensor) or w.shape != expected.shape or close(w, expected):
        return
    scores = reference.scores(q, k)  # (B, L, S)
    padded = not bool(mask.all())
    if reference.window is None:
        if padded and close(w, scores.softmax(dim=-1)):
            raise CheckFailed(
                f"{what}: the padding is not masked. Positions where the mask is False must get "
                "weight exactly 0: fill their scores with -inf before the softmax."
            )
        return
    allowed = mask.unsqueeze(-2)  # (B, 1, S)
    empty = ~allowed.any(dim=-1, keepdim=True)
    global_weights = (
        scores.masked_fill(~allowed, float("-inf")).masked_fill(empty, 0.0).softmax(dim=-1)
    ).masked_fill(empty, 0.0)
    if close(w, global_weights):
        raise CheckFailed(
            f"{what}: the window is ignored: these are global attention's weights. With "
            "window=D they are local_weights(scores, p_t, mask, D, gaussian=True) around the "
            "predicted p_t."
        )
    lengths = mask.sum(dim=-1)  # (B,)
    centres = predicted_positions(q, reference.W_p.weight, reference.v_p, lengths)  # (B, L)
    if close(w, local_weights(scores, centres, mask, reference.window)):
        raise CheckFailed(
            f"{what}: the weights have no Gaussian; local-p attention multiplies them by it "
            "(local_weights(..., gaussian=True))."
        )
    padded_width = torch.full_like(lengths, k.size(1))
    wide = predicted_positions(q, reference.W_p.weight, reference.v_p, padded_width)
    if bool((lengths != k.size(1)).any()) and close(
        w, local_weights(scores, wide, mask, reference.window, gaussian=True)
    ):
        raise CheckFailed(
            f"{what}: the positions are predicted with the padded width S for every sentence; "
            "S_b is each sentence's own number of words, mask.sum(-1)."
        )
    flipped = local_weights(scores, centres, ~mask, reference.window, gaussian=True)
    if close(w, flipped):
        raise CheckFailed(
            f"{what}: the mask is used the wrong way round; it is True at the real words, where "
            "attention is allowed."
        )


def _finite_and_equal(got, want, what) -> None:
    if got is None:
        raise CheckFailed(f"{what}: no gradient arrives; use torch operations only.")
    if not bool(torch.isfinite(got).all()):
        raise CheckFailed(
            f"{what} is not finite. A sentence that is all padding attends to nothing, and must "
            "not produce NaN in the backward pass either (chapter 2, 'Softmax over the source "
            "positions, padding masked out')."
        )
    compare(got, want, what)


@check(stand_ins=_PARTS)
def check_local_attention_output(cls: Subject) -> None:
    """LuongAttention.forward(query, keys, mask=None) -> h̃ = tanh(W_c [c; h]) (B, L, D), with
    c = the student's own attention_weights times the keys (not renormalised); finite gradients
    with a sentence that is all padding; an unknown score or a window below 1 raises ValueError."""
    for module, reference, title, _, q, k, mask, where in _layer_cases(cls):
        with torch.no_grad():
            what = f"{title}.attention_weights{where}, mask (B, S)"
            w = calling(what, module.method("attention_weights"), q, k, mask)
            if not isinstance(w, torch.Tensor) or w.shape != (*q.shape[:-1], k.size(1)):
                raise CheckFailed(
                    f"{what}: not a (B, L, S) tensor, so forward cannot be checked on top of it; "
                    "fix attention_weights first."
                )
            what = f"{title}{where}, mask (B, S)"
            out = calling(what, module, q, k, mask)
            context = w @ k  # (B, L, D)
            W_c = reference.W_c.weight  # (D, 2D)
            expected = torch.tanh(torch.cat([context, q], dim=-1) @ W_c.T)  # (B, L, D)
            if isinstance(out, torch.Tensor) and out.shape == q.shape:
                if close(out, torch.cat([context, q], dim=-1) @ W_c.T):
                    raise CheckFailed(f"{what}: there is no tanh; h̃_t = tanh(W_c [c_t; h_t]).")
                if close(out, torch.tanh(torch.cat([q, context], dim=-1) @ W_c.T)):
                    raise CheckFailed(
                        f"{what}: the concatenation is in the wrong order; h̃_t = tanh(W_c [c_t; "
                        "h_t]), the context vector first, then the query."
                    )
                total = w.sum(dim=-1, keepdim=True)
                renormalised = torch.where(total > 0, w / total.clamp_min(1e-30), w) @ k
                alt = torch.tanh(torch.cat([renormalised, q], dim=-1) @ W_c.T)
                if close(out, alt) and not close(out, expected):
                    raise CheckFailed(
                        f"{what}: the context is averaged with renormalised weights; c_t = "
                        "Σ_s a_t(s) h̄_s with the weights as attention_weights returns them."
                    )
            compare(
                out,
                expected,
                what,
                hint="h̃_t = tanh(W_c [c_t; h_t]), c_t = attention_weights(...) @ keys.",
            )

    for seed, (score, D, attn_dim, window) in enumerate(_LAYERS):
        module, _, title = _build(cls, score, D, attn_dim, window, seed + 500)
        module.to("cpu", torch.float64)
        q, k, mask = _inputs(3, 2, 5, (5, 0, 2), D, seed + 500, "cpu", torch.float64)
        upstream = draw((3, 2, D), seed + 600)  # (B, L, D)
        what = f"{title}, backward, with a sentence that is all padding"
        _, grads, params = calling(
            what, module.gradients, (q, k), {"mask": mask}, params=True, grad_output=upstream
        )
        # Only what forward adds to the weights: their own gradients are the weights' cell's.
        own = [("W_c", params.get("W_c.weight"))]
        for name, got in [*zip(("query", "keys"), grads, strict=True), *own]:
            if got is None:
                raise CheckFailed(f"{what}: no gradient reaches {name}; use torch operations only.")
            if not bool(torch.isfinite(got).all()):
                raise CheckFailed(
                    f"{what}: the gradient of {name} is not finite. A sentence that is all "
                    "padding attends to nothing, and must not produce NaN in the backward pass "
                    "either."
                )
    raises(ValueError, 'LuongAttention(8, score="cosine")', cls, 8, score="cosine")
    raises(ValueError, "LuongAttention(8, window=0)", cls, 8, window=0)
