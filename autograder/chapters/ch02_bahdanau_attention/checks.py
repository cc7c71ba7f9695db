"""Chapter 2's checks: what the hidden tests of ``solutions/ch02_bahdanau_attention`` call.

Each check draws its inputs from fixed seeds, runs on the CPU and on CUDA when there is one, in
float32 and float64, and tests what the exercise's instructions promise, properties first (the
types and shapes of the results; weights that are finite, exactly 0 at the padding and sum to 1
over the real positions), values after, so that a failure names the property.

The exercise asks for more than the page builds: a masked softmax and an attention that take one
query per sentence or L of them, under a (B, S) key-padding mask that holds for every query of a
sentence, and the paper's deep output with a maxout layer. So every check tries (B, L, ...) queries,
with B = L among them, where a (B, S) mask or key tensor broadcast the usual way lines sentence l up
with query l and no error is raised.

One bug, one part, one behaviour:

- ``AdditiveAttention`` calls the student's ``masked_softmax``: its checks have the reference stand
  in for it when the student's fails its own check (``stand_ins``).
- Its three graded behaviours are judged apart: the score against the formula; the weights and the
  context against the student's *own* score (masked_softmax of it, then the weighted sum of the
  keys), so that a wrong score costs the score's cell only; ``projected_keys`` by consistency of the
  student's own methods (with ``W_h(keys)`` handed in nothing changes, with other projections the
  keys no longer enter the score).
- ``AttentiveDecoder.step`` calls the student's attention *module*, which a stand-in cannot replace
  (a stand-in answers a call with data; it cannot hand a module into the student's process). So the
  decoder's checks ask the student's own ``decoder.attention`` (through its handle) for the context
  and the weights of the same query, and compute the expected step from those, with the
  reference's GRU cell and layers holding the student's weights; the readout's check starts from
  the state the student's step returned. A wrong attention then gives a wrong context to both sides
  alike and costs the decoder nothing; only an attention that cannot be called at all leaves the
  decoder uncheckable.

Not here: the reference (``reference.py``) and the banks (``wrong.py``, ``right.py``).
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
    close,
    compare,
    draw,
    label,
    module_state,
)

from .reference import AdditiveAttention, AttentiveDecoder, masked_softmax, maxout, padding_mask

__all__ = [
    "check_masked_softmax",
    "check_additive_score",
    "check_additive_weights",
    "check_additive_projected_keys",
    "check_attentive_decoder_state",
    "check_attentive_decoder_readout",
]

_DTYPES = (torch.float32, torch.float64)
_SOFTMAX = {"masked_softmax": masked_softmax}

_SCORE_HINT = (
    "e_j = v(tanh(W_s(query) + W_h(keys)[:, j])): W_s(query) is added to the projection of every "
    "position of the query's own sentence, then tanh, then v gives one number; drop the last "
    "dimension."
)
_CONTEXT_HINT = (
    "The context is the weighted sum of the keys themselves, sum_j weights[..., j] * keys[:, j], "
    "of shape (B, Ek) for (B, Eq) queries and (B, L, Ek) for (B, L, Eq) queries: not of their "
    "projections W_h(keys)."
)
_LINED_UP = (
    "A (B, S) mask broadcast against (B, L, S) the usual way (aligned on the right) pairs mask row "
    "l with query l, not with sentence b: give it a dimension of size 1 for the queries, "
    "mask[:, None, :] (B, 1, S)."
)


def _lengths(B: int, S: int, g: torch.Generator) -> torch.Tensor:
    """Random lengths in 1..S for every sentence, the first one full: a padded batch."""
    lengths = torch.randint(1, S + 1, (B,), generator=g)
    lengths[0] = S
    return lengths


def _per_query(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """The (B, S) mask as (B, 1, S) for (B, L, S) weights, as it is for (B, S) ones."""
    return mask if dim == 2 else mask.unsqueeze(1)


def _lined_up_with_queries(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What a (B, S) mask broadcast against (B, L, S) scores from the right gives when B = L:
    query l of every sentence masked with sentence l's row."""
    B, L, S = scores.shape
    return masked_softmax(scores.reshape(B * L, S), mask.repeat(B, 1)).view(B, L, S)


