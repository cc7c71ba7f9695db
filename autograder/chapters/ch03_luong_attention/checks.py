"""Chapter 3's checks: what the hidden tests of ``solutions/ch03_luong_attention`` call.

Each check draws its inputs from fixed seeds, runs on the CPU and on CUDA when there is one, in
float32 and float64, and tests what the exercise's instructions promise, properties first (a
tensor of the right shape, dtype and device; weights that sum to 1 over the real words; padding
at exactly 0; no NaN, forward or backward), values after, so that a failure names the property.
``LuongAttention`` is checked with the reference score functions standing in for the student's
(``stand_ins``), so that a mistake in a score costs that score's part only.

Not here: the reference (``reference.py``) and the known-wrong implementations (``wrong.py``).
"""

from __future__ import annotations

import math

import torch

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

from .reference import LuongAttention, concat_score, dot_score, general_score

__all__ = ["check_dot_score", "check_general_score", "check_concat_score",
           "check_luong_attention"]  # fmt: skip

# Shapes as (batch dims, L, S, Dq, Dk, A): no batch, one batch dim, two, one query, one key,
# Dq != Dk (the dot score uses Dq for both).
_SHAPES = [
    ((), 4, 6, 8, 8, 8),
    ((3,), 5, 7, 8, 8, 6),
    ((2, 3), 3, 4, 4, 4, 5),
    ((2,), 1, 9, 6, 10, 7),
    ((2,), 6, 1, 16, 12, 3),
]
_DTYPES = (torch.float32, torch.float64)
_SCORES = {"dot_score": dot_score, "general_score": general_score, "concat_score": concat_score}

_PAIRS_HINT = (
    "There is one score per (query, key) pair, (..., L, S): row l holds query l's scores against "
    "the S keys; transpose only the keys' last two dimensions."
)


def _draw(shape, seed, device, dtype, same_width=False):
    """query (..., L, Dq), keys (..., S, Dk or Dq), W_general (Dq, Dk), W_concat (A, Dq + Dk),
    v (A,) and an upstream gradient for the scores (..., L, S), drawn from `seed`."""
    batch, L, S, Dq, Dk, A = shape
    Dk = Dq if same_width else Dk
    g = torch.Generator().manual_seed(seed)

    def draw(*size, scale=1.0):
        return torch.randn(*size, generator=g, dtype=torch.float64) * scale

    tensors = (
        draw(*batch, L, Dq),
        draw(*batch, S, Dk),
        draw(Dq, Dk, scale=1 / math.sqrt(Dk)),
        draw(A, Dq + Dk, scale=1 / math.sqrt(Dq + Dk)),
        draw(A),
        draw(*batch, L, S),
    )
    return [t.to(device=device, dtype=dtype) for t in tensors]


def _where(device, dtype, shape, same_width=False) -> str:
    batch, L, S, Dq, Dk, _ = shape
    Dk = Dq if same_width else Dk
    lead = "".join(f"{b}, " for b in batch)
    dtype = str(dtype).removeprefix("torch.")
    return f"(query ({lead}L={L}, Dq={Dq}), keys ({lead}S={S}, Dk={Dk}), {dtype}, {device.type})"


def _close(a, b, dtype=None) -> bool:
    if not isinstance(a, torch.Tensor) or a.shape != b.shape or a.device != b.device:
        return False
    rtol, atol = TOLERANCES[dtype or b.dtype]
    return bool(torch.allclose(a.to(b.dtype), b, rtol, atol))


def _check_gradients(fn: Subject, what: str, args: tuple, names: tuple, reference, grad_output):
    """The gradients of <fn(*args), grad_output> with respect to every input equal the
    reference's."""
    _, grads, _ = calling(what, fn.gradients, args, grad_output=grad_output)
    _, expected, _ = LocalSubject(reference).gradients(args, grad_output=grad_output)
    for name, got, want in zip(names, grads, expected, strict=True):
        if got is None:
            raise CheckFailed(f"{what}: no gradient reaches the {name}; use torch operations only.")
        compare(got, want, f"{what}, gradient with respect to the {name}")


