"""Chapter 6's checks: what the hidden tests of ``solutions/ch06_add_and_norm`` call.

Each check draws its inputs from fixed seeds, runs on the CPU and on CUDA when there is one, in
float32 and float64, and tests what the instructions promise, properties first (parameter names
and shapes, the result's shape, dtype and device, no NaN), values after, so a failure names the
property.

**One bug, one part, through handles.** ``AddNorm`` builds the student's ``LayerNorm`` and
``EncoderLayer`` builds the student's ``PositionwiseFeedForward`` and ``AddNorm``: classes, which
the grader's stand-ins (functions answering from outside the sandbox, with data) cannot replace.
So the later checks compute what they expect *from the student's own submodules*: ``AddNorm``'s
expected output is built by calling its own ``norm`` (and a sublayer that lives in the student's
process); ``EncoderLayer``'s by calling its own ``add_norm1``, ``add_norm2``, ``ffn`` and
``_sa_block``. A wrong LayerNorm or FFN then gives the same wrong numbers on both sides and costs
only its own part; what the later part is checked for is how it wires its pieces together. The
attention sublayer, torch's ``nn.MultiheadAttention``, is checked against torch directly.

Not here: the reference (``reference.py``) and the known-wrong implementations (``wrong.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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
    dtype_name,
    label,
)

from . import wrong
from .reference import PositionwiseFeedForward

__all__ = [
    "check_layer_norm",
    "check_layer_norm_shape",
    "check_layer_norm_affine",
    "check_add_norm",
    "check_positionwise_feed_forward",
    "check_encoder_layer",
]

_DTYPES = (torch.float32, torch.float64)
# (leading dims, E): one token, a batch of sequences, extra leading dims, tiny widths.
_LN_SHAPES = [((3, 4), 16), ((5,), 8), ((2, 3, 4), 6), ((1, 1), 4), ((4, 7), 32)]


def _randn(*shape, g, scale=1.0, shift=0.0):
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift


def _where(device, dtype, shape) -> str:
    return f"(x of shape {tuple(shape)}, {label(dtype, device)})"


def _raw(handle):
    """What to pass to the student's code: a handle stays a handle in the sandbox; in-process
    the object itself, so that the student's code calls it as it would in a notebook."""
    return handle.obj if isinstance(handle, LocalSubject) else handle


def _random_state(state: dict, seed: int) -> dict:
    """The same names and shapes, with random values (gains near 1, the rest small)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            noise = torch.randn(value.shape, generator=g, dtype=torch.float64)
            out[name] = (1.0 + 0.3 * noise if name.endswith("norm.weight") else 0.3 * noise).to(
                value.dtype
            )
        else:
            out[name] = value
    return out


# --------------------------------------------------------------------------------------------
# Part 1: LayerNorm
# --------------------------------------------------------------------------------------------


# What a known mistake of the wrong bank computes, and what to tell the student who made it.
_LN_MISTAKES = (
    (
        wrong.LayerNormOverSequence,
        "the statistics are taken across the positions of a sequence (axis -2); LayerNorm "
        "normalizes each token over its own features, the last dimension",
    ),
    (
        wrong.LayerNormOverBatch,
        "the statistics are taken across the batch (axis 0), as BatchNorm does; LayerNorm "
        "normalizes each token over its own features, the last dimension",
    ),
    (
        wrong.LayerNormUnbiasedVariance,
        "the variance is the unbiased one (dividing by E - 1); LayerNorm uses the biased "
        "variance, dividing by E",
    ),
    (
        wrong.LayerNormEpsOutsideSqrt,
        "eps is added outside the square root; it goes inside, sqrt(var + eps)",
    ),
    (
        wrong.LayerNormNoAffine,
        "the gain (weight) and the bias are not applied; multiply by weight and add bias after "
        "normalizing",
    ),
    (
        wrong.LayerNormIgnoresEps,
        "eps is ignored: use the eps the constructor was given, not a constant",
    ),
    (
        wrong.LayerNormLastDimOnly,
        "only the last dimension is normalized; with a normalized_shape of k dimensions, each "
        "token is normalized over its last k dimensions together (here the last 2 dimensions "
        "together)",
    ),
)
_SIGNATURE = (
    "Keep the signature the instructions give, nn.LayerNorm's: LayerNorm(normalized_shape, "
    "eps=1e-5, elementwise_affine=True, bias=True)."
)


def _name_ln_mistake(out, x, shape, weight, bias, eps, what) -> None:
    """Name the known mistake whose result `out` is, before the values are compared."""
    expected = F.layer_norm(x, shape, weight, bias, eps)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape or close(out, expected):
        return
    for mistake, message in _LN_MISTAKES:
        module = mistake(shape, eps=eps).to(device=x.device, dtype=x.dtype)
        module.load_state_dict({"weight": weight, "bias": bias})
        with torch.no_grad():
            if close(out, module(x)):
                raise CheckFailed(f"{what}: {message}.")


def _build_ln(cls: Subject, what: str, *args, **kwargs) -> Subject:
    """The student's LayerNorm, built with `args`; a signature that does not take the
    instructions' keywords is named."""
    try:
        return calling(what, cls.seeded(0), *args, **kwargs)
    except CheckFailed as exc:
        if "unexpected keyword argument" in str(exc):
            raise CheckFailed(f"{str(exc).rstrip('.')}. {_SIGNATURE}") from None
        raise


