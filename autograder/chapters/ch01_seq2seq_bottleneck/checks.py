"""Chapter 1's checks: what the hidden tests of ``solutions/ch01_seq2seq_bottleneck`` call.

Each check builds the student's module with the reference's weights copied in (``Encoder``,
``Decoder``) or calls the student's function on hand-made and seeded inputs
(``sequence_accuracy``), on the CPU and on CUDA when there is one, and tests what the exercise's
instructions promise, properties first (the layers and the zero ``<pad>`` embedding, shapes, dtype,
device, zeros at padded positions, ``<eos>`` handling), values after, so that a failure names the
property.

``Seq2Seq`` is graded on its own, without trusting the student's ``Encoder`` and ``Decoder`` to be
right: its check drives the student's *own* ``encoder`` and ``decoder`` submodules step by step,
here, and requires the student's ``forward`` and ``greedy_decode`` to give what that driving gives
(self-consistency). A wrong ``Decoder`` then costs Part 2 only, as long as it runs with the
interface of Part 2 (a module that raises, or returns something else, cannot be driven: then Part 3
cannot be checked either, and its message says so). The toolkit's stand-ins replace functions
called by global name; they cannot replace the submodules a class builds, hence this design.

Not here: the reference (``reference.py``) and the known-wrong implementations (``wrong.py``).
"""

from __future__ import annotations

import torch

from autograder.toolkit import (
    CheckFailed,
    Subject,
    calling,
    check,
    check_devices,
    close,
    compare,
    dtype_name,
    label,
)

from . import reference as ref

__all__ = [
    "check_encoder",
    "check_decoder",
    "check_seq2seq_teacher_forcing",
    "check_seq2seq_free_running",
    "check_seq2seq_greedy",
    "check_seq2seq_eos",
    "check_sequence_accuracy",
]

# Small sizes: the checks test behaviour, not capacity. V_SRC != V_TGT and E_EMB != E catch a
# swapped argument.
V_SRC, V_TGT, E_EMB, E = 23, 19, 8, 16
PAD, SOS, EOS = ref.PAD_ID, ref.SOS_ID, ref.EOS_ID
_DTYPES = (torch.float32, torch.float64)


def _reference(factory, *args, seed: int = 0, **kwargs):
    """The reference module built under torch's seed `seed` (as the student's is built)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(*args, **kwargs)


def _structure(module: Subject, what: str, layers: dict[str, str], reference: torch.nn.Module):
    """The student's state dict, after checking the named layers and the parameters' names and
    shapes against the reference's."""
    info = module.describe()
    for name, kind in layers.items():
        found = info["modules"].get(name)
        if found is None:
            raise CheckFailed(f"{what} must have a submodule called {name} (an nn.{kind}).")
        if found != kind:
            raise CheckFailed(f"{what}.{name} must be an nn.{kind}, not a {found}.")
    state = info["state"]
    for key, value in reference.state_dict().items():
        got = state.get(key)
        if got is None:
            raise CheckFailed(
                f"{what} has no parameter {key}; build the layers exactly as the instructions "
                "say (one GRU layer, batch_first=True, with biases)."
            )
        if tuple(got.shape) != tuple(value.shape):
            raise CheckFailed(
                f"{what}.{key} has shape {tuple(got.shape)}, expected {tuple(value.shape)}; "
                "check the order and the sizes of the constructor's arguments."
            )
    extra = sorted(set(state) - set(reference.state_dict()))
    if extra:
        raise CheckFailed(f"{what} has parameters the instructions do not ask for: {extra[:3]}.")
    return state


def _pad_row_is_zero(cls: Subject, what: str, vocab: int, layers: dict[str, str], factory) -> None:
    """A freshly built module's <pad> embedding is 0 (nn.Embedding's padding_idx), for the default
    pad id and for another one."""
    for pad_id in (PAD, 5):
        title = f"{what}({vocab}, {E_EMB}, {E}, pad_id={pad_id})"
        module = calling(title, cls.seeded(1), vocab, E_EMB, E, pad_id=pad_id)
        state = _structure(module, title, layers, _reference(factory, vocab, E_EMB, E, pad_id))
        row = state["embedding.weight"][pad_id]
        if bool(row.ne(0).any()):
            raise CheckFailed(
                f"{title}: the embedding of <pad> (row pad_id) must be zero and stay zero: build "
                "the embedding with padding_idx=pad_id."
            )


