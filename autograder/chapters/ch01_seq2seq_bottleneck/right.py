"""Correct answers for chapter 1, as unlike the reference as the instructions allow.

Each variant was written from the released notebook's instructions alone (and the chapter's page),
the way a student might: another algorithm (each sentence encoded alone, the batch sorted by hand,
the GRU stepped one position at a time; greedy decoding one sentence at a time, or with Python
lists), optional extra arguments, helper methods and attributes, float64 inside. The contract test
requires every one of them to pass every check of its name, so that a check stricter than its
instructions fails ``make test``; it also grades a notebook made of the *last* variant of each name
through the real grader, so the last one is self-contained: the imports below, the earlier parts by
their global names (``Encoder``, ``Decoder``), nothing else of this module.

``RIGHT`` maps the name of the graded class or function to {variant: implementation}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .reference import Decoder, Encoder

PAD_ID, SOS_ID, EOS_ID = 0, 1, 2

# --- Encoder ----------------------------------------------------------------------------------


class EncoderOneSentenceAtATime(nn.Module):
    """No packing at all: each sentence runs through the GRU alone, cut to its own length."""

    def __init__(self, vocab_size, embed_dim, hidden_dim, pad_id=PAD_ID):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.rnn = nn.GRU(embed_dim, hidden_dim, batch_first=True)

    def forward(self, src, lengths):
        B, S = src.shape
        outputs = []
        contexts = []
        for b in range(B):
            n = int(lengths[b])
            out, h = self.rnn(self.embedding(src[b : b + 1, :n]))  # (1, n, Eh), (1, 1, Eh)
            pad = out.new_zeros(1, S - n, out.size(-1))  # (1, S - n, Eh)
            outputs.append(torch.cat([out, pad], dim=1))  # (1, S, Eh)
            contexts.append(h[0])  # (1, Eh)
        return torch.cat(outputs, dim=0), torch.cat(contexts, dim=0)  # (B, S, Eh), (B, Eh)


class EncoderSortsItself(nn.Module):
    """Sorts the batch by length, packs with enforce_sorted=True, and puts the rows back."""

    def __init__(self, vocab_size, embed_dim, hidden_dim, pad_id=PAD_ID):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.rnn = nn.GRU(embed_dim, hidden_dim, batch_first=True)
        self.hidden_dim = hidden_dim

    def forward(self, src, lengths):
        lengths = torch.as_tensor(lengths).to("cpu", torch.int64)
        sorted_lengths, order = torch.sort(lengths, descending=True)
        back = torch.argsort(order)  # the inverse permutation
        embedded = self.embedding(src[order.to(src.device)])  # (B, S, E), longest first
        packed = pack_padded_sequence(embedded, sorted_lengths, batch_first=True)
        packed_out, h_n = self.rnn(packed)  # h_n (1, B, Eh)
        out, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=src.size(1))
        back = back.to(src.device)
        return out[back], h_n[0][back]  # (B, S, Eh), (B, Eh)


class EncoderMaskedSteps(nn.Module):
    """Steps the GRU one position at a time and keeps a row's state where it has only padding.

    An extra attribute and a helper method, float64 for the mask arithmetic.
    """

    def __init__(self, vocab_size, embed_dim, hidden_dim, pad_id=PAD_ID):
        super().__init__()
        self.pad_id = pad_id
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.rnn = nn.GRU(embed_dim, hidden_dim, batch_first=True)

    def real_positions(self, lengths, S, device):
        """(B, S) float64, 1.0 at the real tokens and 0.0 at the padding."""
        positions = torch.arange(S, device=device)
        return (positions[None, :] < lengths.to(device)[:, None]).double()

    def forward(self, src, lengths):
        B, S = src.shape
        x = self.embedding(src)  # (B, S, E)
        keep = self.real_positions(lengths, S, src.device).to(x.dtype)  # (B, S)
        h = x.new_zeros(1, B, self.rnn.hidden_size)  # (1, B, Eh)
        outputs = []
        for t in range(S):
            out, h_new = self.rnn(x[:, t : t + 1], h)  # (B, 1, Eh), (1, B, Eh)
            k = keep[:, t][None, :, None]  # (1, B, 1)
            h = k * h_new + (1 - k) * h  # a padded position leaves the state as it was
            outputs.append(out * keep[:, t, None, None])  # (B, 1, Eh), zero at the padding
        return torch.cat(outputs, dim=1), h[0]  # (B, S, Eh), (B, Eh)


# --- Decoder ----------------------------------------------------------------------------------


class DecoderStepByStep(nn.Module):
    """Runs the GRU one token at a time, passing the state on, and reads each step out."""

    def __init__(self, vocab_size, embed_dim, hidden_dim, pad_id=PAD_ID):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.rnn = nn.GRU(embed_dim, hidden_dim, batch_first=True)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def forward(self, tokens, hidden):
        h = hidden.unsqueeze(0)  # (1, B, Eh)
        logits = []
        for t in range(tokens.size(1)):
            out, h = self.rnn(self.embedding(tokens[:, t : t + 1]), h)  # (B, 1, Eh)
            logits.append(self.out(out))  # (B, 1, V)
        return torch.cat(logits, dim=1), h.squeeze(0)  # (B, L, V), (B, Eh)


class DecoderLastOutputIsTheState(nn.Module):
    """For a one-layer GRU the last output is the last state; F.linear with the layer's weights."""

    def __init__(self, vocab_size, embed_dim, hidden_dim, pad_id=PAD_ID):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.rnn = nn.GRU(embed_dim, hidden_dim, batch_first=True)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def forward(self, tokens, hidden):
        outputs, _ = self.rnn(self.embedding(tokens), hidden[None].contiguous())  # (B, L, Eh)
        logits = F.linear(outputs, self.out.weight, self.out.bias)  # (B, L, V)
        return logits, outputs[:, -1]  # (B, L, V), (B, Eh)