def _ln_input(lead, shape, seed, device, dtype):
    """x (..., *shape) with a mix of rows (large offsets, small spreads where eps matters,
    ordinary ones), a gain near 1 and a bias, from `seed`."""
    g = torch.Generator().manual_seed(seed)
    ones = (1,) * len(shape)
    x = _randn(*lead, *shape, g=g) * _randn(*lead, *ones, g=g).abs().clamp(0.02, 3)
    x = x + _randn(*lead, *ones, g=g, scale=2.0)  # (..., *shape)
    weight, bias = _randn(*shape, g=g, scale=0.5, shift=1.0), _randn(*shape, g=g, scale=0.5)
    return (t.to(device=device, dtype=dtype) for t in (x, weight, bias))


@check()
def check_layer_norm(cls: Subject) -> None:
    """LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True) with an int E
    equals nn.LayerNorm(E, eps=eps).

    Parameters ``weight`` (E,) = 1 and ``bias`` (E,) = 0 at the start; over the last dimension,
    biased variance, eps inside the square root; any leading dimensions; the input's dtype and
    device; gradients for the input, weight and bias equal torch's.
    """
    for E in (4, 16):
        module = _build_ln(cls, f"LayerNorm({E})", E)
        state = module.describe()["state"]
        for name, init in (("weight", 1.0), ("bias", 0.0)):
            value = state.get(name)
            if value is None:
                raise CheckFailed(
                    f"LayerNorm({E}) must have a parameter called {name} (as nn.LayerNorm has): "
                    f"it has {sorted(state) or 'none'}."
                )
            if tuple(value.shape) != (E,):
                raise CheckFailed(
                    f"LayerNorm({E}).{name} must have shape ({E},), not {tuple(value.shape)}."
                )
            if not torch.equal(value.float(), torch.full((E,), init)):
                raise CheckFailed(f"LayerNorm({E}).{name} must start at {init:g} everywhere.")

    for device, dtype, seed, (lead, E) in cases(_LN_SHAPES, _DTYPES):
        for eps in (1e-5, 0.1):
            x, weight, bias = _ln_input(lead, (E,), seed, device, dtype)
            what = f"LayerNorm({E}, eps={eps:g}){_where(device, dtype, x.shape)}"
            full = f"LayerNorm({E}, eps={eps:g}, elementwise_affine=True, bias=True)"
            module = _build_ln(cls, full, E, eps=eps, elementwise_affine=True, bias=True)
            module.to(device, dtype)
            calling(f"{what}: load_state_dict", module.load_state_dict,
                    {"weight": weight, "bias": bias})  # fmt: skip
            out = calling(what, module, x)
            _name_ln_mistake(out, x, (E,), weight, bias, eps, what)
            compare(out, F.layer_norm(x, (E,), weight, bias, eps), what,
                    hint="Normalize over the last dimension (E).")  # fmt: skip

    # gradients, float64 on the CPU
    g = torch.Generator().manual_seed(77)
    x = _randn(3, 5, 8, g=g, shift=1.0)  # (B, L, E)
    grad_output = _randn(3, 5, 8, g=g)  # (B, L, E)
    weight, bias = _randn(8, g=g, scale=0.5, shift=1.0), _randn(8, g=g, scale=0.5)
    module = _build_ln(cls, "LayerNorm(8)", 8)
    module.to("cpu", torch.float64)
    calling("LayerNorm(8): load_state_dict", module.load_state_dict,
            {"weight": weight, "bias": bias})  # fmt: skip
    what = "LayerNorm(8) on x of shape (3, 5, 8), float64, backward"
    _, grads, params = calling(what, module.gradients, (x,), params=True, grad_output=grad_output)
    reference = nn.LayerNorm(8).double()
    reference.load_state_dict({"weight": weight, "bias": bias})
    xr = x.clone().requires_grad_()
    (reference(xr) * grad_output).sum().backward()
    if grads[0] is None:
        raise CheckFailed(f"{what}: no gradient reaches the input.")
    compare(grads[0], xr.grad, f"{what}, gradient of the input")
    for name, p in reference.named_parameters():
        if params.get(name) is None:
            raise CheckFailed(f"{what}: no gradient reaches {name}; is it used in forward?")
        compare(params[name], p.grad, f"{what}, gradient of {name}")


