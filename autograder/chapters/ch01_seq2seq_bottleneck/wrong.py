"""Known-wrong implementations for chapter 1: the mistakes the checks must catch.

Each entry is a plausible student mistake. The contract test runs every check on every entry and
requires its part's check to fail with a message that names a property, and every other part's
check to pass with the entry in place (one bug, one part). The wrong encoders and decoders keep the
interface of Parts 1 and 2 (what goes in and comes out, and its shape): Part 3 drives the student's
own modules, so a wrong value costs Part 1 or 2 only.

``WRONG`` maps the name of the graded class or function to {mistake: Mistake(implementation,
phrase)}: the phrase is what the failing check's message must say, the words that name the mistake
for the student.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from autograder.chapters import Mistake

from . import reference as ref

# --- Encoder ----------------------------------------------------------------------------------


class EncoderReadsThePadding(ref.Encoder):
    """No packing: the GRU reads the <pad> tokens, and the context is its state after them."""

    def forward(self, src, lengths):
        outputs, h_n = self.rnn(self.embedding(src))  # (B, S, Eh), (1, B, Eh)
        padded = (
            torch.arange(src.size(1), device=src.device)[None, :] >= lengths.to(src.device)[:, None]
        )  # (B, S)
        return outputs.masked_fill(padded[..., None], 0.0), h_n[0]


class EncoderLastColumn(ref.Encoder):
    """Packs, then takes the last column of the padded outputs as the context (zeros for every
    sentence shorter than S)."""

    def forward(self, src, lengths):
        outputs, _ = super().forward(src, lengths)  # (B, S, Eh)
        return outputs, outputs[:, -1]  # (B, Eh)


class EncoderMeanOfOutputs(ref.Encoder):
    """The average of the outputs (pads included) instead of the final state."""

    def forward(self, src, lengths):
        outputs, _ = super().forward(src, lengths)  # (B, S, Eh)
        return outputs, outputs.mean(dim=1)  # (B, Eh)


class EncoderSortedLengthsOnly(ref.Encoder):
    """pack_padded_sequence with enforce_sorted=True: only works when the lengths decrease."""

    def forward(self, src, lengths):
        packed = pack_padded_sequence(self.embedding(src), lengths.cpu(), batch_first=True)
        out, h_n = self.rnn(packed)
        outputs, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
        return outputs, h_n[0]


class EncoderNoTotalLength(ref.Encoder):
    """pad_packed_sequence without total_length: the outputs are only as wide as the longest
    sentence."""

    def forward(self, src, lengths):
        packed = pack_padded_sequence(
            self.embedding(src), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        out, h_n = self.rnn(packed)
        outputs, _ = pad_packed_sequence(out, batch_first=True)  # (B, max length, Eh)
        return outputs, h_n[0]


class EncoderNoPaddingIdx(ref.Encoder):
    """Forgets padding_idx: the <pad> embedding is a random, trainable vector."""

    def __init__(self, vocab_size, embed_dim, hidden_dim, pad_id=ref.PAD_ID):
        super().__init__(vocab_size, embed_dim, hidden_dim, pad_id)
        self.embedding = nn.Embedding(vocab_size, embed_dim)


# --- Decoder ----------------------------------------------------------------------------------


class DecoderIgnoresHidden(ref.Decoder):
    """Runs the GRU from zeros: the context never reaches the decoder."""

    def forward(self, tokens, hidden):
        outputs, h_n = self.rnn(self.embedding(tokens))  # (B, L, Eh), (1, B, Eh)
        return self.out(outputs), h_n[0]


class DecoderReturnsOldHidden(ref.Decoder):
    """Returns the hidden state it was given, so that step-by-step decoding never advances."""

    def forward(self, tokens, hidden):
        logits, _ = super().forward(tokens, hidden)
        return logits, hidden


class DecoderSoftmax(ref.Decoder):
    """Returns probabilities instead of logits."""

    def forward(self, tokens, hidden):
        logits, new_hidden = super().forward(tokens, hidden)
        return logits.softmax(dim=-1), new_hidden


class DecoderFirstStepHidden(ref.Decoder):
    """Returns the state after the first step instead of the last."""

    def forward(self, tokens, hidden):
        outputs, _ = self.rnn(self.embedding(tokens), hidden.unsqueeze(0))  # (B, L, Eh)
        return self.out(outputs), outputs[:, 0]


class DecoderNoPaddingIdx(ref.Decoder):
    """Forgets padding_idx."""

    def __init__(self, vocab_size, embed_dim, hidden_dim, pad_id=ref.PAD_ID):
        super().__init__(vocab_size, embed_dim, hidden_dim, pad_id)
        self.embedding = nn.Embedding(vocab_size, embed_dim)


class DecoderTanhReadout(ref.Decoder):
    """Squashes the logits with tanh: scores stuck in (-1, 1)."""

    def forward(self, tokens, hidden):
        logits, new_hidden = super().forward(tokens, hidden)
        return torch.tanh(logits), new_hidden


# --- Seq2Seq ------------------------------------------------------------------------------------


class Seq2SeqTeacherForcingAlways(ref.Seq2Seq):
    """Ignores teacher_forcing=False: teacher forcing at evaluation time."""

    def forward(self, src, lengths, tgt_in, teacher_forcing=True):
        return super().forward(src, lengths, tgt_in, teacher_forcing=True)


class Seq2SeqFeedsSos(ref.Seq2Seq):
    """Without teacher forcing, feeds <sos> at every step instead of its own prediction."""

    def forward(self, src, lengths, tgt_in, teacher_forcing=True):
        if teacher_forcing:
            return super().forward(src, lengths, tgt_in)
        _, context = self.encoder(src, lengths)
        return self.decoder(tgt_in[:, :1].expand_as(tgt_in), context)[0]


class Seq2SeqDetachedContext(ref.Seq2Seq):
    """Detaches the context: no gradient reaches the encoder, which never learns."""

    def forward(self, src, lengths, tgt_in, teacher_forcing=True):
        _, context = self.encoder(src, lengths)
        if teacher_forcing:
            return self.decoder(tgt_in, context.detach())[0]
        return super().forward(src, lengths, tgt_in, teacher_forcing=False)


class Seq2SeqNoEosStop(ref.Seq2Seq):
    """Greedy decoding that does not stop at <eos>: max_len steps, and words after <eos>."""

    @torch.no_grad()
    def greedy_decode(self, src, lengths, max_len):
        _, hidden = self.encoder(src, lengths)
        tokens = torch.full((src.size(0), 1), self.sos_id, dtype=torch.long, device=src.device)
        out = []
        for _ in range(max_len):
            logits, hidden = self.decoder(tokens, hidden)
            tokens = logits.argmax(dim=-1)
            out.append(tokens)
        return torch.cat(out, dim=1)


class Seq2SeqStopsAtFirstEos(ref.Seq2Seq):
    """Stops the whole batch as soon as one row has written <eos>."""

    @torch.no_grad()
    def greedy_decode(self, src, lengths, max_len):
        _, hidden = self.encoder(src, lengths)
        tokens = torch.full((src.size(0), 1), self.sos_id, dtype=torch.long, device=src.device)
        finished = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
        out = []
        for _ in range(max_len):
            logits, hidden = self.decoder(tokens, hidden)
            tokens = logits.argmax(dim=-1)
            out.append(tokens.masked_fill(finished[:, None], self.pad_id))
            finished |= tokens[:, 0] == self.eos_id
            if bool(finished.any()):
                break
        return torch.cat(out, dim=1)


class Seq2SeqKeepsSos(ref.Seq2Seq):
    """Returns the <sos> it started from as the first column."""

    def greedy_decode(self, src, lengths, max_len):
        out = super().greedy_decode(src, lengths, max_len)
        sos = torch.full_like(out[:, :1], self.sos_id)
        return torch.cat([sos, out], dim=1)[:, :max_len]


class Seq2SeqRestartsFromContext(ref.Seq2Seq):
    """Greedy decoding that starts every step from the context instead of the last state."""

    @torch.no_grad()
    def greedy_decode(self, src, lengths, max_len):
        _, context = self.encoder(src, lengths)
        tokens = torch.full((src.size(0), 1), self.sos_id, dtype=torch.long, device=src.device)
        finished = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
        out = []
        for _ in range(max_len):
            logits, _ = self.decoder(tokens, context)
            tokens = logits.argmax(dim=-1)
            out.append(tokens.masked_fill(finished[:, None], self.pad_id))
            finished |= tokens[:, 0] == self.eos_id
            if bool(finished.all()):
                break
        return torch.cat(out, dim=1)


# --- sequence_accuracy --------------------------------------------------------------------------


def _pad_to(x, width, pad_id):
    return torch.cat([x, x.new_full((x.size(0), width - x.size(1)), pad_id)], dim=1)


def accuracy_counts_after_eos(predictions, targets, eos_id=ref.EOS_ID, pad_id=ref.PAD_ID):
    """Compares the padded rows as they are: what follows a prediction's <eos> counts."""
    width = max(predictions.size(1), targets.size(1))
    pred, tgt = _pad_to(predictions, width, pad_id), _pad_to(targets, width, pad_id)
    real = tgt != pad_id
    hits = (pred == tgt) & real
    exact = (pred == tgt).all(dim=1)
    return exact, hits.sum(1).float() / real.sum(1).float()


