"""Chapter 7's reference against the paper's formula, torch and PyTorch's tutorial module, and what
its checks promise beyond the contract.

What every chapter must meet (the reference passes its checks, each known mistake fails its part
and only its part, ...) is in test_chapter_contract.py.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autograder.chapters.ch07_positional_encoding import checks
from autograder.chapters.ch07_positional_encoding import reference as ref
from autograder.toolkit import TOLERANCES, CheckFailed

from chapter_helpers import DEVICES, judge_with_mistake

DTYPES = [torch.float32, torch.float64]


def _tol(dtype):
    rtol, atol = TOLERANCES[dtype]
    return {"rtol": rtol * 10, "atol": atol * 10}


def _by_formula(max_len, embed_dim):
    """The paper's formula, one entry at a time, in Python floats."""
    return torch.tensor(
        [
            [
                math.sin(p / 10000 ** (j / embed_dim))
                if j % 2 == 0
                else math.cos(p / 10000 ** ((j - 1) / embed_dim))
                for j in range(embed_dim)
            ]
            for p in range(max_len)
        ],
        dtype=torch.float64,
    ).reshape(max_len, embed_dim)


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "max_len, embed_dim", [(1, 1), (7, 1), (20, 2), (50, 7), (64, 16), (30, 33)]
)
def test_table_is_the_formula_entry_by_entry(max_len, embed_dim):
    pe = ref.sinusoidal_positional_encoding(max_len, embed_dim)
    assert pe.shape == (max_len, embed_dim) and pe.dtype == torch.float32
    assert pe.device.type == "cpu"
    torch.testing.assert_close(pe.double(), _by_formula(max_len, embed_dim), rtol=0, atol=1e-7)


@pytest.mark.parametrize("device", DEVICES)
def test_table_dtype_and_device_keywords(device):
    pe = ref.sinusoidal_positional_encoding(300, 24, dtype=torch.float64, device=device)
    assert pe.dtype == torch.float64 and pe.device.type == device
    torch.testing.assert_close(pe.cpu(), _by_formula(300, 24), rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_a_tensor_of_positions_gets_the_tables_rows_in_its_shape_and_on_its_device(dtype, device):
    positions = torch.tensor([[7, 0, 3], [3, 3, 120]], dtype=dtype, device=device)  # (B, L)
    pe = ref.sinusoidal_positional_encoding(positions, 9)
    assert pe.shape == (2, 3, 9) and pe.dtype == torch.float32 and pe.device.type == device
    table = ref.sinusoidal_positional_encoding(121, 9).to(device)
    torch.testing.assert_close(pe, table[positions.long()], rtol=0, atol=0)


def test_positions_must_be_integers():
    with pytest.raises(ValueError, match="integers"):
        ref.sinusoidal_positional_encoding(torch.tensor([0.5, 1.0]), 4)


@pytest.mark.parametrize("embed_dim", [2, 16, 64, 9])
@pytest.mark.parametrize("k", [1, 3, 40])
def test_a_shift_by_k_is_one_rotation_for_every_position(embed_dim, k):
    """PE(p + k) = M_k PE(p), M_k block-diagonal with a 2x2 rotation by k·w_i per pair; an odd
    width's last column has no partner and is left out."""
    pe = ref.sinusoidal_positional_encoding(200, embed_dim, dtype=torch.float64)
    pairs = embed_dim // 2
    blocks = []
    for i in range(pairs):
        angle = k * 10000 ** (-2 * i / embed_dim)
        c, s = math.cos(angle), math.sin(angle)
        blocks.append(torch.tensor([[c, s], [-s, c]], dtype=torch.float64))
    M = torch.block_diag(*blocks)  # (2·pairs, 2·pairs)
    torch.testing.assert_close(M @ M.T, torch.eye(2 * pairs, dtype=torch.float64))
    paired = pe[:, : 2 * pairs]  # (L, 2·pairs)
    torch.testing.assert_close(paired[:-k] @ M.T, paired[k:], rtol=0, atol=1e-12)


def test_dot_products_depend_on_the_offset_only_and_not_its_sign():
    E = 32
    pe = ref.sinusoidal_positional_encoding(120, E, dtype=torch.float64)
    gram = pe @ pe.T  # (L, L)
    w = 10000 ** (-torch.arange(0, E, 2, dtype=torch.float64) / E)
    for k in range(-60, 61):
        expected = torch.cos(k * w).sum()
        torch.testing.assert_close(gram.diagonal(k), expected.expand(120 - abs(k)))
    norms = pe.norm(dim=-1)  # (L,)
    torch.testing.assert_close(norms, torch.full_like(norms, math.sqrt(E / 2)))


def test_wavelengths_run_from_two_pi_to_just_under_ten_thousand_two_pi():
    E = 512
    w = 10000 ** (-torch.arange(0, E, 2, dtype=torch.float64) / E)
    wavelengths = 2 * math.pi / w
    assert math.isclose(wavelengths[0].item(), 2 * math.pi)
    assert 0.95 * 10000 * 2 * math.pi < wavelengths[-1].item() < 10000 * 2 * math.pi
    ratios = wavelengths[1:] / wavelengths[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 10000 ** (2 / E)))


