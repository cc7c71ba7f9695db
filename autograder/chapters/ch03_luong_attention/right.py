"""Correct answers for chapter 3, as unlike the reference as the instructions allow.

Each variant was written from the released notebook's instructions alone (and the chapter's page),
the way a student might: the positions with einsum, with F.linear, in float64; the local weights
with a loop over the queries, with -1e9 in float64, or normalised by hand, the Gaussian written as
exp(−2 (s − p_t)² / D²); the layer's global weights as a window wide enough to hold every
position, the scores from a dict, helper methods, optional extra arguments, parameters drawn with
nn.init. The contract test requires every one of them to pass every check of its name, and grades a
notebook made of the *last* variant of each name through the real grader, so the last one is
self-contained: the imports below, the given scores and the earlier parts by their global names,
nothing else of this module.

``RIGHT`` maps the name of the graded function or class to {variant: implementation}.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .reference import (
    concat_score,
    dot_score,
    general_score,
    local_weights,
    predicted_positions,
)

# --- predicted_positions ----------------------------------------------------------------------


def positions_einsum(query, weight, v, lengths):
    hidden = torch.tanh(torch.einsum("bld,ad->bla", query, weight))  # (B, L, A)
    fraction = torch.sigmoid(torch.einsum("bla,a->bl", hidden, v))  # (B, L)
    return lengths.to(query.device).to(query.dtype).unsqueeze(1) * fraction


def positions_with_linear(query, weight, v, lengths):
    """F.linear with W_p's nn.Linear layout; the lengths as a column."""
    S_b = torch.as_tensor(lengths, device=query.device).to(query.dtype).view(-1, 1)  # (B, 1)
    return S_b * F.linear(torch.tanh(F.linear(query, weight)), v.unsqueeze(0)).squeeze(-1).sigmoid()


def positions_in_float64(query, weight, v, lengths, clamp=False):
    """In float64 inside, back to the query's dtype; an optional extra argument."""
    q, W, a = query.double(), weight.double(), v.double()
    logit = torch.tanh(q @ W.transpose(0, 1)) @ a  # (B, L)
    p = torch.sigmoid(logit) * lengths.double().to(query.device)[:, None]  # (B, L)
    if clamp:
        p = p.clamp(max=float(lengths.max()) - 1)
    return p.to(query.dtype)


# --- local_weights ----------------------------------------------------------------------------


def local_weights_loop(scores, centres, mask, window, gaussian=False):
    """One query at a time: the positions of its window as a list, the softmax over them."""
    B, L, S = scores.shape
    out = torch.zeros_like(scores)
    for b in range(B):
        for t in range(L):
            p = float(centres[b, t])
            inside = [
                s for s in range(S) if abs(s - p) <= window and (mask is None or bool(mask[b, s]))
            ]
            if inside:
                idx = torch.tensor(inside, device=scores.device)
                out[b, t, idx] = torch.softmax(scores[b, t, idx], dim=0)
    if gaussian:
        s = torch.arange(S, device=scores.device, dtype=scores.dtype)
        sigma = window / 2
        out = out * torch.exp(-((s - centres[..., None]) ** 2) / (2 * sigma * sigma))
    return out


def local_weights_large_negative(scores, centres, mask, window, gaussian=False):
    """-1e9 outside (exp of it is exactly 0), in float64, empty windows zeroed afterwards."""
    x = scores.double()
    s = torch.arange(scores.shape[-1], device=scores.device, dtype=torch.float64)
    offset = s.view(1, 1, -1) - centres.double().unsqueeze(2)  # (B, L, S)
    keep = offset.abs().le(window)
    if mask is not None:
        keep = keep & mask[:, None, :]
    w = torch.softmax(x.masked_fill(~keep, -1e9), dim=2)
    w = torch.where(keep.any(dim=2, keepdim=True), w, torch.zeros_like(w))
    if gaussian:
        w = w * torch.exp(-0.5 * (offset / (window / 2)) ** 2)
    return w.to(scores.dtype)


