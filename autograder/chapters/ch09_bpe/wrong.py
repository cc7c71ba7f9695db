"""Known-wrong implementations for chapter 9: the mistakes the checks must catch.

Each entry is a plausible student mistake. ``tests/test_chapter_contract.py`` runs every check on
every entry and requires a check of its name to fail with a message that holds the entry's phrase
(and every other name's checks to pass, with the mistake in the student's namespace), so a check
that grows lax, or one that charges a mistake to the wrong part, is noticed. The checks also use
these implementations to name the mistake a student made.

``WRONG`` maps the name the student defines to {mistake: Mistake(implementation, phrase)}.
"""

from __future__ import annotations

import re

from autograder.chapters import Mistake

from . import reference as ref

# --- get_pair_counts --------------------------------------------------------------------------


def counts_without_overlaps(ids):
    """Skips past a pair of equal ids, as merging would: [7, 7, 7] gives (7, 7) once."""
    counts, i = {}, 0
    while i + 1 < len(ids):
        pair = (ids[i], ids[i + 1])
        counts[pair] = counts.get(pair, 0) + 1
        i += 2 if ids[i] == ids[i + 1] else 1
    return counts


def counts_presence_only(ids):
    """A set of pairs dressed as counts: every count is 1."""
    return {pair: 1 for pair in zip(ids, ids[1:], strict=False)}


def counts_missing_last_pair(ids):
    counts = {}
    for i in range(len(ids) - 2):
        pair = (ids[i], ids[i + 1])
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def counts_wrap_around(ids):
    counts = {}
    for i in range(len(ids)):
        pair = (ids[i], ids[(i + 1) % len(ids)])
        counts[pair] = counts.get(pair, 0) + 1
    return counts if len(ids) > 1 else {}


def counts_list_keys_as_strings(ids):
    """Keys written as text, "a,b", instead of tuples."""
    counts = {}
    for a, b in zip(ids, ids[1:], strict=False):
        counts[f"{a},{b}"] = counts.get(f"{a},{b}", 0) + 1
    return counts


# --- merge ------------------------------------------------------------------------------------


def merge_overlaps_twice(ids, pair, new_id):
    """Steps one id after a match, so [7, 7, 7] with (7, 7) gives [new, new] (a 7 used twice)."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 1
            if i + 1 >= len(ids) or (ids[i], ids[i + 1]) != pair:
                i += 1
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_right_to_left(ids, pair, new_id):
    """Scans from the right: [7, 7, 7] gives [7, new]."""
    out, i = [], len(ids) - 1
    while i >= 0:
        if i >= 1 and (ids[i - 1], ids[i]) == pair:
            out.append(new_id)
            i -= 2
        else:
            out.append(ids[i])
            i -= 1
    return out[::-1]


def merge_first_only(ids, pair, new_id):
    ids = list(ids)
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            return ids[:i] + [new_id] + ids[i + 2 :]
    return ids


def merge_drops_last(ids, pair, new_id):
    """Loops over i < len(ids) - 1 and forgets the id left at the end."""
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_new_id_pairs_again(ids, pair, new_id):
    """Merges into the last id of the output: right only while new_id differs from pair[0], so
    merge([5, 6, 6], (5, 6), 5) gives [5] (the new id started a second pair)."""
    out = []
    for i in ids:
        if out and (out[-1], i) == pair:
            out[-1] = new_id
        else:
            out.append(i)
    return out


# --- BPETokenizer -----------------------------------------------------------------------------


class _Naive(ref.BPETokenizer):
    """The reference with a naive trainer whose rules the subclasses change."""

    def pieces(self, text):
        return [list(p.encode("utf-8")) for p in re.findall(ref.SPLIT_PATTERN, text)]

    def pick(self, counts):
        return min(counts, key=lambda p: (-counts[p], p))

    def train(self, text, vocab_size):
        if vocab_size < 256:
            raise ValueError("vocab_size must be at least 256")
        pieces = self.pieces(text)
        self.merges = {}
        self.vocab = {i: bytes([i]) for i in range(256)}
        self._cache = {}
        for new_id in range(256, vocab_size):
            counts = {}
            for ids in pieces:
                for pair, n in get_pair_counts(ids).items():
                    counts[pair] = counts.get(pair, 0) + n
            if not counts:
                break
            pair = self.pick(counts)
            self.merges[pair] = new_id
            self.vocab[new_id] = self.vocab[pair[0]] + self.vocab[pair[1]]
            pieces = [merge(ids, pair, new_id) for ids in pieces]


def get_pair_counts(ids):
    return ref.get_pair_counts(ids)


def merge(ids, pair, new_id):
    return ref.merge(ids, pair, new_id)


class AcrossWordBoundaries(_Naive):
    """No pre-tokenization: the whole text is one sequence, in training and in encoding."""

    def pieces(self, text):
        return [list(text.encode("utf-8"))] if text else []

    def encode(self, text):
        out = []
        for ids in self.pieces(text):
            while len(ids) >= 2:
                counts = get_pair_counts(ids)
                pair = min(counts, key=lambda p: self.merges.get(p, float("inf")))
                if pair not in self.merges:
                    break
                ids = merge(ids, pair, self.merges[pair])
            out += ids
        return out


class EncodesAcrossPieces(ref.BPETokenizer):
    """Trains on pieces but encodes the whole text at once."""

    pieces = AcrossWordBoundaries.pieces
    encode = AcrossWordBoundaries.encode


class CountOrderEncoding(ref.BPETokenizer):
    """Encodes by merging, each time, the known pair most frequent in the text being encoded."""

    def encode(self, text):
        out = []
        for piece in re.findall(ref.SPLIT_PATTERN, text):
            ids = list(piece.encode("utf-8"))
            while len(ids) >= 2:
                counts = get_pair_counts(ids)
                known = [p for p in counts if p in self.merges]
                if not known:
                    break
                pair = max(known, key=counts.get)
                ids = merge(ids, pair, self.merges[pair])
            out += ids
        return out


class DecodesTokenByToken(ref.BPETokenizer):
    """Decodes each token's bytes on its own and drops what is not valid UTF-8 by itself."""

    def decode(self, ids):
        return "".join(self.vocab[i].decode("utf-8", errors="ignore") for i in ids)


