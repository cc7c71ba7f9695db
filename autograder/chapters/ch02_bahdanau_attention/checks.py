"""Chapter 2's checks: what the hidden tests of ``solutions/ch02_bahdanau_attention`` call.

Each check draws its inputs from fixed seeds, runs on the CPU and on CUDA when there is one, in
float32 and float64, and tests what the exercise's instructions promise, properties first (the
types and shapes of the results; weights that are finite, exactly 0 at the padding and sum to 1
over the real positions), values after, so that a failure names the property.

One bug, one part:

- ``AdditiveAttention`` calls the student's ``masked_softmax``; its check has the reference stand in
  for it (``stand_ins``).
- ``AttentiveDecoder.step`` calls the student's attention *module*, which a stand-in cannot replace
  (a stand-in answers a call with data; it cannot hand a module into the student's process). So the
  decoder's check asks the student's own ``decoder.attention`` (through its handle) for the context
  and the weights of the same query, and computes the expected step from those, with the
  reference's GRU cell and output layer holding the student's weights. A wrong attention then
  gives a wrong context to both sides alike and costs the decoder nothing; only an attention that
  cannot be called at all leaves the decoder uncheckable. The check also has the reference stand in
  for ``masked_softmax`` there, so that a broken Part 1 cannot break the attention's call.

Not here: the reference (``reference.py``) and the known-wrong implementations (``wrong.py``).
"""

from __future__ import annotations

import torch

from autograder.toolkit import (
    TOLERANCES,
    CheckFailed,
    LocalSubject,
    Subject,
    calling,
    cases,
    check,
    check_devices,
    compare,
    module_state,
)

from .reference import AdditiveAttention, AttentiveDecoder, masked_softmax, padding_mask

__all__ = ["check_masked_softmax", "check_additive_attention", "check_attentive_decoder"]

_DTYPES = (torch.float32, torch.float64)
_SOFTMAX = {"masked_softmax": masked_softmax}

# (batch dims, S): a batch of sentences, two batch dims, a one-word sentence, a single row.
_SOFTMAX_SHAPES = [((4,), 7), ((2, 3), 5), ((3,), 1), ((), 6), ((5,), 12)]

_SCORE_HINT = (
    "e_j = v(tanh(W_s(query) + W_h(keys)[:, j])): W_s(query) (B, A) is added to the projection of "
    "every position, (B, S, A), then tanh, then v gives (B, S, 1); drop the last dimension."
)
_CONTEXT_HINT = (
    "The context is the weighted sum of the keys themselves, sum_j weights[:, j] * keys[:, j], of "
    "shape (B, Ek): not of their projections W_h(keys)."
)


def _close(a, b, dtype) -> bool:
    rtol, atol = TOLERANCES[dtype]
    return (
        isinstance(a, torch.Tensor)
        and a.shape == b.shape
        and a.device.type == b.device.type
        and torch.allclose(a.to(b.dtype), b, rtol, atol, equal_nan=True)
    )


def _lengths(batch: tuple, S: int, g: torch.Generator) -> torch.Tensor:
    """Random lengths in 1..S for every row, the first row full: a padded batch of sentences."""
    lengths = torch.randint(1, S + 1, batch, generator=g)
    lengths.view(-1)[0] = S
    return lengths