# --------------------------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------------------------


def test_the_table_is_a_buffer_saved_with_the_module_and_never_a_parameter():
    module = ref.PositionalEncoding(8, max_len=20)
    assert "pe" in dict(module.named_buffers())
    assert not list(module.parameters())
    assert set(module.state_dict()) == {"pe"}
    module.double()
    assert module.pe.dtype == torch.float64


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 8), (2, 7, 8), (2, 3, 4, 8), (1, 20, 8)])
def test_module_adds_the_first_rows(shape, dtype, device):
    module = ref.PositionalEncoding(8, dropout=0.3, max_len=20).to(device, dtype).eval()
    assert module.pe.device.type == device
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(len(shape))).to(device, dtype)
    out = module(x)
    L = shape[-2]
    expected = x + ref.sinusoidal_positional_encoding(L, 8).to(device, dtype)
    assert out.dtype == dtype and out.device.type == device
    torch.testing.assert_close(out, expected, **_tol(dtype))


def test_module_raises_a_clear_error_beyond_max_len():
    module = ref.PositionalEncoding(4, max_len=6)
    module(torch.zeros(2, 6, 4))
    with pytest.raises(ValueError, match="max_len=6"):
        module(torch.zeros(2, 7, 4))


def test_dropout_acts_on_the_sum_in_training_only():
    module = ref.PositionalEncoding(16, dropout=0.5, max_len=10)
    x = torch.randn(8, 10, 16) + 3.0
    clean = x + module.pe
    torch.manual_seed(0)
    out = module.train()(x)
    dropped = out == 0
    assert 0.3 < dropped.float().mean() < 0.7
    torch.testing.assert_close(out[~dropped], 2 * clean[~dropped])
    torch.testing.assert_close(module.eval()(x), clean)


def test_gradient_passes_through_unchanged():
    module = ref.PositionalEncoding(8, dropout=0.0, max_len=12).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 5, 8, dtype=torch.float64)
    (module(x) * g).sum().backward()
    torch.testing.assert_close(x.grad, g)
    assert module.pe.grad is None


class _TutorialPositionalEncoding(nn.Module):
    """PyTorch's tutorial module, as published: sequence first, float32 exp-log frequencies."""

    def __init__(self, d_model, dropout=0.1, max_len=5000):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, 1, d_model)
        pe[:, 0, 0::2] = torch.sin(position * div_term)
        pe[:, 0, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe)

    def forward(self, x):  # (L, B, E)
        return self.dropout(x + self.pe[: x.size(0)])


@pytest.mark.parametrize("L", [1, 50, 500])
def test_module_equals_the_pytorch_tutorial_module_batch_first(L):
    ours = ref.PositionalEncoding(64, max_len=512).eval()
    theirs = _TutorialPositionalEncoding(64, max_len=512).eval()
    x = torch.randn(3, L, 64)  # (B, L, E)
    expected = theirs(x.transpose(0, 1)).transpose(0, 1)  # theirs reads (L, B, E)
    # theirs is computed in float32: its angles are rounded before the sine, by up to about
    # L · 1e-7
    torch.testing.assert_close(ours(x), expected, rtol=0, atol=1e-5 + 2e-7 * L)


# --------------------------------------------------------------------------------------------
# The gap
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6, 8), (3, 6, 16), (2, 2, 5, 8)])
@pytest.mark.parametrize("seed", [0, 1])
def test_self_attention_without_positions_is_equivariant(shape, seed, dtype, device):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g).to(device, dtype)
    perm = torch.randperm(shape[-2], generator=g).to(device)
    assert ref.permutation_equivariance_gap(x, perm) < 10 * TOLERANCES[dtype][1]
    pe = ref.sinusoidal_positional_encoding(10, shape[-1]).to(device, dtype)
    if not torch.equal(perm.cpu(), torch.arange(shape[-2])):
        assert ref.permutation_equivariance_gap(x, perm, pe) > 0.05
        assert ref.permutation_equivariance_gap(x, perm, None, is_causal=True) > 0.05


def test_gap_equals_the_explicit_softmax_formula():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
    perm = torch.tensor([3, 0, 4, 1, 2])
    pe = torch.randn(9, 8, generator=g, dtype=torch.float64)

    def attend(h, causal):
        scores = h @ h.transpose(-2, -1) / math.sqrt(8)
        if causal:
            scores = scores.masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), float("-inf"))
        return scores.softmax(-1) @ h

    for causal in (False, True):
        expected = (attend(x[:, perm] + pe[:5], causal) - attend(x + pe[:5], causal)[:, perm])
        got = ref.permutation_equivariance_gap(x, perm, pe, causal)
        assert math.isclose(got, expected.abs().max().item(), rel_tol=1e-9, abs_tol=1e-12)


