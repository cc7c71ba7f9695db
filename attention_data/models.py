"""The translators the course compares, written once: the models its checkpoints hold.

Every model translates :mod:`attention_data.translation`'s toy task and has a method
``translate(sentences)`` (source word lists in, target word lists out, greedy). Their classes
mirror the pages' own, submodule by submodule and size by size, so that a page can build a model
in its own cells and load a shipped checkpoint into it with ``load_state_dict(strict=True)``
(:mod:`attention_data.checkpoints` says how):

- :class:`Seq2Seq`: chapter 1's GRU encoder–decoder, joined by the context vector alone
  (``encoder.embedding``, ``encoder.rnn``, ``decoder.embedding``, ``decoder.rnn``, ``decoder.out``);
- :class:`Bahdanau`: chapter 2's model (a bidirectional encoder, additive attention asked by the
  previous state, the context into the GRU cell and the output layer);
- :class:`Cho`: the RNN encoder–decoder of Cho et al. (2014a) on chapter 2's bidirectional encoder:
  one fixed context vector, the encoder's two final states, fed to every decoder step and to the
  output layer, with chapter 2's decoder otherwise; it differs from :class:`Bahdanau` only in
  having no attention (and so no W_s, W_h, v);
- :class:`Luong`: chapter 3's model with its three scores, dot, general and concat;
- :class:`Transformer`: the encoder–decoder of Vaswani et al. (2017) over subwords, for the
  capstone (its docstring lists its submodules).

:func:`score` measures translations on word lists: exact match, and token accuracy over the
reference's words and its end. :data:`MODELS` names the models the training script knows, and
:func:`code_hash` fingerprints the source a model is built from.

What it leaves out: training (:mod:`attention_data.train`), loading checkpoints
(:mod:`attention_data.checkpoints`), beam search, and any answer to an exercise: the parts the
exercises ask for exist here only inside these models, with keyword-only constructors, and no
public function here takes the graded functions' arguments.

Example::

    >>> model = Seq2Seq().eval()
    >>> len(model.translate([["dog", "sees", "cat"]])[0]) <= 8
    True
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import math
import sys
import textwrap
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attention_data.translation import SOURCE_VOCAB, TARGET_VOCAB

PAD, SOS, EOS = TARGET_VOCAB.pad_id, TARGET_VOCAB.sos_id, TARGET_VOCAB.eos_id


# --------------------------------------------------------------------------------------------
# Scores, on words
# --------------------------------------------------------------------------------------------


def score(guesses: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> dict:
    """Per sentence, 'exact match' (1.0 or 0.0) and 'token accuracy', of guessed word lists
    against reference word lists (decoded sentences split on spaces; no ``<eos>`` in them).

    Token accuracy counts the reference's positions, its words and its end: position i < len(ref)
    is right when the guess has the same word there; the end is right when the guess ends there
    too. A guess that stops early or runs on loses the positions it misses.
    Example: score([["a", "c"]], [["a", "b"]]) -> {'exact match': [0.0], 'token accuracy': [0.667]}
    (rounded: 2 of 3 positions, "a" and the end, are right).
    """
    if len(guesses) != len(references):
        raise ValueError(f"{len(guesses)} guesses for {len(references)} references")
    exact, accuracy = [], []
    for i, (guess, reference) in enumerate(zip(guesses, references, strict=True)):
        for what, words in (("guess", guess), ("reference", reference)):
            if isinstance(words, str) or not all(isinstance(w, str) for w in words):
                raise TypeError(f"{what} {i} must be a list of words (str), not {words!r:.60}")
        right = sum(g == r for g, r in zip(guess, reference, strict=False))
        right += len(guess) == len(reference)  # the end, in the right place
        exact.append(float(list(guess) == list(reference)))
        accuracy.append(right / (len(reference) + 1))
    return {"exact match": exact, "token accuracy": accuracy}


# --------------------------------------------------------------------------------------------
# Shared by the RNN models: translating with a word vocabulary
# --------------------------------------------------------------------------------------------


class _WordTranslator(nn.Module):
    """A model over the task's word vocabularies with ``greedy(src, lengths, steps)`` ->
    (ids (B, steps), weights or None); adds ``translate``."""

    @torch.no_grad()
    def translate(self, sentences: Sequence[Sequence[str]], batch_size: int = 250) -> list:
        """Greedy translations (lists of target words) of source sentences (lists of words), at
        most 2S + 2 words each for the longest S of a batch; the model's device, eval mode."""
        device = next(self.parameters()).device
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        out: list = [None] * len(sentences)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            ids = [torch.tensor(SOURCE_VOCAB.encode(sentences[i])) for i in rows]
            src = nn.utils.rnn.pad_sequence(ids, batch_first=True).to(device)  # (B, S)
            lengths = torch.tensor([len(t) for t in ids], device=device)  # (B,)
            words, _ = self.greedy(src, lengths, 2 * src.size(1) + 2)  # (B, steps)
            for i, row in zip(rows, words.cpu(), strict=True):
                out[i] = TARGET_VOCAB.decode(row)
        return out


# --------------------------------------------------------------------------------------------
# Chapter 1: the encoder–decoder joined by one vector
# --------------------------------------------------------------------------------------------


