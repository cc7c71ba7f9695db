"""Known-wrong implementations for chapter 10: the mistakes the checks must catch.

Each entry is a plausible student mistake. ``tests/test_chapter_contract.py`` runs every check on
every entry and requires a check of its name to fail with a message that holds the entry's phrase
(and every other name's checks to pass, with the mistake in the student's namespace).

``WRONG`` maps the name of the graded function or class to {mistake: Mistake(implementation,
phrase)}.
"""

from __future__ import annotations

import torch

from autograder.chapters import Mistake

from . import reference as ref

# --- rate -------------------------------------------------------------------------------------


def rate_off_by_one(step, d_model, warmup, factor=1.0):
    """step + 1 inside the schedule (LambdaLR counts from 0: the caller's business)."""
    return ref.rate(step + 1, d_model, warmup, factor)


def rate_no_scale(step, d_model, warmup, factor=1.0):
    """Forgot d_model^-0.5."""
    return ref.rate(step, d_model, warmup, factor) * d_model**0.5


def rate_max(step, d_model, warmup, factor=1.0):
    """max instead of min."""
    if isinstance(step, torch.Tensor):
        s = step.double()
        return factor * d_model**-0.5 * torch.maximum(s.rsqrt(), s * warmup**-1.5)
    return factor * d_model**-0.5 * max(step**-0.5, step * warmup**-1.5)


def rate_zero_nan(step, d_model, warmup, factor=1.0):
    """Right everywhere but at step 0, where step ** -0.5 divides by zero."""
    if isinstance(step, torch.Tensor):
        s = step.double()
        return factor * d_model**-0.5 * torch.minimum(s**-0.5, s * warmup**-1.5).nan_to_num(0.0)
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def rate_integer_tensor(step, d_model, warmup, factor=1.0):
    """Right for ints; keeps an integer tensor's dtype (every rate rounds to 0)."""
    if isinstance(step, torch.Tensor):
        return ref.rate(step.double(), d_model, warmup, factor).to(step.dtype)
    return ref.rate(step, d_model, warmup, factor)


# --- label_smoothed_loss ----------------------------------------------------------------------


def loss_v_minus_one(logits, target, smoothing=0.0, ignore_index=-100):
    """Smoothing spread over the V - 1 other classes (a common textbook form, not torch's)."""
    V = logits.size(-1)
    logp = logits.log_softmax(-1).reshape(-1, V)
    t = target.reshape(-1)
    keep = t != ignore_index
    q = torch.full_like(logp, smoothing / (V - 1))
    q.scatter_(1, t.masked_fill(~keep, 0)[:, None], 1 - smoothing)
    per = -(q * logp).sum(-1)
    return per[keep].mean()


def loss_annotated(logits, target, smoothing=0.0, ignore_index=-100):
    """The Annotated Transformer's: no mass on the target or the padding column, V - 2 classes."""
    V = logits.size(-1)
    logp = logits.log_softmax(-1).reshape(-1, V)
    t = target.reshape(-1)
    keep = t != ignore_index
    q = torch.full_like(logp, smoothing / (V - 2))
    if 0 <= ignore_index < V:
        q[:, ignore_index] = 0
    q.scatter_(1, t.masked_fill(~keep, 0)[:, None], 1 - smoothing)
    per = -(q * logp).sum(-1)
    return per[keep].mean()


def loss_ignores_nothing(logits, target, smoothing=0.0, ignore_index=-100):
    """ignore_index left out of the computation."""
    return ref.label_smoothed_loss(logits, target, smoothing, ignore_index=-12345)


def loss_sum(logits, target, smoothing=0.0, ignore_index=-100):
    """The sum, not the mean."""
    keep = (target != ignore_index).sum()
    return ref.label_smoothed_loss(logits, target, smoothing, ignore_index) * keep


def loss_detached(logits, target, smoothing=0.0, ignore_index=-100):
    """The right value, through .detach(): no gradient reaches the logits."""
    return ref.label_smoothed_loss(logits.detach(), target, smoothing, ignore_index)


# --- Transformer ------------------------------------------------------------------------------