def accuracy_prefix_is_exact(predictions, targets, eos_id=ref.EOS_ID, pad_id=ref.PAD_ID):
    """Calls a prediction exact when the words it wrote match, even if it stopped early."""
    exact, accuracy = ref.sequence_accuracy(predictions, targets, eos_id, pad_id)
    pred = predictions.masked_fill(predictions == eos_id, pad_id)
    width = max(pred.size(1), targets.size(1))
    pred, tgt = _pad_to(pred, width, pad_id), _pad_to(targets, width, pad_id)
    written = pred != pad_id
    prefix = ((pred == tgt) | ~written).all(dim=1)
    return exact | prefix, accuracy


def _sentence_length(x, eos_id, pad_id):
    """(B,): the tokens of each row up to and including its first <eos>, pads left out."""
    is_eos = (x == eos_id).long()
    return (((is_eos.cumsum(dim=1) - is_eos) == 0) & (x != pad_id)).sum(dim=1)


def accuracy_over_prediction_length(predictions, targets, eos_id=ref.EOS_ID, pad_id=ref.PAD_ID):
    """Divides the matches by the prediction's length instead of the target's."""
    exact, accuracy = ref.sequence_accuracy(predictions, targets, eos_id, pad_id)
    matches = accuracy * _sentence_length(targets, eos_id, pad_id).float()
    return exact, matches / _sentence_length(predictions, eos_id, pad_id).clamp(min=1).float()


