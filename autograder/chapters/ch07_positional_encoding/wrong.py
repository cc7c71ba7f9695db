"""Known-wrong implementations for chapter 7: the mistakes the checks must catch.

Each entry is a plausible student mistake. ``tests/test_chapter_contract.py`` runs every check on
every entry and requires its part's check to fail (and every other part's to pass, with the
mistake in the student's namespace), so a check that grows lax, or one that charges a mistake to
the wrong part, is noticed.

``WRONG`` maps the name the student defines to {mistake: implementation}.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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


# --- PositionalEncoding -----------------------------------------------------------------------
# Built, like a student's, from the name sinusoidal_positional_encoding of the namespace they run
# in (the reference's here; the student's own in a notebook, or the grader's stand-in).


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
        f.__name__: f
        for f in (
            pe_sin_cos_swapped,
            pe_concatenated,
            pe_exponent_doubled,
            pe_exponent_halved,
            pe_positions_from_one,
            pe_odd_width_crashes,
            pe_odd_width_truncated,
            pe_numpy_float64,
            pe_cos_own_frequency,
        )
    },
    "PositionalEncoding": {
        c.__name__: c
        for c in (
            PEParameter,
            PEPlainAttribute,
            PENotSliced,
            PENoLengthCheck,
            PEDropoutBeforeAdding,
            PENoDropout,
            PEDropoutAlwaysOn,
            PEScalesBySqrtE,
            PESequenceFirst,
        )
    },
    "permutation_equivariance_gap": {
        f.__name__: f
        for f in (
            gap_invariance,
            gap_inverse_permutation,
            gap_positions_move_with_tokens,
            gap_ignores_is_causal,
            gap_permutes_first_axis,
            gap_mean,
            gap_ignores_pe,
        )
    },
}
