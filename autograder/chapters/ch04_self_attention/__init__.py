"""Chapter 4, self-attention and scaled dot-product attention: its graded parts.

The hidden tests of ``solutions/ch04_self_attention`` import the checks from here
(``from autograder.chapters.ch04_self_attention import check_attention_scores``).
"""

from autograder.chapters import Chapter, Part

from . import reference, wrong
from .checks import (
    check_attention_scores,
    check_attention_weights,
    check_measure_score_variance,
    check_scaled_dot_product_attention,
    check_self_attention,
)

__all__ = [
    "CHAPTER",
    "reference",
    "check_attention_scores",
    "check_attention_weights",
    "check_scaled_dot_product_attention",
    "check_self_attention",
    "check_measure_score_variance",
]

CHAPTER = Chapter(
    slug="ch04_self_attention",
    parts=(
        Part("attention_scores_tests", "attention_scores", check_attention_scores),
        Part("attention_weights_tests", "attention_weights", check_attention_weights),
        Part("sdpa_tests", "scaled_dot_product_attention", check_scaled_dot_product_attention),
        Part("self_attention_tests", "SelfAttention", check_self_attention),
        Part("score_variance_tests", "measure_score_variance", check_measure_score_variance),
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
