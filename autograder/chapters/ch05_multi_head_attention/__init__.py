"""Chapter 5, multi-head attention: its graded parts.

The hidden tests of ``solutions/ch05_multi_head_attention`` import the checks from here
(``from autograder.chapters.ch05_multi_head_attention import check_split_heads``).
"""

from autograder.chapters import Chapter, Part

from . import reference, wrong
from .checks import check_merge_heads, check_multi_head_attention, check_split_heads

__all__ = [
    "CHAPTER",
    "reference",
    "check_split_heads",
    "check_merge_heads",
    "check_multi_head_attention",
]

CHAPTER = Chapter(
    slug="ch05_multi_head_attention",
    parts=(
        Part("split_heads_tests", "split_heads", check_split_heads),
        Part("merge_heads_tests", "merge_heads", check_merge_heads),
        Part("multi_head_attention_tests", "MultiHeadAttention", check_multi_head_attention),
    ),
    # Built-ins that do the work the exercise asks for: the scanner flags a call of any of them
    # for the instructor to read (it does not change the score).
    forbidden_builtins=(
        "torch.nn.MultiheadAttention",
        "torch.nn.functional.multi_head_attention_forward",
        "torch.nn.functional.scaled_dot_product_attention",
        "torch._C._nn.scaled_dot_product_attention",
    ),
    wrong=wrong.WRONG,
)