class DecoderWithExtras(nn.Module):
    """An optional extra argument, a helper method and extra attributes."""

    def __init__(self, vocab_size, embed_dim, hidden_dim, pad_id=PAD_ID):
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.rnn = nn.GRU(embed_dim, hidden_dim, batch_first=True)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def embed(self, tokens):
        return self.embedding(tokens)  # (B, L, E)

    def forward(self, tokens, hidden, return_states=False):
        states, h_n = self.rnn(self.embed(tokens), hidden.reshape(1, *hidden.shape))
        logits = self.out(states)  # (B, L, V)
        if return_states:
            return logits, h_n[0], states
        return logits, h_n[0]  # (B, L, V), (B, Eh)


# --- Seq2Seq ------------------------------------------------------------------------------------


class Seq2SeqRowByRow(nn.Module):
    """Greedy decoding of one sentence at a time, in plain Python, and free running step by step."""

    def __init__(self, src_vocab_size, tgt_vocab_size, embed_dim, hidden_dim,
                 pad_id=PAD_ID, sos_id=SOS_ID, eos_id=EOS_ID):  # fmt: skip
        super().__init__()
        self.encoder = Encoder(src_vocab_size, embed_dim, hidden_dim, pad_id)
        self.decoder = Decoder(tgt_vocab_size, embed_dim, hidden_dim, pad_id)
        self.pad_id, self.sos_id, self.eos_id = pad_id, sos_id, eos_id

    def forward(self, src, lengths, tgt_in, teacher_forcing=True):
        _, context = self.encoder(src, lengths)
        if teacher_forcing:
            logits, _ = self.decoder(tgt_in, context)
            return logits
        token, hidden, steps = tgt_in[:, 0:1], context, []
        for _ in range(tgt_in.shape[1]):
            logits, hidden = self.decoder(token, hidden)
            steps.append(logits[:, 0])  # (B, V)
            token = logits[:, 0].argmax(dim=-1, keepdim=True)  # (B, 1)
        return torch.stack(steps, dim=1)  # (B, L, V)

    @torch.no_grad()
    def greedy_decode(self, src, lengths, max_len):
        rows = []
        for b in range(src.size(0)):
            _, hidden = self.encoder(src[b : b + 1], lengths[b : b + 1])  # (1, Eh)
            token, words = self.sos_id, []
            while len(words) < max_len:
                step = torch.tensor([[token]], device=src.device)  # (1, 1)
                logits, hidden = self.decoder(step, hidden)
                token = int(logits[0, -1].argmax())
                words.append(token)
                if token == self.eos_id:
                    break
            rows.append(words)
        width = max(len(r) for r in rows)
        padded = [r + [self.pad_id] * (width - len(r)) for r in rows]
        return torch.tensor(padded, dtype=torch.long, device=src.device)  # (B, L')


