"""Chapter 1, the seq2seq bottleneck: the reference implementation.

A GRU encoder reads the source sentence; its hidden state after the last real word, the *context
vector*, is all that the decoder learns of the source: it is the decoder's initial hidden state and
nothing else links the two. The decoder is trained with teacher forcing (it reads the true previous
word) and used with greedy decoding (it reads its own previous prediction) until it writes
``<eos>`` or runs out of steps.

Shapes: B batch, S source length, L target length (the decoder's steps), E the embedding width,
Eh the GRU's hidden width (the size of the context vector), V a vocabulary's size. Token ids 0, 1
and 2 are ``<pad>``, ``<sos>`` and ``<eos>``, as in ``attention_data.translation``.

- :class:`Encoder`: ``forward(src (B, S), lengths (B,)) -> (outputs (B, S, Eh), context (B, Eh))``,
  with the padding skipped by ``pack_padded_sequence``: the context is the state after each
  sentence's own last word, not after the pads that follow it;
- :class:`Decoder`: ``forward(tokens (B, L), hidden (B, Eh))`` ->
  ``(logits (B, L, V), hidden (B, Eh))``; with L = 1 it is one step of decoding, with the
  shifted target it is teacher forcing;
- :class:`Seq2Seq`: the two joined by the context vector; ``forward(src, lengths, tgt_in,
  teacher_forcing=True) -> logits (B, L, V)`` and
  ``greedy_decode(src, lengths, max_len) -> (B, L')``;
- :func:`sequence_accuracy`: exact match and token accuracy of each predicted sentence.

Not here: attention (chapters 2 and 3), beam search, and the training loop (the chapter's page).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

__all__ = [
    "PAD_ID",
    "SOS_ID",
    "EOS_ID",
    "Encoder",
    "Decoder",
    "Seq2Seq",
    "sequence_accuracy",
]

PAD_ID, SOS_ID, EOS_ID = 0, 1, 2


def _check_tokens(name: str, tokens, dims: int = 2) -> None:
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tokens).__name__}")
    if tokens.dim() != dims or tokens.dtype != torch.long:
        raise ValueError(
            f"{name} must be a {dims}-d tensor of int64 token ids; got {tokens.dtype} of shape "
            f"{tuple(tokens.shape)}"
        )


class Encoder(nn.Module):
    """Embedding and a one-layer GRU; the context is the hidden state after each sentence's last
    real word.

    Args:
        vocab_size: V of the source vocabulary.
        embed_dim: E.
        hidden_dim: Eh, the size of the context vector.
        pad_id: the padding id; its embedding is 0 and gets no gradient.

    forward(src (B, S) int64, lengths (B,) int64 on any device, in any order)
        -> outputs (B, S, Eh), zero at padded positions; context (B, Eh).

    Example: a batch [[5, 6, 7], [8, 9, 0]] with lengths [3, 2]: the second context is the state
    after token 9, the same as for the batch [[8, 9]] alone.
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, pad_id: int = PAD_ID):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.rnn = nn.GRU(embed_dim, hidden_dim, batch_first=True)

    def forward(self, src: torch.Tensor, lengths: torch.Tensor):
        _check_tokens("src", src)
        lengths = torch.as_tensor(lengths)
        if lengths.shape != (src.size(0),):
            raise ValueError(f"lengths must have shape (B,) = ({src.size(0)},)")
        if int(lengths.min()) < 1 or int(lengths.max()) > src.size(1):
            raise ValueError(f"every length must be between 1 and S = {src.size(1)}")
        embedded = self.embedding(src)  # (B, S, E)
        # pack_padded_sequence wants the lengths on the CPU; enforce_sorted=False sorts for us.
        packed = pack_padded_sequence(
            embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        packed_outputs, h_n = self.rnn(packed)  # h_n (1, B, Eh): each row after its last real word
        outputs, _ = pad_packed_sequence(
            packed_outputs, batch_first=True, total_length=src.size(1)
        )  # (B, S, Eh)
        return outputs, h_n[0]  # (B, S, Eh), (B, Eh)


class Decoder(nn.Module):
    """Embedding, a one-layer GRU and a linear readout to the target vocabulary.

    Args:
        vocab_size: V of the target vocabulary.
        embed_dim: E.
        hidden_dim: Eh, the size of the hidden state (the encoder's context starts it).
        pad_id: the padding id; its embedding is 0 and gets no gradient.

    forward(tokens (B, L) int64, hidden (B, Eh)) -> logits (B, L, V), hidden (B, Eh).
    Row l of the logits scores the word that follows tokens[:, l]; the hidden state returned is
    the one after the last step, ready for the next call. Running L steps one at a time, each call
    passing on the hidden state, gives the same logits as one call with all L tokens.
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, pad_id: int = PAD_ID):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.rnn = nn.GRU(embed_dim, hidden_dim, batch_first=True)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def forward(self, tokens: torch.Tensor, hidden: torch.Tensor):
        _check_tokens("tokens", tokens)
        if hidden.dim() != 2 or hidden.size(0) != tokens.size(0):
            raise ValueError(
                f"hidden must have shape (B, Eh) with B = {tokens.size(0)}; "
                f"got {tuple(hidden.shape)}"
            )
        h_0 = hidden.unsqueeze(0)  # (1, B, Eh)
        outputs, h_n = self.rnn(self.embedding(tokens), h_0)  # (B, L, Eh), (1, B, Eh)
        return self.out(outputs), h_n[0]  # (B, L, V), (B, Eh)


class Seq2Seq(nn.Module):
    """An :class:`Encoder` and a :class:`Decoder` joined by the context vector alone.

    forward(src (B, S), lengths (B,), tgt_in (B, L), teacher_forcing=True) -> logits (B, L, V):
        the decoder starts from the encoder's context. With teacher forcing it reads tgt_in (the
        target shifted right, starting with <sos>); without, it reads tgt_in[:, 0] (<sos>) and then
        its own previous argmax prediction, for L steps, with no early stop.

    greedy_decode(src, lengths, max_len) -> (B, L') int64: each row's predicted words, without
        <sos>, up to and including its first <eos>, then <pad>. Decoding stops once every row has
        written <eos>, or after max_len steps: L' <= max_len.
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        embed_dim: int,
        hidden_dim: int,
        pad_id: int = PAD_ID,
        sos_id: int = SOS_ID,
        eos_id: int = EOS_ID,
    ):
        super().__init__()
        self.encoder = Encoder(src_vocab_size, embed_dim, hidden_dim, pad_id)
        self.decoder = Decoder(tgt_vocab_size, embed_dim, hidden_dim, pad_id)
        self.pad_id, self.sos_id, self.eos_id = pad_id, sos_id, eos_id

    def forward(self, src, lengths, tgt_in, teacher_forcing: bool = True):
        _check_tokens("tgt_in", tgt_in)
        _, context = self.encoder(src, lengths)  # (B, Eh)
        if teacher_forcing:
            return self.decoder(tgt_in, context)[0]  # (B, L, V)
        tokens, hidden, steps = tgt_in[:, :1], context, []  # (B, 1), (B, Eh)
        for _ in range(tgt_in.size(1)):
            logits, hidden = self.decoder(tokens, hidden)  # (B, 1, V), (B, Eh)
            steps.append(logits)
            tokens = logits.argmax(dim=-1)  # (B, 1): the decoder's own prediction comes next
        return torch.cat(steps, dim=1)  # (B, L, V)

    @torch.no_grad()
    def greedy_decode(self, src, lengths, max_len: int):
        if not isinstance(max_len, int) or max_len < 1:
            raise ValueError(f"max_len must be a positive int, got {max_len!r}")
        _, hidden = self.encoder(src, lengths)  # (B, Eh)
        B = src.size(0)
        tokens = torch.full((B, 1), self.sos_id, dtype=torch.long, device=src.device)  # (B, 1)
        finished = torch.zeros(B, dtype=torch.bool, device=src.device)  # (B,)
        out = []
        for _ in range(max_len):
            logits, hidden = self.decoder(tokens, hidden)  # (B, 1, V), (B, Eh)
            tokens = logits.argmax(dim=-1)  # (B, 1)
            # A row that has finished writes <pad>; its own <eos> was the last word it wrote.
            out.append(tokens.masked_fill(finished[:, None], self.pad_id))  # (B, 1)
            finished |= tokens[:, 0] == self.eos_id
            if bool(finished.all()):
                break
        return torch.cat(out, dim=1)  # (B, L')