@check()
def check_layer_norm_shape(cls: Subject) -> None:
    """LayerNorm(normalized_shape) with a tuple (or list) of k dimensions: weight and bias of that
    shape, and each token normalized over its last k dimensions together, as nn.LayerNorm."""
    shapes = [((3,), (4, 6)), ((2, 5), (2, 8)), ((), (3, 4)), ((2,), (2, 3, 4))]
    for device, dtype, seed, (lead, shape) in cases(shapes, _DTYPES):
        for eps, given in ((1e-5, tuple(shape)), (0.1, list(shape))):
            x, weight, bias = _ln_input(lead, shape, seed + 10, device, dtype)
            label = f"LayerNorm({given!r}, eps={eps:g})"
            module = _build_ln(cls, label, given, eps=eps)
            state = module.describe()["state"]
            for name in ("weight", "bias"):
                value = state.get(name)
                if value is None or tuple(value.shape) != tuple(shape):
                    got = None if value is None else tuple(value.shape)
                    raise CheckFailed(
                        f"{label}.{name} must have the shape normalized_shape, {tuple(shape)}, "
                        f"not {got}."
                    )
            module.to(device, dtype)
            calling(f"{label}: load_state_dict", module.load_state_dict,
                    {"weight": weight, "bias": bias})  # fmt: skip
            what = f"{label}{_where(device, dtype, x.shape)}"
            out = calling(what, module, x)
            _name_ln_mistake(out, x, tuple(shape), weight, bias, eps, what)
            compare(out, F.layer_norm(x, tuple(shape), weight, bias, eps), what,
                    hint=f"Normalize over the last {len(shape)} dimensions together.")  # fmt: skip


@check()
def check_layer_norm_affine(cls: Subject) -> None:
    """LayerNorm(..., elementwise_affine=False) has no parameters and only normalizes;
    LayerNorm(..., bias=False) has a gain ``weight`` and no bias, as nn.LayerNorm."""
    for device, dtype, seed, (lead, E) in cases(_LN_SHAPES[:3], _DTYPES):
        x, weight, _ = _ln_input(lead, (E,), seed + 20, device, dtype)
        for kwargs, params in (
            ({"elementwise_affine": False}, set()),
            ({"bias": False}, {"weight"}),
        ):
            flags = ", ".join(f"{k}={v}" for k, v in kwargs.items())
            label = f"LayerNorm({E}, {flags})"
            module = _build_ln(cls, label, E, **kwargs)
            state = module.describe()["state"]
            if set(state) != params:
                wanted = "a weight and no bias" if params else "no parameters"
                raise CheckFailed(
                    f"{label} must have {wanted} (as nn.LayerNorm with {flags}), not "
                    f"{sorted(state) or 'none'}."
                )
            module.to(device, dtype)
            if params:
                calling(f"{label}: load_state_dict", module.load_state_dict, {"weight": weight})
            what = f"{label}{_where(device, dtype, x.shape)}"
            out = calling(what, module, x)
            compare(out, F.layer_norm(x, (E,), weight if params else None, None), what)


