"""A toy translation task in which word order changes: English-like SVO into Korean-like SOV.

The source language puts the verb between subject and object, the target puts it last and marks
the subject and the object with particles, as Korean does::

    big dog chases small cat quickly   ->   keun gae ga jageun goyangi reul ppalli jjotneunda
    (adj noun verb adj noun adv)            (adj noun SUBJ adj noun OBJ adv verb)

A sentence is one to ten such clauses joined by ``and`` (``geurigo``). Each clause is three to six
words (the adjectives and the adverb are optional), so a source sentence can have any length from
3 words up. The particle's form depends on the noun before it, as in Korean: ``ga``/``reul`` after
a vowel, ``i``/``eul`` after a consonant: a word with no source word of its own, whose form
follows from the noun just written.

What the module gives:

- :func:`make_pair`: one sentence pair of a given source length, with the alignment (which source
  word each target word translates; -1 for a particle);
- :func:`splits`: fixed, seeded train/validation/test splits; the test split has the same number of
  sentences at every length, longer than the training sentences too, and shares no source
  sentence with the training split;
- :class:`Vocab` and :func:`make_loader`: ids, padding and lengths for a ``DataLoader``.

What it leaves out: tokenization (words are split on spaces), unknown words (the vocabularies are
closed), any model.

Example::

    >>> import random
    >>> pair = make_pair(random.Random(0), 6)
    >>> len(pair.source), len(pair.target)
    (6, 8)
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Sampler

NOUNS = {
    "dog": "gae", "cat": "goyangi", "bird": "sae", "horse": "mal", "child": "ai",
    "teacher": "seonsaeng", "student": "haksaeng", "farmer": "nongbu", "king": "wang",
    "doctor": "uisa", "fish": "mulgogi", "tiger": "horangi", "rabbit": "tokki", "friend": "chingu",
    "baby": "agi", "soldier": "gunin", "cook": "yorisa", "monkey": "wonsungi", "bear": "gom",
    "fox": "yeou",
}  # fmt: skip
VERBS = {
    "sees": "bonda", "chases": "jjotneunda", "helps": "dopneunda", "knows": "anda",
    "calls": "bureunda", "follows": "ttareunda", "meets": "mannanda", "teaches": "gareuchinda",
    "likes": "joahanda", "pushes": "minda",
}  # fmt: skip
ADJECTIVES = {
    "big": "keun", "small": "jageun", "old": "neulgeun", "young": "eorin", "happy": "haengbokhan",
    "angry": "hwanan", "red": "ppalgan", "black": "geomeun", "brave": "yonggamhan",
    "lazy": "geeureun",
}  # fmt: skip
ADVERBS = {
    "quickly": "ppalli", "slowly": "cheoncheonhi", "often": "jaju", "today": "oneul",
    "again": "dasi", "quietly": "joyonghi",
}  # fmt: skip
AND = ("and", "geurigo")
SUBJECT_PARTICLE = {"vowel": "ga", "consonant": "i"}
OBJECT_PARTICLE = {"vowel": "reul", "consonant": "eul"}

PAD, SOS, EOS = "<pad>", "<sos>", "<eos>"
SPECIALS = (PAD, SOS, EOS)
MIN_CLAUSE, MAX_CLAUSE = 3, 6  # noun verb noun, plus up to two adjectives and an adverb


@dataclass(frozen=True)
class Pair:
    """One sentence and its translation.

    ``alignment[t]`` is the index of the source word that target word ``t`` translates, or -1 for
    a particle (which translates no word; its form depends on the noun before it).
    """

    source: tuple[str, ...]
    target: tuple[str, ...]
    alignment: tuple[int, ...]


def _ends_in_vowel(word: str) -> bool:
    return word[-1] in "aeiou"


def _clause_lengths(n: int, rng: random.Random) -> list[int]:
    """Clause lengths, joined by ``and``, that add up to exactly n source words."""
    lengths, remaining = [], n
    while True:
        # the last clause takes all that remains; any other leaves room for "and" and a clause
        options = [c for c in range(MIN_CLAUSE, MAX_CLAUSE + 1)
                   if c == remaining or remaining - c >= 1 + MIN_CLAUSE]  # fmt: skip
        c = rng.choice(options)
        lengths.append(c)
        remaining -= c
        if remaining == 0:
            return lengths
        remaining -= 1  # the "and"


def _clause(rng: random.Random, length: int, offset: int):
    """One clause of `length` source words starting at source index `offset`."""
    extras = set(rng.sample(["subject_adj", "object_adj", "adverb"], length - MIN_CLAUSE))
    src: list[tuple[str, str, str]] = []  # (English, target word, role)
    if "subject_adj" in extras:
        src.append((*rng.choice(list(ADJECTIVES.items())), "subject_adj"))
    src.append((*rng.choice(list(NOUNS.items())), "subject"))
    src.append((*rng.choice(list(VERBS.items())), "verb"))
    if "object_adj" in extras:
        src.append((*rng.choice(list(ADJECTIVES.items())), "object_adj"))
    src.append((*rng.choice(list(NOUNS.items())), "object"))
    if "adverb" in extras:
        src.append((*rng.choice(list(ADVERBS.items())), "adverb"))
    at = {role: offset + i for i, (_, _, role) in enumerate(src)}
    word = {role: tgt for _, tgt, role in src}
    target: list[tuple[str, int]] = []
    for noun, particles in (("subject", SUBJECT_PARTICLE), ("object", OBJECT_PARTICLE)):
        if f"{noun}_adj" in word:
            target.append((word[f"{noun}_adj"], at[f"{noun}_adj"]))
        target.append((word[noun], at[noun]))
        sound = "vowel" if _ends_in_vowel(word[noun]) else "consonant"
        target.append((particles[sound], -1))
    if "adverb" in word:
        target.append((word["adverb"], at["adverb"]))
    target.append((word["verb"], at["verb"]))
    return [english for english, _, _ in src], target


def make_pair(rng: random.Random, length: int) -> Pair:
    """A random sentence of exactly `length` source words (at least 3) and its translation."""
    if not isinstance(length, int) or length < MIN_CLAUSE:
        raise ValueError(f"a sentence has at least {MIN_CLAUSE} words; got length={length!r}")
    source: list[str] = []
    target: list[tuple[str, int]] = []
    for i, c in enumerate(_clause_lengths(length, rng)):
        if i:
            target.append((AND[1], len(source)))
            source.append(AND[0])
        words, translated = _clause(rng, c, len(source))
        source += words
        target += translated
    return Pair(tuple(source), tuple(w for w, _ in target), tuple(a for _, a in target))


def translate(source: Sequence[str]) -> tuple[str, ...]:
    """The exact translation of a source sentence (a list of words), by the task's grammar.

    Example: ``translate("dog sees cat".split())`` -> ``('gae', 'ga', 'goyangi', 'reul', 'bonda')``
    """
    words = list(source)
    clauses, current = [], []
    for w in words:
        if w == AND[0]:
            clauses.append(current)
            current = []
        else:
            current.append(w)
    clauses.append(current)
    out: list[str] = []
    for i, clause in enumerate(clauses):
        verbs = [j for j, w in enumerate(clause) if w in VERBS]
        if len(verbs) != 1:
            raise ValueError(f"clause {i + 1} ({' '.join(clause)!r}) needs exactly one verb")
        v = verbs[0]
        subject, obj = clause[:v], clause[v + 1 :]
        adverb = [obj.pop()] if obj and obj[-1] in ADVERBS else []
        if i:
            out.append(AND[1])
        for phrase, particles in ((subject, SUBJECT_PARTICLE), (obj, OBJECT_PARTICLE)):
            if not phrase or phrase[-1] not in NOUNS:
                raise ValueError(f"clause {i + 1} ({' '.join(clause)!r}) is not adj? noun verb "
                                 "adj? noun adverb?")  # fmt: skip
            out += [ADJECTIVES.get(w) or NOUNS[w] for w in phrase]
            out.append(particles["vowel" if _ends_in_vowel(out[-1]) else "consonant"])
        out += [ADVERBS[w] for w in adverb] + [VERBS[clause[v]]]
    return tuple(out)


def splits(
    seed: int = 0,
    train_size: int = 20_000,
    valid_size: int = 1_000,
    train_lengths: tuple[int, int] = (3, 30),
    test_lengths: tuple[int, int] = (3, 40),
    test_per_length: int = 40,
) -> dict[str, list[Pair]]:
    """Fixed train/validation/test splits.

    Training and validation sentences have source lengths drawn uniformly from `train_lengths`
    (both ends included); the test split has `test_per_length` sentences at every length in
    `test_lengths`, so that accuracy can be read against length, beyond the training lengths too.
    No test or validation source sentence occurs in the training split. The same arguments give
    the same splits on every machine.
    """
    lo, hi = train_lengths
    tlo, thi = test_lengths
    if not MIN_CLAUSE <= lo <= hi or not MIN_CLAUSE <= tlo <= thi:
        raise ValueError(
            f"lengths must be ranges (lo, hi) with {MIN_CLAUSE} <= lo <= hi; "
            f"got train_lengths={train_lengths}, test_lengths={test_lengths}"
        )
    rng = random.Random(seed)
    test = [make_pair(rng, n) for n in range(tlo, thi + 1) for _ in range(test_per_length)]
    valid = [make_pair(rng, rng.randint(lo, hi)) for _ in range(valid_size)]
    held_out = {p.source for p in test + valid}
    train: list[Pair] = []
    while len(train) < train_size:
        pair = make_pair(rng, rng.randint(lo, hi))
        if pair.source not in held_out:
            train.append(pair)
    return {"train": train, "valid": valid, "test": test}


class Vocab:
    """Words to ids and back. Ids 0, 1, 2 are ``<pad>``, ``<sos>``, ``<eos>``; words follow in a
    fixed order, so ids are the same on every machine.

    Example: ``Vocab(["dog", "cat"]).encode(["cat"])`` -> ``[4]``
    """

    def __init__(self, words):
        self.itos = list(SPECIALS) + sorted(set(words) - set(SPECIALS))
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.pad_id, self.sos_id, self.eos_id = (self.stoi[s] for s in SPECIALS)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, words: Sequence[str]) -> list[int]:
        unknown = [w for w in words if w not in self.stoi]
        if unknown:
            raise KeyError(f"not in the vocabulary: {', '.join(map(repr, unknown[:5]))}")
        return [self.stoi[w] for w in words]

    def decode(self, ids, stop_at_eos: bool = True) -> list[str]:
        """Words for `ids` (a list or a 1-D tensor), up to the first ``<eos>`` and without
        ``<sos>`` and ``<pad>``."""
        words = []
        for i in ids.tolist() if isinstance(ids, torch.Tensor) else ids:
            if stop_at_eos and i == self.eos_id:
                break
            if i not in (self.pad_id, self.sos_id):
                words.append(self.itos[i])
        return words


SOURCE_VOCAB = Vocab([*NOUNS, *VERBS, *ADJECTIVES, *ADVERBS, AND[0]])
TARGET_VOCAB = Vocab([*NOUNS.values(), *VERBS.values(), *ADJECTIVES.values(), *ADVERBS.values(),
                      AND[1], *SUBJECT_PARTICLE.values(), *OBJECT_PARTICLE.values()])  # fmt: skip


@dataclass
class Batch:
    """A padded batch. ``src`` (B, S) and ``src_lengths`` (B,) for the encoder; ``tgt_in`` (B, T)
    starts with ``<sos>`` (teacher forcing), ``tgt_out`` (B, T) ends with ``<eos>`` (the labels);
    padding is ``<pad>`` (id 0) everywhere."""

    src: torch.Tensor
    src_lengths: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    pairs: list[Pair]

    def to(self, device) -> Batch:
        move = {k: getattr(self, k).to(device) for k in ("src", "src_lengths", "tgt_in", "tgt_out")}
        return Batch(**move, pairs=self.pairs)


def collate(pairs: Sequence[Pair]) -> Batch:
    """Pad a list of pairs into a :class:`Batch`."""
    src = [torch.tensor(SOURCE_VOCAB.encode(p.source)) for p in pairs]
    tgt = [torch.tensor(TARGET_VOCAB.encode(p.target)) for p in pairs]
    sos = torch.tensor([TARGET_VOCAB.sos_id])
    eos = torch.tensor([TARGET_VOCAB.eos_id])
    pad = torch.nn.utils.rnn.pad_sequence
    return Batch(
        src=pad(src, batch_first=True, padding_value=SOURCE_VOCAB.pad_id),  # (B, S)
        src_lengths=torch.tensor([len(s) for s in src]),  # (B,)
        tgt_in=pad([torch.cat([sos, t]) for t in tgt], batch_first=True),  # (B, T)
        tgt_out=pad([torch.cat([t, eos]) for t in tgt], batch_first=True),  # (B, T)
        pairs=list(pairs),
    )


class BucketSampler(Sampler[list[int]]):
    """Batches of sentences of similar length, in a seeded random order.

    Shuffles, cuts the order into pools of `pool` batches, sorts each pool by source length and
    cuts it into batches, then shuffles the batches. An RNN then pays for little padding.
    """

    def __init__(self, pairs: Sequence[Pair], batch_size: int, seed: int = 0, pool: int = 50):
        self.lengths = [len(p.source) for p in pairs]
        self.batch_size, self.pool = batch_size, pool
        self.generator = random.Random(seed)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(range(len(self.lengths)))
        self.generator.shuffle(order)
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, len(order), size):
            chunk = sorted(order[start : start + size], key=self.lengths.__getitem__)
            batches += [
                chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)
            ]
        self.generator.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)


def make_loader(pairs: Sequence[Pair], batch_size: int = 64, shuffle: bool = True,
                seed: int = 0) -> DataLoader:  # fmt: skip
    """A ``DataLoader`` of :class:`Batch` es. With ``shuffle``, batches are bucketed by length
    and their order is seeded; without, the pairs keep their order."""
    if shuffle:
        return DataLoader(pairs, batch_sampler=BucketSampler(pairs, batch_size, seed),
                          collate_fn=collate)  # fmt: skip
    return DataLoader(pairs, batch_size=batch_size, shuffle=False, collate_fn=collate)
