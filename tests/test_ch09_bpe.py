"""Chapter 9's reference against Hugging Face `tokenizers`, and what its checks promise beyond the
contract; the corpus it trains on and the benchmark that times it.

What every chapter must meet (the reference passes its checks, each known mistake fails its part
and only its part, ...) is in test_chapter_contract.py. Tokenizers work on ints, bytes and
strings: there is no tensor here, so no dtype or device to vary.
"""

import inspect
import json
import random
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

from attention_data import corpus
from autograder.chapters.ch09_bpe import checks, right, wrong
from autograder.chapters.ch09_bpe import reference as ref
from autograder.toolkit import CheckFailed

from chapter_helpers import failing_cells, judge_with_mistake

REPO = Path(__file__).resolve().parents[1]


def _random_text(seed: int, n: int) -> str:
    """n characters from every corner of Unicode (no lone surrogates, which UTF-8 cannot encode),
    with spaces, newlines and ASCII letters often enough to make words."""
    rng = random.Random(seed)
    pools = [
        "abcdefghij  ",
        " \n\t\r",
        "0123456789",
        ".,;:!?'\"()_-",
        "가나다라마바사아한국어",
        "éüñçßøåœ",
        "🙂🚀👩\u200d💻🇰🇷",
        "".join(chr(c) for c in range(0x300, 0x370)),  # combining marks
    ]
    out = []
    while len(out) < n:
        if rng.random() < 0.05:
            c = rng.randrange(0x10FFFF)
            if not 0xD800 <= c <= 0xDFFF:
                out.append(chr(c))
        else:
            out.append(rng.choice(rng.choice(pools)))
    return "".join(out)


TEXTS = {
    "classic": checks.CLASSIC,
    "no ties": checks.NO_TIES,
    "english": corpus.sample(6_000, seed=3),
    "korean": corpus.sample(6_000, seed=4, lang="ko"),
    "random unicode": _random_text(0, 3_000),
}


# --------------------------------------------------------------------------------------------
# The reference
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_pieces_give_the_text_back(seed):
    text = _random_text(seed, 2_000)
    pieces = ref.pretokenize(text)
    assert "".join(pieces) == text
    assert all(pieces)


def test_split_pattern_examples():
    assert ref.pretokenize("Hi  there, 42!") == ["Hi", " ", " there", ",", " 42", "!"]
    assert ref.pretokenize("a_b  \n\nc") == ["a", "_", "b", "  \n", "\n", "c"]
    assert ref.pretokenize("한국어 문장") == ["한국어", " 문장"]


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([], {}),
        ([1], {}),
        ([1, 2, 3, 1, 2], {(1, 2): 2, (2, 3): 1, (3, 1): 1}),
        ([7, 7, 7], {(7, 7): 2}),
        ([7, 7, 7, 7], {(7, 7): 3}),
    ],
)
def test_get_pair_counts(ids, expected):
    assert ref.get_pair_counts(ids) == expected


def test_get_pair_counts_adds_to_the_counts_it_is_given_as_minbpe_does():
    counts = {(1, 2): 3}
    assert ref.get_pair_counts([1, 2, 1], counts) is counts
    assert counts == {(1, 2): 4, (2, 1): 1}


@pytest.mark.parametrize(
    ("ids", "pair", "new_id", "expected"),
    [
        ([1, 2, 3, 1, 2], (1, 2), 9, [9, 3, 9]),
        ([7, 7, 7], (7, 7), 9, [9, 7]),
        ([7, 7, 7, 7], (7, 7), 9, [9, 9]),
        ([7, 7, 7, 7, 7], (7, 7), 9, [9, 9, 7]),
        ([1, 2], (2, 1), 9, [1, 2]),
        ([], (1, 2), 9, []),
        ([5, 6, 6], (5, 6), 5, [5, 6]),  # the new id equals the pair's first: no second merge
        ([7, 7, 7, 7, 7], (7, 7), 7, [7, 7, 7]),
    ],
)
def test_merge(ids, pair, new_id, expected):
    before = list(ids)
    assert ref.merge(ids, pair, new_id) == expected
    assert ids == before


@pytest.mark.parametrize("name", TEXTS)
@pytest.mark.parametrize("vocab_size", [256, 257, 300, 400])
def test_naive_and_incremental_trainers_learn_the_same_merges(name, vocab_size):
    text = TEXTS[name]
    merges = ref.train_incremental(text, vocab_size)
    assert merges == ref.train_naive(text, vocab_size)
    assert list(merges.values()) == list(range(256, 256 + len(merges)))