class _Encoder(nn.Module):
    """Chapter 1's encoder: src (B, S), lengths (B,) -> states (B, S, Eh), context (B, Eh)."""

    def __init__(self, *, n_words, emb_width=64, width=128):
        super().__init__()
        self.embedding = nn.Embedding(n_words, emb_width, padding_idx=PAD)
        self.rnn = nn.GRU(emb_width, width, batch_first=True)

    def forward(self, src, lengths):
        words = self.embedding(src)  # (B, S, E)
        packed = pack_padded_sequence(words, lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_states, last = self.rnn(packed)  # last (1, B, Eh)
        states, _ = pad_packed_sequence(
            packed_states, batch_first=True, total_length=src.size(1)
        )  # (B, S, Eh)
        return states, last.squeeze(0)  # (B, S, Eh), (B, Eh)


class _Decoder(nn.Module):
    """Chapter 1's decoder: tokens (B, L), state (B, Eh) -> scores (B, L, V), last state."""

    def __init__(self, *, n_words, emb_width=64, width=128):
        super().__init__()
        self.embedding = nn.Embedding(n_words, emb_width, padding_idx=PAD)
        self.rnn = nn.GRU(emb_width, width, batch_first=True)
        self.out = nn.Linear(width, n_words)

    def forward(self, tokens, state):
        steps, last = self.rnn(self.embedding(tokens), state[None])  # (B, L, Eh), (1, B, Eh)
        return self.out(steps), last[0]  # (B, L, V), (B, Eh)


class Seq2Seq(_WordTranslator):
    """Chapter 1's model: the encoder's last state starts the decoder, and nothing else passes.

    Submodules (as chapter 1's ``Encoder``, ``Decoder`` and ``Seq2Seq``): ``encoder.embedding``
    (V_src, 64), ``encoder.rnn`` GRU 64 -> 128, ``decoder.embedding`` (V_tgt, 64), ``decoder.rnn``
    GRU 64 -> 128, ``decoder.out`` 128 -> V_tgt.
    forward(src (B, S), lengths (B,), tgt_in (B, L), teacher_forcing=True) -> scores (B, L, V).
    greedy_decode(src, lengths, max_len) -> ids (B, steps), <pad> after each row's <eos>.
    """

    def __init__(self):
        super().__init__()
        self.encoder = _Encoder(n_words=len(SOURCE_VOCAB))
        self.decoder = _Decoder(n_words=len(TARGET_VOCAB))

    def forward(self, src, lengths, tgt_in, teacher_forcing=True):
        context = self.encoder(src, lengths)[1]  # (B, Eh)
        if teacher_forcing:
            return self.decoder(tgt_in, context)[0]  # (B, L, V)
        word, state, scores = tgt_in[:, :1], context, []  # (B, 1), (B, Eh)
        for _ in range(tgt_in.shape[1]):
            step_scores, state = self.decoder(word, state)  # (B, 1, V), (B, Eh)
            scores.append(step_scores)
            word = step_scores.argmax(-1)  # (B, 1)
        return torch.cat(scores, 1)  # (B, L, V)

    @torch.no_grad()
    def greedy_decode(self, src, lengths, max_len):
        state = self.encoder(src, lengths)[1]  # (B, Eh)
        word = torch.full((len(src), 1), SOS, device=src.device)  # (B, 1)
        done = torch.zeros(len(src), dtype=torch.bool, device=src.device)  # (B,)
        written = []
        for _ in range(max_len):
            step_scores, state = self.decoder(word, state)  # (B, 1, V), (B, Eh)
            word = step_scores.argmax(-1)  # (B, 1)
            written.append(torch.where(done[:, None], PAD, word))  # (B, 1)
            done = done | (word[:, 0] == EOS)
            if done.all():
                break
        return torch.cat(written, 1)  # (B, steps)

    def greedy(self, src, lengths, steps):
        """greedy_decode's ids (B, ≤ steps), and no weights (None): the common interface."""
        return self.greedy_decode(src, lengths, steps), None


# --------------------------------------------------------------------------------------------
# Chapters 2 and 3: the bidirectional encoder, Bahdanau's model and Cho's baseline on it
# --------------------------------------------------------------------------------------------


def _allowed_positions(lengths, S):
    """Boolean (B, S), True at the real positions j < lengths[b] (allowed)."""
    return torch.arange(S, device=lengths.device) < lengths.unsqueeze(-1)  # (B, S)


def _softmax_where_allowed(scores, allowed):
    """Softmax over the last axis with the positions where `allowed` is False at exactly 0, and
    rows with nothing allowed at 0 (not NaN)."""
    if allowed is None:
        return scores.softmax(dim=-1)
    scores = scores.masked_fill(~allowed, float("-inf"))
    empty = ~allowed.any(dim=-1, keepdim=True)
    return scores.masked_fill(empty, 0.0).softmax(dim=-1).masked_fill(empty, 0.0)


class _BiEncoder(nn.Module):
    """Chapters 2 and 3's encoder: src (B, S), lengths (B,) -> annotations (B, S, Ek), allowed
    (B, S) (True at real words) and the backward GRU's state at the first word, ←h_1 (B, Ek / 2).

    Chapter 2 names its embedding ``src_embedding``, chapter 3 ``embedding``: `embedding_name`
    keeps each page's name, so that its checkpoints load into the page's class.
    """

    def __init__(self, *, vocab_size, embed_dim=64, hidden_dim=64, embedding_name="src_embedding"):
        super().__init__()
        self.embedding_name = embedding_name
        setattr(self, embedding_name, nn.Embedding(vocab_size, embed_dim, padding_idx=PAD))
        self.gru = nn.GRU(embed_dim, hidden_dim, batch_first=True, bidirectional=True)

    def forward(self, src, lengths):
        S = src.size(1)
        embedded = getattr(self, self.embedding_name)(src)  # (B, S, E)
        packed = pack_padded_sequence(
            embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        out, last = self.gru(packed)  # last: (2, B, Ek / 2), forward then backward
        annotations, _ = pad_packed_sequence(out, batch_first=True, total_length=S)  # (B, S, Ek)
        return annotations, _allowed_positions(lengths.to(src.device), S), last[1]


class _AdditiveAttention(nn.Module):
    """Bahdanau's score v^T tanh(W_s s + W_h h): query_proj, key_proj, score_proj are W_s, W_h,
    v. forward(query (B, Eq), keys (B, S, Ek), allowed (B, S), projected_keys (B, S, A))
    -> (context (B, Ek), weights (B, S))."""

    def __init__(self, *, query_dim, key_dim, attn_dim):
        super().__init__()
        self.query_proj = nn.Linear(query_dim, attn_dim, bias=False)
        self.key_proj = nn.Linear(key_dim, attn_dim, bias=False)
        self.score_proj = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, query, keys, allowed, projected_keys):
        hidden = torch.tanh(projected_keys + self.query_proj(query).unsqueeze(-2))  # (B, S, A)
        weights = _softmax_where_allowed(self.score_proj(hidden).squeeze(-1), allowed)  # (B, S)
        context = (weights.unsqueeze(1) @ keys).squeeze(1)  # (B, Ek)
        return context, weights


class _AttentiveDecoder(nn.Module):
    """Chapter 2's decoder: the previous state asks; the context enters the GRU cell and the
    output layer, which reads [s_i; c_i; E y_{i-1}]."""

    def __init__(self, *, vocab_size, embed_dim, hidden_dim, annotation_dim, attn_dim):
        super().__init__()
        self.tgt_embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.attention = _AdditiveAttention(
            query_dim=hidden_dim, key_dim=annotation_dim, attn_dim=attn_dim
        )
        self.gru_cell = nn.GRUCell(embed_dim + annotation_dim, hidden_dim)
        self.output_layer = nn.Linear(hidden_dim + annotation_dim + embed_dim, vocab_size)

    def step(self, y_prev, s_prev, annotations, allowed, projected_keys):
        """One word: (logits (B, V), s (B, Eq), weights (B, S))."""
        embedded = self.tgt_embedding(y_prev)  # (B, E)
        context, weights = self.attention(s_prev, annotations, allowed, projected_keys)
        s = self.gru_cell(torch.cat([embedded, context], dim=-1), s_prev)  # (B, Eq)
        logits = self.output_layer(torch.cat([s, context, embedded], dim=-1))  # (B, V)
        return logits, s, weights

    def forward(self, tgt_in, annotations, allowed, s0):
        projected = self.attention.key_proj(annotations)  # (B, S, A): once per sentence
        embedded = self.tgt_embedding(tgt_in)  # (B, L, E)
        s, states, contexts, weights = s0, [], [], []
        for e_i in embedded.unbind(dim=1):  # step i needs s_{i-1}
            c, w = self.attention(s, annotations, allowed, projected)  # (B, Ek), (B, S)
            s = self.gru_cell(torch.cat([e_i, c], dim=-1), s)  # (B, Eq)
            states.append(s)
            contexts.append(c)
            weights.append(w)
        features = torch.cat(
            [torch.stack(states, 1), torch.stack(contexts, 1), embedded], dim=-1
        )  # (B, L, Eq + Ek + E)
        return self.output_layer(features), torch.stack(weights, 1)  # (B, L, V), (B, L, S)


class Bahdanau(_WordTranslator):
    """Chapter 2's model: bidirectional encoder, s_0 = tanh(W_init ←h_1), attentive decoder.

    Submodules (as chapter 2's ``Bahdanau``): ``encoder.src_embedding`` (V_src, 64),
    ``encoder.gru`` bidirectional GRU 64 -> 2 x 64, ``init`` 64 -> 128,
    ``decoder.tgt_embedding`` (V_tgt, 64), ``decoder.attention.query_proj`` 128 -> 32,
    ``decoder.attention.key_proj`` 128 -> 32, ``decoder.attention.score_proj`` 32 -> 1 (no
    biases), ``decoder.gru_cell`` GRUCell 64 + 128 -> 128, ``decoder.output_layer``
    128 + 128 + 64 -> V_tgt.
    forward(src (B, S), lengths (B,), tgt_in (B, L), need_weights=True)
        -> (logits (B, L, V), weights (B, L, S) or None), with teacher forcing.
    greedy(src, lengths, steps) -> (ids (B, steps), weights (B, steps, S)).
    """

    def __init__(self, *, embed_dim=64, enc_dim=64, hidden_dim=128, attn_dim=32):
        super().__init__()
        self.encoder = _BiEncoder(
            vocab_size=len(SOURCE_VOCAB), embed_dim=embed_dim, hidden_dim=enc_dim
        )
        self.init = nn.Linear(enc_dim, hidden_dim)
        self.decoder = _AttentiveDecoder(
            vocab_size=len(TARGET_VOCAB),
            embed_dim=embed_dim,
            hidden_dim=hidden_dim,
            annotation_dim=2 * enc_dim,
            attn_dim=attn_dim,
        )

    def encode(self, src, lengths):
        annotations, allowed, back_first = self.encoder(src, lengths)  # (B, S, Ek), (B, S), ...
        return annotations, allowed, torch.tanh(self.init(back_first))  # s0: (B, Eq)

    def forward(self, src, lengths, tgt_in, need_weights=True):
        annotations, allowed, s0 = self.encode(src, lengths)
        logits, weights = self.decoder(tgt_in, annotations, allowed, s0)  # (B, L, V), (B, L, S)
        return logits, (weights if need_weights else None)

    @torch.no_grad()
    def greedy(self, src, lengths, steps):
        annotations, allowed, s = self.encode(src, lengths)  # (B, S, Ek), (B, S), (B, Eq)
        projected = self.decoder.attention.key_proj(annotations)  # (B, S, A)
        y = torch.full((src.size(0),), SOS, device=src.device)  # (B,)
        words, weights = [], []
        for _ in range(steps):
            logits, s, w = self.decoder.step(y, s, annotations, allowed, projected)  # (B, V), ...
            y = logits.argmax(dim=-1)  # (B,)
            words.append(y)
            weights.append(w)
        return torch.stack(words, 1), torch.stack(weights, 1)  # (B, steps), (B, steps, S)


class _ContextDecoder(nn.Module):
    """Cho et al.'s decoder on chapter 2's layout: a GRU that reads [E y_{i-1}; c] at every step,
    and the output layer [s_i; c; E y_{i-1}], with one fixed c per sentence."""

    def __init__(self, *, vocab_size, embed_dim, hidden_dim, context_dim):
        super().__init__()
        self.tgt_embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.gru = nn.GRU(embed_dim + context_dim, hidden_dim, batch_first=True)
        self.output_layer = nn.Linear(hidden_dim + context_dim + embed_dim, vocab_size)

    def forward(self, tokens, context, state):
        """tokens (B, L), context (B, Ec), state (B, Eq) -> (logits (B, L, V), state (B, Eq))."""
        embedded = self.tgt_embedding(tokens)  # (B, L, E)
        c = context.unsqueeze(1).expand(-1, tokens.size(1), -1)  # (B, L, Ec): every step
        states, last = self.gru(torch.cat([embedded, c], dim=-1), state[None])  # (B, L, Eq)
        features = torch.cat([states, c, embedded], dim=-1)  # (B, L, Eq + Ec + E)
        return self.output_layer(features), last[0]  # (B, L, V), (B, Eq)


class Cho(_WordTranslator):
    """The RNN encoder–decoder of Cho et al. (2014a) on chapter 2's bidirectional encoder.

    The context is fixed, one vector per sentence: the forward GRU's state after the last word and
    the backward GRU's state at the first, c = [→h_S; ←h_1] (B, 128), both summaries of the whole
    sentence. It enters every decoder step and the output layer, s_i = GRU(s_{i-1}, [E y_{i-1};
    c]) and softmax(W_o [s_i; c; E y_{i-1}]), where chapter 2's model has c_i, and the decoder
    starts, as chapter 2's does, from s_0 = tanh(W_init ←h_1). So it differs from
    :class:`Bahdanau` only in having no attention: the same encoder, initial state, widths and
    output layer. (Cho et al. also pass c through a tanh layer and use a maxout readout; this
    baseline keeps chapter 2's linear output layer, as :class:`Bahdanau` does.)

    Submodules: ``encoder.src_embedding``, ``encoder.gru`` and ``init`` as :class:`Bahdanau`;
    ``decoder.tgt_embedding`` (V_tgt, 64), ``decoder.gru`` GRU 64 + 128 -> 128 (one call over a
    whole target, since c does not change), ``decoder.output_layer`` 128 + 128 + 64 -> V_tgt.
    forward(src (B, S), lengths (B,), tgt_in (B, L), need_weights=True) -> (logits (B, L, V),
    None). greedy(src, lengths, steps) -> (ids (B, steps), None).
    """

    def __init__(self, *, embed_dim=64, enc_dim=64, hidden_dim=128):
        super().__init__()
        self.encoder = _BiEncoder(
            vocab_size=len(SOURCE_VOCAB), embed_dim=embed_dim, hidden_dim=enc_dim
        )
        self.init = nn.Linear(enc_dim, hidden_dim)
        self.decoder = _ContextDecoder(
            vocab_size=len(TARGET_VOCAB),
            embed_dim=embed_dim,
            hidden_dim=hidden_dim,
            context_dim=2 * enc_dim,
        )

    def encode(self, src, lengths):
        """-> (c (B, Ek), s0 (B, Eq))."""
        annotations, _, back_first = self.encoder(src, lengths)  # (B, S, Ek), _, (B, Ek / 2)
        half = back_first.size(-1)
        last = (lengths.to(src.device) - 1).view(-1, 1, 1).expand(-1, 1, half)  # (B, 1, Ek / 2)
        forward_last = annotations[..., :half].gather(1, last).squeeze(1)  # (B, Ek / 2): →h_S
        context = torch.cat([forward_last, back_first], dim=-1)  # (B, Ek)
        return context, torch.tanh(self.init(back_first))  # (B, Ek), (B, Eq)

    def forward(self, src, lengths, tgt_in, need_weights=True):
        context, s0 = self.encode(src, lengths)
        return self.decoder(tgt_in, context, s0)[0], None  # (B, L, V), no weights

    @torch.no_grad()
    def greedy(self, src, lengths, steps):
        context, s = self.encode(src, lengths)  # (B, Ek), (B, Eq)
        y = torch.full((src.size(0), 1), SOS, device=src.device)  # (B, 1)
        words = []
        for _ in range(steps):
            logits, s = self.decoder(y, context, s)  # (B, 1, V), (B, Eq)
            y = logits.argmax(dim=-1)  # (B, 1)
            words.append(y)
        return torch.cat(words, 1), None  # (B, steps)


# --------------------------------------------------------------------------------------------
# Chapter 3: Luong's global attention
# --------------------------------------------------------------------------------------------


class _LuongAttention(nn.Module):
    """Chapter 3's layer: weights from the dot, general or concat score, then
    h̃ = tanh(W_c [c; h]). attention_weights(query (B, L, D), keys (B, S, D), allowed (B, S))
    -> (B, L, S); forward(...) -> h̃ (B, L, D)."""

    def __init__(self, *, hidden_size, score, attn_dim):
        super().__init__()
        D, A = hidden_size, attn_dim or hidden_size
        self.score = score
        if score == "general":
            self.W_a = nn.Linear(D, D, bias=False)  # .weight: (Dq, Dk)
        elif score == "concat":
            self.W_a = nn.Linear(2 * D, A, bias=False)  # .weight: (A, Dq + Dk)
            bound = 1 / math.sqrt(A)
            self.v_a = nn.Parameter(torch.empty(A).uniform_(-bound, bound))  # (A,)
        elif score != "dot":
            raise ValueError(f"unknown score {score!r}: dot, general or concat")
        self.W_c = nn.Linear(2 * D, D, bias=False)

    def scores(self, query, keys):
        if self.score == "dot":
            return query @ keys.transpose(-2, -1)  # (B, L, S)
        if self.score == "general":
            return (query @ self.W_a.weight) @ keys.transpose(-2, -1)  # (B, L, S)
        D = query.size(-1)
        per_query = query @ self.W_a.weight[:, :D].T  # (B, L, A)
        per_key = keys @ self.W_a.weight[:, D:].T  # (B, S, A)
        return torch.tanh(per_query.unsqueeze(-2) + per_key.unsqueeze(-3)) @ self.v_a  # (B, L, S)

    def attention_weights(self, query, keys, allowed):
        allowed = None if allowed is None else allowed.unsqueeze(-2)  # (B, 1, S)
        return _softmax_where_allowed(self.scores(query, keys), allowed)  # (B, L, S)

    def forward(self, query, keys, allowed):
        a = self.attention_weights(query, keys, allowed)  # (B, L, S)
        return torch.tanh(self.W_c(torch.cat([a @ keys, query], dim=-1)))  # (B, L, D)


class Luong(_WordTranslator):
    """Chapter 3's model: chapter 2's encoder, a GRU decoder whose current state h_t asks, and
    Luong's attention with the `score` "dot", "general" or "concat" (no input feeding).

    Submodules (as chapter 3's ``Luong``): ``encoder.embedding`` (V_src, 64), ``encoder.gru``
    bidirectional GRU 64 -> 2 x 64, ``init`` 64 -> 128, ``embedding`` (V_tgt, 64), ``gru`` GRU
    64 -> 128 (64 + 128 -> 128 with input feeding), ``attention.W_a`` (general: 128 -> 128; concat:
    256 -> 32, with ``attention.v_a`` (32,)), ``attention.W_c`` 256 -> 128, ``out`` 128 -> V_tgt.
    forward(src (B, S), lengths (B,), tgt_in (B, L), need_weights=False)
        -> (logits (B, L, V), weights (B, L, S) or None), with teacher forcing.
    greedy(src, lengths, steps) -> (ids (B, steps), weights (B, steps, S)).
    """

    def __init__(
        self, *, score, input_feeding=False, embed_dim=64, enc_dim=64, hidden_dim=128, attn_dim=32
    ):
        super().__init__()
        self.encoder = _BiEncoder(
            vocab_size=len(SOURCE_VOCAB),
            embed_dim=embed_dim,
            hidden_dim=enc_dim,
            embedding_name="embedding",
        )
        self.init = nn.Linear(enc_dim, hidden_dim)
        self.embedding = nn.Embedding(len(TARGET_VOCAB), embed_dim, padding_idx=PAD)
        self.input_feeding = input_feeding
        self.gru = nn.GRU(
            embed_dim + (hidden_dim if input_feeding else 0), hidden_dim, batch_first=True
        )
        self.attention = _LuongAttention(hidden_size=hidden_dim, score=score, attn_dim=attn_dim)
        self.out = nn.Linear(hidden_dim, len(TARGET_VOCAB))

    def encode(self, src, lengths):
        keys, allowed, back_first = self.encoder(src, lengths)  # (B, S, D), (B, S), (B, D/2)
        return keys, allowed, torch.tanh(self.init(back_first)).unsqueeze(0)  # h_0: (1, B, D)

    def step(self, y_prev, h, h_tilde, keys, allowed, need_weights=False):
        """One word: (logits (B, V), h (1, B, D), h̃ (B, D), weights (B, S) or None)."""
        x = self.embedding(y_prev).unsqueeze(1)  # (B, 1, E)
        if self.input_feeding:
            x = torch.cat([x, h_tilde.unsqueeze(1)], dim=-1)  # (B, 1, E + D)
        state, h = self.gru(x, h)  # (B, 1, D)
        h_tilde = self.attention(state, keys, allowed).squeeze(1)  # (B, D)
        weights = (
            self.attention.attention_weights(state, keys, allowed).squeeze(1)
            if need_weights
            else None
        )
        return self.out(h_tilde), h, h_tilde, weights

    def forward(self, src, lengths, tgt_in, need_weights=False):
        keys, allowed, h = self.encode(src, lengths)
        if not self.input_feeding:
            states, _ = self.gru(self.embedding(tgt_in), h)  # (B, L, D): every h_t at once
            logits = self.out(self.attention(states, keys, allowed))  # (B, L, V)
            weights = (
                self.attention.attention_weights(states, keys, allowed) if need_weights else None
            )
            return logits, weights
        h_tilde = keys.new_zeros(keys.size(0), keys.size(-1))  # (B, D): h̃_0 = 0
        logits, weights = [], []
        for y_prev in tgt_in.unbind(dim=1):
            out, h, h_tilde, w = self.step(y_prev, h, h_tilde, keys, allowed, need_weights)
            logits.append(out)
            weights.append(w)
        return torch.stack(logits, 1), (torch.stack(weights, 1) if need_weights else None)

    @torch.no_grad()
    def greedy(self, src, lengths, steps):
        keys, allowed, h = self.encode(src, lengths)
        h_tilde = keys.new_zeros(keys.size(0), keys.size(-1))  # (B, D)
        y = torch.full((src.size(0),), SOS, device=src.device)  # (B,)
        words, weights = [], []
        for _ in range(steps):
            logits, h, h_tilde, w = self.step(y, h, h_tilde, keys, allowed, need_weights=True)
            y = logits.argmax(dim=-1)  # (B,)
            words.append(y)
            weights.append(w)
        return torch.stack(words, 1), torch.stack(weights, 1)  # (B, steps), (B, steps, S)


# --------------------------------------------------------------------------------------------
# The capstone: the Transformer, over subwords
# --------------------------------------------------------------------------------------------


def _sinusoids(n, width, *, like):
    """The sinusoidal positions of Vaswani et al., (n, width), on `like`'s device and dtype:
    column j is sin (j even) or cos (j odd) of p / 10000^(2⌊j/2⌋ / width)."""
    column = torch.arange(width, dtype=torch.float64, device=like.device)  # (E,)
    frequency = 10000.0 ** (-2 * (column // 2) / width)  # (E,)
    angle = torch.outer(torch.arange(n, dtype=torch.float64, device=like.device), frequency)
    return torch.where(column % 2 == 0, angle.sin(), angle.cos()).to(like.dtype)  # (n, E)


class _MultiHeadAttention(nn.Module):
    """Chapter 5's layer: four linear maps, H heads of width D = E / H, masks True = allowed.

    forward(query (B, L, E), key_value (B, S, E), allowed broadcastable to (B, H, L, S) or None,
    cache=None) -> (B, L, E); the weights (B, H, L, S) of the last call stay in ``.weights`` when
    ``keep_weights`` is set. cache: a dict that holds this layer's keys and values (B, H, S, D):
    with ``static`` (cross-attention) they are computed on the first call and reused; otherwise
    (self-attention while decoding) the new positions' keys and values are appended.
    """

    def __init__(self, *, embed_dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.keep_weights, self.weights = False, None

    def _heads(self, x):
        B, n, E = x.shape
        return x.view(B, n, self.num_heads, E // self.num_heads).transpose(1, 2)  # (B, H, n, D)

    def forward(self, query, key_value, allowed=None, cache=None, static=False):
        q = self._heads(self.q_proj(query))  # (B, H, L, D)
        if cache is not None and static and "k" in cache:
            k, v = cache["k"], cache["v"]  # (B, H, S, D)
        else:
            k = self._heads(self.k_proj(key_value))  # (B, H, S_new, D)
            v = self._heads(self.v_proj(key_value))  # (B, H, S_new, D)
            if cache is not None:
                if not static and "k" in cache:
                    k = torch.cat([cache["k"], k], dim=2)  # (B, H, S, D)
                    v = torch.cat([cache["v"], v], dim=2)  # (B, H, S, D)
                cache["k"], cache["v"] = k, v
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, L, S)
        weights = _softmax_where_allowed(scores, allowed)  # (B, H, L, S)
        if self.keep_weights:
            self.weights = weights.detach()
        heads = weights @ v  # (B, H, L, D)
        B, H, L, D = heads.shape
        return self.out_proj(heads.transpose(1, 2).reshape(B, L, H * D))  # (B, L, E)


class _FeedForward(nn.Module):
    """Chapter 6's position-wise network: up E -> F, ReLU, down F -> E."""

    def __init__(self, *, d_model, dim_feedforward):
        super().__init__()
        self.up = nn.Linear(d_model, dim_feedforward)
        self.down = nn.Linear(dim_feedforward, d_model)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))  # (..., E)


class _AddNorm(nn.Module):
    """Chapter 6's post-LN Add & Norm: LN(x + dropout(sublayer output))."""

    def __init__(self, *, d_model, dropout):
        super().__init__()
        self.ln = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, sublayer_out):
        return self.ln(x + self.drop(sublayer_out))  # (..., E)


class _EncoderBlock(nn.Module):
    def __init__(self, *, d_model, nhead, dim_feedforward, dropout):
        super().__init__()
        self.self_attn = _MultiHeadAttention(embed_dim=d_model, num_heads=nhead)
        self.add_norm_attn = _AddNorm(d_model=d_model, dropout=dropout)
        self.feed_forward = _FeedForward(d_model=d_model, dim_feedforward=dim_feedforward)
        self.add_norm_ff = _AddNorm(d_model=d_model, dropout=dropout)

    def forward(self, x, allowed):
        x = self.add_norm_attn(x, self.self_attn(x, x, allowed))  # (B, S, E)
        return self.add_norm_ff(x, self.feed_forward(x))  # (B, S, E)


class _DecoderBlock(nn.Module):
    def __init__(self, *, d_model, nhead, dim_feedforward, dropout):
        super().__init__()
        self.self_attn = _MultiHeadAttention(embed_dim=d_model, num_heads=nhead)
        self.add_norm_self = _AddNorm(d_model=d_model, dropout=dropout)
        self.cross_attn = _MultiHeadAttention(embed_dim=d_model, num_heads=nhead)
        self.add_norm_cross = _AddNorm(d_model=d_model, dropout=dropout)
        self.feed_forward = _FeedForward(d_model=d_model, dim_feedforward=dim_feedforward)
        self.add_norm_ff = _AddNorm(d_model=d_model, dropout=dropout)

    def forward(self, x, memory, self_allowed, cross_allowed, cache=None):
        self_cache = None if cache is None else cache.setdefault("self", {})
        cross_cache = None if cache is None else cache.setdefault("cross", {})
        x = self.add_norm_self(x, self.self_attn(x, x, self_allowed, self_cache))  # (B, L, E)
        x = self.add_norm_cross(
            x, self.cross_attn(x, memory, cross_allowed, cross_cache, static=True)
        )  # (B, L, E)
        return self.add_norm_ff(x, self.feed_forward(x))  # (B, L, E)


class Transformer(nn.Module):
    """The encoder–decoder Transformer of Vaswani et al. (2017), post-LN, over one subword
    vocabulary shared by both languages (``tokenizer``, a Hugging Face ``tokenizers.Tokenizer``
    whose ids 0, 1, 2 are ``<pad>``, ``<sos>``, ``<eos>``).

    Transformer(vocab_size=V, d_model=E, nhead=H, num_encoder_layers, num_decoder_layers,
    dim_feedforward=F, dropout). The submodules, i.e. the state dict's names:

    - ``embedding`` nn.Embedding (V, E): the source's, the target's and (tied) the output
      projection's weight; its output is multiplied by √E. No bias on the output.
    - no positional parameters: sinusoidal positions (chapter 7) are added after the scaling, then
      dropout; nothing positional is in the state dict.
    - ``encoder.{i}`` for i < num_encoder_layers: ``self_attn.{q_proj,k_proj,v_proj,out_proj}``
      (nn.Linear E -> E with bias each, chapter 5), ``add_norm_attn.ln`` (nn.LayerNorm E),
      ``feed_forward.up`` (E -> F), ``feed_forward.down`` (F -> E), ``add_norm_ff.ln``.
    - ``decoder.{i}``: ``self_attn.*``, ``add_norm_self.ln``, ``cross_attn.*`` (queries from the
      decoder, keys and values from the encoder's output), ``add_norm_cross.ln``,
      ``feed_forward.up``/``down``, ``add_norm_ff.ln``.

    Each sublayer is post-LN, LN(x + dropout(sublayer(x))), as in the paper and chapter 6; the
    feed-forward is ReLU. Dropout is the paper's: on each sublayer's output before the residual
    sum, and on the sum of embeddings and positions; none on the attention weights or inside the
    feed-forward (``nn.Transformer`` has both: with dropout 0 the two agree). There is no final
    LayerNorm after either stack (the paper has none; ``nn.Transformer`` adds one: set its
    ``encoder.norm`` and ``decoder.norm`` to None to compare). The map to ``nn.Transformer``'s
    names: its ``self_attn.in_proj_weight`` is q_proj, k_proj and v_proj's weights stacked (and
    the bias likewise), ``multihead_attn`` is ``cross_attn``, ``linear1``/``linear2`` are
    ``feed_forward.up``/``down``, ``norm1``/``norm2``/``norm3`` are ``add_norm_attn.ln`` and
    ``add_norm_ff.ln`` (encoder) or ``add_norm_self.ln``, ``add_norm_cross.ln`` and
    ``add_norm_ff.ln`` (decoder). Set ``decoder[i].cross_attn.keep_weights = True`` to keep the
    last call's attention weights (B, H, L, S) in ``decoder[i].cross_attn.weights``.

    Masks are True where attention is allowed (the opposite of ``nn.Transformer``'s
    ``*_key_padding_mask``): the source's padding in the encoder and the cross-attention, the
    target's padding and the causal mask in the decoder's self-attention.
    forward(src (B, S), tgt_in (B, L)) -> logits (B, L, V), padding = id 0.
    greedy(src, steps, use_cache=True) -> ids (B, ≤ steps), <pad> after each row's <eos>; with
    the key–value cache the ids are those of decoding without it.
    """

    def __init__(
        self,
        *,
        vocab_size,
        d_model=64,
        nhead=4,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=256,
        dropout=0.1,
    ):
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embedding.weight, std=d_model**-0.5)  # √E · embedding: unit scale
        layer = {
            "d_model": d_model,
            "nhead": nhead,
            "dim_feedforward": dim_feedforward,
            "dropout": dropout,
        }
        self.encoder = nn.ModuleList(_EncoderBlock(**layer) for _ in range(num_encoder_layers))
        self.decoder = nn.ModuleList(_DecoderBlock(**layer) for _ in range(num_decoder_layers))
        self.drop = nn.Dropout(dropout)
        self.tokenizer = None  # set by attention_data.checkpoints.load, or by the caller

    def _embed(self, ids, start=0):
        x = self.embedding(ids) * math.sqrt(self.d_model)  # (B, n, E)
        positions = _sinusoids(start + ids.size(1), self.d_model, like=x)[start:]  # (n, E)
        return self.drop(x + positions)  # (B, n, E)

    def encode(self, src):
        """src (B, S) -> memory (B, S, E), allowed (B, 1, 1, S): True at real tokens."""
        allowed = src.ne(PAD)[:, None, None, :]  # (B, 1, 1, S)
        x = self._embed(src)  # (B, S, E)
        for block in self.encoder:
            x = block(x, allowed)  # (B, S, E)
        return x, allowed

    def decode(self, tgt_in, memory, src_allowed, cache=None, start=0):
        """tgt_in (B, L) at positions start.. -> logits (B, L, V). Without a cache the causal
        mask and the target's padding apply; with one, tgt_in is the newest token(s) and the
        cache holds the earlier ones' keys and values."""
        L = tgt_in.size(1)
        if cache is None:
            causal = torch.ones(L, L, dtype=torch.bool, device=tgt_in.device).tril()  # (L, L)
            self_allowed = causal & tgt_in.ne(PAD)[:, None, None, :]  # (B, 1, L, L)
        else:
            self_allowed = None  # one new position sees every cached one, itself included
        x = self._embed(tgt_in, start)  # (B, L, E)
        for i, block in enumerate(self.decoder):
            layer_cache = None if cache is None else cache.setdefault(i, {})
            x = block(x, memory, self_allowed, src_allowed, layer_cache)  # (B, L, E)
        return x @ self.embedding.weight.T  # (B, L, V): tied output projection

    def forward(self, src, tgt_in):
        memory, allowed = self.encode(src)  # (B, S, E), (B, 1, 1, S)
        return self.decode(tgt_in, memory, allowed)  # (B, L, V)

    @torch.no_grad()
    def greedy(self, src, steps, use_cache=True):
        memory, allowed = self.encode(src)  # (B, S, E), (B, 1, 1, S)
        B = src.size(0)
        written = torch.full((B, 1), SOS, device=src.device)  # (B, 1): <sos>, then the words
        done = torch.zeros(B, dtype=torch.bool, device=src.device)  # (B,)
        cache = {} if use_cache else None
        for t in range(steps):
            if use_cache:
                logits = self.decode(written[:, -1:], memory, allowed, cache, start=t)  # (B, 1, V)
            else:
                logits = self.decode(written, memory, allowed)  # (B, t + 1, V)
            word = logits[:, -1].argmax(-1)  # (B,)
            written = torch.cat([written, torch.where(done, PAD, word)[:, None]], 1)  # (B, t + 2)
            done = done | (word == EOS)
            if done.all():
                break
        return written[:, 1:]  # (B, steps)

    @torch.no_grad()
    def translate(self, sentences: Sequence[Sequence[str]], batch_size: int = 250) -> list:
        """Greedy translations (lists of target words) of source sentences (lists of words);
        needs ``self.tokenizer``. At most 3S' + 10 subwords for the longest S' of a batch."""
        if self.tokenizer is None:
            raise ValueError(
                "this Transformer has no tokenizer: set model.tokenizer (a "
                "tokenizers.Tokenizer), as attention_data.checkpoints.load does"
            )
        device = self.embedding.weight.device
        encoded = [e.ids for e in self.tokenizer.encode_batch([" ".join(s) for s in sentences])]
        order = sorted(range(len(sentences)), key=lambda i: len(encoded[i]))
        out: list = [None] * len(sentences)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            src = nn.utils.rnn.pad_sequence(
                [torch.tensor(encoded[i]) for i in rows], batch_first=True, padding_value=PAD
            )  # (B, S')
            ids = self.greedy(src.to(device), 3 * src.size(1) + 10).cpu()  # (B, steps)
            for i, row in zip(rows, ids.tolist(), strict=True):
                row = row[: row.index(EOS)] if EOS in row else row
                out[i] = self.tokenizer.decode(row, skip_special_tokens=True).split()
        return out


