"""Chapter 10, the Transformer assembled.

The hidden tests of ``solutions/ch10_transformer`` import the checks from here;
what is graded is read from that notebook (``autograder.chapters.load``).
"""

from .checks import *  # noqa: F403
from .checks import __all__  # noqa: F401

# Built-ins that do the work the exercise asks for: the scanner flags a call of any of them
# for the instructor to read (it does not change the score). nn.MultiheadAttention,
# nn.LayerNorm and nn.Linear are allowed: the Transformer is built from them; so is
# F.cross_entropy outside label_smoothed_loss (it is what the loss is compared with).
FORBIDDEN_BUILTINS = (
    "torch.nn.Transformer",
    "torch.nn.TransformerEncoder",
    "torch.nn.TransformerDecoder",
    "torch.nn.TransformerEncoderLayer",
    "torch.nn.TransformerDecoderLayer",
)
