"""Correct answers for chapter 5, as unlike the reference as the instructions allow.

Each was written from the released notebook's instructions, not from the reference: reshape and
permute instead of view and transpose, a loop over the heads, einsum, chunks, a loop over the heads
with its own helper method, float64 inside, -1e9 fills (with the fully masked rows zeroed by hand),
one additive float mask built from both masks, an extra optional argument, ``need_weights`` handled
by an early return. The contract test requires full marks for each, on its own and in a notebook.

``RIGHT`` maps the name of the graded function or class to {variant: implementation}. The last
variant of each name is self-contained (this module's imports, the earlier parts by their global
names), since the contract assembles a notebook from them; the module's ``split_heads`` and
``merge_heads`` are those last variants, as in that notebook.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# --- split_heads ------------------------------------------------------------------------------


def split_heads_three_dims(x, num_heads):
    """Exactly the (B, L, E) the instructions promise, unpacked, then permuted."""
    B, L, E = x.shape
    if num_heads <= 0 or E % num_heads:
        raise ValueError(f"E={E} is not divisible by num_heads={num_heads}")
    return x.view(B, L, num_heads, E // num_heads).permute(0, 2, 1, 3)  # (B, H, L, D)


def split_heads_reshape_permute(x, num_heads):
    *lead, L, E = x.shape
    if num_heads < 1 or E % num_heads != 0:
        raise ValueError(f"cannot split width {E} into {num_heads} heads")
    n = len(lead)
    x = x.reshape(*lead, L, num_heads, E // num_heads)  # (..., L, H, D)
    return x.permute(*range(n), n + 1, n, n + 2)  # (..., H, L, D)


def split_heads_stack_slices(x, num_heads):
    E = x.shape[-1]
    if E % num_heads:
        raise ValueError("num_heads must divide the last dimension")
    D = E // num_heads
    return torch.stack([x[..., h * D : (h + 1) * D] for h in range(num_heads)], dim=-3)


def split_heads_einsum(x, num_heads):
    if x.size(-1) % num_heads != 0:
        raise ValueError("E % num_heads != 0")
    heads = x.unflatten(-1, (num_heads, -1))  # (..., L, H, D)
    return torch.einsum("...lhd->...hld", heads)  # (..., H, L, D)


def split_heads_chunks(x, num_heads, contiguous=False):
    """With contiguous=True the result is copied into row order (an extra, optional argument)."""
    if num_heads <= 0 or x.shape[-1] % num_heads:
        raise ValueError(f"E={x.shape[-1]} is not a multiple of num_heads={num_heads}")
    out = torch.stack(x.chunk(num_heads, dim=-1), dim=-3)  # (..., H, L, D)
    return out.contiguous() if contiguous else out


# --- merge_heads ------------------------------------------------------------------------------


def merge_heads_four_dims(x):
    """Exactly the (B, H, L, D) the instructions promise, unpacked, then permuted."""
    B, H, L, D = x.shape
    return x.permute(0, 2, 1, 3).reshape(B, L, H * D)  # (B, L, E)


def merge_heads_movedim(x):
    return x.movedim(-3, -2).flatten(-2)  # (..., L, H, D) -> (..., L, E)


def merge_heads_cat(x):
    return torch.cat(x.unbind(dim=-3), dim=-1)  # (..., L, E)


def merge_heads_einsum(x):
    *lead, H, L, D = x.shape
    return torch.einsum("...hld->...lhd", x).reshape(*lead, L, H * D)  # (..., L, E)


def merge_heads_contiguous_view(x):
    *lead, H, L, D = x.shape
    return x.transpose(-3, -2).contiguous().view(*lead, L, H * D)  # (..., L, E)


# The names the layers below call, as in a notebook assembled from the last variants.
split_heads = split_heads_chunks
merge_heads = merge_heads_contiguous_view


# --- MultiHeadAttention -----------------------------------------------------------------------


class MHAEinsumLargeNegative(nn.Module):
    """einsum for the scores and the heads' outputs; -1e9 instead of -inf, then the rows with no
    allowed key set to 0 by hand; an extra optional is_causal argument."""

    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError("embed_dim must be divisible by num_heads")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.W_q = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_k = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_v = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_o = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(
        self,
        query,
        key,
        value,
        key_padding_mask=None,
        attn_mask=None,
        need_weights=True,
        average_attn_weights=True,
        is_causal=False,
    ):
        q = split_heads(self.W_q(query), self.num_heads)  # (B, H, L, D)
        k = split_heads(self.W_k(key), self.num_heads)  # (B, H, S, D)
        v = split_heads(self.W_v(value), self.num_heads)  # (B, H, S, D)
        scores = torch.einsum("bhld,bhsd->bhls", q, k) / math.sqrt(self.head_dim)
        L, S = scores.shape[-2:]
        allowed = torch.ones_like(scores, dtype=torch.bool)  # (B, H, L, S)
        if is_causal:
            allowed = allowed & torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                allowed = allowed & attn_mask
            else:
                scores = scores + attn_mask
                allowed = allowed & ~torch.isneginf(attn_mask)
        if key_padding_mask is not None:
            allowed = allowed & key_padding_mask[:, None, None, :]
        scores = scores.masked_fill(~allowed, -1e9)
        weights = F.softmax(scores, dim=-1)
        weights = weights * allowed.any(dim=-1, keepdim=True)  # no key at all: weights 0
        heads = torch.einsum("bhls,bhsd->bhld", weights, v)  # (B, H, L, D)
        output = self.W_o(merge_heads(heads))
        if not need_weights:
            return output, None
        if average_attn_weights:
            return output, weights.mean(dim=1)
        return output, weights


def _attention(q, k, v, mask):
    """Chapter 4's attention over the last two dimensions, a query with no key giving zeros."""
    scores = q @ k.transpose(-1, -2) / q.size(-1) ** 0.5
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(mask.logical_not(), float("-inf"))
        else:
            scores = scores + mask
    empty = scores.isneginf().all(dim=-1, keepdim=True)
    w = scores.masked_fill(empty, 0).softmax(-1).masked_fill(empty, 0)
    return w @ v, w


