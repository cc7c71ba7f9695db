"""Chapter 10, the Transformer assembled: the reference implementation of the exercise.

- :func:`rate`: the warm-up schedule of Vaswani et al. (2017),
  factor · E^-0.5 · min(step^-0.5, step · warmup^-1.5), for an int or a tensor of steps; step 0
  gives 0 (the min of +inf and 0);
- :func:`label_smoothed_loss`: cross-entropy against labels smoothed as torch smooths them (the
  mass ``smoothing`` spread evenly over all V classes, the target's included), the mean over the
  targets that are not ``ignore_index``; equal to ``nn.CrossEntropyLoss(label_smoothing=…,
  ignore_index=…)`` for any leading shape;
- :class:`Transformer`: a **pre-LN** encoder–decoder with ``nn.Transformer``'s parameter names, so
  that ``nn.Transformer(norm_first=True, batch_first=True)``'s state dict loads as it is; masks
  True = allowed (the opposite of torch's);
- :func:`greedy_decode`: greedy decoding on the exercise's model interface
  (``model.encode(src) -> memory``, ``model.decode(tgt, memory, cache=None) -> logits``), with or
  without a key–value cache, the same ids either way;
- the exercise's given material, which its setup cell holds in the same words: the one-clause toy
  translation task (:func:`make_pair`, the vocabularies) and :class:`ToyTranslator`, a small
  random model with a real key–value cache for testing :func:`greedy_decode`;
- :func:`translate` and :func:`train_translator`: the trained-model part (a small pre-LN model
  trained on the task for about 20 s of one CPU core).

Not here: token embeddings and positions inside :class:`Transformer` (it maps vectors to vectors,
as ``nn.Transformer`` does; :class:`TokenTransformer` adds them), beam search, subwords (the
chapter's page uses a BPE tokenizer; the exercise's task is word-level).
"""

from __future__ import annotations

import functools
import math
import random

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "rate",
    "label_smoothed_loss",
    "Transformer",
    "greedy_decode",
    "translate",
    "make_pair",
    "ToyTranslator",
    "TokenTransformer",
    "train_translator",
]


# --------------------------------------------------------------------------------------------
# Part 1: the warm-up schedule
# --------------------------------------------------------------------------------------------


def rate(step, d_model, warmup, factor=1.0):
    """factor · d_model^-0.5 · min(step^-0.5, step · warmup^-1.5); step 0 gives 0.

    An int step gives a float; a tensor of steps gives a floating tensor of its shape and device
    (torch's default dtype for integer steps).
    Example: rate(4000, 512, 4000) -> 0.000699 (the peak).
    """
    if isinstance(step, torch.Tensor):
        dtype = step.dtype if step.is_floating_point() else torch.get_default_dtype()
        s = step.to(dtype)
        return factor * d_model**-0.5 * torch.minimum(s.rsqrt(), s * warmup**-1.5)  # rsqrt(0)=inf
    if step == 0:
        return 0.0
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


# --------------------------------------------------------------------------------------------
# Part 2: label smoothing
# --------------------------------------------------------------------------------------------


def label_smoothed_loss(logits, target, smoothing=0.0, ignore_index=-100):
    """Mean cross-entropy of logits (..., V) against target ids (...), labels smoothed.

    The smoothed label of target y puts 1 - smoothing + smoothing / V on y and smoothing / V on
    every other class (torch's convention); targets equal to ignore_index count for nothing.
    Example: label_smoothed_loss(torch.zeros(2, 4), torch.tensor([1, 3])) -> log 4 = 1.386
    """
    V = logits.size(-1)
    logp = logits.log_softmax(dim=-1).reshape(-1, V)  # (N, V)
    target = target.reshape(-1)  # (N,)
    keep = target != ignore_index  # (N,)
    picked = logp.gather(1, target.masked_fill(~keep, 0)[:, None]).squeeze(1)  # (N,)
    per_token = -(1 - smoothing) * picked - smoothing * logp.mean(dim=-1)  # (N,)
    return per_token.masked_fill(~keep, 0).sum() / keep.sum()