class TransformerPostLN(ref.Transformer):
    """norm(x + sublayer(x)): the 2017 paper's order, not the pre-LN the exercise asks for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for layer in [*self.encoder.layers, *self.decoder.layers]:
            layer.forward = _post_ln(layer)


def _post_ln(layer):
    def encoder_forward(x, padding_mask=None):
        m = None if padding_mask is None else ~padding_mask
        x = layer.norm1(x + layer.self_attn(x, x, x, key_padding_mask=m, need_weights=False)[0])
        return layer.norm2(x + layer.linear2(torch.relu(layer.linear1(x))))

    def decoder_forward(x, memory, tgt_mask=None, tgt_padding_mask=None,
                        memory_padding_mask=None):  # fmt: skip
        inv = [None if m is None else ~m for m in (tgt_mask, tgt_padding_mask, memory_padding_mask)]
        x = layer.norm1(x + layer.self_attn(x, x, x, attn_mask=inv[0], key_padding_mask=inv[1],
                                            need_weights=False)[0])  # fmt: skip
        x = layer.norm2(x + layer.multihead_attn(x, memory, memory, key_padding_mask=inv[2],
                                                 need_weights=False)[0])  # fmt: skip
        return layer.norm3(x + layer.linear2(torch.relu(layer.linear1(x))))

    return decoder_forward if hasattr(layer, "norm3") else encoder_forward


class TransformerNoFinalNorm(ref.Transformer):
    """Pre-LN layers, but the stacks' final LayerNorms are never applied."""

    def encode(self, src, src_padding_mask=None):
        x = src
        for layer in self.encoder.layers:
            x = layer(x, src_padding_mask)
        return x

    def decode(self, tgt, memory, tgt_mask=None, tgt_padding_mask=None, memory_padding_mask=None):
        x = tgt
        for layer in self.decoder.layers:
            x = layer(x, memory, tgt_mask, tgt_padding_mask, memory_padding_mask)
        return x


class TransformerMasksAsGiven(ref.Transformer):
    """Hands our masks (True = allowed) to nn.MultiheadAttention as they are (True = blocked)."""

    def encode(self, src, src_padding_mask=None):
        flip = None if src_padding_mask is None else ~src_padding_mask
        return super().encode(src, flip)

    def decode(self, tgt, memory, tgt_mask=None, tgt_padding_mask=None, memory_padding_mask=None):
        flip = [None if m is None else ~m for m in (tgt_mask, tgt_padding_mask,
                                                     memory_padding_mask)]  # fmt: skip
        return super().decode(tgt, memory, *flip)


class TransformerNoCausal(ref.Transformer):
    """decode forgets tgt_mask: every target position sees the whole target."""

    def decode(self, tgt, memory, tgt_mask=None, tgt_padding_mask=None, memory_padding_mask=None):
        return super().decode(tgt, memory, None, tgt_padding_mask, memory_padding_mask)


class TransformerForwardDropsMemoryMask(ref.Transformer):
    """forward never hands memory_padding_mask to decode."""

    def forward(self, src, tgt, tgt_mask=None, src_padding_mask=None, tgt_padding_mask=None,
                memory_padding_mask=None):  # fmt: skip
        return self.decode(tgt, self.encode(src, src_padding_mask), tgt_mask, tgt_padding_mask)


class TransformerNoDropout(ref.Transformer):
    """Ignores its dropout argument."""

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                 dim_feedforward=2048, dropout=0.0, eps=1e-5):  # fmt: skip
        super().__init__(d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward,
                         0.0, eps)  # fmt: skip


# --- greedy_decode ----------------------------------------------------------------------------


@torch.no_grad()
def greedy_decode_fresh_cache(model, src, max_len, bos_id, eos_id, use_cache=False):
    """A new cache dict at every step: the earlier keys and values are dropped."""
    memory = model.encode(src)
    ys = torch.full((src.size(0), 1), bos_id, dtype=torch.long, device=src.device)
    done = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        if use_cache:
            logits = model.decode(ys[:, -1:], memory, cache={})
        else:
            logits = model.decode(ys, memory)
        word = logits[:, -1].argmax(-1).masked_fill(done, eos_id)
        ys = torch.cat([ys, word[:, None]], 1)
        done |= word == eos_id
        if done.all():
            break
    return ys[:, 1:]


@torch.no_grad()
def greedy_decode_with_bos(model, src, max_len, bos_id, eos_id, use_cache=False):
    """Returns the bos too."""
    ids = ref.greedy_decode(model, src, max_len, bos_id, eos_id, use_cache)
    return torch.cat([torch.full_like(ids[:, :1], bos_id), ids], 1)


