"""Chapter 6's reference against torch's built-ins, and what its checks promise beyond the contract.

What every chapter must meet (the reference passes its checks, each known mistake fails its part
and only its part, ...) is in test_chapter_contract.py.
"""

import pytest
import torch
from torch import nn

from autograder.chapters.ch06_add_and_norm import checks, wrong
from autograder.chapters.ch06_add_and_norm import reference as ref
from autograder.toolkit import TOLERANCES, CheckFailed

from chapter_helpers import DEVICES, visible_failures, visible_failures_of_correct_answers

SLUG = "ch06_add_and_norm"

DTYPES = [torch.float32, torch.float64]


def _tol(dtype):
    rtol, atol = TOLERANCES[dtype]
    return {"rtol": rtol * 10, "atol": atol * 10}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES + [torch.bfloat16])
@pytest.mark.parametrize("shape", [(4,), (3, 8), (2, 5, 16), (2, 3, 4, 32), (1, 1, 1)])
@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_layer_norm_matches_torch(shape, dtype, device, eps):
    g = torch.Generator().manual_seed(sum(shape))
    E = shape[-1]
    x = (torch.randn(*shape, generator=g) * 3 + 2).to(device=device, dtype=dtype)
    theirs = nn.LayerNorm(E, eps=eps).to(device=device, dtype=dtype)
    with torch.no_grad():
        theirs.weight.copy_(torch.randn(E, generator=g))
        theirs.bias.copy_(torch.randn(E, generator=g))
    ours = ref.LayerNorm(E, eps=eps).to(device=device, dtype=dtype)
    ours.load_state_dict(theirs.state_dict())
    out = ours(x)
    assert out.dtype == dtype and out.device.type == torch.device(device).type
    torch.testing.assert_close(out, theirs(x), **_tol(dtype))


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((4, 6), {}),
        ([2, 3, 4], {"eps": 0.1}),
        (8, {"elementwise_affine": False}),
        ((3, 5), {"bias": False}),
        (torch.Size([5]), {}),
    ],
)
def test_layer_norm_takes_nn_layer_norms_arguments(shape, kwargs):
    ours, theirs = ref.LayerNorm(shape, **kwargs), nn.LayerNorm(shape, **kwargs)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    ours.load_state_dict(theirs.state_dict())
    trailing = (shape,) if isinstance(shape, int) else tuple(shape)
    x = torch.randn(2, 3, *trailing, generator=g) * 3 + 1
    torch.testing.assert_close(ours(x), theirs(x))


@pytest.mark.parametrize("shape", [0, (), (4, -1), "4"])
def test_layer_norm_rejects_a_shape_that_is_not_one(shape):
    with pytest.raises(ValueError, match="normalized_shape"):
        ref.LayerNorm(shape)


def test_layer_norm_gradients_match_torch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
    ours, theirs = ref.LayerNorm(8).double(), nn.LayerNorm(8).double()
    grads = []
    for module in (ours, theirs):
        xi = x.clone().requires_grad_()
        (module(xi) * torch.arange(8.0, dtype=torch.float64)).sum().backward()
        grads.append((xi.grad, module.weight.grad, module.bias.grad))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def _padding_mask(B, L, kind, device):
    if kind == "none":
        return None
    lengths = {"full": [L] * B, "ragged": [max(1, L - 2 * b) for b in range(B)]}[kind]
    return torch.arange(L)[None, :].lt(torch.tensor(lengths)[:, None]).to(device)  # (B, L)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("B, L, E, H, Fw", [(1, 1, 8, 1, 8), (2, 5, 16, 4, 64), (3, 7, 12, 3, 48)])
@pytest.mark.parametrize("mask_kind", ["none", "full", "ragged"])
def test_encoder_layer_matches_torch(B, L, E, H, Fw, norm_first, dtype, device, mask_kind):
    torch.manual_seed(B * 100 + L)
    theirs = nn.TransformerEncoderLayer(
        E, H, Fw, dropout=0.0, batch_first=True, norm_first=norm_first
    ).to(device=device, dtype=dtype)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if name.startswith("norm"):
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.3)
    ours = ref.EncoderLayer(E, H, Fw, norm_first=norm_first).to(device=device, dtype=dtype)
    ours.load_state_dict(ref.from_torch_state(theirs.state_dict()))
    x = torch.randn(B, L, E, device=device, dtype=dtype)  # (B, L, E)
    mask = _padding_mask(B, L, mask_kind, device)  # (B, L) or None
    # train() mode (dropout is 0) keeps torch off its inference fast path, which fills padded
    # positions differently
    expected = theirs(x, src_key_padding_mask=None if mask is None else ~mask)
    out = ours(x, mask)
    assert out.shape == (B, L, E)
    torch.testing.assert_close(out, expected, **_tol(dtype))


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_real_tokens_ignore_padding(norm_first):
    torch.manual_seed(0)
    layer = ref.EncoderLayer(16, 4, 32, norm_first=norm_first)
    x = torch.randn(2, 6, 16)  # (B, L, E)
    mask = _padding_mask(2, 6, "ragged", "cpu")  # (B, L)
    changed = x.clone()
    changed[~mask] = 50.0
    torch.testing.assert_close(layer(changed, mask)[mask], layer(x, mask)[mask])


def test_parameter_names_map_one_to_one():
    theirs = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True)
    ours = ref.EncoderLayer(16, 4, 32)
    assert set(ref.from_torch_state(theirs.state_dict())) == set(ours.state_dict())


