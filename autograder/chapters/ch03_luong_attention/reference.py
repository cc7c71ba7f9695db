"""Chapter 3, Luong attention: the reference implementation.

Luong, Pham and Manning (2015) score a decoder state h_t against every encoder state h̄_s in one of
three ways (the chapter's page builds them, and the exercise hands them out as given code):

- ``dot_score``: h_tᵀ h̄_s, with no scaling;
- ``general_score``: h_tᵀ W_a h̄_s;
- ``concat_score``: v_aᵀ tanh(W_a [h_t; h̄_s]), the additive score of Bahdanau et al. (2015).

The page builds their *global* attention. The exercise asks for what it leaves out, their *local*
attention with a predicted position (local-p, the paper's section 3.2):

- ``predicted_positions``: p_t = S_b · sigmoid(v_pᵀ tanh(W_p h_t)), S_b the length of sentence b;
- ``local_weights``: the softmax of the scores over the source positions s = 0, …, S − 1 that are
  real words and lie in the window |s − p_t| ≤ D, exactly 0 elsewhere (zeros for a query whose
  window holds no word), optionally multiplied by the Gaussian exp(−(s − p_t)² / (2σ²)), σ = D / 2,
  which the paper does not renormalise; with integer centres p_t = t and no Gaussian it is local-m;
- ``LuongAttention``: the page's layer with a ``window``: None is global attention, an int D is
  local-p attention (W_p, v_p predict p_t; the weights are local_weights with the Gaussian); then
  the context c_t = Σ_s a_t(s) h̄_s and h̃_t = tanh(W_c [c_t; h_t]). It calls the score functions,
  ``predicted_positions`` and ``local_weights`` by their global names, so that a check of the
  layer can stand the reference functions in for a student's.

Masks are key-padding masks of shape (B, S), True where the source position holds a word, that
is where attention is **allowed** (torch's ``scaled_dot_product_attention`` convention;
``nn.MultiheadAttention``'s ``key_padding_mask`` is the opposite). Masked scores are filled with
-inf before the softmax; a query with no allowed position attends to nothing: its weights and its
context are zeros, not NaN, with finite gradients.

Not here: the encoder and decoder RNNs, input feeding and the location-based score (the chapter's
page builds the models; none of them is graded).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "SCORES",
    "dot_score",
    "general_score",
    "concat_score",
    "predicted_positions",
    "local_weights",
    "LuongAttention",
]

SCORES = ("dot", "general", "concat")


def _check_pair(query: torch.Tensor, keys: torch.Tensor) -> None:
    for name, t in (("query", query), ("keys", keys)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., length, width); got {tuple(t.shape)}")


def dot_score(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """score(h_t, h̄_s) = h_tᵀ h̄_s for every query and every key, unscaled.

    query (..., L, D), keys (..., S, D) -> (..., L, S).
    Example: query [[1., 2.]], keys [[1., 0.], [0., 1.]] -> [[1., 2.]]
    """
    _check_pair(query, keys)
    if query.size(-1) != keys.size(-1):
        raise ValueError(
            "the dot score needs states of the same width D; got query "
            f"{tuple(query.shape)} and keys {tuple(keys.shape)}"
        )
    return query @ keys.transpose(-2, -1)  # (..., L, S)


def general_score(query: torch.Tensor, keys: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """score(h_t, h̄_s) = h_tᵀ W_a h̄_s: query (..., L, Dq), keys (..., S, Dk), weight W_a (Dq, Dk)
    -> (..., L, S).

    Example: with weight = torch.eye(D), general_score(q, k, weight) == dot_score(q, k)
    """
    _check_pair(query, keys)
    if tuple(weight.shape) != (query.size(-1), keys.size(-1)):
        raise ValueError(
            f"weight must have shape (Dq, Dk) = ({query.size(-1)}, {keys.size(-1)}); "
            f"got {tuple(weight.shape)}"
        )
    return (query @ weight) @ keys.transpose(-2, -1)  # (..., L, S)


def concat_score(
    query: torch.Tensor, keys: torch.Tensor, weight: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """score(h_t, h̄_s) = v_aᵀ tanh(W_a [h_t; h̄_s]): query (..., L, Dq), keys (..., S, Dk),
    weight W_a (A, Dq + Dk), its first Dq columns for the query, v v_a (A,) -> (..., L, S).

    Example: weight [[1., 1.]], v [2.], query [[0.]], keys [[0.], [100.]] -> [[0., 2.]]
    """
    _check_pair(query, keys)
    Dq, Dk = query.size(-1), keys.size(-1)
    if weight.dim() != 2 or weight.size(1) != Dq + Dk:
        raise ValueError(
            f"weight must have shape (A, Dq + Dk) = (A, {Dq + Dk}); got {tuple(weight.shape)}"
        )
    if tuple(v.shape) != (weight.size(0),):
        raise ValueError(f"v must have shape (A,) = ({weight.size(0)},); got {tuple(v.shape)}")
    from_query = query @ weight[:, :Dq].T  # (..., L, A)
    from_keys = keys @ weight[:, Dq:].T  # (..., S, A)
    hidden = torch.tanh(from_query.unsqueeze(-2) + from_keys.unsqueeze(-3))  # (..., L, S, A)
    return hidden @ v  # (..., L, S)


def predicted_positions(
    query: torch.Tensor, weight: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Luong's aligned positions, p_t = S_b · sigmoid(v_pᵀ tanh(W_p h_t)).

    Args:
        query: (B, L, D), the decoder states h_t.
        weight: W_p, (A, D) (the layout of ``nn.Linear(D, A).weight``).
        v: v_p, (A,).
        lengths: (B,) int64, S_b, each source sentence's number of words; on the CPU or on the
            query's device.

    Returns:
        (B, L) in the query's dtype and on its device, each p_t in (0, S_b).

    Example: with weight and v all zeros, every p_t is S_b / 2.
    """
    if weight.dim() != 2 or weight.size(1) != query.size(-1) or tuple(v.shape) != weight.shape[:1]:
        raise ValueError(
            f"weight must be (A, D) with D = {query.size(-1)} and v (A,); got "
            f"{tuple(weight.shape)} and {tuple(v.shape)}"
        )
    hidden = torch.tanh(query @ weight.T)  # (B, L, A)
    S_b = torch.as_tensor(lengths).to(device=query.device, dtype=query.dtype)  # (B,)
    return S_b.unsqueeze(-1) * torch.sigmoid(hidden @ v)  # (B, L)