def local_weights_by_hand(scores, centres, mask, window, gaussian=False, sigma=None):
    """exp of the scores minus the largest allowed one, over a clamped sum; the Gaussian as
    exp(−2 (s − p_t)² / D²); an optional extra argument."""
    positions = torch.arange(scores.size(-1), device=scores.device).to(scores.dtype)
    offset = positions - centres[..., None]  # (B, L, S)
    allowed = offset.abs() <= window
    if mask is not None:
        allowed = allowed & mask.unsqueeze(1)
    top = scores.masked_fill(~allowed, float("-inf")).amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    e = (scores - top).masked_fill(~allowed, 0.0).exp() * allowed
    w = e / e.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)
    if gaussian:
        if sigma is None:
            w = w * torch.exp(-2 * offset**2 / window**2)
        else:
            w = w * torch.exp(-(offset**2) / (2 * sigma**2))
    return w


# --- LuongAttention ---------------------------------------------------------------------------


class LuongGlobalAsAWideWindow(nn.Module):
    """Global weights as local_weights with a window that holds every position; v_a and v_p
    drawn with nn.init.uniform_."""

    def __init__(self, hidden_size, score="general", attn_dim=None, window=None):
        super().__init__()
        if score not in ("dot", "general", "concat"):
            raise ValueError(f"unknown score {score!r}")
        if window is not None and window < 1:
            raise ValueError("window must be at least 1")
        D = hidden_size
        A = D if attn_dim is None else attn_dim
        self.kind, self.window = score, window
        if score == "general":
            self.W_a = nn.Linear(D, D, bias=False)
        if score == "concat":
            self.W_a = nn.Linear(2 * D, A, bias=False)
            self.v_a = nn.Parameter(nn.init.uniform_(torch.empty(A), -A**-0.5, A**-0.5))
        if window is not None:
            self.W_p = nn.Linear(D, A, bias=False)
            self.v_p = nn.Parameter(nn.init.uniform_(torch.empty(A), -A**-0.5, A**-0.5))
        self.W_c = nn.Linear(2 * D, D, bias=False)

    def attention_weights(self, query, keys, mask=None):
        if self.kind == "dot":
            e = dot_score(query, keys)
        elif self.kind == "general":
            e = general_score(query, keys, self.W_a.weight)
        else:
            e = concat_score(query, keys, self.W_a.weight, self.v_a)
        B, L, S = e.shape
        if self.window is None:  # every position is within S of position 0
            return local_weights(e, e.new_zeros(B, L), mask, max(S, 1))
        n = mask.sum(-1) if mask is not None else torch.full((B,), S, device=keys.device)
        p = predicted_positions(query, self.W_p.weight, self.v_p, n)
        return local_weights(e, p, mask, self.window, gaussian=True)

    def forward(self, query, keys, mask=None):
        c = torch.bmm(self.attention_weights(query, keys, mask), keys)  # (B, L, D)
        return torch.tanh(self.W_c(torch.cat((c, query), dim=2)))


class LuongDictOfScores(nn.Module):
    """The scores from a dict, as the page writes them; a helper for the positions; einsum for the
    context."""

    def __init__(self, hidden_size, score="general", attn_dim=None, window=None):
        super().__init__()
        widths = {"dot": None, "general": (hidden_size, hidden_size)}
        if score not in widths and score != "concat":
            raise ValueError(score)
        if window is not None and (not isinstance(window, int) or window < 1):
            raise ValueError(window)
        A = attn_dim or hidden_size
        self.score_name, self.window = score, window
        if score == "general":
            self.W_a = nn.Linear(hidden_size, hidden_size, bias=False)
        elif score == "concat":
            self.W_a = nn.Linear(2 * hidden_size, A, bias=False)
            self.v_a = nn.Parameter(torch.rand(A) * 2 / math.sqrt(A) - 1 / math.sqrt(A))
        if window:
            self.W_p = nn.Linear(hidden_size, A, bias=False)
            self.v_p = nn.Parameter(torch.rand(A) * 2 / math.sqrt(A) - 1 / math.sqrt(A))
        self.W_c = nn.Linear(2 * hidden_size, hidden_size, bias=False)

    def positions(self, query, keys, mask):
        lengths = mask.long().sum(1) if mask is not None else keys.new_full(
            (keys.size(0),), keys.size(1), dtype=torch.long
        )
        return predicted_positions(query, self.W_p.weight, self.v_p, lengths)

    def attention_weights(self, query, keys, mask=None):
        scores = {
            "dot": lambda: dot_score(query, keys),
            "general": lambda: general_score(query, keys, self.W_a.weight),
            "concat": lambda: concat_score(query, keys, self.W_a.weight, self.v_a),
        }[self.score_name]()
        if self.window:
            return local_weights(scores, self.positions(query, keys, mask), mask, self.window,
                                 gaussian=True)  # fmt: skip
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, :], -math.inf)
        nothing = ~torch.isfinite(scores).any(dim=-1, keepdim=True)
        return torch.softmax(scores.masked_fill(nothing, 0.0), dim=-1).masked_fill(nothing, 0.0)

    def forward(self, query, keys, mask=None):
        context = torch.einsum("bls,bsd->bld", self.attention_weights(query, keys, mask), keys)
        return torch.tanh(self.W_c(torch.cat([context, query], dim=-1)))