# --------------------------------------------------------------------------------------------
# Part 3: the pre-LN Transformer, with nn.Transformer's names
# --------------------------------------------------------------------------------------------


def _not(mask):
    """Our polarity (True = allowed) to nn.MultiheadAttention's (True = not allowed)."""
    return None if mask is None else ~mask


class _EncoderLayer(nn.Module):
    def __init__(self, d_model, nhead, dim_feedforward, dropout, eps):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=eps)
        self.norm2 = nn.LayerNorm(d_model, eps=eps)
        self.dropout, self.dropout1, self.dropout2 = (nn.Dropout(dropout) for _ in range(3))

    def forward(self, x, padding_mask=None):
        h = self.norm1(x)
        x = x + self.dropout1(self.self_attn(h, h, h, key_padding_mask=_not(padding_mask),
                                             need_weights=False)[0])  # fmt: skip
        h = self.linear2(self.dropout(F.relu(self.linear1(self.norm2(x)))))  # (B, S, E)
        return x + self.dropout2(h)


class _DecoderLayer(nn.Module):
    def __init__(self, d_model, nhead, dim_feedforward, dropout, eps):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout,
                                                    batch_first=True)  # fmt: skip
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=eps)
        self.norm2 = nn.LayerNorm(d_model, eps=eps)
        self.norm3 = nn.LayerNorm(d_model, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(3))

    def forward(self, x, memory, tgt_mask=None, tgt_padding_mask=None, memory_padding_mask=None):
        h = self.norm1(x)
        x = x + self.dropout1(self.self_attn(h, h, h, attn_mask=_not(tgt_mask),
                                             key_padding_mask=_not(tgt_padding_mask),
                                             need_weights=False)[0])  # fmt: skip
        h = self.norm2(x)
        x = x + self.dropout2(self.multihead_attn(h, memory, memory,
                                                  key_padding_mask=_not(memory_padding_mask),
                                                  need_weights=False)[0])  # fmt: skip
        h = self.linear2(self.dropout(F.relu(self.linear1(self.norm3(x)))))  # (B, L, E)
        return x + self.dropout3(h)


class _Stack(nn.Module):
    """``layers`` and the final ``norm``: the names of nn.TransformerEncoder/Decoder."""

    def __init__(self, layers, d_model, eps):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d_model, eps=eps)


class Transformer(nn.Module):
    """Pre-LN encoder–decoder, equal to nn.Transformer(norm_first=True, batch_first=True) with the
    same weights; its state dict has nn.Transformer's names.

    encode(src (B, S, E), src_padding_mask (B, S) or None) -> memory (B, S, E);
    decode(tgt (B, L, E), memory, tgt_mask (L, L), tgt_padding_mask (B, L),
    memory_padding_mask (B, S)) -> (B, L, E); forward(src, tgt, tgt_mask, src_padding_mask,
    tgt_padding_mask, memory_padding_mask) -> (B, L, E). Every mask True = allowed, or None.
    """

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                 dim_feedforward=2048, dropout=0.0, eps=1e-5):  # fmt: skip
        super().__init__()
        args = (d_model, nhead, dim_feedforward, dropout, eps)
        self.encoder = _Stack([_EncoderLayer(*args) for _ in range(num_encoder_layers)],
                              d_model, eps)  # fmt: skip
        self.decoder = _Stack([_DecoderLayer(*args) for _ in range(num_decoder_layers)],
                              d_model, eps)  # fmt: skip

    def encode(self, src, src_padding_mask=None):
        x = src
        for layer in self.encoder.layers:
            x = layer(x, src_padding_mask)  # (B, S, E)
        return self.encoder.norm(x)

    def decode(self, tgt, memory, tgt_mask=None, tgt_padding_mask=None, memory_padding_mask=None):
        x = tgt
        for layer in self.decoder.layers:
            x = layer(x, memory, tgt_mask, tgt_padding_mask, memory_padding_mask)  # (B, L, E)
        return self.decoder.norm(x)

    def forward(self, src, tgt, tgt_mask=None, src_padding_mask=None, tgt_padding_mask=None,
                memory_padding_mask=None):  # fmt: skip
        memory = self.encode(src, src_padding_mask)  # (B, S, E)
        return self.decode(tgt, memory, tgt_mask, tgt_padding_mask, memory_padding_mask)


