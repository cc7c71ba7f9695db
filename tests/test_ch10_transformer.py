"""Chapter 10's reference and checks: what the chapter contract does not cover.

- the reference Transformer equals ``nn.Transformer(norm_first=True, batch_first=True)`` with the
  same weights, on random shapes, seeds, masks, dtypes and devices, and so do its gradients;
- ``rate`` is the formula, peaks at ``warmup``, gives 0 at step 0, and a tensor gives the ints'
  values; ``label_smoothed_loss`` equals ``nn.CrossEntropyLoss`` for any leading shape;
- greedy decoding with the cache gives the ids of decoding without it (the given ToyTranslator and
  TokenTransformer), and the ToyTranslator's cache is a real one (one token per call);
- the setup cell holds the reference's given material word for word, and its toy task is
  ``attention_data``'s grammar and vocabularies, cut to one clause;
- the visible tests tell the usual wrong choice from the right one, in the hidden checks' words,
  and every correct variant passes them.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import math
import random
import warnings

import nbformat
import pytest
import torch
from torch import nn

from autograder.chapters import load, without_markers
from autograder.chapters.ch10_transformer import reference as ref
from autograder.chapters.ch10_transformer import right, wrong

from chapter_helpers import DEVICES, judge_with_mistake
from nbgrader_helpers import REPO

SLUG = "ch10_transformer"


def _torch_transformer(E, H, n_enc, n_dec, Fw, seed, device, dtype):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = nn.Transformer(E, H, n_enc, n_dec, Fw, dropout=0.0, batch_first=True,
                               norm_first=True)  # fmt: skip
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.normal_(1.0 if "norm" in name and name.endswith("weight") else 0.0, 0.3)
    return model.to(device=device, dtype=dtype).train()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(4))
def test_reference_transformer_equals_nn_transformer_pre_ln(device, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    B, S, L = (int(torch.randint(1, 5, (1,), generator=g)) for _ in range(3))
    H = int(torch.randint(1, 4, (1,), generator=g))
    E = H * int(torch.randint(2, 6, (1,), generator=g))
    n_enc, n_dec = (int(torch.randint(1, 4, (1,), generator=g)) for _ in range(2))
    theirs = _torch_transformer(E, H, n_enc, n_dec, 2 * E, seed, device, dtype)
    ours = ref.Transformer(E, H, n_enc, n_dec, 2 * E).to(device=device, dtype=dtype)
    ours.load_state_dict(theirs.state_dict())  # strict: the same names, nothing more
    src = torch.randn(B, S, E, generator=g, dtype=torch.float64).to(device, dtype)
    tgt = torch.randn(B, L, E, generator=g, dtype=torch.float64).to(device, dtype)
    src_pad = (torch.arange(S) < torch.randint(1, S + 1, (B, 1), generator=g)).to(device)
    tgt_pad = (torch.arange(L) < torch.randint(1, L + 1, (B, 1), generator=g)).to(device)
    causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-10}
    src_r, src_t = src.clone().requires_grad_(), src.clone().requires_grad_()
    out = ours(src_r, tgt, causal, src_pad, tgt_pad, src_pad)
    expected = theirs(src_t, tgt, tgt_mask=~causal, src_key_padding_mask=~src_pad,
                      tgt_key_padding_mask=~tgt_pad, memory_key_padding_mask=~src_pad)
    torch.testing.assert_close(out, expected, **tol)
    out.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(src_r.grad, src_t.grad, **tol)
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, **tol, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(src, src_pad),
                                   theirs.encoder(src, src_key_padding_mask=~src_pad), **tol)


def test_rate_is_the_formula_and_peaks_at_warmup():
    E, warmup = 512, 4000
    values = [ref.rate(s, E, warmup) for s in range(1, 20_000, 7)]
    peak = max(range(len(values)), key=values.__getitem__) * 7 + 1
    assert abs(peak - warmup) <= 7
    assert math.isclose(ref.rate(warmup, E, warmup), E**-0.5 * warmup**-0.5, rel_tol=1e-12)
    assert math.isclose(ref.rate(10, E, warmup, 3.0), 3 * E**-0.5 * 10 * warmup**-1.5)
    assert ref.rate(0, E, warmup) == 0.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.long, torch.int32, torch.float32, torch.float64])
def test_rate_of_a_tensor_is_the_ints_rates(device, dtype):
    steps = torch.arange(0, 3000, 13).reshape(-1, 1)
    out = ref.rate(steps.to(device=device, dtype=dtype), 64, 400, 2.0)
    assert out.is_floating_point() and out.shape == steps.shape and out.device.type == device
    expected = torch.tensor([[ref.rate(int(s), 64, 400, 2.0)] for s in steps.flatten()])
    torch.testing.assert_close(out.double().cpu(), expected.double(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(5, 3), (2, 6, 9), (2, 2, 3, 4)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.6])
@pytest.mark.parametrize("ignore_index", [-100, 0, 2])
def test_label_smoothed_loss_equals_cross_entropy(device, shape, smoothing, ignore_index):
    g = torch.Generator().manual_seed(sum(shape))
    logits = torch.randn(shape, generator=g, dtype=torch.float64).to(device)
    target = torch.randint(0, shape[-1], shape[:-1], generator=g).to(device)
    target.view(-1)[0] = (ignore_index + 1) % shape[-1]  # at least one target counts
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    out = ref.label_smoothed_loss(a, target, smoothing, ignore_index)
    loss = nn.CrossEntropyLoss(label_smoothing=smoothing, ignore_index=ignore_index)
    expected = loss(b.reshape(-1, shape[-1]), target.reshape(-1))
    torch.testing.assert_close(out, expected)
    out.backward()
    expected.backward()
    torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(5))
def test_greedy_decoding_with_the_cache_equals_decoding_without(device, seed):
    torch.manual_seed(seed)
    toy = ref.ToyTranslator(15, 16).to(device).eval()
    src = torch.randint(3, 15, (6, 7), device=device)
    free = ref.greedy_decode(toy, src, 20, 1, -1)
    assert free.shape == (6, 20)
    for eos in {int(free[0, 3]), int(free[-1, 0])}:
        plain = ref.greedy_decode(toy, src, 20, 1, eos)
        assert torch.equal(plain, ref.greedy_decode(toy, src, 20, 1, eos, use_cache=True))
        ended = (plain == eos).long().cumsum(1) > 0
        assert bool((plain[ended] == eos).all())
        # it stops at the step where the last row ends, and not before
        assert plain.size(1) == 20 or bool(ended[:, -1].all())
        assert plain.size(1) == 1 or not bool(ended[:, -2].all())
    model = ref.TokenTransformer(ref.Transformer(16, 2, 1, 1, 32), 16, len(ref.SOURCE_WORDS),
                                 len(ref.TARGET_WORDS)).to(device).eval()  # fmt: skip
    src = ref.encode_sentences(["dog sees cat", "big fox likes lazy bear often"],
                               ref.SOURCE_WORDS).to(device)  # fmt: skip
    assert torch.equal(ref.greedy_decode(model, src, 12, ref.BOS, ref.EOS),
                       ref.greedy_decode(model, src, 12, ref.BOS, ref.EOS, use_cache=True))


def test_the_toy_translators_cache_holds_the_earlier_keys_and_values():
    """One token per call with the cache gives the logits of the whole prefix without it; a
    fresh cache each call (the earlier keys dropped) does not."""
    torch.manual_seed(0)
    toy = ref.ToyTranslator(12, 16).eval()
    src, ys = torch.randint(3, 12, (3, 4)), torch.randint(3, 12, (3, 6))
    memory = toy.encode(src)
    with torch.no_grad():
        full = toy.decode(ys, memory)  # (B, 6, V)
        cache = {}
        steps = torch.cat([toy.decode(ys[:, t : t + 1], memory, cache=cache) for t in range(6)], 1)
        torch.testing.assert_close(steps, full)
        assert cache["k"].shape[1] == 6
        dropped = toy.decode(ys[:, -1:], memory, cache={})
        assert not torch.allclose(dropped[:, -1], full[:, -1])


def _notebook():
    return nbformat.read(REPO / "solutions" / SLUG / f"{SLUG}.ipynb", as_version=4)


def test_the_setup_cell_holds_the_given_material_of_the_reference():
    setup = next(c for c in _notebook().cells if c.get("id") == "setup")
    text = open(ref.__file__).read()
    given = text[text.index("# GIVEN BEGIN\n") + 14 : text.index("# GIVEN END")].strip()
    assert given.replace("  # fmt: skip", "") in setup.source


def test_the_toy_task_is_attention_datas_grammar_cut_to_one_clause():
    from attention_data import translation

    assert ref.SOURCE_WORDS == translation.SOURCE_VOCAB.itos
    assert ref.TARGET_WORDS == translation.TARGET_VOCAB.itos
    rng = random.Random(0)
    lengths = set()
    for _ in range(500):
        n = rng.randint(3, 6)
        source, target = ref.make_pair(rng, n)
        assert len(source.split()) == n
        assert tuple(target.split()) == translation.translate(source.split())
        lengths.add(len(target.split()))
    assert lengths == {5, 6, 7, 8}  # noun particle noun particle verb, and the optional three
    with pytest.raises(ValueError, match="3 to 6"):
        ref.make_pair(rng, 7)


# --- the visible tests -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def visible():
    """run(replacements) -> {visible cell: first failure or None}, in one trained namespace."""
    nb = _notebook()
    namespace: dict = {"__name__": "__main__"}
    cells = []
    threads = torch.get_num_threads()
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or meta.get("grade"):
            continue
        if "visible-tests" in cell.metadata.get("tags", []):
            cells.append(cell)
        elif meta.get("solution") or meta.get("locked"):
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(without_markers(cell.source), cell.id, "exec"), namespace)
    torch.set_num_threads(threads)  # the setup cell sets 1

    def run(replacements: dict) -> dict:
        scope = {**namespace, **replacements}
        results = {}
        for cell in cells:
            try:
                with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    exec(compile(cell.source, cell.id, "exec"), scope)
            except AssertionError as exc:
                results[cell.id] = str(exc)
            except Exception as exc:
                results[cell.id] = f"{type(exc).__name__}: {exc}"
            else:
                results[cell.id] = None
        return results

    return run


def test_the_solution_and_every_correct_variant_pass_the_visible_tests(visible):
    failing = {}
    answers = {"the solution": {}}
    for name, variants in load(SLUG).right.items():
        if name == "translate":  # the variants need the notebook's `model`: they get it
            continue
        for variant, impl in variants.items():
            answers[f"{name}: {variant}"] = {name: impl}
    for answer, replacements in answers.items():
        failed = {cell: m for cell, m in visible(replacements).items() if m}
        if failed:
            failing[answer] = failed
    assert not failing


@pytest.mark.parametrize(
    ("name", "impl", "cell", "says"),
    [
        ("rate", wrong.rate_off_by_one, "rate_visible_tests", "off by one"),
        ("rate", wrong.rate_no_scale, "rate_visible_tests", "d_model^-0.5 is missing"),
        ("rate", wrong.rate_zero_nan, "rate_visible_tests", "step 0 must give 0"),
        ("label_smoothed_loss", wrong.loss_v_minus_one, "loss_visible_tests", "all V classes"),
        ("label_smoothed_loss", wrong.loss_ignores_nothing, "loss_visible_tests",
         "leave those targets out"),
        ("Transformer", wrong.TransformerPostLN, "transformer_encoder_visible_tests", "post-LN"),
        ("Transformer", wrong.TransformerNoFinalNorm, "transformer_encoder_visible_tests",
         "final LayerNorm"),
        ("Transformer", wrong.TransformerNoCausal, "transformer_masks_visible_tests",
         "the future leaks in"),
        ("Transformer", wrong.TransformerMasksAsGiven, "transformer_masks_visible_tests",
         "the wrong way round"),
        ("greedy_decode", wrong.greedy_decode_fresh_cache, "greedy_decode_visible_tests",
         "same cache dict"),
        ("greedy_decode", wrong.greedy_decode_with_bos, "greedy_decode_visible_tests",
         "without the bos"),
        ("greedy_decode", wrong.greedy_decode_runs_on, "greedy_decode_visible_tests",
         "after a row's eos_id"),
        ("translate", wrong.translate_word_by_word, "translate_visible_tests", "below the 90%"),
    ],
)
def test_the_visible_tests_name_the_usual_mistakes(visible, name, impl, cell, says):
    results = visible({name: impl})
    assert results[cell] and says in results[cell], results[cell]


def test_the_right_banks_translations_use_the_notebooks_model():
    """The translate variants read `model` from the notebook; here it is the reference's."""
    assert right.model.encode.__self__ is ref.trained_model()