# --------------------------------------------------------------------------------------------
# Part 2: AddNorm
# --------------------------------------------------------------------------------------------


def _loaded(subject: Subject, what: str, seed: int, device, dtype) -> dict:
    """Give the student's module random values for its own parameters; move it."""
    state = subject.describe()["state"]
    subject.to(device, dtype)
    state = _random_state(state, seed)
    calling(f"{what}: load_state_dict", subject.load_state_dict, state)
    return state


def _norm_of(module: Subject, what: str) -> Subject:
    info = module.describe()
    if "norm" not in info["modules"]:
        raise CheckFailed(
            f"{what} must keep its LayerNorm in an attribute called norm (self.norm = "
            "LayerNorm(d_model, eps=eps))."
        )
    return module.attribute("norm")


@check()
def check_add_norm(cls: Subject) -> None:
    """AddNorm(d_model, norm_first=False, dropout=0.0, eps=1e-5), forward(x, sublayer, *args).

    post-LN: norm(x + dropout(sublayer(x, *args))); pre-LN: x + dropout(sublayer(norm(x),
    *args)). The expected values come from the student's own ``norm`` (so a wrong LayerNorm
    costs only Part 1); the sublayer is another AddNorm's ``norm`` with random gain and bias,
    living where the student's code runs.
    """
    shapes = [((2, 5), 8), ((3, 4), 16), ((1, 6), 4)]
    for device, dtype, seed, (lead, E) in cases(shapes, _DTYPES):
        for norm_first in (False, True):
            label = f"AddNorm({E}, norm_first={norm_first})"
            module = calling(label, cls.seeded(0), E, norm_first=norm_first)
            flag = module.attribute("norm_first")
            if flag is not norm_first:
                raise CheckFailed(f"{label}.norm_first must be {norm_first}: keep the argument.")
            _loaded(module, label, 100 + seed, device, dtype)
            norm = _norm_of(module, label)
            helper = calling(f"AddNorm({E})", cls.seeded(1), E)
            _loaded(helper, f"AddNorm({E})", 200 + seed, device, dtype)
            sub = _norm_of(helper, f"AddNorm({E})")  # any sublayer will do: an affine LayerNorm

            g = torch.Generator().manual_seed(seed)
            x = _randn(*lead, E, g=g, scale=2.0, shift=0.5).to(device=device, dtype=dtype)
            what = f"{label}{_where(device, dtype, x.shape)}"
            out = calling(what, module, x, _raw(sub))
            n_x = calling(f"{what}: its own norm", norm, x)
            s_x = calling(f"{what}: the sublayer", sub, x)
            if norm_first:
                s_nx = calling(f"{what}: the sublayer", sub, n_x)
                expected = x + s_nx  # (..., E)
                wrongs = {
                    "the residual adds the normalized input; in pre-LN the residual path "
                    "carries x itself, unnormalized: x + sublayer(norm(x))": n_x + s_nx,
                    "this is post-LN, norm(x + sublayer(x)); with norm_first=True normalize "
                    "the sublayer's input instead": calling(what, norm, x + s_x),
                    "the sublayer gets x; in pre-LN it gets norm(x)": x + s_x,
                    "the residual connection is missing: add x": s_nx,
                }
            else:
                expected = calling(f"{what}: its own norm", norm, x + s_x)
                wrongs = {
                    "this is pre-LN, x + sublayer(norm(x)); with norm_first=False normalize the "
                    "sum x + sublayer(x)": x + calling(what, sub, n_x),
                    "the sum is not normalized: post-LN is norm(x + sublayer(x))": x + s_x,
                    "the residual connection is missing: norm(x + sublayer(x))": calling(
                        what, norm, s_x
                    ),
                }
            if isinstance(out, torch.Tensor) and out.shape == x.shape and not close(out, expected):
                for message, wrong in wrongs.items():
                    if isinstance(wrong, torch.Tensor) and close(out, wrong):
                        raise CheckFailed(f"{what}: {message}.")
            compare(out, expected, what)

            # further positional arguments go on to the sublayer: here the sublayer is another
            # AddNorm, which gets its own sublayer that way
            what = f"{label}, forward(x, sublayer, extra) on {tuple(x.shape)}"
            try:
                out = calling(what, module, x, _raw(helper), _raw(sub))
            except CheckFailed as exc:
                raise CheckFailed(
                    f"{str(exc).rstrip('.')}. Pass further arguments on to the sublayer: "
                    "sublayer(y, *args)."
                ) from None
            if norm_first:
                expected = x + calling(what, helper, n_x, _raw(sub))
            else:
                expected = calling(what, norm, x + calling(what, helper, x, _raw(sub)))
            compare(
                out,
                expected,
                what,
                hint="Pass further arguments on to the sublayer: sublayer(y, *args).",
            )

    # dropout acts on the sublayer's output: in eval mode it is the identity; in training,
    # pre-LN's out - x is the sublayer's output with some entries zeroed and the rest doubled
    E = 16
    for norm_first in (True, False):
        label = f"AddNorm({E}, norm_first={norm_first}, dropout=0.5)"
        module = calling(label, cls.seeded(0), E, norm_first=norm_first, dropout=0.5)
        _loaded(module, label, 300, "cpu", torch.float64)
        norm = _norm_of(module, label)
        helper = calling(f"AddNorm({E})", cls.seeded(1), E)
        _loaded(helper, f"AddNorm({E})", 301, "cpu", torch.float64)
        sub = _norm_of(helper, f"AddNorm({E})")
        x = _randn(4, 6, E, g=torch.Generator().manual_seed(9))  # (B, L, E)
        n_x = calling(label, norm, x)
        s_x = calling(label, sub, x)
        s_nx = calling(label, sub, n_x)
        expected = x + s_nx if norm_first else calling(label, norm, x + s_x)
        calling(f"{label}.eval()", module.method("eval"))
        compare(
            calling(f"{label} in eval mode", module, x, _raw(sub)),
            expected,
            f"{label} in eval mode",
            hint="Use nn.Dropout, which is the identity in eval mode.",
        )
        calling(f"{label}.train()", module.method("train"))
        out = calling(f"{label} in training mode", module, x, _raw(sub))
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            raise CheckFailed(f"{label} in training mode: the result must have shape (B, L, E).")
        if norm_first:
            delta = out - x  # (B, L, E)
            dropped = delta.abs() < 1e-12
            kept = torch.isclose(delta, 2 * s_nx, rtol=1e-7, atol=1e-9)
            if not bool((dropped | kept).all()) or not bool(dropped.any()):
                raise CheckFailed(
                    f"{label} in training mode: apply the dropout to the sublayer's output, "
                    "before it is added to x (each entry of out - x is then 0 or twice the "
                    "sublayer's output)."
                )
        elif torch.allclose(out, expected):
            raise CheckFailed(
                f"{label} in training mode: the dropout does nothing; apply it to "
                "the sublayer's output."
            )


