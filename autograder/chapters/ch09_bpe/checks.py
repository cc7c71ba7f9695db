"""Chapter 9's checks: what the hidden tests of ``solutions/ch09_bpe`` call.

Tokenizers work on Python ints, bytes and strings, not on tensors: there is no dtype or device
to vary, so each check runs once, on inputs drawn from fixed seeds (``random.Random``) and on
the examples the instructions name. Properties come first (the result is a dict, or a list of
ints; the merges are a dict from pairs of ids to new ids 256, 257, ...), values after. When a
value is wrong, the check runs the chapter's known mistakes (``wrong.py``: pairs counted without
overlaps, merges applied in count order, merges across pieces, another tie-breaking rule, ...) on
the same input and names the one the student made; it never prints the hidden texts or the ids.

``BPETokenizer`` is graded behaviour by behaviour, so that one mistake costs what it breaks:

- ``check_bpe_train``: training, on texts in which no two pairs ever tie for the highest count
  (``TIE_FREE``), so that a tie-breaking mistake costs nothing here;
- ``check_bpe_ties``: the tie rule, on single pieces that occur once (``TIES``), so that the
  pre-tokenizer and the weighting of repeated pieces do not matter, comparing only the merges
  that a tie decides;
- ``check_bpe_encode`` and ``check_bpe_decode``: on the merges the student's own ``train``
  learns, the expected ids computed from those merges (``toolkit.through``'s idea: a freedom or a
  mistake that training's cell judges is not charged again), so that a training mistake costs
  training only.

**One bug, one part.** ``BPETokenizer`` calls the student's ``get_pair_counts`` and ``merge``:
while its checks run, the student's own are used where they pass their own checks, and the
reference (which accepts minbpe's optional ``counts`` argument too) stands in where they fail.
In the grader's sandbox every call of a stand-in is a round trip to the judge, so the texts the
class is trained on here are short (hundreds of bytes) and the merges few.

Not here: the reference (``reference.py``) and the known-wrong implementations (``wrong.py``).
"""

from __future__ import annotations

import random

from autograder.toolkit import CheckFailed, Subject, calling, check, raises

from . import wrong
from .reference import BPETokenizer, get_pair_counts, merge

__all__ = [
    "check_get_pair_counts",
    "check_merge",
    "check_bpe_train",
    "check_bpe_ties",
    "check_bpe_encode",
    "check_bpe_decode",
]

# Where the page explains each step (its section titles).
_ON_ALGORITHM = "(chapter 9, section 'The algorithm, on four words')"
_ON_BYTES = "(chapter 9, section 'Byte-level BPE')"
_ON_PIECES = "(chapter 9, section 'Pre-tokenization')"
_ON_ORDER = "(chapter 9, section 'Encoding: the merges in the order learned')"
_ON_DECODING = "(chapter 9, section 'Decoding')"


# --------------------------------------------------------------------------------------------
# Part 1: get_pair_counts
# --------------------------------------------------------------------------------------------


def _random_ids(rng: random.Random, n: int, alphabet: int, low: int = 0) -> list[int]:
    """n ids from a small alphabet (so that pairs repeat and runs like 7, 7, 7 occur)."""
    symbols = rng.sample(range(low, low + 4 * alphabet), alphabet)
    return [rng.choice(symbols) for _ in range(n)]


def _as_counts(result, what: str) -> dict:
    if not isinstance(result, dict):
        raise CheckFailed(
            f"{what} must return a dict {{(a, b): count}}, not a {type(result).__name__}."
        )
    for key, value in result.items():
        if not (isinstance(key, tuple) and len(key) == 2 and all(type(k) is int for k in key)):
            raise CheckFailed(
                f"{what}: every key must be a pair of ids, a tuple (a, b) of two ints; found a "
                f"{type(key).__name__} key."
            )
        if type(value) is not int:
            raise CheckFailed(
                f"{what}: every count must be an int; found a {type(value).__name__}."
            )
    return result