def _weights(weights, mask, shape: tuple, what: str) -> None:
    """Properties of attention weights over source positions, checked before any value: a tensor
    of the right shape, finite, >= 0, exactly 0 where the mask (True = allowed) is False, rows that
    sum to 1 over their real positions, and all-zero rows where no position is allowed."""
    if not isinstance(weights, torch.Tensor):
        kind = type(weights).__name__
        raise CheckFailed(f"{what}: the weights must be a torch.Tensor, not {kind}.")
    if tuple(weights.shape) != tuple(shape):
        raise CheckFailed(
            f"{what}: the weights have shape {tuple(weights.shape)}, expected {tuple(shape)}: one "
            "weight per source position, for each row."
        )
    if bool(torch.isnan(weights).any()):
        raise CheckFailed(f"{what}: the weights contain NaN.")
    if bool((weights < 0).any()):
        raise CheckFailed(f"{what}: some weights are negative; a softmax is never negative.")
    _, atol = TOLERANCES.get(weights.dtype, (0, 1e-3))
    sums = weights.double().sum(dim=-1)  # (...)
    if mask is not None:
        mask = mask.to(weights.device).expand(weights.shape)  # (..., S)
        if bool((weights.masked_select(~mask) != 0).any()):
            raise CheckFailed(
                f"{what}: a padded position (mask False) got a nonzero weight; padding must get "
                "weight exactly 0, so set its scores to -inf *before* the softmax."
            )
        allowed = mask.any(dim=-1)  # (...)
        if bool((sums[~allowed] != 0).any()):
            raise CheckFailed(
                f"{what}: a row with no allowed position must get weights 0 (it attends to "
                "nothing), not NaN and not a uniform row."
            )
        sums = sums[allowed]
    if not torch.allclose(sums, torch.ones_like(sums), rtol=0, atol=10 * atol):
        raise CheckFailed(
            f"{what}: a row's weights do not sum to 1 over its real positions; the softmax runs "
            "over the source positions (the last dimension), after the padding is masked."
        )


def _tensors(result, n: int, names: str, what: str) -> tuple:
    """`result` as a tuple of n tensors, or a CheckFailed that says what was expected."""
    if not isinstance(result, tuple) or len(result) != n:
        got = f"a tuple of {len(result)}" if isinstance(result, tuple) else type(result).__name__
        raise CheckFailed(f"{what}: must return a tuple ({names}), not {got}.")
    for item in result:
        if not isinstance(item, torch.Tensor):
            raise CheckFailed(
                f"{what}: must return a tuple of tensors ({names}), found a {type(item).__name__}."
            )
    return result


# --------------------------------------------------------------------------------------------
# Part 1: masked_softmax
# --------------------------------------------------------------------------------------------


@check()
def check_masked_softmax(fn: Subject) -> None:
    """masked_softmax(scores, mask=None) -> (..., S): a softmax over the last dimension in which
    the positions where the boolean mask is False get exactly 0 (True = allowed); the mask may
    broadcast; a row with no allowed position gives zeros, with finite gradients; large scores do
    not overflow; the dtype and the device of the scores are kept."""
    for device, dtype, seed, (batch, S) in cases(_SOFTMAX_SHAPES, _DTYPES):
        g = torch.Generator().manual_seed(seed)
        scores = (3 * torch.randn(*batch, S, generator=g, dtype=torch.float64)).to(device, dtype)
        shape = (*batch, S)
        where = f"(scores of shape {shape}, {str(dtype).removeprefix('torch.')}, {device.type})"

        what = f"masked_softmax{where}, no mask"
        out = calling(what, fn, scores)
        if batch and _close(out, scores.softmax(dim=0), dtype) and shape[0] > 1:
            raise CheckFailed(f"{what}: the softmax runs over the first dimension (the batch); "
                              "it must run over the source positions, the last dimension.")
        _weights(out, None, shape, what)
        compare(out, masked_softmax(scores), what)

        mask = padding_mask(_lengths(batch, S, g), S).to(device)  # (..., S)
        what = f"masked_softmax{where}, a padding mask"
        out = calling(what, fn, scores, mask)
        if S > 1 and bool((~mask).any()):
            if _close(out, scores.softmax(dim=-1), dtype):
                raise CheckFailed(
                    f"{what}: the mask is ignored, so the padding gets weight; set the scores "
                    "where the mask is False to -inf before the softmax."
                )
            if _close(out, masked_softmax(scores, ~mask), dtype):
                raise CheckFailed(
                    f"{what}: the mask is used the wrong way round; it is True where a position "
                    "is allowed (a real word) and False at the padding."
                )
        if batch and shape[0] > 1:
            over_batch = scores.masked_fill(~mask, float("-inf")).softmax(dim=0).nan_to_num(0.0)
            if _close(out, over_batch, dtype):
                raise CheckFailed(
                    f"{what}: the softmax runs over the first dimension (the batch); it must run "
                    "over the source positions, the last dimension."
                )
        _weights(out, mask, shape, what)
        compare(out, masked_softmax(scores, mask), what)

        row = torch.arange(S, device=device) < max(1, S - 2)  # (S,): one mask for every row
        what = f"masked_softmax{where}, a mask of shape ({S},) broadcast over the rows"
        out = calling(what, fn, scores, row)
        _weights(out, row, shape, what)
        compare(out, masked_softmax(scores, row), what)

        if batch:
            empty = mask.clone()
            empty.view(-1, S)[-1] = False  # the last row has no allowed position
            what = f"masked_softmax{where}, a row with no allowed position"
            out = calling(what, fn, scores, empty)
            _weights(out, empty, shape, what)
            compare(out, masked_softmax(scores, empty), what)

        what = f"masked_softmax{where}, scores in the hundreds"
        big = scores * 300  # (..., S)
        out = calling(what, fn, big, mask)
        if isinstance(out, torch.Tensor) and not bool(torch.isfinite(out).all()):
            raise CheckFailed(
                f"{what}: the result is not finite. exp(x) / sum(exp(x)) overflows for large x; "
                "torch.softmax does not (it subtracts each row's largest score first)."
            )
        compare(out, masked_softmax(big, mask), what)

    _check_softmax_gradients(fn)


