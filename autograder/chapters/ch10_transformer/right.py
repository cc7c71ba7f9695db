"""Correct answers to chapter 10's exercise, as unlike the reference as its instructions allow.

Each variant was written from the released notebook's instructions alone: the schedule through
``torch.where`` or in float64 or through a tensor for an int; the loss from one-hot smoothed
labels, with ``einsum``, or with ``F.nll_loss``; Transformers whose attention is written by hand
from raw parameters (with nn.MultiheadAttention's parameter names, masks filled with -1e9), with
one folded boolean mask per call and LayerNorms by hand in float64, or built around one residual
helper with additive float masks; greedy decoding that never stops
early, or that decodes one sentence at a time; translations one sentence at a time, with the
model's cache, or by a loop of their own. ``tests/test_chapter_contract.py`` requires every
variant to get full marks, in this process and, for the last variant of each name, handed in as a
notebook through the sandboxed grader; so the last variant of each name uses only this module's
imports and the notebook's given names (the setup cell's vocabularies and helpers, and ``model``,
the trained model of the training cell).

``RIGHT`` maps the name the student defines to {variant: implementation}.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .reference import (
    BOS,
    EOS,
    SOURCE_WORDS,
    TARGET_WORDS,
    decode_ids,
    encode_sentences,
    trained_model,
)


class _Trained:
    """Stands for the notebook's ``model`` (trained in its training cell) in this process."""

    def __getattr__(self, name):
        return getattr(trained_model(), name)

    def __call__(self, *args, **kwargs):
        return trained_model()(*args, **kwargs)


model = _Trained()

# --- rate -------------------------------------------------------------------------------------


def rate_where(step, d_model, warmup, factor=1.0):
    """Warm-up branch below warmup, decay branch from there on."""
    s = torch.as_tensor(step, dtype=torch.float64)
    if isinstance(step, torch.Tensor):
        s = s.to(step.device)
    warm = s * warmup**-1.5
    decay = s.clamp(min=1) ** -0.5
    out = factor * d_model**-0.5 * torch.where(s < warmup, warm, decay)
    if not isinstance(step, torch.Tensor):
        return out.item()
    return out.to(step.dtype if step.is_floating_point() else torch.get_default_dtype())


def rate_math(step, d_model, warmup, factor=1.0):
    """Python's math for an int, the same formula elementwise for a tensor, float64 inside."""
    if isinstance(step, torch.Tensor):
        s = step.double()
        safe = torch.where(s > 0, s, torch.ones_like(s))
        out = torch.where(s > 0, torch.minimum(safe.pow(-0.5), s / warmup**1.5), 0.0)
        return (factor / math.sqrt(d_model)) * out.float()
    if step <= 0:
        return 0.0
    return factor / math.sqrt(d_model) * min(1 / math.sqrt(step), step / warmup**1.5)


def rate_log_space(step, d_model, warmup, factor=1.0):
    """In log space: log rate = log factor - log(E)/2 + min(-log(s)/2, log s - 1.5 log w)."""
    t = torch.as_tensor(step).double()
    logs = t.log()  # -inf at step 0
    out = math.log(factor) - 0.5 * math.log(d_model) + torch.minimum(-0.5 * logs,
                                                                     logs - 1.5 * math.log(warmup))
    out = torch.where(t > 0, out.exp(), torch.zeros_like(t))
    if isinstance(step, torch.Tensor):
        return out.to(device=step.device)
    return float(out)


# --- label_smoothed_loss ----------------------------------------------------------------------


def loss_one_hot(logits, target, smoothing=0.0, ignore_index=-100):
    """Smoothed one-hot labels times log-probabilities, in float64, back to the logits' dtype."""
    V = logits.size(-1)
    flat, t = logits.reshape(-1, V).double(), target.reshape(-1)
    keep = t != ignore_index
    labels = F.one_hot(t[keep], V).double() * (1 - smoothing) + smoothing / V  # (N', V)
    per = -(labels * flat[keep].log_softmax(-1)).sum(-1)  # (N',)
    return per.mean().to(logits.dtype)


def loss_einsum(logits, target, smoothing=0.0, ignore_index=-100):
    """einsum over the classes, a weighted mean with 0/1 weights."""
    V = logits.size(-1)
    logp = torch.log_softmax(logits, dim=-1)  # (..., V)
    weight = (target != ignore_index).to(logits.dtype)  # (...)
    idx = torch.where(target == ignore_index, torch.zeros_like(target), target)
    q = torch.full_like(logp, smoothing / V).scatter_add(
        -1, idx.unsqueeze(-1), torch.full_like(logp[..., :1], 1 - smoothing))  # (..., V)
    per = -torch.einsum("...v,...v->...", q, logp)  # (...)
    return (per * weight).sum() / weight.sum()