def _build(cls: Subject, what: str, vocab: int, layers, factory, device, dtype):
    """The student's module with the reference's weights, on `device` in `dtype`; and the
    reference, the same."""
    title = f"{what}({vocab}, {E_EMB}, {E})"
    module = calling(title, cls.seeded(0), vocab, E_EMB, E)
    reference = _reference(factory, vocab, E_EMB, E)
    _structure(module, title, layers, reference)
    calling(f"{title}.load_state_dict", module.load_state_dict, reference.state_dict())
    calling(f"{title}.to({device.type}, {dtype_name(dtype)})", module.to, device, dtype)
    return module, reference.to(device=device, dtype=dtype)


def _pair(out, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Two tensors, as forward must return."""
    if not isinstance(out, tuple) or len(out) != 2:
        got = f"a tuple of {len(out)}" if isinstance(out, tuple) else type(out).__name__
        raise CheckFailed(f"{what} must return a tuple of two tensors, not {got}.")
    for i, t in enumerate(out):
        if not isinstance(t, torch.Tensor):
            raise CheckFailed(
                f"{what}: item {i} of the returned tuple is a {type(t).__name__}, not a tensor."
            )
    return out


# --------------------------------------------------------------------------------------------
# Part 1: the encoder
# --------------------------------------------------------------------------------------------

_ENCODER_LAYERS = {"embedding": "Embedding", "rnn": "GRU"}

# (lengths, S): unsorted lengths; extra all-<pad> columns (S > max length); no padding at all; B=1.
_ENCODER_BATCHES = [
    ([4, 7, 1, 5, 3], 7),
    ([2, 6, 3], 9),
    ([5, 5, 5, 5], 5),
    ([3], 6),
]


def _source_batch(lengths, S, seed, vocab=V_SRC, pad_id=PAD):
    """(src (B, S) int64 with pad_id after each row's length, lengths (B,) int64)."""
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    src = torch.randint(3, vocab, (B, S), generator=g)  # (B, S): ids 0-2 are the specials
    lengths_t = torch.tensor(lengths)  # (B,)
    src = src.masked_fill(torch.arange(S)[None, :] >= lengths_t[:, None], pad_id)  # (B, S)
    return src, lengths_t


@check()
def check_encoder(cls: Subject) -> None:
    """Encoder(vocab_size, embed_dim, hidden_dim, pad_id=0).forward(src, lengths) ->
    (outputs (B, S, Eh), context (B, Eh)).

    With the reference's weights copied in: the context is the hidden state after each
    sentence's last real word, whatever the order of the lengths and however many <pad> follow;
    outputs are the GRU's outputs at the real positions and 0 at the padded ones, with S the width
    of src; dtype and device follow the module and src; the <pad> embedding is 0.
    """
    _pad_row_is_zero(cls, "Encoder", V_SRC, _ENCODER_LAYERS, ref.Encoder)
    for device in check_devices():
        for dtype in _DTYPES:
            module, reference = _build(
                cls, "Encoder", V_SRC, _ENCODER_LAYERS, ref.Encoder, device, dtype
            )
            for seed, (lengths, S) in enumerate(_ENCODER_BATCHES):
                src, lengths_t = _source_batch(lengths, S, seed)
                src, lengths_t = src.to(device), lengths_t.to(device)
                where = (
                    f"Encoder on src (B={len(lengths)}, S={S}) with lengths {lengths} "
                    f"({label(dtype, device)})"
                )
                outputs, context = _pair(calling(where, module, src, lengths_t), where)
                with torch.no_grad():
                    expected_out, expected_ctx = reference(src, lengths_t)
                    after_pads = reference.rnn(reference.embedding(src))[1][0]  # (B, Eh)
                _check_context(context, expected_ctx, after_pads, lengths, S, where)
                _check_outputs(outputs, expected_out, lengths_t, S, where)


def _check_context(context, expected, after_pads, lengths, S, where) -> None:
    what = f"{where}: the context"
    if isinstance(context, torch.Tensor) and context.shape == expected.shape:
        padded = torch.tensor(lengths) < S
        if bool(padded.any()) and close(context, after_pads) and not close(context, expected):
            raise CheckFailed(
                f"{what} is the hidden state after the <pad> tokens: the GRU read the padding "
                "that follows the shorter sentences. Skip it with pack_padded_sequence, so that "
                "each row's context is its state after its own last word (chapter 1, 'Padding')."
            )
    compare(
        context,
        expected,
        what,
        hint="It must be the GRU's hidden state after each sentence's last real word, (B, Eh); "
        "a sentence's context must not depend on the other sentences of the batch or their order.",
    )


def _check_outputs(outputs, expected, lengths, S, where) -> None:
    what = f"{where}: the outputs"
    if isinstance(outputs, torch.Tensor) and outputs.dim() == 3 and outputs.size(1) != S:
        raise CheckFailed(
            f"{what} have {outputs.size(1)} positions; they must have S = {S}, the width of src, "
            "even when every sentence is shorter (pad_packed_sequence's total_length)."
        )
    if isinstance(outputs, torch.Tensor) and outputs.shape == expected.shape:
        padded = torch.arange(S, device=lengths.device)[None, :] >= lengths[:, None]  # (B, S)
        if bool(outputs[padded.to(outputs.device)].ne(0).any()):
            raise CheckFailed(f"{what} must be 0 at the padded positions.")
    compare(outputs, expected, what, hint="They are the GRU's outputs at every real position.")


# --------------------------------------------------------------------------------------------
# Part 2: one decoder step (and many)
# --------------------------------------------------------------------------------------------

_DECODER_LAYERS = {"embedding": "Embedding", "rnn": "GRU", "out": "Linear"}


def _decoder_inputs(B, L, seed, dtype, device, with_pad=False):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, V_TGT, (B, L), generator=g)  # (B, L)
    if with_pad and L > 2:
        tokens[0, -2:] = PAD  # a shorter target, padded as in a teacher-forcing batch
    hidden = torch.tanh(torch.randn(B, E, generator=g, dtype=torch.float64))  # (B, Eh)
    return tokens.to(device), hidden.to(device=device, dtype=dtype)


@check()
def check_decoder(cls: Subject) -> None:
    """Decoder(vocab_size, embed_dim, hidden_dim, pad_id=0).forward(tokens (B, L), hidden (B, Eh))
    -> (logits (B, L, V), hidden (B, Eh)).

    With the reference's weights copied in: raw scores (no softmax), starting from the given
    hidden state, returning the state after the last step; L = 1 is one step, and L steps one at
    a time equal one call with all L tokens; dtype and device follow the module and hidden; the
    <pad> embedding is 0.
    """
    _pad_row_is_zero(cls, "Decoder", V_TGT, _DECODER_LAYERS, ref.Decoder)
    for device in check_devices():
        for dtype in _DTYPES:
            module, reference = _build(
                cls, "Decoder", V_TGT, _DECODER_LAYERS, ref.Decoder, device, dtype
            )
            for seed, (B, L, with_pad) in enumerate([(4, 1, False), (3, 6, True), (1, 3, False)]):
                tokens, hidden = _decoder_inputs(B, L, seed, dtype, device, with_pad)
                where = (
                    f"Decoder on tokens (B={B}, L={L}) and hidden (B={B}, Eh={E}) "
                    f"({label(dtype, device)})"
                )
                logits, new_hidden = _pair(calling(where, module, tokens, hidden), where)
                with torch.no_grad():
                    expected_logits, expected_hidden = reference(tokens, hidden)
                _decoder_hints(logits, new_hidden, tokens, hidden, reference, where)
                compare(logits, expected_logits, f"{where}: the logits", hint=_LOGITS_HINT)
                compare(
                    new_hidden,
                    expected_hidden,
                    f"{where}: the hidden state returned",
                    hint="It is the GRU's state after the last of the L steps, (B, Eh).",
                )
            _check_steps_equal_one_call(module, reference, device, dtype)


_LOGITS_HINT = (
    "Embed the tokens, run the GRU from the given hidden state (as h_0, shape (1, B, Eh)), and "
    "map every output to V raw scores with the linear layer."
)


def _decoder_hints(logits, new_hidden, tokens, hidden, reference, where) -> None:
    """Name the common mistakes before the values are compared."""
    with torch.no_grad():
        expected_logits, expected_hidden = reference(tokens, hidden)
        from_zeros = reference(tokens, torch.zeros_like(hidden))[0]
        outputs = reference.rnn(reference.embedding(tokens), hidden.unsqueeze(0))[0]  # (B, L, Eh)
    if close(logits, expected_logits.softmax(dim=-1)):
        raise CheckFailed(
            f"{where}: the logits are probabilities (a softmax was applied); return the raw "
            "scores: cross_entropy takes logits, and argmax does not need the softmax."
        )
    if close(logits, from_zeros) and not close(logits, expected_logits):
        raise CheckFailed(
            f"{where}: the logits do not depend on the hidden state passed in: the GRU must start "
            "from it (h_0), or the context vector never reaches the decoder."
        )
    if close(new_hidden, hidden) and not close(new_hidden, expected_hidden):
        raise CheckFailed(
            f"{where}: the hidden state returned is the one passed in; return the GRU's new state, "
            "or the next step starts from the old one."
        )
    if tokens.size(1) > 1 and close(new_hidden, outputs[:, 0]):
        raise CheckFailed(
            f"{where}: the hidden state returned is the state after the first step; return the "
            "state after the last one."
        )


def _check_steps_equal_one_call(module: Subject, reference, device, dtype) -> None:
    B, L = 3, 5
    tokens, hidden = _decoder_inputs(B, L, 11, dtype, device)
    where = f"Decoder, {L} calls with one token each, passing the hidden state on"
    state, steps = hidden, []
    for t in range(L):
        logits, state = _pair(calling(where, module, tokens[:, t : t + 1], state), where)
        steps.append(logits)
    whole = torch.cat(steps, dim=1) if all(s.dim() == 3 for s in steps) else None
    with torch.no_grad():
        expected = reference(tokens, hidden)[0]
    compare(
        whole,
        expected,
        where,
        hint="Step by step, each call starting from the state the previous call returned, the "
        "logits must be those of one call with all L tokens.",
    )


# --------------------------------------------------------------------------------------------
# Part 3: Seq2Seq, teacher forcing and greedy decoding
# --------------------------------------------------------------------------------------------

# Decoding cases: (eos bias, scale, max_len). When the student's parameters have the reference's
# names, the check loads the reference's weights with the decoder's readout and both GRUs' weights
# multiplied by `scale` (so that the scores depend on the input, not only on the biases) and
# `eos bias` added to the <eos> score. With correct Encoder and Decoder, rows then end at
# different steps and all before max_len (the first case), some never (the second), every row at
# the first step, or none at all. tests/test_ch01_seq2seq_bottleneck.py checks that this holds.
DECODING_CASES = [(1.0, (4.0, 1.0), 12), (3.0, (8.0, 3.0), 9), (50.0, (1.0, 1.0), 6),
                  (-50.0, (1.0, 1.0), 4)]  # fmt: skip
_S2S_LENGTHS = [7, 6, 6, 4, 3, 2]  # sorted, on the CPU: Part 1's enforce_sorted or device bugs
_S2S_S, _S2S_L = 7, 5  # must not reach Part 3
_RNN_WEIGHTS = [f"{m}.rnn.weight_{w}_l0" for m in ("encoder", "decoder") for w in ("ih", "hh")]


def seq2seq_state(eos_bias: float = 0.0, scale=(1.0, 1.0), seed: int = 0):
    """The reference Seq2Seq's weights, the decoder's readout multiplied by scale[0], the GRUs'
    weights by scale[1], and `eos_bias` added to the decoder's <eos> bias."""
    model = _reference(ref.Seq2Seq, V_SRC, V_TGT, E_EMB, E, seed=seed)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["decoder.out.weight"] *= scale[0]
    for name in _RNN_WEIGHTS:
        state[name] *= scale[1]
    state["decoder.out.bias"][EOS] += eos_bias
    return state


def _seq2seq_batch(device):
    src, lengths = _source_batch(_S2S_LENGTHS, _S2S_S, seed=21)
    g = torch.Generator().manual_seed(22)
    tgt_in = torch.randint(3, V_TGT, (len(_S2S_LENGTHS), _S2S_L), generator=g)  # (B, L)
    tgt_in[:, 0] = SOS
    return src.to(device), lengths, tgt_in.to(device)


class _Driver:
    """The student's own encoder and decoder, driven here, one call at a time."""

    NOTE = (
        "Part 3 runs your own Encoder and Decoder (whether or not their values are right): they "
        "must run as Parts 1 and 2 describe."
    )

    def __init__(self, model: Subject) -> None:
        self.encoder = calling("Seq2Seq.encoder", model.attribute, "encoder")
        self.decoder = calling("Seq2Seq.decoder", model.attribute, "decoder")
        for name, sub in (("encoder", self.encoder), ("decoder", self.decoder)):
            if not isinstance(sub, Subject):
                raise CheckFailed(
                    f"Seq2Seq.{name} must be the model's {name.capitalize()}, not a "
                    f"{type(sub).__name__}."
                )

    def context(self, src, lengths):
        what = "self.encoder(src, lengths)"
        out = calling(f"{what} ({self.NOTE})", self.encoder, src, lengths)
        return _pair(out, f"{what} ({self.NOTE})")[1]

    def step(self, tokens, hidden):
        what = "self.decoder(tokens, hidden)"
        return _pair(calling(f"{what} ({self.NOTE})", self.decoder, tokens, hidden), what)

    def free_running(self, context, sos_column, steps):
        tokens, hidden, out = sos_column, context, []
        for _ in range(steps):
            logits, hidden = self.step(tokens, hidden)
            out.append(logits)
            tokens = logits.argmax(dim=-1)
        return torch.cat(out, dim=1)

    def greedy(self, context, max_len):
        B = context.size(0)
        tokens = torch.full((B, 1), SOS, dtype=torch.long, device=context.device)
        finished = torch.zeros(B, dtype=torch.bool, device=context.device)
        hidden, out = context, []
        for _ in range(max_len):
            logits, hidden = self.step(tokens, hidden)
            tokens = logits.argmax(dim=-1)
            out.append(tokens.masked_fill(finished[:, None], PAD))
            finished |= tokens[:, 0] == EOS
            if bool(finished.all()):
                break
        return torch.cat(out, dim=1)


def _model(cls: Subject, device):
    """The student's Seq2Seq built under seed 0, its driver, and whether its parameters have the
    reference's names and shapes (then the check loads the reference's weights)."""
    title = f"Seq2Seq({V_SRC}, {V_TGT}, {E_EMB}, {E})"
    model = calling(title, cls.seeded(0), V_SRC, V_TGT, E_EMB, E)
    driver = _Driver(model)
    info = model.describe()
    same_names = {k: tuple(v.shape) for k, v in info["state"].items()} == {
        k: tuple(v.shape) for k, v in seq2seq_state().items()
    }
    return title, model, driver, same_names


def _load(model, title, same_names, device, dtype, state=None) -> None:
    if same_names:
        calling(f"{title}.load_state_dict", model.load_state_dict, state or seq2seq_state())
    calling(f"{title}.to({device.type}, {dtype_name(dtype)})", model.to, device, dtype)


@check()
def check_seq2seq_teacher_forcing(cls: Subject) -> None:
    """Seq2Seq(src_vocab_size, tgt_vocab_size, embed_dim, hidden_dim, pad_id=0, sos_id=1,
    eos_id=2).forward(src, lengths, tgt_in) with teacher forcing: the decoder reads tgt_in from
    the encoder's context (checked against the student's own encoder and decoder, driven here),
    and the loss's gradient reaches the encoder."""
    for device in check_devices():
        title, model, driver, same_names = _model(cls, device)
        src, lengths, tgt_in = _seq2seq_batch(device)
        B, L = tgt_in.shape
        for dtype in _DTYPES:
            _load(model, title, same_names, device, dtype)
            context = driver.context(src, lengths)
            teacher_forced = driver.step(tgt_in, context)[0]
            what = f"Seq2Seq.forward(src, lengths, tgt_in (B={B}, L={L})) ({label(dtype, device)})"
            got = calling(what, model, src, lengths, tgt_in)
            compare(
                got,
                teacher_forced,
                what,
                hint="With teacher forcing the decoder reads all of tgt_in at once, starting from "
                "the encoder's context (its second output).",
            )
        _check_gradient_reaches_encoder(model, driver, src, lengths, tgt_in, device)


@check()
def check_seq2seq_free_running(cls: Subject) -> None:
    """Seq2Seq.forward(src, lengths, tgt_in, teacher_forcing=False): the decoder reads
    tgt_in[:, 0] (<sos>) and then its own previous argmax, for L steps, passing its hidden state
    on; checked against the student's own encoder and decoder, driven here."""
    for device in check_devices():
        title, model, driver, same_names = _model(cls, device)
        src, lengths, tgt_in = _seq2seq_batch(device)
        B, L = tgt_in.shape
        for dtype in _DTYPES:
            _load(model, title, same_names, device, dtype)
            context = driver.context(src, lengths)
            # The expected values first: if the student's own modules cannot be driven, say that.
            teacher_forced = driver.step(tgt_in, context)[0]
            expected = driver.free_running(context, tgt_in[:, :1], L)
            sos_only = driver.step(tgt_in[:, :1].expand(B, L), context)[0]
            what = (
                f"Seq2Seq.forward(src, lengths, tgt_in, teacher_forcing=False) "
                f"({label(dtype, device)})"
            )
            got = calling(what, model, src, lengths, tgt_in, teacher_forcing=False)
            if close(got, teacher_forced) and not close(got, expected):
                raise CheckFailed(
                    f"{what}: the decoder still reads tgt_in, which is teacher forcing at "
                    "evaluation time; without teacher forcing it reads tgt_in[:, 0] (<sos>) and "
                    "then its own previous prediction (the argmax of its logits)."
                )
            if close(got, sos_only) and not close(got, expected):
                raise CheckFailed(
                    f"{what}: the decoder reads <sos> at every step; after the first, it reads "
                    "its own previous prediction."
                )
            compare(
                got,
                expected,
                what,
                hint="Without teacher forcing: L steps of one token each, the first <sos>, each "
                "next one the argmax of the previous step's logits, with the hidden state passed "
                "on.",
            )


def _check_gradient_reaches_encoder(model, driver, src, lengths, tgt_in, device) -> None:
    """Through a decoder that uses its hidden state, the loss's gradient reaches the encoder."""
    calling("Seq2Seq.to", model.to, device, torch.float32)
    context = driver.context(src, lengths)
    logits = driver.step(tgt_in, context)[0]
    if close(driver.step(tgt_in, torch.zeros_like(context))[0], logits):
        return  # the student's decoder ignores its hidden state: Part 2 says so, not this part
    what = f"Seq2Seq.forward with teacher forcing, backward ({device.type})"
    _, _, grads = calling(what, model.gradients, (src, lengths, tgt_in), params=True)
    encoder = {k: g for k, g in grads.items() if k.startswith("encoder.")}
    if not encoder or all(g is None or not bool(g.ne(0).any()) for g in encoder.values()):
        raise CheckFailed(
            f"{what}: no gradient reaches the encoder's parameters; the context must stay "
            "connected to the encoder (no .detach(), no torch.no_grad() in forward), or the "
            "encoder never learns."
        )


def _decoded(cls: Subject):
    """For every device and decoding case: (what, the student's ids (B, L') on the CPU, what
    driving the student's own modules gives, max_len), after the properties every result must
    have (a 2-d int64 tensor on src's device, no <sos> column, at most max_len steps).

    Decoding compares token ids: float64 keeps near-ties from flipping between two ways of
    batching the same computation."""
    for device in check_devices():
        title, model, driver, same_names = _model(cls, device)
        src, lengths, _ = _seq2seq_batch(device)
        B = src.size(0)
        for eos_bias, scale, max_len in DECODING_CASES:
            _load(model, title, same_names, device, torch.float64, seq2seq_state(eos_bias, scale))
            context = driver.context(src, lengths)
            what = f"Seq2Seq.greedy_decode(src (B={B}), lengths, max_len={max_len}) ({device.type})"
            # The expected ids first: if the student's own modules cannot be driven, say that.
            expected = driver.greedy(context, max_len)  # (B, L')
            got = calling(what, model.method("greedy_decode"), src, lengths, max_len)
            if not isinstance(got, torch.Tensor):
                raise CheckFailed(
                    f"{what}: return a tensor of token ids, not a {type(got).__name__}."
                )
            if got.dtype != torch.long:
                raise CheckFailed(f"{what}: return int64 token ids (the argmax), not {got.dtype}.")
            if got.device.type != device.type:
                raise CheckFailed(
                    f"{what}: the ids are on {got.device}; return them on src's device."
                )
            if got.dim() != 2 or got.size(0) != B:
                raise CheckFailed(
                    f"{what}: return shape (B, L') with B = {B}, not {tuple(got.shape)}."
                )
            got = got.cpu()
            if got.size(1) >= 1 and bool(got[:, 0].eq(SOS).all()):
                raise CheckFailed(
                    f"{what}: the ids start with <sos>; return only the predicted words."
                )
            if got.size(1) > max_len:
                raise CheckFailed(
                    f"{what}: {got.size(1)} steps; decode at most max_len = {max_len}."
                )
            yield what, got, expected.cpu(), max_len


def _sentence_lengths(ids: torch.Tensor) -> torch.Tensor:
    """(B,): the tokens of each row up to and including its first <eos> (all of a row that has
    none)."""
    is_eos = ids.eq(EOS)
    first = is_eos.long().argmax(dim=1) + 1  # (B,)
    return torch.where(is_eos.any(dim=1), first, torch.full_like(first, ids.size(1)))


@check()
def check_seq2seq_greedy(cls: Subject) -> None:
    """Seq2Seq.greedy_decode(src, lengths, max_len) -> (B, L') int64 on src's device: from <sos>
    and the encoder's context, the decoder reads its own previous argmax at every step, passing
    its hidden state on; the ids start with the first predicted word (no <sos>). Checked against
    the student's own encoder and decoder, driven here, on each row's words up to and including
    its first <eos> (what comes after, and when decoding stops, are check_seq2seq_eos's)."""
    for what, got, expected, _ in _decoded(cls):
        n = torch.minimum(_sentence_lengths(expected), torch.tensor(got.size(1)))  # (B,)
        for b in range(got.size(0)):
            if not torch.equal(got[b, : n[b]], expected[b, : n[b]]):
                raise CheckFailed(
                    f"{what}: the ids differ from greedy decoding with your own encoder and "
                    "decoder: start from <sos> and the encoder's context, and at each step feed "
                    "the decoder its own previous prediction (the argmax), passing the hidden "
                    "state on."
                )


@check()
def check_seq2seq_eos(cls: Subject) -> None:
    """Seq2Seq.greedy_decode and <eos>: a row holds its words up to and including its first
    <eos>, then <pad>; decoding stops as soon as every row has written <eos> (L' is the step at
    which the last row did), and after max_len steps at most. Checked on the student's own ids,
    so that a wrong word costs check_seq2seq_greedy, not this."""
    for what, got, _, max_len in _decoded(cls):
        is_eos = got.eq(EOS).long()
        after = (is_eos.cumsum(dim=1) - is_eos) > 0  # (B, L'): after each row's first <eos>
        if bool(got[after].ne(PAD).any()):
            raise CheckFailed(
                f"{what}: a row goes on after its <eos>; once a row has written <eos>, its "
                "remaining positions must be <pad>."
            )
        finished = is_eos.bool().any(dim=1)  # (B,)
        n = got.size(1)
        last = int(_sentence_lengths(got).max()) if bool(finished.all()) else max_len
        if n > last:
            raise CheckFailed(
                f"{what}: decoding went on after every row had written <eos> ({n} steps); stop "
                "as soon as all rows have finished, or after max_len steps."
            )
        if n < last:
            raise CheckFailed(
                f"{what}: decoding stopped after {n} steps, before every row had written <eos>"
                + (" (it stops when the first row does)" if bool(finished.any()) else "")
                + f"; go on until all rows have finished, or for max_len = {max_len} steps."
            )


# --------------------------------------------------------------------------------------------
# Part 4: exact match and token accuracy
# --------------------------------------------------------------------------------------------

# Hand-made rows (target, prediction, exact, token accuracy) that name one property each.
_W, _X, _Y, _Z = 7, 8, 9, 10
_ROWS = {
    "identical, <eos> included": ([_W, _X, EOS], [_W, _X, EOS], True, 1.0),
    "one word wrong": ([_W, _X, _Y, EOS], [_W, _Z, _Y, EOS], False, 0.75),
    "stopped early (a prefix of the target)": ([_W, _X, _Y, EOS], [_W, _X, EOS], False, 0.5),
    "no <eos> at all": ([_W, _X, EOS], [_W, _X, _Y, _Z], False, 2 / 3),
    "every word right but no <eos>": ([_W, _X, EOS], [_W, _X], False, 2 / 3),
    "longer than the target": ([_W, EOS], [_W, _X, _Y, EOS], False, 0.5),
    "right, then more tokens after its <eos>": ([_W, _X, EOS], [_W, _X, EOS, _Y, _Z], True, 1.0),
    "after an early <eos>, tokens that match": ([_W, _X, _Y, EOS], [_W, EOS, _Y, EOS], False, 0.25),
    "only <eos>": ([EOS], [EOS], True, 1.0),
}


def _row_batch(rows, device):
    """Targets padded with <pad> to width Lt, predictions to width Lp (a different width)."""
    targets = [t for t, _, _, _ in rows]
    preds = [p for _, p, _, _ in rows]
    Lt = max(map(len, targets)) + 1
    Lp = max(map(len, preds)) + 2
    tgt = torch.tensor([t + [PAD] * (Lt - len(t)) for t in targets], device=device)  # (B, Lt)
    pred = torch.tensor([p + [PAD] * (Lp - len(p)) for p in preds], device=device)  # (B, Lp)
    exact = torch.tensor([e for _, _, e, _ in rows], device=device)
    accuracy = torch.tensor([a for _, _, _, a in rows], device=device)
    return pred, tgt, exact, accuracy


def _random_rows(n, seed, eos_id=EOS, pad_id=PAD):
    """(predictions (n, Lp), targets (n, Lt)): targets of random length, predictions that copy,
    change, cut or extend them."""
    g = torch.Generator().manual_seed(seed)
    vocab = 12
    words = [w for w in range(vocab) if w not in (eos_id, pad_id)]

    def word():
        return words[int(torch.randint(len(words), (1,), generator=g))]

    targets, preds = [], []
    for i in range(n):
        t = [word() for _ in range(int(torch.randint(0, 8, (1,), generator=g)))] + [eos_id]
        p = list(t)
        kind = i % 5
        if kind == 1:  # a few words changed
            for j in torch.randint(len(p), (2,), generator=g).tolist():
                p[j] = word()
        elif kind == 2:  # cut short, with or without <eos>
            p = p[: int(torch.randint(len(p), (1,), generator=g))]
            if i % 2:
                p.append(eos_id)
        elif kind == 3:  # extended past the target, garbage after the <eos> or none
            p = p[:-1] + [word() for _ in range(3)] + ([eos_id] if i % 2 else [])
        elif kind == 4:  # right, then garbage after the <eos>
            p = p + [word(), word()]
        targets.append(t)
        preds.append(p)
    Lt, Lp = max(map(len, targets)) + 2, max(map(len, preds)) + 1
    tgt = torch.tensor([t + [pad_id] * (Lt - len(t)) for t in targets])
    pred = torch.tensor([p + [pad_id] * (Lp - len(p)) for p in preds])
    return pred, tgt


def _returned(out, B, device, what):
    if not isinstance(out, tuple) or len(out) != 2:
        raise CheckFailed(f"{what} must return a tuple (exact, token_accuracy).")
    exact, accuracy = out
    for name, t in (("exact", exact), ("token_accuracy", accuracy)):
        if not isinstance(t, torch.Tensor):
            raise CheckFailed(f"{what}: {name} must be a tensor, not a {type(t).__name__}.")
        if tuple(t.shape) != (B,):
            raise CheckFailed(
                f"{what}: {name} must have one value per sentence, shape ({B},), not "
                f"{tuple(t.shape)}."
            )
        if t.device.type != device.type:
            raise CheckFailed(f"{what}: {name} is on {t.device}; keep it on the inputs' device.")
    if exact.dtype != torch.bool:
        raise CheckFailed(f"{what}: exact must be a bool tensor, not {exact.dtype}.")
    if accuracy.dtype != torch.float32:
        raise CheckFailed(f"{what}: token_accuracy must be float32, not {accuracy.dtype}.")
    return exact, accuracy


@check()
def check_sequence_accuracy(fn: Subject) -> None:
    """sequence_accuracy(predictions, targets, eos_id=2, pad_id=0) -> (exact (B,) bool,
    token_accuracy (B,) float32).

    A sentence ends at its first <eos>, included; what follows a prediction's <eos> is ignored;
    token accuracy is over the target's positions (words and <eos>), a position the prediction
    does not reach counting as wrong; predictions and targets may have different widths; other
    eos and pad ids; results on the inputs' device.
    """
    for device in check_devices():
        for name, row in _ROWS.items():
            pred, tgt, exact, accuracy = _row_batch([row], device)
            what = f"sequence_accuracy on a sentence {name} ({device.type})"
            got_exact, got_accuracy = _returned(calling(what, fn, pred, tgt), 1, device, what)
            if bool(got_exact[0]) != bool(exact[0]):
                raise CheckFailed(
                    f"{what}: exact should be {bool(exact[0])}. A sentence ends at its first "
                    "<eos>, included; anything after a prediction's <eos> is ignored."
                )
            if not torch.allclose(got_accuracy.cpu(), accuracy.cpu().float(), atol=1e-6):
                raise CheckFailed(
                    f"{what}: wrong token accuracy. It is the share of the target's positions "
                    "(its words and its <eos>) where the prediction has the same token; a "
                    "position the prediction does not reach, or reaches after its own <eos>, "
                    "counts as wrong."
                )
        pred, tgt, exact, accuracy = _row_batch(list(_ROWS.values()), device)
        what = f"sequence_accuracy on a batch of {len(_ROWS)} sentences ({device.type})"
        got_exact, got_accuracy = _returned(calling(what, fn, pred, tgt), len(_ROWS), device, what)
        if not torch.equal(got_exact.cpu(), exact.cpu()):
            raise CheckFailed(f"{what}: exact differs from one sentence at a time.")
        compare(got_accuracy, accuracy.float(), f"{what}: token_accuracy")

        for seed, (eos_id, pad_id) in enumerate([(EOS, PAD), (EOS, PAD), (4, 3)]):
            pred, tgt = _random_rows(40, seed, eos_id, pad_id)
            pred, tgt = pred.to(device), tgt.to(device)
            what = (
                f"sequence_accuracy on 40 random sentences, eos_id={eos_id}, pad_id={pad_id} "
                f"({device.type})"
            )
            got = _returned(
                calling(what, fn, pred, tgt, eos_id=eos_id, pad_id=pad_id), 40, device, what
            )
            exact, accuracy = ref.sequence_accuracy(pred, tgt, eos_id=eos_id, pad_id=pad_id)
            if not torch.equal(got[0].cpu(), exact.cpu()):
                raise CheckFailed(f"{what}: exact is wrong for some sentences; use eos_id/pad_id.")
            compare(got[1], accuracy, f"{what}: token_accuracy", hint="Use eos_id and pad_id.")
