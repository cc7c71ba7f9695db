"""Chapter 6, Add & Norm and the position-wise feed-forward network: its graded parts.

The hidden tests of ``solutions/ch06_add_and_norm`` import the checks from here
(``from autograder.chapters.ch06_add_and_norm import check_layer_norm``).
"""

from autograder.chapters import Chapter, Part

from . import reference, wrong
from .checks import (
    check_add_norm,
    check_encoder_layer,
    check_layer_norm,
    check_positionwise_feed_forward,
)

__all__ = [
    "CHAPTER",
    "reference",
    "check_layer_norm",
    "check_add_norm",
    "check_positionwise_feed_forward",
    "check_encoder_layer",
]

CHAPTER = Chapter(
    slug="ch06_add_and_norm",
    parts=(
        Part("layer_norm_tests", "LayerNorm", check_layer_norm),
        Part("add_norm_tests", "AddNorm", check_add_norm),
        Part("ffn_tests", "PositionwiseFeedForward", check_positionwise_feed_forward),
        Part("encoder_layer_tests", "EncoderLayer", check_encoder_layer),
    ),
    # Built-ins that do the work the exercise asks for: the scanner flags a call of any of them
    # for the instructor to read (it does not change the score). nn.MultiheadAttention is
    # allowed: the exercise's layer uses it as its attention sublayer.
    forbidden_builtins=(
        "torch.nn.LayerNorm",
        "torch.nn.functional.layer_norm",
        "torch.layer_norm",
        "torch.nn.TransformerEncoderLayer",
    ),
    wrong=wrong.WRONG,
)
