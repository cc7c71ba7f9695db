"""Post-LN against pre-LN, trained: the runs behind chapter 6's section on depth and warm-up.

A stack of Transformer encoder layers learns to **reverse** a sequence of 10 random tokens out of 16
(the output at position l is the input token at position 9 - l). Every run has the same data, the
same Adam learning rate and the same number of steps; what changes is the depth of the stack, the
place of the LayerNorm (post-LN, as in Vaswani et al. 2017, or pre-LN, Xiong et al. 2020) and
whether the learning rate is warmed up linearly over the first steps. Each configuration is run
with several seeds (the seed draws the initial weights and the training batches).

The grid takes longer than a page may run (minutes on one CPU thread: the provenance records how
long), so this script runs it once and writes the results, with their provenance, to
``attention_data/depth.json``; chapter 6 loads that file and re-runs one configuration live to show
that it reproduces.

What it leaves out: dropout (0 everywhere, so that a run depends on its seed alone), label
smoothing, any learning-rate decay after the warm-up.

Run::

    python -m attention_data.depth            # the whole grid, writes attention_data/depth.json
    python -m attention_data.depth --depths 2 --seeds 0 --steps 20 --out /tmp/depth.json

Example (one short run)::

    >>> run = train_run(depth=2, norm_first=True, warmup=False, seed=0, steps=20)
    >>> len(run["losses"])  # the mean training loss of each window of 10 steps
    2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

RESULTS = Path(__file__).with_name("depth.json")

# The task and the training set-up shared by every run.
VOCAB = 16
LENGTH = 10
WIDTH = 32
HEADS = 4
FFN = 64
BATCH = 32
LR = 1e-2
STEPS = 400
WARMUP_STEPS = 100
WINDOW = 10  # losses are recorded as the mean of each window of this many steps
TEST_SIZE = 1000
TEST_SEED = 12345  # the test sequences are the same for every run

DEPTHS = (2, 4, 6, 8, 12, 16)
SEEDS = (0, 1, 2, 3, 4)
CHANCE_LOSS = math.log(VOCAB)  # cross-entropy of a uniform guess


class Reverser(nn.Module):
    """Token and position embeddings, `depth` encoder layers, a linear readout.

    forward(tokens (B, L)) -> logits (B, L, V). A pre-LN stack ends in a LayerNorm, as pre-LN
    models do (its residual stream is never normalized otherwise); a post-LN stack already ends in
    one.
    """

    def __init__(self, depth, norm_first):
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, WIDTH)
        self.positions = nn.Embedding(LENGTH, WIDTH)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(WIDTH, HEADS, FFN, dropout=0.0, batch_first=True,
                                       norm_first=norm_first)
            for _ in range(depth))
        self.final_norm = nn.LayerNorm(WIDTH) if norm_first else nn.Identity()
        self.readout = nn.Linear(WIDTH, VOCAB)

    def forward(self, tokens):
        positions = torch.arange(tokens.size(-1), device=tokens.device)  # (L,)
        h = self.tokens(tokens) + self.positions(positions)  # (B, L, E)
        for layer in self.layers:
            h = layer(h)  # (B, L, E)
        return self.readout(self.final_norm(h))  # (B, L, V)


def warmup_factor(step, warmup):
    """The learning rate's multiplier at `step` (0-based): linear from 1/WARMUP_STEPS up to 1."""
    return min(1.0, (step + 1) / WARMUP_STEPS) if warmup else 1.0


def held_out_tokens():
    """The fixed test set: (TEST_SIZE, LENGTH) random tokens, the same for every run."""
    generator = torch.Generator().manual_seed(TEST_SEED)
    return torch.randint(VOCAB, (TEST_SIZE, LENGTH), generator=generator)  # (N, L)


