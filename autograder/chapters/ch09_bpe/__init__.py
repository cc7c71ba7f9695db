"""Chapter 9, byte pair encoding.

The hidden tests of ``solutions/ch09_bpe`` import the checks from here;
what is graded is read from that notebook (``autograder.chapters.load``).
"""

from .checks import *  # noqa: F403
from .checks import __all__  # noqa: F401

# Libraries that would do the exercise's work: the scanner flags a call for the instructor
# to read (it does not change the score).
FORBIDDEN_BUILTINS = (
    "tokenizers.Tokenizer",
    "tokenizers.models.BPE",
    "tokenizers.trainers.BpeTrainer",
    "tiktoken.get_encoding",
    "sentencepiece.SentencePieceProcessor",
)
