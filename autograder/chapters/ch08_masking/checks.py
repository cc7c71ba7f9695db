"""Chapter 8's checks: what the hidden tests of ``solutions/ch08_masking`` call.

Each check draws its inputs from fixed seeds, runs on the CPU and on CUDA when there is one, and
tests what the exercise's instructions promise, properties first (a boolean tensor of the right
shape on the right device; a decoder whose earlier outputs do not move when later tokens change,
and whose real tokens' outputs do not move when padding changes), values after, so that a
failure names the property. Messages name the mistake when it is a known one (a flipped
polarity, an off-by-one causal mask, a padding mask on the query axis, keys and values taken from
the decoder) and never print tensors.

**One bug, one part.** No part calls another: the decoder layer receives its masks ready-made,
so a wrong ``causal_mask`` or ``combine_masks`` cannot cost the decoder anything, and the decoder
is compared with ``nn.TransformerDecoderLayer`` holding the same weights. Its LayerNorms may be
``nn.LayerNorm`` (chapter 6 builds one; this exercise allows torch's).

``DecoderLayer`` is graded in three cells: its self-attention block ``_sa_block``
(``check_decoder_self_attention``), its cross-attention block ``_mha_block``
(``check_decoder_cross_attention``) and the layer as a whole (``check_decoder_layer``: the order
of the sublayers, the residuals and norms of both ``norm_first``, the feed-forward network, the
masks passed on, gradients, dropout). The whole layer's expected output is computed twice, by
torch's layer and by the instructions' formula through the student's *own* ``_sa_block`` and
``_mha_block`` (with torch's feed-forward network and norms): a layer that matches the second
wires its sublayers right, and a mistake inside a block costs that block's cell only.

Not here: the reference (``reference.py``) and the known-wrong implementations (``wrong.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autograder.toolkit import (
    CheckFailed,
    Subject,
    calling,
    check,
    check_devices,
    close,
    compare,
    draw,
    dropout_only_in_training,
    label,
)

__all__ = [
    "check_padding_mask",
    "check_causal_mask",
    "check_combine_masks",
    "check_decoder_self_attention",
    "check_decoder_cross_attention",
    "check_decoder_layer",
]

_DTYPES = (torch.float32, torch.float64)


def _same(a, b) -> bool:
    """Equal boolean masks (a wrong dtype or shape is not the same)."""
    return isinstance(a, torch.Tensor) and a.shape == b.shape and torch.equal(a.cpu(), b.cpu())


def _boolean(out, expected: torch.Tensor, what: str, hint: str = "") -> None:
    """A boolean mask: a tensor, of dtype bool, of the expected shape, on the expected device."""
    hint = f" {hint}" if hint else ""
    if not isinstance(out, torch.Tensor):
        raise CheckFailed(f"{what}: expected a torch.Tensor, got {type(out).__name__}.")
    if out.dtype != torch.bool:
        raise CheckFailed(
            f"{what}: the mask is {out.dtype}; it must be a boolean tensor (torch.bool), True "
            "where attention is allowed. A float 0/1 mask would be *added* to the scores by "
            "torch, which is not masking."
        )
    if out.shape != expected.shape:
        raise CheckFailed(
            f"{what}: wrong shape {tuple(out.shape)}, expected {tuple(expected.shape)}.{hint}"
        )
    if out.device.type != expected.device.type:
        raise CheckFailed(
            f"{what}: the mask is on {out.device.type}, expected {expected.device.type}; build it "
            "on the device of its inputs (or the device asked for)."
        )


# --------------------------------------------------------------------------------------------
# Part 1: padding_mask
# --------------------------------------------------------------------------------------------


def _tokens(shape, pad_id, layout, seed, dtype=torch.long):
    """Token ids with padding: at the end ("right"), at the start ("left"), or anywhere."""
    g = torch.Generator().manual_seed(seed)
    low = 0 if pad_id > 0 else 1
    tokens = torch.randint(low, low + 20, shape, generator=g)  # real ids around the pad id
    tokens[tokens == pad_id] = pad_id + 1
    S = shape[-1]
    lengths = torch.randint(1, S + 1, shape[:-1], generator=g)  # (...,): at least one real token
    pos = torch.arange(S)
    if layout == "right":
        pad = pos >= lengths[..., None]  # (..., S)
    elif layout == "left":
        pad = pos < (S - lengths)[..., None]  # (..., S)
    else:
        pad = torch.rand(shape, generator=g) < 0.4  # (..., S)
    return tokens.masked_fill(pad, pad_id).to(dtype)


@check()
def check_padding_mask(fn: Subject) -> None:
    """padding_mask(tokens, pad_id) -> bool of the tokens' shape and device, True at every token
    that is not pad_id, wherever the padding is (end, start, middle); any pad id."""
    cases = [
        ((3, 7), 0, "right", torch.long),
        ((4, 6), 0, "left", torch.long),
        ((2, 9), 1, "anywhere", torch.long),
        ((2, 5), 17, "right", torch.int32),
        ((8,), 0, "right", torch.long),
        ((2, 3, 5), 2, "anywhere", torch.long),
    ]
    for device in check_devices():
        for seed, (shape, pad_id, layout, dtype) in enumerate(cases):
            tokens = _tokens(shape, pad_id, layout, seed, dtype).to(device)
            what = (f"padding_mask(tokens of shape {tuple(shape)} with padding {'at the end' if layout == 'right' else 'at the start' if layout == 'left' else 'here and there'}, "  # noqa: E501
                    f"pad_id={pad_id}, {device.type})")
            out = calling(what, fn, tokens, pad_id)
            expected = tokens != pad_id  # (..., S)
            _boolean(out, expected, what, "The mask has one entry per token.")
            if _same(out, ~expected):
                raise CheckFailed(
                    f"{what}: the mask is the wrong way round. The course's masks are True where "
                    "attention is allowed: True at real tokens, False at padding."
                )
            if pad_id != 0 and _same(out, tokens != 0):
                raise CheckFailed(f"{what}: the padding is the token pad_id, not id 0.")
            if layout != "right":
                real = expected.sum(-1, keepdim=True)  # (..., 1)
                if _same(out, torch.arange(shape[-1], device=device) < real):
                    raise CheckFailed(
                        f"{what}: the mask assumes that the padding comes at the end; compare "
                        "each token with pad_id instead of counting real tokens."
                    )
            if not _same(out, expected):
                raise CheckFailed(
                    f"{what}: wrong values; a token is real (True) exactly when its id is not "
                    "pad_id."
                )


# --------------------------------------------------------------------------------------------
# Part 2: causal_mask
# --------------------------------------------------------------------------------------------


def _lower_right(L, S, device, shift=0):
    """tril(ones(L, S), diagonal=S - L + shift): the expected mask, and its off-by-one cousins."""
    return torch.ones(L, S, dtype=torch.bool, device=device).tril(S - L + shift)  # (L, S)


@check()
def check_causal_mask(fn: Subject) -> None:
    """causal_mask(L, S=None, device=None) -> bool (L, S): query l is position S - L + l and may
    attend to keys 0 .. S - L + l (bottom-right aligned); S defaults to L; the rows of queries
    before every key (L > S) are all False; on `device` (the CPU by default)."""
    sizes = [(4, 4), (1, 1), (3, 7), (1, 6), (5, 8), (6, 3), (2, 2)]
    for device in check_devices():
        for L, S in sizes:
            what = f"causal_mask({L}, {S}, device={device.type!r})"
            out = calling(what, fn, L, S, device=device.type)
            expected = _lower_right(L, S, device)
            _boolean(out, expected, what, "The mask has one row per query (L) and one column "
                     "per key (S).")
            for shift, message in (
                (-1, "off by one: a query must attend to its own position too (the diagonal "
                     "of the last L x L block is allowed)"),
                (1, "off by one: each query may attend to one future position; it may attend "
                    "to itself and the past only"),
            ):
                shifted = _lower_right(L, S, device, shift)
                if _same(out, shifted) and not _same(shifted, expected):
                    raise CheckFailed(f"{what}: {message}.")
            if _same(out, ~expected):
                raise CheckFailed(
                    f"{what}: the mask is the wrong way round; True where attention is allowed "
                    "(itself and the past), False for the future."
                )
            top_left = torch.ones(L, S, dtype=torch.bool, device=device).tril()  # (L, S)
            if _same(out, top_left) and not _same(top_left, expected):
                raise CheckFailed(
                    f"{what}: this is aligned to the top-left corner (torch's is_causal=True). "
                    "Here the L queries are the last L of the S positions: query l is at "
                    "position S - L + l, so the last query sees every key."
                )
            if not _same(out, expected):
                raise CheckFailed(f"{what}: wrong values; query l (at position S - L + l) may "
                                  "attend to keys 0 .. S - L + l and no other.")

    what = "causal_mask(5) (S defaults to L)"
    out = calling(what, fn, 5)
    _boolean(out, _lower_right(5, 5, "cpu"), what)
    if not _same(out, _lower_right(5, 5, "cpu")):
        raise CheckFailed(f"{what}: with S omitted the mask is the (L, L) lower triangle.")
    what = "causal_mask(3, 6) (no device given)"
    out = calling(what, fn, 3, 6)
    _boolean(out, _lower_right(3, 6, "cpu"), what, "With no device the mask is on the CPU.")


# --------------------------------------------------------------------------------------------
# Part 3: combine_masks
# --------------------------------------------------------------------------------------------


def _key_padding(B, S, seed, device):
    """(B, S) bool, True at real keys; at least one real key per sequence."""
    g = torch.Generator().manual_seed(seed + 300)
    lengths = torch.randint(1, S + 1, (B,), generator=g)
    return (torch.arange(S)[None, :] < lengths[:, None]).to(device)  # (B, S)


def _random_allowed(L, S, seed, device):
    g = torch.Generator().manual_seed(seed + 400)
    return (torch.rand(L, S, generator=g) < 0.6).to(device)  # (L, S)


def _name_combine_mistake(out, expected, pad, attn, what) -> None:
    """Name a known mistake of combine_masks(pad, attn), when the result is one."""
    if not isinstance(out, torch.Tensor):
        return
    L, S = attn.shape
    if L == S and _same(out, pad[:, None, :, None] & attn):
        raise CheckFailed(
            f"{what}: the padding mask is broadcast over the queries; it says which *keys* are "
            "real, so it varies along the last axis, S: (B, 1, 1, S)."
        )
    if out.dim() == 3:
        raise CheckFailed(
            f"{what}: the result has 3 dimensions; give it a head axis, (B, 1, L, S), so that it "
            "broadcasts against (B, H, L, S) scores (a (B, L, S) mask would line B up with the "
            "heads)."
        )
    if _same(out, ~expected):
        raise CheckFailed(f"{what}: the result is the wrong way round; True where attention is "
                          "allowed.")
    if _same(out, pad[:, None, None, :] | attn):
        raise CheckFailed(f"{what}: the masks are combined with 'or'; a pair is allowed only "
                          "when both masks allow it: 'and'.")
    if _same(out, pad[:, None, None, :].expand_as(expected)):
        raise CheckFailed(f"{what}: the attn_mask is ignored.")


@check()
def check_combine_masks(fn: Subject) -> None:
    """combine_masks(padding_mask=None, attn_mask=None): padding (B, S) and attention (L, S)
    masks, True = allowed, as one boolean mask with singleton axes: (B, 1, L, S) from both,
    (B, 1, 1, S) from the padding mask, (1, 1, L, S) from the attention mask, None from neither;
    on the masks' device."""
    sizes = [(3, 5, 5), (2, 4, 7), (1, 6, 6), (4, 1, 3)]
    for device in check_devices():
        for seed, (B, L, S) in enumerate(sizes):
            pad = _key_padding(B, S, seed, device)  # (B, S)
            attns = {"a causal attn_mask": _lower_right(L, S, device),
                     "an attn_mask": _random_allowed(L, S, seed, device)}  # fmt: skip
            for kind, attn in attns.items():
                what = (f"combine_masks(padding_mask (B={B}, S={S}), {kind} (L={L}, S={S}), "
                        f"{device.type})")
                out = calling(what, fn, pad, attn)
                expected = pad[:, None, None, :] & attn  # (B, 1, L, S)
                if not _same(out, expected):
                    _name_combine_mistake(out, expected, pad, attn, what)
                _boolean(out, expected, what, "Padding (B, 1, 1, S) and attention (1, 1, L, S) "
                         "masks broadcast to (B, 1, L, S).")
                if not _same(out, expected):
                    raise CheckFailed(f"{what}: wrong values; a pair (l, s) is allowed when key "
                                      "s is real and attn_mask allows it.")

            what = f"combine_masks(padding_mask (B={B}, S={S}), None, {device.type})"
            out = calling(what, fn, pad, None)
            expected = pad[:, None, None, :]  # (B, 1, 1, S)
            _boolean(out, expected, what, "A padding mask alone becomes (B, 1, 1, S).")
            if not _same(out, expected):
                raise CheckFailed(f"{what}: wrong values; with no attn_mask the result is the "
                                  "padding mask, (B, 1, 1, S).")

            attn = attns["a causal attn_mask"]
            what = f"combine_masks(None, an attn_mask (L={L}, S={S}), {device.type})"
            out = calling(what, fn, None, attn)
            expected = attn[None, None]  # (1, 1, L, S)
            _boolean(out, expected, what, "An attention mask alone becomes (1, 1, L, S).")
            if not _same(out, expected):
                raise CheckFailed(f"{what}: wrong values; with no padding mask the result is the "
                                  "attn_mask, (1, 1, L, S).")

    out = calling("combine_masks(None, None)", fn, None, None)
    if out is not None:
        raise CheckFailed("combine_masks(None, None) must return None: there is nothing to mask.")


