"""Chapter 2, Bahdanau attention: the reference implementation.

What the chapter's exercise asks for, in the clear form the chapter teaches:

- :func:`masked_softmax`: a softmax over the source positions (the last dimension) in which masked
  positions get weight exactly 0; a row with no allowed position attends to nothing (zeros, and
  finite gradients);
- :class:`AdditiveAttention`: the score of Bahdanau, Cho and Bengio (2015),
  ``e_j = vᵀ tanh(W_s s + W_h h_j)``, its masked softmax over the source positions and the context
  vector ``c = Σ_j α_j h_j``;
- :class:`AttentiveDecoder`: one step of the attentive decoder, in which the *previous* state
  ``s_{i-1}`` queries the annotations, the GRU cell reads ``[E y_{i-1}; c_i]`` and the output layer
  reads ``[s_i; c_i; E y_{i-1}]``.

Masks are boolean and True where attention is **allowed** (torch's ``scaled_dot_product_attention``
convention; ``nn.MultiheadAttention``'s ``key_padding_mask`` is the opposite). Masked scores are
filled with -inf before the softmax.

Shapes: B batch, S source length, Eq the decoder state's width (the query), Ek the annotations'
width (the keys: twice the encoder's width for a bidirectional encoder), A the width of the score's
hidden layer (the paper's n'), E the target word embeddings' width, V the target vocabulary.

Not here: the encoder, the training loop and greedy decoding (the chapter's page builds them), and
the paper's deep output with a maxout layer (a linear layer stands in for it).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["padding_mask", "masked_softmax", "AdditiveAttention", "AttentiveDecoder"]


def padding_mask(lengths: torch.Tensor, S: int) -> torch.Tensor:
    """Boolean (B, S) mask, True at the real positions j < lengths[b] (allowed), False at padding.

    Example: padding_mask(torch.tensor([2, 3]), 3) -> [[True, True, False], [True, True, True]]
    """
    return torch.arange(S, device=lengths.device) < lengths.unsqueeze(-1)  # (B, S)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the last dimension in which the positions where `mask` is False get exactly 0.

    Args:
        scores: (..., S), any floating dtype, on any device.
        mask: None, or a boolean tensor broadcastable to scores, True where a position is allowed.

    Returns:
        (..., S) in the dtype and on the device of `scores`: each row sums to 1 over its allowed
        positions; a row with no allowed position is all zeros, with finite gradients.

    Example: masked_softmax(torch.tensor([1., 1., 5.]), torch.tensor([True, True, False]))
        -> [0.5, 0.5, 0.]
    """
    if mask is None:
        return torch.softmax(scores, dim=-1)  # (..., S)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be boolean (True = allowed), got {mask.dtype}")
    scores = scores.masked_fill(~mask, float("-inf"))  # (..., S)
    # A row with every position masked is all -inf and its softmax 0/0 = NaN, forward and
    # backward: give it finite scores before the softmax and zero weights after it.
    empty = ~mask.any(dim=-1, keepdim=True)  # (..., 1)
    weights = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1)  # (..., S)
    return weights.masked_fill(empty, 0.0)


class AdditiveAttention(nn.Module):
    """Bahdanau's additive attention: e_j = vᵀ tanh(W_s s + W_h h_j), α = softmax(e), c = Σ α_j h_j.

    Args:
        query_dim: Eq, the width of the query s (the decoder's previous state).
        key_dim: Ek, the width of each annotation h_j.
        attn_dim: A, the width of the hidden layer inside the score.

    The three maps have no bias, as in the paper: W_s (Eq -> A), W_h (Ek -> A), v (A -> 1).
    """

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int) -> None:
        super().__init__()
        self.W_s = nn.Linear(query_dim, attn_dim, bias=False)
        self.W_h = nn.Linear(key_dim, attn_dim, bias=False)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def score(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        projected_keys: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unmasked scores e_j of one query against every annotation.

        query (B, Eq), keys (B, S, Ek), projected_keys None or (B, S, A), the keys' W_h(keys),
        computed once per sentence -> (B, S).
        """
        if projected_keys is None:
            projected_keys = self.W_h(keys)  # (B, S, A)
        hidden = torch.tanh(projected_keys + self.W_s(query).unsqueeze(-2))  # (B, S, A)
        return self.v(hidden).squeeze(-1)  # (B, S)

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        mask: torch.Tensor | None = None,
        projected_keys: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The context vector and the weights.

        query (B, Eq); keys (B, S, Ek); mask None or boolean (B, S), True at real positions
        (allowed), False at padding; projected_keys None or (B, S, A), used in place of W_h(keys).
        Returns (context (B, Ek), weights (B, S)); a row with no allowed position gets zero weights
        and a zero context.
        """
        weights = masked_softmax(self.score(query, keys, projected_keys), mask)  # (B, S)
        context = (weights.unsqueeze(-2) @ keys).squeeze(-2)  # (B, Ek)
        return context, weights


class AttentiveDecoder(nn.Module):
    """One step of Bahdanau's decoder: the previous state asks, the GRU cell and the output read
    the context.

    Args:
        vocab_size: V, the target vocabulary (id 0 is padding).
        embed_dim: E, the width of the target word embeddings.
        hidden_dim: Eq, the width of the decoder's state.
        annotation_dim: Ek, the width of the encoder's annotations.
        attn_dim: A, the width of the attention's hidden layer.
    """

    def __init__(
        self, vocab_size: int, embed_dim: int, hidden_dim: int, annotation_dim: int, attn_dim: int
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.attention = AdditiveAttention(hidden_dim, annotation_dim, attn_dim)
        self.cell = nn.GRUCell(embed_dim + annotation_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim + annotation_dim + embed_dim, vocab_size)

    def step(
        self,
        y_prev: torch.Tensor,
        s_prev: torch.Tensor,
        annotations: torch.Tensor,
        mask: torch.Tensor | None = None,
        projected_keys: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """y_prev (B,) ids of the previous words, s_prev (B, Eq), annotations (B, S, Ek), mask None
        or boolean (B, S) (True = a real position), projected_keys None or (B, S, A).

        Returns (logits (B, V), the new state s_i (B, Eq), the weights (B, S) that s_prev gave).
        """
        embedded = self.embedding(y_prev)  # (B, E)
        # The previous state asks: s_{i-1}, not s_i, which cannot exist before its context does.
        context, weights = self.attention(  # (B, Ek), (B, S)
            s_prev, annotations, mask, projected_keys
        )
        state = self.cell(torch.cat([embedded, context], dim=-1), s_prev)  # (B, Eq)
        logits = self.out(torch.cat([state, context, embedded], dim=-1))  # (B, V)
        return logits, state, weights