@check()
def check_dot_score(fn: Subject) -> None:
    """dot_score(query, keys) -> (..., L, S): h_tᵀ h̄_s for every pair, unscaled, in the inputs'
    dtype and on their device, differentiable."""
    for device, dtype, seed, shape in cases(_SHAPES, _DTYPES):
        q, k, _, _, _, g = _draw(shape, seed, device, dtype, same_width=True)
        where = _where(device, dtype, shape, same_width=True)
        what = f"dot_score{where}"
        out = calling(what, fn, q, k)
        expected = dot_score(q, k)  # (..., L, S)
        if _close(out, expected / math.sqrt(shape[3])) and not _close(out, expected):
            raise CheckFailed(
                f"{what}: the scores are divided by sqrt(D). Luong's dot score is the plain dot "
                "product h_tᵀ h̄_s; the scaling is chapter 4's."
            )
        if _close(out, expected.softmax(dim=-1)) and shape[2] > 1:
            raise CheckFailed(
                f"{what}: these are softmax weights; return the raw scores (the softmax comes "
                "later, in LuongAttention.attention_weights)."
            )
        compare(out, expected, what, hint=_PAIRS_HINT)
        if dtype == torch.float64 and device.type == "cpu":
            _check_gradients(fn, f"{what}, backward", (q, k), ("query", "keys"), dot_score, g)


@check()
def check_general_score(fn: Subject) -> None:
    """general_score(query, keys, weight) -> (..., L, S): h_tᵀ W_a h̄_s with W_a of shape
    (Dq, Dk), in the inputs' dtype and on their device, differentiable."""
    for device, dtype, seed, shape in cases(_SHAPES, _DTYPES):
        q, k, W, _, _, g = _draw(shape, seed, device, dtype)
        where = _where(device, dtype, shape)
        what = f"general_score{where}"
        out = calling(what, fn, q, k, W)
        expected = general_score(q, k, W)  # (..., L, S)
        if shape[3] == shape[4]:
            if _close(out, general_score(q, k, W.T)):
                raise CheckFailed(
                    f"{what}: W_a is used transposed. The score is h_tᵀ W_a h̄_s with W_a of "
                    "shape (Dq, Dk): the query multiplies W_a from the left."
                )
            if _close(out, dot_score(q, k)):
                raise CheckFailed(f"{what}: the weight W_a is not used; this is the dot score.")
        compare(out, expected, what, hint=_PAIRS_HINT)
        if dtype == torch.float64 and device.type == "cpu":
            _check_gradients(
                fn, f"{what}, backward", (q, k, W), ("query", "keys", "weight"), general_score, g
            )


@check()
def check_concat_score(fn: Subject) -> None:
    """concat_score(query, keys, weight, v) -> (..., L, S): v_aᵀ tanh(W_a [h_t; h̄_s]) with W_a of
    shape (A, Dq + Dk), its first Dq columns for the query; any L and S; in the inputs' dtype and
    on their device, differentiable."""
    for device, dtype, seed, shape in cases(_SHAPES, _DTYPES):
        Dq = shape[3]
        q, k, _, W, v, g = _draw(shape, seed, device, dtype)
        where = _where(device, dtype, shape)
        what = f"concat_score{where}"
        out = calling(what, fn, q, k, W, v)
        expected = concat_score(q, k, W, v)  # (..., L, S)
        linear = (q @ W[:, :Dq].T).unsqueeze(-2) + (k @ W[:, Dq:].T).unsqueeze(-3)  # (.., L, S, A)
        if _close(out, linear @ v):
            raise CheckFailed(
                f"{what}: there is no tanh. The score is v_aᵀ tanh(W_a [h_t; h̄_s]): without the "
                "tanh it is a sum of a term of the query and a term of the key, and the softmax "
                "over the keys no longer depends on the query at all."
            )
        if _close(out, torch.tanh(linear @ v)):
            raise CheckFailed(
                f"{what}: the tanh is applied after v_a; it goes inside: v_aᵀ tanh(W_a [h_t; h̄_s])."
            )
        if _close(out, torch.tanh(linear).sum(dim=-1)):
            raise CheckFailed(f"{what}: v_a is not used; the score is v_aᵀ tanh(W_a [h_t; h̄_s]).")
        if Dq == shape[4]:
            swapped = torch.cat([W[:, Dq:], W[:, :Dq]], dim=1)  # (A, Dk + Dq)
            if _close(out, concat_score(q, k, swapped, v)):
                raise CheckFailed(
                    f"{what}: the halves of W_a are swapped. The concatenation is [h_t; h̄_s]: "
                    "W_a's first Dq columns multiply the query, the last Dk the key."
                )
        compare(out, expected, what, hint=_PAIRS_HINT)
        if dtype == torch.float64 and device.type == "cpu":
            _check_gradients(
                fn, f"{what}, backward", (q, k, W, v), ("query", "keys", "weight", "v"),
                concat_score, g,
            )