# Known mistakes in counting (from the chapter's wrong bank), each with what to say; a mistake is
# named when it explains the failing input and every probe below.
_COUNT_MISTAKES = [
    (
        wrong.counts_wrap_around,
        "the last id is paired with the first; the list does not wrap around.",
    ),
    (
        wrong.counts_missing_last_pair,
        "the last pair is missing; a list of n ids has n - 1 adjacent pairs.",
    ),
    (
        wrong.counts_without_overlaps,
        "a run like [7, 7, 7] holds the pair (7, 7) twice (at positions 0-1 and 1-2); count "
        "overlapping pairs too: counting is not merging.",
    ),
    (
        wrong.counts_presence_only,
        "every count is 1; count how many times each pair occurs, not only whether it occurs.",
    ),
]
_COUNT_PROBES = [[1, 2, 3, 1, 2], [7, 7, 7], [7, 7, 7, 7, 1], [4, 5, 6, 4, 5, 6, 9]]


def _name_count_mistake(fn: Subject, got: dict, ids, what: str) -> None:
    if got == get_pair_counts(ids):
        return
    answers = [calling(f"get_pair_counts({p})", fn, list(p)) for p in _COUNT_PROBES]
    for mistake, message in _COUNT_MISTAKES:
        if got == mistake(ids) and all(
            a == mistake(p) for a, p in zip(answers, _COUNT_PROBES, strict=True)
        ):
            raise CheckFailed(f"{what}: {message}")
    raise CheckFailed(
        f"{what}: the counts differ from the reference's (each pair (ids[i], ids[i + 1]), for "
        f"every i, counted once) {_ON_ALGORITHM}."
    )


@check()
def check_get_pair_counts(fn: Subject) -> None:
    """get_pair_counts(ids) -> {(a, b): count} of adjacent pairs, overlapping pairs included;
    {} for fewer than two ids; keys are tuples of two ints, counts ints."""
    named = [
        ([], "get_pair_counts([])"),
        ([42], "get_pair_counts([42])"),
        ([1, 2, 3, 1, 2], "get_pair_counts([1, 2, 3, 1, 2])"),
        ([7, 7, 7], "get_pair_counts([7, 7, 7])"),
        ([7, 7, 7, 7], "get_pair_counts([7, 7, 7, 7])"),
        ([300, 5, 300, 5, 300], "get_pair_counts([300, 5, 300, 5, 300])"),
    ]
    rng = random.Random(0)
    drawn = []
    for n, alphabet, low in [(2, 2, 0), (10, 3, 0), (50, 4, 250), (200, 12, 0), (1000, 40, 0)]:
        for _ in range(3):
            drawn.append((_random_ids(rng, n, alphabet, low), f"get_pair_counts of {n} ids"))
    for ids, what in named + drawn:
        got = _as_counts(calling(what, fn, list(ids)), what)
        _name_count_mistake(fn, got, ids, what)


# --------------------------------------------------------------------------------------------
# Part 2: merge
# --------------------------------------------------------------------------------------------


_MERGE_MISTAKES = [
    (
        wrong.merge_right_to_left,
        "in an overlapping run the rightmost pair was merged ([7, 7, 7] with (7, 7) gave "
        "[7, new]); scan from the left, so that [7, 7, 7] gives [new, 7].",
    ),
    (
        wrong.merge_overlaps_twice,
        "in an overlapping run one id went into two merges ([7, 7, 7] with (7, 7) gave "
        "[new, new]); after replacing a pair, skip both of its ids, so that [7, 7, 7] gives "
        "[new, 7].",
    ),
    (wrong.merge_first_only, "only the first occurrence was replaced; replace every one."),
    (
        wrong.merge_drops_last,
        "the last id was dropped; an id at the end that is not part of the pair stays in the "
        "result.",
    ),
    (
        wrong.merge_new_id_pairs_again,
        "the new id took part in another pair: merging is a plain substitution, and new_id, "
        "whatever its value (even the pair's first id), never starts another pair in the same "
        "call, so merge([5, 6, 6], (5, 6), 5) is [5, 6].",
    ),
]
_MERGE_PROBES = [
    ([7, 7, 7], (7, 7), 256),
    ([1, 2, 3, 1, 2, 4], (1, 2), 9),
    ([5, 6, 5, 6, 5], (5, 6), 300),
    ([1, 7, 7, 7, 7, 7, 2], (7, 7), 256),
    ([5, 6, 6, 3], (5, 6), 5),
]


