"""A small fixture chapter that uses every kind of API a chapter may grade.

- ``pair_counts(ids)`` -> a dict with tuple keys; ``to_bytes(text)`` -> bytes;
  ``full(shape, value, dtype, device)`` -> (a tensor, its dtype, its device): dtypes and devices
  as arguments and in results;
  ``scale_all(x, factors)`` -> a tuple of tensors, checked with gradients;
- ``Tokenizer()`` with ``train(text, vocab_size)``, ``encode(text)``, ``decode(ids)`` and a
  ``merges`` attribute (a dict from pairs of ids to ids): a plain object;
- ``TinyDecoder(vocab, width)``, an ``nn.Module`` with ``forward``, ``encode`` and
  ``greedy_decode``, built by the check with given arguments and the reference's weights copied in,
  and its parameters' gradients compared.

``first_scaled(x, f)`` is checked through its gradients. The engine's tests (test_engine.py) run
a notebook of correct answers, and one of wrong ones, in the sandbox and judge them with PARTS.
"""

from __future__ import annotations

import torch
from torch import nn

from autograder.chapters import Part
from autograder.toolkit import CheckFailed, Subject, calling, check, compare

# --- the reference ----------------------------------------------------------------------------


def pair_counts(ids):
    counts = {}
    for pair in zip(ids, ids[1:], strict=False):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def to_bytes(text):
    return text.encode("utf-8")


def scale_all(x, factors):
    return tuple(x * f for f in factors)


def full(shape, value, dtype, device):
    out = torch.full(shape, value, dtype=dtype, device=device)
    return out, out.dtype, out.device


class Tokenizer:
    def __init__(self):
        self.merges = {}

    def train(self, text, vocab_size):
        ids = list(text.encode("utf-8"))
        for new in range(256, vocab_size):
            counts = pair_counts(ids)
            if not counts:
                break
            pair = max(counts, key=lambda p: (counts[p], -p[0], -p[1]))
            self.merges[pair] = new
            ids = _merge(ids, pair, new)

    def encode(self, text):
        ids = list(text.encode("utf-8"))
        for pair, new in self.merges.items():
            ids = _merge(ids, pair, new)
        return ids

    def decode(self, ids):
        vocab = {i: bytes([i]) for i in range(256)}
        for (a, b), new in self.merges.items():
            vocab[new] = vocab[a] + vocab[b]
        return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


def _merge(ids, pair, new):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class TinyDecoder(nn.Module):
    def __init__(self, vocab, width):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.out = nn.Linear(width, vocab)

    def encode(self, tokens):
        return torch.tanh(self.embed(tokens))  # (B, L, E)

    def forward(self, tokens):
        return self.out(self.encode(tokens))  # (B, L, V)

    def greedy_decode(self, start, steps):
        tokens = [start]
        for _ in range(steps):
            logits = self(torch.tensor([[tokens[-1]]]))  # (1, 1, V)
            tokens.append(int(logits[0, -1].argmax()))
        return tokens


# --- the checks -------------------------------------------------------------------------------


@check()
def check_pair_counts(fn: Subject) -> None:
    for ids in ([1, 2, 3, 1, 2], [5, 5, 5], [], [7]):
        got = calling(f"pair_counts(a list of {len(ids)} ids)", fn, ids)
        if got != pair_counts(ids):
            raise CheckFailed(f"pair_counts(a list of {len(ids)} ids): wrong counts.")


@check()
def check_to_bytes(fn: Subject) -> None:
    for text in ("", "héllo", "어텐션 🙂"):
        got = calling("to_bytes", fn, text)
        if not isinstance(got, bytes) or got != to_bytes(text):
            raise CheckFailed("to_bytes: not the UTF-8 bytes of the text.")


