"""Chapter 7's checks: what the hidden tests of ``solutions/ch07_positional_encoding`` call.

Each check draws its inputs from fixed seeds, runs on the CPU and on CUDA when there is one (the
table of Part 1 is built on the CPU, as its instructions say), and tests what the instructions
promise, properties first, values after, so that a failure names the property:

- ``sinusoidal_positional_encoding``: the shape (odd widths included), float32, position 0 first,
  the interleaved layout (even columns sines), each pair's frequency, the relative-offset property
  PE(p + k) = M_k PE(p), then every value;
- ``PositionalEncoding``: a buffer called ``pe``, not a parameter and not a plain attribute, the
  table's first L rows added (no sqrt(E) scaling), any L up to max_len, ValueError beyond it,
  dropout on the sum (training) and none in eval mode, the input's dtype and device, gradients;
- ``permutation_equivariance_gap``: about 0 for self-attention without positions; the positions
  stay put while the tokens move; the causal mask; any leading dimensions; the maximum.

**One bug, one part.** ``PositionalEncoding`` calls the student's
``sinusoidal_positional_encoding``; while its check runs, the reference stands in for it
(``stand_ins``), so a wrong table costs Part 1 only.

Tolerances: a float32 table computed in float32 differs from the exact one by up to about
max_len · 1e-7 (the angle p·w is rounded before its sine is taken), so Part 1 allows
1e-5 + 2e-7 · max_len.

Not here: the reference (``reference.py``) and the known-wrong implementations (``wrong.py``).
"""

from __future__ import annotations

import math

import torch

from autograder.toolkit import (
    TOLERANCES,
    CheckFailed,
    Subject,
    calling,
    cases,
    check,
    check_devices,
    compare,
    raises,
)

from . import reference as ref

__all__ = [
    "check_sinusoidal_positional_encoding",
    "check_positional_encoding",
    "check_permutation_equivariance_gap",
]

_DTYPES = (torch.float32, torch.float64)
_SECTION = "chapter 7, section 'The sinusoidal encoding'"


def _table_tolerance(max_len: int) -> tuple[float, float]:
    """(rtol, atol) for a float32 table of max_len rows."""
    return 0.0, 1e-5 + 2e-7 * max_len


def _close(a, b, tolerance) -> bool:
    rtol, atol = tolerance
    return (
        isinstance(a, torch.Tensor)
        and a.shape == b.shape
        and a.dtype == b.dtype
        and bool(torch.allclose(a, b, rtol=rtol, atol=atol))
    )


def _rotate(pe: torch.Tensor, k: int, embed_dim: int) -> torch.Tensor:
    """M_k · PE for every row, over the paired columns only (an odd width's last column has no
    partner): each (sin, cos) pair rotated by the angle k · w_i (float64)."""
    pairs = embed_dim // 2
    w = ref.BASE ** (-torch.arange(0, 2 * pairs, 2, dtype=torch.float64) / embed_dim)  # (pairs,)
    c, s = torch.cos(k * w), torch.sin(k * w)  # (pairs,)
    sin, cos = pe[:, 0 : 2 * pairs : 2], pe[:, 1 : 2 * pairs : 2]  # (rows, pairs)
    out = torch.empty_like(pe[:, : 2 * pairs])  # (rows, 2 · pairs)
    out[:, 0::2] = sin * c + cos * s  # sin(a + b)
    out[:, 1::2] = cos * c - sin * s  # cos(a + b)
    return out


# --------------------------------------------------------------------------------------------
# Part 1: sinusoidal_positional_encoding
# --------------------------------------------------------------------------------------------

# (max_len, E): one position, one column, odd widths, the paper's width, a long table
_TABLES = [(1, 4), (10, 1), (50, 7), (64, 16), (200, 33), (128, 512), (2000, 64)]


