"""Chapter 5's checks: what the hidden tests of ``solutions/ch05_multi_head_attention`` call.

Each check draws its inputs from fixed seeds, runs on the CPU and on CUDA when there is one, and
tests what the exercise's instructions promise, properties first (shape; which features go to which
head; each query attending over positions, not over heads; masked keys at exactly 0; rows that sum
to 1; no NaN for a fully masked query), values after, so that a failure names the property. Where
the result is what a known mistake (``wrong.py``) computes, the message names that mistake; where it
is not, the message names the property and does not guess.

``MultiHeadAttention`` is graded behaviour by behaviour, one check per graded cell: its layers,
its output and head-averaged weights without masks, its masks, a query whose keys are all masked,
and the ``average_attn_weights`` and ``need_weights`` options; one missing behaviour costs its own
cell. It runs on the student's own ``split_heads`` and ``merge_heads`` where those pass their checks
and on the reference's where they do not (``stand_ins``); its output and weights are compared with
the reference's and with ``nn.MultiheadAttention``'s once the weights are copied.

Not checked: gradients through ``MultiHeadAttention``. The engine can only differentiate a call
that returns one tensor, and the layer returns ``(output, weights)`` as torch's does; the visible
tests check that gradients reach the four projections.
"""

from __future__ import annotations

import math

import torch

from autograder.toolkit import (
    CheckFailed,
    Subject,
    attention_rows,
    calling,
    check,
    check_devices,
    close,
    compare,
    draw,
    label,
    module_state,
    raises,
)

from . import wrong
from .reference import MultiHeadAttention, combine_masks, merge_heads, split_heads, to_torch

__all__ = [
    "check_split_heads",
    "check_merge_heads",
    "check_mha_layers",
    "check_mha_forward",
    "check_mha_masks",
    "check_mha_fully_masked",
    "check_mha_weights_options",
]

_DTYPES = (torch.float32, torch.float64)
# (B, L, E, H): several heads, one head, one feature a head (D = 1), one position; L != H
# throughout (so that a view to (B, L, H, D) and one to (B, H, L, D) give different tensors).
# The instructions promise (B, L, E): an answer that also takes other leading dimensions is
# right, and one that takes exactly three is too.
_SPLIT_SHAPES = [(2, 5, 12, 3), (3, 4, 16, 2), (2, 3, 6, 1), (1, 2, 8, 8), (2, 1, 10, 2)]

_SPLIT_HINT = (
    "Head h holds features h·D to (h+1)·D - 1 of every position: out[b, h, l] is "
    "x[b, l, h·D:(h+1)·D]."
)
_MERGE_HINT = (
    "merge_heads undoes split_heads: out[b, l, h·D:(h+1)·D] is x[b, h, l], head 0 first."
)
# What a known mistake computes, and what to tell the student who made it.
_SPLIT_MISTAKES = (
    (
        wrong.split_no_transpose,
        "the result is x viewed as (B, L, H, D): the heads are still after the positions, so "
        "attention would run across the heads of one position. Move H before L as well "
        "(transpose L and H)",
    ),
    (
        wrong.split_view_heads_first,
        "the result is x reshaped straight to (B, H, L, D): a view or a reshape keeps the "
        "memory order, so each 'head' is a run of consecutive numbers that crosses positions. "
        "Cut E into (H, D) first, (B, L, H, D), then move H before L",
    ),
    (
        wrong.split_interleaved,
        "head h got features h, h + H, h + 2H, ...: each head owns one contiguous slice of "
        "features, h·D to (h+1)·D - 1, as nn.MultiheadAttention's heads do (cut E as (H, D), "
        "not (D, H))",
    ),
    (
        wrong.split_transpose_wrong_dims,
        "the result is x viewed as (B, L, H, D) with H transposed with D instead of with L: "
        "the heads must come before the positions, (B, H, L, D)",
    ),
)
_MERGE_MISTAKES = (
    (
        wrong.merge_no_transpose,
        "the heads were reshaped straight to (B, L, E) without moving H back after L first: "
        "each output row mixes several positions of one head",
    ),
    (
        wrong.merge_feature_major,
        "the heads' features are interleaved (feature 0 of every head, then feature 1, ...): "
        "head 0's D features come first, then head 1's, as split_heads cut them",
    ),
    (
        wrong.merge_reversed_heads,
        "the heads are concatenated in reverse order: head 0 first",
    ),
)