# --------------------------------------------------------------------------------------------
# Part 4: DecoderLayer
# --------------------------------------------------------------------------------------------

# (B, L, S, E, H, F): L != S both ways, one head, one query position.
_LAYER_SHAPES = [(2, 5, 7, 8, 2, 16), (3, 6, 4, 12, 3, 24), (1, 4, 4, 8, 1, 8), (2, 1, 3, 8, 2, 16)]
_MODULES = {
    "self_attn": "MultiheadAttention",
    "multihead_attn": "MultiheadAttention",
    "linear1": "Linear",
    "linear2": "Linear",
    "dropout": "Dropout",
    "dropout1": "Dropout",
    "dropout2": "Dropout",
    "dropout3": "Dropout",
}
_ON_POLARITY = "(chapter 8, section 'One mask, four polarities')"
_ON_SOFTMAX = "(chapter 8, section 'Why the mask goes before the softmax')"
_ON_DECODER = "(chapter 8, section 'The decoder layer')"


def _torch_layer(E, H, Fw, norm_first, seed, device, dtype, dropout=0.0):
    """nn.TransformerDecoderLayer with random weights (LayerNorm gains near 1, biases near 0)."""
    torch.manual_seed(seed)
    layer = nn.TransformerDecoderLayer(
        E, H, Fw, dropout=dropout, batch_first=True, norm_first=norm_first
    )
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.startswith("norm"):
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.3)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)
    # train mode (with dropout 0) keeps torch off its inference fast paths
    return layer.to(device=device, dtype=dtype)