def accuracy_ignores_eos(predictions, targets, eos_id=ref.EOS_ID, pad_id=ref.PAD_ID):
    """Leaves <eos> out of the comparison: the right words without <eos> count as exact."""
    _, accuracy = ref.sequence_accuracy(predictions, targets, eos_id, pad_id)
    pred = predictions.masked_fill(predictions == eos_id, pad_id)
    tgt = targets.masked_fill(targets == eos_id, pad_id)
    width = max(pred.size(1), tgt.size(1))
    pred, tgt = _pad_to(pred, width, pad_id), _pad_to(tgt, width, pad_id)
    return (pred == tgt).all(dim=1), accuracy


def accuracy_hard_coded_ids(predictions, targets, eos_id=ref.EOS_ID, pad_id=ref.PAD_ID):
    """Uses the ids 2 and 0 whatever eos_id and pad_id say."""
    return ref.sequence_accuracy(predictions, targets, ref.EOS_ID, ref.PAD_ID)


def accuracy_float64(predictions, targets, eos_id=ref.EOS_ID, pad_id=ref.PAD_ID):
    """Token accuracy in float64 (the instructions ask for float32)."""
    exact, accuracy = ref.sequence_accuracy(predictions, targets, eos_id, pad_id)
    return exact, accuracy.double()


WRONG = {
    "Encoder": {
        c.__name__: Mistake(c, says)
        for c, says in (
            (EncoderReadsThePadding, "read the padding"),
            (EncoderLastColumn, "after each sentence's last real word"),
            (EncoderMeanOfOutputs, "after each sentence's last real word"),
            (EncoderSortedLengthsOnly, "enforce_sorted"),
            (EncoderNoTotalLength, "total_length"),
            (EncoderNoPaddingIdx, "padding_idx=pad_id"),
        )
    },
    "Decoder": {
        c.__name__: Mistake(c, says)
        for c, says in (
            (DecoderIgnoresHidden, "do not depend on the hidden state"),
            (DecoderReturnsOldHidden, "the one passed in"),
            (DecoderSoftmax, "probabilities"),
            (DecoderFirstStepHidden, "state after the first step"),
            (DecoderNoPaddingIdx, "padding_idx=pad_id"),
            (DecoderTanhReadout, "raw scores"),
        )
    },
    "Seq2Seq": {
        c.__name__: Mistake(c, says)
        for c, says in (
            (Seq2SeqTeacherForcingAlways, "teacher forcing at evaluation time"),
            (Seq2SeqFeedsSos, "reads <sos> at every step"),
            (Seq2SeqDetachedContext, "no gradient reaches the encoder"),
            (Seq2SeqNoEosStop, "goes on after its <eos>"),
            (Seq2SeqStopsAtFirstEos, "stops when the first row does"),
            (Seq2SeqKeepsSos, "start with <sos>"),
            (Seq2SeqRestartsFromContext, "passing the hidden state on"),
        )
    },
    "sequence_accuracy": {
        f.__name__: Mistake(f, says)
        for f, says in (
            (accuracy_counts_after_eos, "anything after a prediction's <eos> is ignored"),
            (accuracy_prefix_is_exact, "exact should be False"),
            (accuracy_over_prediction_length, "share of the target's positions"),
            (accuracy_ignores_eos, "<eos>, included"),
            (accuracy_hard_coded_ids, "use eos_id/pad_id"),
            (accuracy_float64, "must be float32"),
        )
    },
}
