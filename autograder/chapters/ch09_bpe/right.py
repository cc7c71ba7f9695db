"""Correct answers to chapter 9's exercise, as unlike the reference as its instructions allow.

Each variant was written from the released notebook's instructions alone: another algorithm,
another container, another tie implementation, extra methods and attributes, minbpe's optional
``counts`` argument and a tokenizer that calls it with two arguments (issue 19: such a tokenizer
once lost every point of Part 3). ``tests/test_chapter_contract.py`` requires every variant to get
full marks, in this process and, for the last variant of each name, handed in as a notebook
through the sandboxed grader; so the last variant of each name uses only this module's imports,
the notebook's ``SPLIT_PATTERN`` and the earlier parts by their names.

The tokenizers call ``get_pair_counts`` and ``merge`` by name, as in a notebook: here those names
are the last variants of Parts 1 and 2 (minbpe's two-argument counting among them), and a check
uses them because they pass their own checks.

``RIGHT`` maps the name the student defines to {variant: implementation}.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

from .reference import SPLIT_PATTERN

# --- get_pair_counts --------------------------------------------------------------------------


def pair_counts_counter(ids):
    """A collections.Counter of the zipped pairs (a dict, as the instructions ask)."""
    return Counter(zip(ids, ids[1:], strict=False))


def pair_counts_indexed(ids):
    """Indices and a defaultdict."""
    counts = defaultdict(int)
    for i in range(len(ids) - 1):
        counts[ids[i], ids[i + 1]] += 1
    return counts


def pair_counts_most_frequent_first(ids):
    """The same counts in another order: the most frequent pairs first."""
    counts = {}
    for a, b in zip(ids, ids[1:], strict=False):
        counts[(a, b)] = counts.get((a, b), 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def pair_counts_minbpe(ids, counts=None):
    """minbpe's get_stats: an optional dict to add the counts to, updated and returned."""
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:], strict=False):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


# --- merge ------------------------------------------------------------------------------------


def merge_skip_flag(ids, pair, new_id):
    """A for loop with a flag that skips the second id of each merged pair."""
    out, skip = [], False
    for i, x in enumerate(ids):
        if skip:
            skip = False
            continue
        if i + 1 < len(ids) and x == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            skip = True
        else:
            out.append(x)
    return out


def merge_slices(ids, pair, new_id):
    """Two-id slices compared with the pair as a list."""
    target, out, i = list(pair), [], 0
    while i < len(ids):
        if ids[i : i + 2] == target:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_into_output(ids, pair, new_id):
    """Merges into the output's last id, as the page's replace_pair does, but never into an id it
    has just put in (so any new_id works)."""
    out, fresh = [], False
    for x in ids:
        if out and not fresh and (out[-1], x) == pair:
            out[-1] = new_id
            fresh = True
        else:
            out.append(x)
            fresh = False
    return out


# The names the tokenizers below call, as a notebook's cells would define them.
get_pair_counts = pair_counts_minbpe
merge = merge_into_output


# --- BPETokenizer -----------------------------------------------------------------------------


class WeightedLazyBytes:
    """Distinct pieces weighted by a Counter; ties by max with negated ids; encoding that runs
    through the whole list of merges once, in order (the page shows it is the same); decoding
    that finds each id's bytes from its halves on demand, with no table built in advance; an
    optional constructor argument of its own (merges to start from)."""

    def __init__(self, merges=None):
        self.merges = dict(merges) if merges else {}
        self._halves = {new: pair for pair, new in self.merges.items()}
        self._bytes_of = {}

    def train(self, text, vocab_size):
        if vocab_size < 256:
            raise ValueError("vocab_size must be at least 256 (one token per byte value)")
        weights = Counter(tuple(p.encode("utf-8")) for p in re.findall(SPLIT_PATTERN, text))
        pieces = {piece: list(piece) for piece in weights}
        self.merges, self._halves, self._bytes_of = {}, {}, {}
        for new_id in range(256, vocab_size):
            counts = Counter()
            for piece, ids in pieces.items():
                for pair, n in get_pair_counts(ids).items():
                    counts[pair] += n * weights[piece]
            if not counts:
                break
            best = max(counts, key=lambda p: (counts[p], -p[0], -p[1]))
            self.merges[best] = new_id
            self._halves[new_id] = best
            pieces = {piece: merge(ids, best, new_id) for piece, ids in pieces.items()}

    def encode(self, text):
        out = []
        in_order = sorted(self.merges.items(), key=lambda item: item[1])
        for piece in re.findall(SPLIT_PATTERN, text):
            ids = list(piece.encode("utf-8"))
            for pair, new_id in in_order:
                if len(ids) < 2:
                    break
                ids = merge(ids, pair, new_id)
            out += ids
        return out

    def token_bytes(self, i):
        if i < 256:
            return bytes([i])
        if i not in self._bytes_of:
            a, b = self._halves[i]
            self._bytes_of[i] = self.token_bytes(a) + self.token_bytes(b)
        return self._bytes_of[i]

    def decode(self, ids):
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")


