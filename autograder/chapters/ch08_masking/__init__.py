"""Chapter 8, masking and the decoder: its graded parts.

The hidden tests of ``solutions/ch08_masking`` import the checks from here
(``from autograder.chapters.ch08_masking import check_padding_mask``).
"""

from autograder.chapters import Chapter, Part

from . import reference, wrong
from .checks import (
    check_causal_mask,
    check_combine_masks,
    check_decoder_layer,
    check_padding_mask,
)

__all__ = [
    "CHAPTER",
    "reference",
    "check_padding_mask",
    "check_causal_mask",
    "check_combine_masks",
    "check_decoder_layer",
]

CHAPTER = Chapter(
    slug="ch08_masking",
    parts=(
        Part("padding_mask_tests", "padding_mask", check_padding_mask),
        Part("causal_mask_tests", "causal_mask", check_causal_mask),
        Part("combine_masks_tests", "combine_masks", check_combine_masks),
        Part("decoder_layer_tests", "DecoderLayer", check_decoder_layer),
    ),
    # Built-ins that do the work the exercise asks for: the scanner flags a call of any of them
    # for the instructor to read (it does not change the score). nn.MultiheadAttention,
    # nn.LayerNorm and nn.Linear are allowed: the decoder layer is built from them.
    forbidden_builtins=(
        "torch.nn.TransformerDecoderLayer",
        "torch.nn.TransformerDecoder",
        "torch.nn.Transformer",
        "torch.nn.attention.bias.causal_lower_right",
        "torch.nn.Transformer.generate_square_subsequent_mask",
    ),
    wrong=wrong.WRONG,
)