@torch.no_grad()
def greedy_decode_runs_on(model, src, max_len, bos_id, eos_id, use_cache=False):
    """Rows keep generating after their eos."""
    memory = model.encode(src)
    ys = torch.full((src.size(0), 1), bos_id, dtype=torch.long, device=src.device)
    for _ in range(max_len):
        word = model.decode(ys, memory)[:, -1].argmax(-1)
        ys = torch.cat([ys, word[:, None]], 1)
    return ys[:, 1:]


@torch.no_grad()
def greedy_decode_first_position(model, src, max_len, bos_id, eos_id, use_cache=False):
    """The argmax of the first position's logits, not the last's."""
    memory = model.encode(src)
    ys = torch.full((src.size(0), 1), bos_id, dtype=torch.long, device=src.device)
    done = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        word = model.decode(ys, memory)[:, 0].argmax(-1).masked_fill(done, eos_id)
        ys = torch.cat([ys, word[:, None]], 1)
        done |= word == eos_id
        if done.all():
            break
    return ys[:, 1:]


# --- translate --------------------------------------------------------------------------------


def translate_untrained(sentences):
    """A model that was never trained."""
    torch.manual_seed(0)
    model = ref.TokenTransformer(ref.Transformer(32, 4, 1, 1, 64), 32, len(ref.SOURCE_WORDS),
                                 len(ref.TARGET_WORDS)).eval()  # fmt: skip
    src = ref.encode_sentences(sentences, ref.SOURCE_WORDS)
    return ref.decode_ids(ref.greedy_decode(model, src, 12, ref.BOS, ref.EOS), ref.TARGET_WORDS)


def translate_word_by_word(sentences):
    """Each word looked up, in the source's order, no particles: not the task."""
    table = {**ref.NOUNS, **ref.VERBS, **ref.ADJECTIVES, **ref.ADVERBS}
    return [" ".join(table[w] for w in s.split()) for s in sentences]


def translate_source_vocabulary(sentences):
    """The target ids decoded with the source vocabulary."""
    src = ref.encode_sentences(sentences, ref.SOURCE_WORDS)
    ids = ref.greedy_decode(ref.trained_model(), src, 12, ref.BOS, ref.EOS)
    words = ref.SOURCE_WORDS + ["?"] * len(ref.TARGET_WORDS)
    return ref.decode_ids(ids, words)


WRONG = {
    "rate": {
        "off by one": Mistake(rate_off_by_one, "off by one"),
        "no E^-0.5": Mistake(rate_no_scale, "d_model^-0.5 is missing"),
        "max": Mistake(rate_max, "min of the two branches"),
        "step 0": Mistake(rate_zero_nan, "step 0 must give 0"),
        "integer tensor": Mistake(rate_integer_tensor, "floating tensor"),
    },
    "label_smoothed_loss": {
        "over V - 1": Mistake(loss_v_minus_one, "all V classes"),
        "annotated (V - 2)": Mistake(loss_annotated, "all V classes"),
        "ignore_index unused": Mistake(loss_ignores_nothing, "ignore_index must count for nothing"),
        "sum": Mistake(loss_sum, "not the sum"),
        "detached": Mistake(loss_detached, "no gradient reaches the logits"),
    },
    "Transformer": {
        "post-LN": Mistake(TransformerPostLN, "post-LN"),
        "no final norm": Mistake(TransformerNoFinalNorm, "final LayerNorm"),
        "masks as given": Mistake(TransformerMasksAsGiven, "the right way round"),
        "no causal mask": Mistake(TransformerNoCausal, "the future leaks in"),
        "forward drops a mask": Mistake(TransformerForwardDropsMemoryMask,
                                        "must hand memory_padding_mask on"),
        "no dropout": Mistake(TransformerNoDropout, "the dropout does nothing"),
    },
    "greedy_decode": {
        "fresh cache": Mistake(greedy_decode_fresh_cache, "same cache dict"),
        "bos returned": Mistake(greedy_decode_with_bos, "without the bos"),
        "runs on after eos": Mistake(greedy_decode_runs_on, "after a row's eos"),
        "first position": Mistake(greedy_decode_first_position, "last* position"),
    },
    "translate": {
        "untrained": Mistake(translate_untrained, "exact match"),
        "word by word": Mistake(translate_word_by_word, "exact match"),
        "source vocabulary": Mistake(translate_source_vocabulary, "exact match"),
    },
}