class Seq2SeqPythonLists(nn.Module):
    """Teacher forcing one step at a time, and greedy decoding that keeps Python lists of which
    rows are done, in inference mode."""

    def __init__(self, src_vocab_size, tgt_vocab_size, embed_dim, hidden_dim,
                 pad_id=PAD_ID, sos_id=SOS_ID, eos_id=EOS_ID):  # fmt: skip
        super().__init__()
        self.encoder = Encoder(src_vocab_size, embed_dim, hidden_dim, pad_id)
        self.decoder = Decoder(tgt_vocab_size, embed_dim, hidden_dim, pad_id)
        self.ids = {"pad": pad_id, "sos": sos_id, "eos": eos_id}

    def forward(self, src, lengths, tgt_in, teacher_forcing=True):
        hidden = self.encoder(src, lengths)[1]  # (B, Eh)
        token = tgt_in[:, :1]  # (B, 1)
        steps = []
        for t in range(tgt_in.size(1)):
            if teacher_forcing:
                token = tgt_in[:, t : t + 1]
            logits, hidden = self.decoder(token, hidden)  # (B, 1, V)
            steps.append(logits)
            token = logits.argmax(-1)
        return torch.cat(steps, dim=1)  # (B, L, V)

    @torch.inference_mode()
    def greedy_decode(self, src, lengths, max_len):
        hidden = self.encoder(src, lengths)[1]
        B = src.size(0)
        token = torch.full((B, 1), self.ids["sos"], dtype=torch.long, device=src.device)
        done = [False] * B
        columns = []
        for _ in range(max_len):
            logits, hidden = self.decoder(token, hidden)
            token = logits.argmax(-1)  # (B, 1)
            column = token[:, 0].tolist()
            column = [self.ids["pad"] if done[b] else column[b] for b in range(B)]
            done = [done[b] or column[b] == self.ids["eos"] for b in range(B)]
            columns.append(column)
            if all(done):
                break
        return torch.tensor(columns, dtype=torch.long, device=src.device).T.contiguous()


class Seq2SeqWithExtras(nn.Module):
    """A helper method, optional extra arguments, and torch.where for the finished rows."""

    def __init__(self, src_vocab_size, tgt_vocab_size, embed_dim, hidden_dim,
                 pad_id=PAD_ID, sos_id=SOS_ID, eos_id=EOS_ID, name="seq2seq"):  # fmt: skip
        super().__init__()
        self.name = name
        self.encoder = Encoder(src_vocab_size, embed_dim, hidden_dim, pad_id)
        self.decoder = Decoder(tgt_vocab_size, embed_dim, hidden_dim, pad_id)
        self.pad_id = pad_id
        self.sos_id = sos_id
        self.eos_id = eos_id

    def encode(self, src, lengths):
        return self.encoder(src, lengths)[1]  # (B, Eh): the context vector

    def forward(self, src, lengths, tgt_in, teacher_forcing=True):
        context = self.encode(src, lengths)
        if teacher_forcing:
            return self.decoder(tgt_in, context)[0]  # (B, L, V)
        token, hidden, out = tgt_in[:, :1], context, []
        for _ in range(tgt_in.size(1)):
            logits, hidden = self.decoder(token, hidden)  # (B, 1, V)
            out.append(logits)
            token = torch.argmax(logits, dim=2)  # (B, 1)
        return torch.cat(out, dim=1)

    def greedy_decode(self, src, lengths, max_len, return_steps=False):
        with torch.no_grad():
            hidden = self.encode(src, lengths)
            token = src.new_full((src.size(0), 1), self.sos_id)  # (B, 1)
            finished = src.new_zeros(src.size(0), dtype=torch.bool)  # (B,)
            out = []
            steps = 0
            while steps < max_len and not bool(finished.all()):
                logits, hidden = self.decoder(token, hidden)
                token = torch.argmax(logits, dim=2)  # (B, 1)
                out.append(torch.where(finished.unsqueeze(1), self.pad_id, token))
                finished = finished | token.squeeze(1).eq(self.eos_id)
                steps += 1
            ids = torch.cat(out, dim=1).long()  # (B, L')
        return (ids, steps) if return_steps else ids


