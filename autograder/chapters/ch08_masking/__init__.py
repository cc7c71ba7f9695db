"""Chapter 8, masking and the decoder.

The hidden tests of ``solutions/ch08_masking`` import the checks from here;
what is graded is read from that notebook (``autograder.chapters.load``).
"""

from .checks import *  # noqa: F403
from .checks import __all__  # noqa: F401

# Built-ins that do the work the exercise asks for: the scanner flags a call of any of them
# for the instructor to read (it does not change the score). nn.MultiheadAttention,
# nn.LayerNorm and nn.Linear are allowed: the decoder layer is built from them.
FORBIDDEN_BUILTINS = (
    "torch.nn.TransformerDecoderLayer",
    "torch.nn.TransformerDecoder",
    "torch.nn.Transformer",
    "torch.nn.attention.bias.causal_lower_right",
    "torch.nn.Transformer.generate_square_subsequent_mask",
)