def _name_merge_mistake(fn: Subject, got, ids, pair, new_id, what: str) -> None:
    if not isinstance(got, list) or not all(type(i) is int for i in got):
        raise CheckFailed(f"{what} must return a new list of ints, not a {type(got).__name__}.")
    if got == merge(ids, pair, new_id):
        return
    answers = [calling(f"merge({a}, {b}, {c})", fn, list(a), b, c) for a, b, c in _MERGE_PROBES]
    for mistake, message in _MERGE_MISTAKES:
        if got == mistake(ids, pair, new_id) and all(
            answer == mistake(*probe) for answer, probe in zip(answers, _MERGE_PROBES, strict=True)
        ):
            raise CheckFailed(f"{what}: {message}")
    raise CheckFailed(
        f"{what}: the result differs from the reference's (every occurrence of the pair, found "
        f"left to right, replaced by new_id) {_ON_BYTES}."
    )


@check()
def check_merge(fn: Subject) -> None:
    """merge(ids, pair, new_id) -> a new list in which every occurrence of `pair`, scanning
    left to right (so [7, 7, 7] -> [new, 7]), is replaced by new_id, whatever its value (the
    new id never starts another pair: merge([5, 6, 6], (5, 6), 5) -> [5, 6])."""
    named = [
        ([], (1, 2), 256, "merge([], (1, 2), 256)"),
        ([5], (5, 5), 256, "merge([5], (5, 5), 256)"),
        ([1, 2, 3, 1, 2], (1, 2), 9, "merge([1, 2, 3, 1, 2], (1, 2), 9)"),
        ([1, 2, 3, 1, 2], (2, 1), 9, "merge([1, 2, 3, 1, 2], (2, 1), 9) (a pair that is absent)"),
        ([7, 7, 7], (7, 7), 256, "merge([7, 7, 7], (7, 7), 256)"),
        ([7, 7, 7, 7], (7, 7), 256, "merge([7, 7, 7, 7], (7, 7), 256)"),
        ([7, 7, 7, 7, 7], (7, 7), 256, "merge([7, 7, 7, 7, 7], (7, 7), 256)"),
        ([3, 1, 2], (1, 2), 300, "merge([3, 1, 2], (1, 2), 300) (the pair at the end)"),
        ([1, 2, 3], (1, 2), 300, "merge([1, 2, 3], (1, 2), 300) (the pair at the start)"),
        ([5, 6, 6], (5, 6), 5, "merge([5, 6, 6], (5, 6), 5) (new_id equal to the pair's first)"),
        ([1, 2, 1, 2, 2], (1, 2), 1, "merge([1, 2, 1, 2, 2], (1, 2), 1)"),
        ([7, 7, 7, 7, 7], (7, 7), 7, "merge([7, 7, 7, 7, 7], (7, 7), 7)"),
        (
            [4, 9, 9, 4],
            (4, 9),
            9,
            "merge([4, 9, 9, 4], (4, 9), 9) (new_id equal to the pair's second)",
        ),
    ]
    for ids, pair, new_id, what in named:
        got = calling(what, fn, list(ids), pair, new_id)
        _name_merge_mistake(fn, got, ids, pair, new_id, what)
    rng = random.Random(1)
    for n, alphabet in [(2, 1), (9, 2), (40, 3), (120, 2), (400, 6), (1000, 20)]:
        for trial in range(3):
            ids = _random_ids(rng, n, alphabet)
            i = rng.randrange(n - 1)
            pair = (ids[i], ids[i]) if trial == 0 else (ids[i], ids[i + 1])
            # the third trial reuses an id of the list: a plain substitution all the same
            new_id = rng.choice(ids) if trial == 2 else 256 + rng.randrange(1000)
            what = f"merge of {n} ids, a pair that occurs{' (a, a)' if trial == 0 else ''}"
            got = calling(what, fn, list(ids), pair, new_id)
            _name_merge_mistake(fn, got, ids, pair, new_id, what)


