"""Chapter 3, Luong attention: the reference implementation.

Luong, Pham and Manning (2015) score a decoder state h_t against every encoder state h̄_s in one of
three ways, and the exercise builds each as a function:

- ``dot_score``: h_tᵀ h̄_s, with no scaling (chapter 4 adds the 1/sqrt(d_k));
- ``general_score``: h_tᵀ W_a h̄_s;
- ``concat_score``: v_aᵀ tanh(W_a [h_t; h̄_s]), the additive score of Bahdanau et al. (2015).

``LuongAttention`` is their *global* attention layer: the softmax of the scores over the source
positions, the context vector c_t = Σ_s a_t(s) h̄_s and the attentional hidden state
h̃_t = tanh(W_c [c_t; h_t]) that feeds the output layer. It calls the score functions by their
global names, so that a check of the layer can stand the reference functions in for a student's.

Masks are key-padding masks of shape (B, S), True where the source position holds a word, that
is where attention is **allowed** (torch's ``scaled_dot_product_attention`` convention;
``nn.MultiheadAttention``'s ``key_padding_mask`` is the opposite). Masked scores are filled with
-inf before the softmax; a sentence whose positions are all masked attends to nothing: its weights
and its context are zeros, not NaN, with finite gradients.

Not here: the encoder and decoder RNNs, input feeding, local attention and the location-based
score (the chapter's page builds the models; none of them is graded).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SCORES", "dot_score", "general_score", "concat_score", "LuongAttention"]

SCORES = ("dot", "general", "concat")


def _check_pair(query: torch.Tensor, keys: torch.Tensor) -> None:
    for name, t in (("query", query), ("keys", keys)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., length, width); got {tuple(t.shape)}")


def dot_score(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """score(h_t, h̄_s) = h_tᵀ h̄_s for every query and every key, unscaled.

    Args:
        query: (..., L, D), the decoder states h_t.
        keys: (..., S, D), the encoder states h̄_s; leading dimensions broadcast.

    Returns:
        (..., L, S): entry [l, s] is <query[l], keys[s]>.

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
    """score(h_t, h̄_s) = h_tᵀ W_a h̄_s.

    Args:
        query: (..., L, Dq).
        keys: (..., S, Dk).
        weight: W_a, (Dq, Dk). (``nn.Linear(Dk, Dq, bias=False).weight`` has this shape, and
            applying that layer to the keys gives W_a h̄_s.)

    Returns:
        (..., L, S).

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
    """score(h_t, h̄_s) = v_aᵀ tanh(W_a [h_t; h̄_s]).

    W_a [h_t; h̄_s] = W_q h_t + W_k h̄_s, where W_q is W_a's first Dq columns and W_k the rest: the
    two halves are computed once per query and once per key, and only their sum, a tensor of
    shape (..., L, S, A), is formed for every pair.

    Args:
        query: (..., L, Dq).
        keys: (..., S, Dk).
        weight: W_a, (A, Dq + Dk), the layout of ``nn.Linear(Dq + Dk, A).weight``.
        v: v_a, (A,).

    Returns:
        (..., L, S).

    Example: with A = 1, weight [[1., 1.]] and v [2.], query [[0.]] and keys [[0.], [100.]]
        -> [[0., 2 tanh(100)]] = [[0., 2.]]
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


class LuongAttention(nn.Module):
    """Global attention (Luong et al. 2015, section 3.1) with the attentional hidden state.

    Args:
        hidden_size: D, the width of the decoder states h_t and of the encoder states h̄_s.
        score: "dot", "general" or "concat".
        attn_dim: A, the width of the concat score's hidden layer; None means D.

    Parameters: ``W_a`` (``nn.Linear(D, D)`` for "general", ``nn.Linear(2D, A)`` for "concat",
    none for "dot"), ``v_a`` (an (A,) parameter, "concat" only), ``W_c`` (``nn.Linear(2D, D)``);
    none has a bias.

    Shapes: query (B, L, D), keys (B, S, D), mask (B, S) boolean, True = a word (allowed), or
    None. ``attention_weights`` -> (B, L, S); ``forward`` -> h̃ (B, L, D).
    """

    def __init__(self, hidden_size: int, score: str = "general", attn_dim: int | None = None):
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}; got {score!r}")
        if hidden_size <= 0 or (attn_dim is not None and attn_dim <= 0):
            raise ValueError(f"widths must be positive, got {hidden_size} and {attn_dim}")
        D, A = hidden_size, attn_dim or hidden_size
        self.hidden_size, self.score, self.attn_dim = D, score, A
        if score == "general":
            self.W_a = nn.Linear(D, D, bias=False)  # .weight: (D, D)
        elif score == "concat":
            self.W_a = nn.Linear(2 * D, A, bias=False)  # .weight: (A, 2D)
            self.v_a = nn.Parameter(torch.empty(A).uniform_(-1 / math.sqrt(A), 1 / math.sqrt(A)))
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
        """a_t(s): the softmax of the scores over the source positions, (B, L, S).

        mask: (B, S) boolean, True where attention is allowed (a word, not padding), or None.
        Masked positions get exactly 0; a sentence with no allowed position gets all zeros.
        """
        scores = self.scores(query, keys)  # (B, L, S)
        if mask is not None:
            if mask.dtype != torch.bool:
                raise TypeError(f"mask must be boolean (True = allowed), got {mask.dtype}")
            scores = scores.masked_fill(~mask.unsqueeze(-2), float("-inf"))  # (B, L, S)
        # A row of -inf has the softmax 0/0 = NaN, forward and backward: give it finite scores
        # first, then zero its weights.
        empty = torch.isneginf(scores).all(dim=-1, keepdim=True)  # (B, L, 1)
        weights = scores.masked_fill(empty, 0.0).softmax(dim=-1)  # (B, L, S)
        return weights.masked_fill(empty, 0.0)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """h̃_t = tanh(W_c [c_t; h_t]) with c_t = Σ_s a_t(s) h̄_s: (B, L, D)."""
        weights = self.attention_weights(query, keys, mask)  # (B, L, S)
        context = weights @ keys  # (B, L, D)
        return torch.tanh(self.W_c(torch.cat([context, query], dim=-1)))  # (B, L, D)
