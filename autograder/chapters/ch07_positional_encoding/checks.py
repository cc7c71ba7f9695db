"""Chapter 7's checks: what the hidden tests of ``solutions/ch07_positional_encoding`` call.

Each check draws its inputs from fixed seeds, runs on the CPU and on CUDA when there is one (the
table of Part 1 is built on the CPU, as its instructions say), and tests what the instructions
promise, properties first, values after, so that a failure names the property:

- ``sinusoidal_positional_encoding``: for a number of positions, the shape (odd widths
  included), float32, position 0 first, the interleaved layout (even columns sines), each pair's
  frequency, the relative-offset property PE(p + k) = M_k PE(p), then every value; for a tensor
  of positions (unordered, repeated, large, in batches), the shape (..., E), float32, the
  positions' device, then every value;
- ``PositionalEncoding``: a buffer called ``pe``, not a parameter and not a plain attribute, the
  table's first L rows added (no sqrt(E) scaling), any L up to max_len, ValueError beyond it,
  dropout on the sum (training) and none in eval mode, the input's dtype and device, gradients;
- ``permutation_equivariance_gap``: about 0 for self-attention without positions; the positions
  stay put while the tokens move; the causal mask; any leading dimensions; the maximum.

**One bug, one part.** ``PositionalEncoding`` calls the student's
``sinusoidal_positional_encoding``; while its check runs, the student's own is used when it passes
its own check and the reference stands in for it when it does not (``stand_ins``), and the
expected table is computed through the same function (``through``), so a wrong table costs Part 1
only and a table that Part 1 accepts is never charged again.

Tolerances: a float32 table computed in float32 differs from the exact one by up to about
p · 1e-7 at position p (the angle p·w is rounded before its sine is taken), so Part 1 allows
1e-5 + 2e-7 · (the largest position).

Known mistakes are named by running the chapter's wrong bank (``wrong.py``) on the same inputs.
Not here: the reference (``reference.py``) and the known-wrong implementations (``wrong.py``).
"""

from __future__ import annotations

import functools
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
    close,
    compare,
    draw,
    label,
    raises,
    through,
)

from . import reference as ref
from . import wrong

__all__ = [
    "check_sinusoidal_positional_encoding",
    "check_positional_encoding",
    "check_permutation_equivariance_gap",
]

_DTYPES = (torch.float32, torch.float64)
_SECTION = "chapter 7, section 'The sinusoidal encoding'"