def _build(cls: Subject, E, H, Fw, norm_first, seed, device, dtype, dropout=None):
    """The student's layer, its submodules checked, holding the weights of a torch layer (also
    returned); `dropout` None builds it with the default dropout."""
    args = f"{E}, {H}, {Fw}, norm_first={norm_first}"
    name = f"DecoderLayer({args}{'' if dropout is None else f', dropout={dropout}'})"
    kwargs = {"norm_first": norm_first, **({} if dropout is None else {"dropout": dropout})}
    layer = calling(name, cls.seeded(0), E, H, Fw, **kwargs)
    if not isinstance(layer, Subject):
        raise CheckFailed(f"{name} must construct an nn.Module.")
    info = layer.describe()
    for module, kind in _MODULES.items():
        found = info["modules"].get(module)
        if found is None:
            raise CheckFailed(f"{name} must have a submodule called {module} (an nn.{kind}), as "
                              "nn.TransformerDecoderLayer has.")
        if found != kind:
            raise CheckFailed(f"{name}.{module} must be an nn.{kind}, not a {found}.")
    for module in ("norm1", "norm2", "norm3"):
        if module not in info["modules"]:
            raise CheckFailed(f"{name} must have a LayerNorm called {module}, as "
                              "nn.TransformerDecoderLayer has.")
    for module in ("self_attn", "multihead_attn"):
        attn = layer.attribute(module)
        if attn.attribute("batch_first") is not True:
            raise CheckFailed(f"{name}.{module} must be built with batch_first=True: the layer's "
                              "inputs are (B, L, E) and (B, S, E).")
        if attn.attribute("embed_dim") != E or attn.attribute("num_heads") != H:
            raise CheckFailed(f"{name}.{module} must have embed_dim=d_model and "
                              "num_heads=nhead.")
    theirs = _torch_layer(E, H, Fw, norm_first, 100 + seed, device, dtype)
    state = theirs.state_dict()
    ours = set(info["state"])
    if ours != set(state):
        missing, extra = sorted(set(state) - ours), sorted(ours - set(state))
        raise CheckFailed(
            f"{name}: its parameters must have nn.TransformerDecoderLayer's names, so that "
            f"torch's state dict loads as it is; missing {missing[:4] or 'none'}, unexpected "
            f"{extra[:4] or 'none'}."
        )
    # move first, then load: float64 weights loaded into a float32 module would be rounded
    calling(f"{name}.to({device.type}, {dtype})", layer.to, device, dtype)
    calling(f"{name}.load_state_dict(torch's state dict)", layer.load_state_dict,
            {k: v.detach() for k, v in state.items()})
    return f"DecoderLayer({args})", layer, theirs


