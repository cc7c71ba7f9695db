"""Known-wrong implementations for chapter 3: the mistakes the checks must catch.

Each entry is a plausible student mistake, right in everything but its mistake. The contract test
runs every check on every entry and requires a check of its own name to fail with a message that
contains the entry's phrase (the words that name the mistake for the student), and every other
name's checks to pass (one bug, one part).

``WRONG`` maps the name of the graded function or class to {mistake: Mistake(implementation,
phrase)}.
"""

from __future__ import annotations

import torch

from autograder.chapters import Mistake

from . import reference as ref
from .reference import local_weights, predicted_positions

# --- predicted_positions ----------------------------------------------------------------------


def _sigmoid_of(query, weight, v):
    return torch.sigmoid(torch.tanh(query @ weight.T) @ v)  # (B, L)


def _S_b(lengths, query):
    return lengths.to(query.device, query.dtype)[:, None]  # (B, 1)


def positions_weight_transposed(query, weight, v, lengths):
    """query @ W_p instead of query @ W_p.T (runs only when A = D)."""
    return _S_b(lengths, query) * torch.sigmoid(torch.tanh(query @ weight) @ v)


def positions_not_scaled(query, weight, v, lengths):
    """sigmoid(...) alone: a position between 0 and 1 for every sentence."""
    return _sigmoid_of(query, weight, v)


def positions_longest_length(query, weight, v, lengths):
    """Scales every sentence by the longest length of the batch."""
    return lengths.max().to(query.device, query.dtype) * _sigmoid_of(query, weight, v)


def positions_no_tanh(query, weight, v, lengths):
    return _S_b(lengths, query) * torch.sigmoid((query @ weight.T) @ v)


def positions_last_index(query, weight, v, lengths):
    """(S_b − 1) · sigmoid(...): the last index instead of the paper's S_b."""
    return (_S_b(lengths, query) - 1) * _sigmoid_of(query, weight, v)


# --- local_weights ----------------------------------------------------------------------------


def _window(scores, centres, mask, window, *, inclusive=True, rounded=False):
    positions = torch.arange(scores.size(-1), device=scores.device, dtype=scores.dtype)
    c = centres.round() if rounded else centres
    distance = (positions - c.unsqueeze(-1)).abs()  # (B, L, S)
    allowed = distance <= window if inclusive else distance < window
    if mask is not None:
        allowed = allowed & mask.unsqueeze(-2)
    return allowed


def _softmax_where(scores, allowed):
    empty = ~allowed.any(dim=-1, keepdim=True)
    masked = scores.masked_fill(~allowed, float("-inf")).masked_fill(empty, 0.0)
    return masked.softmax(dim=-1).masked_fill(empty, 0.0)


def _gaussian(scores, centres, window, sigma=None):
    positions = torch.arange(scores.size(-1), device=scores.device, dtype=scores.dtype)
    sigma = window / 2 if sigma is None else sigma
    return torch.exp(-((positions - centres.unsqueeze(-1)) ** 2) / (2 * sigma**2))


def window_excludes_its_ends(scores, centres, mask, window, gaussian=False):
    """|s − p_t| < D: the positions at distance exactly D are left out."""
    w = _softmax_where(scores, _window(scores, centres, mask, window, inclusive=False))
    return w * _gaussian(scores, centres, window) if gaussian else w


def window_rounds_the_centre(scores, centres, mask, window, gaussian=False):
    """The window around round(p_t) instead of the real-valued p_t."""
    w = _softmax_where(scores, _window(scores, centres, mask, window, rounded=True))
    return w * _gaussian(scores, centres, window) if gaussian else w


def window_ignores_the_mask(scores, centres, mask, window, gaussian=False):
    """The window alone: padding inside it takes a share of the weight."""
    w = _softmax_where(scores, _window(scores, centres, None, window))
    return w * _gaussian(scores, centres, window) if gaussian else w