class MHAHelperFunction(nn.Module):
    """A helper function of its own for the attention (the instructions allow it), the padding
    mask turned into a float mask and added to the other one."""

    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        if num_heads < 1 or embed_dim % num_heads:
            raise ValueError(f"{num_heads} heads do not divide {embed_dim}")
        self.num_heads = num_heads
        self.W_q, self.W_k, self.W_v, self.W_o = (
            nn.Linear(embed_dim, embed_dim, bias) for _ in range(4)
        )

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None,
                need_weights=True, average_attn_weights=True):  # fmt: skip
        H = self.num_heads
        q, k, v = (split_heads(W(t), H) for W, t in ((self.W_q, query), (self.W_k, key),
                                                     (self.W_v, value)))  # fmt: skip
        mask = attn_mask
        if key_padding_mask is not None:
            pad = torch.zeros(key_padding_mask.shape, dtype=q.dtype, device=q.device)
            pad = pad.masked_fill(~key_padding_mask, float("-inf"))[:, None, None, :]
            if mask is None:
                mask = pad
            elif mask.dtype == torch.bool:
                mask = (
                    torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(
                        ~mask, float("-inf")
                    )
                    + pad
                )
            else:
                mask = mask + pad
        heads, w = _attention(q, k, v, mask)
        out = self.W_o(merge_heads(heads))
        return (out, (w.mean(1) if average_attn_weights else w) if need_weights else None)


