"""Chapter 1, sequence to sequence and the context-vector bottleneck.

The hidden tests of ``solutions/ch01_seq2seq_bottleneck`` import the checks from here;
what is graded is read from that notebook (``autograder.chapters.load``).
"""

from .checks import *  # noqa: F403
from .checks import __all__  # noqa: F401