def loss_nll(logits, target, smoothing=0.0, ignore_index=-100):
    """F.nll_loss for the target's part, the uniform part by hand."""
    V = logits.size(-1)
    logp = F.log_softmax(logits.reshape(-1, V), dim=-1)
    t = target.reshape(-1)
    nll = F.nll_loss(logp, t, ignore_index=ignore_index)
    keep = t != ignore_index
    uniform = -logp[keep].mean(-1).mean()
    return (1 - smoothing) * nll + smoothing * uniform


# --- Transformer ------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention by hand, with nn.MultiheadAttention's parameter names."""

    def __init__(self, E, H, dropout):
        super().__init__()
        self.H = H
        self.in_proj_weight = nn.Parameter(torch.randn(3 * E, E) / math.sqrt(E))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * E))
        self.out_proj = nn.Linear(E, E)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, kv, allowed=None):
        """allowed: bool broadcastable to (B, H, L, S), True = may attend."""
        E = x.size(-1)
        wq, wk, wv = self.in_proj_weight.split(E)
        bq, bk, bv = self.in_proj_bias.split(E)
        B, L, S, D = x.size(0), x.size(1), kv.size(1), E // self.H
        q = (x @ wq.T + bq).reshape(B, L, self.H, D)  # (B, L, H, D)
        k = (kv @ wk.T + bk).reshape(B, S, self.H, D)  # (B, S, H, D)
        v = (kv @ wv.T + bv).reshape(B, S, self.H, D)  # (B, S, H, D)
        scores = torch.einsum("blhd,bshd->bhls", q, k) / math.sqrt(D)  # (B, H, L, S)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, -1e9)
        w = self.drop(scores.softmax(-1))  # (B, H, L, S)
        return self.out_proj(torch.einsum("bhls,bshd->blhd", w, v).reshape(B, L, E))


class EncoderLayer(nn.Module):
    def __init__(self, E, H, Fw, dropout, eps):
        super().__init__()
        self.self_attn = Attention(E, H, dropout)
        self.linear1, self.linear2 = nn.Linear(E, Fw), nn.Linear(Fw, E)
        self.norm1, self.norm2 = nn.LayerNorm(E, eps=eps), nn.LayerNorm(E, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, allowed):
        h = self.norm1(x)
        x = x + self.drop(self.self_attn(h, h, allowed))
        return x + self.drop(self.linear2(self.drop(self.linear1(self.norm2(x)).relu())))


class DecoderLayer(nn.Module):
    def __init__(self, E, H, Fw, dropout, eps):
        super().__init__()
        self.self_attn, self.multihead_attn = Attention(E, H, dropout), Attention(E, H, dropout)
        self.linear1, self.linear2 = nn.Linear(E, Fw), nn.Linear(Fw, E)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(E, eps=eps) for _ in range(3))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, memory, self_allowed, cross_allowed):
        h = self.norm1(x)
        x = x + self.drop(self.self_attn(h, h, self_allowed))
        x = x + self.drop(self.multihead_attn(self.norm2(x), memory, cross_allowed))
        return x + self.drop(self.linear2(self.drop(self.linear1(self.norm3(x)).relu())))


class Stack(nn.Module):
    def __init__(self, layers, E, eps):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(E, eps=eps)


class TransformerByHand(nn.Module):
    """Attention from raw parameters with einsum, -1e9 fills, one (B, 1, L, S) mask per call."""

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                 dim_feedforward=2048, dropout=0.0, eps=1e-5):  # fmt: skip
        super().__init__()
        a = (d_model, nhead, dim_feedforward, dropout, eps)
        self.encoder = Stack([EncoderLayer(*a) for _ in range(num_encoder_layers)], d_model, eps)
        self.decoder = Stack([DecoderLayer(*a) for _ in range(num_decoder_layers)], d_model, eps)

    @staticmethod
    def keys(padding_mask):
        return None if padding_mask is None else padding_mask[:, None, None, :]  # (B, 1, 1, S)

    def encode(self, src, src_padding_mask=None):
        allowed = self.keys(src_padding_mask)
        for layer in self.encoder.layers:
            src = layer(src, allowed)
        return self.encoder.norm(src)

    def decode(self, tgt, memory, tgt_mask=None, tgt_padding_mask=None, memory_padding_mask=None):
        allowed = self.keys(tgt_padding_mask)
        if tgt_mask is not None:
            allowed = tgt_mask[None, None] if allowed is None else allowed & tgt_mask
        cross = self.keys(memory_padding_mask)
        for layer in self.decoder.layers:
            tgt = layer(tgt, memory, allowed, cross)
        return self.decoder.norm(tgt)

    def forward(self, src, tgt, tgt_mask=None, src_padding_mask=None, tgt_padding_mask=None,
                memory_padding_mask=None):  # fmt: skip
        return self.decode(tgt, self.encode(src, src_padding_mask), tgt_mask, tgt_padding_mask,
                           memory_padding_mask)  # fmt: skip


