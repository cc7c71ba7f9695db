"""Chapter 9's checks: what the hidden tests of ``solutions/ch09_bpe`` call.

Tokenizers work on Python ints, bytes and strings, not on tensors: there is no dtype or device
to vary, so each check runs once, on inputs drawn from fixed seeds (``random.Random``) and on
the examples the instructions name. Properties come first (the result is a dict, or a list of
ints; the merges are a dict from pairs of ids to new ids 256, 257, ...), values after. When a
value is wrong, the check computes the known mistakes (pairs counted without overlaps, merges
applied in count order, merges across pieces, another tie-breaking rule, ...) and names the one
the student made; it never prints the hidden texts or the ids.

**One bug, one part.** ``BPETokenizer``'s check runs with the reference standing in for
``get_pair_counts`` and ``merge`` (``stand_ins``): a student's class that calls them by name, as
the instructions ask, is judged on its own logic. In the grader's sandbox every call of a
stand-in is a round trip to the judge, so the texts the class is trained on here are short
(hundreds of bytes) and the merges few.

Not here: the reference (``reference.py``) and the known-wrong implementations (``wrong.py``),
which the checks of Parts 1 and 2 also use to name a student's mistake.
"""

from __future__ import annotations

import random
from collections import Counter

from autograder.toolkit import CheckFailed, Subject, calling, check, raises

from . import wrong
from .reference import BPETokenizer, get_pair_counts, merge, pretokenize

