"""Chapter 5's checks: what the hidden tests of ``solutions/ch05_multi_head_attention`` call.

Each check draws its inputs from fixed seeds, runs on the CPU and on CUDA when there is one, and
tests what the exercise's instructions promise, properties first (shape; which features go to which
head; each query attending over positions, not over heads; masked keys at exactly 0; rows that sum
to 1; no NaN for a fully masked query), values after, so that a failure names the property.
``MultiHeadAttention`` is checked with the reference ``split_heads`` and ``merge_heads`` standing
in for the student's, so that a mistake in either costs only its own part; its output and
head-averaged weights are compared with the reference's and with ``nn.MultiheadAttention``'s once
the weights are copied.

Not checked: gradients through ``MultiHeadAttention``. The engine can only differentiate a call
that returns one tensor, and the layer returns ``(output, weights)`` as torch's does; the visible
tests check that gradients reach the four projections.
"""

from __future__ import annotations

import math

import torch

from autograder.toolkit import (
    TOLERANCES,
    CheckFailed,
    Subject,
    attention_rows,
    calling,
    check,
    check_devices,
    compare,
    module_state,
    raises,
)

from .reference import MultiHeadAttention, combine_masks, merge_heads, split_heads, to_torch

__all__ = ["check_split_heads", "check_merge_heads", "check_multi_head_attention"]

# (B, L, E, H): several heads, one head, one feature a head (D = 1), one position.
_SPLIT_SHAPES = [(2, 5, 12, 3), (3, 4, 16, 4), (2, 3, 6, 1), (1, 2, 8, 8), (2, 1, 10, 2)]
_DTYPES = (torch.float32, torch.float64)

_SPLIT_HINT = (
    "Head h holds features h·D to (h+1)·D - 1 of every position: out[b, h, l] is "
    "x[b, l, h·D:(h+1)·D] (view the last dimension as (H, D), then move H before L)."
)
_MERGE_HINT = (
    "merge_heads undoes split_heads: out[b, l, h·D:(h+1)·D] is x[b, h, l], head 0 first "
    "(move H back after L, then flatten (H, D) into E)."
)


def _draw(shape, seed, device, dtype):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


def _label(dtype, device) -> str:
    return f"{str(dtype).removeprefix('torch.')}, {device.type}"


def _close(a, b, dtype) -> bool:
    rtol, atol = TOLERANCES[dtype]
    return isinstance(a, torch.Tensor) and a.shape == b.shape and torch.allclose(a, b, rtol, atol)


@check()
def check_split_heads(fn: Subject) -> None:
    """split_heads(x (B, L, E), num_heads) -> (B, H, L, D), head h holding features h·D to
    (h+1)·D - 1 of every position; the input's dtype and device; gradients flow; ValueError
    when E is not divisible by num_heads."""
    for device in check_devices():
        for dtype in _DTYPES:
            for seed, (B, L, E, H) in enumerate(_SPLIT_SHAPES):
                D = E // H
                x = _draw((B, L, E), seed, device, dtype)  # (B, L, E)
                shape = f"(B={B}, L={L}, E={E})"
                what = f"split_heads(x of shape {shape}, num_heads={H}, {_label(dtype, device)})"
                out = calling(what, fn, x, H)
                if (
                    isinstance(out, torch.Tensor)
                    and tuple(out.shape) == (B, L, H, D)
                    and (B, L, H, D) != (B, H, L, D)
                ):
                    raise CheckFailed(
                        f"{what}: the result has shape (B, L, H, D); the heads must come before "
                        "the positions, (B, H, L, D), so that attention runs over positions in "
                        "each head. A view alone is not enough: transpose L and H too."
                    )
                compare(out, split_heads(x, H), what, hint=_SPLIT_HINT)

    x = _draw((2, 4, 12), 50, "cpu", torch.float64)  # (B, L, E)
    g = _draw((2, 3, 4, 4), 51, "cpu", torch.float64)  # (B, H, L, D)
    what = "split_heads(x of shape (B=2, L=4, E=12), num_heads=3), backward"
    _, grads, _ = calling(what, fn.gradients, (x, 3), grad_output=g)
    if not grads or grads[0] is None:
        raise CheckFailed(f"{what}: no gradient reaches x; use torch operations only.")
    compare(grads[0], merge_heads(g), f"{what}, gradient with respect to x")

    x = _draw((2, 3, 10), 52, "cpu", torch.float32)  # (B, L, E)
    raises(ValueError, "split_heads(x of width E=10, num_heads=3)", fn, x, 3)