@check()
def check_sinusoidal_positional_encoding(fn: Subject) -> None:
    """sinusoidal_positional_encoding(max_len, embed_dim) -> (max_len, embed_dim), float32, CPU.

    PE[p, 2i] = sin(p · w_i), PE[p, 2i + 1] = cos(p · w_i), w_i = 10000^(-2i/E), positions from
    0; an odd E gives E columns, the last a sine. Checked in this order: a float32 tensor of that
    shape; row 0 = (0, 1, 0, 1, ...); column 0 = sin(p); each pair's frequency; the relative
    offset property PE(p + k) = M_k PE(p); every value.
    """
    for max_len, E in _TABLES:
        what = f"sinusoidal_positional_encoding({max_len}, {E})"
        odd = (
            " E is odd here: the table still has E columns, and the last one, E - 1, is even, so "
            "it is a sine, with no cosine beside it."
            if E % 2
            else ""
        )
        try:
            out = calling(what, fn, max_len, E)
        except CheckFailed as failed:
            raise CheckFailed(f"{str(failed).rstrip('.')}.{odd}") from None
        if not isinstance(out, torch.Tensor):
            raise CheckFailed(f"{what}: expected a torch.Tensor, got {type(out).__name__}.")
        if out.shape != (max_len, E):
            raise CheckFailed(
                f"{what}: wrong shape {tuple(out.shape)}, expected (max_len, embed_dim) = "
                f"({max_len}, {E}).{odd}"
            )
        if out.dtype != torch.float32:
            raise CheckFailed(
                f"{what}: the table is {out.dtype}; it must be float32 (torch's default; build it "
                "with torch, or convert a NumPy table with .float())."
            )
        if out.device.type != "cpu":
            raise CheckFailed(f"{what}: the table must be on the CPU; it is on {out.device}.")
        if not bool(torch.isfinite(out).all()):
            raise CheckFailed(f"{what}: the table contains NaN or infinity.")
        expected = ref.sinusoidal_positional_encoding(max_len, E)  # (max_len, E)
        tol = _table_tolerance(max_len)
        exact = out.double()  # (max_len, E)
        _first_row(exact, expected.double(), E, what, tol)
        _frequencies(exact, E, what, tol)
        if max_len > 20:
            for k in (1, 7, 20):
                moved = _rotate(exact[:-k], k, E)  # (max_len - k, 2 · (E // 2))
                target = exact[k:, : moved.size(1)]  # (max_len - k, 2 · (E // 2))
                if not bool(torch.allclose(moved, target, rtol=0, atol=2 * tol[1])):
                    raise CheckFailed(
                        f"{what}: the relative-offset property fails: PE(p + {k}) must equal "
                        f"M_{k}·PE(p), every (sin, cos) pair rotated by the angle {k}·w_i "
                        f"({_SECTION}, and 'Relative positions')."
                    )
        compare(out, expected, what, tolerance=tol, hint=f"See {_SECTION}.")


def _first_row(exact, expected, E, what, tol) -> None:
    """Position 0 first: sin 0 = 0 in the even columns, cos 0 = 1 in the odd ones."""
    row = exact[0]  # (E,)
    if _close(row, expected[0], tol):
        return
    n_sin = (E + 1) // 2
    if E > 1 and torch.allclose(row[0::2], torch.ones(n_sin, dtype=row.dtype), atol=tol[1]):
        raise CheckFailed(
            f"{what}: sines and cosines are swapped: the even columns (0, 2, 4, ...) hold the "
            f"sines and the odd ones the cosines, so row 0 is (0, 1, 0, 1, ...) ({_SECTION})."
        )
    halves = torch.cat([torch.zeros(n_sin), torch.ones(E - n_sin)]).double()  # (E,)
    if E > 2 and torch.allclose(row, halves, atol=tol[1]):
        raise CheckFailed(
            f"{what}: the sines and cosines are in two halves; the paper's layout, which the "
            "instructions ask for, interleaves them: column 2i is sin(p·w_i) and column 2i + 1 "
            f"is cos(p·w_i) ({_SECTION})."
        )
    raise CheckFailed(
        f"{what}: row 0 must be position 0, (0, 1, 0, 1, ...): sin 0 in the even columns and "
        "cos 0 in the odd ones. Do the positions start at 0?"
    )