# --------------------------------------------------------------------------------------------
# Part 3: BPETokenizer
# --------------------------------------------------------------------------------------------

_STAND_INS = {"get_pair_counts": get_pair_counts, "merge": merge}

# The classic example of Sennrich, Haddow and Birch (2016), one word per line.
CLASSIC = "\n".join(["low"] * 5 + ["lower"] * 2 + ["newest"] * 6 + ["widest"] * 3)

# A corpus without ties: the prefixes of two words, one per line, "to", "tok", ..., "tokenizer"
# and "vo", "voc", ..., "vocabulary", each repeated so that the pairs' counts are all different
# at every step (multiples of 4 along one word, odd counts along the other). Every merge is
# decided by a count alone, whatever the tie-breaking rule; the 17 merges grow the two words
# letter by letter. (Counting each distinct line once instead would make ties.)
_PREFIXES = [("tokenizer", [4] * 8), ("vocabulary", [2] * 8 + [1])]
NO_TIES = "\n".join(
    word[:k]
    for word, reps in _PREFIXES
    for k, n in zip(range(2, len(word) + 1), reps, strict=True)
    for _ in range(n)
)

# Texts on which no two pairs tie for the highest count at any step up to the vocabulary size
# (tests/test_ch09_bpe.py checks it): (text, vocab_size, what the text is for).
TIE_FREE = [
    (NO_TIES, 270, "a text in which no two pairs tie (vocab_size=270)"),
    # the most frequent pairs span two pieces ("b!", "! "); " abc" occurs five times
    (
        "aab! abc! bc! abc! abc! aab! bc! abc! bc! abc",
        261,
        "a text whose most frequent pairs span two pieces (vocab_size=261)",
    ),
    ("ab ab", 1000, "'ab ab' with vocab_size=1000 (two merges, then no pair is left)"),
    ("\u00e9\u00e9\u00e9 \u00e8", 258, "a text of accented letters (vocab_size=258)"),
]

# Texts that are one piece, occurring once, on which pairs tie for the highest count: (text,
# vocab_size, how many of the first merges a tie decides). The first: b y, y z, z a, a a and
# a b all occur once; the first counted is (98, 121), the largest (122, 97), the smallest
# (97, 97). The second: the smallest, (97, 98), shares its first id with (97, 99), counted
# before it. The third: Wikipedia's example, a tie after the first merge. The fourth: a tie at
# every step.
TIES = [
    ("byzaab", 258, 1),
    ("zacab", 258, 1),
    ("aaabdaaabac", 260, 3),
    ("zyxwvu", 260, 3),
]

# A paragraph of English for the checks (written for them).
_ENGLISH = (
    "A tokenizer turns text into the numbers a model reads. Byte pair encoding starts from the "
    "bytes of the text and merges the pair that occurs most often into a new token, again and "
    "again, until the vocabulary has the size we asked for. The merges are remembered in the "
    "order they were learned, and encoding new text applies them in that same order. Frequent "
    "words become single tokens; rare words are spelled with several pieces; nothing is ever "
    "unknown, because every string is a sequence of bytes."
)

