"""Chapter 1's reference and checks, beyond what the chapter contract covers.

The contract (test_chapter_contract.py) runs the reference, the known mistakes and the correct
variants through the checks and the solution notebook through the grader. Here: the reference
against plain loops (each sentence encoded alone, decoding one sentence at a time), the decoding
cases the Seq2Seq checks rely on, and that they charge a wrong Encoder or Decoder to Parts 1 and 2,
not to Part 3.
"""

import pytest
import torch

from autograder.chapters.ch01_seq2seq_bottleneck import checks, wrong
from autograder.chapters.ch01_seq2seq_bottleneck import reference as ref
from autograder.toolkit import CheckFailed

from chapter_helpers import DEVICES

SEQ2SEQ_CHECKS = (
    checks.check_seq2seq_teacher_forcing,
    checks.check_seq2seq_free_running,
    checks.check_seq2seq_greedy,
    checks.check_seq2seq_eos,
)


def padded_batch(lengths, S, seed=0, vocab=23):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab, (len(lengths), S), generator=g)  # (B, S)
    lengths = torch.tensor(lengths)  # (B,)
    src = src.masked_fill(torch.arange(S)[None, :] >= lengths[:, None], ref.PAD_ID)
    return src, lengths


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("lengths, S", [([4, 7, 1, 5, 3], 7), ([2, 6, 3], 9), ([5], 5)])
def test_encoder_context_is_each_sentence_alone(device, lengths, S):
    torch.manual_seed(0)
    encoder = ref.Encoder(23, 8, 16).to(device)
    src, lengths_t = padded_batch(lengths, S)
    outputs, context = encoder(src.to(device), lengths_t.to(device))  # (B, S, E), (B, E)
    assert outputs.shape == (len(lengths), S, 16) and context.shape == (len(lengths), 16)
    for b, n in enumerate(lengths):
        alone_out, alone_ctx = encoder(src[b : b + 1, :n].to(device), torch.tensor([n]))
        torch.testing.assert_close(context[b], alone_ctx[0])
        torch.testing.assert_close(outputs[b, :n], alone_out[0])
        assert torch.equal(outputs[b, n:], torch.zeros_like(outputs[b, n:]))


