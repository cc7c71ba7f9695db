"""Chapter 1, sequence to sequence and the context-vector bottleneck: its graded parts.

The hidden tests of ``solutions/ch01_seq2seq_bottleneck`` import the checks from here
(``from autograder.chapters.ch01_seq2seq_bottleneck import check_encoder``).
"""

from autograder.chapters import Chapter, Part

from . import reference, wrong
from .checks import check_decoder, check_encoder, check_seq2seq, check_sequence_accuracy

__all__ = [
    "CHAPTER",
    "reference",
    "check_encoder",
    "check_decoder",
    "check_seq2seq",
    "check_sequence_accuracy",
]

CHAPTER = Chapter(
    slug="ch01_seq2seq_bottleneck",
    parts=(
        Part("encoder_tests", "Encoder", check_encoder),
        Part("decoder_tests", "Decoder", check_decoder),
        Part("seq2seq_tests", "Seq2Seq", check_seq2seq),
        Part("sequence_accuracy_tests", "sequence_accuracy", check_sequence_accuracy),
    ),
    wrong=wrong.WRONG,
)