# LuongAttention ---------------------------------------------------------------------------------

# (score, D, attn_dim passed or None): every score, concat with and without its own width.
_LAYERS = [("dot", 8, None), ("general", 8, None), ("concat", 8, 5), ("concat", 6, None)]
# (B, L, S, source lengths): padding in most sentences, one query, one source word.
_BATCHES = [(3, 4, 6, (6, 3, 1)), (2, 1, 5, (2, 5)), (1, 3, 1, (1,))]


def _layer_label(score, D, attn_dim) -> str:
    extra = "" if attn_dim is None else f", attn_dim={attn_dim}"
    return f'LuongAttention({D}, score="{score}"{extra})'


def _build(cls: Subject, score, D, attn_dim, seed):
    """The student's layer and the reference with the student's parameters copied in."""
    label = _layer_label(score, D, attn_dim)
    kwargs = {"score": score} if attn_dim is None else {"score": score, "attn_dim": attn_dim}
    module = calling(label, cls.seeded(seed), D, **kwargs)
    if not isinstance(module, Subject):
        raise CheckFailed(f"{label} must construct an nn.Module.")
    A = attn_dim or D
    layers = {"W_c": ("Linear", (D, 2 * D))}
    if score == "general":
        layers["W_a"] = ("Linear", (D, D))
    elif score == "concat":
        layers["W_a"] = ("Linear", (A, 2 * D))
    state = module_state(module, label, layers)
    for name in layers:
        if f"{name}.bias" in state:
            raise CheckFailed(f"{label}.{name} must not have a bias (bias=False), as in the paper.")
    if score == "concat":
        v = state.get("v_a")
        if v is None or tuple(v.shape) != (A,):
            got = None if v is None else tuple(v.shape)
            raise CheckFailed(
                f"{label} must have a parameter v_a of shape ({A},) (attn_dim, or hidden_size "
                f"when attn_dim is None), not {got}."
            )
    reference = LuongAttention(D, score, attn_dim)
    reference.load_state_dict({name: state[name] for name in reference.state_dict()})
    return module, reference, label


def _inputs(B, L, S, lengths, D, seed, device, dtype):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(B, L, D, generator=g, dtype=torch.float64)  # (B, L, D)
    keys = torch.randn(B, S, D, generator=g, dtype=torch.float64)  # (B, S, D), padding too
    grad_output = torch.randn(B, L, D, generator=g, dtype=torch.float64)  # (B, L, D)
    mask = torch.arange(S) < torch.tensor(lengths).unsqueeze(-1)  # (B, S), True = a word
    move = {"device": device, "dtype": dtype}
    return query.to(**move), keys.to(**move), mask.to(device), grad_output.to(**move)


def _weights_diagnosis(w, reference, query, keys, mask, what) -> None:
    """Name the classic mistakes before the generic properties are checked."""
    if not isinstance(w, torch.Tensor) or w.shape != (*query.shape[:-1], keys.size(-2)):
        return
    if mask.all(dim=-1).all():
        return
    if _close(w, reference.attention_weights(query, keys)):
        raise CheckFailed(
            f"{what}: the padding is not masked. Positions where the mask is False must get "
            "weight exactly 0: fill their scores with -inf before the softmax."
        )
    flipped = ~mask | ~mask.any(dim=-1, keepdim=True)  # (B, S)
    if _close(w, reference.attention_weights(query, keys, flipped)):
        raise CheckFailed(
            f"{what}: the mask is used the wrong way round; it is True at the real words, where "
            "attention is allowed."
        )
    wf = w.double().nan_to_num(0.0)
    allowed = mask.unsqueeze(1).expand_as(wf)  # (B, L, S)
    columns = allowed.any(dim=0)  # (L, S)
    if w.size(0) > 1 and torch.allclose(wf.sum(dim=0)[columns], torch.ones(()).double(), atol=1e-4):
        raise CheckFailed(
            f"{what}: the softmax runs over the batch (dimension 0): each source position's "
            "weights sum to 1 across the sentences. It must run over the source positions of each "
            "sentence, the last dimension."
        )
    columns = allowed.any(dim=1)  # (B, S)
    if w.size(1) > 1 and torch.allclose(wf.sum(dim=1)[columns], torch.ones(()).double(), atol=1e-4):
        raise CheckFailed(
            f"{what}: the softmax runs over the target steps (dimension 1). It must run over the "
            "source positions, the last dimension."
        )