def _layers(cls: Subject, norm_firsts=(False, True)):
    """(layer, torch's layer, label, where, x, memory, masks, norm_first, dtype) for every
    device, dtype, shape and norm_first."""
    for device in check_devices():
        for dtype in _DTYPES:
            for seed, (B, L, S, E, H, Fw) in enumerate(_LAYER_SHAPES):
                for norm_first in norm_firsts:
                    name, layer, theirs = _build(cls, E, H, Fw, norm_first, seed, device, dtype)
                    x = draw((B, L, E), seed, device, dtype)  # (B, L, E)
                    memory = draw((B, S, E), seed + 50, device, dtype)  # (B, S, E)
                    masks = _masks(B, L, S, seed, device)
                    where = f"(tgt (B={B}, L={L}, E={E}), memory (S={S}), {label(dtype, device)})"
                    yield layer, theirs, name, where, x, memory, masks, norm_first, dtype


def _masks(B, L, S, seed, device):
    causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()  # (L, L)
    tgt_pad = _key_padding(B, L, seed + 10, device)  # (B, L)
    tgt_pad[0] = True
    mem_pad = _key_padding(B, S, seed + 20, device)  # (B, S)
    return causal, tgt_pad, mem_pad


def _nan_safe_close(a, b, dtype) -> bool:
    return isinstance(a, torch.Tensor) and close(a.nan_to_num(), b.nan_to_num(), dtype)