def sequence_accuracy(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    eos_id: int = EOS_ID,
    pad_id: int = PAD_ID,
):
    """Exact match and token accuracy of each predicted sentence.

    Args:
        predictions: (B, Lp) int64, e.g. from greedy decoding. A row's sentence ends at its first
            <eos> (included); what follows is ignored. A row with no <eos> is all sentence.
        targets: (B, Lt) int64: each row's words, then <eos>, then <pad>. Lp and Lt may differ.

    Returns:
        exact (B,) bool: the predicted sentence equals the target's, <eos> included.
        token_accuracy (B,) float32: the share of the target's n_b positions (its words and its
        <eos>) at which the prediction has the same token; a position the prediction does not
        reach (or reaches after its <eos>) counts as wrong.
        Both on the inputs' device.

    Example: targets [[7, 8, 2]], predictions [[7, 9, 2, 5]] -> exact [False], accuracy [0.6667]
    """
    _check_tokens("predictions", predictions)
    _check_tokens("targets", targets)
    if predictions.size(0) != targets.size(0):
        raise ValueError("predictions and targets must have the same batch size B")
    B, Lt = targets.shape
    device = targets.device
    predictions = predictions.to(device)

    def after_eos(x: torch.Tensor) -> torch.Tensor:
        """True at the positions after the first <eos> of each row (B, L)."""
        is_eos = (x == eos_id).long()  # (B, L)
        return (is_eos.cumsum(dim=1) - is_eos) > 0  # (B, L)

    target_len = (~after_eos(targets) & (targets != pad_id)).sum(dim=1)  # (B,): n_b
    pred = predictions.masked_fill(after_eos(predictions), pad_id)  # (B, Lp)
    width = max(pred.size(1), Lt)
    pred = torch.cat([pred, pred.new_full((B, width - pred.size(1)), pad_id)], dim=1)  # (B, W)
    tgt = torch.cat([targets, targets.new_full((B, width - Lt), pad_id)], dim=1)  # (B, W)
    in_target = torch.arange(width, device=device)[None, :] < target_len[:, None]  # (B, W)
    hits = (pred == tgt) & in_target  # (B, W)
    token_accuracy = hits.sum(dim=1).float() / target_len.clamp(min=1).float()  # (B,)
    # Exact: every target position matches and the prediction has nothing beyond them.
    exact = (hits.sum(dim=1) == target_len) & ((pred != pad_id) & ~in_target).sum(dim=1).eq(0)
    return exact, token_accuracy
