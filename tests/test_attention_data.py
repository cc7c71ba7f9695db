"""The toy translation task of chapters 1–3 (attention_data.translation): its grammar, its splits
and its batches."""

import random

import pytest
import torch

from attention_data import translation as tt


@pytest.mark.parametrize("length", [3, 4, 7, 8, 13, 40, 57])
def test_pairs_have_the_length_asked_and_the_grammar_translation(length):
    rng = random.Random(length)
    for _ in range(50):
        pair = tt.make_pair(rng, length)
        assert len(pair.source) == length
        assert pair.target == tt.translate(pair.source)
        assert len(pair.alignment) == len(pair.target)


def test_the_verb_moves_to_the_end_and_particles_follow_the_noun():
    assert tt.translate("dog sees cat".split()) == ("gae", "ga", "goyangi", "reul", "bonda")
    assert tt.translate("big bear chases horse quickly".split()) == (
        "keun", "gom", "i", "mal", "eul", "ppalli", "jjotneunda",
    )  # fmt: skip


def test_alignment_points_at_the_word_translated():
    rng = random.Random(0)
    lexicon = {**tt.NOUNS, **tt.VERBS, **tt.ADJECTIVES, **tt.ADVERBS, tt.AND[0]: tt.AND[1]}
    particles = {*tt.SUBJECT_PARTICLE.values(), *tt.OBJECT_PARTICLE.values()}
    for _ in range(200):
        pair = tt.make_pair(rng, rng.randint(3, 30))
        for word, at in zip(pair.target, pair.alignment, strict=True):
            if at < 0:
                assert word in particles
            else:
                assert lexicon[pair.source[at]] == word
        # word order changes: some target word comes from a later source word than the next one
        aligned = [a for a in pair.alignment if a >= 0]
        assert aligned != sorted(aligned)


def test_splits_are_fixed_by_the_seed_and_held_out():
    a = tt.splits(seed=3, train_size=2000, valid_size=100, test_per_length=5)
    b = tt.splits(seed=3, train_size=2000, valid_size=100, test_per_length=5)
    c = tt.splits(seed=4, train_size=2000, valid_size=100, test_per_length=5)
    assert a == b
    assert a["train"] != c["train"]
    train = {p.source for p in a["train"]}
    assert not train & {p.source for p in a["test"] + a["valid"]}
    lengths = [len(p.source) for p in a["test"]]
    assert sorted(set(lengths)) == list(range(3, 41))
    assert all(lengths.count(n) == 5 for n in set(lengths))
    assert {len(p.source) for p in a["train"]} <= set(range(3, 31))


def test_bad_lengths_are_named():
    with pytest.raises(ValueError, match="at least 3 words"):
        tt.make_pair(random.Random(0), 2)
    with pytest.raises(ValueError, match="train_lengths"):
        tt.splits(train_lengths=(10, 5))
    with pytest.raises(KeyError, match="'zebra'"):
        tt.SOURCE_VOCAB.encode(["dog", "zebra"])


def test_batches_pad_and_shift_the_target():
    pairs = tt.splits(train_size=300, valid_size=10, test_per_length=1)["train"]
    batches = list(tt.make_loader(pairs, batch_size=32, seed=1))
    assert sum(len(b.pairs) for b in batches) == len(pairs)
    assert sorted(p.source for b in batches for p in b.pairs) == sorted(p.source for p in pairs)
    for batch in batches:
        B = len(batch.pairs)
        assert batch.src.shape == (B, int(batch.src_lengths.max()))
        for i, pair in enumerate(batch.pairs):
            n = len(pair.source)
            assert batch.src_lengths[i] == n
            assert tt.SOURCE_VOCAB.decode(batch.src[i]) == list(pair.source)
            assert (batch.src[i, n:] == tt.SOURCE_VOCAB.pad_id).all()
            m = len(pair.target)
            assert batch.tgt_in[i, 0] == tt.TARGET_VOCAB.sos_id
            assert torch.equal(batch.tgt_in[i, 1 : m + 1], batch.tgt_out[i, :m])
            assert batch.tgt_out[i, m] == tt.TARGET_VOCAB.eos_id
            assert tt.TARGET_VOCAB.decode(batch.tgt_out[i]) == list(pair.target)
    # bucketing: a batch's lengths are closer together than a random batch's
    spread = sum(int(b.src_lengths.max() - b.src_lengths.min()) for b in batches) / len(batches)
    assert spread < 10
    order = [p.source for b in tt.make_loader(pairs, batch_size=32, seed=1) for p in b.pairs]
    assert order == [p.source for b in batches for p in b.pairs]