def _leaks(fn, x, args, kwargs, what) -> bool:
    """Whether changing x at positions after t changes fn's output at positions <= t."""
    L = x.size(1)
    if L < 2:
        return False
    t = (L - 1) // 2
    before = calling(what, fn, x, *args, **kwargs)
    changed = x.clone()
    changed[:, t + 1 :] = changed[:, t + 1 :].flip(-1) * 3.0 + 1.0
    after = calling(what, fn, changed, *args, **kwargs)
    if not (isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor)):
        return False
    if before.shape != x.shape or after.shape != x.shape:
        return False
    a, b = before[:, : t + 1], after[:, : t + 1]
    return bool((a.nan_to_num() - b.nan_to_num()).abs().max() > 1e-6 * (1 + a.abs().max()))


def _inverted(mask):
    return None if mask is None else ~mask


def _check_sa_block(layer, theirs, name, where, x, causal, tgt_pad, dtype) -> None:
    sa = layer.method("_sa_block")
    for kwargs, kind in (
        ({"tgt_mask": causal, "tgt_padding_mask": tgt_pad}, "a causal tgt_mask and padding"),
        ({"tgt_mask": causal}, "a causal tgt_mask"),
        ({"tgt_padding_mask": tgt_pad}, "a tgt_padding_mask"),
        ({}, "no mask"),
    ):
        what = f"{name}._sa_block{where} with {kind}"
        out = calling(what, sa, x, **kwargs)
        m, p = kwargs.get("tgt_mask"), kwargs.get("tgt_padding_mask")
        with torch.no_grad():
            expected = theirs._sa_block(x, _inverted(m), _inverted(p))
            if (isinstance(out, torch.Tensor) and out.shape == expected.shape
                    and not close(out, expected, dtype)):  # fmt: skip
                if m is not None and _nan_safe_close(out, theirs._sa_block(x, m, _inverted(p)),
                                                     dtype):  # fmt: skip
                    raise CheckFailed(
                        f"{what}: tgt_mask reaches nn.MultiheadAttention the wrong way round. "
                        "Ours is True where attention is allowed; its attn_mask is True where it "
                        f"is not: pass ~tgt_mask {_ON_POLARITY}."
                    )
                if p is not None and _nan_safe_close(out, theirs._sa_block(x, _inverted(m), p),
                                                     dtype):  # fmt: skip
                    raise CheckFailed(
                        f"{what}: tgt_padding_mask reaches nn.MultiheadAttention the wrong way "
                        "round. Ours is True at real tokens; its key_padding_mask is True at "
                        f"padding: pass ~tgt_padding_mask {_ON_POLARITY}."
                    )
                if m is not None and _close_to_block(out, theirs._sa_block(x, None, _inverted(p)),
                                                     dtype):  # fmt: skip
                    raise CheckFailed(f"{what}: tgt_mask is not used; pass it to the "
                                      "self-attention (as attn_mask, inverted).")
                if m is not None and _leaks(sa, x, (), kwargs, what):
                    raise CheckFailed(
                        f"{what}: changing the tokens after position t changes the outputs at "
                        "positions up to t, so the future leaks in. Mask the scores before the "
                        "softmax (pass the causal mask to the attention); masked keys must get "
                        f"weight exactly 0 {_ON_SOFTMAX}."
                    )
                if p is not None and close(out, theirs._sa_block(x, _inverted(m), None), dtype):
                    raise CheckFailed(f"{what}: tgt_padding_mask is not used; pass it to the "
                                      "self-attention (as key_padding_mask, inverted).")
        compare(out, expected, what, hint="_sa_block(x, ...) is self.self_attn(x, x, x, "
                "attn_mask=..., key_padding_mask=..., need_weights=False)[0], then dropout1.")