# The wrong bank's decoder, under the name the notebook grades: a new cache dict at every step.
_FRESH_CACHE = inspect.getsource(wrong.greedy_decode_fresh_cache).replace(
    "def greedy_decode_fresh_cache(", "def greedy_decode("
)


@pytest.mark.slow
def test_in_the_sandbox_a_cache_that_drops_earlier_keys_costs_greedy_decode_only():
    """The real grader: the notebook's training runs in the sandbox, greedy_decode's check
    builds the setup cell's ToyTranslator there, and translate (its own loop) keeps its points."""
    verdicts = judge_with_mistake(SLUG, _FRESH_CACHE)
    failed = {gid for gid, (passed, _) in verdicts.items() if not passed}
    assert failed == {"greedy_decode_tests"}, verdicts
    assert "same cache dict" in verdicts["greedy_decode_tests"][1]


def test_the_reference_trains_even_when_first_called_under_no_grad():
    # The right bank's translate functions run under torch.no_grad() and train the reference's
    # model on first use; in a process where nothing trained it before, training must still work.
    torch.manual_seed(0)  # as train_translator seeds itself: the same initial weights
    untrained = ref.TokenTransformer(
        ref.Transformer(32, 4, 1, 1, 64, 0.0), 32, len(ref.SOURCE_WORDS), len(ref.TARGET_WORDS)
    )
    with torch.no_grad():
        model = ref.train_translator(steps=2)
    changed = [
        not torch.equal(p, q)
        for p, q in zip(model.parameters(), untrained.parameters(), strict=True)
    ]
    assert all(changed) and torch.is_grad_enabled()  # and the no_grad block is over