def _check_softmax_gradients(fn: Subject) -> None:
    """Gradients reach the scores, equal the reference's, and stay finite when a row has no
    allowed position."""
    g = torch.Generator().manual_seed(50)
    scores = torch.randn(3, 6, generator=g, dtype=torch.float64)  # (B, S)
    mask = padding_mask(torch.tensor([6, 2, 4]), 6)  # (B, S)
    mask[1] = False  # a row with no allowed position
    grad_output = torch.randn(3, 6, generator=g, dtype=torch.float64)  # (B, S)
    what = "masked_softmax (float64, cpu), backward, with a row that has no allowed position"
    _, grads, _ = calling(what, fn.gradients, (scores, mask), grad_output=grad_output)
    _, expected, _ = LocalSubject(masked_softmax).gradients((scores, mask), grad_output=grad_output)
    if not grads or grads[0] is None:
        raise CheckFailed(f"{what}: no gradient reaches the scores.")
    if not bool(torch.isfinite(grads[0]).all()):
        raise CheckFailed(
            f"{what}: the gradient of the scores is not finite; a row with no allowed position "
            "must not produce NaN in the backward pass either (give it finite scores before the "
            "softmax, and zero its weights after)."
        )
    compare(grads[0], expected[0], f"{what}, the gradient of the scores")


# --------------------------------------------------------------------------------------------
# Part 2: AdditiveAttention
# --------------------------------------------------------------------------------------------

# (Eq, Ek, A, B, S, seed): Eq != Ek, Eq == Ek, a one-word sentence, a longer batch.
_ATTENTION_CONFIGS = [
    (8, 6, 5, 3, 7, 0),
    (16, 16, 8, 4, 5, 1),
    (4, 10, 3, 2, 1, 2),
    (6, 4, 7, 5, 9, 3),
]


def _attention_module(cls: Subject, Eq: int, Ek: int, A: int, seed: int):
    """The student's AdditiveAttention(Eq, Ek, A) and the reference holding its weights."""
    label = f"AdditiveAttention({Eq}, {Ek}, {A})"
    module = calling(label, cls.seeded(seed), Eq, Ek, A)
    if not isinstance(module, Subject):
        raise CheckFailed(f"{label} must construct an nn.Module.")
    layers = {"W_s": ("Linear", (A, Eq)), "W_h": ("Linear", (A, Ek)), "v": ("Linear", (1, A))}
    state = module_state(module, label, layers)
    for name in ("W_s", "W_h", "v"):
        if f"{name}.bias" in state:
            raise CheckFailed(
                f"{label}.{name} has a bias; the score v^T tanh(W_s s + W_h h) has none, as in "
                "the paper: nn.Linear(..., bias=False)."
            )
    reference = AdditiveAttention(Eq, Ek, A)
    reference.load_state_dict({n: state[n] for n in reference.state_dict()})
    return label, module, reference


