"""Chapter 3, Luong attention: its graded parts.

The hidden tests of ``solutions/ch03_luong_attention`` import the checks from here
(``from autograder.chapters.ch03_luong_attention import check_dot_score``).
"""

from autograder.chapters import Chapter, Part

from . import reference, wrong
from .checks import (
    check_concat_score,
    check_dot_score,
    check_general_score,
    check_luong_attention,
)

__all__ = [
    "CHAPTER",
    "reference",
    "check_dot_score",
    "check_general_score",
    "check_concat_score",
    "check_luong_attention",
]

CHAPTER = Chapter(
    slug="ch03_luong_attention",
    parts=(
        Part("dot_score_tests", "dot_score", check_dot_score),
        Part("general_score_tests", "general_score", check_general_score),
        Part("concat_score_tests", "concat_score", check_concat_score),
        Part("luong_attention_tests", "LuongAttention", check_luong_attention),
    ),
    # Built-ins that do the work the exercise asks for: the scanner flags a call of any of them
    # for the instructor to read (it does not change the score).
    forbidden_builtins=(
        "torch.nn.functional.scaled_dot_product_attention",
        "torch._C._nn.scaled_dot_product_attention",
        "torch.nn.MultiheadAttention",
        "torch.nn.functional.multi_head_attention_forward",
    ),
    wrong=wrong.WRONG,
)