@check()
def check_merge_heads(fn: Subject) -> None:
    """merge_heads(x (B, H, L, D)) -> (B, L, H·D), head 0's features first; merge_heads undoes
    split_heads; the input's dtype and device; gradients flow."""
    for device in check_devices():
        for dtype in _DTYPES:
            for seed, (B, L, E, H) in enumerate(_SPLIT_SHAPES):
                D = E // H
                x = _draw((B, H, L, D), seed + 100, device, dtype)  # (B, H, L, D)
                where = f"(B={B}, H={H}, L={L}, D={D}), {_label(dtype, device)}"
                what = f"merge_heads(x of shape {where})"
                out = calling(what, fn, x)
                compare(out, merge_heads(x), what, hint=_MERGE_HINT)

                y = _draw((B, L, E), seed + 200, device, dtype)  # (B, L, E)
                what = f"merge_heads(split_heads(y, {H})) for y of shape (B={B}, L={L}, E={E})"
                back = calling(what, fn, split_heads(y, H))
                if not _close(back, y, dtype):
                    raise CheckFailed(
                        f"{what}: merging the split heads does not give y back. {_MERGE_HINT}"
                    )

    x = _draw((2, 3, 4, 5), 150, "cpu", torch.float64)  # (B, H, L, D)
    g = _draw((2, 4, 15), 151, "cpu", torch.float64)  # (B, L, E)
    what = "merge_heads(x of shape (B=2, H=3, L=4, D=5)), backward"
    _, grads, _ = calling(what, fn.gradients, (x,), grad_output=g)
    if not grads or grads[0] is None:
        raise CheckFailed(f"{what}: no gradient reaches x; use torch operations only.")
    compare(grads[0], split_heads(g, 3), f"{what}, gradient with respect to x")


# --- MultiHeadAttention -----------------------------------------------------------------------

# (E, H, B, L, S, bias, dtype): several heads, cross-attention (L != S), no bias, one feature a
# head, one head, float64.
_MHA_CASES = [
    (16, 4, 2, 5, 5, True, torch.float32),
    (24, 3, 3, 4, 7, False, torch.float32),
    (8, 8, 2, 6, 3, True, torch.float32),
    (12, 1, 2, 3, 3, True, torch.float32),
    (16, 2, 2, 4, 6, True, torch.float64),
]
_HEADS = {"split_heads": split_heads, "merge_heads": merge_heads}
_LAYERS = ("W_q", "W_k", "W_v", "W_o")
_OUTPUT_HINT = (
    "The output is W_o(merge_heads(weights @ v)), with q, k, v the split projections "
    "W_q(query), W_k(key), W_v(value) and each head's weights a softmax over its S keys."
)


def _with_scale(ref: MultiHeadAttention, query, key, value, mask, scale):
    """The reference's output with another scale for the scores (to name a wrong scale)."""
    from autograder.chapters.ch04_self_attention import reference as ch04

    H = ref.num_heads
    q = split_heads(ref.W_q(query), H)  # (B, H, L, D)
    k = split_heads(ref.W_k(key), H)  # (B, H, S, D)
    v = split_heads(ref.W_v(value), H)  # (B, H, S, D)
    weights = ch04.attention_weights(q, k, attn_mask=mask, scale=scale)  # (B, H, L, S)
    return ref.W_o(merge_heads(weights @ v))  # (B, L, E)


def _pair(result, what: str):
    """The student's (output, weights), checked to be a pair."""
    if not isinstance(result, tuple) or len(result) != 2:
        raise CheckFailed(
            f"{what}: forward must return a pair (output, weights), as nn.MultiheadAttention "
            f"does, not a {type(result).__name__}."
        )
    return result


def _padding_mask(B, S, seed, device, fully_masked_batch=False):
    """(B, S) boolean, True = a real key; every batch element keeps at least one key (but the
    last one keeps none with fully_masked_batch)."""
    g = torch.Generator().manual_seed(seed + 500)
    lengths = torch.randint(1, S + 1, (B,), generator=g)  # (B,)
    lengths[0] = max(1, S - 1)
    mask = torch.arange(S)[None, :] < lengths[:, None]  # (B, S)
    if fully_masked_batch:
        mask[-1] = False
    return mask.to(device)


