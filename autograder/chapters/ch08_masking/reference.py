"""Chapter 8, masking and the decoder: the reference implementation.

Masks are boolean and **True where attention is allowed**, the convention of torch's
``scaled_dot_product_attention``:

- :func:`padding_mask`: True at the real tokens of a batch of token ids, wherever the padding is;
- :func:`causal_mask`: the (L, S) look-ahead mask for L queries that are the **last** L of S
  positions (bottom-right aligned, as when a decoder extends a prefix whose keys it has cached),
  equal to ``torch.nn.attention.bias.causal_lower_right(L, S)``; with L == S it is the usual lower
  triangle. torch's ``is_causal=True`` aligns top-left instead (``tril(ones(L, S))``), which is the
  same only when L == S;
- :func:`combine_masks`: a (B, S) padding mask and an (L, S) attention mask as one (B, 1, L, S)
  mask, by broadcasting (B, 1, 1, S) against (1, 1, L, S);
- :class:`DecoderLayer`: one Transformer decoder layer (masked self-attention, cross-attention
  over the encoder's output, the feed-forward network), equal to
  ``nn.TransformerDecoderLayer(..., dropout=0.0, batch_first=True)`` for both values of
  ``norm_first``. Its submodules have torch's names, so torch's state dict loads as it is. Its
  masks use the course's polarity and are inverted for ``nn.MultiheadAttention``, whose boolean
  ``attn_mask`` and ``key_padding_mask`` (and ``nn.TransformerDecoderLayer``'s ``tgt_mask``,
  ``tgt_key_padding_mask``, ``memory_key_padding_mask``) are True where attention is **not**
  allowed.

Not here: attention itself (chapters 4 and 5; the layer uses ``nn.MultiheadAttention``), LayerNorm
(chapter 6's, imported), positional encodings (chapter 7), a memory attention mask
(``memory_mask``) and key/value caches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autograder.chapters.ch06_add_and_norm.reference import LayerNorm

__all__ = ["padding_mask", "causal_mask", "combine_masks", "DecoderLayer"]


def padding_mask(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """True where a token is real, False where it is padding.

    Args:
        tokens: integer token ids of any shape, usually (B, S); padding may be anywhere (at the
            end, at the start, in the middle).
        pad_id: the id of the padding token.

    Returns:
        bool tensor of the tokens' shape, on their device: True = a real token (attention to it
        is allowed).

    Example: padding_mask(tensor([[5, 7, 0, 0]]), pad_id=0) -> [[True, True, False, False]]
    """
    return tokens != pad_id  # (..., S)


def causal_mask(
    L: int, S: int | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """The look-ahead mask for L queries that are the last L of S positions.

    Query l sits at position S - L + l and may attend to keys 0, ..., S - L + l (itself and the
    past). With L == S (the default when S is None) this is the lower triangle. With L < S it is
    what a decoder needs when it extends a prefix of S - L tokens whose keys it keeps (a cache);
    with L > S the first L - S queries come before every key and may attend to none (their rows
    are all False). Equal to ``torch.nn.attention.bias.causal_lower_right(L, S)``; torch's
    ``is_causal=True`` is top-left aligned, ``tril(ones(L, S))``, which differs when L != S.

    Returns:
        bool (L, S) on `device`, True where attention is allowed.

    Example: causal_mask(2, 4) -> [[True, True, True, False], [True, True, True, True]]
    """
    S = L if S is None else S
    if L < 0 or S < 0:
        raise ValueError(f"L and S must be >= 0, got L={L}, S={S}")
    query_at = torch.arange(S - L, S, device=device)  # (L,): absolute positions of the queries
    key_at = torch.arange(S, device=device)  # (S,)
    return key_at[None, :] <= query_at[:, None]  # (L, S)


def combine_masks(
    padding_mask: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None
) -> torch.Tensor | None:
    """One boolean mask for (B, H, L, S) scores, from a key padding mask and an attention mask.

    Args:
        padding_mask: None or bool (B, S), True at real keys (allowed).
        attn_mask: None or bool (L, S), True where query l may attend to key s (a causal mask).

    Returns:
        bool, True where attention is allowed, with singleton axes where a mask does not vary, so
        that it broadcasts against (B, H, L, S) scores: (B, 1, L, S) from both, (B, 1, 1, S) from
        the padding mask alone, (1, 1, L, S) from the attention mask alone; None from neither.

    Example: padding [[True, False]], attn [[True, False], [True, True]]
        -> [[[[True, False], [True, False]]]] of shape (1, 1, 2, 2)
    """
    if padding_mask is None and attn_mask is None:
        return None
    if padding_mask is None:
        return attn_mask[None, None]  # (1, 1, L, S)
    keys = padding_mask[:, None, None, :]  # (B, 1, 1, S): varies over the keys only
    if attn_mask is None:
        return keys
    return keys & attn_mask[None, None]  # (B, 1, L, S)


class DecoderLayer(nn.Module):
    """One Transformer decoder layer: masked self-attention, cross-attention, feed-forward.

    Equal to ``nn.TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout,
    batch_first=True, norm_first=norm_first)`` (ReLU); its submodules have torch's names
    (``self_attn``, ``multihead_attn``, ``linear1``, ``linear2``, ``norm1``..``norm3``,
    ``dropout``, ``dropout1``..``dropout3``), so ``load_state_dict(torch_layer.state_dict())``
    works as it is.

    forward(tgt (B, L, E), memory (B, S, E), tgt_mask=None, tgt_padding_mask=None,
    memory_padding_mask=None) -> (B, L, E), where every mask is boolean and **True where
    attention is allowed**: ``tgt_mask`` (L, L), e.g. ``causal_mask(L)``; ``tgt_padding_mask``
    (B, L), True at the decoder's real tokens; ``memory_padding_mask`` (B, S), True at the
    encoder's real tokens. ``nn.MultiheadAttention`` wants the opposite, so each is inverted
    before it is passed on. The queries of the cross-attention come from the decoder, its keys and
    values from ``memory``: its scores are (B, H, L, S).
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
        norm_first: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(
            d_model, nhead, dropout=dropout, batch_first=True
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = LayerNorm(d_model, eps=eps)
        self.norm2 = LayerNorm(d_model, eps=eps)
        self.norm3 = LayerNorm(d_model, eps=eps)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    @staticmethod
    def _torch_polarity(mask: torch.Tensor | None) -> torch.Tensor | None:
        """Ours is True where allowed; nn.MultiheadAttention's boolean masks are True where not."""
        return None if mask is None else ~mask

    def _sa_block(
        self,
        x: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
        tgt_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Masked self-attention of x (B, L, E), masks True = allowed -> (B, L, E)."""
        out = self.self_attn(
            x, x, x,
            attn_mask=self._torch_polarity(tgt_mask),  # (L, L)
            key_padding_mask=self._torch_polarity(tgt_padding_mask),  # (B, L)
            need_weights=False,
        )[0]  # fmt: skip
        return self.dropout1(out)  # (B, L, E)

    def _mha_block(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Cross-attention: queries from x (B, L, E), keys and values from memory (B, S, E)."""
        out = self.multihead_attn(
            x, memory, memory,
            key_padding_mask=self._torch_polarity(memory_padding_mask),  # (B, S)
            need_weights=False,
        )[0]  # fmt: skip
        return self.dropout2(out)  # (B, L, E)

    def _ff_block(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(F.relu(self.linear1(x)))  # (B, L, F)
        return self.dropout3(self.linear2(hidden))  # (B, L, E)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
        tgt_padding_mask: torch.Tensor | None = None,
        memory_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = tgt  # (B, L, E)
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_padding_mask)
            x = x + self._mha_block(self.norm2(x), memory, memory_padding_mask)
            return x + self._ff_block(self.norm3(x))  # (B, L, E)
        x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_padding_mask))
        x = self.norm2(x + self._mha_block(x, memory, memory_padding_mask))
        return self.norm3(x + self._ff_block(x))  # (B, L, E)