@check()
def check_full(fn: Subject) -> None:
    for dtype in (torch.float64, torch.bfloat16, torch.int64, torch.bool):
        got = calling("full", fn, (2, 3), 1, dtype, torch.device("cpu"))
        if not isinstance(got, tuple) or len(got) != 3 or not isinstance(got[0], torch.Tensor):
            raise CheckFailed("full: return (the tensor, its dtype, its device).")
        if got[0].dtype != dtype or got[1] != dtype:
            raise CheckFailed(f"full: a {dtype} was asked for.")
        if got[2] != torch.device("cpu"):
            raise CheckFailed("full: the device that came back is not the CPU.")


@check()
def check_scale_all(fn: Subject) -> None:
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    factors = [0.5, 2.0]
    got = calling("scale_all", fn, x, factors)
    if not isinstance(got, tuple) or len(got) != 2:
        raise CheckFailed("scale_all: return a tuple with one tensor per factor.")
    for g, e in zip(got, scale_all(x, factors), strict=True):
        compare(g, e, "scale_all")


@check()
def check_first_scaled(fn: Subject) -> None:
    """Gradients through the student's code: d/dx <x * f, g> = f * g."""
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out, grads, _ = calling("first_scaled, backward", fn.gradients, (x, 3.0), grad_output=g)
    compare(out, x * 3.0, "first_scaled")
    compare(grads[0], g * 3.0, "first_scaled, the gradient with respect to x")


@check(stand_ins={"pair_counts": pair_counts})  # train() calls the student's pair_counts
def check_tokenizer(cls: Subject) -> None:
    text = "aaabdaaabac aaabdaaabac 어텐션"
    tok = calling("Tokenizer()", cls)
    calling("Tokenizer.train", tok.method("train"), text, 259)
    expected = Tokenizer()
    expected.train(text, 259)
    merges = tok.attribute("merges")
    if merges != expected.merges:
        raise CheckFailed("Tokenizer.merges: not the merges of the classic example, in order.")
    ids = calling("Tokenizer.encode", tok.method("encode"), text)
    if ids != expected.encode(text):
        raise CheckFailed("Tokenizer.encode: wrong ids.")
    if calling("Tokenizer.decode", tok.method("decode"), ids) != text:
        raise CheckFailed("Tokenizer.decode(encode(text)) is not the text.")


@check()
def check_tiny_decoder(cls: Subject) -> None:
    module = calling("TinyDecoder(11, 6)", cls.seeded(0), 11, 6)
    reference = TinyDecoder(11, 6)
    module.load_state_dict(reference.state_dict())
    info = module.describe()
    if info["modules"].get("embed") != "Embedding":
        raise CheckFailed("TinyDecoder needs an nn.Embedding called embed.")
    tokens = torch.tensor([[1, 2, 3], [4, 5, 6]])
    with torch.no_grad():
        compare(calling("TinyDecoder.forward", module, tokens), reference(tokens), "forward")
        compare(
            calling("TinyDecoder.encode", module.method("encode"), tokens),
            reference.encode(tokens),
            "encode",
        )
    got = calling("TinyDecoder.greedy_decode", module.method("greedy_decode"), 3, 5)
    if got != reference.greedy_decode(3, 5):
        raise CheckFailed("TinyDecoder.greedy_decode: another sequence than the reference's.")
    g = torch.randn(2, 3, 11, generator=torch.Generator().manual_seed(3))
    _, _, grads = calling(
        "TinyDecoder backward", module.gradients, (tokens,), params=True, grad_output=g
    )
    (reference(tokens) * g).sum().backward()
    for name, p in reference.named_parameters():
        compare(grads[name], p.grad, f"TinyDecoder, gradient of {name}")


def first_scaled(x, f):
    return x * f


PARTS = tuple(
    Part(gid, name, fn, 1.0)
    for gid, name, fn in (
        ("pair_counts_tests", "pair_counts", check_pair_counts),
        ("to_bytes_tests", "to_bytes", check_to_bytes),
        ("full_tests", "full", check_full),
        ("scale_all_tests", "scale_all", check_scale_all),
        ("first_scaled_tests", "first_scaled", check_first_scaled),
        ("tokenizer_tests", "Tokenizer", check_tokenizer),
        ("tiny_decoder_tests", "TinyDecoder", check_tiny_decoder),
    )
)