@check(stand_ins=_SCORES)
def check_luong_attention(cls: Subject) -> None:
    """LuongAttention(hidden_size, score="general", attn_dim=None).

    W_a (nn.Linear, D -> D for general, 2D -> A for concat), v_a ((A,), concat only) and W_c
    (nn.Linear 2D -> D), no biases. attention_weights(query (B, L, D), keys (B, S, D), mask=None)
    -> (B, L, S): softmax over the source positions of the score, exactly 0 where the (B, S) mask
    is False, all 0 for a sentence with no True, independent of the other sentences of the batch.
    forward(query, keys, mask=None) -> tanh(W_c [c; h]) (B, L, D). Finite gradients, with a
    sentence that is all padding too. Unknown scores raise ValueError.
    """
    for device in check_devices():
        for seed, (score, D, attn_dim) in enumerate(_LAYERS):
            module, reference, label = _build(cls, score, D, attn_dim, seed)
            module.to(device)
            reference.to(device)
            for B, L, S, lengths in _BATCHES:
                q, k, mask, _ = _inputs(B, L, S, lengths, D, seed, device, torch.float32)
                where = f"(query (B={B}, L={L}, D={D}), keys (B={B}, S={S}, D={D}), {device.type})"
                weights = module.method("attention_weights")
                with torch.no_grad():
                    expected = reference.attention_weights(q, k, mask)  # (B, L, S)
                    what = f"{label}.attention_weights{where}, mask (B, S)"
                    w = calling(what, weights, q, k, mask)
                    _weights_diagnosis(w, reference, q, k, mask, what)
                    attention_rows(w, mask.unsqueeze(1), what)
                    compare(w, expected, what)

                    what = f"{label}.attention_weights{where}, mask=None"
                    w = calling(what, weights, q, k)
                    attention_rows(w, None, what)
                    compare(w, reference.attention_weights(q, k), what)

                    what = f"{label}{where}, mask (B, S)"
                    out = calling(what, module, q, k, mask)
                    _forward_diagnosis(out, reference, q, k, mask, what)
                    compare(out, reference(q, k, mask), what)
                    what = f"{label}{where}, mask=None"
                    compare(calling(what, module, q, k), reference(q, k), what)

            _check_batch_independence(module, label, D, seed, device)
            _check_empty_sentence(module, reference, label, D, seed, device)

    _check_gradients_of_layer(cls)
    module, reference, label = _build(cls, "concat", 6, 4, 11)
    module.to("cpu", torch.float64)
    reference.to(dtype=torch.float64)
    q, k, mask, _ = _inputs(2, 3, 5, (5, 2), 6, 11, "cpu", torch.float64)
    what = f"{label} in float64, mask (B, S)"
    with torch.no_grad():
        compare(calling(what, module, q, k, mask), reference(q, k, mask), what)
    raises(ValueError, 'LuongAttention(8, score="cosine")', cls, 8, score="cosine")