def _close_to_block(out, other, dtype) -> bool:
    return isinstance(out, torch.Tensor) and close(out, other, dtype)


@check()
def check_decoder_self_attention(cls: Subject) -> None:
    """DecoderLayer's submodules have torch's names; _sa_block(x (B, L, E), tgt_mask=None
    (L, L), tgt_padding_mask=None (B, L)), masks True = allowed, equals torch's _sa_block with the
    inverted masks: self_attn(x, x, x, ..., need_weights=False)[0], then dropout1."""
    for layer, theirs, name, where, x, _, masks, _, dtype in _layers(cls, (False,)):
        _check_sa_block(layer, theirs, name, where, x, masks[0], masks[1], dtype)


@check()
def check_decoder_cross_attention(cls: Subject) -> None:
    """DecoderLayer's submodules have torch's names; _mha_block(x (B, L, E), memory (B, S, E),
    memory_padding_mask=None (B, S)), True at the encoder's real tokens, equals torch's
    _mha_block: multihead_attn(x, memory, memory, key_padding_mask=~mask,
    need_weights=False)[0], then dropout2."""
    for layer, theirs, name, where, x, memory, masks, _, dtype in _layers(cls, (False,)):
        mha = layer.method("_mha_block")
        mem_pad = masks[2]
        for kwargs, kind in (({"memory_padding_mask": mem_pad}, "a memory_padding_mask"),
                             ({}, "no mask")):  # fmt: skip
            what = f"{name}._mha_block{where} with {kind}"
            out = calling(what, mha, x, memory, **kwargs)
            p = kwargs.get("memory_padding_mask")
            with torch.no_grad():
                expected = theirs._mha_block(x, memory, None, _inverted(p))
                if (isinstance(out, torch.Tensor) and out.shape == expected.shape
                        and not close(out, expected, dtype)):  # fmt: skip
                    from_decoder = theirs.dropout2(
                        theirs.multihead_attn(x, x, x, need_weights=False)[0]
                    )
                    if close(out, from_decoder, dtype):
                        raise CheckFailed(
                            f"{what}: the keys and values come from the decoder. In "
                            "cross-attention the queries come from the decoder and the keys and "
                            "values from the encoder's output: multihead_attn(x, memory, memory)."
                        )
                    if p is not None and _nan_safe_close(
                        out, theirs._mha_block(x, memory, None, p), dtype
                    ):
                        raise CheckFailed(
                            f"{what}: memory_padding_mask reaches nn.MultiheadAttention the wrong "
                            "way round. Ours is True at real tokens; its key_padding_mask is True "
                            f"at padding: pass ~memory_padding_mask {_ON_POLARITY}."
                        )
                    if p is not None and close(out, theirs._mha_block(x, memory, None, None),
                                               dtype):  # fmt: skip
                        raise CheckFailed(f"{what}: memory_padding_mask is not used; the decoder "
                                          "must not attend to the encoder's padding.")
            compare(out, expected, what, hint="_mha_block(x, memory, ...) is self.multihead_attn("
                    "x, memory, memory, key_padding_mask=..., need_weights=False)[0], then "
                    "dropout2.")


def _through_own_blocks(layer, theirs, x, memory, kwargs, norm_first, what, activation=F.relu):
    """The layer as the instructions define it, through the student's own _sa_block and
    _mha_block (each graded in its own cell) and torch's feed-forward network (with
    `activation`) and LayerNorms holding the same weights; None when a block cannot be called."""
    sa, mha = layer.method("_sa_block"), layer.method("_mha_block")
    masks = {k: kwargs.get(k) for k in ("tgt_mask", "tgt_padding_mask")}
    cross = {"memory_padding_mask": kwargs.get("memory_padding_mask")}

    def ff(h):
        return theirs.linear2(activation(theirs.linear1(h)))  # dropout 0

    try:
        with torch.no_grad():
            if norm_first:
                h = x + calling(what, sa, theirs.norm1(x), **masks)
                h = h + calling(what, mha, theirs.norm2(h), memory, **cross)
                return h + ff(theirs.norm3(h))
            h = theirs.norm1(x + calling(what, sa, x, **masks))
            h = theirs.norm2(h + calling(what, mha, h, memory, **cross))
            return theirs.norm3(h + ff(h))
    except (CheckFailed, TypeError, RuntimeError):
        return None


def _wired_right(out, expected, own, dtype) -> bool:
    """The layer's output equals torch's, or (when its own blocks differ from torch's, which
    their cells charge) the instructions' formula through its own blocks."""
    if close(out, expected, dtype):
        return True
    return own is not None and not close(own, expected, dtype) and _nan_safe_close(out, own, dtype)


