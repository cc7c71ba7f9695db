"""Chapter 9, byte pair encoding: the reference implementation.

What the chapter's exercise asks for, byte-level BPE as GPT-2 popularised it:

- :func:`get_pair_counts` counts the adjacent pairs of a list of ids, overlapping pairs included
  (``[97, 97, 97]`` has the pair ``(97, 97)`` twice);
- :func:`merge` replaces every occurrence of a pair by a new id, scanning left to right, so that
  in an overlapping run the leftmost pair wins (``[97, 97, 97]`` -> ``[256, 97]``), and the new
  id never starts another pair (whatever its value);
- :class:`BPETokenizer`: ``train(text, vocab_size)`` learns ``vocab_size - 256`` merges on top of
  the 256 byte values, ``encode(text)`` applies them in the order they were learned,
  ``decode(ids)`` turns ids back into text. ``merges`` maps a pair of ids to its new id.

The rules the exercise states, and these functions follow:

- **Pre-tokenization.** Text is cut into pieces by :data:`SPLIT_PATTERN` (a GPT-2-like pattern
  written for Python's own ``re``: letters with an optional leading space, digits likewise,
  other symbols likewise, and runs of whitespace). Pairs are counted and merged inside a piece
  only, in training and in encoding: no token ever spans two pieces. The pieces concatenate back
  to the text exactly (every character belongs to one).
- **Tie-breaking.** Among the pairs with the highest count, the smallest pair ``(a, b)`` (compared
  as tuples of ids) is merged. Training stops early when no piece has two tokens left.
- **Decoding** joins the tokens' bytes and decodes them as UTF-8 with ``errors="replace"``: ids
  that cut a character in two give U+FFFD, and ``decode(encode(s)) == s`` for every string that
  UTF-8 can encode (all but those holding a lone surrogate, such as ``"\ud800"``, which
  ``str.encode`` refuses).

Two trainers give the same merges: :func:`train_naive` recounts every pair of every piece after
every merge (what one writes first); :func:`train_incremental` (the one ``BPETokenizer.train``
uses) counts each distinct piece once with its frequency and, after a merge, updates only the
pieces that contained the merged pair, keeping the counts in a heap. ``bench/bench_bpe.py`` times
both against Hugging Face ``tokenizers``.

Not here: special tokens, normalization (Unicode NFC and the like), saving and loading, sampling
from the merges (BPE-dropout), and the original character-level BPE with an end-of-word marker,
which the chapter's page builds in its own cells.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter, defaultdict
from collections.abc import Sequence

__all__ = [
    "SPLIT_PATTERN",
    "pretokenize",
    "get_pair_counts",
    "merge",
    "train_naive",
    "train_incremental",
    "BPETokenizer",
]

# A piece is: letters, digits or other symbols, each with at most one leading space; or a run of
# whitespace (a run followed by a word leaves its last space to that word, as GPT-2's does).
# Letters are [^\W\d_] (word characters that are neither digits nor "_"); "other" is anything
# that is neither a word character nor whitespace, plus "_". Every character falls in one class.
SPLIT_PATTERN = r" ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"
_SPLIT = re.compile(SPLIT_PATTERN)


def pretokenize(text: str) -> list[str]:
    """The pieces of `text` under SPLIT_PATTERN; they concatenate back to `text`.

    Example: pretokenize("Hi  there, 42!") -> ["Hi", " ", " there", ",", " 42", "!"]
    """
    return _SPLIT.findall(text)


def get_pair_counts(
    ids: Sequence[int], counts: dict[tuple[int, int], int] | None = None
) -> dict[tuple[int, int], int]:
    """How often each pair of adjacent ids occurs, overlapping occurrences included.

    `counts`, minbpe's optional argument (which the exercise allows), is a dict to add the
    counts to; it is updated and returned. As the grader's stand-in for a student's function,
    this accepts the call a minbpe-style tokenizer makes.

    Example: get_pair_counts([1, 2, 3, 1, 2]) -> {(1, 2): 2, (2, 3): 1, (3, 1): 1}
             get_pair_counts([7, 7, 7]) -> {(7, 7): 2}
             get_pair_counts([1, 2], {(1, 2): 3}) -> {(1, 2): 4}
    """
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:], strict=False):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """A new list: `ids` with every occurrence of `pair` replaced by `new_id`, left to right.

    A plain substitution: `new_id` may be any int, even one of the pair's, and never starts
    another pair in the same call.

    Example: merge([1, 2, 3, 1, 2], (1, 2), 9) -> [9, 3, 9]
             merge([7, 7, 7], (7, 7), 9) -> [9, 7]
             merge([5, 6, 6], (5, 6), 5) -> [5, 6]
    """
    out = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _best(counts: dict[tuple[int, int], int]) -> tuple[int, int]:
    """The pair to merge: the highest count, and among equal counts the smallest pair."""
    return min(counts, key=lambda pair: (-counts[pair], pair))


def _check_vocab_size(vocab_size: int) -> None:
    if not isinstance(vocab_size, int) or vocab_size < 256:
        raise ValueError(f"vocab_size must be an int >= 256 (the bytes), got {vocab_size!r}")


def train_naive(text: str, vocab_size: int) -> dict[tuple[int, int], int]:
    """The merges of byte-level BPE, recounting every pair of every piece after each merge.

    Cost: (number of merges) x (bytes of text). Same result as :func:`train_incremental`.
    Example: train_naive("aaabdaaabac", 259) -> {(97, 97): 256, (97, 98): 257, (256, 257): 258}
    """
    _check_vocab_size(vocab_size)
    pieces = [list(piece.encode("utf-8")) for piece in pretokenize(text)]
    merges: dict[tuple[int, int], int] = {}
    for new_id in range(256, vocab_size):
        counts: dict[tuple[int, int], int] = {}
        for ids in pieces:
            for pair in zip(ids, ids[1:], strict=False):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        pair = _best(counts)
        merges[pair] = new_id
        pieces = [merge(ids, pair, new_id) for ids in pieces]
    return merges


def train_incremental(text: str, vocab_size: int) -> dict[tuple[int, int], int]:
    """The merges of byte-level BPE, updating only the counts a merge changes.

    Each distinct piece is stored once with its frequency; ``where[pair]`` remembers the pieces
    that (may) contain a pair. A merge revisits only those pieces: it subtracts their pairs'
    counts, merges, and adds the new pairs' counts. The counts sit in a heap of
    ``(-count, pair)`` (so the smallest pair wins a tie); an entry whose count is no longer the
    pair's count is stale and skipped when it comes up.

    Example: train_incremental("aaabdaaabac", 259)
             -> {(97, 97): 256, (97, 98): 257, (256, 257): 258}
    """
    _check_vocab_size(vocab_size)
    freq = Counter(pretokenize(text))
    words = [list(piece.encode("utf-8")) for piece in freq]
    weights = list(freq.values())
    counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for w, (ids, n) in enumerate(zip(words, weights, strict=True)):
        for pair in zip(ids, ids[1:], strict=False):
            counts[pair] += n
            where[pair].add(w)
    heap = [(-c, pair) for pair, c in counts.items()]
    heapq.heapify(heap)
    merges: dict[tuple[int, int], int] = {}
    new_id = 256
    while new_id < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        if counts.get(pair, 0) != -neg:
            continue  # stale: the count changed after this entry was pushed
        merges[pair] = new_id
        touched = set()
        for w in where.pop(pair):
            ids, n = words[w], weights[w]
            merged = merge(ids, pair, new_id)
            if len(merged) == len(ids):
                continue  # the pair left this piece in an earlier merge
            for old in zip(ids, ids[1:], strict=False):
                counts[old] -= n
                touched.add(old)
            for new in zip(merged, merged[1:], strict=False):
                counts[new] += n
                where[new].add(w)
                touched.add(new)
            words[w] = merged
        for p in touched:
            if counts[p] > 0:
                heapq.heappush(heap, (-counts[p], p))
            else:
                del counts[p]
        new_id += 1
    return merges


class BPETokenizer:
    """Byte-level BPE: 256 byte tokens, then one token per learned merge.

    ``BPETokenizer()`` has learned nothing. ``BPETokenizer(merges)``, which the exercise does not
    ask for, encodes and decodes with `merges` as if it had learned them: the checks use it to
    compute what a student's tokenizer should give with the merges its own training learned.

    Attributes:
        merges: {(a, b): new id}, in the order learned; new ids are 256, 257, ...
        vocab: {id: the bytes it stands for}.

    Example:
        tok = BPETokenizer(); tok.train("aaabdaaabac", 259)
        tok.encode("aaabdaaabac") -> [258, 100, 258, 97, 99]; tok.decode([258, 100]) -> "aaabd"
        BPETokenizer({(97, 98): 256}).encode("abc") -> [256, 99]
    """

    def __init__(self, merges: dict[tuple[int, int], int] | None = None) -> None:
        """Untrained, or ready to encode and decode with `merges` ({(a, b): new id}, new ids
        256, 257, ... in the order learned, as a trained tokenizer's merges are)."""
        self._use(dict(merges or {}))

    def _use(self, merges: dict[tuple[int, int], int]) -> None:
        if sorted(merges.values()) != list(range(256, 256 + len(merges))):
            raise ValueError("the new ids of merges must be 256, 257, ... (one per merge)")
        self.merges = merges
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}
        for (a, b), new_id in sorted(merges.items(), key=lambda item: item[1]):
            if not (0 <= a < new_id and 0 <= b < new_id):
                raise ValueError(f"merge {(a, b)} -> {new_id} uses an id not defined before it")
            self.vocab[new_id] = self.vocab[a] + self.vocab[b]
        self._cache: dict[str, list[int]] = {}

    def train(self, text: str, vocab_size: int) -> None:
        """Learn up to vocab_size - 256 merges on `text` (fewer when no pair is left)."""
        self._use(train_incremental(text, vocab_size))

    def _encode_piece(self, piece: str) -> list[int]:
        ids = list(piece.encode("utf-8"))
        while len(ids) >= 2:
            # the pair learned first among those present: merges apply in training order
            pair = min(
                zip(ids, ids[1:], strict=False), key=lambda p: self.merges.get(p, float("inf"))
            )
            if pair not in self.merges:
                break
            ids = merge(ids, pair, self.merges[pair])
        return ids

    def encode(self, text: str) -> list[int]:
        """The ids of `text`: its pieces' bytes, with the merges applied in the order learned.

        Example (untrained): encode("hé") -> [104, 195, 169]
        """
        out: list[int] = []
        for piece in pretokenize(text):
            ids = self._cache.get(piece)
            if ids is None:
                ids = self._cache[piece] = self._encode_piece(piece)
            out.extend(ids)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`: their bytes joined, decoded as UTF-8 (invalid bytes give U+FFFD).

        Example (untrained): decode([104, 195, 169]) -> "hé"; decode([195]) -> "\ufffd"
        """
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")