# --- sequence_accuracy --------------------------------------------------------------------------


def accuracy_python_loops(predictions, targets, eos_id=EOS_ID, pad_id=PAD_ID):
    """Row by row, with Python lists."""

    def sentence(row):
        if eos_id in row:
            return row[: row.index(eos_id) + 1]
        return [t for t in row if t != pad_id]

    exact, accuracy = [], []
    for p_row, t_row in zip(predictions.tolist(), targets.tolist(), strict=True):
        p, t = sentence(p_row), sentence(t_row)
        exact.append(p == t)
        hits = sum(1 for i, w in enumerate(t) if i < len(p) and p[i] == w)
        accuracy.append(hits / len(t) if t else 0.0)
    device = targets.device
    return (
        torch.tensor(exact, dtype=torch.bool, device=device),
        torch.tensor(accuracy, dtype=torch.float32, device=device),
    )


def accuracy_first_eos_by_argmax(predictions, targets, eos_id=EOS_ID, pad_id=PAD_ID):
    """Finds each row's first <eos> with argmax, compares in float64 and converts at the end."""

    def sentence_length(x):  # (B,): tokens up to and including the first <eos>
        is_eos = x == eos_id
        first = is_eos.int().argmax(dim=1) + 1
        no_eos = (x != pad_id).sum(dim=1)
        return torch.where(is_eos.any(dim=1), first, no_eos)

    n_pred, n_tgt = sentence_length(predictions), sentence_length(targets)  # (B,), (B,)
    width = max(predictions.size(1), targets.size(1))
    pred = F.pad(predictions, (0, width - predictions.size(1)), value=pad_id)  # (B, W)
    tgt = F.pad(targets, (0, width - targets.size(1)), value=pad_id)  # (B, W)
    position = torch.arange(width, device=targets.device)  # (W,)
    in_both = (position < n_tgt[:, None]) & (position < n_pred[:, None])  # (B, W)
    hits = ((pred == tgt) & in_both).double().sum(dim=1)  # (B,)
    exact = (n_pred == n_tgt) & (hits == n_tgt.double())
    return exact, (hits / n_tgt.double()).float()


def accuracy_with_extras(predictions, targets, eos_id=EOS_ID, pad_id=PAD_ID, return_lengths=False):
    """cumsum over <eos> marks what follows it; an optional extra return value."""
    B = targets.size(0)
    width = max(predictions.size(1), targets.size(1))
    pred = torch.full((B, width), pad_id, dtype=torch.long, device=targets.device)
    tgt = torch.full((B, width), pad_id, dtype=torch.long, device=targets.device)
    pred[:, : predictions.size(1)] = predictions.to(targets.device)
    tgt[:, : targets.size(1)] = targets
    seen_pred = torch.cumsum((pred == eos_id).long(), dim=1)  # (B, W)
    seen_tgt = torch.cumsum((tgt == eos_id).long(), dim=1)  # (B, W)
    # A position belongs to the sentence until the first <eos>, which is the last that does.
    pred_in = ((seen_pred == 0) | ((seen_pred == 1) & (pred == eos_id))) & (pred != pad_id)
    tgt_in = ((seen_tgt == 0) | ((seen_tgt == 1) & (tgt == eos_id))) & (tgt != pad_id)
    n = tgt_in.sum(dim=1)  # (B,)
    right = ((pred == tgt) & tgt_in & pred_in).sum(dim=1)  # (B,)
    exact = torch.all(pred_in == tgt_in, dim=1) & (right == n)
    accuracy = right.to(torch.float32) / n.to(torch.float32)
    return (exact, accuracy, n) if return_lengths else (exact, accuracy)


RIGHT = {
    "Encoder": {
        c.__name__: c for c in (EncoderOneSentenceAtATime, EncoderSortsItself, EncoderMaskedSteps)
    },
    "Decoder": {
        c.__name__: c for c in (DecoderStepByStep, DecoderLastOutputIsTheState, DecoderWithExtras)
    },
    "Seq2Seq": {c.__name__: c for c in (Seq2SeqRowByRow, Seq2SeqPythonLists, Seq2SeqWithExtras)},
    "sequence_accuracy": {
        f.__name__: f
        for f in (accuracy_python_loops, accuracy_first_eos_by_argmax, accuracy_with_extras)
    },
}