# --------------------------------------------------------------------------------------------
# Part 3: PositionwiseFeedForward
# --------------------------------------------------------------------------------------------


_FFN_MISTAKES = (
    (
        wrong.FFNNoNonlinearity,
        "there is no non-linearity between the two linear layers; without it the two collapse "
        "into one linear map. Use a ReLU",
    ),
    (wrong.FFNGelu, "the activation is GELU; the paper's FFN uses a ReLU"),
    (
        wrong.FFNReluAtTheEnd,
        "the ReLU is applied after linear2; it goes between linear1 and linear2",
    ),
)


@check()
def check_positionwise_feed_forward(cls: Subject) -> None:
    """PositionwiseFeedForward(d_model, dim_feedforward=2048, dropout=0.0): linear2(dropout(
    relu(linear1(x)))), nn.Linear layers called linear1 (E -> F) and linear2 (F -> E), with
    biases; any leading dimensions; each position on its own; gradients equal the reference's."""
    shapes = [((2, 5), 8, 32), ((3,), 16, 24), ((2, 3, 4), 4, 16), ((1, 1), 8, 8)]
    for device, dtype, seed, (lead, E, Fw) in cases(shapes, _DTYPES):
        label = f"PositionwiseFeedForward({E}, {Fw})"
        module = calling(label, cls.seeded(0), E, Fw)
        info = module.describe()
        for name, shape in (("linear1", (Fw, E)), ("linear2", (E, Fw))):
            kind = info["modules"].get(name)
            if kind != "Linear":
                raise CheckFailed(
                    f"{label} must have an nn.Linear called {name}"
                    + (f", not a {kind}." if kind else ".")
                )
            w, b = info["state"].get(f"{name}.weight"), info["state"].get(f"{name}.bias")
            if w is None or tuple(w.shape) != shape:
                got = None if w is None else tuple(w.shape)
                raise CheckFailed(
                    f"{label}.{name}.weight must have shape {shape}, not {got}: "
                    "linear1 maps E to dim_feedforward, linear2 back to E."
                )
            if b is None:
                raise CheckFailed(f"{label}.{name} must have a bias, as in the paper.")
        torch.manual_seed(1000 + seed)
        reference = PositionwiseFeedForward(E, Fw)
        calling(f"{label}: load_state_dict", module.load_state_dict, reference.state_dict())
        module.to(device, dtype)
        reference.to(device=device, dtype=dtype)
        g = torch.Generator().manual_seed(seed)
        x = _randn(*lead, E, g=g).to(device=device, dtype=dtype)  # (..., E)
        what = f"{label}{_where(device, dtype, x.shape)}"
        out = calling(what, module, x)
        with torch.no_grad():
            expected = reference(x)  # (..., E)
            if not close(out, expected):
                for mistake, message in _FFN_MISTAKES:
                    module_ = mistake(E, Fw).to(device=device, dtype=dtype)
                    module_.load_state_dict(reference.state_dict())
                    if close(out, module_(x)):
                        raise CheckFailed(f"{what}: {message}.")
        if x.dim() >= 2 and x.size(-2) > 1 and isinstance(out, torch.Tensor):
            changed = x.clone()
            changed[..., 0, :] = changed[..., 0, :].flip(-1) + 1.0  # another first position
            out_c = calling(f"{what}, the first position changed", module, changed)
            if isinstance(out_c, torch.Tensor) and out_c.shape == out.shape:
                if not close(out_c[..., 1:, :], out[..., 1:, :]):
                    raise CheckFailed(
                        f"{what}: changing the first position changed the outputs at the other "
                        "positions; the FFN treats each position on its own."
                    )
        compare(out, expected, what)

    label = "PositionwiseFeedForward(8, 32, dropout=0.5)"
    module = calling(label, cls.seeded(0), 8, 32, dropout=0.5)
    torch.manual_seed(5)
    reference = PositionwiseFeedForward(8, 32)
    calling(f"{label}: load_state_dict", module.load_state_dict, reference.state_dict())
    calling(f"{label}.eval()", module.method("eval"))
    x = _randn(2, 5, 8, g=torch.Generator().manual_seed(3)).float()  # (B, L, E)
    with torch.no_grad():
        expected = reference(x)
    compare(
        calling(f"{label} in eval mode", module, x),
        expected,
        f"{label} in eval mode",
        hint="Use nn.Dropout, which is the identity in eval mode.",
    )
    calling(f"{label}.train()", module.method("train"))
    out = calling(f"{label} in training mode", module, x)
    if isinstance(out, torch.Tensor) and torch.allclose(out, expected):
        raise CheckFailed(
            f"{label} in training mode: the dropout does nothing; apply it to the "
            "hidden activations, between the ReLU and linear2."
        )

    label = "PositionwiseFeedForward(8, 32), float64, backward"
    module = calling(label, cls.seeded(0), 8, 32)
    torch.manual_seed(6)
    reference = PositionwiseFeedForward(8, 32).double()
    calling(f"{label}: load_state_dict", module.load_state_dict, reference.state_dict())
    module.to("cpu", torch.float64)
    g = torch.Generator().manual_seed(7)
    x, grad_output = _randn(2, 5, 8, g=g), _randn(2, 5, 8, g=g)
    _, grads, params = calling(label, module.gradients, (x,), params=True, grad_output=grad_output)
    xr = x.clone().requires_grad_()
    (reference(xr) * grad_output).sum().backward()
    compare(grads[0], xr.grad, f"{label}, gradient of the input")
    for name, p in reference.named_parameters():
        if params.get(name) is None:
            raise CheckFailed(f"{label}: no gradient reaches {name}; is it used in forward?")
        compare(params[name], p.grad, f"{label}, gradient of {name}")