def _named(out, expected, mistakes, x, *args) -> str | None:
    """The message of the known mistake whose result `out` is, if it is not the right one."""
    if not isinstance(out, torch.Tensor) or close(out, expected):
        return None
    for mistake, message in mistakes:
        try:
            wrong_out = mistake(x, *args)
        except Exception:  # the mistake does not run on this shape: it is not this one
            continue
        if close(out, wrong_out):
            return message
    return None


@check()
def check_split_heads(fn: Subject) -> None:
    """split_heads(x (B, L, E), num_heads) -> (B, H, L, D), head h holding features h·D to
    (h+1)·D - 1 of every position; the input's dtype and device; gradients flow; ValueError when
    E is not divisible by num_heads."""
    for device in check_devices():
        for dtype in _DTYPES:
            for seed, (B, L, E, H) in enumerate(_SPLIT_SHAPES):
                x = draw((B, L, E), seed, device, dtype)  # (B, L, E)
                what = (
                    f"split_heads(x of shape (B={B}, L={L}, E={E}), num_heads={H}, "
                    f"{label(dtype, device)})"
                )
                out = calling(what, fn, x, H)
                expected = split_heads(x, H)  # (B, H, L, D)
                _compare_layout(out, expected, (_SPLIT_MISTAKES, x, H), what, _SPLIT_HINT)

    x = draw((2, 4, 12), 50, "cpu", torch.float64)  # (B, L, E)
    g = draw((2, 3, 4, 4), 51, "cpu", torch.float64)  # (B, H, L, D)
    what = "split_heads(x of shape (B=2, L=4, E=12), num_heads=3), backward"
    _gradient_is(fn, (x, 3), g, merge_heads(g), what)

    x = draw((2, 3, 10), 52, "cpu", torch.float32)  # (B, L, E)
    raises(ValueError, "split_heads(x of width E=10, num_heads=3)", fn, x, 3)


@check()
def check_merge_heads(fn: Subject) -> None:
    """merge_heads(x (B, H, L, D)) -> (B, L, H·D), head 0's features first, for a tensor that
    is not contiguous too; merge_heads undoes split_heads; the input's dtype and device;
    gradients flow."""
    for device in check_devices():
        for dtype in _DTYPES:
            for seed, (B, L, E, H) in enumerate(_SPLIT_SHAPES):
                D = E // H
                x = draw((B, H, L, D), seed + 100, device, dtype)  # (B, H, L, D)
                what = (
                    f"merge_heads(x of shape (B={B}, H={H}, L={L}, D={D}), {label(dtype, device)})"
                )
                out = _call_merge(what, fn, x)
                expected = merge_heads(x)  # (B, L, E)
                _compare_layout(out, expected, (_MERGE_MISTAKES, x), what, _MERGE_HINT)

                y = draw((B, L, E), seed + 200, device, dtype)  # (B, L, E)
                what = f"merge_heads(split_heads(y, {H})) for y of shape {tuple(y.shape)}"
                back = _call_merge(what, fn, split_heads(y, H))  # a transposed input
                if not close(back, y):
                    raise CheckFailed(
                        f"{what}: merging the split heads does not give y back. {_MERGE_HINT}"
                    )

    x = draw((2, 3, 4, 5), 150, "cpu", torch.float64)  # (B, H, L, D)
    g = draw((2, 4, 15), 151, "cpu", torch.float64)  # (B, L, E)
    what = "merge_heads(x of shape (B=2, H=3, L=4, D=5)), backward"
    _gradient_is(fn, (x,), g, split_heads(g, 3), what)


def _compare_layout(out, expected, mistakes: tuple, what: str, hint: str) -> None:
    """The known mistake `out` is, named; then the values. `mistakes` is (the known mistakes,
    their arguments...)."""
    message = _named(out, expected, *mistakes)
    if message:
        raise CheckFailed(f"{what}: {message}.")
    compare(out, expected, what, hint=hint)