def _frequencies(exact, E, what, tol) -> None:
    """Column 0 is sin(p) (w_0 = 1); pair i has the frequency w_i = 10000^(-2i/E)."""
    max_len = exact.size(0)
    if max_len < 3:
        return
    p = torch.arange(max_len, dtype=torch.float64)  # (max_len,)
    if not bool(torch.allclose(exact[:, 0], torch.sin(p), rtol=0, atol=tol[1])):
        raise CheckFailed(
            f"{what}: column 0 must be sin(p): its frequency is w_0 = 10000^0 = 1 "
            f"({_SECTION})."
        )
    for col in range(2, E, 2):
        w = ref.BASE ** (-col / E)  # the frequency of the pair (col, col + 1)
        if bool(torch.allclose(exact[:, col], torch.sin(p * w), rtol=0, atol=tol[1])):
            continue
        for label, wrong in (("2·(2i)/E, twice", ref.BASE ** (-2 * col / E)),
                             ("i/E, half", ref.BASE ** (-(col // 2) / E))):
            if bool(torch.allclose(exact[:, col], torch.sin(p * wrong), rtol=0, atol=tol[1])):
                raise CheckFailed(
                    f"{what}: column {col} has the wrong frequency: its exponent is {label} "
                    f"what it should be. Pair i (columns 2i and 2i + 1) has w_i = "
                    f"10000^(-2i/E), so column j = 2i uses 10000^(-j/E) ({_SECTION})."
                )
        raise CheckFailed(
            f"{what}: column {col} must be sin(p·w) with w = 10000^(-{col}/E), E = {E} "
            f"({_SECTION})."
        )


# --------------------------------------------------------------------------------------------
# Part 2: PositionalEncoding
# --------------------------------------------------------------------------------------------

_PE_STAND_IN = {"sinusoidal_positional_encoding": ref.sinusoidal_positional_encoding}

# (leading dims, L, E, max_len): a batch, a single sequence, L = max_len, L = 1, odd E, 4-D
_PE_SHAPES = [((2,), 7, 16, 50), ((), 5, 8, 20), ((3,), 12, 6, 12), ((2,), 1, 4, 9),
              ((1,), 9, 7, 30), ((2, 3), 4, 8, 10)]


def _pe_buffer(module: Subject, label: str, max_len: int, E: int) -> torch.Tensor:
    """The module's table, after checking that it is a registered buffer called pe."""
    buffers = calling(f"{label}: its buffers", module.attribute, "_buffers")
    params = calling(f"{label}: its parameters", module.attribute, "_parameters")
    if isinstance(params, dict) and "pe" in params:
        raise CheckFailed(
            f"{label}: pe is an nn.Parameter; the table is fixed, not learned: register it with "
            "self.register_buffer('pe', table), so that it moves with .to() but never gets a "
            "gradient or an optimizer step."
        )
    if not isinstance(buffers, dict) or "pe" not in buffers:
        raise CheckFailed(
            f"{label} must register its table as a buffer called pe "
            "(self.register_buffer('pe', table)); a plain attribute does not move with "
            ".to(device) and is not part of the module's state."
        )
    table = buffers["pe"]
    if not isinstance(table, torch.Tensor) or tuple(table.shape) != (max_len, E):
        got = tuple(table.shape) if isinstance(table, torch.Tensor) else type(table).__name__
        raise CheckFailed(f"{label}.pe must have shape (max_len, embed_dim) = ({max_len}, {E}), "
                          f"not {got}.")
    return table


def _pe_variants(x, table) -> dict:
    """Known mistakes, to name the one made: {message: output}."""
    L, E = x.size(-2), x.size(-1)
    return {
        "the input is multiplied by sqrt(E); this module adds the table to x as it is (the "
        "model scales its embeddings before calling it)": x * math.sqrt(E) + table[:L],
        "the table is subtracted; add it": x - table[:L],
        "the table is not added": x,
    }


@check(stand_ins=_PE_STAND_IN)
def check_positional_encoding(cls: Subject) -> None:
    """PositionalEncoding(embed_dim, dropout=0.1, max_len=5000): forward(x (..., L, E)) =
    dropout(x + pe[:L]) with pe a (max_len, E) buffer (not a parameter), ValueError for
    L > max_len, in x's dtype and on its device after module.to(device, dtype).
    """
    for device, dtype, seed, (lead, L, E, max_len) in cases(_PE_SHAPES, _DTYPES):
        label = f"PositionalEncoding({E}, dropout=0.0, max_len={max_len})"
        module = calling(label, cls.seeded(0), E, dropout=0.0, max_len=max_len)
        table = _pe_buffer(module, label, max_len, E)
        expected_table = ref.sinusoidal_positional_encoding(max_len, E)  # (max_len, E)
        compare(table.float(), expected_table, f"{label}.pe", tolerance=_table_tolerance(max_len),
                hint="It is the table sinusoidal_positional_encoding(max_len, embed_dim).")
        calling(f"{label}.to({device.type}, {str(dtype).removeprefix('torch.')})", module.to,
                device, dtype)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(*lead, L, E, generator=g, dtype=torch.float64).to(device, dtype)
        what = (f"{label}(x of shape {tuple(x.shape)}, {str(dtype).removeprefix('torch.')}, "
                f"{device.type})")
        out = calling(what, module, x)
        expected = x + expected_table.to(device, dtype)[:L]  # (..., L, E)
        if isinstance(out, torch.Tensor) and out.shape == x.shape:
            for message, wrong in _pe_variants(x, expected_table.to(device, dtype)).items():
                if _close(out, wrong, TOLERANCES[dtype]) and not _close(
                    out, expected, TOLERANCES[dtype]
                ):
                    raise CheckFailed(f"{what}: {message}.")
        rtol, atol = TOLERANCES[dtype]
        compare(out, expected, what, tolerance=(rtol, atol + _table_tolerance(max_len)[1]),
                hint="forward(x) is x + pe[:L], L = x.size(-2), the first L rows only.")

        # one position longer than the table: a clear error, not a broadcasting accident
        longer = torch.randn(*lead, max_len + 1, E, generator=g, dtype=torch.float64)
        raises(ValueError, f"{label} given a sequence of length {max_len + 1} > max_len",
               module, longer.to(device, dtype))

    _check_dropout(cls)
    _check_gradients(cls)


def _check_dropout(cls: Subject) -> None:
    """Dropout on the sum: in training each entry is 0 or (x + pe) / (1 - p); eval: x + pe."""
    E, L, max_len, p = 16, 10, 40, 0.5
    label = f"PositionalEncoding({E}, dropout={p}, max_len={max_len})"
    module = calling(label, cls.seeded(0), E, dropout=p, max_len=max_len)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(4, L, E, generator=g) + 3.0  # (B, L, E): no entry near 0
    expected = x + ref.sinusoidal_positional_encoding(max_len, E)[:L]  # (B, L, E)
    tol = TOLERANCES[torch.float32]

    calling(f"{label}.eval()", module.method("eval"))
    out = calling(f"{label} in eval mode", module, x)
    compare(out, expected, f"{label} in eval mode",
            hint="Use nn.Dropout, which does nothing in eval mode.")

    calling(f"{label}.train()", module.method("train"))
    out = calling(f"{label} in training mode", module.seeded(3), x)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        raise CheckFailed(f"{label} in training mode: the result must have x's shape (B, L, E).")
    dropped = out.abs() <= tol[1]
    kept = torch.isclose(out, expected / (1 - p), rtol=tol[0], atol=tol[1])
    if not bool(dropped.any()):
        raise CheckFailed(f"{label} in training mode: nothing is dropped; apply the dropout "
                          "(an nn.Dropout(dropout)) to x + pe.")
    if not bool((dropped | kept).all()):
        raise CheckFailed(
            f"{label} in training mode: the dropout must act on the sum x + pe, after the "
            "positions are added: each entry is then either 0 or (x + pe) / (1 - p). Dropping "
            "x alone, or the table alone, leaves other values."
        )


def _check_gradients(cls: Subject) -> None:
    """The gradient reaches x (the identity, with no dropout), and pe gets none."""
    E, max_len = 8, 12
    label = f"PositionalEncoding({E}, dropout=0.0, max_len={max_len}), backward"
    module = calling(label, cls.seeded(0), E, dropout=0.0, max_len=max_len)
    module.to("cpu", torch.float64)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 6, E, generator=g, dtype=torch.float64)  # (B, L, E)
    grad_output = torch.randn(2, 6, E, generator=g, dtype=torch.float64)  # (B, L, E)
    _, grads, params = calling(label, module.gradients, (x,), params=True,
                               grad_output=grad_output)
    if grads[0] is None:
        raise CheckFailed(f"{label}: no gradient reaches the input x; use torch operations only.")
    compare(grads[0], grad_output, f"{label}, gradient of the input",
            hint="x + pe passes the gradient on unchanged.")
    if "pe" in params:
        raise CheckFailed(f"{label}: pe must not be a parameter; register it as a buffer.")


# --------------------------------------------------------------------------------------------
# Part 3: permutation_equivariance_gap
# --------------------------------------------------------------------------------------------

# (leading dims, L, E, max_len of the table)
_GAP_SHAPES = [((3,), 6, 16, 20), ((), 5, 8, 5), ((2, 2), 4, 8, 9), ((4,), 7, 12, 7)]


def _gap_variants(x, perm, pe, is_causal) -> list[tuple[str, float]]:
    """Known mistakes, to name the one made: [(message, gap)]."""
    L = x.size(-2)
    attend = ref.self_attention_no_projections
    positions = 0.0 if pe is None else pe[:L]  # (L, E)
    out = attend(x + positions, is_causal)  # (..., L, E)
    out_of_moved = attend(x[..., perm, :] + positions, is_causal)  # (..., L, E)
    inverse = torch.argsort(perm)
    variants = [
        ("it compares A(x[perm]) with A(x) itself; the outputs of permuted tokens come out "
         "permuted (equivariance, not invariance), so compare with A(x)[perm], permuted along "
         "the sequence axis the same way", (out_of_moved - out).abs().max()),
        ("it permutes A(x) with the inverse permutation; x[perm] puts token perm[p] at position "
         "p, so compare with A(x)[perm], permuted the same way",
         (out_of_moved - out[..., inverse, :]).abs().max()),
        ("it returns the mean of |difference|; return the largest, the max",
         (out_of_moved - out[..., perm, :]).abs().mean()),
    ]
    if pe is not None:
        # Adding pe before permuting and not adding it at all both leave the gap at about 0
        # without a causal mask: one message names both.
        message = (
            "the positions do not stay in place: add pe[:L] to the tokens after permuting them, "
            "so that position p gets pe[p] whichever token lands there (added before "
            "permuting, the positions travel with their tokens; not added, there are none)"
        )
        carried = attend((x + positions)[..., perm, :], is_causal)  # (..., L, E)
        bare = attend(x[..., perm, :], is_causal) - attend(x, is_causal)[..., perm, :]
        variants.append((message, (carried - out[..., perm, :]).abs().max()))
        variants.append((message, bare.abs().max()))
    if is_causal:
        plain = attend(x[..., perm, :] + positions) - attend(x + positions)[..., perm, :]
        variants.append(("is_causal is ignored; pass it on to the attention", plain.abs().max()))
    return [(message, float(v)) for message, v in variants]


def _as_number(value, what: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.detach().cpu().double().item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckFailed(f"{what}: expected a Python float (use .item()), got "
                          f"{type(value).__name__}.")
    return float(value)


@check()
def check_permutation_equivariance_gap(fn: Subject) -> None:
    """permutation_equivariance_gap(x (..., L, E), perm (L,), pe=None (max_len, E),
    is_causal=False) -> float, max |A(x[..., perm, :] + P) - A(x + P)[..., perm, :]| with
    A(h) = softmax(h hᵀ/sqrt(E)) h (causal if asked) and P = pe[:L] or 0.
    """
    for device, dtype, seed, (lead, L, E, max_len) in cases(_GAP_SHAPES, _DTYPES):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(*lead, L, E, generator=g, dtype=torch.float64).to(device, dtype)
        perm = torch.randperm(L, generator=g)
        while L > 2 and torch.equal(perm[perm], torch.arange(L)):  # not its own inverse
            perm = torch.randperm(L, generator=g)
        perm = perm.to(device)
        pe = ref.sinusoidal_positional_encoding(max_len, E).to(device, dtype)  # (max_len, E)
        rtol, atol = TOLERANCES[dtype]
        where = f"x of shape {tuple(x.shape)}, {str(dtype).removeprefix('torch.')}, {device.type}"
        for table, is_causal in ((None, False), (pe, False), (None, True), (pe, True)):
            args = f"pe={'None' if table is None else f'({max_len}, {E})'}, is_causal={is_causal}"
            what = f"permutation_equivariance_gap({where}, {args})"
            gap = _as_number(calling(what, fn, x, perm, table, is_causal), what)
            if not math.isfinite(gap) or gap < 0:
                raise CheckFailed(f"{what}: the gap is a largest absolute difference: finite and "
                                  ">= 0.")
            expected = ref.permutation_equivariance_gap(x, perm, table, is_causal)
            if abs(gap - expected) <= 10 * atol + 10 * rtol * expected:
                continue
            if table is None and not is_causal:
                hint = (" Without positions, self-attention is permutation-equivariant, so the "
                        "gap must be about 0 (rounding).")
            else:
                hint = ""
            for message, wrong in _gap_variants(x, perm, table, is_causal):
                if abs(gap - wrong) <= 10 * atol + 10 * rtol * wrong:
                    raise CheckFailed(f"{what}: {message}.{hint}")
            raise CheckFailed(
                f"{what}: the gap differs from the reference's.{hint} Check the axis you "
                "permute (the sequence, dimension -2) and where pe is added."
            )

    # a permutation that swaps the first and the last token only ("dog bites man")
    for device in check_devices():
        x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(9)).to(device)
        swap = torch.tensor([2, 1, 0], device=device)
        what = f"permutation_equivariance_gap(x of shape (2, 3, 8), perm=[2, 1, 0], {device.type})"
        gap = _as_number(calling(what, fn, x, swap), what)
        if gap > 1e-4:
            raise CheckFailed(f"{what}: without positions the gap must be about 0: swapping two "
                              "tokens swaps their outputs and changes nothing else.")
