"""Chapter 6, Add & Norm and the position-wise feed-forward network.

The hidden tests of ``solutions/ch06_add_and_norm`` import the checks from here;
what is graded is read from that notebook (``autograder.chapters.load``).
"""

from .checks import *  # noqa: F403
from .checks import __all__  # noqa: F401

# Built-ins that do the work the exercise asks for: the scanner flags a call of any of them
# for the instructor to read (it does not change the score). nn.MultiheadAttention is
# allowed: the exercise's layer uses it as its attention sublayer.
FORBIDDEN_BUILTINS = (
    "torch.nn.LayerNorm",
    "torch.nn.functional.layer_norm",
    "torch.layer_norm",
    "torch.nn.TransformerEncoderLayer",
)