def test_ffn_parameter_count_of_the_paper():
    n_ffn = sum(p.numel() for p in ref.PositionwiseFeedForward(512, 2048).parameters())
    n_layer = sum(p.numel() for p in ref.EncoderLayer(512, 8, 2048).parameters())
    assert n_ffn == 2_099_712
    assert n_layer == 4 * 512 * 512 + 4 * 512 + n_ffn + 4 * 512
    assert n_ffn / n_layer > 0.66


def test_batch_norm_statistics_change_with_padding_and_layer_norm_does_not():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, generator=g)  # (B, L, E)
    padded = torch.cat([x, torch.zeros(2, 3, 8)], dim=1)  # (B, L + 3, E)
    ln = ref.LayerNorm(8)
    torch.testing.assert_close(ln(padded)[:, :4], ln(x))
    bn = nn.BatchNorm1d(8)  # statistics over (B, L) for each feature
    real = bn(x.transpose(1, 2)).transpose(1, 2)
    with_pad = bn(padded.transpose(1, 2)).transpose(1, 2)[:, :4]
    assert (real - with_pad).abs().max() > 0.1


def test_check_reports_an_exception_as_a_failure_naming_the_class():
    class Broken(nn.Module):
        def __init__(self, *args, **kwargs):
            raise NotImplementedError()

    with pytest.raises(CheckFailed, match="LayerNorm.*raised NotImplementedError"):
        checks.check_layer_norm(Broken)


def test_nn_layer_norm_passes_the_layer_norm_checks():
    checks.check_layer_norm(nn.LayerNorm)
    checks.check_layer_norm_shape(nn.LayerNorm)
    checks.check_layer_norm_affine(nn.LayerNorm)


def test_the_depth_question_measures_what_its_model_answer_says():
    """Part 5's model answer and mark scheme, measured on the reference: post-LN's output RMS is 1
    and its last layer's gradient does not fall with depth; pre-LN's stream grows and its last
    layer's gradient falls with it, their product about constant (the final LayerNorm's 1/sigma)."""
    E, H, Fw = 32, 4, 128
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 10, E, generator=gen)  # (B, L, E)
    target = torch.randn(4, 10, E, generator=gen)  # (B, L, E)
    measured = {}
    for norm_first in (False, True):
        for N in (2, 6, 12, 24):
            rms, grad = [], []
            for seed in range(5):
                torch.manual_seed(seed)
                stack = nn.ModuleList(
                    ref.EncoderLayer(E, H, Fw, norm_first=norm_first) for _ in range(N)
                )
                final = ref.LayerNorm(E) if norm_first else nn.Identity()
                h = x
                for layer in stack:
                    h = layer(h)  # (B, L, E)
                rms.append(h.pow(2).mean().sqrt().item())
                (final(h) * target).mean().backward()
                grad.append(stack[-1].ffn.linear2.weight.grad.norm().item())
            measured[norm_first, N] = (torch.tensor(rms).median(), torch.tensor(grad).median())
    depths = (2, 6, 12, 24)
    for N in depths:
        rms, grad = measured[False, N]
        assert abs(rms - 1) < 1e-3 and 0.10 < grad < 0.13, (N, rms, grad)
    pre = [measured[True, N] for N in depths]
    assert all(a[0] < b[0] and a[1] > b[1] for a, b in zip(pre, pre[1:], strict=False)), pre
    assert 1.9 < pre[-1][0] < 2.1 and pre[-1][1] < 0.55 * pre[0][1], pre
    assert all(0.115 < rms * grad < 0.14 for rms, grad in pre), pre


@pytest.mark.parametrize(
    "name, mistake, cell, part",
    [
        ("LayerNorm", wrong.LayerNormNoAffine, "add_norm_visible_tests", 1),
        ("LayerNorm", wrong.LayerNormGammaBeta, "encoder_layer_visible_tests", 1),
        ("AddNorm", wrong.AddNormNoResidual, "encoder_layer_visible_tests", 2),
        ("AddNorm", wrong.AddNormDropsArgs, "encoder_layer_visible_tests", 2),
        ("PositionwiseFeedForward", wrong.FFNGelu, "encoder_layer_visible_tests", 3),
    ],
)
def test_a_later_parts_visible_test_sends_an_earlier_mistake_to_its_part(name, mistake, cell, part):
    assert f"fix Part {part} first" in visible_failures(SLUG, {name: mistake})[cell]


def test_the_solution_and_every_correct_variant_pass_the_visible_tests():
    assert not visible_failures_of_correct_answers(SLUG)


def test_the_visible_tests_tell_post_ln_without_its_residual_from_post_ln():
    """LayerNorm ignores a scale: with a sublayer 2y, norm(2x) and norm(3x) are the same, so the
    visible tests use a sublayer that is not a multiple of its input."""
    failures = visible_failures(SLUG, {"AddNorm": wrong.AddNormNoResidual})
    assert "the residual connection is missing" in failures["add_norm_visible_tests"]


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="LOUD SKIP: no CUDA device here; a CPU-only answer is only caught when grading on a GPU",
)
def test_cpu_only_layer_norm_fails_when_the_checks_run_on_cuda():
    class CpuOnly(ref.LayerNorm):
        def forward(self, x):
            return super().forward(x.cpu()) if self.weight.device.type == "cpu" else x.cpu()

    with pytest.raises(CheckFailed):
        checks.check_layer_norm(CpuOnly)