def window_softmax_over_everything(scores, centres, mask, window, gaussian=False):
    """The softmax over all S positions, then zeros outside the window: rows sum to less than 1."""
    allowed = _window(scores, centres, mask, window)
    w = scores.softmax(dim=-1).masked_fill(~allowed, 0.0)
    return w * _gaussian(scores, centres, window) if gaussian else w


def window_nan_when_empty(scores, centres, mask, window, gaussian=False):
    """-inf outside the window, and nothing for a query whose window holds no word: 0/0."""
    allowed = _window(scores, centres, mask, window)
    w = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    return w * _gaussian(scores, centres, window) if gaussian else w


def window_large_negative_fill(scores, centres, mask, window, gaussian=False):
    """-1e9 instead of -inf: a query whose window holds no word gets uniform weights."""
    allowed = _window(scores, centres, mask, window)
    w = scores.masked_fill(~allowed, -1e9).softmax(dim=-1)
    return w * _gaussian(scores, centres, window) if gaussian else w


def gaussian_ignored(scores, centres, mask, window, gaussian=False):
    """The gaussian argument is accepted and ignored."""
    return local_weights(scores, centres, mask, window)


def gaussian_sigma_is_the_window(scores, centres, mask, window, gaussian=False):
    """σ = D instead of the paper's D / 2."""
    w = local_weights(scores, centres, mask, window)
    return w * _gaussian(scores, centres, window, sigma=window) if gaussian else w


def gaussian_renormalised(scores, centres, mask, window, gaussian=False):
    """Divides by the sum after the Gaussian: the rows sum to 1 again."""
    w = local_weights(scores, centres, mask, window, gaussian)
    if not gaussian:
        return w
    total = w.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, w / total.clamp_min(1e-30), w)


def gaussian_centres_detached(scores, centres, mask, window, gaussian=False):
    """The Gaussian of the detached centres: no gradient reaches p_t, which never learns."""
    w = local_weights(scores, centres, mask, window)
    return w * _gaussian(scores, centres.detach(), window) if gaussian else w


def gaussian_rounded_centre(scores, centres, mask, window, gaussian=False):
    """The Gaussian centred on round(p_t)."""
    w = local_weights(scores, centres, mask, window)
    return w * _gaussian(scores, centres.round(), window) if gaussian else w


# --- LuongAttention ---------------------------------------------------------------------------


class _Layer(ref.LuongAttention):
    """The reference's parameters and scores; the weights as written here."""

    def _local(self, query, keys, mask, lengths=None, gaussian=True, flip=False):
        scores = self.scores(query, keys)
        if lengths is None:
            B, S = keys.shape[:2]
            lengths = mask.sum(-1) if mask is not None else torch.full((B,), S)
        centres = predicted_positions(query, self.W_p.weight, self.v_p, lengths)
        used = None if mask is None else (~mask if flip else mask)
        return local_weights(scores, centres, used, self.window, gaussian=gaussian)


class LuongNoGaussian(_Layer):
    def attention_weights(self, query, keys, mask=None):
        if self.window is None:
            return super().attention_weights(query, keys, mask)
        return self._local(query, keys, mask, gaussian=False)


class LuongPaddedWidth(_Layer):
    """Predicts every sentence's position with the padded width S as its length."""

    def attention_weights(self, query, keys, mask=None):
        if self.window is None:
            return super().attention_weights(query, keys, mask)
        return self._local(query, keys, mask, lengths=torch.full((keys.size(0),), keys.size(1)))


class LuongMaskFlipped(_Layer):
    """Hands local_weights the mask the wrong way round, as nn.MultiheadAttention's
    key_padding_mask would have it."""

    def attention_weights(self, query, keys, mask=None):
        if self.window is None:
            return super().attention_weights(query, keys, mask)
        return self._local(query, keys, mask, flip=True)


class LuongWindowIgnored(_Layer):
    """Global attention whatever the window."""

    def attention_weights(self, query, keys, mask=None):
        scores = self.scores(query, keys)
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(-2), float("-inf"))
        empty = torch.isneginf(scores).all(dim=-1, keepdim=True)
        return scores.masked_fill(empty, 0.0).softmax(dim=-1).masked_fill(empty, 0.0)