def test_the_classic_example():
    merges = list(ref.train_incremental(checks.CLASSIC, 266))
    assert merges[:2] == [(101, 115), (256, 116)]  # e + s, then es + t
    tok = ref.BPETokenizer()
    tok.train(checks.CLASSIC, 266)
    assert [tok.vocab[i] for i in tok.encode("lowest")] == [b"low", b"est"]


def test_wikipedias_example():
    tok = ref.BPETokenizer()
    tok.train("aaabdaaabac", 259)
    assert tok.merges == {(97, 97): 256, (97, 98): 257, (256, 257): 258}
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]


def test_training_stops_when_no_pair_is_left_and_refuses_a_small_vocabulary():
    tok = ref.BPETokenizer()
    tok.train("ab ab", 1_000)
    assert tok.merges == {(97, 98): 256, (32, 256): 257}
    with pytest.raises(ValueError):
        tok.train("ab", 255)


@pytest.mark.parametrize("name", TEXTS)
def test_round_trip_and_ids_in_range(name):
    tok = ref.BPETokenizer()
    tok.train(TEXTS["english"], 400)
    for seed in range(3):
        text = TEXTS[name] + _random_text(seed, 500)
        ids = tok.encode(text)
        assert all(0 <= i < 400 for i in ids)
        assert tok.decode(ids) == text


@pytest.mark.parametrize("name", TEXTS)
def test_a_tokenizer_given_merges_encodes_and_decodes_as_the_trained_one(name):
    trained = ref.BPETokenizer()
    trained.train(TEXTS["english"], 400)
    given = ref.BPETokenizer(trained.merges)
    assert given.merges == trained.merges and given.vocab == trained.vocab
    assert given.encode(TEXTS[name]) == trained.encode(TEXTS[name])


@pytest.mark.parametrize(
    "merges", [{(97, 98): 257}, {(97, 98): 256, (98, 99): 256}, {(97, 300): 256}]
)
def test_merges_that_no_training_gives_are_refused(merges):
    with pytest.raises(ValueError):
        ref.BPETokenizer(merges)


def test_a_lone_surrogate_cannot_be_encoded():
    """The page and the notebook promise the round trip for strings UTF-8 can encode only."""
    with pytest.raises(UnicodeEncodeError):
        ref.BPETokenizer().encode("\ud800")


def test_decode_replaces_an_incomplete_character():
    tok = ref.BPETokenizer()
    assert tok.decode([0xED, 0x95, 0x9C, 0xED, 0x95]) == "한\ufffd"


def test_merges_never_span_two_pieces():
    tok = ref.BPETokenizer()
    tok.train(TEXTS["english"] + TEXTS["random unicode"], 700)
    for new_id in tok.merges.values():
        text = tok.vocab[new_id].decode("utf-8", errors="replace")
        assert len(ref.pretokenize(text)) == 1, tok.vocab[new_id]


# --------------------------------------------------------------------------------------------
# Against Hugging Face tokenizers
# --------------------------------------------------------------------------------------------

_PRINTABLE = [*range(33, 127), *range(161, 173), *range(174, 256)]
_BYTE_CHAR = {b: chr(b) for b in _PRINTABLE}
_BYTE_CHAR.update(
    {b: chr(256 + i) for i, b in enumerate(b for b in range(256) if b not in _PRINTABLE)}
)


