"""Chapter 7, positional encoding: its graded parts.

The hidden tests of ``solutions/ch07_positional_encoding`` import the checks from here
(``from autograder.chapters.ch07_positional_encoding import check_positional_encoding``).
"""

from autograder.chapters import Chapter, Part

from . import reference, wrong
from .checks import (
    check_permutation_equivariance_gap,
    check_positional_encoding,
    check_sinusoidal_positional_encoding,
)

__all__ = [
    "CHAPTER",
    "reference",
    "check_sinusoidal_positional_encoding",
    "check_positional_encoding",
    "check_permutation_equivariance_gap",
]

CHAPTER = Chapter(
    slug="ch07_positional_encoding",
    parts=(
        Part(
            "sinusoidal_tests",
            "sinusoidal_positional_encoding",
            check_sinusoidal_positional_encoding,
        ),
        Part("positional_encoding_tests", "PositionalEncoding", check_positional_encoding),
        Part(
            "equivariance_gap_tests",
            "permutation_equivariance_gap",
            check_permutation_equivariance_gap,
        ),
    ),
    # Nothing in torch computes the sinusoidal table or the gap, so no built-in is flagged;
    # F.scaled_dot_product_attention is what the third part is asked to use.
    forbidden_builtins=(),
    wrong=wrong.WRONG,
)
