"""Chapter 10's checks: what the hidden tests of ``solutions/ch10_transformer`` call.

Each check draws its inputs from fixed seeds, runs on the CPU and on CUDA when there is one, and
tests what the exercise's instructions promise, properties first, values after, naming the known
mistakes (a schedule off by one or without E^-0.5, smoothing spread over V - 1 classes, a post-LN
stack, a missing final LayerNorm, a mask the wrong way round, a cache rebuilt at every step, the
bos left in the output) and never printing tensors.

**One bug, one part.** No part calls another. ``Transformer`` is graded in four cells: the
encoder (``check_transformer_encoder``: the names of ``nn.Transformer``'s state dict, ``encode``
without masks), the decoder (``check_transformer_decoder``: ``decode`` without masks), the masks
(``check_transformer_masks``: properties first, so a wrong sublayer order does not cost this cell;
values where ``encode``/``decode`` are right without masks) and the whole (``check_transformer``:
``forward`` equals ``nn.Transformer``'s, or the student's own ``encode`` then ``decode`` where those
are wrong, which their cells charge; gradients; dropout). ``greedy_decode`` is driven on the
setup cell's ``ToyTranslator`` (a given model with a real key–value cache), never on the
student's Transformer. ``translate`` is graded on its output only: exact match on clauses the
grader draws, against :data:`EXACT_MATCH_THRESHOLD`.

Not here: the reference (``reference.py``), the banks (``wrong.py``, ``right.py``).
"""

from __future__ import annotations

import math
import random
import warnings

import torch
from torch import nn