def _table_tolerance(max_len: int) -> tuple[float, float]:
    """(rtol, atol) for a float32 table of positions below max_len."""
    return 0.0, 1e-5 + 2e-7 * max_len


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
    """sinusoidal_positional_encoding(n, embed_dim) -> (n, embed_dim), float32, CPU; and
    sinusoidal_positional_encoding(positions (...), embed_dim) -> (..., embed_dim), float32, on
    the positions' device.

    PE[p, 2i] = sin(p · w_i), PE[p, 2i + 1] = cos(p · w_i), w_i = 10000^(-2i/E), positions from
    0; an odd E gives E columns, the last a sine. Checked in this order: a float32 tensor of that
    shape; row 0 = (0, 1, 0, 1, ...); column 0 = sin(p); each pair's frequency; the relative
    offset property PE(p + k) = M_k PE(p); every value; then tensors of positions.
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
    for device in check_devices():
        for positions, E, kind in _POSITIONS:
            _check_positions(fn, positions.to(device), E, kind)


# Tensors of positions: (positions, E, what they are).
_POSITIONS = [
    (torch.tensor([5, 0, 3, 3]), 8, "unordered and repeated"),
    (torch.arange(100, 106), 16, "that continue from position 100"),
    (torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]), 6,
     "a (B, L) batch of position ids, the first sequence padded at the start"),
    (torch.randint(0, 2000, (2, 3, 4), generator=torch.Generator().manual_seed(3),
                   dtype=torch.int32), 33, "int32, of shape (2, 3, 4), up to 2000, E odd"),
]  # fmt: skip


def _check_positions(fn: Subject, positions: torch.Tensor, E: int, kind: str) -> None:
    what = (f"sinusoidal_positional_encoding(positions of shape {tuple(positions.shape)}, {kind}, "
            f"on {positions.device.type}, {E})")  # fmt: skip
    out = calling(what, fn, positions, E)
    shape = (*positions.shape, E)
    if not isinstance(out, torch.Tensor):
        raise CheckFailed(f"{what}: expected a torch.Tensor, got {type(out).__name__}.")
    if tuple(out.shape) != shape:
        raise CheckFailed(
            f"{what}: wrong shape {tuple(out.shape)}; for positions of shape (...) the result "
            f"is (..., embed_dim) = {shape}, one vector per position."
        )
    if out.dtype != torch.float32:
        raise CheckFailed(f"{what}: the result is {out.dtype}; it must be float32.")
    if out.device.type != positions.device.type:
        raise CheckFailed(f"{what}: the result is on {out.device.type}; it must be on the "
                          f"positions' device, {positions.device.type}.")
    tol = _table_tolerance(int(positions.max()) + 1)
    expected = ref.sinusoidal_positional_encoding(positions, E)  # (..., E)
    if not close(out, expected, tolerance=tol) and close(
        out, wrong.pe_positions_ignored(positions, E), tolerance=tol
    ):
        raise CheckFailed(
            f"{what}: these are the encodings of the positions 0, 1, 2, ..., not of the values "
            "of the positions given: entry [..., :] is PE of the position at [...]."
        )
    compare(out, expected, what, tolerance=tol,
            hint=f"Each entry is PE of its position, whatever the order. See {_SECTION}.")


def _first_row(exact, expected, E, what, tol) -> None:
    """Position 0 first: sin 0 = 0 in the even columns, cos 0 = 1 in the odd ones."""
    row = exact[0]  # (E,)
    if close(row, expected[0], tolerance=tol):
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
        for mistake, size in ((wrong.pe_exponent_doubled, "2·(2i)/E, twice"),
                              (wrong.pe_exponent_halved, "i/E, half")):  # fmt: skip
            column = mistake(max_len, E)[:, col].double()  # (max_len,)
            if bool(torch.allclose(exact[:, col], column, rtol=0, atol=tol[1])):
                raise CheckFailed(
                    f"{what}: column {col} has the wrong frequency: its exponent is {size} "
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


# Known mistakes that give another output of the right shape, and what to say about them.
_PE_MISTAKES = [
    (wrong.PEScalesBySqrtE, "the input is multiplied by sqrt(E); this module adds the table to "
     "x as it is (the model scales its embeddings before calling it)"),
    (wrong.PESubtracts, "the table is subtracted; add it"),
    (wrong.PENotAdded, "the table is not added"),
    (wrong.PESequenceFirst, "x is read sequence first, (L, B, E), as PyTorch's tutorial module "
     "does; this module takes (..., L, E), the positions on dimension -2"),
]  # fmt: skip


@check(stand_ins=_PE_STAND_IN)
def check_positional_encoding(cls: Subject) -> None:
    """PositionalEncoding(embed_dim, dropout=0.1, max_len=5000): forward(x (..., L, E)) =
    dropout(x + pe[:L]) with pe a (max_len, E) buffer (not a parameter), ValueError for
    L > max_len, in x's dtype and on its device after module.to(device, dtype).
    """
    for device, dtype, seed, (lead, L, E, max_len) in cases(_PE_SHAPES, _DTYPES):
        name = f"PositionalEncoding({E}, dropout=0.0, max_len={max_len})"
        module = calling(name, cls.seeded(0), E, dropout=0.0, max_len=max_len)
        table = _pe_buffer(module, name, max_len, E)
        with through(ref):  # the student's own table where it passed Part 1
            expected_table = ref.sinusoidal_positional_encoding(max_len, E)  # (max_len, E)
        compare(table.float(), expected_table, f"{name}.pe", tolerance=_table_tolerance(max_len),
                hint="It is the table sinusoidal_positional_encoding(max_len, embed_dim).")
        calling(f"{name}.to({label(dtype, device)})", module.to, device, dtype)
        x = draw((*lead, L, E), seed, device, dtype)  # (..., L, E)
        what = f"{name}(x of shape {tuple(x.shape)}, {label(dtype, device)})"
        try:
            out = calling(what, module, x)
        except CheckFailed as failed:
            raise CheckFailed(f"{str(failed).rstrip('.')}. forward(x) adds the table's first L "
                              "rows, pe[:L], with L = x.size(-2): a sequence may be shorter than "
                              "max_len.") from None
        expected = x + expected_table.to(device, dtype)[:L]  # (..., L, E)
        if isinstance(out, torch.Tensor) and out.shape == x.shape and not close(out, expected):
            for mistake, message in _PE_MISTAKES:
                made = mistake(E, dropout=0.0, max_len=max_len).to(device, dtype)
                made.pe.copy_(expected_table)
                if close(out, made(x)):
                    raise CheckFailed(f"{what}: {message}.")
        rtol, atol = TOLERANCES[dtype]
        compare(out, expected, what, tolerance=(rtol, atol + _table_tolerance(max_len)[1]),
                hint="forward(x) is x + pe[:L], L = x.size(-2), the first L rows only.")

        # one position longer than the table: a clear error, not a broadcasting accident
        longer = draw((*lead, max_len + 1, E), seed + 100, device, dtype)
        raises(ValueError, f"{name} given a sequence of length {max_len + 1} > max_len",
               module, longer)  # fmt: skip

    _check_dropout(cls)
    _check_gradients(cls)


def _check_dropout(cls: Subject) -> None:
    """Dropout on the sum: in training each entry is 0 or (x + pe) / (1 - p); eval: x + pe."""
    E, L, max_len, p = 16, 10, 40, 0.5
    name = f"PositionalEncoding({E}, dropout={p}, max_len={max_len})"
    module = calling(name, cls.seeded(0), E, dropout=p, max_len=max_len)
    x = draw((4, L, E), 11) + 3.0  # (B, L, E): no entry near 0
    with through(ref):
        expected = x + ref.sinusoidal_positional_encoding(max_len, E)[:L]  # (B, L, E)
    tol = TOLERANCES[torch.float32]

    calling(f"{name}.eval()", module.method("eval"))
    out = calling(f"{name} in eval mode", module, x)
    compare(out, expected, f"{name} in eval mode",
            hint="Use nn.Dropout, which does nothing in eval mode.")  # fmt: skip

    calling(f"{name}.train()", module.method("train"))
    out = calling(f"{name} in training mode", module.seeded(3), x)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        raise CheckFailed(f"{name} in training mode: the result must have x's shape (B, L, E).")
    dropped = out.abs() <= tol[1]
    kept = torch.isclose(out, expected / (1 - p), rtol=tol[0], atol=tol[1])
    if not bool(dropped.any()):
        raise CheckFailed(f"{name} in training mode: nothing is dropped; apply the dropout "
                          "(an nn.Dropout(dropout)) to x + pe.")
    if not bool((dropped | kept).all()):
        raise CheckFailed(
            f"{name} in training mode: the dropout must act on the sum x + pe, after the "
            "positions are added: each entry is then either 0 or (x + pe) / (1 - p). Dropping "
            "x alone, or the table alone, leaves other values."
        )


def _check_gradients(cls: Subject) -> None:
    """The gradient reaches x (the identity, with no dropout), and pe gets none."""
    E, max_len = 8, 12
    name = f"PositionalEncoding({E}, dropout=0.0, max_len={max_len}), backward"
    module = calling(name, cls.seeded(0), E, dropout=0.0, max_len=max_len)
    module.to("cpu", torch.float64)
    x = draw((2, 6, E), 5, dtype=torch.float64)  # (B, L, E)
    grad_output = draw((2, 6, E), 6, dtype=torch.float64)  # (B, L, E)
    _, grads, params = calling(name, module.gradients, (x,), params=True,
                               grad_output=grad_output)  # fmt: skip
    if grads[0] is None:
        raise CheckFailed(f"{name}: no gradient reaches the input x; use torch operations only.")
    compare(grads[0], grad_output, f"{name}, gradient of the input",
            hint="x + pe passes the gradient on unchanged.")  # fmt: skip
    if "pe" in params:
        raise CheckFailed(f"{name}: pe must not be a parameter; register it as a buffer.")


# --------------------------------------------------------------------------------------------
# Part 3: permutation_equivariance_gap
# --------------------------------------------------------------------------------------------

# (leading dims, L, E, max_len of the table)
_GAP_SHAPES = [((3,), 6, 16, 20), ((), 5, 8, 5), ((2, 2), 4, 8, 9), ((4,), 7, 12, 7)]


# Known mistakes (the wrong bank's), each with what to say when the student's gap is its gap.
_POSITIONS_STAY = (
    "the positions do not stay in place: add pe[:L] to the tokens after permuting them, so that "
    "position p gets pe[p] whichever token lands there (added before permuting, the positions "
    "travel with their tokens; not added, there are none)"
)
_GAP_MISTAKES = [
    (wrong.gap_invariance, "it compares A(x[perm]) with A(x) itself; the outputs of permuted "
     "tokens come out permuted (equivariance, not invariance), so compare with A(x)[perm], "
     "permuted along the sequence axis the same way"),
    (wrong.gap_inverse_permutation, "it permutes A(x) with the inverse permutation; x[perm] puts "
     "token perm[p] at position p, so compare with A(x)[perm], permuted the same way"),
    (wrong.gap_mean, "it returns the mean of |difference|; return the largest, the max"),
    # Adding pe before permuting and not adding it at all both leave the gap at about 0 without
    # a causal mask: one message names both.
    (wrong.gap_positions_move_with_tokens, _POSITIONS_STAY),
    (wrong.gap_ignores_pe, _POSITIONS_STAY),
    (wrong.gap_ignores_is_causal, "is_causal is ignored; pass it on to the attention"),
]  # fmt: skip


def _agree(a: float, b: float, dtype: torch.dtype) -> bool:
    """Two gaps equal up to rounding in `dtype`."""
    rtol, atol = TOLERANCES[dtype]
    return abs(a - b) <= 10 * atol + 10 * rtol * abs(b)


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
        x = draw((*lead, L, E), seed, device, dtype)  # (..., L, E)
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(L, generator=g)
        while L > 2 and torch.equal(perm[perm], torch.arange(L)):  # not its own inverse
            perm = torch.randperm(L, generator=g)
        perm = perm.to(device)
        pe = ref.sinusoidal_positional_encoding(max_len, E).to(device, dtype)  # (max_len, E)
        agree = functools.partial(_agree, dtype=dtype)
        where = f"x of shape {tuple(x.shape)}, {label(dtype, device)}"
        configs = ((None, False), (pe, False), (None, True), (pe, True))
        gaps = []
        for table, is_causal in configs:
            args = f"pe={'None' if table is None else f'({max_len}, {E})'}, is_causal={is_causal}"
            what = f"permutation_equivariance_gap({where}, {args})"
            try:
                gap = _as_number(calling(what, fn, x, perm, table, is_causal), what)
            except CheckFailed as failed:
                raise CheckFailed(f"{str(failed).rstrip('.')}. Permute the tokens along the "
                                  "sequence axis, dimension -2, for any number of leading "
                                  "dimensions: x[..., perm, :].") from None
            if not math.isfinite(gap) or gap < 0:
                raise CheckFailed(f"{what}: the gap is a largest absolute difference: finite and "
                                  ">= 0.")
            gaps.append((what, gap))
        for (what, gap), (table, is_causal) in zip(gaps, configs, strict=True):
            if agree(gap, ref.permutation_equivariance_gap(x, perm, table, is_causal)):
                continue
            if table is None and not is_causal:
                hint = (" Without positions, self-attention is permutation-equivariant, so the "
                        "gap must be about 0 (rounding).")
            else:
                hint = ""
            # a mistake is named when it gives the student's gap in all four settings
            for mistake, message in _GAP_MISTAKES:
                if all(agree(g, mistake(x, perm, t, c)) for (_, g), (t, c) in zip(gaps, configs,
                                                                                 strict=True)):
                    raise CheckFailed(f"{what}: {message}.{hint}")
            raise CheckFailed(
                f"{what}: the gap differs from the reference's.{hint} Check the axis you "
                "permute (the sequence, dimension -2) and where pe is added."
            )

    # a permutation that swaps the first and the last token only ("dog bites man")
    for device in check_devices():
        x = draw((2, 3, 8), 9, device)
        swap = torch.tensor([2, 1, 0], device=device)
        what = f"permutation_equivariance_gap(x of shape (2, 3, 8), perm=[2, 1, 0], {device.type})"
        gap = _as_number(calling(what, fn, x, swap), what)
        if gap > 1e-4:
            raise CheckFailed(f"{what}: without positions the gap must be about 0: swapping two "
                              "tokens swaps their outputs and changes nothing else.")