def _weights(weights, mask, shape: tuple, what: str) -> None:
    """Properties of attention weights over source positions, checked before any value: a tensor
    of the right shape, finite, >= 0, exactly 0 where the (B, S) mask (True = allowed) is False,
    rows that sum to 1 over their sentence's real positions, and all-zero rows for a sentence
    with no allowed position."""
    if not isinstance(weights, torch.Tensor):
        kind = type(weights).__name__
        raise CheckFailed(f"{what}: the weights must be a torch.Tensor, not {kind}.")
    if tuple(weights.shape) != tuple(shape):
        raise CheckFailed(
            f"{what}: the weights have shape {tuple(weights.shape)}, expected {tuple(shape)}: one "
            "weight per source position, for each query."
        )
    if bool(torch.isnan(weights).any()):
        raise CheckFailed(f"{what}: the weights contain NaN.")
    if bool((weights < 0).any()):
        raise CheckFailed(f"{what}: some weights are negative; a softmax is never negative.")
    _, atol = TOLERANCES.get(weights.dtype, (0, 1e-3))
    sums = weights.double().sum(dim=-1)  # (B, [L])
    if mask is not None:
        mask = _per_query(mask.to(weights.device), weights.dim()).expand(weights.shape)
        allowed = mask.any(dim=-1)  # (B, [L])
        if bool((weights[~allowed] != 0).any()):
            raise CheckFailed(
                f"{what}: a sentence with no allowed position must get weights 0 (it attends to "
                "nothing), not NaN and not a uniform row."
            )
        if bool((weights.masked_select(~mask) != 0).any()):
            raise CheckFailed(
                f"{what}: a padded position (mask False) got a nonzero weight; padding must get "
                "weight exactly 0, so set its scores to -inf *before* the softmax."
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


def _shape(L: int | None, *dims) -> tuple:
    """(B, [L,] ...): the shape for one query per sentence (L None) or L of them."""
    B, *rest = dims
    return (B, *rest) if L is None else (B, L, *rest)


# --------------------------------------------------------------------------------------------
# Part 1: masked_softmax
# --------------------------------------------------------------------------------------------

# (B, L or None, S): L None is one query per sentence, (B, S). B = L comes first among the
# (B, L, S) cases: there a mask broadcast from the right gives wrong weights without an error.
_SOFTMAX_SHAPES = [
    (4, None, 7),
    (3, 3, 4),
    (3, 5, 6),
    (2, 1, 5),
    (3, None, 1),
    (1, None, 6),
    (5, 2, 12),
]


@check()
def check_masked_softmax(fn: Subject) -> None:
    """masked_softmax(scores (B, S) or (B, L, S), mask=None) -> the weights, shaped as scores: a
    softmax over the last dimension in which the positions where the (B, S) boolean mask is False
    get exactly 0 (True = allowed), mask row b holding for every query of sentence b; a sentence
    with no allowed position gets zeros, with finite gradients; large scores do not overflow; the
    dtype and the device of the scores are kept."""
    for device, dtype, seed, (B, L, S) in cases(_SOFTMAX_SHAPES, _DTYPES):
        g = torch.Generator().manual_seed(seed)
        shape = _shape(L, B, S)
        scores = (3 * torch.randn(*shape, generator=g, dtype=torch.float64)).to(device, dtype)
        mask = padding_mask(_lengths(B, S, g), S).to(device)  # (B, S)
        where = f"(scores of shape {shape}, mask (B={B}, S={S}), {label(dtype, device)})"

        what = f"masked_softmax{where}, no mask"
        out = calling(what, fn, scores)
        if B > 1 and close(out, scores.softmax(dim=0)):
            raise CheckFailed(
                f"{what}: the softmax runs over the first dimension (the batch); it must run over "
                "the source positions, the last dimension."
            )
        _weights(out, None, shape, what)
        compare(out, scores.softmax(dim=-1), what)

        what = f"masked_softmax{where}, with a padding mask"
        out = calling(what, fn, scores, mask)
        expected = masked_softmax(scores, mask)
        padded = not bool(mask.all())
        if L is not None and L == B and padded and close(out, _lined_up_with_queries(scores, mask)):
            raise CheckFailed(f"{what}: the mask is lined up with the queries. {_LINED_UP}")
        if padded and close(out, scores.softmax(dim=-1)):
            raise CheckFailed(f"{what}: the mask is ignored; padded positions must get weight 0.")
        if padded and close(out, masked_softmax(scores, ~mask)):
            raise CheckFailed(
                f"{what}: the mask is used the wrong way round: True means allowed (a real word), "
                "False is padding."
            )
        _weights(out, mask, shape, what)
        compare(out, expected, what)

        if B > 1:
            empty = mask.clone()
            empty[-1] = False  # the last sentence has no allowed position
            what = f"masked_softmax{where}, a sentence with no allowed position"
            out = calling(what, fn, scores, empty)
            _weights(out, empty, shape, what)
            compare(out, masked_softmax(scores, empty), what)

        what = f"masked_softmax{where}, scores in the hundreds"
        big = scores * 300  # (B, [L,] S)
        out = calling(what, fn, big, mask)
        if isinstance(out, torch.Tensor) and not bool(torch.isfinite(out).all()):
            raise CheckFailed(
                f"{what}: the result is not finite. exp(x) / sum(exp(x)) overflows for large x; "
                "torch.softmax does not (it subtracts each row's largest score first)."
            )
        compare(out, masked_softmax(big, mask), what)

    _check_softmax_gradients(fn)


def _check_softmax_gradients(fn: Subject) -> None:
    """Gradients reach the scores, equal the reference's, and stay finite when a sentence has no
    allowed position, for one query per sentence and for several."""
    for L in (None, 4):
        g = torch.Generator().manual_seed(50)
        shape = _shape(L, 3, 6)
        scores = torch.randn(*shape, generator=g, dtype=torch.float64)  # (B, [L,] S)
        mask = padding_mask(torch.tensor([6, 2, 4]), 6)  # (B, S)
        mask[1] = False  # a sentence with no allowed position
        grad_output = torch.randn(*shape, generator=g, dtype=torch.float64)
        what = (
            f"masked_softmax (scores of shape {shape}, float64, cpu), backward, with a sentence "
            "that has no allowed position"
        )
        _, grads, _ = calling(what, fn.gradients, (scores, mask), grad_output=grad_output)
        _, expected, _ = LocalSubject(masked_softmax).gradients(
            (scores, mask), grad_output=grad_output
        )
        if not grads or grads[0] is None:
            raise CheckFailed(f"{what}: no gradient reaches the scores.")
        if not bool(torch.isfinite(grads[0]).all()):
            raise CheckFailed(
                f"{what}: the gradient of the scores is not finite; a sentence with no allowed "
                "position must not produce NaN in the backward pass either (give it finite scores "
                "before the softmax, and zero its weights after)."
            )
        compare(grads[0], expected[0], f"{what}, the gradient of the scores")


# --------------------------------------------------------------------------------------------
# Part 2: AdditiveAttention
# --------------------------------------------------------------------------------------------

# (Eq, Ek, A, B, S, L, seed): Eq != Ek; Eq == Ek with B = L; a one-word sentence; a longer batch.
# Each configuration is tried with one query per sentence, (B, Eq), and with L, (B, L, Eq).
_ATTENTION_CONFIGS = [
    (8, 6, 5, 3, 7, 3, 0),
    (16, 16, 8, 4, 5, 2, 1),
    (4, 10, 3, 2, 1, 3, 2),
    (6, 4, 7, 5, 9, 4, 3),
]


def _attention_module(cls: Subject, Eq: int, Ek: int, A: int, seed: int):
    """The student's AdditiveAttention(Eq, Ek, A) and the reference holding its weights."""
    title = f"AdditiveAttention({Eq}, {Ek}, {A})"
    module = calling(title, cls.seeded(seed), Eq, Ek, A)
    if not isinstance(module, Subject):
        raise CheckFailed(f"{title} must construct an nn.Module.")
    layers = {"W_s": ("Linear", (A, Eq)), "W_h": ("Linear", (A, Ek)), "v": ("Linear", (1, A))}
    state = module_state(module, title, layers)
    for name in ("W_s", "W_h", "v"):
        if f"{name}.bias" in state:
            raise CheckFailed(
                f"{title}.{name} has a bias; the score v^T tanh(W_s s + W_h h) has none, as in "
                "the paper: nn.Linear(..., bias=False)."
            )
    reference = AdditiveAttention(Eq, Ek, A)
    reference.load_state_dict({n: state[n] for n in reference.state_dict()})
    return title, module, reference


def _attention_cases(cls: Subject):
    """For every configuration, device, dtype and query shape: (module, reference, query, keys,
    mask, projected (B, S, A) random, (the module's name, the inputs), (B, L, S, Ek)), the first
    sentence full and the others padded at random."""
    for Eq, Ek, A, B, S, Lq, seed in _ATTENTION_CONFIGS:
        title, module, reference = _attention_module(cls, Eq, Ek, A, seed)
        for device in check_devices():
            for dtype in _DTYPES:
                module.to(device, dtype)
                reference.to(device, dtype)
                for L in (None, Lq):
                    g = torch.Generator().manual_seed(seed + 100 + (L or 0))
                    query = torch.randn(*_shape(L, B, Eq), generator=g, dtype=torch.float64)
                    keys = torch.randn(B, S, Ek, generator=g, dtype=torch.float64)  # (B, S, Ek)
                    projected = torch.randn(B, S, A, generator=g, dtype=torch.float64)
                    query, keys, projected = (t.to(device, dtype) for t in (query, keys, projected))
                    mask = padding_mask(_lengths(B, S, g), S).to(device)  # (B, S)
                    where = (
                        f"(query {_shape(L, B, Eq)}, keys (B={B}, S={S}, Ek={Ek}), "
                        f"{label(dtype, device)})"
                    )
                    yield module, reference, query, keys, mask, projected, (title, where), \
                        (B, L, S, Ek)  # fmt: skip


def _context_of(weights: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The weighted sum of the keys: (B, [L,] S) weights, (B, S, Ek) keys -> (B, [L,] Ek)."""
    rows = weights if weights.dim() == 3 else weights.unsqueeze(1)  # (B, L or 1, S)
    context = rows @ keys  # (B, L or 1, Ek)
    return context if weights.dim() == 3 else context.squeeze(1)


def _score_of_other_sentences(reference, query, keys) -> torch.Tensor:
    """What W_s(query).unsqueeze(-2) + W_h(keys) gives for (B, L, Eq) queries when B = L: query l
    of every sentence against the keys of sentence l."""
    with torch.no_grad():
        hidden = torch.tanh(reference.W_s(query).unsqueeze(-2) + reference.W_h(keys))
        return reference.v(hidden).squeeze(-1)  # (B, L, S)


@check()
def check_additive_score(cls: Subject) -> None:
    """AdditiveAttention(query_dim, key_dim, attn_dim): bias-free nn.Linear maps W_s (Eq -> A),
    W_h (Ek -> A) and v (A -> 1); score(query (B, Eq) or (B, L, Eq), keys (B, S, Ek)) -> (B, S) or
    (B, L, S), v^T tanh(W_s s + W_h h_j), each query against the keys of its own sentence; in the
    inputs' dtype and on their device; gradients reach the query, the keys, W_s, W_h and v."""
    for module, reference, query, keys, _, _, (title, where), (B, L, S, _) in _attention_cases(cls):
        what = f"{title}.score{where}"
        out = calling(what, module.method("score"), query, keys)
        with torch.no_grad():
            expected = reference.score(query, keys)  # (B, [L,] S)
            if L == B and S > 1 and close(out, _score_of_other_sentences(reference, query, keys)):
                raise CheckFailed(
                    f"{what}: query l of every sentence is scored against the keys of sentence l, "
                    "not of its own: W_h(keys) (B, S, A) needs a dimension of size 1 for the "
                    "queries, (B, 1, S, A), before W_s(query) (B, L, 1, A) is added."
                )
        compare(out, expected, what, hint=_SCORE_HINT)
    _check_score_gradients(cls)


def _check_score_gradients(cls: Subject) -> None:
    """Gradients of the scores reach the query, the keys, W_s, W_h and v, and equal the
    reference's, for one query per sentence and for several."""
    Eq, Ek, A, B, S, Lq, seed = _ATTENTION_CONFIGS[0]
    title, module, reference = _attention_module(cls, Eq, Ek, A, seed)
    module.to("cpu", torch.float64)
    reference.to("cpu", torch.float64)
    for L in (None, Lq):
        g = torch.Generator().manual_seed(200)
        query = torch.randn(*_shape(L, B, Eq), generator=g, dtype=torch.float64)
        keys = torch.randn(B, S, Ek, generator=g, dtype=torch.float64)  # (B, S, Ek)
        grad_output = torch.randn(*_shape(L, B, S), generator=g, dtype=torch.float64)
        what = f"{title}.score(query {_shape(L, B, Eq)}, float64, cpu), backward"
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


def _own_score(module, query, keys, what, projected=None) -> torch.Tensor:
    """The student's own score, on which the weights' check builds."""
    args = (query, keys) if projected is None else (query, keys, projected)
    scores = calling(f"{what}: your score (Part 2's first behaviour), called by the check",
                     module.method("score"), *args)  # fmt: skip
    if not isinstance(scores, torch.Tensor) or scores.shape != (*query.shape[:-1], keys.size(1)):
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise CheckFailed(
            f"{what}: your score returns {got}, not {(*query.shape[:-1], keys.size(1))}; the "
            "weights are the masked softmax of the scores, so fix score first."
        )
    return scores.detach()


@check(stand_ins=_SOFTMAX)
def check_additive_weights(cls: Subject) -> None:
    """AdditiveAttention.forward(query (B, Eq) or (B, L, Eq), keys (B, S, Ek), mask=None) ->
    (context (B, [L,] Ek), weights (B, [L,] S)): the weights are masked_softmax of the student's
    own score under the (B, S) mask, which holds for every query of a sentence, exactly 0 at the
    padding; the context is the weighted sum of the keys; padded positions do not count,
    whatever their keys hold; a sentence with no allowed position gets zero weights and a zero
    context; the inputs' dtype and device are kept."""
    for module, _, query, keys, mask, _, (name, where), (B, L, S, Ek) in _attention_cases(cls):
        what = f"{name}{where}"
        scores = _own_score(module, query, keys, what)  # (B, [L,] S)
        expected = masked_softmax(scores, mask)  # (B, [L,] S)

        title = f"{what}, with a padding mask"
        context, weights = _tensors(calling(title, module, query, keys, mask), 2,
                                    "context, weights", title)  # fmt: skip
        if tuple(weights.shape) == _shape(L, B, Ek) and tuple(context.shape) == _shape(L, B, S):
            if S != Ek:
                raise CheckFailed(f"{title}: return (context, weights), in that order.")
        padded = not bool(mask.all())
        over_batch = scores.masked_fill(~_per_query(mask, scores.dim()), float("-inf"))
        if B > 1 and S > 1 and close(weights, over_batch.softmax(dim=0).nan_to_num(0.0)):
            raise CheckFailed(
                f"{title}: the softmax runs over the batch (dim 0); it must run over the source "
                "positions of each sentence, the last dimension."
            )
        if padded and close(weights, scores.softmax(dim=-1)):
            raise CheckFailed(
                f"{title}: the padding is not masked: pass the mask on to the softmax "
                "(masked_softmax), so that padded positions get weight 0."
            )
        _weights(weights, mask, _shape(L, B, S), f"{title}, the weights")
        compare(weights, expected, f"{title}, the weights",
                hint="They are masked_softmax(self.score(query, keys), mask).")  # fmt: skip
        compare(context, _context_of(expected, keys), f"{title}, the context", hint=_CONTEXT_HINT)

        title = f"{what}, no mask"
        context, weights = _tensors(calling(title, module, query, keys), 2, "context, weights",
                                    title)  # fmt: skip
        _weights(weights, None, _shape(L, B, S), f"{title}, the weights")
        compare(weights, scores.softmax(dim=-1), f"{title}, the weights")
        compare(context, _context_of(scores.softmax(dim=-1), keys), f"{title}, the context",
                hint=_CONTEXT_HINT)  # fmt: skip

        title = f"{what}, with two more padded positions (mask False) holding large keys"
        g = torch.Generator().manual_seed(B * 31 + S)
        extra = 10 * torch.randn(B, 2, Ek, generator=g, dtype=torch.float64)  # (B, 2, Ek)
        padded_keys = torch.cat([keys, extra.to(keys.device, keys.dtype)], dim=1)  # (B, S+2, Ek)
        padded_mask = torch.cat([mask, mask.new_zeros(B, 2)], dim=1)  # (B, S + 2)
        context, weights = _tensors(calling(title, module, query, padded_keys, padded_mask), 2,
                                    "context, weights", title)  # fmt: skip
        _weights(weights, padded_mask, _shape(L, B, S + 2), f"{title}, the weights")
        if not close(context, _context_of(expected, keys)):
            raise CheckFailed(
                f"{title}: the context changed when padding was added; padded positions must not "
                "count, whatever their keys hold."
            )

        if B > 1:
            empty = mask.clone()
            empty[-1] = False  # the last sentence has no allowed position
            title = f"{what}, a sentence with no allowed position"
            context, weights = _tensors(calling(title, module, query, keys, empty), 2,
                                        "context, weights", title)  # fmt: skip
            _weights(weights, empty, _shape(L, B, S), f"{title}, the weights")
            compare(context, _context_of(masked_softmax(scores, empty), keys),
                    f"{title}, the context", hint=_CONTEXT_HINT)  # fmt: skip


@check(stand_ins=_SOFTMAX)
def check_additive_projected_keys(cls: Subject) -> None:
    """AdditiveAttention.score and forward with projected_keys (B, S, A): used in place of
    W_h(keys). Judged on the student's own methods alone, so that a mistake in the score or the
    weights costs their own cells: with projected_keys = W_h(keys) nothing changes; with other
    projections the keys no longer enter the score, nor the weights that forward returns; for one
    query per sentence and for several."""
    for module, _, query, keys, mask, projected, (name, where), _ in _attention_cases(cls):
        plain = _own_score(module, query, keys, f"{name}{where}")  # (B, [L,] S)
        W_h = module.describe()["state"]["W_h.weight"].to(keys.device, keys.dtype)  # (A, Ek)
        what = f"{name}.score{where}, with projected_keys = W_h(keys)"
        same = calling(what, module.method("score"), query, keys, keys @ W_h.T)
        compare(
            same, plain, what, hint="With projected_keys = W_h(keys) the scores must not change."
        )

        what = f"{name}.score{where}, with other projected_keys"
        given = calling(what, module.method("score"), query, keys, projected)
        if close(given, plain) and not close(projected, keys @ W_h.T):
            raise CheckFailed(
                f"{what}: projected_keys is ignored; when it is given, use it in place of "
                "W_h(keys) (a decoder computes W_h(keys) once per sentence and hands it in at "
                "every step)."
            )
        other_keys = keys.flip(1) + 1.0  # (B, S, Ek): other keys, the same projections
        again = calling(what, module.method("score"), query, other_keys, projected)
        compare(again, given, f"{what}, and other keys",
                hint="When projected_keys is given, it replaces W_h(keys): the score no longer "
                "reads the keys.")  # fmt: skip

        what = f"{name}{where}, forward with a padding mask"
        plain_weights = _tensors(calling(what, module, query, keys, mask), 2, "context, weights",
                                 what)[1]  # fmt: skip
        what = f"{name}{where}, forward with a padding mask and projected_keys = W_h(keys)"
        same = _tensors(calling(what, module, query, keys, mask, keys @ W_h.T), 2,
                        "context, weights", what)[1]  # fmt: skip
        compare(same, plain_weights, f"{what}, the weights",
                hint="With projected_keys = W_h(keys) the weights must not change.")  # fmt: skip
        what = f"{name}{where}, forward with a padding mask and other projected_keys"
        weights = _tensors(calling(what, module, query, keys, mask, projected), 2,
                           "context, weights", what)[1]  # fmt: skip
        should_change = not close(masked_softmax(given, mask), masked_softmax(plain, mask))
        if should_change and close(weights, plain_weights):
            raise CheckFailed(
                f"{what}: projected_keys is not passed on to score: forward computes W_h(keys) "
                "again instead of using the one it is given."
            )
        again = _tensors(calling(what, module, query, other_keys, mask, projected), 2,
                         "context, weights", what)[1]  # fmt: skip
        compare(again, weights, f"{what}, and other keys, the weights",
                hint="When projected_keys is given, it replaces W_h(keys): the weights no longer "
                "depend on the keys (only the context does).")  # fmt: skip


# --------------------------------------------------------------------------------------------
# Part 3: AttentiveDecoder.step, the state and the deep output
# --------------------------------------------------------------------------------------------

# (V, E, Eq, Ek, A, M, B, S, seed)
_DECODER_CONFIGS = [
    (11, 6, 8, 10, 5, 4, 3, 6, 0),
    (7, 4, 12, 6, 3, 5, 2, 1, 1),
    (9, 5, 6, 6, 4, 3, 4, 4, 2),
]


def _decoder_module(cls: Subject, V, E, Eq, Ek, A, M, seed):
    """The student's AttentiveDecoder, its attention's handle, and the reference holding the
    student's embedding, GRU cell, readout and output layer."""
    title = f"AttentiveDecoder({V}, {E}, {Eq}, {Ek}, {A}, {M})"
    decoder = calling(title, cls.seeded(seed), V, E, Eq, Ek, A, M)
    if not isinstance(decoder, Subject):
        raise CheckFailed(f"{title} must construct an nn.Module.")
    state = module_state(
        decoder,
        title,
        {
            "embedding": ("Embedding", (V, E)),
            "readout": ("Linear", (2 * M, Eq + Ek + E)),
            "out": ("Linear", (V, M)),
        },
    )
    info = decoder.describe()
    if info["modules"].get("cell") != "GRUCell":
        found = info["modules"].get("cell")
        raise CheckFailed(f"{title} must have an nn.GRUCell called cell, not {found}.")
    for name, shape in (("cell.weight_ih", (3 * Eq, E + Ek)), ("cell.weight_hh", (3 * Eq, Eq))):
        got = state.get(name)
        if got is None or tuple(got.shape) != shape:
            raise CheckFailed(
                f"{title}.cell must be nn.GRUCell(E + Ek, Eq) = nn.GRUCell({E + Ek}, {Eq}): its "
                "input is the embedding and the context side by side, its state the decoder's."
            )
    for name in ("readout", "out"):
        if f"{name}.bias" not in state:
            raise CheckFailed(f"{title}.{name} must have a bias (nn.Linear's default).")
    if "attention" not in info["modules"]:
        raise CheckFailed(
            f"{title} must have a submodule called attention (your AdditiveAttention)."
        )
    padding_idx = calling(f"{title}.embedding.padding_idx",
                          decoder.attribute("embedding").attribute, "padding_idx")  # fmt: skip
    if padding_idx != 0:
        raise CheckFailed(f"{title}.embedding must be created with padding_idx=0.")
    attention = decoder.attribute("attention")
    if not isinstance(attention, Subject):
        raise CheckFailed(f"{title}.attention must be an nn.Module (your AdditiveAttention).")
    reference = AttentiveDecoder(V, E, Eq, Ek, A, M)
    own = {
        n: t for n, t in state.items() if n.split(".")[0] in ("embedding", "cell", "readout", "out")
    }
    reference.load_state_dict(own, strict=False)
    return title, decoder, attention, reference


def _steps(cls: Subject):
    """For every configuration, device, dtype and way of calling: (the student's (logits, state,
    weights), the context and weights the student's own attention gives for s_prev, the reference
    holding the student's layers, the inputs, the extra arguments, what, (B, V, Eq, S))."""
    for V, E, Eq, Ek, A, M, B, S, seed in _DECODER_CONFIGS:
        title, decoder, attention, reference = _decoder_module(cls, V, E, Eq, Ek, A, M, seed)
        for device in check_devices():
            for dtype in _DTYPES:
                decoder.to(device, dtype)
                reference.to(device, dtype)
                g = torch.Generator().manual_seed(seed + 300)
                y_prev = torch.randint(3, V, (B,), generator=g).to(device)  # (B,)
                s_prev = draw((B, Eq), seed + 301, device, dtype)  # (B, Eq)
                annotations = draw((B, S, Ek), seed + 302, device, dtype)  # (B, S, Ek)
                projected = draw((B, S, A), seed + 303, device, dtype)  # (B, S, A)
                mask = padding_mask(_lengths(B, S, g), S).to(device)  # (B, S)
                where = (
                    f"(y_prev (B={B},), s_prev (B={B}, Eq={Eq}), annotations (B={B}, S={S}, "
                    f"Ek={Ek}), {label(dtype, device)})"
                )
                for extra, note in (
                    ((mask,), "with a padding mask"),
                    ((), "no mask"),
                    ((mask, projected), "with a padding mask and projected_keys"),
                ):
                    what = f"{title}.step{where}, {note}"
                    inputs = (y_prev, s_prev, annotations)
                    result = calling(what, decoder.method("step"), *inputs, *extra)
                    logits, state, weights = _tensors(result, 3, "logits, state, weights", what)
                    for name, t, shape in (("logits", logits, (B, V)), ("state", state, (B, Eq)),
                                           ("weights", weights, (B, S))):  # fmt: skip
                        if tuple(t.shape) != shape:
                            raise CheckFailed(
                                f"{what}: the {name} have shape {tuple(t.shape)}, expected "
                                f"{shape}; return (logits (B, V), the new state (B, Eq), the "
                                "weights (B, S))."
                            )
                    asked = (
                        f"{what}: your decoder's attention (Part 2), called by the check with "
                        "s_prev"
                    )
                    context, own_weights = _tensors(
                        calling(asked, attention, s_prev, annotations, *extra), 2,
                        "context, weights", asked,
                    )  # fmt: skip
                    yield (logits, state, weights), (context, own_weights), reference, attention, \
                        inputs, extra, what, (B, V, Eq, S)  # fmt: skip


def _expected_state(reference, y_prev, s_prev, context) -> torch.Tensor:
    """The reference's new state around a given context, (B, Eq)."""
    with torch.no_grad():
        embedded = reference.embedding(y_prev)  # (B, E)
        return reference.cell(torch.cat([embedded, context], dim=-1), s_prev)  # (B, Eq)


def _expected_logits(reference, y_prev, state, context, pairs=True) -> torch.Tensor:
    """The deep output from a given state and context, (B, V); pairs=False takes the maxout over
    the two halves of the readout instead of consecutive pairs."""
    with torch.no_grad():
        embedded = reference.embedding(y_prev)  # (B, E)
        t = reference.readout(torch.cat([state, context, embedded], dim=-1))  # (B, 2M)
        t = maxout(t) if pairs else t.unflatten(-1, (2, -1)).amax(dim=-2)  # (B, M)
        return reference.out(t)  # (B, V)


@check(stand_ins=_SOFTMAX)
def check_attentive_decoder_state(cls: Subject) -> None:
    """AttentiveDecoder(vocab_size, embed_dim, hidden_dim, annotation_dim, attn_dim, maxout_dim):
    embedding (padding_idx=0), attention (an AdditiveAttention), cell = GRUCell(E + Ek, Eq),
    readout = Linear(Eq + Ek + E, 2M), out = Linear(M, V); step(y_prev (B,), s_prev (B, Eq),
    annotations (B, S, Ek), mask=None, projected_keys=None) -> (logits (B, V), state (B, Eq),
    weights (B, S)): the previous state queries the attention (mask and projected_keys passed on),
    and the cell reads [E y; c].

    The expected values are computed from the context and weights that the student's own
    attention returns for s_prev, so a mistake in the attention does not cost this part.
    """
    for got, own, reference, attention, inputs, extra, what, dims in _steps(cls):
        _, state, weights = got
        context, own_weights = own
        y_prev, s_prev, annotations = inputs
        S = dims[3]
        if not close(weights, own_weights):
            if S > 1:
                from_new = calling(what, attention, state, annotations, *extra)
                if isinstance(from_new, tuple) and len(from_new) == 2:
                    if close(weights, from_new[1]):
                        raise CheckFailed(
                            f"{what}: the attention is asked with the new state s_i. In "
                            "Bahdanau's decoder the previous state s_{i-1} asks: the context is "
                            "an input of the GRU step that makes s_i, so s_i cannot fetch it."
                        )
            if len(extra) == 2:
                without = calling(what, attention, s_prev, annotations, extra[0])
                pair = isinstance(without, tuple) and len(without) == 2
                if pair and close(weights, without[1]):
                    raise CheckFailed(
                        f"{what}: projected_keys is not passed on to self.attention; the decoder "
                        "hands it over so that W_h(annotations) is computed once per sentence."
                    )
            raise CheckFailed(
                f"{what}: the weights are not those that self.attention(s_prev, annotations, "
                "mask, projected_keys) returns; the previous state asks, and the weights are "
                "returned as the attention gave them."
            )
        expected = _expected_state(reference, y_prev, s_prev, context)
        if close(state, s_prev) and not close(expected, s_prev):
            raise CheckFailed(f"{what}: the state returned is s_prev; return the new state s_i.")
        blind = _expected_state(reference, y_prev, s_prev, torch.zeros_like(context))
        if close(state, blind) and not close(expected, blind):
            raise CheckFailed(
                f"{what}: the GRU cell does not see the context. Its input is the embedding of "
                "y_prev and the context side by side, [E y_{i-1}; c_i]: that is how the attention "
                "reaches the decoder's state."
            )
        compare(state, expected, f"{what}, the new state",
                hint="s_i = cell(torch.cat([E y_{i-1}, c_i], -1), s_{i-1}): the embedding first, "
                "then the context.")  # fmt: skip


@check(stand_ins=_SOFTMAX)
def check_attentive_decoder_readout(cls: Subject) -> None:
    """AttentiveDecoder.step's logits: the deep output out(maxout(readout([s_i; c_i; E y_{i-1}]))),
    with the maxout over consecutive pairs of the readout's 2M units.

    One bug, one behaviour: the logits are accepted when they are the deep output of the new state
    the student's step returned, or of the one it should have returned, with the context the
    student's own attention gives for s_prev, or the one the returned weights give; so a mistake in
    the state or in who asks the attention costs the state's cell, not this one."""
    for got, own, reference, _, inputs, _, what, _ in _steps(cls):
        logits, state, weights = got
        context, _ = own
        y_prev, s_prev, annotations = inputs
        new_state = _expected_state(reference, y_prev, s_prev, context)
        used = (weights.unsqueeze(1) @ annotations).squeeze(1)  # (B, Ek): what the weights give
        candidates = [(st, c) for st in (state, new_state) for c in (context, used)]
        if any(close(logits, _expected_logits(reference, y_prev, st, c)) for st, c in candidates):
            continue
        expected = _expected_logits(reference, y_prev, state, context)
        halves = _expected_logits(reference, y_prev, state, context, pairs=False)
        if close(logits, halves) and not close(expected, halves):
            raise CheckFailed(
                f"{what}: the maxout takes the larger of unit j and unit j + M (the two halves "
                "of the readout); it takes the larger of each consecutive pair, units 2j and "
                "2j + 1: readout(...).view(B, M, 2).amax(-1)."
            )
        from_previous = _expected_logits(reference, y_prev, s_prev, context)
        if close(logits, from_previous) and not close(expected, from_previous):
            raise CheckFailed(
                f"{what}: the readout reads s_prev; in this notebook it reads the new state s_i, "
                "[s_i; c_i; E y_{i-1}]."
            )
        compare(logits, expected, f"{what}, the logits",
                hint="logits = out(maxout(readout(torch.cat([s_i, c_i, E y_{i-1}], -1)))), in "
                "that order, with the new state s_i and the context of this step, the maxout "
                "over consecutive pairs of units.")  # fmt: skip