# --------------------------------------------------------------------------------------------
# Part 4: greedy decoding, with and without a cache
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def greedy_decode(model, src, max_len, bos_id, eos_id, use_cache=False):
    """Greedy ids (B, T), T <= max_len, without the bos; after a row's eos, eos_id.

    model.encode(src) -> memory; model.decode(tgt, memory) -> logits (B, t, V) for the whole
    prefix tgt (B, t); model.decode(tgt[:, -1:], memory, cache=cache) -> (B, 1, V) for the newest
    token only, `cache` a dict (empty at the first step) that the model keeps its keys and values
    in. Stops when every row has produced eos_id.
    """
    memory = model.encode(src)
    B = src.size(0)
    ys = torch.full((B, 1), bos_id, dtype=torch.long, device=src.device)  # (B, 1)
    done = torch.zeros(B, dtype=torch.bool, device=src.device)  # (B,)
    cache = {} if use_cache else None
    for _ in range(max_len):
        if use_cache:
            logits = model.decode(ys[:, -1:], memory, cache=cache)  # (B, 1, V)
        else:
            logits = model.decode(ys, memory)  # (B, t, V)
        word = logits[:, -1].argmax(dim=-1).masked_fill(done, eos_id)  # (B,)
        ys = torch.cat([ys, word[:, None]], dim=1)  # (B, t + 1)
        done = done | (word == eos_id)
        if bool(done.all()):
            break
    return ys[:, 1:]  # (B, T)


# --------------------------------------------------------------------------------------------
# Given material (the setup cell holds the same): the task, the vocabularies, ToyTranslator
# --------------------------------------------------------------------------------------------

# GIVEN BEGIN
NOUNS = {
    "dog": "gae", "cat": "goyangi", "bird": "sae", "horse": "mal", "child": "ai",
    "teacher": "seonsaeng", "student": "haksaeng", "farmer": "nongbu", "king": "wang",
    "doctor": "uisa", "fish": "mulgogi", "tiger": "horangi", "rabbit": "tokki", "friend": "chingu",
    "baby": "agi", "soldier": "gunin", "cook": "yorisa", "monkey": "wonsungi", "bear": "gom",
    "fox": "yeou",
}  # fmt: skip
VERBS = {
    "sees": "bonda", "chases": "jjotneunda", "helps": "dopneunda", "knows": "anda",
    "calls": "bureunda", "follows": "ttareunda", "meets": "mannanda", "teaches": "gareuchinda",
    "likes": "joahanda", "pushes": "minda",
}  # fmt: skip
ADJECTIVES = {
    "big": "keun", "small": "jageun", "old": "neulgeun", "young": "eorin", "happy": "haengbokhan",
    "angry": "hwanan", "red": "ppalgan", "black": "geomeun", "brave": "yonggamhan",
    "lazy": "geeureun",
}  # fmt: skip
ADVERBS = {
    "quickly": "ppalli", "slowly": "cheoncheonhi", "often": "jaju", "today": "oneul",
    "again": "dasi", "quietly": "joyonghi",
}  # fmt: skip
PAD, BOS, EOS = 0, 1, 2
SPECIALS = ["<pad>", "<sos>", "<eos>"]
SOURCE_WORDS = SPECIALS + sorted([*NOUNS, *VERBS, *ADJECTIVES, *ADVERBS, "and"])
TARGET_WORDS = SPECIALS + sorted({*NOUNS.values(), *VERBS.values(), *ADJECTIVES.values(),
                                  *ADVERBS.values(), "geurigo", "ga", "i", "reul", "eul"})