def _gradient_is(fn: Subject, args: tuple, grad_output, expected, what: str) -> None:
    """The gradient of <fn(*args), grad_output> with respect to args[0] is `expected`."""
    _, grads, _ = calling(what, fn.gradients, args, grad_output=grad_output)
    if not grads or grads[0] is None:
        raise CheckFailed(f"{what}: no gradient reaches x; use torch operations only.")
    compare(grads[0], expected, f"{what}, gradient with respect to x")


def _call_merge(what: str, fn, x):
    try:
        return calling(what, fn, x)
    except CheckFailed as exc:
        if "view size is not compatible" not in str(exc):
            raise
        raise CheckFailed(
            f"{exc} After a transpose the tensor is not contiguous in memory, and view cannot "
            "read it in another shape: use reshape, which copies when it must."
        ) from None


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


def _pair(result, what: str):
    """The student's (output, weights), checked to be a pair."""
    if not isinstance(result, tuple) or len(result) != 2:
        raise CheckFailed(
            f"{what}: forward must return a pair (output, weights), as nn.MultiheadAttention "
            f"does, not a {type(result).__name__}."
        )
    return result


def _padding_mask(B, S, seed, device, fully_masked_batch=False):
    """(B, S) boolean, True = a real key; key 0 is always real (but the last sequence keeps no
    key with fully_masked_batch)."""
    g = torch.Generator().manual_seed(seed + 500)
    lengths = torch.randint(1, S + 1, (B,), generator=g)  # (B,)
    lengths[0] = max(1, S - 1)
    mask = torch.arange(S)[None, :] < lengths[:, None]  # (B, S)
    if fully_masked_batch:
        mask[-1] = False
    return mask.to(device)


def _random_mask(shape, seed, device):
    """A boolean mask of `shape` (..., L, S), True = allowed, key 0 always allowed."""
    g = torch.Generator().manual_seed(seed + 700)
    mask = torch.rand(shape, generator=g) < 0.6
    mask[..., 0] = True
    return mask.to(device)


def _build(cls: Subject, E, H, bias, seed, device, dtype):
    """The student's module with the reference's weights, and the reference."""
    name = f"MultiHeadAttention({E}, {H}{'' if bias else ', bias=False'})"
    module = calling(name, cls.seeded(seed), E, H, **({} if bias else {"bias": False}))
    if not isinstance(module, Subject):
        raise CheckFailed(f"{name} must construct an nn.Module.")
    module_state(module, name, {n: ("Linear", (E, E)) for n in _LAYERS})
    torch.manual_seed(seed + 900)
    reference = MultiHeadAttention(E, H, bias=bias)
    calling(f"{name}.load_state_dict", module.load_state_dict, reference.state_dict(), strict=False)
    calling(f"{name}.to({device.type}, {dtype})", module.to, device, dtype)
    return name, module, reference.to(device=device, dtype=dtype)


def _each_case(cls):
    """(seed, the student's module's name, the module, the reference, (x, memory, value), where)
    for each case, on each device."""
    for device in check_devices():
        for seed, (E, H, B, L, S, bias, dtype) in enumerate(_MHA_CASES):
            name, module, ref = _build(cls, E, H, bias, seed, device, dtype)
            x = draw((B, L, E), seed + 10, device, dtype)  # (B, L, E)
            mem = draw((B, S, E), seed + 20, device, dtype)  # (B, S, E)
            val = draw((B, S, E), seed + 30, device, dtype)  # (B, S, E)
            where = f"(B={B}, L={L}, S={S}, {label(dtype, device)})"
            yield seed, name, module, ref, (x, mem, val), where