def train_run(depth, norm_first, warmup, seed, steps=STEPS, device="cpu"):
    """Train one Reverser and return what the page plots and compares.

    Returns {"losses": [mean training loss of each window of WINDOW steps], "test_loss":
    cross-entropy on the test set, "test_accuracy": the share of test tokens predicted right}.
    Example: train_run(2, True, False, 0, steps=20)["losses"] has 2 entries.
    """
    torch.manual_seed(seed)
    model = Reverser(depth, norm_first).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_factor(s, warmup))
    data = torch.Generator().manual_seed(seed)
    losses, window = [], []
    for _ in range(steps):
        tokens = torch.randint(VOCAB, (BATCH, LENGTH), generator=data).to(device)  # (B, L)
        loss = F.cross_entropy(model(tokens).flatten(0, 1), tokens.flip(-1).flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        window.append(loss.item())
        if len(window) == WINDOW:
            losses.append(round(sum(window) / WINDOW, 5))
            window = []
    tokens = held_out_tokens().to(device)  # (N, L)
    with torch.no_grad():
        logits = model(tokens)  # (N, L, V)
    test_loss = F.cross_entropy(logits.flatten(0, 1), tokens.flip(-1).flatten()).item()
    accuracy = (logits.argmax(-1) == tokens.flip(-1)).float().mean().item()
    return {"losses": losses, "test_loss": round(test_loss, 5), "test_accuracy": round(accuracy, 5)}


def code_hash():
    """sha256 of this file: the results were made by exactly this code when the hashes agree."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def run_grid(depths=DEPTHS, seeds=SEEDS, steps=STEPS, device="cpu", progress=None, command=None):
    """Every (depth, placement, warm-up, seed) run; returns the dict that depth.json holds.

    command: how the grid was asked for, recorded in the provenance (main passes its command line).
    """
    if device == "cpu":
        torch.set_num_threads(1)  # tiny matrices: one thread is as fast, and bit-for-bit repeatable
    start = time.perf_counter()
    runs = []
    for depth in depths:
        for norm_first in (False, True):
            for warmup in (False, True):
                for seed in seeds:
                    run = train_run(depth, norm_first, warmup, seed, steps, device)
                    runs.append({"depth": depth, "norm_first": norm_first, "warmup": warmup,
                                 "seed": seed, **run})
                    if progress:
                        progress(runs[-1])
    return {
        "provenance": {
            "command": command,
            "code_sha256": code_hash(),
            "seeds": list(seeds), "depths": list(depths), "steps": steps,
            "seconds": round(time.perf_counter() - start, 1),
            "device": device, "torch": torch.__version__, "python": platform.python_version(),
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        },
        "setup": {"vocab": VOCAB, "length": LENGTH, "width": WIDTH, "heads": HEADS, "ffn": FFN,
                  "batch": BATCH, "lr": LR, "warmup_steps": WARMUP_STEPS, "window": WINDOW,
                  "test_size": TEST_SIZE, "test_seed": TEST_SEED},
        "runs": runs,
    }


def dumps(results):
    """JSON text with one line per run, so that a regenerated file diffs line by line."""
    head = {key: value for key, value in results.items() if key != "runs"}
    text = json.dumps(head, indent=1)[:-2]  # without the closing brace
    runs = ",\n  ".join(json.dumps(run) for run in results["runs"])
    return f'{text},\n "runs": [\n  {runs}\n ]\n}}\n'


def load(path=RESULTS):
    """The results that `python -m attention_data.depth` wrote (a dict: provenance, setup, runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: run `python -m attention_data.depth` to make it")
    return json.loads(path.read_text())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.steps < WINDOW:
        parser.error(f"--steps must be at least {WINDOW} (losses are recorded per {WINDOW} steps)")

    def progress(run):
        placement = "pre-LN" if run["norm_first"] else "post-LN"
        print(f"depth {run['depth']:2d} {placement:7s} warm-up {run['warmup']!s:5s} seed "
              f"{run['seed']}: last loss {run['losses'][-1]:.3f}, test accuracy "
              f"{run['test_accuracy']:.3f}", flush=True)

    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m attention_data.depth", *given])
    results = run_grid(args.depths, args.seeds, args.steps, args.device, progress, command)
    args.out.write_text(dumps(results))
    print(f"wrote {args.out} ({results['provenance']['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