@check(stand_ins=_SOFTMAX)
def check_additive_attention(cls: Subject) -> None:
    """AdditiveAttention(query_dim, key_dim, attn_dim): bias-free nn.Linear maps W_s (Eq -> A),
    W_h (Ek -> A) and v (A -> 1); score(query (B, Eq), keys (B, S, Ek), projected_keys=None) ->
    (B, S), v^T tanh(W_s s + W_h h_j); forward(query, keys, mask=None, projected_keys=None) ->
    (context (B, Ek), weights (B, S)): the masked softmax of the scores (mask True = a real
    position), exactly 0 at the padding, and the weighted sum of the keys; projected_keys, when
    given, is used in place of W_h(keys); a row with no allowed position gets zero weights and a
    zero context; the inputs' dtype and device are kept; gradients reach W_s, W_h and v."""
    for Eq, Ek, A, B, S, seed in _ATTENTION_CONFIGS:
        label, module, reference = _attention_module(cls, Eq, Ek, A, seed)
        for device in check_devices():
            for dtype in _DTYPES:
                module.to(device, dtype)
                reference.to(device, dtype)
                g = torch.Generator().manual_seed(seed + 100)
                query = torch.randn(B, Eq, generator=g, dtype=torch.float64)  # (B, Eq)
                keys = torch.randn(B, S, Ek, generator=g, dtype=torch.float64)  # (B, S, Ek)
                projected = torch.randn(B, S, A, generator=g, dtype=torch.float64)  # (B, S, A)
                query, keys, projected = (t.to(device, dtype) for t in (query, keys, projected))
                mask = padding_mask(_lengths((B,), S, g), S).to(device)  # (B, S)
                where = (
                    f"(query (B={B}, Eq={Eq}), keys (B={B}, S={S}, Ek={Ek}), "
                    f"{str(dtype).removeprefix('torch.')}, {device.type})"
                )
                _check_attention_case(module, reference, query, keys, projected, mask,
                                      f"{label}{where}", (B, S, Ek))  # fmt: skip
    _check_attention_gradients(cls)


def _check_attention_case(module, reference, query, keys, projected, mask, label, dims) -> None:
    B, S, Ek = dims
    dtype = query.dtype
    with torch.no_grad():
        ref_context, ref_weights = reference(query, keys, mask)  # (B, Ek), (B, S)

    what = f"{label}.score"
    out = calling(what, module.method("score"), query, keys)
    compare(out, reference.score(query, keys).detach(), what, hint=_SCORE_HINT)

    what = f"{label}, with a padding mask"
    context, weights = _tensors(calling(what, module, query, keys, mask), 2, "context, weights",
                                what)  # fmt: skip
    if tuple(weights.shape) == (B, Ek) and tuple(context.shape) == (B, S) and S != Ek:
        raise CheckFailed(f"{what}: return (context, weights), in that order.")
    if B > 1 and S > 1:
        over_batch = reference.score(query, keys).detach().masked_fill(~mask, float("-inf"))
        if _close(weights, over_batch.softmax(dim=0).nan_to_num(0.0), dtype):
            raise CheckFailed(
                f"{what}: the softmax runs over the batch (dim 0); it must run over the source "
                "positions of each sentence, the last dimension."
            )
    if S > 1 and _close(weights, reference(query, keys)[1].detach(), dtype):
        raise CheckFailed(
            f"{what}: the padding is not masked: pass the mask on to the softmax (masked_softmax), "
            "so that padded positions get weight 0."
        )
    _weights(weights, mask, (B, S), f"{what}, the weights")
    compare(weights, ref_weights, f"{what}, the weights", hint=_SCORE_HINT)
    compare(context, ref_context, f"{what}, the context", hint=_CONTEXT_HINT)

    what = f"{label}, no mask"
    context, weights = _tensors(calling(what, module, query, keys), 2, "context, weights", what)
    _weights(weights, None, (B, S), f"{what}, the weights")
    with torch.no_grad():
        expected = reference(query, keys)
    compare(weights, expected[1], f"{what}, the weights")
    compare(context, expected[0], f"{what}, the context", hint=_CONTEXT_HINT)

    what = f"{label}, with two more padded positions (mask False) holding large keys"
    g = torch.Generator().manual_seed(B * 31 + S)
    extra = 10 * torch.randn(B, 2, Ek, generator=g, dtype=torch.float64)  # (B, 2, Ek)
    padded_keys = torch.cat([keys, extra.to(keys.device, dtype)], dim=1)  # (B, S + 2, Ek)
    padded_mask = torch.cat([mask, mask.new_zeros(B, 2)], dim=1)  # (B, S + 2)
    context, weights = _tensors(calling(what, module, query, padded_keys, padded_mask), 2,
                                "context, weights", what)  # fmt: skip
    _weights(weights, padded_mask, (B, S + 2), f"{what}, the weights")
    if not _close(context, ref_context, dtype):
        raise CheckFailed(
            f"{what}: the context changed when padding was added; padded positions must not "
            "count, whatever their keys hold."
        )

    what = f"{label}, with projected_keys"
    out = calling(f"{label}.score, with projected_keys", module.method("score"), query, keys,
                  projected)  # fmt: skip
    context, weights = _tensors(calling(what, module, query, keys, mask, projected), 2,
                                "context, weights", what)  # fmt: skip
    with torch.no_grad():
        expected = reference(query, keys, mask, projected)
        plain_score = reference.score(query, keys)  # (B, S)
        score_with = reference.score(query, keys, projected)  # (B, S)
    ignored = (
        _close(out, plain_score, dtype) and not _close(score_with, plain_score, dtype)
    ) or (_close(weights, ref_weights, dtype) and not _close(expected[1], ref_weights, dtype))
    if ignored:
        raise CheckFailed(
            f"{what}: projected_keys is ignored; when it is given, use it in place of W_h(keys) "
            "(a decoder computes W_h(keys) once per sentence and hands it in at every step)."
        )
    compare(out, score_with, f"{label}.score, with projected_keys", hint=_SCORE_HINT)
    compare(weights, expected[1], f"{what}, the weights")
    compare(context, expected[0], f"{what}, the context", hint=_CONTEXT_HINT)

    if B > 1:
        empty = mask.clone()
        empty[-1] = False  # the last sentence has no allowed position
        what = f"{label}, a row with no allowed position"
        context, weights = _tensors(calling(what, module, query, keys, empty), 2,
                                    "context, weights", what)  # fmt: skip
        _weights(weights, empty, (B, S), f"{what}, the weights")
        with torch.no_grad():
            expected = reference(query, keys, empty)
        compare(context, expected[0], f"{what}, the context", hint=_CONTEXT_HINT)