# Texts whose tokens the check compares with the reference's: punctuation, runs of spaces and
# newlines (where a pre-tokenizer's pieces matter), digits, Korean, emoji.
_TEXTS = [
    "the order they were learned",
    "Merges, again and again: 1234 tokens!",
    "rare    words   are\n\n  spelled\twith pieces  \n",
    "bytebytebyte the the the thethe",
    "토큰은 바이트열이다.",
    "emoji 🙂👩‍💻 and é, ü, ñ",
]

# Round trips: decode(encode(s)) == s.
_ROUND_TRIPS = [
    ("", "the empty string"),
    ("!?.,;:'\"()[]{}<>-_=+*/\\|@#$%^&~`", "punctuation"),
    ("한국어 문장도 바이트로 돌아온다. 안녕하세요!", "a Korean sentence"),
    ("🙂🚀👩‍💻🇰🇷 e\u0301 ½ ²", "emoji, a combining accent and other symbols"),
    ("  leading and trailing spaces  \n\n\ttabs\r\n", "whitespace of every kind"),
]

# What the encoding and decoding checks train the student's tokenizer on: (training text,
# vocab_size, label, texts to encode); the expected ids come from the merges it learns.
_MERGE_SETS = [
    (CLASSIC, 266, "Sennrich et al.'s example (vocab_size=266)", ["lowest", "newer", "\nwidest\n"]),
    ("aaabdaaabac", 259, "'aaabdaaabac' (vocab_size=259)", ["aaabdaaabac", "abacaaab"]),
    (
        "ab\nab\nab\nab\nbc\nbc",
        258,
        "ab 4 times and bc twice, one per line (vocab_size=258)",
        ["abcbc", "bcbcab abcbc"],
    ),
    (
        "x  y  z   w    v",
        258,
        "a text with runs of spaces (vocab_size=258)",
        ["a  b", "a   b    c", "  a"],
    ),
    (_ENGLISH, 280, "a paragraph of English (vocab_size=280)", _TEXTS),
]


def _reference(text: str, vocab_size: int) -> BPETokenizer:
    tok = BPETokenizer()
    tok.train(text, vocab_size)
    return tok


def _learned_by(cls, text: str, vocab_size: int) -> list:
    """The merges a known-wrong tokenizer class learns on `text`, in the order learned."""
    tok = cls()
    tok.train(text, vocab_size)
    return _ordered(tok.merges)


def _as_merges(value, what: str) -> dict:
    if not isinstance(value, dict):
        raise CheckFailed(
            f"{what}: merges must be a dict {{(a, b): new id}}, not a {type(value).__name__}."
        )
    for key, new_id in value.items():
        if not (isinstance(key, tuple) and len(key) == 2 and all(type(k) is int for k in key)):
            raise CheckFailed(
                f"{what}: every key of merges must be a pair of ids, a tuple (a, b) of two "
                f"ints; found a {type(key).__name__}."
            )
        if type(new_id) is not int:
            raise CheckFailed(f"{what}: every value of merges must be an int (the new id).")
    if sorted(value.values()) != list(range(256, 256 + len(value))):
        raise CheckFailed(
            f"{what}: the new ids must be 256, 257, 258, ... in the order the merges were "
            "learned (ids 0-255 are the bytes)."
        )
    return value


def _trained(cls: Subject, text: str, vocab_size: int, what: str, tok=None):
    tok = calling("BPETokenizer()", cls) if tok is None else tok
    calling(f"{what}: train", tok.method("train"), text, vocab_size)
    return tok, _as_merges(calling(f"{what}: merges", tok.attribute, "merges"), what)


def _ordered(merges: dict) -> list:
    return sorted(merges, key=merges.get)