class ListVocab:
    """Every occurrence of every piece kept in a list (no weights), ties by sorting the counts,
    a list as the table from ids to bytes, encoding with ranks in a `while True` loop, decoding
    through a bytearray."""

    def __init__(self):
        self.merges = {}
        self.table = [bytes([b]) for b in range(256)]

    def _learn(self, pair, new_id):
        self.merges[pair] = new_id
        self.table.append(self.table[pair[0]] + self.table[pair[1]])

    def train(self, text, vocab_size):
        if vocab_size < 256:
            raise ValueError(f"vocab_size={vocab_size} is less than 256")
        self.merges, self.table = {}, [bytes([b]) for b in range(256)]
        pieces = [list(piece.encode("utf-8")) for piece in re.findall(SPLIT_PATTERN, text)]
        while len(self.table) < vocab_size:
            counts = {}
            for ids in pieces:
                for pair, n in get_pair_counts(ids).items():
                    counts[pair] = counts.get(pair, 0) + n
            if not counts:
                return
            best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
            new_id = len(self.table)
            self._learn(best, new_id)
            pieces = [merge(ids, best, new_id) for ids in pieces]

    def encode(self, text):
        out = []
        for piece in re.findall(SPLIT_PATTERN, text):
            ids = list(piece.encode("utf-8"))
            while True:
                known = [p for p in get_pair_counts(ids) if p in self.merges]
                if not known:
                    break
                first = min(known, key=lambda p: self.merges[p])
                ids = merge(ids, first, self.merges[first])
            out.extend(ids)
        return out

    def decode(self, ids):
        data = bytearray()
        for i in ids:
            data += self.table[i]
        return data.decode("utf-8", errors="replace")


class MinbpeStyle:
    """minbpe's way, with the exercise's rules: get_pair_counts(ids, counts) called with two
    arguments to add up the pieces' counts, a compiled pattern and a special-tokens dict kept as
    attributes, the vocabulary rebuilt from the merges, the smallest pair among equal counts."""

    def __init__(self):
        self.pattern = re.compile(SPLIT_PATTERN)
        self.special_tokens = {}
        self.merges = {}
        self.vocab = self._build_vocab()

    def _build_vocab(self):
        vocab = {idx: bytes([idx]) for idx in range(256)}
        for (p0, p1), idx in sorted(self.merges.items(), key=lambda kv: kv[1]):
            vocab[idx] = vocab[p0] + vocab[p1]
        return vocab

    def train(self, text, vocab_size, verbose=False):
        if vocab_size < 256:
            raise ValueError("vocab_size must be >= 256")
        chunks = [list(ch.encode("utf-8")) for ch in self.pattern.findall(text)]
        self.merges = {}
        for i in range(vocab_size - 256):
            stats = {}
            for chunk_ids in chunks:
                stats = get_pair_counts(chunk_ids, stats)
            if not stats:
                break
            pair = min(stats, key=lambda p: (-stats[p], p))
            idx = 256 + i
            chunks = [merge(chunk_ids, pair, idx) for chunk_ids in chunks]
            self.merges[pair] = idx
            if verbose:
                print(f"merge {i + 1}: {pair} -> {idx} ({stats[pair]} occurrences)")
        self.vocab = self._build_vocab()

    def _encode_chunk(self, ids):
        while len(ids) >= 2:
            stats = get_pair_counts(ids)
            pair = min(stats, key=lambda p: self.merges.get(p, float("inf")))
            if pair not in self.merges:
                break
            ids = merge(ids, pair, self.merges[pair])
        return ids

    def encode(self, text):
        ids = []
        for chunk in self.pattern.findall(text):
            ids.extend(self._encode_chunk(list(chunk.encode("utf-8"))))
        return ids

    def decode(self, ids):
        text_bytes = b"".join(self.vocab[idx] for idx in ids)
        return text_bytes.decode("utf-8", errors="replace")


RIGHT = {
    "get_pair_counts": {
        "a Counter of the zipped pairs": pair_counts_counter,
        "indices and a defaultdict": pair_counts_indexed,
        "the most frequent pairs first": pair_counts_most_frequent_first,
        "minbpe's optional counts argument": pair_counts_minbpe,
    },
    "merge": {
        "a for loop with a skip flag": merge_skip_flag,
        "two-id slices": merge_slices,
        "into the output, never into a fresh id": merge_into_output,
    },
    "BPETokenizer": {
        "weighted pieces, all merges in order, bytes on demand": WeightedLazyBytes,
        "a list of every piece, sorted counts, a list table": ListVocab,
        "minbpe's style, counting with two arguments": MinbpeStyle,
    },
}
