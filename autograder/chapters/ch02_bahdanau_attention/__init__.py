"""Chapter 2, Bahdanau attention.

The hidden tests of ``solutions/ch02_bahdanau_attention`` import the checks from here;
what is graded is read from that notebook (``autograder.chapters.load``).
"""

from .checks import *  # noqa: F403
from .checks import __all__  # noqa: F401

# Nothing in torch computes additive attention; the scanner has no built-in to flag.
FORBIDDEN_BUILTINS = ()