def _name_forward_mistake(layer, theirs, what, x, memory, masks, norm_first, dtype) -> None:
    causal, tgt_pad, mem_pad = masks
    kwargs = {"tgt_mask": causal, "tgt_padding_mask": tgt_pad, "memory_padding_mask": mem_pad}
    if _leaks(layer, x, (memory,), {"tgt_mask": causal, "memory_padding_mask": mem_pad}, what):
        raise CheckFailed(
            f"{what}: changing the decoder's tokens after position t changes its outputs at "
            "positions up to t: the future leaks in. forward must hand tgt_mask on to the "
            "self-attention block."
        )
    changed = memory.clone()
    changed[~mem_pad] = 5.0
    out = calling(what, layer, x, memory, **kwargs)
    after = calling(what, layer, x, changed, **kwargs)
    if isinstance(after, torch.Tensor) and isinstance(out, torch.Tensor) and not _nan_safe_close(
        after, out, dtype
    ):
        raise CheckFailed(
            f"{what}: the outputs changed when only the encoder's padding did: forward must hand "
            "memory_padding_mask on to the cross-attention block."
        )
    changed = x.clone()
    changed[~tgt_pad] = 5.0
    no_causal = {"tgt_padding_mask": tgt_pad, "memory_padding_mask": mem_pad}
    before = calling(what, layer, x, memory, **no_causal)
    after = calling(what, layer, changed, memory, **no_causal)
    if (isinstance(after, torch.Tensor) and isinstance(before, torch.Tensor)
            and after.shape == before.shape == x.shape
            and not _nan_safe_close(after[tgt_pad], before[tgt_pad], dtype)):  # fmt: skip
        raise CheckFailed(
            f"{what}: the outputs at real tokens changed when only the decoder's padding did: "
            "forward must hand tgt_padding_mask on to the self-attention block."
        )
    other = _torch_layer(x.size(-1), theirs.self_attn.num_heads, theirs.linear1.out_features,
                         not norm_first, 0, x.device, dtype)  # fmt: skip
    other.load_state_dict(theirs.state_dict())
    with torch.no_grad():
        flipped = other(x, memory, tgt_mask=~causal, tgt_key_padding_mask=~tgt_pad,
                        memory_key_padding_mask=~mem_pad)  # fmt: skip
        own_flipped = _through_own_blocks(layer, theirs, x, memory, kwargs, not norm_first, what)
    if _wired_right(out, flipped, own_flipped, dtype):
        order = "pre-LN" if norm_first else "post-LN"
        raise CheckFailed(f"{what}: this is {'post-LN' if norm_first else 'pre-LN'}; with "
                          f"norm_first={norm_first} the layer is {order}.")
    sa, mha = layer.method("_sa_block"), layer.method("_mha_block")
    with torch.no_grad():
        try:
            if norm_first:
                h = x + calling(what, mha, theirs.norm2(x), memory, memory_padding_mask=mem_pad)
                h = h + calling(what, sa, theirs.norm1(h), tgt_mask=causal,
                                tgt_padding_mask=tgt_pad)  # fmt: skip
                swapped = h + theirs._ff_block(theirs.norm3(h))
            else:
                h = theirs.norm2(x + calling(what, mha, x, memory, memory_padding_mask=mem_pad))
                h = theirs.norm1(h + calling(what, sa, h, tgt_mask=causal,
                                             tgt_padding_mask=tgt_pad))  # fmt: skip
                swapped = theirs.norm3(h + theirs._ff_block(h))
        except CheckFailed:
            swapped = None
    if swapped is not None and _nan_safe_close(out, swapped, dtype):
        raise CheckFailed(f"{what}: the sublayers are in the wrong order: self-attention first, "
                          "then cross-attention, then the feed-forward network.")
    for activation, kind in ((F.gelu, "a GELU"), (lambda h: h, "no activation")):
        own = _through_own_blocks(layer, theirs, x, memory, kwargs, norm_first, what, activation)
        if own is not None and _nan_safe_close(out, own, dtype):
            raise CheckFailed(f"{what}: the feed-forward network has {kind}; it is "
                              "linear2(dropout(relu(linear1(x)))), with a ReLU, as in "
                              "nn.TransformerDecoderLayer.")