class MHALoopOverHeadsFloat64(nn.Module):
    """One head at a time in a helper method, computed in float64 and cast back; extra
    attributes; the weights only computed into the result when asked for."""

    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        if num_heads <= 0 or embed_dim % num_heads != 0:
            raise ValueError("embed_dim must be a multiple of num_heads")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.W_q = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_k = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_v = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_o = nn.Linear(embed_dim, embed_dim, bias=bias)

    def _one_head(self, q, k, v, allowed, bias):
        """q (B, L, D), k and v (B, S, D), allowed (B, L, S) bool, bias (B, L, S) float."""
        scores = (q.double() @ k.double().transpose(1, 2)) * self.scale + bias.double()
        scores = scores.masked_fill(~allowed, float("-inf"))
        empty = ~allowed.any(dim=-1, keepdim=True) | scores.isneginf().all(-1, keepdim=True)
        weights = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
        return (weights @ v.double()).to(q.dtype), weights.to(q.dtype)

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None,
                need_weights=True, average_attn_weights=True):  # fmt: skip
        B, L, _ = query.shape
        S = key.shape[1]
        q = split_heads(self.W_q(query), self.num_heads)
        k = split_heads(self.W_k(key), self.num_heads)
        v = split_heads(self.W_v(value), self.num_heads)
        allowed = torch.ones(B, self.num_heads, L, S, dtype=torch.bool, device=query.device)
        bias = torch.zeros(B, self.num_heads, L, S, dtype=query.dtype, device=query.device)
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                allowed = allowed & attn_mask
            else:
                bias = bias + attn_mask
        if key_padding_mask is not None:
            allowed = allowed & key_padding_mask.view(B, 1, 1, S)
        outs, ws = [], []
        for h in range(self.num_heads):
            o, w = self._one_head(q[:, h], k[:, h], v[:, h], allowed[:, h], bias[:, h])
            outs.append(o)
            ws.append(w)
        output = self.W_o(merge_heads(torch.stack(outs, dim=1)))
        if not need_weights:
            return output, None
        weights = torch.stack(ws, dim=1)  # (B, H, L, S)
        return output, weights.mean(dim=1) if average_attn_weights else weights


class MHAOneFloatMask(nn.Module):
    """Both masks folded into one additive float mask first; a static helper for it; the split
    called with its optional argument; need_weights answered by an early return."""

    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        if num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.W_q = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_k = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_v = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.W_o = nn.Linear(embed_dim, embed_dim, bias=bias)

    @staticmethod
    def additive(mask, like):
        """A mask as numbers to add to the scores: 0 where allowed, -inf where not."""
        if mask.dtype != torch.bool:
            return mask.to(like.dtype)
        return torch.where(mask, 0.0, float("-inf")).to(like.dtype)

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None,
                need_weights=True, average_attn_weights=True):  # fmt: skip
        H = self.num_heads
        q = split_heads(self.W_q(query), H, contiguous=True)  # (B, H, L, D)
        k = split_heads(self.W_k(key), H, contiguous=True)  # (B, H, S, D)
        v = split_heads(self.W_v(value), H, contiguous=True)  # (B, H, S, D)
        scores = torch.matmul(q, k.transpose(2, 3)) * q.shape[-1] ** -0.5  # (B, H, L, S)
        if attn_mask is not None:
            scores = scores + self.additive(attn_mask, scores)
        if key_padding_mask is not None:
            scores = scores + self.additive(key_padding_mask, scores)[:, None, None, :]
        dead = torch.isinf(scores).all(dim=-1, keepdim=True)  # (B, H, L, 1)
        weights = torch.softmax(torch.where(dead, torch.zeros_like(scores), scores), dim=-1)
        weights = torch.where(dead, torch.zeros_like(weights), weights)
        output = self.W_o(merge_heads(torch.matmul(weights, v)))  # (B, L, E)
        if not need_weights:
            return output, None
        if not average_attn_weights:
            return output, weights
        return output, weights.sum(dim=1) / H


RIGHT = {
    "split_heads": {
        f.__name__: f
        for f in (
            split_heads_three_dims,
            split_heads_reshape_permute,
            split_heads_stack_slices,
            split_heads_einsum,
            split_heads_chunks,
        )
    },
    "merge_heads": {
        f.__name__: f
        for f in (
            merge_heads_four_dims,
            merge_heads_movedim,
            merge_heads_cat,
            merge_heads_einsum,
            merge_heads_contiguous_view,
        )  # fmt: skip
    },
    "MultiHeadAttention": {
        c.__name__: c
        for c in (
            MHAEinsumLargeNegative,
            MHAHelperFunction,
            MHALoopOverHeadsFloat64,
            MHAOneFloatMask,
        )  # fmt: skip
    },
}