_TRAINING_MISTAKES = [
    (
        wrong.AcrossWordBoundaries,
        "some merges join bytes of two different pieces: split the text with "
        "re.findall(SPLIT_PATTERN, text) first, and count and merge pairs inside each piece "
        f"only, so that no token crosses a word boundary {_ON_PIECES}.",
    ),
    (
        wrong.DistinctPiecesUnweighted,
        "a piece that occurs many times was counted once: count every occurrence (or weight "
        "each distinct piece by how often it occurs).",
    ),
    (
        wrong.CodePoints,
        "the pieces were spelled in code points (ord); spell each piece in its UTF-8 bytes, "
        f"list(piece.encode('utf-8')), so that ids 0-255 are bytes {_ON_BYTES}.",
    ),
]

_TIE_MISTAKES = [
    (
        wrong.TieFirstSeen,
        "where several pairs share the highest count, you merged the first one counted (as "
        "max(counts, key=counts.get) does); the rule is the smallest pair (a, b), compared as "
        "tuples of ids.",
    ),
    (
        wrong.TieLargestPair,
        "where several pairs share the highest count, you merged the largest; the rule is the "
        "smallest pair (a, b), compared as tuples of ids.",
    ),
    (
        wrong.TieFirstIdOnly,
        "where several pairs share the highest count, only their first ids were compared; the "
        "rule is the smallest pair (a, b) compared as tuples of ids, so when the first ids are "
        "equal the second id decides: (97, 98) before (97, 99).",
    ),
]


def _name_training_mistake(got: dict, text: str, vocab_size: int, what: str) -> None:
    expected = _ordered(_reference(text, vocab_size).merges)
    mine = _ordered(got)
    if mine == expected:
        return
    for cls, message in _TRAINING_MISTAKES:
        if mine == _learned_by(cls, text, vocab_size):
            raise CheckFailed(f"{what}: {message}")
    if len(mine) != len(expected):
        raise CheckFailed(
            f"{what}: {len(mine)} merges were learned, expected {len(expected)}: train learns "
            "vocab_size - 256 merges, and stops earlier only when no piece has two tokens left."
        )
    first = next(i for i, (a, b) in enumerate(zip(mine, expected, strict=True)) if a != b)
    raise CheckFailed(
        f"{what}: merge number {first + 1} (new id {256 + first}) differs from the reference's: "
        "at each step merge the pair with the highest count over all pieces, then replace it "
        f"everywhere before counting again {_ON_ALGORITHM}."
    )


@check(stand_ins=_STAND_INS)
def check_bpe_train(cls: Subject) -> None:
    """BPETokenizer().train(text, vocab_size): vocab_size - 256 merges (fewer when no pair is
    left; ValueError below 256), counted over the pieces of SPLIT_PATTERN, every occurrence of a
    piece counted, recounted after each merge; merges is {(a, b): new id} with new ids 256,
    257, ...; training again replaces what was learned. Only on texts without ties."""
    tok = calling("BPETokenizer()", cls)
    merges = calling("BPETokenizer().merges", tok.attribute, "merges")
    if merges != {}:
        raise CheckFailed("BPETokenizer().merges must start as an empty dict (nothing learned).")
    raises(ValueError, "BPETokenizer().train(text, 255)", tok.method("train"), "ab", 255)
    what = "BPETokenizer().train('abab', 256)"
    _, got = _trained(cls, "abab", 256, what)
    if got:
        raise CheckFailed(
            f"{what}: {len(got)} merges were learned, expected 0: vocab_size 256 means no merge "
            "at all (merges == {})."
        )

    for text, size, label in TIE_FREE:
        what = f"BPETokenizer trained on {label}"
        _, got = _trained(cls, text, size, what)
        _name_training_mistake(got, text, size, what)

    # Training again replaces what was learned before.
    (first_text, first_size, _), (text, size, _) = TIE_FREE[0], TIE_FREE[1]
    what = "a BPETokenizer trained twice, on two texts"
    tok, before = _trained(cls, first_text, first_size, what)
    calling(f"{what}: train", tok.method("train"), text, size)
    after = calling(f"{what}: merges", tok.attribute, "merges")
    expected = _reference(text, size).merges
    if isinstance(after, dict) and any(p in after for p in set(before) - set(expected)):
        raise CheckFailed(
            f"{what}: the merges of the first training are still there; training replaces "
            "whatever was learned before (start from an empty merges dict, and new ids from 256)."
        )
    _name_training_mistake(_as_merges(after, what), text, size, what)


