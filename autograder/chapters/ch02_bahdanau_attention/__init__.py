"""Chapter 2, Bahdanau attention: its graded parts.

The hidden tests of ``solutions/ch02_bahdanau_attention`` import the checks from here
(``from autograder.chapters.ch02_bahdanau_attention import check_masked_softmax``).
"""

from autograder.chapters import Chapter, Part

from . import reference, wrong
from .checks import check_additive_attention, check_attentive_decoder, check_masked_softmax

__all__ = [
    "CHAPTER",
    "reference",
    "check_masked_softmax",
    "check_additive_attention",
    "check_attentive_decoder",
]

CHAPTER = Chapter(
    slug="ch02_bahdanau_attention",
    parts=(
        Part("masked_softmax_tests", "masked_softmax", check_masked_softmax),
        Part("additive_attention_tests", "AdditiveAttention", check_additive_attention),
        Part("attentive_decoder_tests", "AttentiveDecoder", check_attentive_decoder),
    ),
    # Nothing in torch computes additive attention; the scanner has no built-in to flag.
    forbidden_builtins=(),
    wrong=wrong.WRONG,
)