# --------------------------------------------------------------------------------------------
# The models the training script knows, and the fingerprint of their code
# --------------------------------------------------------------------------------------------

#: name -> (class, keyword arguments): what ``python -m attention_data.train NAME`` builds.
MODELS = {
    "seq2seq": (Seq2Seq, {}),
    "cho": (Cho, {}),
    "bahdanau": (Bahdanau, {}),
    "luong_dot": (Luong, {"score": "dot"}),
    "luong_general": (Luong, {"score": "general"}),
    "luong_concat": (Luong, {"score": "concat"}),
    "transformer": (
        Transformer,
        {
            "d_model": 64,
            "nhead": 4,
            "num_encoder_layers": 2,
            "num_decoder_layers": 2,
            "dim_feedforward": 256,
            "dropout": 0.1,
        },
    ),
}


def build(name: str, **overrides) -> nn.Module:
    """A fresh (untrained) model of one of :data:`MODELS`; the Transformer's `vocab_size` must
    be given. Example: build("luong_dot") -> Luong(score="dot")."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; the models are {', '.join(MODELS)}")
    cls, kwargs = MODELS[name]
    return cls(**{**kwargs, **overrides})


def _names_used(source: str) -> set:
    """The names a piece of source reads and does not bind itself (arguments, assignments)."""
    nodes = list(ast.walk(ast.parse(textwrap.dedent(source))))
    bound = {n.arg for n in nodes if isinstance(n, ast.arg)}
    bound |= {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    read = {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return read - bound


def _dependencies(obj, seen: dict) -> None:
    """Add to `seen` the source of obj and of every class or function of attention_data that it
    reads, recursively, base classes included."""
    key = f"{obj.__module__}.{obj.__qualname__}"
    if key in seen:
        return
    seen[key] = inspect.getsource(obj)
    namespace = vars(sys.modules[obj.__module__])
    deps = list(getattr(obj, "__mro__", ())[1:])
    deps += [namespace.get(name) for name in sorted(_names_used(seen[key]))]
    for dep in deps:
        ours = getattr(dep, "__module__", None) or ""
        if (inspect.isclass(dep) or inspect.isfunction(dep)) and ours.startswith("attention_data"):
            _dependencies(dep, seen)


def code_hash(name: str) -> str:
    """SHA-256 of what model `name` is made of: the source of its class and of every class and
    function of attention_data it uses, its keyword arguments, and the vocabularies and special
    ids it reads. A change to any of them changes the hash (and so retires its checkpoint)."""
    cls, kwargs = MODELS[name]
    seen: dict = {}
    _dependencies(cls, seen)
    digest = hashlib.sha256()
    for key in sorted(seen):
        digest.update(f"{key}\n{seen[key]}\n".encode())
    digest.update(repr(sorted(kwargs.items())).encode())
    digest.update(repr((SOURCE_VOCAB.itos, TARGET_VOCAB.itos, PAD, SOS, EOS)).encode())
    return digest.hexdigest()