def _check_attention_gradients(cls: Subject) -> None:
    """Gradients of the scores reach the query, the keys, W_s, W_h and v, and equal the
    reference's."""
    Eq, Ek, A, B, S, seed = _ATTENTION_CONFIGS[0]
    label, module, reference = _attention_module(cls, Eq, Ek, A, seed)
    module.to("cpu", torch.float64)
    reference.to("cpu", torch.float64)
    g = torch.Generator().manual_seed(200)
    query = torch.randn(B, Eq, generator=g, dtype=torch.float64)  # (B, Eq)
    keys = torch.randn(B, S, Ek, generator=g, dtype=torch.float64)  # (B, S, Ek)
    grad_output = torch.randn(B, S, generator=g, dtype=torch.float64)  # (B, S)
    what = f"{label}.score (float64, cpu), backward"
    _, got_inputs, got_params = calling(what, module.gradients, (query, keys), params=True,
                                        grad_output=grad_output, method="score")  # fmt: skip
    _, want_inputs, want_params = LocalSubject(reference).gradients(
        (query, keys), params=True, grad_output=grad_output, method="score"
    )
    for name, got, want in zip(("query", "keys"), got_inputs, want_inputs, strict=True):
        if got is None:
            raise CheckFailed(f"{what}: no gradient reaches the {name}.")
        compare(got, want, f"{what}, the gradient of the {name}")
    for name, want in want_params.items():
        got = got_params.get(name)
        if got is None:
            raise CheckFailed(f"{what}: no gradient reaches {name}; is it used in score?")
        compare(got, want, f"{what}, the gradient of {name}")


# --------------------------------------------------------------------------------------------
# Part 3: AttentiveDecoder.step
# --------------------------------------------------------------------------------------------

# (V, E, Eq, Ek, A, B, S, seed)
_DECODER_CONFIGS = [
    (11, 6, 8, 10, 5, 3, 6, 0),
    (7, 4, 12, 6, 3, 2, 1, 1),
    (9, 5, 6, 6, 4, 4, 4, 2),
]