@check(stand_ins=_HEADS)
def check_mha_layers(cls: Subject) -> None:
    """MultiHeadAttention(embed_dim, num_heads, bias=True): four nn.Linear(E, E) called W_q, W_k,
    W_v, W_o, with a bias only when bias=True; self.num_heads; ValueError when embed_dim is not
    divisible by num_heads."""
    layers = ((16, 4, True), (24, 3, False), (8, 8, True), (12, 1, False))
    for seed, (E, H, bias) in enumerate(layers):
        name = f"MultiHeadAttention({E}, {H}{'' if bias else ', bias=False'})"
        module = calling(name, cls.seeded(seed), E, H, **({} if bias else {"bias": False}))
        if not isinstance(module, Subject):
            raise CheckFailed(f"{name} must construct an nn.Module.")
        state = module_state(module, name, {n: ("Linear", (E, E)) for n in _LAYERS})
        for layer in _LAYERS:
            if (f"{layer}.bias" in state) != bias:
                raise CheckFailed(
                    f"{name}.{layer} must {'' if bias else 'not '}have a bias (bias={bias})."
                )
        heads = calling(f"{name}.num_heads", module.attribute, "num_heads")
        if heads != H:
            raise CheckFailed(f"{name} must keep num_heads as self.num_heads = {H}, not {heads!r}.")
    raises(ValueError, "MultiHeadAttention(10, 3)", cls, 10, 3)


def _must_attend_over_positions(module, ref, x, name, where) -> None:
    """Changing one token must change the other positions' outputs (no mask, self-attention)."""
    B, L, E = x.shape
    if L < 2:
        return
    what = f"{name}{where}, self-attention, the first token changed"
    before, _ = _pair(calling(what, module, x, x, x), what)
    changed = x.clone()
    changed[:, 0] = changed[:, 0].flip(-1) + 1.0
    after, _ = _pair(calling(what, module, changed, changed, changed), what)
    if not (isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor)):
        return
    if before.shape != x.shape or after.shape != x.shape:
        return
    atol = 1e-6 if x.dtype == torch.float64 else 1e-5
    if not torch.allclose(before[:, 1:], after[:, 1:], rtol=0, atol=atol):
        return
    message = (
        f"{what}: no other position's output changed, so no query looked at the changed token; "
        "each head's queries must attend over the S key positions, with scores of shape "
        "(B, H, L, S)."
    )
    missing = wrong.MHAMissingTranspose(E, ref.num_heads, bias=ref.W_q.bias is not None)
    missing.load_state_dict(ref.state_dict())
    with torch.no_grad():
        buggy, _ = missing.to(x.device, x.dtype)(x, x, x)
    if close(before, buggy):
        message += (
            " Your output is what heads viewed as (B, L, H, D) and never transposed compute: "
            "attention across the H heads of each position, with scores (B, L, H, H)."
        )
    raise CheckFailed(message)


def _without(
    ref: MultiHeadAttention, args, kwargs, *, scale=None, out_proj=True, keys_as_values=False
):
    """The reference's output with one thing changed, to recognise a mistake."""
    from autograder.chapters.ch04_self_attention import reference as ch04

    query, key, value = args
    H = ref.num_heads
    q = split_heads(ref.W_q(query), H)  # (B, H, L, D)
    k = split_heads(ref.W_k(key), H)  # (B, H, S, D)
    v = split_heads(ref.W_v(key if keys_as_values else value), H)  # (B, H, S, D)
    mask = combine_masks(kwargs.get("key_padding_mask"), kwargs.get("attn_mask"))
    weights = ch04.attention_weights(q, k, attn_mask=mask, scale=scale)  # (B, H, L, S)
    heads = merge_heads(weights @ v)  # (B, L, E)
    return ref.W_o(heads) if out_proj else heads


def _name_output_mistakes(out, ref, args, kwargs, expected, what) -> None:
    """Name a wrong scale, a missing W_o or W_v on the key before the values are compared."""
    if not isinstance(out, torch.Tensor) or out.shape != expected.shape or close(out, expected):
        return
    E, H = ref.embed_dim, ref.num_heads
    candidates = [
        (
            {"out_proj": False},
            "W_o is not applied: the merged heads go through the output projection W_o",
        ),
    ]
    if H > 1:
        candidates.append(
            (
                {"scale": 1 / math.sqrt(E)},
                "the scores are divided by sqrt(E); each head's scores are divided by sqrt(D), the "
                "head width D = E / H",
            )
        )
    if args[1] is not args[2]:
        candidates.append(
            (
                {"keys_as_values": True},
                "W_v projects the key instead of the value: the values are W_v(value)",
            )
        )
    with torch.no_grad():
        for change, message in candidates:
            if close(out, _without(ref, args, kwargs, **change)):
                raise CheckFailed(f"{what}: {message}.")


