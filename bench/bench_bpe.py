"""Benchmark: training byte-level BPE, the naive and the incremental reference against `tokenizers`.

For each kind of text and each size it trains the same number of merges three ways and prints the
time of each:

- the naive reference (``train_naive``): recounts every pair of every piece after every merge;
- the incremental reference (``train_incremental``, what ``BPETokenizer.train`` uses): each
  distinct piece once with its count, and after a merge only the pieces that held the pair;
- Hugging Face ``tokenizers`` (Rust, on all the cores it finds), with the same pre-tokenizer
  (the reference's split pattern, then its byte-level alphabet).

It checks that the two references learn the same merges (the exit status is 1 if not), says
whether ``tokenizers`` learned the same ones (it breaks ties by its own rule, so the order of
tied merges can differ), and prints, for each kind of text, the ratios against the goals at the
largest size: the incremental reference at least 20x faster than the naive one, and within 10x
of ``tokenizers``.

Two kinds of text, because the incremental trainer's work after its one pass over the text grows
with the number of *distinct* pieces, not with the text:

- ``prose``: English prose, ``attention_data.corpus.sample(size, seed)``, the book's own
  paragraphs drawn with replacement by a seeded generator until the size is reached. The distinct
  pieces are those of the corpus (about 2,700) however large the text, which favours the
  incremental trainer.
- ``source``: Python source code, the standard library's own modules (the ``*.py`` files at the
  top of its folder, in name order) up to the size. Nothing is downloaded, and every Python has
  them; they change a little between Python versions, so the first columns print the distinct
  pieces. At 1 MB it has about four times as many distinct pieces as the prose.

Every trainer's time includes cutting the text into pieces. The naive trainer runs once, the
others the best of three runs. With the defaults the whole run takes several minutes (about seven
on an idle two-core machine), almost all of it the naive trainer at 1 MB.

Usage: python bench/bench_bpe.py [--sizes 100000 1000000] [--texts prose source] [--vocab-size 512]
                                 [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import sysconfig
import time
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

from attention_data import corpus
from autograder.chapters.ch09_bpe.reference import SPLIT_PATTERN, train_incremental, train_naive

GOAL_NAIVE = 20.0  # the incremental reference at least this many times faster than the naive
GOAL_TOKENIZERS = 10.0  # and at most this many times slower than tokenizers


def _byte_chars() -> dict[str, int]:
    """tokenizers' byte-level alphabet (GPT-2's table): the character that stands for each byte."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    table = {chr(b): b for b in printable}
    others = [b for b in range(256) if b not in printable]
    table.update({chr(256 + i): b for i, b in enumerate(others)})
    return table


_CHAR_BYTE = _byte_chars()


def train_tokenizers(text: str, vocab_size: int) -> list[tuple[bytes, bytes]]:
    """tokenizers' BPE trained on `text`, its merges as pairs of bytes."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([text], trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    pairs = [m.split(" ") if isinstance(m, str) else m for m in merges]
    return [tuple(bytes(_CHAR_BYTE[c] for c in part) for part in pair) for pair in pairs]


def python_source(n_bytes: int) -> str:
    """The first `n_bytes` bytes of the standard library's top-level modules, in name order
    (cut back to a whole character)."""
    folder = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for path in sorted(folder.glob("*.py")):
        if size >= n_bytes:
            break
        data = path.read_bytes()
        parts.append(data)
        size += len(data)
    return b"".join(parts)[:n_bytes].decode("utf-8", errors="ignore")


TEXTS = {
    "prose": lambda size, seed: corpus.sample(size, seed=seed),
    "source": lambda size, seed: python_source(size),
}


def as_bytes(merges: dict[tuple[int, int], int]) -> list[tuple[bytes, bytes]]:
    """The reference's {(a, b): new id} as pairs of bytes, in the order learned."""
    table = {i: bytes([i]) for i in range(256)}
    out = []
    for (a, b), new_id in sorted(merges.items(), key=lambda item: item[1]):
        out.append((table[a], table[b]))
        table[new_id] = table[a] + table[b]
    return out


def best_time(fn, *args, repeat: int):
    """fn(*args) and its shortest time over `repeat` runs, in seconds."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return result, best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--texts", nargs="+", choices=sorted(TEXTS), default=["prose", "source"])
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    threads = os.environ.get("RAYON_NUM_THREADS") or os.cpu_count()
    print(
        f"byte-level BPE training, vocab_size={args.vocab_size} "
        f"({args.vocab_size - 256} merges); prose: attention_data.corpus.sample "
        f"(seed {args.seed}), source: Python {sys.version.split()[0]}'s standard library; "
        f"tokenizers on {threads} threads"
    )
    header = (
        f"{'text':>6} {'bytes':>9} {'pieces':>7} {'distinct':>8} | {'naive s':>8} {'incr. s':>8} "
        f"{'tokenizers s':>12} | {'naive/incr.':>11} {'incr./tok.':>10} | merges"
    )
    print(header)
    print("-" * len(header))
    ratios = {}
    identical = True
    split = re.compile(SPLIT_PATTERN)
    for kind, size in ((kind, size) for kind in args.texts for size in args.sizes):
        text = TEXTS[kind](size, args.seed)
        pieces = split.findall(text)
        naive, t_naive = best_time(train_naive, text, args.vocab_size, repeat=1)
        incremental, t_incr = best_time(train_incremental, text, args.vocab_size, repeat=3)
        theirs, t_tok = best_time(train_tokenizers, text, args.vocab_size, repeat=3)
        ours = as_bytes(incremental)
        same = naive == incremental
        identical &= same
        if theirs == ours:
            vs_tokenizers = "tokenizers: identical"
        elif set(theirs) == set(ours):
            vs_tokenizers = "tokenizers: same set, tied merges in another order"
        else:
            shared = len(set(theirs) & set(ours))
            vs_tokenizers = f"tokenizers: {shared} of {len(ours)} in common (ties at the end)"
        ratios[kind, size] = (t_naive / t_incr, t_incr / t_tok)
        print(
            f"{kind:>6} {len(text.encode('utf-8')):>9,} {len(pieces):>7,} {len(set(pieces)):>8,} | "
            f"{t_naive:8.2f} {t_incr:8.3f} {t_tok:12.3f} | "
            f"{t_naive / t_incr:11.1f} {t_incr / t_tok:10.2f} | "
            f"naive = incremental: {same}; {vs_tokenizers}"
        )
        sys.stdout.flush()
    largest = max(args.sizes)
    for kind in args.texts:
        speedup, behind = ratios[kind, largest]
        print(
            f"{kind} at {largest:,} bytes: incremental {speedup:.1f}x faster than naive "
            f"(goal >= {GOAL_NAIVE:g}x: {'met' if speedup >= GOAL_NAIVE else 'NOT met'}); "
            f"{behind:.2f}x the time of tokenizers "
            f"(goal <= {GOAL_TOKENIZERS:g}x: {'met' if behind <= GOAL_TOKENIZERS else 'NOT met'})"
        )
    if not identical:
        print("the naive and the incremental reference learned different merges", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