def make_pair(rng, length):
    """One clause of `length` source words (3 to 6), as strings: (source, target).

    Example: make_pair(random.Random(0), 3) -> ('friend chases teacher',
    'chingu ga seonsaeng eul jjotneunda')
    """
    if not 3 <= length <= 6:
        raise ValueError(f"a clause has 3 to 6 words, not {length}")
    extras = rng.sample(["subject_adj", "object_adj", "adverb"], length - 3)
    pick = {role: rng.choice(sorted(table)) for role, table in (
        ("subject_adj", ADJECTIVES), ("subject", NOUNS), ("verb", VERBS),
        ("object_adj", ADJECTIVES), ("object", NOUNS), ("adverb", ADVERBS))}  # fmt: skip
    order = ["subject_adj", "subject", "verb", "object_adj", "object", "adverb"]
    source = [pick[r] for r in order if r in extras or r in ("subject", "verb", "object")]
    target = []
    for noun, particles in (("subject", ("ga", "i")), ("object", ("reul", "eul"))):
        if f"{noun}_adj" in extras:
            target.append(ADJECTIVES[pick[f"{noun}_adj"]])
        target.append(NOUNS[pick[noun]])
        target.append(particles[0] if target[-1][-1] in "aeiou" else particles[1])
    if "adverb" in extras:
        target.append(ADVERBS[pick["adverb"]])
    target.append(VERBS[pick["verb"]])
    return " ".join(source), " ".join(target)


def encode_sentences(sentences, words, add_bos=False, add_eos=False):
    """Strings of words -> a (B, T) long tensor of ids, padded with PAD at the end."""
    index = {w: i for i, w in enumerate(words)}
    rows = [[BOS] * add_bos + [index[w] for w in s.split()] + [EOS] * add_eos for s in sentences]
    T = max(len(r) for r in rows)
    return torch.tensor([r + [PAD] * (T - len(r)) for r in rows])  # (B, T)


def decode_ids(ids, words):
    """A (B, T) tensor of ids -> strings, each up to its first EOS, without PAD and BOS."""
    out = []
    for row in ids.tolist():
        row = row[: row.index(EOS)] if EOS in row else row
        out.append(" ".join(words[i] for i in row if i not in (PAD, BOS)))
    return out


class ToyTranslator(nn.Module):
    """A small random model with the interface greedy_decode drives, and a real key–value cache.

    encode(src (B, S)) -> memory (B, 1, E); decode(tgt (B, t), memory, cache=None) -> logits
    (B, t, V). With a cache (a dict), tgt holds only the newest token(s): their keys and values
    are appended to those the cache holds, and positions continue from there.
    """

    def __init__(self, vocab_size=12, d_model=16, max_len=64):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(max_len, d_model)
        self.q, self.k, self.v = (nn.Linear(d_model, d_model) for _ in range(3))
        self.out = nn.Linear(d_model, vocab_size)

    def encode(self, src):
        return self.embed(src).mean(dim=1, keepdim=True)  # (B, 1, E)

    def decode(self, tgt, memory, cache=None):
        start = 0 if cache is None else cache.get("length", 0)
        n = tgt.size(1)
        positions = torch.arange(start, start + n, device=tgt.device)  # (n,)
        x = self.embed(tgt) + self.position(positions) + memory  # (B, n, E)
        k, v = self.k(x), self.v(x)  # (B, n, E)
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=1)  # (B, start + n, E)
                v = torch.cat([cache["v"], v], dim=1)  # (B, start + n, E)
            cache["k"], cache["v"], cache["length"] = k, v, start + n
        scores = self.q(x) @ k.transpose(1, 2) / math.sqrt(x.size(-1))  # (B, n, start + n)
        allowed = torch.ones(n, k.size(1), dtype=torch.bool, device=x.device).tril(start)
        weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)  # (B, n, S)
        return self.out(x + weights @ v)  # (B, n, V)