def _decoder_module(cls: Subject, V, E, Eq, Ek, A, seed):
    """The student's AttentiveDecoder, its attention's handle, and the reference holding the
    student's embedding, GRU cell and output layer."""
    label = f"AttentiveDecoder({V}, {E}, {Eq}, {Ek}, {A})"
    decoder = calling(label, cls.seeded(seed), V, E, Eq, Ek, A)
    if not isinstance(decoder, Subject):
        raise CheckFailed(f"{label} must construct an nn.Module.")
    state = module_state(
        decoder, label, {"embedding": ("Embedding", (V, E)), "out": ("Linear", (V, Eq + Ek + E))}
    )
    info = decoder.describe()
    if info["modules"].get("cell") != "GRUCell":
        found = info["modules"].get("cell")
        raise CheckFailed(f"{label} must have an nn.GRUCell called cell, not {found}.")
    for name, shape in (("cell.weight_ih", (3 * Eq, E + Ek)), ("cell.weight_hh", (3 * Eq, Eq))):
        got = state.get(name)
        if got is None or tuple(got.shape) != shape:
            raise CheckFailed(
                f"{label}.cell must be nn.GRUCell(E + Ek, Eq) = nn.GRUCell({E + Ek}, {Eq}): its "
                "input is the embedding and the context side by side, its state the decoder's."
            )
    if "attention" not in info["modules"]:
        raise CheckFailed(
            f"{label} must have a submodule called attention (your AdditiveAttention)."
        )
    padding_idx = calling(f"{label}.embedding.padding_idx",
                          decoder.attribute("embedding").attribute, "padding_idx")  # fmt: skip
    if padding_idx != 0:
        raise CheckFailed(f"{label}.embedding must be created with padding_idx=0.")
    attention = decoder.attribute("attention")
    if not isinstance(attention, Subject):
        raise CheckFailed(f"{label}.attention must be an nn.Module (your AdditiveAttention).")
    reference = AttentiveDecoder(V, E, Eq, Ek, A)
    own = {n: t for n, t in state.items() if n.split(".")[0] in ("embedding", "cell", "out")}
    reference.load_state_dict(own, strict=False)
    return label, decoder, attention, reference


def _expected_step(reference, y_prev, s_prev, context):
    """The reference's step around a given context: (logits (B, V), state (B, Eq))."""
    with torch.no_grad():
        embedded = reference.embedding(y_prev)  # (B, E)
        state = reference.cell(torch.cat([embedded, context], dim=-1), s_prev)  # (B, Eq)
        logits = reference.out(torch.cat([state, context, embedded], dim=-1))  # (B, V)
    return logits, state


@check(stand_ins=_SOFTMAX)
def check_attentive_decoder(cls: Subject) -> None:
    """AttentiveDecoder(vocab_size, embed_dim, hidden_dim, annotation_dim, attn_dim): embedding
    (padding_idx=0), attention (an AdditiveAttention), cell = GRUCell(E + Ek, Eq), out =
    Linear(Eq + Ek + E, V); step(y_prev (B,), s_prev (B, Eq), annotations (B, S, Ek), mask=None,
    projected_keys=None) -> (logits (B, V), state (B, Eq), weights (B, S)), in which the previous
    state queries the attention, the cell reads [E y; c] and the output [s_i; c; E y].

    The expected values are computed from the context and weights that the student's own
    attention returns for s_prev, so a mistake in the attention does not cost this part.
    """
    for V, E, Eq, Ek, A, B, S, seed in _DECODER_CONFIGS:
        label, decoder, attention, reference = _decoder_module(cls, V, E, Eq, Ek, A, seed)
        for device in check_devices():
            for dtype in _DTYPES:
                decoder.to(device, dtype)
                reference.to(device, dtype)
                g = torch.Generator().manual_seed(seed + 300)
                y_prev = torch.randint(3, V, (B,), generator=g).to(device)  # (B,)
                s_prev = torch.randn(B, Eq, generator=g, dtype=torch.float64)  # (B, Eq)
                annotations = torch.randn(B, S, Ek, generator=g, dtype=torch.float64)
                projected = torch.randn(B, S, A, generator=g, dtype=torch.float64)  # (B, S, A)
                s_prev, annotations, projected = (
                    t.to(device, dtype) for t in (s_prev, annotations, projected)
                )
                mask = padding_mask(_lengths((B,), S, g), S).to(device)  # (B, S)
                where = (
                    f"(y_prev (B={B},), s_prev (B={B}, Eq={Eq}), annotations (B={B}, S={S}, "
                    f"Ek={Ek}), {str(dtype).removeprefix('torch.')}, {device.type})"
                )
                for args, note in (
                    ((mask,), "with a padding mask"),
                    ((), "no mask"),
                    ((mask, projected), "with a padding mask and projected_keys"),
                ):
                    _check_step(decoder, attention, reference, (y_prev, s_prev, annotations),
                                args, f"{label}.step{where}, {note}", (B, V, Eq, S))  # fmt: skip