def test_encoder_reading_the_padding_changes_the_context():
    """What the page shows: without packing, a padded sentence's context is not its own."""
    torch.manual_seed(0)
    encoder = ref.Encoder(23, 8, 16)
    src, lengths = padded_batch([3, 7], 7)
    _, packed = encoder(src, lengths)
    unpacked = encoder.rnn(encoder.embedding(src))[1][0]  # (B, E): after the pads
    torch.testing.assert_close(unpacked[1], packed[1])  # the full-length row agrees
    assert not torch.allclose(unpacked[0], packed[0], atol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_decoder_steps_equal_one_call_and_start_from_the_hidden_state(device):
    torch.manual_seed(1)
    decoder = ref.Decoder(19, 8, 16).to(device)
    tokens = torch.randint(1, 19, (3, 6), device=device)  # (B, L)
    hidden = torch.randn(3, 16, device=device).tanh()  # (B, E)
    logits, last = decoder(tokens, hidden)  # (B, L, V), (B, E)
    state, steps = hidden, []
    for t in range(6):
        step, state = decoder(tokens[:, t : t + 1], state)
        steps.append(step)
    torch.testing.assert_close(torch.cat(steps, dim=1), logits)
    torch.testing.assert_close(state, last)
    assert not torch.allclose(decoder(tokens, torch.zeros_like(hidden))[0], logits, atol=1e-3)


def greedy_one_at_a_time(model, src, lengths, max_len):
    """Greedy decoding of each sentence on its own, in plain Python: the definition."""
    rows = []
    for b in range(src.size(0)):
        _, hidden = model.encoder(src[b : b + 1], lengths[b : b + 1])
        token, words = ref.SOS_ID, []
        for _ in range(max_len):
            logits, hidden = model.decoder(torch.tensor([[token]]), hidden)
            token = int(logits[0, -1].argmax())
            words.append(token)
            if token == ref.EOS_ID:
                break
        rows.append(words)
    width = max(map(len, rows))
    return torch.tensor([r + [ref.PAD_ID] * (width - len(r)) for r in rows])


@pytest.mark.parametrize("eos_bias, scale, max_len", checks.DECODING_CASES)
def test_batched_greedy_decoding_equals_one_sentence_at_a_time(eos_bias, scale, max_len):
    model = ref.Seq2Seq(checks.V_SRC, checks.V_TGT, checks.E_EMB, checks.E).double()
    model.load_state_dict(checks.seq2seq_state(eos_bias, scale))
    src, lengths, _ = checks._seq2seq_batch("cpu")
    with torch.no_grad():
        expected = greedy_one_at_a_time(model, src, lengths, max_len)
    assert torch.equal(model.greedy_decode(src, lengths, max_len), expected)


def _ends(tokens):
    """The step (1-based) at which each row writes <eos>, or None."""
    return [r.index(ref.EOS_ID) + 1 if ref.EOS_ID in r else None for r in tokens.tolist()]


def test_the_decoding_cases_cover_what_the_seq2seq_check_promises():
    src, lengths, _ = checks._seq2seq_batch("cpu")
    ends = []
    for eos_bias, scale, max_len in checks.DECODING_CASES:
        model = ref.Seq2Seq(checks.V_SRC, checks.V_TGT, checks.E_EMB, checks.E).double()
        model.load_state_dict(checks.seq2seq_state(eos_bias, scale))
        out = model.greedy_decode(src, lengths, max_len)
        assert not bool(out[:, 0].eq(ref.SOS_ID).all())
        ends.append((_ends(out), out.size(1), max_len))
    staggered, unfinished, at_once, never = ends
    # rows end at different steps, the first row last, all before max_len
    assert None not in staggered[0] and len(set(staggered[0])) >= 3
    assert staggered[0][0] == max(staggered[0]) == staggered[1] < staggered[2]
    # some rows end and some never do: max_len steps
    assert None in unfinished[0] and any(e is not None for e in unfinished[0])
    assert unfinished[1] == unfinished[2]
    assert at_once[0] == [1] * len(at_once[0]) and at_once[1] == 1
    assert never[0] == [None] * len(never[0]) and never[1] == never[2]


def test_sequence_accuracy_docstring_example():
    exact, accuracy = ref.sequence_accuracy(torch.tensor([[7, 9, 2, 5]]), torch.tensor([[7, 8, 2]]))
    assert exact.tolist() == [False]
    assert accuracy.dtype == torch.float32
    assert accuracy.item() == pytest.approx(2 / 3)


def test_sequence_accuracy_agrees_with_a_plain_python_definition():
    pred, tgt = checks._random_rows(200, seed=5)
    exact, accuracy = ref.sequence_accuracy(pred, tgt)

    def sentence(row):
        row = [t for t in row if t != ref.PAD_ID] if ref.EOS_ID not in row else row
        return row[: row.index(ref.EOS_ID) + 1] if ref.EOS_ID in row else row

    for b in range(200):
        p, t = sentence(pred[b].tolist()), sentence(tgt[b].tolist())
        assert bool(exact[b]) == (p == t)
        hits = sum(i < len(p) and p[i] == w for i, w in enumerate(t))
        assert accuracy[b].item() == pytest.approx(hits / len(t))


@pytest.mark.parametrize(
    "module, mistake",
    [
        ("encoder", "EncoderReadsThePadding"),
        ("decoder", "DecoderIgnoresHidden"),
        ("decoder", "DecoderReturnsOldHidden"),
    ],
)
def test_seq2seq_check_does_not_charge_a_wrong_encoder_or_decoder(module, mistake):
    """Part 3 drives the student's own modules: their wrong values cost Parts 1 and 2 only."""
    wrong_class = wrong.WRONG[module.capitalize()][mistake].impl

    class Model(ref.Seq2Seq):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            old = getattr(self, module)
            sizes = (old.embedding.num_embeddings, old.embedding.embedding_dim)
            new = wrong_class(*sizes, old.rnn.hidden_size)
            new.load_state_dict(old.state_dict())
            setattr(self, module, new)

    for check in SEQ2SEQ_CHECKS:
        check(Model)


def test_seq2seq_check_says_when_the_students_decoder_cannot_be_driven():
    class Broken(ref.Decoder):
        def forward(self, tokens, hidden):
            raise NotImplementedError()

    class Model(ref.Seq2Seq):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.decoder = Broken(checks.V_TGT, checks.E_EMB, checks.E)

    for check in SEQ2SEQ_CHECKS:
        with pytest.raises(CheckFailed, match="runs your own Encoder and Decoder"):
            check(Model)


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="LOUD SKIP: no CUDA device here; lengths on the GPU are only tested when grading on one",
)
def test_encoder_accepts_lengths_on_the_gpu():
    torch.manual_seed(0)
    encoder = ref.Encoder(23, 8, 16).cuda()
    src, lengths = padded_batch([3, 5], 5)
    outputs, context = encoder(src.cuda(), lengths.cuda())
    on_cpu = encoder(src.cuda(), lengths)
    torch.testing.assert_close(context, on_cpu[1])
    torch.testing.assert_close(outputs, on_cpu[0])