def sinusoids(n, width, device=None):
    """(n, width) sinusoidal positions (chapter 7)."""
    pos = torch.arange(n, dtype=torch.float32, device=device)[:, None]  # (n, 1)
    freq = 10000.0 ** (-torch.arange(0, width, 2, dtype=torch.float32, device=device) / width)
    table = torch.zeros(n, width, device=device)
    table[:, 0::2], table[:, 1::2] = (pos * freq).sin(), (pos * freq).cos()
    return table  # (n, E)


class TokenTransformer(nn.Module):
    """Ids in, logits out: embeddings · √E plus sinusoidal positions around a Transformer, and
    an output projection. encode(src ids) -> (memory, src_padding_mask); decode(tgt ids, memory,
    cache=None) -> logits: the interface greedy_decode drives. Its "cache" keeps the prefix and
    recomputes it (the same ids as without one, no speed-up); the page's Transformer keeps keys
    and values."""

    def __init__(self, core, d_model, n_source, n_target):
        super().__init__()
        self.core, self.d_model = core, d_model
        self.src_embed = nn.Embedding(n_source, d_model)
        self.tgt_embed = nn.Embedding(n_target, d_model)
        self.out = nn.Linear(d_model, n_target)

    def _embed(self, table, ids):
        return table(ids) * math.sqrt(self.d_model) + sinusoids(ids.size(1), self.d_model,
                                                                 ids.device)  # fmt: skip

    def encode(self, src):
        real = src != PAD  # (B, S)
        return self.core.encode(self._embed(self.src_embed, src), real), real

    def decode(self, tgt, memory, cache=None):
        memory, real = memory
        if cache is not None:  # the prefix, not keys and values: the same ids, no speed-up
            tgt = cache["tgt"] = tgt if "tgt" not in cache else torch.cat([cache["tgt"], tgt], 1)
        L = tgt.size(1)
        causal = torch.ones(L, L, dtype=torch.bool, device=tgt.device).tril()  # (L, L)
        h = self.core.decode(self._embed(self.tgt_embed, tgt), memory, causal, None, real)
        logits = self.out(h)  # (B, L, V)
        return logits if cache is None else logits[:, -1:]  # (B, 1, V) with a cache

    def forward(self, src, tgt):
        return self.decode(tgt, self.encode(src))


# GIVEN END


# --------------------------------------------------------------------------------------------
# Part 5: a trained model
# --------------------------------------------------------------------------------------------


@torch.enable_grad()  # first used, maybe, inside a caller's torch.no_grad() (a translate)
def train_translator(model_class=Transformer, steps=400, seed=0, E=32, layers=1, factor=2.0,
                     warmup=100):  # fmt: skip
    """Train a TokenTransformer around model_class on random clauses of 3 to 6 words."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    core = model_class(E, 4, layers, layers, 2 * E, 0.0)
    model = TokenTransformer(core, E, len(SOURCE_WORDS), len(TARGET_WORDS))
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    warmup_then_decay = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: rate(s + 1, E, warmup, factor))  # LambdaLR counts from 0
    model.train()
    for _ in range(steps):
        pairs = [make_pair(rng, rng.randint(3, 6)) for _ in range(64)]
        src = encode_sentences([p[0] for p in pairs], SOURCE_WORDS)
        tgt = encode_sentences([p[1] for p in pairs], TARGET_WORDS, add_bos=True, add_eos=True)
        logits = model(src, tgt[:, :-1])  # (B, T, V)
        loss = label_smoothed_loss(logits, tgt[:, 1:], 0.1, PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        warmup_then_decay.step()
    return model.eval()


@functools.cache
def trained_model():
    """The reference's trained model, trained once per process (about 10 s of one CPU core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only contend
    try:
        return train_translator()
    finally:
        torch.set_num_threads(threads)


def translate(sentences):
    """Source strings -> target strings, by the trained model and greedy decoding."""
    model = trained_model()
    src = encode_sentences(sentences, SOURCE_WORDS)
    ids = greedy_decode(model, src, 12, BOS, EOS)
    return decode_ids(ids, TARGET_WORDS)