def local_weights(
    scores: torch.Tensor,
    centres: torch.Tensor,
    mask: torch.Tensor | None,
    window: int,
    gaussian: bool = False,
) -> torch.Tensor:
    """Luong's local attention weights around the centres p_t.

    Args:
        scores: (B, L, S), the raw scores of each query against each source position.
        centres: (B, L), floating point, p_t for each query (for local-m, p_t = t).
        mask: (B, S) boolean, True at the real words (allowed), or None.
        window: D, an int >= 1: the window is the positions s (counted from 0) with
            |s − p_t| <= D.
        gaussian: multiply the weights by exp(−(s − p_t)² / (2σ²)), σ = D / 2 (local-p).

    Returns:
        (B, L, S) in the scores' dtype and on their device: the softmax of the scores over the
        positions that are both in the window and real words, exactly 0 elsewhere, all 0 for a
        query with no such position; times the Gaussian when asked (the rows then sum to less
        than 1: the paper does not renormalise).

    Example: scores 0 everywhere, S = 5, centre 2.0, window 1 -> [0, 1/3, 1/3, 1/3, 0]
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an int >= 1, got {window!r}")
    if scores.dim() != 3 or tuple(centres.shape) != tuple(scores.shape[:2]):
        raise ValueError(
            f"scores must be (B, L, S) and centres (B, L); got {tuple(scores.shape)} and "
            f"{tuple(centres.shape)}"
        )
    S = scores.size(-1)
    positions = torch.arange(S, device=scores.device, dtype=scores.dtype)  # (S,)
    distance = positions - centres.to(scores.dtype).unsqueeze(-1)  # (B, L, S): s − p_t
    allowed = distance.detach().abs() <= window  # (B, L, S)
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be boolean (True = allowed), got {mask.dtype}")
        allowed = allowed & mask.to(scores.device).unsqueeze(-2)  # (B, L, S)
    # A query with nothing allowed has a row of -inf, whose softmax is 0/0 = NaN, forward and
    # backward: give it finite scores first, then zero its weights.
    empty = ~allowed.any(dim=-1, keepdim=True)  # (B, L, 1)
    masked = scores.masked_fill(~allowed, float("-inf")).masked_fill(empty, 0.0)
    weights = masked.softmax(dim=-1).masked_fill(empty, 0.0)  # (B, L, S)
    if gaussian:
        sigma = window / 2
        weights = weights * torch.exp(-(distance**2) / (2 * sigma**2))  # (B, L, S)
    return weights


class LuongAttention(nn.Module):
    """Luong et al.'s attention layer, global (window None) or local-p (window D), with the
    attentional hidden state h̃_t = tanh(W_c [c_t; h_t]).

    Args:
        hidden_size: D, the width of the decoder states h_t and of the encoder states h̄_s.
        score: "dot", "general" or "concat".
        attn_dim: A, the width of the concat score's hidden layer and of W_p; None means D.
        window: None for global attention; an int D >= 1 for local-p attention in the window
            |s − p_t| <= D.

    Parameters, none with a bias: ``W_a`` (``nn.Linear(D, D)`` for "general", ``nn.Linear(2D, A)``
    for "concat", none for "dot"); ``v_a`` (A,) for "concat"; ``W_p`` (``nn.Linear(D, A)``) and
    ``v_p`` (A,) when there is a window; ``W_c`` (``nn.Linear(2D, D)``). v_a and v_p are drawn
    uniformly in ±1/sqrt(A), as nn.Linear would.

    Shapes: query (B, L, D), keys (B, S, D), mask (B, S) boolean, True = a word (allowed), or
    None. ``attention_weights`` -> (B, L, S); ``forward`` -> h̃ (B, L, D).
    """

    def __init__(
        self,
        hidden_size: int,
        score: str = "general",
        attn_dim: int | None = None,
        window: int | None = None,
    ):
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}; got {score!r}")
        if hidden_size <= 0 or (attn_dim is not None and attn_dim <= 0):
            raise ValueError(f"widths must be positive, got {hidden_size} and {attn_dim}")
        if window is not None and (isinstance(window, bool) or not isinstance(window, int)
                                   or window < 1):  # fmt: skip
            raise ValueError(f"window must be None or an int >= 1, got {window!r}")
        D, A = hidden_size, attn_dim or hidden_size
        self.hidden_size, self.score, self.attn_dim, self.window = D, score, A, window
        bound = 1 / math.sqrt(A)
        if score == "general":
            self.W_a = nn.Linear(D, D, bias=False)  # .weight: (D, D)
        elif score == "concat":
            self.W_a = nn.Linear(2 * D, A, bias=False)  # .weight: (A, 2D)
            self.v_a = nn.Parameter(torch.empty(A).uniform_(-bound, bound))  # (A,)
        if window is not None:
            self.W_p = nn.Linear(D, A, bias=False)  # .weight: (A, D)
            self.v_p = nn.Parameter(torch.empty(A).uniform_(-bound, bound))  # (A,)
        self.W_c = nn.Linear(2 * D, D, bias=False)  # .weight: (D, 2D)

    def scores(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """The raw scores, (B, L, S), from the score function this layer was built with."""
        if self.score == "dot":
            return dot_score(query, keys)  # (B, L, S)
        if self.score == "general":
            return general_score(query, keys, self.W_a.weight)  # (B, L, S)
        return concat_score(query, keys, self.W_a.weight, self.v_a)  # (B, L, S)

    def attention_weights(
        self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """a_t(s), (B, L, S): global, the softmax of the scores over the real words; local-p,
        local_weights around the predicted positions, with the Gaussian.

        mask: (B, S) boolean, True where attention is allowed (a word, not padding), or None.
        """
        scores = self.scores(query, keys)  # (B, L, S)
        if mask is not None and mask.dtype != torch.bool:
            raise TypeError(f"mask must be boolean (True = allowed), got {mask.dtype}")
        if self.window is None:
            allowed = None if mask is None else mask.unsqueeze(-2)  # (B, 1, S)
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            empty = torch.isneginf(scores).all(dim=-1, keepdim=True)  # (B, L, 1)
            return scores.masked_fill(empty, 0.0).softmax(dim=-1).masked_fill(empty, 0.0)
        B, S = keys.size(0), keys.size(1)
        lengths = mask.sum(dim=-1) if mask is not None else torch.full((B,), S)  # (B,)
        centres = predicted_positions(query, self.W_p.weight, self.v_p, lengths)  # (B, L)
        return local_weights(scores, centres, mask, self.window, gaussian=True)  # (B, L, S)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """h̃_t = tanh(W_c [c_t; h_t]) with c_t = Σ_s a_t(s) h̄_s: (B, L, D)."""
        weights = self.attention_weights(query, keys, mask)  # (B, L, S)
        context = weights @ keys  # (B, L, D)
        return torch.tanh(self.W_c(torch.cat([context, query], dim=-1)))  # (B, L, D)