def _check_step(decoder, attention, reference, inputs, extra, what, dims) -> None:
    B, V, Eq, S = dims
    y_prev, s_prev, annotations = inputs
    dtype = s_prev.dtype
    result = calling(what, decoder.method("step"), *inputs, *extra)
    logits, state, weights = _tensors(result, 3, "logits, state, weights", what)
    for name, t, shape in (("logits", logits, (B, V)), ("state", state, (B, Eq)),
                           ("weights", weights, (B, S))):  # fmt: skip
        if tuple(t.shape) != shape:
            raise CheckFailed(
                f"{what}: the {name} have shape {tuple(t.shape)}, expected {shape}; return "
                "(logits (B, V), the new state (B, Eq), the weights (B, S))."
            )

    asked = f"{what}: your decoder's attention (Part 2), called by the check with s_prev"
    context, expected_weights = _tensors(
        calling(asked, attention, s_prev, annotations, *extra), 2, "context, weights", asked
    )
    if not _close(weights, expected_weights, dtype):
        if S > 1:
            from_new = calling(asked, attention, state, annotations, *extra)
            if isinstance(from_new, tuple) and len(from_new) == 2:
                if _close(weights, from_new[1], dtype):
                    raise CheckFailed(
                        f"{what}: the attention is asked with the new state s_i. In Bahdanau's "
                        "decoder the previous state s_{i-1} asks: the context is an input of "
                        "the GRU step that makes s_i, so s_i cannot fetch it."
                    )
        if len(extra) == 2:
            without = calling(asked, attention, s_prev, annotations, extra[0])
            pair = isinstance(without, tuple) and len(without) == 2
            if pair and _close(weights, without[1], dtype):
                raise CheckFailed(
                    f"{what}: projected_keys is not passed on to self.attention; the decoder "
                    "hands it over so that W_h(annotations) is computed once per sentence."
                )
        raise CheckFailed(
            f"{what}: the weights are not those that self.attention(s_prev, annotations, mask, "
            "projected_keys) returns; the previous state asks, and the weights are returned as "
            "the attention gave them."
        )
    expected_logits, expected_state = _expected_step(reference, y_prev, s_prev, context)
    if _close(state, s_prev, dtype) and not _close(expected_state, s_prev, dtype):
        raise CheckFailed(f"{what}: the state returned is s_prev; return the new state s_i.")
    _, blind_state = _expected_step(reference, y_prev, s_prev, torch.zeros_like(context))
    if _close(state, blind_state, dtype) and not _close(expected_state, blind_state, dtype):
        raise CheckFailed(
            f"{what}: the GRU cell does not see the context. Its input is the embedding of "
            "y_prev and the context side by side, [E y_{i-1}; c_i]: that is how the attention "
            "reaches the decoder's state."
        )
    compare(state, expected_state, f"{what}, the new state", equal_nan=True,
            hint="s_i = cell(torch.cat([E y_{i-1}, c_i], -1), s_{i-1}): the embedding first, "
            "then the context.")  # fmt: skip
    compare(logits, expected_logits, f"{what}, the logits", equal_nan=True,
            hint="logits = out(torch.cat([s_i, c_i, E y_{i-1}], -1)), in that order, with the "
            "new state s_i and the context of this step.")  # fmt: skip