def _build(cls: Subject, E, H, bias, seed, device, dtype):
    """The student's module with the reference's weights, and the reference."""
    label = f"MultiHeadAttention({E}, {H}{'' if bias else ', bias=False'})"
    args, kwargs = (E, H), ({} if bias else {"bias": False})
    module = calling(label, cls.seeded(seed), *args, **kwargs)
    if not isinstance(module, Subject):
        raise CheckFailed(f"{label} must construct an nn.Module.")
    state = module_state(module, label, {n: ("Linear", (E, E)) for n in _LAYERS})
    for name in _LAYERS:
        if (f"{name}.bias" in state) != bias:
            raise CheckFailed(
                f"{label}.{name} must {'' if bias else 'not '}have a bias (bias={bias})."
            )
    torch.manual_seed(seed + 900)
    reference = MultiHeadAttention(E, H, bias=bias)
    calling(
        f"{label}.load_state_dict", module.load_state_dict, reference.state_dict(), strict=False
    )
    calling(f"{label}.to({device.type}, {dtype})", module.to, device, dtype)
    return label, module, reference.to(device=device, dtype=dtype)


def _must_attend_over_positions(module, x, label, where, dtype) -> None:
    """Changing one token must change the other positions' outputs (no mask, self-attention):
    a layer that attends across heads instead mixes nothing between positions."""
    B, L, E = x.shape
    if L < 2:
        return
    what = f"{label}{where}, self-attention, the first token changed"
    before, _ = _pair(calling(what, module, x, x, x, need_weights=False), what)
    changed = x.clone()
    changed[:, 0] = changed[:, 0].flip(-1) + 1.0
    after, _ = _pair(calling(what, module, changed, changed, changed, need_weights=False), what)
    if isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor):
        if before.shape == after.shape == x.shape and torch.allclose(
            before[:, 1:], after[:, 1:], rtol=0, atol=1e-6 if dtype == torch.float64 else 1e-5
        ):
            raise CheckFailed(
                f"{what}: no other position's output changed, so no query looked at the changed "
                "token; each head's queries must attend over the S key positions. Scores of "
                "shape (B, L, H, H) come from heads that were viewed as (B, L, H, D) but never "
                "transposed to (B, H, L, D): they attend across heads, not across positions."
            )


@check(stand_ins=_HEADS)
def check_multi_head_attention(cls: Subject) -> None:
    """MultiHeadAttention(embed_dim, num_heads, bias=True): four nn.Linear(E, E) W_q, W_k, W_v,
    W_o; forward(query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True,
    average_attn_weights=True) -> (output (B, L, E), weights (B, L, S), (B, H, L, S) or None),
    equal to nn.MultiheadAttention(batch_first=True) with the same weights and inverted masks;
    masks True = allowed; a fully masked query gets zero weights and no NaN; ValueError when E is
    not divisible by H."""
    for device in check_devices():
        for seed, (E, H, B, L, S, bias, dtype) in enumerate(_MHA_CASES):
            label, module, ref = _build(cls, E, H, bias, seed, device, dtype)
            theirs = to_torch(ref)
            x = _draw((B, L, E), seed + 10, device, dtype)  # (B, L, E)
            mem = _draw((B, S, E), seed + 20, device, dtype)  # (B, S, E)
            val = _draw((B, S, E), seed + 30, device, dtype)  # (B, S, E)
            where = f"(B={B}, L={L}, S={S}, {_label(dtype, device)})"
            _must_attend_over_positions(module, x, label, where, dtype)

            causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()  # (L, L)
            padding = _padding_mask(B, S, seed, device)  # (B, S)
            self_padding = _padding_mask(B, L, seed + 1, device)  # (B, L)
            cross_allowed = _padding_mask(L, S, seed + 2, device)  # (L, S), every row keeps one
            float_mask = torch.zeros(L, S, dtype=dtype, device=device).masked_fill(
                ~cross_allowed, float("-inf")
            )  # (L, S)
            cases = [
                ("self-attention", (x, x, x), {}, None),
                ("cross-attention (key != value)", (x, mem, val), {}, None),
                (
                    "cross-attention with key_padding_mask",
                    (x, mem, val),
                    {"key_padding_mask": padding},
                    padding[:, None, :],
                ),
                (
                    "self-attention with a causal attn_mask",
                    (x, x, x),
                    {"attn_mask": causal},
                    causal,
                ),
                (
                    "self-attention with key_padding_mask and a causal attn_mask",
                    (x, x, x),
                    {"key_padding_mask": self_padding, "attn_mask": causal},
                    causal & self_padding[:, None, :],
                ),
                (
                    "cross-attention with a float attn_mask (0 allowed, -inf not)",
                    (x, mem, val),
                    {"attn_mask": float_mask, "key_padding_mask": padding},
                    cross_allowed & padding[:, None, :],
                ),
            ]
            for name, args, kwargs, allowed in cases:
                what = f"{label}{where}, {name}"
                out, weights = _pair(calling(what, module, *args, **kwargs), what)
                with torch.no_grad():
                    expected, expected_w = ref(*args, **kwargs)
                    _name_mistakes(out, ref, args, kwargs, expected, what, dtype, H, E)
                    compare(out, expected, f"{what}, output", hint=_OUTPUT_HINT)
                    attention_rows(weights, allowed, f"{what}, head-averaged weights (B, L, S)")
                    compare(weights, expected_w, f"{what}, head-averaged weights (B, L, S)")
                    torch_kwargs = _torch_masks(kwargs, dtype)
                    t_out, t_w = theirs(*args, **torch_kwargs)
                compare(out, t_out, f"{what}, output against nn.MultiheadAttention")
                compare(weights, t_w, f"{what}, weights against nn.MultiheadAttention")

            what = f"{label}{where}, cross-attention, average_attn_weights=False"
            out, weights = _pair(
                calling(what, module, x, mem, val, average_attn_weights=False), what
            )
            with torch.no_grad():
                expected, expected_w = ref(x, mem, val, average_attn_weights=False)
            compare(out, expected, f"{what}, output")
            attention_rows(weights, None, f"{what}, per-head weights (B, H, L, S)")
            compare(weights, expected_w, f"{what}, per-head weights (B, H, L, S)")

            what = f"{label}{where}, cross-attention, need_weights=False"
            out, weights = _pair(calling(what, module, x, mem, val, need_weights=False), what)
            if weights is not None:
                raise CheckFailed(f"{what}: the second item must be None when need_weights=False.")
            compare(out, expected, f"{what}, output")

            what = f"{label}{where}, key_padding_mask in which one sequence has no key left"
            full = _padding_mask(B, S, seed, device, fully_masked_batch=True)  # (B, S)
            out, weights = _pair(calling(what, module, x, mem, val, key_padding_mask=full), what)
            with torch.no_grad():
                expected, expected_w = ref(x, mem, val, key_padding_mask=full)
            attention_rows(weights, full[:, None, :], f"{what}, head-averaged weights")
            compare(out, expected, f"{what}, output (the heads give zeros, so W_o's bias is left)")

    raises(ValueError, "MultiHeadAttention(10, 3)", cls, 10, 3)


