"""Chapter 5, multi-head attention: the reference implementation.

Splitting a (B, L, E) tensor into H heads of width D = E / H, merging them back, and the
multi-head attention layer built from the two, with four E -> E projections W_q, W_k, W_v, W_o.
The attention inside each head is chapter 4's (imported, not copied): scores scaled by 1/sqrt(D),
boolean masks True where attention is **allowed**, -inf before the softmax, and zeros (not NaN)
for a query whose keys are all masked.

The layer computes what ``nn.MultiheadAttention(E, H, bias=bias, batch_first=True)`` computes once
the weights are copied (:func:`to_torch`), with one difference of convention: our
``key_padding_mask`` and boolean ``attn_mask`` are True where attention is allowed, torch's are
True where it is *not*. Pass ``~mask`` to torch.

Not here: dropout on the weights, different widths for keys and values (``kdim``, ``vdim``),
unbatched inputs, and the fused fast paths; padding masks built from lengths are chapter 8.
"""

from __future__ import annotations

import torch
from torch import nn

from autograder.chapters.ch04_self_attention import reference as ch04

__all__ = ["split_heads", "merge_heads", "MultiHeadAttention", "combine_masks", "to_torch"]


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Split the last dimension E into H heads of width D = E / H, heads before positions.

    Args:
        x: (..., L, E), E divisible by num_heads.
        num_heads: H.

    Returns:
        (..., H, L, D): head h holds features h·D, ..., (h + 1)·D - 1 of every position, i.e.
        out[..., h, l, :] == x[..., l, h*D:(h+1)*D].

    Example: x of shape (1, 2, 4) = [[[0, 1, 2, 3], [4, 5, 6, 7]]], num_heads=2
        -> shape (1, 2, 2, 2): head 0 [[0, 1], [4, 5]], head 1 [[2, 3], [6, 7]]
    """
    E = x.size(-1)
    if num_heads <= 0 or E % num_heads:
        raise ValueError(f"the width E={E} must be divisible by num_heads={num_heads}")
    D = E // num_heads
    x = x.unflatten(-1, (num_heads, D))  # (..., L, H, D)
    return x.transpose(-3, -2)  # (..., H, L, D)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """Undo :func:`split_heads`: concatenate the heads' features, head 0 first.

    Args:
        x: (..., H, L, D).

    Returns:
        (..., L, H·D): out[..., l, h*D:(h+1)*D] == x[..., h, l, :].

    Example: merge_heads(split_heads(x, H)) == x, for any x of shape (..., L, E).
    """
    x = x.transpose(-3, -2)  # (..., L, H, D)
    return x.flatten(-2)  # (..., L, E); flatten copies when the transpose made x non-contiguous


def combine_masks(
    key_padding_mask: torch.Tensor | None, attn_mask: torch.Tensor | None
) -> torch.Tensor | None:
    """One mask for the (B, H, L, S) scores from a (B, S) key padding mask and an attn_mask.

    Args:
        key_padding_mask: None or boolean (B, S), True where the key is a real token (allowed).
        attn_mask: None, or broadcastable to (B, H, L, S): (L, S), (B, 1, L, S) or (B, H, L, S).
            Boolean: True = allowed. Float: added to the scores (-inf forbids).

    Returns:
        None, a boolean mask (True = allowed) or a float mask, broadcastable to (B, H, L, S).

    Example: key_padding_mask [[True, False]], attn_mask None -> [[[[True, False]]]]
    """
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise TypeError("key_padding_mask must be boolean, True where the key is allowed")
        key_padding_mask = key_padding_mask[:, None, None, :]  # (B, 1, 1, S)
    if attn_mask is None:
        return key_padding_mask
    if key_padding_mask is None:
        return attn_mask
    if attn_mask.dtype == torch.bool:
        return attn_mask & key_padding_mask  # (B, H, L, S) or broadcastable
    return attn_mask.masked_fill(~key_padding_mask, float("-inf"))  # (B, 1 or H, L, S)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with batch-first tensors and masks that are True where allowed.

    Args:
        embed_dim: E, the width of the inputs and of the output.
        num_heads: H; E must be divisible by H, and each head has width D = E / H.
        bias: whether the four projections W_q, W_k, W_v, W_o (each nn.Linear(E, E)) have a bias.

    forward(query (B, L, E), key (B, S, E), value (B, S, E), key_padding_mask=None,
    attn_mask=None, need_weights=True, average_attn_weights=True) -> (output, weights):

    - output (B, L, E): W_o applied to the merged outputs of the H heads;
    - weights: (B, L, S) averaged over the heads, (B, H, L, S) with average_attn_weights=False,
      None with need_weights=False;
    - key_padding_mask: boolean (B, S), True where the key is a real token (the opposite of
      torch's); attn_mask: broadcastable to (B, H, L, S), boolean True = allowed, or float added;
    - a query whose keys are all masked gets weights 0 and head outputs 0 (so its output is W_o's
      bias), never NaN.

    Example: MultiHeadAttention(512, 8) has 8 heads of width 64 and 4·(512·512 + 512) parameters.
    """

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True) -> None:
        super().__init__()
        if num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.W_q = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_k = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_v = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_o = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        average_attn_weights: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        H = self.num_heads
        q = split_heads(self.W_q(query), H)  # (B, H, L, D)
        k = split_heads(self.W_k(key), H)  # (B, H, S, D)
        v = split_heads(self.W_v(value), H)  # (B, H, S, D)
        mask = combine_masks(key_padding_mask, attn_mask)  # broadcastable to (B, H, L, S)
        weights = ch04.attention_weights(q, k, attn_mask=mask)  # (B, H, L, S)
        heads = weights @ v  # (B, H, L, D)
        output = self.W_o(merge_heads(heads))  # (B, L, E)
        if not need_weights:
            return output, None
        if average_attn_weights:
            weights = weights.mean(dim=1)  # (B, L, S)
        return output, weights


def to_torch(module: MultiHeadAttention) -> nn.MultiheadAttention:
    """An ``nn.MultiheadAttention(batch_first=True)`` with the same weights, dtype and device.

    torch keeps W_q, W_k, W_v stacked in one (3E, E) ``in_proj_weight`` and W_o as ``out_proj``.
    Remember to invert the boolean masks when calling it: True there means "do not attend".
    """
    bias = module.W_q.bias is not None
    weight = module.W_q.weight
    theirs = nn.MultiheadAttention(
        module.embed_dim, module.num_heads, bias=bias, batch_first=True
    ).to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        theirs.in_proj_weight.copy_(
            torch.cat([module.W_q.weight, module.W_k.weight, module.W_v.weight])  # (3E, E)
        )
        theirs.out_proj.weight.copy_(module.W_o.weight)
        if bias:
            theirs.in_proj_bias.copy_(
                torch.cat([module.W_q.bias, module.W_k.bias, module.W_v.bias])  # (3E,)
            )
            theirs.out_proj.bias.copy_(module.W_o.bias)
    return theirs