# --------------------------------------------------------------------------------------------
# Part 4: EncoderLayer
# --------------------------------------------------------------------------------------------


def _padding_mask(B, L, seed, device):
    """(B, L) bool, True at real tokens: sequence b has a random length >= 1, padding at the end."""
    g = torch.Generator().manual_seed(seed + 500)
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    lengths[0] = L
    return (torch.arange(L)[None, :] < lengths[:, None]).to(device)  # (B, L)


@check()
def check_encoder_layer(cls: Subject) -> None:
    """EncoderLayer(d_model, nhead, dim_feedforward=2048, dropout=0.0, norm_first=False,
    eps=1e-5), forward(x (B, L, E), padding_mask (B, L) True at real tokens, or None).

    Its ``self_attn`` is ``nn.MultiheadAttention(batch_first=True)`` and ``_sa_block(x,
    padding_mask)`` equals it with torch's key_padding_mask = ~padding_mask; the layer's output
    equals add_norm2(add_norm1(x, _sa_block, padding_mask), ffn) computed with the student's
    own submodules, which is nn.TransformerEncoderLayer when those are right.
    """
    shapes = [(2, 5, 8, 2, 16), (3, 7, 12, 3, 24), (1, 4, 8, 1, 8)]
    for device in check_devices():
        for dtype in _DTYPES:
            for seed, (B, L, E, H, Fw) in enumerate(shapes):
                for norm_first in (False, True):
                    _check_layer_case(cls, device, dtype, seed, B, L, E, H, Fw, norm_first)

    # the backward pass reaches every parameter and stays finite with padding
    label = "EncoderLayer(8, 2, 16), backward with a padding mask"
    layer = calling(label, cls.seeded(0), 8, 2, 16)
    _loaded(layer, label, 7, "cpu", torch.float64)
    x = _randn(3, 5, 8, g=torch.Generator().manual_seed(1))  # (B, L, E)
    mask = _padding_mask(3, 5, 1, "cpu")  # (B, L)
    _, _, params = calling(label, layer.gradients, (x,), {"padding_mask": mask}, params=True)
    for name, grad in params.items():
        if grad is None:
            # the earlier parts' parameters are their own parts' business
            if name.startswith("self_attn."):
                raise CheckFailed(f"{label}: no gradient reaches {name}; is it used in forward?")
            continue
        if not bool(torch.isfinite(grad).all()):
            raise CheckFailed(f"{label}: the gradient of {name} is not finite.")


