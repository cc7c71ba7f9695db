"""Chapter 4, self-attention and scaled dot-product attention.

The hidden tests of ``solutions/ch04_self_attention`` import the checks from here;
what is graded is read from that notebook (``autograder.chapters.load``).
"""

from .checks import *  # noqa: F403
from .checks import __all__  # noqa: F401

# Built-ins that do the work the exercise asks for: the scanner flags a call of any of them
# for the instructor to read (it does not change the score).
FORBIDDEN_BUILTINS = (
    "torch.nn.functional.scaled_dot_product_attention",
    "torch._C._nn.scaled_dot_product_attention",
    "torch.nn.MultiheadAttention",
    "torch.nn.functional.multi_head_attention_forward",
)