class TransformerResidual(nn.Module):
    """nn.MultiheadAttention with additive float masks (-inf where blocked), one residual helper,
    layers kept as nn.ModuleDicts-in-ModuleLists, and an attribute or two of its own."""

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                 dim_feedforward=2048, dropout=0.0, eps=1e-5):  # fmt: skip
        super().__init__()
        self.width, self.heads = d_model, nhead

        def mha():
            return nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)

        def layer(cross):
            parts = {"self_attn": mha(), "linear1": nn.Linear(d_model, dim_feedforward),
                     "linear2": nn.Linear(dim_feedforward, d_model)}  # fmt: skip
            if cross:
                parts["multihead_attn"] = mha()
            for i in range(3 if cross else 2):
                parts[f"norm{i + 1}"] = nn.LayerNorm(d_model, eps=eps)
            return nn.ModuleDict(parts)

        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(layer(False) for _ in range(num_encoder_layers))
        self.encoder.norm = nn.LayerNorm(d_model, eps=eps)
        self.decoder = nn.Module()
        self.decoder.layers = nn.ModuleList(layer(True) for _ in range(num_decoder_layers))
        self.decoder.norm = nn.LayerNorm(d_model, eps=eps)
        self.drop = nn.Dropout(dropout)

    @staticmethod
    def additive(allowed, like):
        """Bool (True = allowed) -> float, 0 where allowed and -inf where not."""
        if allowed is None:
            return None
        return torch.zeros(allowed.shape, dtype=like.dtype, device=like.device).masked_fill(
            ~allowed, float("-inf"))

    def residual(self, x, norm, sublayer):
        return x + self.drop(sublayer(norm(x)))

    def ffn(self, layer, h):
        return layer["linear2"](self.drop(F.relu(layer["linear1"](h))))

    def encode(self, src, src_padding_mask=None):
        pad = self.additive(src_padding_mask, src)
        x = src
        for layer in self.encoder.layers:
            x = self.residual(x, layer["norm1"], lambda h, a=layer["self_attn"]: a(
                h, h, h, key_padding_mask=pad, need_weights=False)[0])
            x = self.residual(x, layer["norm2"], lambda h, la=layer: self.ffn(la, h))
        return self.encoder.norm(x)

    def decode(self, tgt, memory, tgt_mask=None, tgt_padding_mask=None, memory_padding_mask=None):
        causal = self.additive(tgt_mask, tgt)
        pad = self.additive(tgt_padding_mask, tgt)
        mem = self.additive(memory_padding_mask, memory)
        x = tgt
        for layer in self.decoder.layers:
            x = self.residual(x, layer["norm1"], lambda h, a=layer["self_attn"]: a(
                h, h, h, attn_mask=causal, key_padding_mask=pad, need_weights=False)[0])
            x = self.residual(x, layer["norm2"], lambda h, a=layer["multihead_attn"]: a(
                h, memory, memory, key_padding_mask=mem, need_weights=False)[0])
            x = self.residual(x, layer["norm3"], lambda h, la=layer: self.ffn(la, h))
        return self.decoder.norm(x)

    def forward(self, src, tgt, tgt_mask=None, src_padding_mask=None, tgt_padding_mask=None,
                memory_padding_mask=None):  # fmt: skip
        memory = self.encode(src, src_padding_mask)
        return self.decode(tgt, memory, tgt_mask=tgt_mask, tgt_padding_mask=tgt_padding_mask,
                           memory_padding_mask=memory_padding_mask)  # fmt: skip


class LayerNorm64(nn.Module):
    """LayerNorm by hand, computed in float64, with nn.LayerNorm's parameter names."""

    def __init__(self, E, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(E))
        self.bias = nn.Parameter(torch.zeros(E))

    def forward(self, x):
        x64 = x.double()
        centred = x64 - x64.mean(dim=-1, keepdim=True)
        var = centred.pow(2).mean(dim=-1, keepdim=True)
        y = centred / torch.sqrt(var + self.eps) * self.weight.double() + self.bias.double()
        return y.to(x.dtype)