def _name_mask_mistakes(out, ref, args, kwargs, expected, what) -> None:
    """Name a flipped or ignored mask before the values are compared."""
    if not isinstance(out, torch.Tensor) or out.shape != expected.shape or close(out, expected):
        return
    kpm, am = kwargs.get("key_padding_mask"), kwargs.get("attn_mask")
    with torch.no_grad():
        if kpm is not None and close(out, ref(*args, key_padding_mask=~kpm, attn_mask=am)[0]):
            raise CheckFailed(
                f"{what}: key_padding_mask is used the wrong way round. Here it is True where "
                "the key is a real token (allowed); nn.MultiheadAttention's is True where the key "
                "is padding."
            )
        if am is not None and am.dtype == torch.bool:
            if close(out, ref(*args, key_padding_mask=kpm, attn_mask=~am)[0]):
                raise CheckFailed(
                    f"{what}: attn_mask is used the wrong way round; a boolean mask is True where "
                    "attention is allowed (nn.MultiheadAttention's is True where it is not)."
                )
        if am is not None and close(out, ref(*args, key_padding_mask=kpm)[0]):
            raise CheckFailed(
                f"{what}: attn_mask is ignored; a key is allowed only where both masks allow it."
            )
        if kpm is not None and close(out, ref(*args, attn_mask=am)[0]):
            raise CheckFailed(
                f"{what}: key_padding_mask is ignored; padded keys (False) must get weight 0."
            )


def _torch_masks(kwargs: dict, dtype, H: int) -> dict:
    """Our masks (True = allowed) in nn.MultiheadAttention's terms (True = not allowed, a 2-d
    (L, S) or 3-d (B·H, L, S) attn_mask); a float attn_mask makes the padding mask float too, as
    torch wants both of one kind."""
    out = {k: ~m if m.dtype == torch.bool else m for k, m in kwargs.items()}
    kpm, am = kwargs.get("key_padding_mask"), kwargs.get("attn_mask")
    if am is not None and am.dim() == 4:
        B, _, L, S = am.shape
        out["attn_mask"] = out["attn_mask"].expand(B, H, L, S).reshape(B * H, L, S)
    if kpm is not None and am is not None and am.is_floating_point():
        zeros = torch.zeros(kpm.shape, dtype=dtype, device=kpm.device)  # (B, S)
        out["key_padding_mask"] = zeros.masked_fill(~kpm, float("-inf"))
    return out


@check(stand_ins=_HEADS)
def check_mha_forward(cls: Subject) -> None:
    """forward(query, key, value) without masks -> (output (B, L, E), weights (B, L, S)): each
    head attends over the S positions with scores scaled by 1/sqrt(D); output and head-averaged
    weights equal the reference's and nn.MultiheadAttention(batch_first=True)'s with the same
    weights, for self- and cross-attention (key != value), in float32 and float64."""
    for _seed, name, module, ref, (x, mem, val), where in _each_case(cls):
        _must_attend_over_positions(module, ref, x, name, where)
        theirs = to_torch(ref)
        for case, args in (("self-attention", (x, x, x)), ("cross-attention", (x, mem, val))):
            what = f"{name}{where}, {case}"
            out, weights = _pair(calling(what, module, *args), what)
            with torch.no_grad():
                expected, expected_w = ref(*args)
                _name_output_mistakes(out, ref, args, {}, expected, what)
                t_out, t_w = theirs(*args)
            compare(out, expected, f"{what}, output", hint=_OUTPUT_HINT)
            if isinstance(weights, torch.Tensor) and weights.shape == expected_w.shape:
                sums = weights.double().sum(-1)  # (B, L)
                if (
                    torch.allclose(sums, torch.full_like(sums, float(ref.num_heads)))
                    and ref.num_heads > 1
                ):
                    raise CheckFailed(
                        f"{what}, head-averaged weights (B, L, S): each row sums to H = "
                        f"{ref.num_heads}, so the heads' weights were summed over the heads; "
                        "average them (mean over the head dimension)."
                    )
            attention_rows(weights, None, f"{what}, head-averaged weights (B, L, S)")
            compare(weights, expected_w, f"{what}, head-averaged weights (B, L, S)")
            compare(out, t_out, f"{what}, output against nn.MultiheadAttention")
            compare(weights, t_w, f"{what}, weights against nn.MultiheadAttention")