def _check_layer_case(cls, device, dtype, seed, B, L, E, H, Fw, norm_first) -> None:
    label = f"EncoderLayer({E}, {H}, {Fw}, norm_first={norm_first})"
    layer = calling(label, cls.seeded(0), E, H, Fw, norm_first=norm_first)
    info = layer.describe()
    for name, what in (
        ("self_attn", "nn.MultiheadAttention"),
        ("ffn", "PositionwiseFeedForward"),
        ("add_norm1", "AddNorm"),
        ("add_norm2", "AddNorm"),
    ):
        if name not in info["modules"]:
            raise CheckFailed(f"{label} must have a submodule called {name} (a {what}).")
    if info["modules"]["self_attn"] != "MultiheadAttention":
        raise CheckFailed(
            f"{label}.self_attn must be an nn.MultiheadAttention, not a "
            f"{info['modules']['self_attn']}."
        )
    attn = layer.attribute("self_attn")
    if attn.attribute("batch_first") is not True:
        raise CheckFailed(
            f"{label}.self_attn must be built with batch_first=True: the layer's "
            "inputs are (B, L, E)."
        )
    if attn.attribute("num_heads") != H or attn.attribute("embed_dim") != E:
        raise CheckFailed(f"{label}.self_attn must have embed_dim=d_model and num_heads=nhead.")
    for name in ("add_norm1", "add_norm2"):
        flag = layer.attribute(name).attribute("norm_first")
        if flag is not norm_first:
            raise CheckFailed(
                f"{label}.{name}.norm_first must be {norm_first}: pass norm_first "
                "on to both AddNorm modules."
            )
    state = _loaded(layer, label, 40 + seed, device, dtype)

    g = torch.Generator().manual_seed(seed)
    x = _randn(B, L, E, g=g).to(device=device, dtype=dtype)  # (B, L, E)
    mask = _padding_mask(B, L, seed, device)  # (B, L)
    where = f"(x of shape (B={B}, L={L}, E={E}), {dtype_name(dtype)}, {torch.device(device).type})"

    # the attention sublayer against torch, with the student's attention weights
    mha = nn.MultiheadAttention(E, H, batch_first=True).to(device=device, dtype=dtype)
    mha.load_state_dict(
        {
            k[len("self_attn.") :]: v.to(device=device, dtype=dtype)
            for k, v in state.items()
            if k.startswith("self_attn.")
        }
    )
    sa_block = layer.method("_sa_block")
    with torch.no_grad():
        for m, kind in ((mask, "a padding mask"), (None, "no mask")):
            what = f"{label}._sa_block{where} with {kind}"
            out = calling(what, sa_block, x, padding_mask=m)
            ignore = None if m is None else ~m
            expected = mha(x, x, x, key_padding_mask=ignore, need_weights=False)[0]  # (B, L, E)
            if (
                m is not None
                and not bool(m.all())
                and isinstance(out, torch.Tensor)
                and not close(out, expected)
            ):
                flipped = mha(x, x, x, key_padding_mask=m, need_weights=False)[0]
                if out.shape == flipped.shape and torch.allclose(
                    out.nan_to_num(), flipped.nan_to_num(), *TOLERANCES[dtype]
                ):
                    raise CheckFailed(
                        f"{what}: the mask is used the wrong way round. Ours is True at real "
                        "tokens; nn.MultiheadAttention's key_padding_mask is True at tokens to "
                        "ignore: pass ~padding_mask."
                    )
                unmasked = mha(x, x, x, need_weights=False)[0]
                if close(out, unmasked):
                    raise CheckFailed(
                        f"{what}: the padding mask is not used; padded tokens must "
                        "not be attended to (key_padding_mask=~padding_mask)."
                    )
            compare(
                out,
                expected,
                what,
                hint="Call self.self_attn(x, x, x, key_padding_mask="
                "..., need_weights=False) and return its first output.",
            )

    # the layer is its own pieces, wired as the paper (post-LN) or pre-LN says
    add_norm1, add_norm2 = layer.attribute("add_norm1"), layer.attribute("add_norm2")
    ffn, sa = layer.attribute("ffn"), layer.attribute("_sa_block")
    for m, kind in ((mask, "a padding mask"), (None, "no mask")):
        what = f"{label}{where} with {kind}"
        out = calling(what, layer, x, padding_mask=m)
        h = calling(f"{what}: its add_norm1", add_norm1, x, _raw(sa), m)
        expected = calling(f"{what}: its add_norm2", add_norm2, h, _raw(ffn))
        if m is not None and isinstance(out, torch.Tensor) and not close(out, expected):
            h0 = calling(what, add_norm1, x, _raw(sa))
            if close(out, calling(what, add_norm2, h0, _raw(ffn))):
                raise CheckFailed(
                    f"{what}: the padding mask does not reach the attention; pass "
                    "it on through add_norm1: self.add_norm1(x, self._sa_block, "
                    "padding_mask)."
                )
            f_first = calling(what, add_norm2, x, _raw(ffn))
            if close(out, calling(what, add_norm1, f_first, _raw(sa), m)):
                raise CheckFailed(
                    f"{what}: the FFN comes before the attention; the attention "
                    "sublayer comes first."
                )
        if not close(out, expected):
            h = calling(f"{what}: its add_norm1", add_norm1, x, _raw(sa), m)
            if close(out, calling(f"{what}: its ffn", ffn, h)):
                raise CheckFailed(
                    f"{what}: the FFN's output replaces the attention's instead of being added "
                    "to it: run the FFN through add_norm2, self.add_norm2(x, self.ffn)."
                )
        compare(
            out,
            expected,
            what,
            hint="forward is add_norm2(add_norm1(x, self._sa_block, padding_mask), self.ffn).",
        )