@check(stand_ins=_STAND_INS)
def check_bpe_ties(cls: Subject) -> None:
    """BPETokenizer().train(text, vocab_size): among the pairs that share the highest count,
    the smallest pair (a, b), compared as tuples of ids, is merged. On single pieces that occur
    once, comparing only the merges a tie decides."""
    for text, size, decided in TIES:
        what = (
            f"BPETokenizer trained on {text!r} (vocab_size={size}), in which several pairs "
            "tie for the highest count"
        )
        _, got = _trained(cls, text, size, what)
        mine = _ordered(got)[:decided]
        expected = _ordered(_reference(text, size).merges)[:decided]
        if mine == expected:
            continue
        if len(mine) < decided:
            raise CheckFailed(
                f"{what}: only {len(mine)} merges were learned, so the ties of "
                "this text could not be checked; train learns vocab_size - 256 "
                "merges."
            )
        for wrong_cls, message in _TIE_MISTAKES:
            if mine == _learned_by(wrong_cls, text, size)[:decided]:
                raise CheckFailed(f"{what}: {message}")
        raise CheckFailed(
            f"{what}: the merges differ from the reference's. Among the pairs with the highest "
            "count take the smallest pair (a, b), compared as tuples of ids: min(counts, "
            "key=lambda p: (-counts[p], p)) does it."
        )


def _ids(value, what: str) -> list[int]:
    if not isinstance(value, list) or not all(type(i) is int for i in value):
        raise CheckFailed(f"{what} must return a list of ints, not a {type(value).__name__}.")
    return value


def _own_merges(cls: Subject, text: str, size: int, label: str):
    """The student's tokenizer trained on `text`, and the merges it learned: encoding and
    decoding are judged on these, so a training mistake (a tie, a weight) costs training only."""
    what = f"BPETokenizer trained on {label}"
    tok, merges = _trained(cls, text, size, what)
    try:
        BPETokenizer(merges)
    except ValueError:
        raise CheckFailed(
            f"{what}: a merge uses an id that is neither a byte nor an earlier merge, so encoding "
            "and decoding cannot be checked; fix training first."
        ) from None
    if not merges:
        raise CheckFailed(f"{what}: no merge was learned, so encoding and decoding cannot be "
                          "checked; fix training first.")
    return tok, merges


def _name_encoding_mistake(got, merges: dict, text: str, what: str) -> None:
    if got == BPETokenizer(merges).encode(text):
        return
    if got == wrong.CountOrderEncoding(merges).encode(text):
        raise CheckFailed(
            f"{what}: the merges were applied in the order of the pairs' counts in the text "
            "being encoded; apply them in the order they were learned (the smallest new id "
            f"first), as training did {_ON_ORDER}."
        )
    if got == wrong.EncodesAcrossPieces(merges).encode(text):
        raise CheckFailed(
            f"{what}: some tokens span two pieces of the text; encode each piece of "
            "re.findall(SPLIT_PATTERN, text) on its own and concatenate the ids "
            f"{_ON_PIECES}."
        )
    if got == list(text.encode("utf-8")):
        raise CheckFailed(
            f"{what}: the result is the text's bytes; encode applies the merges that train "
            "learned, in the order learned."
        )
    raise CheckFailed(
        f"{what}: the ids differ from those the merges your train learned give: for each piece "
        "of the text, start from its UTF-8 bytes and apply the merges in the order learned, each "
        "to every occurrence, until none applies."
    )