def _masked_keys_get_zero(weights, allowed, H, what) -> None:
    """The returned weights are finite and exactly 0 where every head's mask forbids the key."""
    if not isinstance(weights, torch.Tensor):
        raise CheckFailed(f"{what}: expected a torch.Tensor, got {type(weights).__name__}.")
    if bool(torch.isnan(weights).any()):
        raise CheckFailed(f"{what}: the weights contain NaN.")
    B, L, S = weights.shape[0], weights.shape[-2], weights.shape[-1]
    forbidden = ~allowed.expand(B, H, L, S).any(dim=1)  # (B, L, S)
    if weights.shape == forbidden.shape and bool((weights.masked_select(forbidden) != 0).any()):
        raise CheckFailed(
            f"{what}: a masked key got a nonzero weight; masked keys must get weight exactly 0, "
            "so mask the scores *before* the softmax."
        )


@check(stand_ins=_HEADS)
def check_mha_masks(cls: Subject) -> None:
    """key_padding_mask (B, S), True at real keys; attn_mask (L, S), (B, 1, L, S) or (B, H, L, S),
    boolean True = allowed or float added to the scores; both together allow a key only where
    both do. Masked keys get weight exactly 0; the output equals the reference's and
    nn.MultiheadAttention's given the inverted masks."""
    for seed, name, module, ref, (x, mem, val), where in _each_case(cls):
        B, L, E = x.shape
        S, H = mem.size(1), ref.num_heads
        device, dtype = x.device, x.dtype
        theirs = to_torch(ref)
        causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()  # (L, L)
        padding = _padding_mask(B, S, seed, device)  # (B, S)
        self_padding = _padding_mask(B, L, seed + 1, device)  # (B, L)
        cross_allowed = _padding_mask(L, S, seed + 2, device)  # (L, S), key 0 always allowed
        float_mask = torch.zeros(L, S, dtype=dtype, device=device).masked_fill(
            ~cross_allowed, float("-inf")
        )  # (L, S)
        per_batch = _random_mask((B, 1, L, S), seed, device)  # (B, 1, L, S)
        per_head = _random_mask((B, H, L, S), seed + 1, device)  # (B, H, L, S)
        cases = [
            ("cross-attention with key_padding_mask", (x, mem, val),
             {"key_padding_mask": padding}, padding[:, None, None, :]),
            ("self-attention with a causal attn_mask (L, S)", (x, x, x),
             {"attn_mask": causal}, causal),
            ("self-attention with key_padding_mask and a causal attn_mask", (x, x, x),
             {"key_padding_mask": self_padding, "attn_mask": causal},
             causal & self_padding[:, None, None, :]),
            ("cross-attention with a float attn_mask (0 allowed, -inf not) and key_padding_mask",
             (x, mem, val), {"attn_mask": float_mask, "key_padding_mask": padding},
             cross_allowed & padding[:, None, None, :]),
            ("cross-attention with a boolean attn_mask (B, 1, L, S)", (x, mem, val),
             {"attn_mask": per_batch}, per_batch),
            ("cross-attention with a boolean attn_mask (B, H, L, S)", (x, mem, val),
             {"attn_mask": per_head}, per_head),
        ]  # fmt: skip
        for case, args, kwargs, allowed in cases:
            what = f"{name}{where}, {case}"
            out, weights = _pair(calling(what, module, *args, **kwargs), what)
            with torch.no_grad():
                expected, _ = ref(*args, **kwargs)
                _name_mask_mistakes(out, ref, args, kwargs, expected, what)
                t_out, _ = theirs(*args, **_torch_masks(kwargs, dtype, H))
            compare(out, expected, f"{what}, output", hint=_OUTPUT_HINT)
            _masked_keys_get_zero(weights, allowed, H, f"{what}, head-averaged weights")
            compare(out, t_out, f"{what}, output against nn.MultiheadAttention")