def _torch_masks(kwargs: dict, dtype) -> dict:
    """Our masks (True = allowed) in nn.MultiheadAttention's terms (True = not allowed); a float
    attn_mask makes the padding mask float too, as torch wants both of one kind."""
    out = {k: ~m if m.dtype == torch.bool else m for k, m in kwargs.items()}
    kpm, am = kwargs.get("key_padding_mask"), kwargs.get("attn_mask")
    if kpm is not None and am is not None and am.is_floating_point():
        zeros = torch.zeros(kpm.shape, dtype=dtype, device=kpm.device)  # (B, S)
        out["key_padding_mask"] = zeros.masked_fill(~kpm, float("-inf"))
    return out


def _name_mistakes(out, ref, args, kwargs, expected, what, dtype, H, E) -> None:
    """Name a flipped mask or a wrong scale before the values are compared."""
    if (
        not isinstance(out, torch.Tensor)
        or out.shape != expected.shape
        or _close(out, expected, dtype)
    ):
        return
    kpm, am = kwargs.get("key_padding_mask"), kwargs.get("attn_mask")
    if kpm is not None and _close(out, ref(*args, key_padding_mask=~kpm, attn_mask=am)[0], dtype):
        raise CheckFailed(
            f"{what}: key_padding_mask is used the wrong way round. Here it is True where the key "
            "is a real token (allowed); nn.MultiheadAttention's is True where the key is padding."
        )
    if am is not None and am.dtype == torch.bool:
        if _close(out, ref(*args, key_padding_mask=kpm, attn_mask=~am)[0], dtype):
            raise CheckFailed(
                f"{what}: attn_mask is used the wrong way round; a boolean mask is True where "
                "attention is allowed (nn.MultiheadAttention's is True where it is not)."
            )
        if _close(out, ref(*args, key_padding_mask=kpm)[0], dtype):
            raise CheckFailed(f"{what}: attn_mask is ignored; combine it with the padding mask.")
    if H > 1:
        mask = combine_masks(kpm, am)
        if _close(out, _with_scale(ref, *args, mask, 1 / math.sqrt(E)), dtype):
            raise CheckFailed(
                f"{what}: the scores are divided by sqrt(E); each head's scores are divided by "
                "sqrt(D), the head width D = E / H."
            )