def test_torch_layers_are_equivariant_and_a_causal_mask_breaks_it():
    """The page's claim about nn.MultiheadAttention and nn.TransformerEncoderLayer, and the
    exercise's model answer about the causal mask, on torch's own layers."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True).eval()
    x = torch.randn(3, 7, 16)
    perm = torch.randperm(7)
    causal = nn.Transformer.generate_square_subsequent_mask(7)  # float: -inf above the diagonal
    with torch.no_grad():
        assert (layer(x[:, perm]) - layer(x)[:, perm]).abs().max() < 1e-5
        masked = layer(x[:, perm], src_mask=causal) - layer(x, src_mask=causal)[:, perm]
        assert masked.abs().max() > 0.05
        pooled = layer(x[:, perm]).mean(1) - layer(x).mean(1)
        assert pooled.abs().max() < 1e-5


# --------------------------------------------------------------------------------------------
# The checks accept what the instructions allow
# --------------------------------------------------------------------------------------------


def test_gap_check_accepts_a_manual_softmax_and_a_zero_dim_tensor():
    def gap(x, perm, pe=None, is_causal=False):
        L, E = x.shape[-2:]
        positions = 0 if pe is None else pe[:L]

        def attend(h):
            scores = h @ h.transpose(-2, -1) / math.sqrt(E)
            if is_causal:
                allowed = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
                scores = scores.masked_fill(~allowed, float("-inf"))
            return F.softmax(scores, dim=-1) @ h

        moved = attend(x[..., perm, :] + positions)  # (..., L, E)
        return (moved - attend(x + positions)[..., perm, :]).abs().max()

    checks.check_permutation_equivariance_gap(gap)


def test_an_odd_width_that_raises_is_reported_as_such():
    def even_only(max_len, embed_dim):
        if embed_dim % 2:
            raise ValueError("embed_dim must be even")
        return ref.sinusoidal_positional_encoding(max_len, embed_dim)

    with pytest.raises(CheckFailed, match=r"\(10, 1\) raised ValueError.*odd") as caught:
        checks.check_sinusoidal_positional_encoding(even_only)
    assert "last one, E - 1, is even" in str(caught.value)


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="LOUD SKIP: no CUDA device here; a CPU-only answer is only caught when grading on a GPU",
)
def test_cpu_only_positional_encoding_fails_when_the_checks_run_on_cuda():
    class CpuOnly(ref.PositionalEncoding):
        def forward(self, x):
            return super().forward(x).cpu()

    with pytest.raises(CheckFailed):
        checks.check_positional_encoding(CpuOnly)


# --------------------------------------------------------------------------------------------
# In the sandbox
# --------------------------------------------------------------------------------------------

_WRONG_TABLE = """
def sinusoidal_positional_encoding(max_len, embed_dim):
    angle = torch.arange(max_len)[:, None] * 10000 ** (-torch.arange(0, embed_dim, 2) / embed_dim)
    pe = torch.zeros(max_len, embed_dim)
    pe[:, 0::2] = torch.cos(angle)                       # swapped
    pe[:, 1::2] = torch.sin(angle)[:, : embed_dim // 2]
    return pe
"""

_WRONG_MODULE_AND_GAP = """
class PositionalEncoding(PositionalEncoding):
    def __init__(self, embed_dim, dropout=0.1, max_len=5000):
        super().__init__(embed_dim, dropout, max_len)
        table = self.pe
        del self.pe
        self.pe = nn.Parameter(table, requires_grad=False)

def permutation_equivariance_gap(x, perm, pe=None, is_causal=False):
    h = x if pe is None else x + pe[: x.size(-2)]      # the positions travel with the tokens
    attend = lambda h: F.scaled_dot_product_attention(h, h, h, is_causal=is_causal)
    return (attend(h[..., perm, :]) - attend(h)[..., perm, :]).abs().max().item()
"""


@pytest.mark.slow
@pytest.mark.xdist_group("engine")
@pytest.mark.parametrize(
    "mistake, failing, words",
    [
        (_WRONG_TABLE, {"sinusoidal_tests"}, ["swapped"]),
        (_WRONG_MODULE_AND_GAP, {"positional_encoding_tests", "equivariance_gap_tests"},
         ["nn.Parameter", "stay in place"]),
    ],
)
def test_in_the_sandbox_a_wrong_part_costs_that_part_only(mistake, failing, words):
    """Through the sandbox: the module's check has the judge's table stand in for the student's,
    and reads the module's buffers and parameters from the sandbox."""
    verdicts = judge_with_mistake("ch07_positional_encoding", mistake)
    assert {gid for gid, (passed, _) in verdicts.items() if not passed} == failing, verdicts
    messages = " ".join(message for _, message in verdicts.values())
    assert all(word in messages for word in words), verdicts