@check(stand_ins=_HEADS)
def check_mha_fully_masked(cls: Subject) -> None:
    """A query whose keys are all masked (a sequence with no real key; a row of a boolean or a
    float attn_mask with no allowed key) gets weights 0 in every head and no NaN; its heads give
    0, so its output is W_o's bias."""
    for seed, name, module, ref, (x, mem, val), where in _each_case(cls):
        B, L, E = x.shape
        S = mem.size(1)
        device, dtype = x.device, x.dtype
        row = torch.ones(L, S, dtype=torch.bool, device=device)  # (L, S)
        row[L // 2] = False  # query L // 2 may attend to nothing
        last = torch.zeros(B, L, dtype=torch.bool, device=device)  # (B, L)
        last[-1] = True  # the queries of the last sequence, which has no key left
        middle = torch.zeros(B, L, dtype=torch.bool, device=device)  # (B, L)
        middle[:, L // 2] = True  # query L // 2 of every sequence
        float_row = torch.zeros(L, S, dtype=dtype, device=device).masked_fill(~row, float("-inf"))
        cases = [
            ("key_padding_mask in which one sequence has no key left",
             {"key_padding_mask": _padding_mask(B, S, seed, device, fully_masked_batch=True)},
             last),
            ("a boolean attn_mask (L, S) with a row of False", {"attn_mask": row}, middle),
            ("a float attn_mask (L, S) with a row of -inf", {"attn_mask": float_row}, middle),
        ]  # fmt: skip
        for case, kwargs, nothing in cases:
            what = f"{name}{where}, cross-attention, {case}"
            out, weights = _pair(calling(what, module, x, mem, val, **kwargs), what)
            with torch.no_grad():
                expected, _ = ref(x, mem, val, **kwargs)
            for got, part in ((out, "output contains"), (weights, "head-averaged weights contain")):
                if isinstance(got, torch.Tensor) and bool(torch.isnan(got).any()):
                    raise CheckFailed(
                        f"{what}: the {part} NaN. A query whose keys are all masked "
                        "attends to nothing: its weights are 0 in every head and its heads' "
                        "outputs 0, so its output is W_o's bias (chapter 4, 'A fully masked "
                        "row')."
                    )
            if not isinstance(weights, torch.Tensor) or weights.shape[:-1] != (B, L):
                raise CheckFailed(f"{what}: the head-averaged weights must have shape (B, L, S).")
            if bool((weights[nothing] != 0).any()):
                raise CheckFailed(
                    f"{what}: a query whose keys are all masked must get weights 0 (it attends "
                    "to nothing)."
                )
            compare(out, expected, f"{what}, output (the heads give zeros, so W_o's bias is left)")


@check(stand_ins=_HEADS)
def check_mha_weights_options(cls: Subject) -> None:
    """average_attn_weights=False returns the per-head weights (B, H, L, S); need_weights=False
    returns None in their place; neither changes the output."""
    for _seed, name, module, ref, (x, mem, val), where in _each_case(cls):
        B, L, E = x.shape
        S, H = mem.size(1), ref.num_heads
        with torch.no_grad():
            expected, expected_w = ref(x, mem, val, average_attn_weights=False)  # (B, H, L, S)
            _, t_w = to_torch(ref)(x, mem, val, average_attn_weights=False)
        what = f"{name}{where}, cross-attention, average_attn_weights=False"
        out, weights = _pair(calling(what, module, x, mem, val, average_attn_weights=False), what)
        if isinstance(weights, torch.Tensor) and tuple(weights.shape) == (B, L, S) and H > 1:
            raise CheckFailed(
                f"{what}: the weights were averaged over the heads; with "
                "average_attn_weights=False return each head's weights, (B, H, L, S)."
            )
        compare(out, expected, f"{what}, output")
        attention_rows(weights, None, f"{what}, per-head weights (B, H, L, S)")
        compare(weights, expected_w, f"{what}, per-head weights (B, H, L, S)")
        compare(weights, t_w, f"{what}, per-head weights against nn.MultiheadAttention")

        what = f"{name}{where}, cross-attention, need_weights=False"
        out, weights = _pair(calling(what, module, x, mem, val, need_weights=False), what)
        if weights is not None:
            raise CheckFailed(
                f"{what}: the second item must be None when need_weights=False, as "
                "nn.MultiheadAttention returns."
            )
        compare(out, expected, f"{what}, output")