def _hf_pre_tokenizer():
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(ref.SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _hf_trained(text: str, vocab_size: int) -> list[tuple[bytes, bytes]]:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _hf_pre_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([text], trainer)
    char_byte = {c: b for b, c in _BYTE_CHAR.items()}
    merges = json.loads(tok.to_str())["model"]["merges"]
    pairs = [m.split(" ") if isinstance(m, str) else m for m in merges]
    return [tuple(bytes(char_byte[c] for c in part) for part in pair) for pair in pairs]


def _as_bytes(tok: ref.BPETokenizer) -> list[tuple[bytes, bytes]]:
    return [(tok.vocab[a], tok.vocab[b]) for a, b in tok.merges]


def test_without_ties_tokenizers_learns_exactly_our_merges():
    tok = ref.BPETokenizer()
    tok.train(checks.NO_TIES, 273)
    assert _hf_trained(checks.NO_TIES, 273) == _as_bytes(tok)


@pytest.mark.parametrize("name", ["english", "korean"])
def test_every_merge_of_tokenizers_has_the_top_count_at_its_step(name):
    """With ties, tokenizers' order may differ from ours, but it is the same algorithm."""
    text = TEXTS[name]
    theirs = _hf_trained(text, 400)
    ids_of = {bytes([b]): b for b in range(256)}
    pieces = Counter(ref.pretokenize(text))
    seqs = {piece: list(piece.encode("utf-8")) for piece in pieces}
    for new_id, (a, b) in enumerate(theirs, start=256):
        counts = Counter()
        for piece, ids in seqs.items():
            for pair, n in ref.get_pair_counts(ids).items():
                counts[pair] += n * pieces[piece]
        pair = (ids_of[a], ids_of[b])
        assert counts[pair] == max(counts.values())
        ids_of[a + b] = new_id
        seqs = {piece: ref.merge(ids, pair, new_id) for piece, ids in seqs.items()}


@pytest.mark.parametrize("name", TEXTS)
def test_encoding_equals_tokenizers_with_our_merges(name):
    """Our merges copied into a tokenizers BPE model: the same ids for every text."""
    tok = ref.BPETokenizer()
    tok.train(TEXTS["english"] + TEXTS["korean"], 600)
    as_text = {i: "".join(_BYTE_CHAR[b] for b in data) for i, data in tok.vocab.items()}
    vocab = {s: i for i, s in as_text.items()}
    merges = [(as_text[a], as_text[b]) for a, b in tok.merges]
    theirs = Tokenizer(models.BPE(vocab, merges))
    theirs.pre_tokenizer = _hf_pre_tokenizer()
    text = TEXTS[name]
    assert theirs.encode(text).ids == tok.encode(text)


# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------


def _tie_free_size(text: str, limit: int) -> int:
    """The vocabulary size up to which every merge of `text` has a unique top count."""
    pieces = [list(p.encode("utf-8")) for p in ref.pretokenize(text)]
    for new_id in range(256, limit):
        top = Counter(p for ids in pieces for p in zip(ids, ids[1:], strict=False)).most_common(2)
        if not top:
            return limit
        if len(top) == 2 and top[0][1] == top[1][1]:
            return new_id
        pieces = [ref.merge(ids, top[0][0], new_id) for ids in pieces]
    return limit


def test_the_tie_free_corpus_has_no_tie():
    assert _tie_free_size(checks.NO_TIES, 400) == 400
    assert len(ref.train_incremental(checks.NO_TIES, 400)) == 17  # then no pair is left


@pytest.mark.parametrize(("text", "size"), [(t, n) for t, n, _ in checks.TIE_FREE])
def test_the_training_check_trains_on_texts_without_ties(text, size):
    """So a tie-breaking mistake costs the ties' cell only."""
    assert _tie_free_size(text, size) == size
    for mistake in ("ties to the first pair counted", "ties to the largest pair"):
        tok = wrong.WRONG["BPETokenizer"][mistake].impl()
        tok.train(text, size)
        assert tok.merges == ref.train_naive(text, size)


@pytest.mark.parametrize(("text", "size", "decided"), checks.TIES)
def test_the_ties_check_trains_on_single_pieces_whose_first_merges_a_tie_decides(
    text, size, decided
):
    """One piece that occurs once: the pre-tokenizer and the weights change nothing; and at least
    one of the merges compared is decided by a tie."""
    assert ref.pretokenize(text) == [text]
    assert _tie_free_size(text, 256 + decided) < 256 + decided
    for mistake in ("merges across word boundaries", "distinct pieces unweighted",
                    "one merge too many", "one merge too few"):  # fmt: skip
        tok = wrong.WRONG["BPETokenizer"][mistake].impl()
        tok.train(text, size)
        assert list(tok.merges)[:decided] == list(ref.train_naive(text, size))[:decided]


@pytest.mark.parametrize(
    ("mistake", "failing"),
    [
        ("ties to the first pair counted", {"bpe_ties_tests"}),
        ("distinct pieces unweighted", {"bpe_train_tests"}),
        ("merges applied in count order", {"bpe_encode_tests"}),
        ("decoding drops bytes (token by token)", {"bpe_decode_tests"}),
    ],
)
def test_a_mistake_costs_the_behaviour_it_breaks(mistake, failing):
    """A wrong tie-break costs the ties' cell only (issue 19: it used to cost all of Part 3)."""
    impl = wrong.WRONG["BPETokenizer"][mistake].impl
    assert failing_cells("ch09_bpe", "BPETokenizer", impl) == failing


def test_a_class_that_does_not_call_the_parts_by_name_is_judged_on_its_own():
    """The stand-ins reach only names the class looks up; a self-contained class passes too."""

    class SelfContained(ref.BPETokenizer):
        def train(self, text, vocab_size):
            self._use(ref.train_naive(text, vocab_size))

    for check in (checks.check_bpe_train, checks.check_bpe_ties, checks.check_bpe_encode,
                  checks.check_bpe_decode):  # fmt: skip
        check(SelfContained)


# minbpe's signature, wrong on overlapping pairs (it fails Part 1), and a tokenizer that calls it
# with two arguments (issue 19): the reference stands in and accepts the call.
_MINBPE_WRONG_COUNTS = """
def get_pair_counts(ids, counts=None):
    counts = {} if counts is None else counts
    i = 0
    while i + 1 < len(ids):
        pair = (ids[i], ids[i + 1])
        counts[pair] = counts.get(pair, 0) + 1
        i += 2 if ids[i] == ids[i + 1] else 1
    return counts
"""


def _minbpe_tokenizer_source() -> str:
    return textwrap.dedent(inspect.getsource(right.MinbpeStyle)) + "\nBPETokenizer = MinbpeStyle\n"


def test_a_minbpe_tokenizer_keeps_part_3_when_its_two_argument_counting_fails_part_1():
    from autograder.chapters import load

    namespace = {"__name__": "__main__"}
    merge = inspect.getsource(right.merge_skip_flag) + "\nmerge = merge_skip_flag\n"
    exec(f"import re\nSPLIT_PATTERN = {ref.SPLIT_PATTERN!r}\n{merge}", namespace)
    exec(_MINBPE_WRONG_COUNTS + _minbpe_tokenizer_source(), namespace)
    with pytest.raises(CheckFailed, match="count overlapping"):
        checks.check_get_pair_counts(namespace["get_pair_counts"])
    for part in load("ch09_bpe").parts_of("BPETokenizer"):
        part.check(namespace["BPETokenizer"])


@pytest.mark.slow
@pytest.mark.xdist_group("engine")
def test_in_the_sandbox_a_minbpe_tokenizer_loses_only_part_1():
    """Through the sandbox: the judge's get_pair_counts stands in for the failing one, takes the
    tokenizer's two-argument call and returns the updated counts. (Training is where the
    tokenizer counts with two arguments; encoding and decoding, which make thousands of calls to
    the stand-in, are left to the in-process test above.)"""
    verdicts = judge_with_mistake(
        "ch09_bpe",
        _MINBPE_WRONG_COUNTS + _minbpe_tokenizer_source(),
        grade_ids={"get_pair_counts_tests", "bpe_train_tests", "bpe_ties_tests"},
    )
    failed = {gid for gid, (passed, _) in verdicts.items() if not passed}
    assert failed == {"get_pair_counts_tests"} and len(verdicts) == 3, verdicts


# --------------------------------------------------------------------------------------------
# The corpus and the benchmark
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", corpus.LANGUAGES)
def test_the_corpora_load_and_are_small(lang):
    text = corpus.load(lang)
    assert 15_000 < len(text.encode("utf-8")) < 300_000
    assert text.endswith("\n") and "```" not in text
    assert all(p.strip() for p in corpus.paragraphs(lang))


def test_the_korean_corpus_is_korean():
    text = corpus.load("ko")
    hangul = sum("\uac00" <= c <= "\ud7a3" for c in text)
    assert hangul > 0.6 * sum(not c.isspace() for c in text)


@pytest.mark.parametrize("n_bytes", [1, 5_000, 50_000])
def test_sample_is_seeded_and_reaches_the_size(n_bytes):
    a, b = corpus.sample(n_bytes, seed=7), corpus.sample(n_bytes, seed=7)
    assert a == b and len(a.encode("utf-8")) >= n_bytes
    assert corpus.sample(50_000, seed=8) != corpus.sample(50_000, seed=7)
    with pytest.raises(ValueError):
        corpus.load("fr")


def test_build_english_keeps_prose_only(tmp_path):
    page = (
        "---\njupytext: {}\n---\n\n# A title\n\nSome *prose* with {term}`heads <Head>` and a\n"
        "[link](https://example.org).\n\n```{code-cell} ipython3\nx = 1\n```\n\n$$\na = b\n$$\n\n"
        "| a | table |\n|---|---|\n\n(sec-x)=\n## More\n\n:::{note}\nA note.\n:::\n"
    )
    for name in corpus.ENGLISH_PAGES:
        (tmp_path / f"{name}.md").write_text(page)
    text = corpus.build_english(tmp_path)
    first = text.split("\n")[:5]
    assert first == ["A title", "Some prose with heads and a link.", "More", "A note.", "A title"]


def test_the_benchmark_runs_on_a_tiny_text():
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "bench_bpe.py"),
            "--sizes",
            "2000",
            "--vocab-size",
            "300",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert "naive = incremental: True" in result.stdout
    assert "goal >= 20x" in result.stdout