class LuongGlobalPaddingNotMasked(_Layer):
    def attention_weights(self, query, keys, mask=None):
        if self.window is None:
            return self.scores(query, keys).softmax(dim=-1)
        return super().attention_weights(query, keys, mask)


class LuongPositionsDetached(_Layer):
    """Predicts p_t from a detached query: no gradient reaches W_p and v_p."""

    def attention_weights(self, query, keys, mask=None):
        if self.window is None:
            return super().attention_weights(query, keys, mask)
        scores = self.scores(query, keys)
        B, S = keys.shape[:2]
        lengths = mask.sum(-1) if mask is not None else torch.full((B,), S)
        with torch.no_grad():
            centres = predicted_positions(query, self.W_p.weight, self.v_p, lengths)
        return local_weights(scores, centres, mask, self.window, gaussian=True)


class LuongNoTanh(_Layer):
    def forward(self, query, keys, mask=None):
        context = self.attention_weights(query, keys, mask) @ keys
        return self.W_c(torch.cat([context, query], dim=-1))


class LuongQueryFirst(_Layer):
    """tanh(W_c [h_t; c_t]) instead of tanh(W_c [c_t; h_t])."""

    def forward(self, query, keys, mask=None):
        context = self.attention_weights(query, keys, mask) @ keys
        return torch.tanh(self.W_c(torch.cat([query, context], dim=-1)))


class LuongRenormalisedContext(_Layer):
    """Averages the keys with the local weights renormalised to sum to 1."""

    def forward(self, query, keys, mask=None):
        w = self.attention_weights(query, keys, mask)
        total = w.sum(dim=-1, keepdim=True)
        w = torch.where(total > 0, w / total.clamp_min(1e-30), w)
        return torch.tanh(self.W_c(torch.cat([w @ keys, query], dim=-1)))


class LuongAcceptsAnyWindow(_Layer):
    """Takes window=0 (or any int) without complaint: a window of 0 has σ = 0."""

    def __init__(self, hidden_size, score="general", attn_dim=None, window=None):
        super().__init__(hidden_size, score, attn_dim, None if window == 0 else window)
        self.window = window


WRONG = {
    "predicted_positions": {
        f.__name__: Mistake(f, says)
        for f, says in (
            (positions_weight_transposed, "used transposed"),
            (positions_not_scaled, "not scaled by the sentence's length"),
            (positions_longest_length, "the longest length"),
            (positions_no_tanh, "there is no tanh"),
            (positions_last_index, "S_b · sigmoid"),
        )
    },
    "local_weights": {
        f.__name__: Mistake(f, says)
        for f, says in (
            (window_excludes_its_ends, "includes both ends"),
            (window_rounds_the_centre, "rounded to a whole position"),
            (window_ignores_the_mask, "padded positions inside the window"),
            (window_softmax_over_everything, "sum to 1"),
            (window_nan_when_empty, "contain NaN"),
            (window_large_negative_fill, "attends to nothing"),
            (gaussian_ignored, "Gaussian is not applied"),
            (gaussian_sigma_is_the_window, "σ = D / 2"),
            (gaussian_renormalised, "renormalised"),
            (gaussian_centres_detached, "no gradient reaches the centres"),
            (gaussian_rounded_centre, "rounded to a whole position"),
        )
    },
    "LuongAttention": {
        c.__name__: Mistake(c, says)
        for c, says in (
            (LuongNoGaussian, "no Gaussian"),
            (LuongPaddedWidth, "padded width"),
            (LuongMaskFlipped, "wrong way round"),
            (LuongWindowIgnored, "the window is ignored"),
            (LuongGlobalPaddingNotMasked, "padding is not masked"),
            (LuongPositionsDetached, "no gradient arrives"),
            (LuongNoTanh, "there is no tanh"),
            (LuongQueryFirst, "wrong order"),
            (LuongRenormalisedContext, "renormalised weights"),
            (LuongAcceptsAnyWindow, "must raise ValueError"),
        )
    },
}