class LuongWithExtras(nn.Module):
    """Extra attributes, a helper method, and an optional extra argument to forward."""

    def __init__(self, hidden_size, score="general", attn_dim=None, window=None):
        super().__init__()
        if score not in ("dot", "general", "concat"):
            raise ValueError(f"score must be dot, general or concat, not {score}")
        if window is not None and window < 1:
            raise ValueError(f"the window must be at least 1, not {window}")
        self.hidden_size = hidden_size
        self.attn_dim = attn_dim if attn_dim is not None else hidden_size
        self.score, self.window = score, window
        bound = 1 / math.sqrt(self.attn_dim)
        if score == "general":
            self.W_a = nn.Linear(hidden_size, hidden_size, bias=False)
        elif score == "concat":
            self.W_a = nn.Linear(2 * hidden_size, self.attn_dim, bias=False)
            self.v_a = nn.Parameter(torch.empty(self.attn_dim).uniform_(-bound, bound))
        if window is not None:
            self.W_p = nn.Linear(hidden_size, self.attn_dim, bias=False)
            self.v_p = nn.Parameter(torch.empty(self.attn_dim).uniform_(-bound, bound))
        self.W_c = nn.Linear(2 * hidden_size, hidden_size, bias=False)

    def raw_scores(self, query, keys):
        if self.score == "dot":
            return dot_score(query, keys)
        if self.score == "general":
            return general_score(query, keys, self.W_a.weight)
        return concat_score(query, keys, self.W_a.weight, self.v_a)

    def attention_weights(self, query, keys, mask=None):
        scores = self.raw_scores(query, keys)  # (B, L, S)
        B, _, S = scores.shape
        if self.window is None:
            allowed = torch.ones(B, S, dtype=torch.bool, device=scores.device)
            if mask is not None:
                allowed = mask.bool()
            scores = scores.masked_fill(~allowed.unsqueeze(1), float("-inf"))
            any_word = allowed.any(dim=1).view(B, 1, 1)
            weights = torch.softmax(torch.where(any_word, scores, torch.zeros_like(scores)), -1)
            return weights * any_word
        lengths = torch.full((B,), S) if mask is None else mask.sum(dim=1)
        centres = predicted_positions(query, self.W_p.weight, self.v_p, lengths)
        return local_weights(scores, centres, mask, self.window, gaussian=True)

    def forward(self, query, keys, mask=None, return_weights=False):
        weights = self.attention_weights(query, keys, mask)
        h_tilde = torch.tanh(self.W_c(torch.cat([weights @ keys, query], dim=-1)))
        return (h_tilde, weights) if return_weights else h_tilde


RIGHT = {
    "predicted_positions": {
        f.__name__: f for f in (positions_einsum, positions_with_linear, positions_in_float64)
    },
    "local_weights": {
        f.__name__: f
        for f in (local_weights_loop, local_weights_large_negative, local_weights_by_hand)
    },
    "LuongAttention": {
        c.__name__: c for c in (LuongGlobalAsAWideWindow, LuongDictOfScores, LuongWithExtras)
    },
}
