"""Chapter 7, positional encoding.

The hidden tests of ``solutions/ch07_positional_encoding`` import the checks from here;
what is graded is read from that notebook (``autograder.chapters.load``).
"""

from .checks import *  # noqa: F403
from .checks import __all__  # noqa: F401

# Nothing in torch computes the sinusoidal table or the gap, so no built-in is flagged;
# F.scaled_dot_product_attention is what the third part is asked to use.
FORBIDDEN_BUILTINS = ()
