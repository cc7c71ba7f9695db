"""Known-wrong implementations for chapter 7: the mistakes the checks must catch.

Each entry is a plausible student mistake. ``tests/test_chapter_contract.py`` runs every check on
every entry and requires a check of its name to fail with a message that holds the entry's phrase
(and every other name's checks to pass, with the mistake in the student's namespace), so a check
that grows lax, or one that charges a mistake to the wrong part, is noticed. The checks also use
these implementations to name the mistake a student made.

``WRONG`` maps the name the student defines to {mistake: Mistake(implementation, phrase)}.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autograder.chapters import Mistake

from . import reference as ref

# --- sinusoidal_positional_encoding ---------------------------------------------------------


def _angles(max_len, embed_dim, exponent=lambda j, E: j / E, start=0):
    """p · 10000^(-exponent(j, E)) for the even columns j (float32, as students compute it)."""
    position = torch.arange(start, start + max_len, dtype=torch.float32)[:, None]  # (max_len, 1)
    j = torch.arange(0, embed_dim, 2, dtype=torch.float32)  # (ceil(E/2),)
    return position * 10000.0 ** (-exponent(j, embed_dim))  # (max_len, ceil(E/2))


def _interleave(first, second, embed_dim):
    pe = torch.zeros(first.size(0), embed_dim)  # (max_len, E)
    pe[:, 0::2] = first
    pe[:, 1::2] = second[:, : embed_dim // 2]
    return pe


def pe_sin_cos_swapped(max_len, embed_dim):
    """Cosines in the even columns, sines in the odd ones."""
    a = _angles(max_len, embed_dim)
    return _interleave(torch.cos(a), torch.sin(a), embed_dim)


def pe_concatenated(max_len, embed_dim):
    """All the sines, then all the cosines (a layout some libraries use; not the paper's)."""
    a = _angles(max_len, embed_dim)
    return torch.cat([torch.sin(a), torch.cos(a[:, : embed_dim // 2])], dim=-1)


def pe_exponent_doubled(max_len, embed_dim):
    """10000^(2j/E) with j the column index, already even: the exponent is twice too large."""
    a = _angles(max_len, embed_dim, exponent=lambda j, E: 2 * j / E)
    return _interleave(torch.sin(a), torch.cos(a), embed_dim)


def pe_exponent_halved(max_len, embed_dim):
    """10000^(i/E) with i the pair's index: the exponent is half what it should be."""
    a = _angles(max_len, embed_dim, exponent=lambda j, E: (j / 2) / E)
    return _interleave(torch.sin(a), torch.cos(a), embed_dim)


def pe_positions_from_one(max_len, embed_dim):
    a = _angles(max_len, embed_dim, start=1)
    return _interleave(torch.sin(a), torch.cos(a), embed_dim)


def pe_odd_width_crashes(max_len, embed_dim):
    """The common slicing version: for an odd E it assigns ceil(E/2) cosines to E//2 columns."""
    pe = torch.zeros(max_len, embed_dim)
    a = _angles(max_len, embed_dim)
    pe[:, 0::2] = torch.sin(a)
    pe[:, 1::2] = torch.cos(a)
    return pe


def pe_odd_width_truncated(max_len, embed_dim):
    """Drops the unpaired last column of an odd width."""
    a = _angles(max_len, embed_dim)[:, : embed_dim // 2]
    return _interleave(torch.sin(a), torch.cos(a), 2 * (embed_dim // 2))


def pe_numpy_float64(max_len, embed_dim):
    """Right values, built with NumPy and returned as float64."""
    position = np.arange(max_len)[:, None]
    j = np.arange(0, embed_dim, 2)
    a = position / 10000.0 ** (j / embed_dim)
    pe = np.zeros((max_len, embed_dim))
    pe[:, 0::2] = np.sin(a)
    pe[:, 1::2] = np.cos(a[:, : embed_dim // 2])
    return torch.from_numpy(pe)


def pe_cos_own_frequency(max_len, embed_dim):
    """A loop that gives the cosine column j + 1 its own frequency 10000^((j + 1)/E): the pairs
    are no longer rotations."""
    pe = torch.zeros(max_len, embed_dim)
    for p in range(max_len):
        for j in range(0, embed_dim, 2):
            pe[p, j] = math.sin(p / 10000 ** (j / embed_dim))
            if j + 1 < embed_dim:
                pe[p, j + 1] = math.cos(p / 10000 ** ((j + 1) / embed_dim))
    return pe


def pe_positions_ignored(positions, embed_dim):
    """Right for an int; for a tensor of positions, the positions 0..n-1 whatever their values."""
    if isinstance(positions, torch.Tensor):
        table = ref.sinusoidal_positional_encoding(positions.numel(), embed_dim)
        return table.reshape(*positions.shape, embed_dim).to(positions.device)
    return ref.sinusoidal_positional_encoding(positions, embed_dim)


def pe_positions_flattened(positions, embed_dim):
    """Right values for a tensor of positions, but flattened: (n, E) instead of (..., E)."""
    if isinstance(positions, torch.Tensor):
        return ref.sinusoidal_positional_encoding(positions.reshape(-1), embed_dim)
    return ref.sinusoidal_positional_encoding(positions, embed_dim)


# --- PositionalEncoding -----------------------------------------------------------------------
# Built, like a student's, from the name sinusoidal_positional_encoding of the namespace they run
# in (the reference's here; the student's own in a notebook, or the grader's stand-in).

sinusoidal_positional_encoding = ref.sinusoidal_positional_encoding


class PEParameter(ref.PositionalEncoding):
    """The table as a frozen nn.Parameter instead of a buffer."""

    def __init__(self, embed_dim, dropout=0.1, max_len=5000):
        super().__init__(embed_dim, dropout, max_len)
        table = self.pe
        del self.pe
        self.pe = nn.Parameter(table, requires_grad=False)


class PEPlainAttribute(ref.PositionalEncoding):
    """The table as a plain tensor attribute: it stays on the CPU when the module moves."""

    def __init__(self, embed_dim, dropout=0.1, max_len=5000):
        super().__init__(embed_dim, dropout, max_len)
        table = self.pe
        del self.pe
        self.pe = table


class PENotSliced(ref.PositionalEncoding):
    """Adds the whole table: only works when L == max_len."""

    def forward(self, x):
        return self.dropout(x + self.pe)


class PENoLengthCheck(ref.PositionalEncoding):
    """No explicit check: a sequence longer than max_len fails with a broadcasting error."""

    def forward(self, x):
        return self.dropout(x + self.pe[: x.size(-2)])


class PEDropoutBeforeAdding(ref.PositionalEncoding):
    def forward(self, x):
        if x.size(-2) > self.pe.size(0):
            raise ValueError("sequence longer than max_len")
        return self.dropout(x) + self.pe[: x.size(-2)]


class PENoDropout(ref.PositionalEncoding):
    def forward(self, x):
        if x.size(-2) > self.pe.size(0):
            raise ValueError("sequence longer than max_len")
        return x + self.pe[: x.size(-2)]


class PEDropoutAlwaysOn(ref.PositionalEncoding):
    """F.dropout with training=True: it drops in eval mode too."""

    def forward(self, x):
        if x.size(-2) > self.pe.size(0):
            raise ValueError("sequence longer than max_len")
        return F.dropout(x + self.pe[: x.size(-2)], self.dropout.p, training=True)


class PEScalesBySqrtE(ref.PositionalEncoding):
    """Multiplies x by sqrt(E) inside: the instructions leave that to the model."""

    def forward(self, x):
        if x.size(-2) > self.pe.size(0):
            raise ValueError("sequence longer than max_len")
        return self.dropout(x * math.sqrt(x.size(-1)) + self.pe[: x.size(-2)])


class PESubtracts(ref.PositionalEncoding):
    def forward(self, x):
        if x.size(-2) > self.pe.size(0):
            raise ValueError("sequence longer than max_len")
        return self.dropout(x - self.pe[: x.size(-2)])


class PENotAdded(ref.PositionalEncoding):
    """Builds the table and forgets to add it."""

    def forward(self, x):
        if x.size(-2) > self.pe.size(0):
            raise ValueError("sequence longer than max_len")
        return self.dropout(x)


class PESequenceFirst(ref.PositionalEncoding):
    """Reads x as (L, B, E), as the PyTorch tutorial's module does."""

    def forward(self, x):
        if x.size(0) > self.pe.size(0):
            raise ValueError("sequence longer than max_len")
        return self.dropout(x + self.pe[: x.size(0)].unsqueeze(1))


# --- permutation_equivariance_gap -------------------------------------------------------------


def _attend(h, is_causal):
    return F.scaled_dot_product_attention(h, h, h, is_causal=is_causal)


def _positions(x, pe):
    return 0.0 if pe is None else pe[: x.size(-2)]


def gap_invariance(x, perm, pe=None, is_causal=False):
    """Expects A(x[perm]) to equal A(x): invariance, the study notes' 'order changes nothing'."""
    p = _positions(x, pe)
    return (_attend(x[..., perm, :] + p, is_causal) - _attend(x + p, is_causal)).abs().max().item()


def gap_inverse_permutation(x, perm, pe=None, is_causal=False):
    p = _positions(x, pe)
    out = _attend(x + p, is_causal)[..., torch.argsort(perm), :]
    return (_attend(x[..., perm, :] + p, is_causal) - out).abs().max().item()


def gap_positions_move_with_tokens(x, perm, pe=None, is_causal=False):
    """Permutes x + pe: each token takes its position along, and the gap stays about 0."""
    h = x + _positions(x, pe)
    out = _attend(h, is_causal)[..., perm, :]
    return (_attend(h[..., perm, :], is_causal) - out).abs().max().item()


def gap_ignores_is_causal(x, perm, pe=None, is_causal=False):
    return ref.permutation_equivariance_gap(x, perm, pe, False)


def gap_permutes_first_axis(x, perm, pe=None, is_causal=False):
    """x[perm]: the batch axis of a (B, L, E) input, not the sequence."""
    p = _positions(x, pe)
    return (_attend(x[perm] + p, is_causal) - _attend(x + p, is_causal)[perm]).abs().max().item()


def gap_mean(x, perm, pe=None, is_causal=False):
    p = _positions(x, pe)
    out = _attend(x + p, is_causal)[..., perm, :]
    return (_attend(x[..., perm, :] + p, is_causal) - out).abs().mean().item()


def gap_ignores_pe(x, perm, pe=None, is_causal=False):
    return ref.permutation_equivariance_gap(x, perm, None, is_causal)


WRONG = {
    "sinusoidal_positional_encoding": {
        "sines and cosines swapped": Mistake(pe_sin_cos_swapped, "swapped"),
        "sines, then cosines": Mistake(pe_concatenated, "two halves"),
        "exponent doubled": Mistake(pe_exponent_doubled, "wrong frequency"),
        "exponent halved": Mistake(pe_exponent_halved, "wrong frequency"),
        "positions from 1": Mistake(pe_positions_from_one, "start at 0"),
        "an odd width crashes": Mistake(pe_odd_width_crashes, "E is odd"),
        "an odd width truncated": Mistake(pe_odd_width_truncated, "E is odd"),
        "NumPy, float64": Mistake(pe_numpy_float64, "float32"),
        "each cosine its own frequency": Mistake(pe_cos_own_frequency, "relative-offset"),
        "the positions' values ignored": Mistake(pe_positions_ignored, "values of the positions"),
        "the positions' shape lost": Mistake(pe_positions_flattened, "(..., embed_dim)"),
    },
    "PositionalEncoding": {
        "pe an nn.Parameter": Mistake(PEParameter, "nn.Parameter"),
        "pe a plain attribute": Mistake(PEPlainAttribute, "buffer called pe"),
        "the whole table added": Mistake(PENotSliced, "first L rows"),
        "no ValueError beyond max_len": Mistake(PENoLengthCheck, "ValueError"),
        "dropout before adding": Mistake(PEDropoutBeforeAdding, "on the sum"),
        "no dropout": Mistake(PENoDropout, "nothing is dropped"),
        "dropout in eval mode too": Mistake(PEDropoutAlwaysOn, "eval mode"),
        "x scaled by sqrt(E)": Mistake(PEScalesBySqrtE, "sqrt(E)"),
        "the table subtracted": Mistake(PESubtracts, "subtracted"),
        "the table not added": Mistake(PENotAdded, "not added"),
        "sequence first": Mistake(PESequenceFirst, "sequence first"),
    },
    "permutation_equivariance_gap": {
        "invariance": Mistake(gap_invariance, "equivariance, not invariance"),
        "the inverse permutation": Mistake(gap_inverse_permutation, "inverse permutation"),
        "positions move with the tokens": Mistake(gap_positions_move_with_tokens,
                                                  "stay in place"),
        "is_causal ignored": Mistake(gap_ignores_is_causal, "is_causal is ignored"),
        "the batch axis permuted": Mistake(gap_permutes_first_axis, "sequence"),
        "the mean": Mistake(gap_mean, "the max"),
        "pe ignored": Mistake(gap_ignores_pe, "stay in place"),
    },
}