__all__ = ["check_get_pair_counts", "check_merge", "check_bpe_tokenizer"]

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
]
_MERGE_PROBES = [
    ([7, 7, 7], (7, 7), 256),
    ([1, 2, 3, 1, 2, 4], (1, 2), 9),
    ([5, 6, 5, 6, 5], (5, 6), 300),
    ([1, 7, 7, 7, 7, 7, 2], (7, 7), 256),
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
    left to right (so [7, 7, 7] -> [new, 7]), is replaced by new_id."""
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
            new_id = 256 + rng.randrange(1000)
            what = f"merge of {n} ids, a pair that occurs{' (a, a)' if trial == 0 else ''}"
            got = calling(what, fn, list(ids), pair, new_id)
            _name_merge_mistake(fn, got, ids, pair, new_id, what)


# --------------------------------------------------------------------------------------------
# Part 3: BPETokenizer
# --------------------------------------------------------------------------------------------

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


def _pieces(text: str, split: bool) -> list[list[int]]:
    chunks = pretokenize(text) if split else ([text] if text else [])
    return [list(c.encode("utf-8")) for c in chunks]


def _train_variant(text: str, vocab_size: int, *, split=True, weighted=True, tie="smallest"):
    """Naive BPE training with one rule changed: the known mistakes, to name them."""
    pieces = _pieces(text, split)
    if not weighted:
        pieces = [list(p) for p in {tuple(p) for p in pieces}]
    merges = {}
    for new_id in range(256, vocab_size):
        counts: dict = {}
        for ids in pieces:
            for pair in zip(ids, ids[1:], strict=False):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        if tie == "smallest":
            pair = min(counts, key=lambda p: (-counts[p], p))
        elif tie == "largest":
            pair = max(counts, key=lambda p: (counts[p], p))
        else:  # the first pair seen with the top count
            pair = max(counts, key=counts.get)
        merges[pair] = new_id
        pieces = [merge(ids, pair, new_id) for ids in pieces]
    return merges


def _encode_variant(merges: dict, text: str, *, split=True, order="learned") -> list[int]:
    out = []
    for ids in _pieces(text, split):
        while len(ids) >= 2:
            counts = get_pair_counts(ids)
            known = [p for p in counts if p in merges]
            if not known:
                break
            if order == "learned":
                pair = min(known, key=merges.get)
            else:  # the pair most frequent in this text
                pair = max(known, key=lambda p: (counts[p], -merges[p]))
            ids = merge(ids, pair, merges[pair])
        out += ids
    return out


def tie_free_size(text: str, limit: int) -> int:
    """The vocabulary size up to which every merge of `text` has a unique top count."""
    pieces = _pieces(text, True)
    for new_id in range(256, limit):
        top = Counter(p for ids in pieces for p in zip(ids, ids[1:], strict=False)).most_common(2)
        if not top or (len(top) == 2 and top[0][1] == top[1][1]):
            return new_id
        pieces = [merge(ids, top[0][0], new_id) for ids in pieces]
    return limit


def _reference(text: str, vocab_size: int) -> BPETokenizer:
    tok = BPETokenizer()
    tok.train(text, vocab_size)
    return tok


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


def _trained(cls: Subject, text: str, vocab_size: int, what: str):
    tok = calling("BPETokenizer()", cls)
    calling(f"{what}: train", tok.method("train"), text, vocab_size)
    return tok, _as_merges(calling(f"{what}: merges", tok.attribute, "merges"), what)


def _ordered(merges: dict) -> list:
    return sorted(merges, key=merges.get)


def _name_training_mistake(got: dict, text: str, vocab_size: int, what: str) -> None:
    expected = _reference(text, vocab_size).merges
    if _ordered(got) == _ordered(expected):
        return
    variants = [
        (
            dict(split=False),
            "some merges join bytes of two different pieces: split the text with "
            "re.findall(SPLIT_PATTERN, text) first, and count and merge pairs inside each "
            f"piece only, so that no token crosses a word boundary "
            f"{_ON_PIECES}.",
        ),
        (
            dict(tie="first"),
            "where several pairs share the highest count, you merged the first one counted; "
            "the rule is the smallest pair (a, b), compared as tuples of ids.",
        ),
        (
            dict(tie="largest"),
            "where several pairs share the highest count, you merged the largest; the rule is "
            "the smallest pair (a, b), compared as tuples of ids.",
        ),
        (
            dict(weighted=False),
            "a piece that occurs many times was counted once: count every occurrence (or "
            "weight each distinct piece by how often it occurs).",
        ),
    ]
    for kwargs, message in variants:
        if _ordered(got) == _ordered(_train_variant(text, vocab_size, **kwargs)):
            raise CheckFailed(f"{what}: {message}")
    if len(got) != len(expected):
        raise CheckFailed(
            f"{what}: {len(got)} merges were learned, expected {len(expected)}: train learns "
            "vocab_size - 256 merges, and stops earlier only when no piece has two tokens left."
        )
    first = next(
        i for i, (a, b) in enumerate(zip(_ordered(got), _ordered(expected), strict=False)) if a != b
    )
    raise CheckFailed(
        f"{what}: merge number {first + 1} (new id {256 + first}) differs from the reference's: "
        "at each step merge the pair with the highest count over all pieces (the smallest pair "
        "among equal counts), then replace it everywhere before counting again "
        f"{_ON_ALGORITHM}."
    )


def _ids(value, what: str) -> list[int]:
    if not isinstance(value, list) or not all(type(i) is int for i in value):
        raise CheckFailed(f"{what} must return a list of ints, not a {type(value).__name__}.")
    return value


def _name_encoding_mistake(got, merges: dict, text: str, what: str) -> None:
    expected = _encode_variant(merges, text)
    if got == expected:
        return
    if got == _encode_variant(merges, text, order="count"):
        raise CheckFailed(
            f"{what}: the merges were applied in the order of the pairs' counts in the text "
            "being encoded; apply them in the order they were learned (the smallest new id "
            "first), as training did " + _ON_ORDER + "."
        )
    if got == _encode_variant(merges, text, split=False):
        raise CheckFailed(
            f"{what}: some tokens span two pieces of the text; encode each piece of "
            "re.findall(SPLIT_PATTERN, text) on its own and concatenate the ids."
        )
    raise CheckFailed(
        f"{what}: the ids differ from the reference's: for each piece of the text, start from "
        "its UTF-8 bytes and apply the learned merges in the order learned, each to every "
        "occurrence, until none applies."
    )


@check(stand_ins={"get_pair_counts": get_pair_counts, "merge": merge})
def check_bpe_tokenizer(cls: Subject) -> None:
    """BPETokenizer(): byte-level BPE with SPLIT_PATTERN pre-tokenization. train(text,
    vocab_size) learns vocab_size - 256 merges (ValueError below 256; ties to the smallest pair;
    no merge across pieces), merges is {(a, b): new id} with ids 256, 257, ...; encode applies
    the merges in the order learned; decode joins the bytes and decodes UTF-8 with
    errors="replace", so decode(encode(s)) == s."""
    # An untrained tokenizer: bytes in, bytes out.
    tok = calling("BPETokenizer()", cls)
    merges = calling("BPETokenizer().merges", tok.attribute, "merges")
    if merges != {}:
        raise CheckFailed("BPETokenizer().merges must start as an empty dict (nothing learned).")
    for text in ("hello", "hé 한"):
        what = "an untrained BPETokenizer's encode"
        got = _ids(calling(what, tok.method("encode"), text), what)
        if got != list(text.encode("utf-8")):
            raise CheckFailed(
                f"{what} must return the UTF-8 bytes of the text as ints (with no merges "
                "learned, each byte is a token)."
            )
        what = "an untrained BPETokenizer's decode"
        if calling(what, tok.method("decode"), list(text.encode("utf-8"))) != text:
            raise CheckFailed(
                f"{what} of a text's UTF-8 bytes must give the text back: join the bytes of all "
                "the ids first, then decode them once (a character of several bytes spans "
                "several ids)."
            )
    fresh = calling("BPETokenizer()", cls)
    raises(ValueError, "BPETokenizer().train(text, 255)", fresh.method("train"), "ab", 255)

    # Counting and merging, with no tie to break.
    what = "BPETokenizer trained on a text in which no two pairs tie (vocabulary size 273)"
    _, got = _trained(cls, NO_TIES, 273, what)
    _name_training_mistake(got, NO_TIES, 273, what)

    # Ties: b y, z a and a b are equally frequent (the first counted, the largest and the smallest
    # pair); so are the pairs of "zyab".
    for text, size in (("by\nza\nab\nby\nza\nab", 260), ("zyab zyab", 262)):
        what = "BPETokenizer trained on a text in which several pairs tie for the highest count"
        _, got = _trained(cls, text, size, what)
        _name_training_mistake(got, text, size, what)

    # The classic example: e + s first (9 times), then es + t; "lowest" as low + est.
    what = "BPETokenizer trained on Sennrich et al.'s example (vocab_size=266)"
    tok, got = _trained(cls, CLASSIC, 266, what)
    first = _ordered(got)[:2]
    if first[:1] != [(101, 115)]:
        raise CheckFailed(
            f"{what}: the first merge must be e + s, the pair (101, 115), which occurs 9 times "
            "(6 in newest, 3 in widest; s + t also occurs 9 times, and (101, 115) is the "
            "smaller pair)."
        )
    if first[1:] != [(256, 116)]:
        raise CheckFailed(
            f"{what}: the second merge must be es + t, the pair (256, 116): after the first "
            "merge, count the pairs again with es as one token."
        )
    _name_training_mistake(got, CLASSIC, 266, what)
    for word in ("lowest", "newer", "\nwidest\n"):
        ewhat = f"{what}, encode({word!r})"
        ids = _ids(calling(ewhat, tok.method("encode"), word), ewhat)
        _name_encoding_mistake(ids, got, word, ewhat)

    # Wikipedia's example: 3 merges; the text encodes to [258, 100, 258, 97, 99].
    what = "BPETokenizer trained on 'aaabdaaabac' (vocab_size=259)"
    tok, got = _trained(cls, "aaabdaaabac", 259, what)
    _name_training_mistake(got, "aaabdaaabac", 259, what)
    ids = _ids(calling(f"{what}, encode", tok.method("encode"), "aaabdaaabac"), what)
    if ids != [258, 100, 258, 97, 99]:
        _name_encoding_mistake(ids, got, "aaabdaaabac", f"{what}, encode('aaabdaaabac')")

    # Pieces: the most frequent pairs of this text cross the pieces' boundaries.
    text = "a! a! a! a! bc bc! x.y.z"
    what = "BPETokenizer trained on a text whose most frequent pairs span two pieces"
    _, got = _trained(cls, text, 262, what)
    _name_training_mistake(got, text, 262, what)

    # Encoding order: a b is learned before b c, but "abcbc" holds b c twice and a b once.
    ordered = "ab\nab\nab\nab\nbc\nbc"
    what = "BPETokenizer trained on ab 4 times and bc twice, one per line (vocab_size=258)"
    tok, got = _trained(cls, ordered, 258, what)
    _name_training_mistake(got, ordered, 258, what)
    for text in ("abcbc", "bcbcab abcbc"):
        ewhat = f"{what}, encode({text!r})"
        _name_encoding_mistake(
            _ids(calling(ewhat, tok.method("encode"), text), ewhat), got, text, ewhat
        )

    # Encoding in pieces: two spaces are a learned token, but "x  y" has them in two pieces.
    what = "BPETokenizer trained on a text with runs of spaces (vocab_size=258)"
    spaced = "x  y  z   w    v"
    tok, got = _trained(cls, spaced, 258, what)
    _name_training_mistake(got, spaced, 258, what)
    for text in ("a  b", "a   b    c", "  a"):
        ewhat = f"{what}, encode({text!r})"
        _name_encoding_mistake(
            _ids(calling(ewhat, tok.method("encode"), text), ewhat), got, text, ewhat
        )

    # A paragraph of English: encode and decode other texts, round trips.
    size = 256 + 24
    what = f"BPETokenizer trained on a paragraph of English (vocab_size={size})"
    tok, got = _trained(cls, _ENGLISH, size, what)
    _name_training_mistake(got, _ENGLISH, size, what)
    for i, text in enumerate(_TEXTS):
        ewhat = f"{what}, encode of test text {i + 1}"
        ids = _ids(calling(ewhat, tok.method("encode"), text), ewhat)
        _name_encoding_mistake(ids, got, text, ewhat)
        dwhat = f"{what}, decode of the ids of test text {i + 1}"
        if calling(dwhat, tok.method("decode"), _encode_variant(got, text)) != text:
            raise CheckFailed(
                f"{dwhat} does not give the text back: join the tokens' bytes first, then "
                "decode them as UTF-8 once (a character can be split over two tokens)."
            )

    # Round trips, on the same trained tokenizer.
    long_text = "\n".join([_ENGLISH, *_TEXTS, *(s for s, _ in _ROUND_TRIPS)])
    for text, name in _ROUND_TRIPS + [(long_text, "a long text")]:
        rwhat = f"{what}: decode(encode(s)) for {name}"
        ids = _ids(calling(rwhat, tok.method("encode"), text), rwhat)
        if any(not 0 <= i < size for i in ids):
            raise CheckFailed(f"{rwhat}: encode returned an id outside 0..vocab_size - 1.")
        if calling(rwhat, tok.method("decode"), ids) != text:
            raise CheckFailed(
                f"{rwhat} is not s: decode joins the tokens' bytes and decodes them as UTF-8 "
                "once, so that a character whose bytes are split over two tokens survives "
                + _ON_DECODING
                + "."
            )
    dwhat = f"{what}: decode of an id list that cuts a character in two"
    if calling(dwhat, tok.method("decode"), [0xED, 0x95, 0x9C, 0xED, 0x95]) != "한\ufffd":
        raise CheckFailed(
            f"{dwhat} must replace the incomplete character by U+FFFD: decode the joined bytes "
            'with errors="replace".'
        )