class TransformerOneMask(nn.Module):
    """nn.MultiheadAttention with one boolean attn_mask per call (padding folded in, repeated
    per head), submodules in plain nn.Modules with torch's names, LayerNorms by hand in float64."""

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                 dim_feedforward=2048, dropout=0.0, eps=1e-5):  # fmt: skip
        super().__init__()
        self.nhead = nhead

        def block(cross):
            m = nn.Module()
            m.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
            if cross:
                m.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout,
                                                         batch_first=True)  # fmt: skip
            m.linear1, m.linear2 = nn.Linear(d_model, dim_feedforward), nn.Linear(dim_feedforward,
                                                                                  d_model)
            for i in range(3 if cross else 2):
                setattr(m, f"norm{i + 1}", LayerNorm64(d_model, eps))
            m.dropout = nn.Dropout(dropout)
            return m

        self.encoder, self.decoder = nn.Module(), nn.Module()
        self.encoder.layers = nn.ModuleList(block(False) for _ in range(num_encoder_layers))
        self.decoder.layers = nn.ModuleList(block(True) for _ in range(num_decoder_layers))
        self.encoder.norm = LayerNorm64(d_model, eps)
        self.decoder.norm = LayerNorm64(d_model, eps)

    def blocked(self, B, L, S, attn=None, pad=None, device=None):
        """(B·H, L, S) bool, True where NOT allowed (nn.MultiheadAttention's attn_mask)."""
        ok = torch.ones(B, L, S, dtype=torch.bool, device=device)
        if attn is not None:
            ok = ok & attn
        if pad is not None:
            ok = ok & pad[:, None, :]
        return (~ok).repeat_interleave(self.nhead, dim=0)  # (B·H, L, S)

    def encode(self, src, src_padding_mask=None):
        B, S, _ = src.shape
        mask = self.blocked(B, S, S, pad=src_padding_mask, device=src.device)
        x = src
        for m in self.encoder.layers:
            h = m.norm1(x)
            x = x + m.dropout(m.self_attn(h, h, h, attn_mask=mask, need_weights=False)[0])
            x = x + m.dropout(m.linear2(m.dropout(torch.relu(m.linear1(m.norm2(x))))))
        return self.encoder.norm(x)

    def decode(self, tgt, memory, tgt_mask=None, tgt_padding_mask=None, memory_padding_mask=None):
        B, L, _ = tgt.shape
        S = memory.size(1)
        self_mask = self.blocked(B, L, L, tgt_mask, tgt_padding_mask, tgt.device)
        cross_mask = self.blocked(B, L, S, pad=memory_padding_mask, device=tgt.device)
        x = tgt
        for m in self.decoder.layers:
            h = m.norm1(x)
            x = x + m.dropout(m.self_attn(h, h, h, attn_mask=self_mask, need_weights=False)[0])
            h = m.norm2(x)
            x = x + m.dropout(m.multihead_attn(h, memory, memory, attn_mask=cross_mask,
                                               need_weights=False)[0])  # fmt: skip
            x = x + m.dropout(m.linear2(m.dropout(torch.relu(m.linear1(m.norm3(x))))))
        return self.decoder.norm(x)

    def forward(self, src, tgt, tgt_mask=None, src_padding_mask=None, tgt_padding_mask=None,
                memory_padding_mask=None):  # fmt: skip
        memory = self.encode(src, src_padding_mask)
        return self.decode(tgt, memory, tgt_mask, tgt_padding_mask, memory_padding_mask)


# --- greedy_decode ----------------------------------------------------------------------------


@torch.no_grad()
def greedy_decode_full_length(model, src, max_len, bos_id, eos_id, use_cache=False):
    """Always max_len steps; a row that has ended gets eos_id from then on."""
    memory = model.encode(src)
    cache = {} if use_cache else None
    ys = [torch.full((src.size(0),), bos_id, dtype=torch.long, device=src.device)]
    ended = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        prefix = torch.stack(ys, dim=1)  # (B, t)
        logits = (model.decode(prefix[:, -1:], memory, cache=cache) if use_cache
                  else model.decode(prefix, memory))  # fmt: skip
        nxt = torch.where(ended, torch.full_like(ys[0], eos_id), logits[:, -1].argmax(-1))
        ended = ended | (nxt == eos_id)
        ys.append(nxt)
    return torch.stack(ys[1:], dim=1)  # (B, max_len)