def _forward_diagnosis(out, reference, query, keys, mask, what) -> None:
    if not isinstance(out, torch.Tensor) or out.shape != query.shape:
        if isinstance(out, torch.Tensor):
            raise CheckFailed(
                f"{what}: wrong shape {tuple(out.shape)}; forward returns h̃, one vector of width "
                f"D per query: {tuple(query.shape)}."
            )
        return
    context = reference.attention_weights(query, keys, mask) @ keys  # (B, L, D)
    W_c = reference.W_c.weight  # (D, 2D)
    if _close(out, torch.cat([context, query], dim=-1) @ W_c.T):
        raise CheckFailed(f"{what}: there is no tanh; h̃_t = tanh(W_c [c_t; h_t]).")
    if _close(out, torch.tanh(torch.cat([query, context], dim=-1) @ W_c.T)):
        raise CheckFailed(
            f"{what}: the concatenation is in the wrong order; h̃_t = tanh(W_c [c_t; h_t]), the "
            "context vector first, then the query."
        )


def _check_batch_independence(module: Subject, label, D, seed, device) -> None:
    """A sentence's weights and output are the same alone, without padding, as in a batch."""
    q, k, mask, _ = _inputs(3, 4, 6, (6, 3, 1), D, seed + 100, device, torch.float32)
    what = f"{label} on a sentence of 3 words alone and padded to 6 in a batch of 3"
    with torch.no_grad():
        batch_w = calling(what, module.method("attention_weights"), q, k, mask)
        alone_w = calling(what, module.method("attention_weights"), q[1:2], k[1:2, :3])
        batch_out = calling(what, module, q, k, mask)
        alone_out = calling(what, module, q[1:2], k[1:2, :3])
    if not (_close(batch_w[1:2, :, :3], alone_w) and _close(batch_out[1:2], alone_out)):
        raise CheckFailed(
            f"{what}: the results differ. A sentence's weights must depend on its own words only: "
            "a softmax over its source positions (the last dimension), with the padding masked."
        )


def _check_empty_sentence(module: Subject, reference, label, D, seed, device) -> None:
    """A sentence whose mask is all False attends to nothing: zeros, not NaN."""
    q, k, mask, _ = _inputs(3, 2, 4, (4, 0, 2), D, seed + 200, device, torch.float32)
    what = f"{label} with a sentence that is all padding (its mask all False)"
    with torch.no_grad():
        w = calling(what, module.method("attention_weights"), q, k, mask)
        attention_rows(w, mask.unsqueeze(1), what)
        out = calling(what, module, q, k, mask)
        compare(out, reference(q, k, mask), what)


def _check_gradients_of_layer(cls: Subject) -> None:
    """Gradients reach the query, the keys and every parameter, finite with a sentence that is
    all padding, and equal to the reference's."""
    for seed, (score, D, attn_dim) in enumerate(_LAYERS):
        module, reference, label = _build(cls, score, D, attn_dim, seed + 300)
        module.to("cpu", torch.float64)
        reference.to(dtype=torch.float64)
        q, k, mask, grad_output = _inputs(3, 2, 5, (5, 0, 2), D, seed + 300, "cpu", torch.float64)
        for method, upstream in ((None, grad_output), ("attention_weights", None)):
            name = f"{label}.{method or 'forward'}"
            what = f"{name}, backward, with a sentence that is all padding"
            if upstream is None:
                g = torch.Generator().manual_seed(seed + 400)
                upstream = torch.randn(3, 2, 5, generator=g, dtype=torch.float64)  # (B, L, S)
            _, grads, params = calling(
                what, module.gradients, (q, k), {"mask": mask}, params=True,
                grad_output=upstream, method=method,
            )
            inputs = [t.clone().requires_grad_() for t in (q, k)]
            reference.zero_grad()
            fn = reference if method is None else reference.attention_weights
            (fn(*inputs, mask) * upstream).sum().backward()
            for input_name, got, t in zip(("query", "keys"), grads, inputs, strict=True):
                _finite_and_equal(got, t.grad, f"{what}: the gradient of the {input_name}")
            for param_name, param in reference.named_parameters():
                if param.grad is None:
                    continue
                _finite_and_equal(params.get(param_name), param.grad,
                                  f"{what}: the gradient of {param_name}")


def _finite_and_equal(got, want, what) -> None:
    if got is None:
        raise CheckFailed(f"{what}: no gradient arrives; use torch operations only.")
    if not bool(torch.isfinite(got).all()):
        raise CheckFailed(
            f"{what} is not finite. A sentence that is all padding attends to nothing, and must "
            "not produce NaN in the backward pass either (chapter 4, 'A fully masked row')."
        )
    compare(got, want, what)