@check()
def check_decoder_layer(cls: Subject) -> None:
    """DecoderLayer(d_model, nhead, dim_feedforward=2048, dropout=0.0, norm_first=False,
    eps=1e-5).forward(tgt (B, L, E), memory (B, S, E), tgt_mask=None (L, L),
    tgt_padding_mask=None (B, L), memory_padding_mask=None (B, S)), masks True = allowed: the
    three sublayers in order, each in its residual and LayerNorm (post-LN or pre-LN), the
    feed-forward network linear2(dropout(relu(linear1(x)))), the masks handed on; equal to
    torch's layer with the inverted masks, or to that formula through the student's own blocks
    (which their own cells grade); gradients equal torch's; dropout only in training."""
    for layer, theirs, name, where, x, memory, masks, norm_first, dtype in _layers(cls):
        causal, tgt_pad, mem_pad = masks
        kwargs = {"tgt_mask": causal, "tgt_padding_mask": tgt_pad, "memory_padding_mask": mem_pad}
        for given, kind in ((kwargs, "every mask"), ({}, "no mask")):
            what = f"{name}{where} with {kind}"
            out = calling(what, layer, x, memory, **given)
            with torch.no_grad():
                expected = theirs(
                    x, memory, tgt_mask=_inverted(given.get("tgt_mask")),
                    tgt_key_padding_mask=_inverted(given.get("tgt_padding_mask")),
                    memory_key_padding_mask=_inverted(given.get("memory_padding_mask")),
                )  # fmt: skip  # (B, L, E)
            if not isinstance(out, torch.Tensor):
                raise CheckFailed(f"{what}: expected a torch.Tensor, got {type(out).__name__}.")
            if out.shape != expected.shape:
                raise CheckFailed(f"{what}: wrong shape {tuple(out.shape)}, expected (B, L, E) "
                                  f"= {tuple(expected.shape)}.")
            own = _through_own_blocks(layer, theirs, x, memory, given, norm_first, what)
            if _wired_right(out, expected, own, dtype):
                continue
            if given:
                _name_forward_mistake(layer, theirs, what, x, memory, masks, norm_first, dtype)
            compare(out, expected, what, hint="Self-attention, then cross-attention, then the "
                    "feed-forward network linear2(dropout(relu(linear1(x)))), each inside its "
                    f"residual connection and LayerNorm, as in nn.TransformerDecoderLayer "
                    f"{_ON_DECODER}.")

    # gradients, float64 on the CPU, to the decoder's input, the memory and every parameter,
    # where the layer's output is torch's (where it is not, the cells above judged why)
    B, L, S, E, H, Fw = 2, 5, 6, 8, 2, 16
    for norm_first in (False, True):
        name, layer, theirs = _build(cls, E, H, Fw, norm_first, 7, torch.device("cpu"),
                                     torch.float64)  # fmt: skip
        name = f"{name}, backward"
        x = draw((B, L, E), 1, "cpu", torch.float64)
        memory = draw((B, S, E), 2, "cpu", torch.float64)
        grad_output = draw((B, L, E), 3, "cpu", torch.float64)
        causal, tgt_pad, mem_pad = _masks(B, L, S, 4, "cpu")
        kwargs = {"tgt_mask": causal, "tgt_padding_mask": tgt_pad, "memory_padding_mask": mem_pad}
        out, grads, params = calling(name, layer.gradients, (x, memory), kwargs, params=True,
                                     grad_output=grad_output)  # fmt: skip
        xr, mr = x.clone().requires_grad_(), memory.clone().requires_grad_()
        expected = theirs(xr, mr, tgt_mask=~causal, tgt_key_padding_mask=~tgt_pad,
                          memory_key_padding_mask=~mem_pad)  # fmt: skip
        if not close(out, expected.detach(), torch.float64):
            continue
        (expected * grad_output).sum().backward()
        for got, want, which in ((grads[0], xr.grad, "tgt"), (grads[1], mr.grad, "memory")):
            if got is None:
                raise CheckFailed(f"{name}: no gradient reaches {which}; do not detach it, and "
                                  "build the layer from torch operations only.")
            compare(got, want, f"{name}, gradient of {which}")
        for param, p in theirs.named_parameters():
            if params.get(param) is None:
                raise CheckFailed(f"{name}: no gradient reaches {param}; is it used in forward?")
            compare(params[param], p.grad, f"{name}, gradient of {param}")

    # dropout: in eval mode the layer is the same layer without dropout; in training it is not
    for norm_first in (False, True):
        cpu = torch.device("cpu")
        name, layer, _ = _build(cls, 8, 2, 16, norm_first, 9, cpu, torch.float32, dropout=0.5)
        plain_name, plain, _ = _build(cls, 8, 2, 16, norm_first, 9, cpu, torch.float32, 0.0)
        dropout_only_in_training(
            layer, name, plain, plain_name, (draw((2, 4, 8), 5), draw((2, 3, 8), 6)),
            "pass dropout on to the attention modules and the nn.Dropout modules",
        )  # fmt: skip