@torch.no_grad()
def greedy_decode_one_by_one(model, src, max_len, bos_id, eos_id, use_cache=False):
    """One sentence at a time, each as long as it needs, padded with eos_id at the end."""
    rows = []
    for b in range(src.size(0)):
        s = src[b : b + 1]  # (1, S)
        memory = model.encode(s)
        cache = {} if use_cache else None
        ys = torch.tensor([[bos_id]], device=src.device)
        for _ in range(max_len):
            logits = (model.decode(ys[:, -1:], memory, cache=cache) if use_cache
                      else model.decode(ys, memory))  # fmt: skip
            word = logits[0, -1].argmax()
            ys = torch.cat([ys, word.view(1, 1)], dim=1)
            if word.item() == eos_id:
                break
        rows.append(ys[0, 1:])
    T = max(len(r) for r in rows)
    out = torch.full((len(rows), T), eos_id, dtype=torch.long, device=src.device)
    for b, r in enumerate(rows):
        out[b, : len(r)] = r
    return out


@torch.no_grad()
def greedy_decode_list(model, src, max_len, bos_id, eos_id, use_cache=False):
    """The ids kept in a Python list of (B,) tensors; stops when every row has ended."""
    memory = model.encode(src)
    cache = {} if use_cache else None
    tokens = torch.full((src.size(0), 1), bos_id, device=src.device)
    generated = []
    for _ in range(max_len):
        inp = tokens[:, -1:] if use_cache else tokens
        scores = model.decode(inp, memory, cache=cache) if use_cache else model.decode(inp, memory)
        best = scores[:, -1, :].max(dim=-1).indices  # (B,)
        if generated:
            best = torch.where(torch.stack(generated, 1).eq(eos_id).any(1), eos_id, best)
        generated.append(best)
        tokens = torch.cat([tokens, best[:, None]], 1)
        if bool(best.eq(eos_id).all()):
            break
    return torch.stack(generated, 1)


# --- translate --------------------------------------------------------------------------------


@torch.no_grad()
def translate_one_by_one(sentences):
    """One sentence at a time through model(src, ys), until <eos> or 12 words."""
    out = []
    for sentence in sentences:
        src = encode_sentences([sentence], SOURCE_WORDS)
        ys = torch.tensor([[BOS]])
        for _ in range(12):
            nxt = model(src, ys)[:, -1].argmax(-1)
            if nxt.item() == EOS:
                break
            ys = torch.cat([ys, nxt[:, None]], dim=1)
        out.append(" ".join(TARGET_WORDS[i] for i in ys[0, 1:].tolist()))
    return out


@torch.no_grad()
def translate_cached(sentences):
    """The whole batch, with the model's cache, stopping when every row has ended."""
    src = encode_sentences(sentences, SOURCE_WORDS)
    memory = model.encode(src)
    cache = {}
    ys = torch.full((len(sentences), 1), BOS)
    for _ in range(12):
        word = model.decode(ys[:, -1:], memory, cache=cache)[:, -1].argmax(-1)
        ys = torch.cat([ys, word[:, None]], dim=1)
        if bool((ys == EOS).any(1).all()):
            break
    return decode_ids(ys, TARGET_WORDS)


@torch.no_grad()
def translate_sorted_batches(sentences):
    """Batches of 32 sentences of similar length, put back in the given order."""
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i].split()))
    result = [""] * len(sentences)
    for start in range(0, len(order), 32):
        rows = order[start : start + 32]
        src = encode_sentences([sentences[i] for i in rows], SOURCE_WORDS)
        memory = model.encode(src)
        ys = torch.full((len(rows), 1), BOS)
        for _ in range(12):
            ys = torch.cat([ys, model.decode(ys, memory)[:, -1:].argmax(-1)], dim=1)
        for i, words in zip(rows, decode_ids(ys, TARGET_WORDS), strict=True):
            result[i] = words
    return result


RIGHT = {
    "rate": {"torch.where": rate_where, "log space": rate_log_space, "math": rate_math},
    "label_smoothed_loss": {"nll_loss": loss_nll, "einsum": loss_einsum, "one-hot": loss_one_hot},
    "Transformer": {
        "by hand": TransformerByHand,
        "one mask": TransformerOneMask,
        "residual helper": TransformerResidual,
    },
    "greedy_decode": {
        "one by one": greedy_decode_one_by_one,
        "list": greedy_decode_list,
        "full length": greedy_decode_full_length,
    },
    "translate": {
        "one by one": translate_one_by_one,
        "sorted batches": translate_sorted_batches,
        "cached": translate_cached,
    },
}