class DecodesOnlyKnownText(ref.BPETokenizer):
    """Drops the bytes of an incomplete character instead of replacing them."""

    def decode(self, ids):
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="ignore")


class TieFirstSeen(_Naive):
    """max(counts, key=counts.get): the first pair counted wins a tie."""

    def pick(self, counts):
        return max(counts, key=counts.get)


class TieLargestPair(_Naive):
    def pick(self, counts):
        return max(counts, key=lambda p: (counts[p], p))


class TieFirstIdOnly(_Naive):
    """Breaks a tie on the pair's first id alone (then the first counted): in "zacab", (97, 99)
    beats (97, 98)."""

    def pick(self, counts):
        return min(counts, key=lambda p: (-counts[p], p[0]))


class CodePoints(_Naive):
    """Spells the pieces in code points (ord) instead of UTF-8 bytes."""

    def pieces(self, text):
        return [[ord(c) for c in p] for p in re.findall(ref.SPLIT_PATTERN, text)]

    encode = AcrossWordBoundaries.encode  # over this class's pieces


class KeepsOldMerges(_Naive):
    """Numbers a new training's merges after the old ones: training again adds to them."""

    def train(self, text, vocab_size):
        old = dict(self.merges)
        super().train(text, vocab_size)
        learned = sorted(self.merges, key=self.merges.get)
        self.merges = old
        for pair in learned:
            self.merges.setdefault(pair, 256 + len(self.merges))
        self._use(self.merges)


class EncodesBytesOnly(ref.BPETokenizer):
    """encode never applies the merges: bytes in, bytes out."""

    def encode(self, text):
        return list(text.encode("utf-8"))


class DistinctPiecesUnweighted(_Naive):
    """Counts each distinct piece once, whatever its frequency."""

    def pieces(self, text):
        return [list(p) for p in dict.fromkeys(tuple(x) for x in super().pieces(text))]


class OneMergeTooMany(_Naive):
    """Learns vocab_size - 255 merges (the last new id is vocab_size)."""

    def train(self, text, vocab_size):
        if vocab_size < 256:
            raise ValueError("vocab_size must be at least 256")
        super().train(text, vocab_size + 1)


class OneMergeTooFew(_Naive):
    """Learns vocab_size - 257 merges (range(256, vocab_size - 1))."""

    def train(self, text, vocab_size):
        if vocab_size < 256:
            raise ValueError("vocab_size must be at least 256")
        super().train(text, max(256, vocab_size - 1))


WRONG = {
    "get_pair_counts": {
        "overlapping pairs counted once": Mistake(counts_without_overlaps, "count overlapping"),
        "every count is 1": Mistake(counts_presence_only, "every count is 1"),
        "the last pair is missing": Mistake(counts_missing_last_pair, "the last pair is missing"),
        "the list wraps around": Mistake(counts_wrap_around, "does not wrap around"),
        "keys are strings": Mistake(counts_list_keys_as_strings, "a tuple (a, b)"),
    },
    "merge": {
        "overlapping pairs merged twice": Mistake(merge_overlaps_twice, "two merges"),
        "overlapping pairs merged right to left": Mistake(merge_right_to_left, "from the left"),
        "only the first occurrence": Mistake(merge_first_only, "only the first occurrence"),
        "the last id dropped": Mistake(merge_drops_last, "the last id was dropped"),
        "the new id starts another pair": Mistake(merge_new_id_pairs_again, "another pair"),
    },
    "BPETokenizer": {
        "merges across word boundaries": Mistake(AcrossWordBoundaries, "split the text"),
        "encoding across pieces": Mistake(EncodesAcrossPieces, "span two pieces"),
        "merges applied in count order": Mistake(CountOrderEncoding, "the order they were learned"),
        "decoding drops bytes (token by token)": Mistake(DecodesTokenByToken, "decode them once"),
        "decoding drops an incomplete character": Mistake(DecodesOnlyKnownText, 'errors="replace"'),
        "ties to the first pair counted": Mistake(TieFirstSeen, "the first one counted"),
        "ties to the largest pair": Mistake(TieLargestPair, "you merged the largest"),
        "ties on the first id only": Mistake(TieFirstIdOnly, "the second id"),
        "distinct pieces unweighted": Mistake(DistinctPiecesUnweighted, "was counted once"),
        "code points instead of bytes": Mistake(CodePoints, "UTF-8 bytes"),
        "one merge too many": Mistake(OneMergeTooMany, "merges were learned, expected"),
        "one merge too few": Mistake(OneMergeTooFew, "merges were learned, expected"),
        "training again keeps the old merges": Mistake(KeepsOldMerges, "replaces"),
        "encode applies no merge": Mistake(EncodesBytesOnly, "applies the merges"),
    },
}