@check(stand_ins=_STAND_INS)
def check_bpe_encode(cls: Subject) -> None:
    """encode(text) -> list of ints: an untrained tokenizer gives the UTF-8 bytes; a trained one
    cuts the text into the pieces of SPLIT_PATTERN and applies the merges it learned to each
    piece in the order learned (the smallest new id first). Judged on the merges the student's
    own train learns."""
    tok = calling("BPETokenizer()", cls)
    for text in ("hello", "hé 한", ""):
        what = f"an untrained BPETokenizer's encode({text!r})"
        got = _ids(calling(what, tok.method("encode"), text), what)
        if got == [ord(c) for c in text] and got != list(text.encode("utf-8")):
            raise CheckFailed(
                f"{what}: these are code points (ord); a token is a byte: encode the text into "
                f"its UTF-8 bytes, list(text.encode('utf-8')) {_ON_BYTES}."
            )
        if got != list(text.encode("utf-8")):
            raise CheckFailed(
                f"{what} must return the UTF-8 bytes of the text as ints (with no merges "
                "learned, each byte is a token)."
            )
    for text, size, label, words in _MERGE_SETS:
        tok, merges = _own_merges(cls, text, size, label)
        for i, word in enumerate(words):
            what = f"BPETokenizer trained on {label}, encode of test text {i + 1}"
            got = _ids(calling(what, tok.method("encode"), word), what)
            _name_encoding_mistake(got, merges, word, what)


@check(stand_ins=_STAND_INS)
def check_bpe_decode(cls: Subject) -> None:
    """decode(ids) -> str: each id's bytes (a merged id: its two halves' bytes), joined, then
    decoded once as UTF-8 with errors="replace"; so decode gives back every text from its ids,
    and an incomplete character becomes U+FFFD. Judged on ids of the merges the student's own
    train learns."""
    tok = calling("BPETokenizer()", cls)
    for text in ("hello", "hé 한"):
        what = "an untrained BPETokenizer's decode"
        if calling(what, tok.method("decode"), list(text.encode("utf-8"))) != text:
            raise CheckFailed(
                f"{what} of a text's UTF-8 bytes must give the text back: join the bytes of all "
                "the ids first, then decode them once (a character of several bytes spans "
                f"several ids) {_ON_DECODING}."
            )
    text, size, label, _ = _MERGE_SETS[1]
    tok, merges = _own_merges(cls, text, size, label)
    ids = BPETokenizer(merges).encode(text)
    what = f"BPETokenizer trained on {label}, decode of the ids of the same text"
    if calling(what, tok.method("decode"), ids) != text:
        raise CheckFailed(
            f"{what} does not give the text back: a merged id stands for the bytes of its two "
            "halves, joined (ids learned later may be made of ids learned earlier)."
        )

    text, size, label, texts = _MERGE_SETS[-1]
    tok, merges = _own_merges(cls, text, size, label)
    mine = BPETokenizer(merges)
    long_text = "\n".join([_ENGLISH, *texts, *(s for s, _ in _ROUND_TRIPS)])
    cases = [(s, f"test text {i + 1}") for i, s in enumerate(texts)]
    for text, name in cases + _ROUND_TRIPS + [(long_text, "a long text")]:
        what = f"BPETokenizer trained on {label}, decode of the ids of {name}"
        if calling(what, tok.method("decode"), mine.encode(text)) != text:
            raise CheckFailed(
                f"{what} does not give the text back: join the tokens' bytes first, then decode "
                "them as UTF-8 once, so that a character whose bytes are split over two tokens "
                f"survives {_ON_DECODING}."
            )
    what = f"BPETokenizer trained on {label}, decode of ids that cut a character in two"
    if calling(what, tok.method("decode"), [0xED, 0x95, 0x9C, 0xED, 0x95]) != "한\ufffd":
        raise CheckFailed(
            f"{what} must replace the incomplete character by U+FFFD: decode the joined bytes "
            'with errors="replace".'
        )