from autograder.toolkit import (
    CheckFailed,
    LocalSubject,
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

from . import reference as ref

__all__ = [
    "check_rate",
    "check_label_smoothed_loss",
    "check_transformer_encoder",
    "check_transformer_decoder",
    "check_transformer_masks",
    "check_transformer",
    "check_greedy_decode",
    "check_translate",
    "EXACT_MATCH_THRESHOLD",
]

_DTYPES = (torch.float32, torch.float64)
EXACT_MATCH_THRESHOLD = 0.9  # the share of the grader's clauses translated exactly
_GRADER_SEED = 20_261_210  # not the notebook's: fresh clauses


def _number(out, what):
    if isinstance(out, torch.Tensor) and out.dim() == 0:
        return float(out)
    if isinstance(out, bool) or not isinstance(out, (int, float)):
        raise CheckFailed(f"{what}: an int step gives a number (a Python float), not "
                          f"{type(out).__name__}.")  # fmt: skip
    return float(out)


# --------------------------------------------------------------------------------------------
# Part 1: rate
# --------------------------------------------------------------------------------------------


def _schedule(step, E, warmup, factor, *, shift=0, scale=True, power=-1.5, pick=min):
    """The schedule, or one of its usual wrong cousins."""
    s = step + shift
    if s <= 0:
        return 0.0
    return factor * (E**-0.5 if scale else 1.0) * pick(s**-0.5, s * warmup**power)


_RATE_MISTAKES = (
    ({"shift": 1}, "off by one: the schedule is evaluated at step itself (step + 1 is for a "
                   "scheduler that counts from 0, and is the caller's business)"),
    ({"shift": -1}, "off by one: the schedule is evaluated at step itself, not step - 1"),
    ({"scale": False}, "the factor d_model^-0.5 is missing: the rate is factor · d_model^-0.5 · "
                       "min(...)"),
    ({"power": -0.5}, "the warm-up branch is step · warmup^-1.5, not step · warmup^-0.5"),
    ({"pick": max}, "the rate is the min of the two branches (warm-up, then decay), not the max"),
)


@check()
def check_rate(fn: Subject) -> None:
    """rate(step, d_model, warmup, factor=1.0) = factor · d_model^-0.5 · min(step^-0.5,
    step · warmup^-1.5): a number for an int step (0 for step 0), a floating tensor of the
    steps' shape and device for a tensor of steps (0 where the step is 0, never NaN)."""
    cases = [(1, 512, 4000, 1.0), (100, 512, 4000, 1.0), (4000, 512, 4000, 1.0),
             (4001, 512, 4000, 1.0), (50_000, 64, 1000, 2.0), (7, 32, 8, 0.5), (3, 16, 4, 1.0),
             (9, 16, 4, 1.0)]  # fmt: skip
    for step, E, warmup, factor in cases:
        what = f"rate({step}, d_model={E}, warmup={warmup}, factor={factor})"
        value = _number(calling(what, fn, step, E, warmup, factor=factor), what)
        expected = ref.rate(step, E, warmup, factor)
        if math.isclose(value, expected, rel_tol=1e-6):
            continue
        for kwargs, message in _RATE_MISTAKES:
            if math.isclose(value, _schedule(step, E, warmup, factor, **kwargs), rel_tol=1e-6):
                raise CheckFailed(f"{what}: {message}.")
        raise CheckFailed(f"{what}: wrong value; the rate is factor · d_model^-0.5 · "
                          "min(step^-0.5, step · warmup^-1.5).")  # fmt: skip
    what = "rate(64, d_model=256, warmup=100) (factor left out)"
    value = _number(calling(what, fn, 64, 256, 100), what)
    if not math.isclose(value, ref.rate(64, 256, 100), rel_tol=1e-6):
        raise CheckFailed(f"{what}: factor defaults to 1.0.")
    what = "rate(0, d_model=512, warmup=4000)"
    try:
        value = _number(calling(what, fn, 0, 512, 4000), what)
    except CheckFailed as exc:
        raise CheckFailed(f"{exc} Step 0 must give 0 (the min of step^-0.5 = +inf and "
                          "step · warmup^-1.5 = 0).") from None
    if value != 0.0:
        raise CheckFailed(f"{what}: step 0 must give 0 (the min of step^-0.5 = +inf and "
                          "step · warmup^-1.5 = 0), not NaN or an error.")  # fmt: skip

    steps = [0, 1, 2, 10, 99, 100, 101, 1000, 5000]
    for device in check_devices():
        for dtype in (torch.long, torch.int32, torch.float32, torch.float64):
            for shape in ((9,), (3, 3)):
                tensor = torch.tensor(steps, dtype=dtype, device=device).reshape(shape)
                what = (f"rate(a tensor of steps of shape {shape}, {dtype}, {device.type}, "
                        "d_model=64, warmup=100)")  # fmt: skip
                out = calling(what, fn, tensor, 64, 100)
                if not isinstance(out, torch.Tensor):
                    raise CheckFailed(f"{what}: a tensor of steps gives a tensor, not "
                                      f"{type(out).__name__}.")  # fmt: skip
                if tuple(out.shape) != shape:
                    raise CheckFailed(f"{what}: wrong shape {tuple(out.shape)}; one rate per "
                                      f"step, {shape}.")  # fmt: skip
                if not out.is_floating_point():
                    raise CheckFailed(f"{what}: the rates are {out.dtype}; they must be a "
                                      "floating tensor (an integer tensor rounds them to 0).")
                if out.device.type != device.type:
                    raise CheckFailed(f"{what}: the result is on {out.device.type}; keep the "
                                      "steps' device.")  # fmt: skip
                if bool(torch.isnan(out).any()):
                    raise CheckFailed(f"{what}: the result contains NaN; step 0 must give 0 "
                                      "(the min of +inf and 0).")  # fmt: skip
                expected = torch.tensor([ref.rate(s, 64, 100) for s in steps],
                                        dtype=torch.float64).reshape(shape)  # fmt: skip
                if not close(out.double().cpu(), expected, tolerance=(1e-5, 1e-9)):
                    raise CheckFailed(f"{what}: wrong values; each is factor · d_model^-0.5 · "
                                      "min(step^-0.5, step · warmup^-1.5).")  # fmt: skip


# --------------------------------------------------------------------------------------------
# Part 2: label_smoothed_loss
# --------------------------------------------------------------------------------------------


def _torch_loss(logits, target, smoothing, ignore_index):
    V = logits.size(-1)
    return nn.functional.cross_entropy(logits.reshape(-1, V), target.reshape(-1),
                                       label_smoothing=smoothing,
                                       ignore_index=ignore_index)  # fmt: skip


def _loss_cousins(logits, target, s, ignore_index):
    """Usual wrong label smoothings, each with what its message must say."""
    V = logits.size(-1)
    logp = logits.double().log_softmax(-1).reshape(-1, V)  # (N, V)
    t = target.reshape(-1)
    keep = t != ignore_index
    safe = t.masked_fill(~keep, 0)
    picked = logp.gather(1, safe[:, None]).squeeze(1)  # (N,)
    others = (logp.sum(-1) - picked) / (V - 1)  # (N,)
    per = {
        "v-1": -(1 - s) * picked - s * others,
        "plain": -(1 - s) * picked - s * logp.mean(-1),
    }
    # the Annotated Transformer's: smoothing / (V - 2) on each class but the target and padding
    pad_col = logp[:, ignore_index] if 0 <= ignore_index < V else 0.0
    per["v-2"] = -(1 - s) * picked - s * (logp.sum(-1) - picked - pad_col) / (V - 2)
    spread = ("the smoothing is spread over all V classes, the target's included (smoothing / V "
              "each, as nn.CrossEntropyLoss does), not over the V - 1 other classes or without "
              "the padding column")
    ignored = ("the targets equal to ignore_index must count for nothing: leave them out of the "
               "sum and of the count you divide by")
    cousins = []
    for kind in ("v-1", "v-2"):
        cousins.append((per[kind].masked_fill(~keep, 0).sum() / keep.sum(), spread))
    cousins.append((per["plain"].mean(), ignored))
    cousins.append((per["plain"].masked_fill(~keep, 0).sum() / t.numel(), ignored))
    cousins.append((per["plain"].masked_fill(~keep, 0).sum(), "the loss is the mean over the "
                    "targets that are not ignore_index, not the sum"))
    return cousins


@check()
def check_label_smoothed_loss(fn: Subject) -> None:
    """label_smoothed_loss(logits (..., V), target (...), smoothing=0.0, ignore_index=-100) ->
    a 0-dim tensor equal to nn.CrossEntropyLoss(label_smoothing=smoothing,
    ignore_index=ignore_index) on the flattened inputs, for any leading shape; the logits'
    dtype and device; its gradient equals torch's."""
    cases = [((6, 5), 0.1, -100), ((2, 4, 7), 0.0, 0), ((2, 4, 7), 0.1, 0), ((3, 5, 11), 0.35, 3),
             ((2, 2, 3, 9), 0.2, -100), ((8, 2), 0.5, 1)]  # fmt: skip
    for device in check_devices():
        for dtype in _DTYPES:
            for seed, (shape, s, ignore) in enumerate(cases):
                logits = draw(shape, seed, device, dtype) * 2
                g = torch.Generator().manual_seed(seed + 100)
                target = torch.randint(0, shape[-1], shape[:-1], generator=g).to(device)
                if ignore >= 0:
                    target.view(-1)[::3] = ignore  # some of the targets are ignored
                    target.view(-1)[1] = (ignore + 1) % shape[-1]  # and at least one is not
                what = (f"label_smoothed_loss(logits {shape}, smoothing={s}, ignore_index="
                        f"{ignore}, {label(dtype, device)})")  # fmt: skip
                out = calling(what, fn, logits, target, smoothing=s, ignore_index=ignore)
                expected = _torch_loss(logits, target, s, ignore)
                if isinstance(out, torch.Tensor) and out.numel() == 1 and not close(
                    out.reshape(()).to(dtype), expected, dtype
                ):
                    for value, message in _loss_cousins(logits, target, s, ignore):
                        if close(out.reshape(()).double(), value.to(device), torch.float64,
                                 tolerance=(1e-4, 1e-6)):  # fmt: skip
                            raise CheckFailed(f"{what}: {message}.")
                if isinstance(out, torch.Tensor) and out.dim() != 0:
                    raise CheckFailed(f"{what}: the loss is one number, a 0-dim tensor (the "
                                      f"mean), not a tensor of shape {tuple(out.shape)}.")
                compare(out, expected, what, hint="It is the mean over the targets that are not "
                        "ignore_index of -(1 - smoothing) · log p(target) - smoothing · "
                        "mean over the V classes of log p.")  # fmt: skip
    # the gradient reaches the logits, as torch's does
    logits = draw((3, 4, 6), 7, "cpu", torch.float64)
    target = torch.tensor([[1, 0, 2, 5], [0, 0, 3, 4], [2, 1, 0, 0]])
    what = "label_smoothed_loss(logits (3, 4, 6), smoothing=0.1, ignore_index=0), backward"
    try:
        out, grads, _ = calling(what, fn.gradients, (logits, target),
                                {"smoothing": 0.1, "ignore_index": 0})  # fmt: skip
    except CheckFailed as exc:
        raise CheckFailed(f"{exc} No gradient reaches the logits: build the loss from torch "
                          "operations on them.") from None
    leaf = logits.clone().requires_grad_()
    _torch_loss(leaf, target, 0.1, 0).backward()
    if not grads or grads[0] is None:
        raise CheckFailed(f"{what}: no gradient reaches the logits; build the loss from torch "
                          "operations on them (no .item(), .detach() or numpy).")  # fmt: skip
    compare(grads[0], leaf.grad, f"{what}, gradient of the logits")


# --------------------------------------------------------------------------------------------
# Part 3: Transformer
# --------------------------------------------------------------------------------------------

# (B, S, L, E, H, encoder layers, decoder layers, F): S != L both ways, one head, one layer.
_SHAPES = [(2, 5, 4, 8, 2, 2, 2, 16), (3, 4, 6, 12, 3, 1, 2, 24), (2, 3, 1, 8, 1, 2, 1, 8)]
_ON_PRE_LN = ("pre-LN: x + sublayer(norm(x)) in every layer, and one more LayerNorm (encoder.norm, "
              "decoder.norm) at the end of each stack (chapter 6)")


def _torch_transformer(E, H, n_enc, n_dec, Fw, seed, device, dtype, norm_first=True,
                       dropout=0.0):  # fmt: skip
    """nn.Transformer (batch_first) with random weights: LayerNorm gains near 1, biases near 0,
    so that a missing LayerNorm or bias shows."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "enable_nested_tensor is True, but ... norm_first"
        model = nn.Transformer(E, H, n_enc, n_dec, Fw, dropout=dropout, batch_first=True,
                               norm_first=norm_first)  # fmt: skip
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.3)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)
    # train mode (with dropout 0) keeps torch off its inference fast paths
    return model.to(device=device, dtype=dtype).train()


def _build(cls: Subject, dims, seed, device, dtype, dropout=None):
    """(label, the student's Transformer holding the weights of torch's, torch's)."""
    E, H, n_enc, n_dec, Fw = dims
    args = f"{E}, {H}, {n_enc}, {n_dec}, {Fw}"
    name = f"Transformer({args}{'' if dropout is None else f', dropout={dropout}'})"
    kwargs = {} if dropout is None else {"dropout": dropout}
    model = calling(name, cls.seeded(0), E, H, n_enc, n_dec, Fw, **kwargs)
    if not isinstance(model, Subject):
        raise CheckFailed(f"{name} must construct an nn.Module.")
    theirs = _torch_transformer(E, H, n_enc, n_dec, Fw, 100 + seed, device, dtype,
                                dropout=dropout or 0.0)  # fmt: skip
    state = theirs.state_dict()
    info = model.describe()
    ours = set(info["state"])
    if ours != set(state):
        missing, extra = sorted(set(state) - ours), sorted(ours - set(state))
        raise CheckFailed(
            f"{name}: its parameters must have nn.Transformer's names (encoder.layers.<i>."
            "self_attn..., encoder.norm, decoder.layers.<i>.multihead_attn..., decoder.norm), so "
            f"that its state dict loads as it is; missing {missing[:3] or 'none'}, unexpected "
            f"{extra[:3] or 'none'}."
        )
    calling(f"{name}.to({device.type}, {dtype})", model.to, device, dtype)
    calling(f"{name}.load_state_dict(nn.Transformer's state dict)", model.load_state_dict,
            {k: v.detach() for k, v in state.items()})  # fmt: skip
    return f"Transformer({args})", model, theirs


def _key_padding(B, n, seed, device):
    """(B, n) bool, True at real tokens (at the end: padding), the first row unpadded."""
    g = torch.Generator().manual_seed(seed + 300)
    lengths = torch.randint(1, n + 1, (B,), generator=g)
    lengths[0] = n
    return (torch.arange(n)[None, :] < lengths[:, None]).to(device)  # (B, n)


def _cases(cls: Subject, dtypes=_DTYPES):
    """(label, model, torch's, where, src, tgt, masks, dtype) for every device, dtype, shape;
    masks = (causal (L, L), src padding (B, S), tgt padding (B, L))."""
    for device in check_devices():
        for dtype in dtypes:
            for seed, (B, S, L, *dims) in enumerate(_SHAPES):
                name, model, theirs = _build(cls, dims, seed, device, dtype)
                E = dims[0]
                src = draw((B, S, E), seed, device, dtype)  # (B, S, E)
                tgt = draw((B, L, E), seed + 50, device, dtype)  # (B, L, E)
                causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()  # (L, L)
                masks = causal, _key_padding(B, S, seed, device), _key_padding(B, L, seed + 7,
                                                                               device)
                where = f"(B={B}, S={S}, L={L}, E={E}, {label(dtype, device)})"
                yield name, model, theirs, where, src, tgt, masks, dtype


def _other_norm(theirs, norm_first, final_norm=True):
    """torch's model with the same weights, the other LayerNorm placement, or no final norms."""
    E = theirs.d_model
    first = theirs.encoder.layers[0]
    other = _torch_transformer(E, theirs.nhead, len(theirs.encoder.layers),
                               len(theirs.decoder.layers), first.linear1.out_features, 0,
                               first.linear1.weight.device, first.linear1.weight.dtype,
                               norm_first=norm_first)  # fmt: skip
    other.load_state_dict(theirs.state_dict())
    if not final_norm:
        other.encoder.norm, other.decoder.norm = None, None
    return other


def _encode_mistake(out, theirs, src, dtype, what):
    with torch.no_grad():
        for norm_first, final, message in (
            (False, True, "this is post-LN, norm(x + sublayer(x)); the exercise asks for "
                          + _ON_PRE_LN),
            (False, False, "this is post-LN, norm(x + sublayer(x)); the exercise asks for "
                           + _ON_PRE_LN),
            (True, False, "the final LayerNorm of the stack (encoder.norm) is missing; a pre-LN "
                          "stack ends with one"),
        ):
            if close(out, _other_norm(theirs, norm_first, final).encoder(src), dtype):
                raise CheckFailed(f"{what}: {message}.")


def _decode_mistake(out, theirs, tgt, memory, dtype, what):
    with torch.no_grad():
        for norm_first, final, message in (
            (False, True, "this is post-LN, norm(x + sublayer(x)); the exercise asks for "
                          + _ON_PRE_LN),
            (False, False, "this is post-LN, norm(x + sublayer(x)); the exercise asks for "
                           + _ON_PRE_LN),
            (True, False, "the final LayerNorm of the stack (decoder.norm) is missing; a pre-LN "
                          "stack ends with one"),
        ):
            if close(out, _other_norm(theirs, norm_first, final).decoder(tgt, memory), dtype):
                raise CheckFailed(f"{what}: {message}.")


def _tensor(out, expected, what):
    if not isinstance(out, torch.Tensor):
        raise CheckFailed(f"{what}: expected a torch.Tensor, got {type(out).__name__}.")
    if out.shape != expected.shape:
        raise CheckFailed(f"{what}: wrong shape {tuple(out.shape)}, expected "
                          f"{tuple(expected.shape)}.")  # fmt: skip


@check()
def check_transformer_encoder(cls: Subject) -> None:
    """Transformer(d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward,
    dropout=0.0, eps=1e-5) has nn.Transformer's parameter names; encode(src (B, S, E)) equals
    nn.Transformer(norm_first=True, batch_first=True).encoder(src) with the same weights: pre-LN
    layers, then the final LayerNorm."""
    for name, model, theirs, where, src, _, _, dtype in _cases(cls):
        what = f"{name}.encode{where}"
        out = calling(what, model.method("encode"), src)
        with torch.no_grad():
            expected = theirs.encoder(src)  # (B, S, E)
        _tensor(out, expected, what)
        if not close(out, expected, dtype):
            _encode_mistake(out, theirs, src, dtype, what)
        compare(out, expected, what, hint="Each layer is x + self_attn(norm1(x)), then x + "
                "linear2(relu(linear1(norm2(x)))); then encoder.norm.")  # fmt: skip


@check()
def check_transformer_decoder(cls: Subject) -> None:
    """decode(tgt (B, L, E), memory (B, S, E)) with no masks equals nn.Transformer(norm_first=True,
    batch_first=True).decoder(tgt, memory) with the same weights: pre-LN self-attention,
    cross-attention (keys and values from memory), feed-forward network, then the final
    LayerNorm."""
    for name, model, theirs, where, src, tgt, _, dtype in _cases(cls):
        what = f"{name}.decode{where}"
        memory = src
        out = calling(what, model.method("decode"), tgt, memory)
        with torch.no_grad():
            expected = theirs.decoder(tgt, memory)  # (B, L, E)
        _tensor(out, expected, what)
        if not close(out, expected, dtype):
            _decode_mistake(out, theirs, tgt, memory, dtype, what)
        compare(out, expected, what, hint="Each layer is x + self_attn(norm1(x)), x + "
                "multihead_attn(norm2(x), memory, memory), x + linear2(relu(linear1(norm3(x)))); "
                "then decoder.norm.")  # fmt: skip


_ON_MASKS = ("our masks are True where attention is allowed; nn.MultiheadAttention's attn_mask and "
             "key_padding_mask are True where it is NOT: pass ~mask")


def _changed(x, where_false):
    """x with the positions where `where_false` is False (B, n) replaced by other values."""
    out = x.clone()
    out[~where_false] = out[~where_false].flip(-1) * 3.0 + 1.0
    return out


def _nan_safe_close(a, b, dtype):
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape \
        and close(a.nan_to_num(), b.nan_to_num(), dtype)


@check()
def check_transformer_masks(cls: Subject) -> None:
    """The masks, True = allowed: encode's src_padding_mask (B, S) keeps the encoder's real tokens
    from seeing padding; decode's tgt_mask (L, L) keeps the future out, tgt_padding_mask (B, L)
    the target's padding, memory_padding_mask (B, S) the source's padding; with a correct
    encode and decode, the values equal nn.Transformer's with the inverted masks."""
    for name, model, theirs, where, src, tgt, masks, dtype in _cases(cls, (torch.float64,)):
        causal, src_pad, tgt_pad = masks
        encode, decode = model.method("encode"), model.method("decode")
        what = f"{name}.encode{where} with src_padding_mask"
        out = calling(what, encode, src, src_padding_mask=src_pad)
        after = calling(what, encode, _changed(src, src_pad), src_padding_mask=src_pad)
        if not (isinstance(out, torch.Tensor) and isinstance(after, torch.Tensor)
                and out.shape == after.shape == src.shape):  # fmt: skip
            raise CheckFailed(f"{what}: expected a tensor of the input's shape (B, S, E).")
        if not _nan_safe_close(out[src_pad], after[src_pad], dtype):
            raise CheckFailed(f"{what}: the outputs at real tokens changed when only the padding "
                              f"did; src_padding_mask is not used, or not as a key padding "
                              f"mask the right way round ({_ON_MASKS}).")  # fmt: skip
        memory = src
        what = f"{name}.decode{where} with memory_padding_mask"
        out = calling(what, decode, tgt, memory, memory_padding_mask=src_pad)
        after = calling(what, decode, tgt, _changed(memory, src_pad), memory_padding_mask=src_pad)
        if not _nan_safe_close(out, after, dtype):
            raise CheckFailed(f"{what}: the outputs changed when only the memory's padding did; "
                              f"memory_padding_mask is not used in the cross-attention, or not "
                              f"the right way round ({_ON_MASKS}).")  # fmt: skip
        L = tgt.size(1)
        if L > 1:
            what = f"{name}.decode{where} with tgt_mask (causal)"
            out = calling(what, decode, tgt, memory, tgt_mask=causal)
            changed = tgt.clone()
            changed[:, L // 2:] = changed[:, L // 2:] * 3.0 + 1.0
            after = calling(what, decode, changed, memory, tgt_mask=causal)
            if not _nan_safe_close(out[:, : L // 2], after[:, : L // 2], dtype):
                raise CheckFailed(f"{what}: changing later target positions changed earlier "
                                  f"outputs: the future leaks in. tgt_mask must reach the "
                                  f"self-attention, the right way round ({_ON_MASKS}).")
        what = f"{name}.decode{where} with tgt_padding_mask"
        out = calling(what, decode, tgt, memory, tgt_padding_mask=tgt_pad)
        after = calling(what, decode, _changed(tgt, tgt_pad), memory, tgt_padding_mask=tgt_pad)
        if not _nan_safe_close(out[tgt_pad], after[tgt_pad], dtype):
            raise CheckFailed(f"{what}: the outputs at real target tokens changed when only the "
                              f"target's padding did; tgt_padding_mask is not used, or not the "
                              f"right way round ({_ON_MASKS}).")  # fmt: skip
        # values, where encode and decode are right without masks (their cells judge them)
        with torch.no_grad():
            plain = close(calling(what, encode, src), theirs.encoder(src), dtype) and close(
                calling(what, decode, tgt, memory), theirs.decoder(tgt, memory), dtype)
            if not plain:
                continue
            what = f"{name}.encode{where} with src_padding_mask"
            compare(calling(what, encode, src, src_padding_mask=src_pad),
                    theirs.encoder(src, src_key_padding_mask=~src_pad), what,
                    hint="The padding mask goes to self_attn as key_padding_mask=~mask.")
            what = f"{name}.decode{where} with every mask"
            out = calling(what, decode, tgt, memory, tgt_mask=causal, tgt_padding_mask=tgt_pad,
                          memory_padding_mask=src_pad)  # fmt: skip
            expected = theirs.decoder(tgt, memory, tgt_mask=~causal,
                                      tgt_key_padding_mask=~tgt_pad,
                                      memory_key_padding_mask=~src_pad)  # fmt: skip
            compare(out, expected, what, hint="tgt_mask and tgt_padding_mask go to self_attn, "
                    "memory_padding_mask to multihead_attn, each inverted.")  # fmt: skip


_TORCH_MASK = {"tgt_mask": "tgt_mask", "src_padding_mask": "src_key_padding_mask",
               "tgt_padding_mask": "tgt_key_padding_mask",
               "memory_padding_mask": "memory_key_padding_mask"}  # fmt: skip


def _name_dropped_mask(out, theirs, src, tgt, inverted, dtype, what):
    """Name a mask that forward does not hand on, when leaving it out gives the output."""
    for name in inverted:
        kept = {_TORCH_MASK[k]: v for k, v in inverted.items() if k != name}
        with torch.no_grad():
            if _nan_safe_close(out, theirs(src, tgt, **kept), dtype):
                to = "encode" if name == "src_padding_mask" else "decode"
                raise CheckFailed(f"{what}: forward must hand {name} on to {to}; the output is "
                                  f"nn.Transformer's without it.")  # fmt: skip


@check()
def check_transformer(cls: Subject) -> None:
    """forward(src, tgt, tgt_mask=None, src_padding_mask=None, tgt_padding_mask=None,
    memory_padding_mask=None) equals nn.Transformer(norm_first=True, batch_first=True) with the
    inverted masks (or, where encode or decode is wrong, which their cells charge, the student's
    own decode(tgt, encode(src, src_padding_mask), ...)); gradients equal torch's; dropout only
    in training."""
    for name, model, theirs, where, src, tgt, masks, dtype in _cases(cls):
        causal, src_pad, tgt_pad = masks
        kwargs = {"tgt_mask": causal, "src_padding_mask": src_pad, "tgt_padding_mask": tgt_pad,
                  "memory_padding_mask": src_pad}  # fmt: skip
        for given, kind in ((kwargs, "every mask"), ({}, "no mask")):
            what = f"{name}{where} with {kind}"
            out = calling(what, model, src, tgt, **given)
            with torch.no_grad():
                inv = {k: None if v is None else ~v for k, v in given.items()}
                expected = theirs(src, tgt, tgt_mask=inv.get("tgt_mask"),
                                  src_key_padding_mask=inv.get("src_padding_mask"),
                                  tgt_key_padding_mask=inv.get("tgt_padding_mask"),
                                  memory_key_padding_mask=inv.get("memory_padding_mask"))
            _tensor(out, expected, what)
            if close(out, expected, dtype):
                continue
            enc = {"src_padding_mask": given.get("src_padding_mask")}
            dec = {k: given.get(k) for k in ("tgt_mask", "tgt_padding_mask",
                                             "memory_padding_mask")}  # fmt: skip
            try:
                own = model.method("decode")(tgt, model.method("encode")(src, **enc), **dec)
            except Exception:  # the student's encode or decode fails: their cells say why
                own = None
            if (isinstance(own, torch.Tensor) and not close(own, expected, dtype)
                    and _nan_safe_close(out, own, dtype)):  # fmt: skip
                continue
            _name_dropped_mask(out, theirs, src, tgt, inv, dtype, what)
            compare(out, expected, what, hint="forward is decode(tgt, encode(src, "
                    "src_padding_mask), tgt_mask, tgt_padding_mask, memory_padding_mask).")
    # gradients, float64 on the CPU, where the output is torch's
    name, model, theirs = _build(cls, (8, 2, 1, 1, 16), 5, torch.device("cpu"), torch.float64)
    name = f"{name}, backward"
    B, S, L = 2, 4, 3
    src, tgt = draw((B, S, 8), 1, "cpu", torch.float64), draw((B, L, 8), 2, "cpu", torch.float64)
    grad_output = draw((B, L, 8), 3, "cpu", torch.float64)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    out, grads, params = calling(name, model.gradients, (src, tgt), {"tgt_mask": causal},
                                 params=True, grad_output=grad_output)  # fmt: skip
    sr, tr = src.clone().requires_grad_(), tgt.clone().requires_grad_()
    expected = theirs(sr, tr, tgt_mask=~causal)
    if close(out, expected.detach(), torch.float64):
        (expected * grad_output).sum().backward()
        for got, want, which in ((grads[0], sr.grad, "src"), (grads[1], tr.grad, "tgt")):
            if got is None:
                raise CheckFailed(f"{name}: no gradient reaches {which}; do not detach it.")
            compare(got, want, f"{name}, gradient of {which}")
        for param, p in theirs.named_parameters():
            if params.get(param) is None:
                raise CheckFailed(f"{name}: no gradient reaches {param}; is it used in forward?")
            compare(params[param], p.grad, f"{name}, gradient of {param}")
    # dropout: nothing in eval mode, something in training
    cpu = torch.device("cpu")
    name, model, _ = _build(cls, (8, 2, 1, 1, 16), 6, cpu, torch.float32, 0.5)
    plain_name, plain, _ = _build(cls, (8, 2, 1, 1, 16), 6, cpu, torch.float32, 0.0)
    dropout_only_in_training(
        model, name, plain, plain_name, (draw((2, 4, 8), 4), draw((2, 3, 8), 5)),
        "pass dropout on to the attention modules and use nn.Dropout after each sublayer",
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Part 4: greedy_decode
# --------------------------------------------------------------------------------------------


def _toy(fn: Subject, V, E, seed, device):
    """The setup cell's ToyTranslator, built where the student's code runs, and a local twin
    holding the same weights."""
    cls = fn.sibling("ToyTranslator") or LocalSubject(ref.ToyTranslator)
    model = calling(f"ToyTranslator({V}, {E})", cls.seeded(seed), V, E)
    if not isinstance(model, Subject):
        raise CheckFailed("ToyTranslator (the setup cell's) must construct a model; run the "
                          "setup cell as it is given.")  # fmt: skip
    calling(f"ToyTranslator({V}, {E}).to({device.type})", model.to, device)
    twin = ref.ToyTranslator(V, E).to(device)
    twin.load_state_dict({k: v.to(device) for k, v in model.describe()["state"].items()})
    return (model.obj if isinstance(model, LocalSubject) else model), twin.eval()


def _padded(ids, max_len, eos_id):
    """(B, T) -> (B, max_len), the missing positions eos_id."""
    out = ids.new_full((ids.size(0), max_len), eos_id)
    out[:, : ids.size(1)] = ids
    return out


def _name_decode_mistake(out, expected, src, bos_id, eos_id, use_cache, max_len, what):
    B = src.size(0)
    starts_with_bos = out.dim() == 2 and out.size(0) == B and out.size(1) >= 1 and bool(
        (out[:, 0] == bos_id).all())
    if starts_with_bos and not bool((expected[:, 0] == bos_id).all()):
        raise CheckFailed(f"{what}: the result starts with bos_id; return the generated ids "
                          "only, without the bos the decoder started from.")  # fmt: skip
    if out.dim() == 2 and out.size(1) > max_len:
        raise CheckFailed(f"{what}: {out.size(1)} ids per row; at most max_len = {max_len}.")
    if out.dim() == 2 and out.size(0) == B and out.size(1) <= max_len:
        got = _padded(out.cpu().long(), max_len, eos_id)
        want = _padded(expected.cpu(), max_len, eos_id)
        ended = (want == eos_id).long().cumsum(1) > 0  # (B, max_len): at or after the eos
        first = ended & ((want == eos_id).long().cumsum(1) == 1) & (want == eos_id)
        if torch.equal(got[~ended | first], want[~ended | first]):
            raise CheckFailed(f"{what}: the ids are right up to each row's eos, wrong after it; "
                              "after a row's eos_id every later position holds eos_id.")
    if use_cache:
        raise CheckFailed(f"{what}: with use_cache=True the ids differ from decoding without "
                          "the cache; pass decode only the newest token, ys[:, -1:], and the "
                          "same cache dict at every step (one dict for the whole decoding: "
                          "the model keeps the earlier keys and values in it).")


@check()
def check_greedy_decode(fn: Subject) -> None:
    """greedy_decode(model, src (B, S), max_len, bos_id, eos_id, use_cache=False) -> long (B, T),
    T <= max_len, on src's device: the argmax of the last position's logits at every step,
    without the bos, eos_id after a row's eos; the same with use_cache=True (decode given only
    the newest token and one cache dict) as without (decode given the whole prefix)."""
    cases = [(12, 16, 4, 5, 10), (20, 16, 3, 7, 15), (9, 8, 1, 4, 6), (12, 16, 5, 3, 1)]
    for device in check_devices():
        for seed, (V, E, B, S, max_len) in enumerate(cases):
            model, twin = _toy(fn, V, E, seed, device)
            g = torch.Generator().manual_seed(seed + 500)
            src = torch.randint(3, V, (B, S), generator=g).to(device)
            bos_id = 1
            free = ref.greedy_decode(twin, src, max_len, bos_id, -1)  # (B, max_len): no eos
            eos_choices = [int(free[0, min(2, max_len - 1)])]  # row 0 ends early, maybe others
            unused = sorted(set(range(3, V)) - set(free.flatten().tolist()))
            if unused:
                eos_choices.append(unused[0])  # no row ends: max_len ids
            for eos_id in eos_choices:
                expected = ref.greedy_decode(twin, src, max_len, bos_id, eos_id)  # (B, T)
                for use_cache in (False, True):
                    what = (f"greedy_decode(ToyTranslator, src (B={B}, S={S}), max_len="
                            f"{max_len}, bos_id={bos_id}, eos_id={eos_id}, use_cache="
                            f"{use_cache}, {device.type})")  # fmt: skip
                    out = calling(what, fn, model, src, max_len, bos_id, eos_id,
                                  use_cache=use_cache)  # fmt: skip
                    if not isinstance(out, torch.Tensor):
                        raise CheckFailed(f"{what}: expected a torch.Tensor of ids, got "
                                          f"{type(out).__name__}.")  # fmt: skip
                    if out.dtype != torch.long:
                        raise CheckFailed(f"{what}: the ids are {out.dtype}; return a long "
                                          "tensor (argmax gives one).")  # fmt: skip
                    if out.device.type != device.type:
                        raise CheckFailed(f"{what}: the ids are on {out.device.type}; keep "
                                          "src's device.")  # fmt: skip
                    if out.dim() != 2 or out.size(0) != B:
                        raise CheckFailed(f"{what}: wrong shape {tuple(out.shape)}; one row of "
                                          f"ids per sentence, (B, T) with B = {B}.")
                    good = out.size(1) <= max_len and torch.equal(
                        _padded(out.cpu(), max_len, eos_id), _padded(expected.cpu(), max_len,
                                                                     eos_id))  # fmt: skip
                    if good:
                        continue
                    _name_decode_mistake(out, expected, src, bos_id, eos_id, use_cache,
                                         max_len, what)  # fmt: skip
                    raise CheckFailed(f"{what}: wrong ids. Start from ys = bos (B, 1); at each "
                                      "step decode(ys, memory) (the whole prefix), take the "
                                      "argmax of the *last* position's logits and append it.")


# --------------------------------------------------------------------------------------------
# Part 5: translate, with a trained model
# --------------------------------------------------------------------------------------------


@check()
def check_translate(fn: Subject) -> None:
    """translate(sentences: list of str) -> list of str, one translation per sentence (words
    separated by spaces), at least EXACT_MATCH_THRESHOLD of them exactly right on 200 clauses of
    3 to 6 words that the grader draws."""
    rng = random.Random(_GRADER_SEED)
    pairs = [ref.make_pair(rng, rng.randint(3, 6)) for _ in range(200)]
    sources = [p[0] for p in pairs]
    what = "translate(200 source clauses of 3 to 6 words)"
    out = calling(what, fn, sources)
    if not isinstance(out, (list, tuple)) or not all(isinstance(o, str) for o in out):
        raise CheckFailed(f"{what}: return a list of strings, one translation per sentence.")
    if len(out) != len(sources):
        raise CheckFailed(f"{what}: {len(out)} translations for {len(sources)} sentences; one "
                          "each, in the same order.")  # fmt: skip
    right = sum(o.split() == t.split() for o, (_, t) in zip(out, pairs, strict=True))
    share = right / len(pairs)
    if share < EXACT_MATCH_THRESHOLD:
        copied = sum(o.split() == s.split() for o, s in zip(out, sources, strict=True))
        hint = (" Most outputs are the source sentence itself: decode the target ids with the "
                "target vocabulary." if copied > len(pairs) // 2 else "")
        raise CheckFailed(f"{what}: exact match {100 * share:.1f}% of the sentences, below the "
                          f"{100 * EXACT_MATCH_THRESHOLD:.0f}% asked for. Train longer or check "
                          f"the training loop (the warm-up, the loss on the shifted target, "
                          f"eval mode when translating).{hint}")  # fmt: skip
    what = "translate(['dog sees cat'])"
    one = calling(what, fn, ["dog sees cat"])
    if not isinstance(one, (list, tuple)) or len(one) != 1 or not isinstance(one[0], str):
        raise CheckFailed(f"{what}: a list of one sentence gives a list of one string.")
