"""Chapter 2, Bahdanau attention: the reference implementation.

What the chapter's exercise asks for, which goes beyond what the chapter's page builds (the page
scores one query per sentence and reads the output with one linear layer):

- :func:`masked_softmax`: a softmax over the source positions (the last dimension) of scores with
  one query per sentence, (B, S), or L of them, (B, L, S), under a key-padding mask (B, S) that
  holds for every query of its sentence; masked positions get weight exactly 0, and a sentence with
  no allowed position attends to nothing (zeros, and finite gradients);
- :class:`AdditiveAttention`: the score of Bahdanau, Cho and Bengio (2015),
  ``e_j = vᵀ tanh(W_s s + W_h h_j)``, for one query per sentence or L of them, its masked softmax
  over the source positions and the context vector ``c = Σ_j α_j h_j``;
- :class:`AttentiveDecoder`: one step of the attentive decoder, in which the *previous* state
  ``s_{i-1}`` queries the annotations, the GRU cell reads ``[E y_{i-1}; c_i]``, and the paper's
  deep output (its appendix A.2.2) reads ``[s_i; c_i; E y_{i-1}]``: a linear layer to 2M units, a
  maxout over consecutive pairs to M, and a linear layer to the vocabulary. (The paper's readout
  reads s_{i-1}; the page's model and this one read the new state s_i.)

Masks are boolean and True where attention is **allowed** (torch's ``scaled_dot_product_attention``
convention; ``nn.MultiheadAttention``'s ``key_padding_mask`` is the opposite). Masked scores are
filled with -inf before the softmax.

Shapes: B batch, L queries per sentence, S source length, Eq the decoder state's width (the query),
Ek the annotations' width (the keys: twice the encoder's width for a bidirectional encoder), A the
width of the score's hidden layer (the paper's n'), E the target word embeddings' width, M the
maxout units (the paper's l), V the target vocabulary.

Not here: the encoder, the training loop and greedy decoding (the chapter's page builds them).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["padding_mask", "masked_softmax", "AdditiveAttention", "maxout", "AttentiveDecoder"]


def padding_mask(lengths: torch.Tensor, S: int) -> torch.Tensor:
    """Boolean (B, S) mask, True at the real positions j < lengths[b] (allowed), False at padding.

    Example: padding_mask(torch.tensor([2, 3]), 3) -> [[True, True, False], [True, True, True]]
    """
    return torch.arange(S, device=lengths.device) < lengths.unsqueeze(-1)  # (B, S)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the last dimension in which the positions where `mask` is False get exactly 0.

    Args:
        scores: (B, S), one query per sentence, or (B, L, S), L queries per sentence; any floating
            dtype, on any device.
        mask: None, or a boolean key-padding mask (B, S), True where a position of sentence b is
            allowed (a real word). It holds for every query of its sentence.

    Returns:
        The weights, shaped as `scores`, in their dtype and on their device: each row sums to 1
        over its sentence's allowed positions; a sentence with no allowed position gets zeros,
        with finite gradients.

    Example: masked_softmax(torch.tensor([[1., 1., 5.]]), torch.tensor([[True, True, False]]))
        -> [[0.5, 0.5, 0.]]
    """
    if mask is None:
        return torch.softmax(scores, dim=-1)  # (B, [L,] S)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be boolean (True = allowed), got {mask.dtype}")
    if scores.dim() not in (2, 3) or tuple(mask.shape) != (scores.size(0), scores.size(-1)):
        raise ValueError(
            f"scores must be (B, S) or (B, L, S) and mask (B, S); got {tuple(scores.shape)} "
            f"and {tuple(mask.shape)}"
        )
    # One row of the mask per sentence, the same for each of its queries: (B, [1,] S).
    mask = mask.reshape(mask.size(0), *([1] * (scores.dim() - 2)), mask.size(-1))
    scores = scores.masked_fill(~mask, float("-inf"))  # (B, [L,] S)
    # A row with every position masked is all -inf and its softmax 0/0 = NaN, forward and
    # backward: give it finite scores before the softmax and zero weights after it.
    empty = ~mask.any(dim=-1, keepdim=True)  # (B, [1,] 1)
    weights = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1)  # (B, [L,] S)
    return weights.masked_fill(empty, 0.0)


class AdditiveAttention(nn.Module):
    """Bahdanau's additive attention: e_j = vᵀ tanh(W_s s + W_h h_j), α = softmax(e), c = Σ α_j h_j,
    for one query per sentence, (B, Eq), or L of them, (B, L, Eq).

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
        """Unmasked scores e_j of each query against every annotation of its sentence.

        query (B, Eq) or (B, L, Eq), keys (B, S, Ek), projected_keys None or (B, S, A), the keys'
        W_h(keys), computed once per sentence -> (B, S) or (B, L, S).
        """
        if projected_keys is None:
            projected_keys = self.W_h(keys)  # (B, S, A)
        if query.dim() == 3:
            projected_keys = projected_keys.unsqueeze(1)  # (B, 1, S, A): the same for every query
        hidden = torch.tanh(projected_keys + self.W_s(query).unsqueeze(-2))  # (B, [L,] S, A)
        return self.v(hidden).squeeze(-1)  # (B, [L,] S)

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        mask: torch.Tensor | None = None,
        projected_keys: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The context vectors and the weights.

        query (B, Eq) or (B, L, Eq); keys (B, S, Ek); mask None or boolean (B, S), True at real
        positions (allowed), False at padding, for every query of the sentence; projected_keys None
        or (B, S, A), used in place of W_h(keys). Returns (context (B, [L,] Ek), weights
        (B, [L,] S)); a sentence with no allowed position gets zero weights and a zero context.
        """
        weights = masked_softmax(self.score(query, keys, projected_keys), mask)  # (B, [L,] S)
        rows = weights if weights.dim() == 3 else weights.unsqueeze(1)  # (B, L or 1, S)
        context = rows @ keys  # (B, L or 1, Ek)
        return (context if weights.dim() == 3 else context.squeeze(1)), weights


def maxout(x: torch.Tensor) -> torch.Tensor:
    """The largest of each consecutive pair of units: (..., 2M) -> (..., M).

    Example: maxout(torch.tensor([1., 3., 5., 2.])) -> [3., 5.]
    """
    return x.unflatten(-1, (-1, 2)).amax(dim=-1)  # (..., M)


class AttentiveDecoder(nn.Module):
    """One step of Bahdanau's decoder: the previous state asks, the GRU cell reads the context,
    and a deep output with a maxout layer reads the new state, the context and the word.

    Args:
        vocab_size: V, the target vocabulary (id 0 is padding).
        embed_dim: E, the width of the target word embeddings.
        hidden_dim: Eq, the width of the decoder's state.
        annotation_dim: Ek, the width of the encoder's annotations.
        attn_dim: A, the width of the attention's hidden layer.
        maxout_dim: M, the units after the maxout (the readout has 2M).
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden_dim: int,
        annotation_dim: int,
        attn_dim: int,
        maxout_dim: int,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.attention = AdditiveAttention(hidden_dim, annotation_dim, attn_dim)
        self.cell = nn.GRUCell(embed_dim + annotation_dim, hidden_dim)
        self.readout = nn.Linear(hidden_dim + annotation_dim + embed_dim, 2 * maxout_dim)
        self.out = nn.Linear(maxout_dim, vocab_size)

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
        t = maxout(self.readout(torch.cat([state, context, embedded], dim=-1)))  # (B, M)
        return self.out(t), state, weights  # (B, V), (B, Eq), (B, S)
