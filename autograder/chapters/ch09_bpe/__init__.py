"""Chapter 9, byte pair encoding: its graded parts.

The hidden tests of ``solutions/ch09_bpe`` import the checks from here
(``from autograder.chapters.ch09_bpe import check_merge``).
"""

from autograder.chapters import Chapter, Part

from . import reference, wrong
from .checks import check_bpe_tokenizer, check_get_pair_counts, check_merge

__all__ = [
    "CHAPTER",
    "reference",
    "check_get_pair_counts",
    "check_merge",
    "check_bpe_tokenizer",
]

CHAPTER = Chapter(
    slug="ch09_bpe",
    parts=(
        Part("get_pair_counts_tests", "get_pair_counts", check_get_pair_counts),
        Part("merge_tests", "merge", check_merge),
        Part("bpe_tokenizer_tests", "BPETokenizer", check_bpe_tokenizer),
    ),
    # Libraries that would do the exercise's work: the scanner flags a call for the instructor
    # to read (it does not change the score).
    forbidden_builtins=(
        "tokenizers.Tokenizer",
        "tokenizers.models.BPE",
        "tokenizers.trainers.BpeTrainer",
        "tiktoken.get_encoding",
        "sentencepiece.SentencePieceProcessor",
    ),
    wrong=wrong.WRONG,
)
