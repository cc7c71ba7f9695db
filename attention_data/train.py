"""The course's training script: the models of :mod:`attention_data.models`, trained to
convergence on the toy translation task, saved as small checkpoints with their provenance.

Run it as ``python -m attention_data.train [names...] [--device cuda]`` (``make checkpoints`` runs
it for every model), or call :func:`train` from a page, on a GPU say::

    from attention_data.train import train
    model, provenance = train("bahdanau", device="cuda")  # writes nothing unless out_dir is given

Every model sees the same data and the same batches: chapters 1–3's splits (:data:`SPLITS`:
20,000 training sentences of 3 to 25 source words, 1,000 validation sentences of those lengths, 20
test sentences at every length from 3 to 40), batches of 128 sentences of similar length in an
order fixed by the epoch's number (``make_loader(train, 128, seed=epoch)``). The Transformer reads
the same sentences cut into subwords by a BPE tokenizer (Hugging Face ``tokenizers``) trained on
the training split, both languages in one vocabulary. The recipes (:data:`RECIPES`):

- the RNN models (chapters 1–3): Adam at 3e-3, gradients clipped to a norm of 1, cross-entropy
  over the target words; the learning rate halves when the validation exact match has not improved
  for `patience` evaluations, and training stops when it has not improved after the last halving;
- the Transformer: Adam (β = 0.9, 0.98, ε = 1e-9) with the warm-up schedule
  lrate = E^-0.5 · min(step^-0.5, step · warmup^-1.5), label smoothing 0.1, dropout 0.1, gradients
  clipped to a norm of 1; training stops when the validation exact match has not improved for
  `patience` evaluations.

Validation is greedy translation of the validation split, scored on words (:func:`models.score`),
once an epoch; the model kept is the one with the best validation exact match (then token
accuracy). The checkpoint stores its weights in float16, and the scores recorded are those of the
float16 weights, evaluated again on the CPU, so that a page loading it reproduces them.

What it leaves out: the loading (:mod:`attention_data.checkpoints`), multiple seeds, beam search.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import hashlib
import json
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn

from attention_data import models as course_models
from attention_data.translation import SPECIALS, make_loader, splits

#: The splits of chapters 1–3, and of every checkpoint: ``splits(**SPLITS)``.
SPLITS = {
    "seed": 0,
    "train_size": 20_000,
    "valid_size": 1_000,
    "train_lengths": (3, 25),
    "test_lengths": (3, 40),
    "test_per_length": 20,
}
BATCH_SIZE = 128
SEED = 0
BPE_VOCAB_SIZE = 300


@dataclass(frozen=True)
class Recipe:
    """How one model trains. `lr` is Adam's rate (for the Transformer, the schedule's factor);
    `warmup` > 0 selects the Transformer's schedule; `halvings` is how many times the rate halves
    on a plateau before training stops; an evaluation comes every `eval_every` updates (0: every
    epoch)."""

    lr: float = 3e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip: float = 1.0
    label_smoothing: float = 0.0
    warmup: int = 0
    patience: int = 4
    halvings: int = 2
    max_epochs: int = 80
    eval_every: int = 0


RNN_RECIPE = Recipe()
TRANSFORMER_RECIPE = Recipe(
    lr=1.0,
    betas=(0.9, 0.98),
    eps=1e-9,
    label_smoothing=0.1,
    warmup=1000,
    patience=6,
    halvings=0,
    max_epochs=120,
)
RECIPES = {
    name: TRANSFORMER_RECIPE if name == "transformer" else RNN_RECIPE
    for name in course_models.MODELS
}


@functools.cache
def course_data() -> dict:
    """The splits every model trains and is measured on (cached: they take a few seconds)."""
    return splits(**SPLITS)


def train_tokenizer(pairs, vocab_size: int = BPE_VOCAB_SIZE) -> Tokenizer:
    """A BPE tokenizer (Hugging Face ``tokenizers``) trained on the source and target sentences
    of `pairs`: one vocabulary for both languages, ids 0, 1, 2 = ``<pad>``, ``<sos>``,
    ``<eos>``; words are split on spaces and a word's last piece ends in ``</w>``, so that
    decoding gives the words back.

    Example: train_tokenizer(pairs).encode("dog sees cat").tokens -> e.g. ['dog</w>', 'sees</w>',
    'cat</w>'] (frequent words stay whole; rarer ones split).
    """
    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.BPEDecoder(suffix="</w>")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    text = [" ".join(p.source) for p in pairs] + [" ".join(p.target) for p in pairs]
    tokenizer.train_from_iterator(text, trainer)
    return tokenizer


def _subword_batch(pairs, tokenizer, cache: dict):
    """(src (B, S'), tgt_in (B, L'), tgt_out (B, L')) in subword ids, padded with 0."""
    missing = [p for p in pairs if p not in cache]
    if missing:
        sources = tokenizer.encode_batch([" ".join(p.source) for p in missing])
        targets = tokenizer.encode_batch([" ".join(p.target) for p in missing])
        cache.update({p: (s.ids, t.ids) for p, s, t in zip(missing, sources, targets, strict=True)})
    pad = functools.partial(nn.utils.rnn.pad_sequence, batch_first=True, padding_value=0)
    sos, eos = course_models.SOS, course_models.EOS
    src = pad([torch.tensor(cache[p][0]) for p in pairs])  # (B, S')
    tgt_in = pad([torch.tensor([sos, *cache[p][1]]) for p in pairs])  # (B, L')
    tgt_out = pad([torch.tensor([*cache[p][1], eos]) for p in pairs])  # (B, L')
    return src, tgt_in, tgt_out


def evaluate(model: nn.Module, pairs) -> dict:
    """Mean exact match and token accuracy of the model's greedy translations of `pairs`."""
    was_training = model.training
    model.eval()
    scores = course_models.score(
        model.translate([p.source for p in pairs]), [p.target for p in pairs]
    )
    model.train(was_training)
    return {k: sum(v) / len(v) for k, v in scores.items()}


def scores_by_length(model: nn.Module, pairs) -> dict:
    """{source length: {"exact match": mean, "token accuracy": mean}} over `pairs`."""
    scores = course_models.score(
        model.translate([p.source for p in pairs]), [p.target for p in pairs]
    )
    by_length: dict = {}
    for i, p in enumerate(pairs):
        row = by_length.setdefault(
            len(p.source), {"n": 0, "exact match": 0.0, "token accuracy": 0.0}
        )
        row["n"] += 1
        for k in ("exact match", "token accuracy"):
            row[k] += scores[k][i]
    return {
        n: {
            "exact match": round(r["exact match"] / r["n"], 4),
            "token accuracy": round(r["token accuracy"] / r["n"], 4),
        }
        for n, r in sorted(by_length.items())
    }


def _rate(recipe: Recipe, d_model: int) -> Callable[[int], float]:
    """The learning rate's multiplier at update `step` (counted from 0)."""
    if not recipe.warmup:
        return lambda step: 1.0
    return lambda step: d_model**-0.5 * min((step + 1) ** -0.5, (step + 1) * recipe.warmup**-1.5)


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def half_state(model: nn.Module) -> dict:
    """The model's state dict in float16 on the CPU: what a checkpoint stores."""
    return {k: v.detach().to("cpu", torch.float16) for k, v in model.state_dict().items()}


def train(
    name: str,
    *,
    device="cpu",
    seed: int = SEED,
    max_updates: int | None = None,
    out_dir: str | Path | None = None,
    data: dict | None = None,
    recipe: Recipe | None = None,
    command: str | None = None,
    log: Callable[[str], None] = print,
) -> tuple[nn.Module, dict]:
    """Train model `name` (one of :data:`attention_data.models.MODELS`) to convergence, or for
    `max_updates` updates; returns the model (float32, on the CPU, eval mode, the weights of its
    float16 checkpoint) and its provenance. With `out_dir`, writes ``<name>.pt`` and
    ``<name>.json`` there (and ``transformer.tokenizer.json`` for the Transformer). `data`
    replaces :func:`course_data`'s splits (the tests pass smaller ones).
    """
    if name not in course_models.MODELS:
        raise KeyError(f"unknown model {name!r}; the models are {', '.join(course_models.MODELS)}")
    device = torch.device(device)
    recipe = recipe or RECIPES[name]
    data = data or course_data()
    train_pairs, valid_pairs = data["train"], data["valid"]
    started, wall = datetime.datetime.now(datetime.UTC), time.perf_counter()

    tokenizer, subword_cache, overrides = None, {}, {}
    if name == "transformer":
        tokenizer = train_tokenizer(train_pairs)
        overrides = {"vocab_size": tokenizer.get_vocab_size()}
    torch.manual_seed(seed)
    model = course_models.build(name, **overrides).to(device)
    model.tokenizer = tokenizer
    d_model = getattr(model, "d_model", 0)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=recipe.lr, betas=recipe.betas, eps=recipe.eps
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _rate(recipe, d_model))
    eval_every = recipe.eval_every or len(make_loader(train_pairs, BATCH_SIZE, seed=0))
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"{name}: {n_params:,} parameters on {_describe(device)}; an evaluation every "
        f"{eval_every} updates"
    )

    best, best_key, best_update, stale, halvings, update = None, None, 0, 0, 0, 0
    history, done = [], False
    model.train()
    for epoch in range(recipe.max_epochs):
        for batch in make_loader(train_pairs, BATCH_SIZE, seed=epoch):
            if tokenizer is None:
                batch = batch.to(device)
                out = model(batch.src, batch.src_lengths, batch.tgt_in)
                logits, labels = (out[0] if isinstance(out, tuple) else out), batch.tgt_out
            else:
                src, tgt_in, labels = (
                    t.to(device) for t in _subword_batch(batch.pairs, tokenizer, subword_cache)
                )
                logits = model(src, tgt_in)  # (B, L', V)
            loss = F.cross_entropy(
                logits.flatten(0, 1),
                labels.flatten(),
                ignore_index=0,
                label_smoothing=recipe.label_smoothing,
            )
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), recipe.clip)
            optimizer.step()
            schedule.step()
            update += 1
            if update % eval_every == 0 or update == max_updates:
                scores = evaluate(model, valid_pairs)
                key = (scores["exact match"], scores["token accuracy"])
                history.append(
                    {
                        "update": update,
                        "loss": round(loss.item(), 4),
                        **{k: round(v, 4) for k, v in scores.items()},
                    }
                )
                if best_key is None or key > best_key:
                    best, best_key, best_update, stale = (
                        copy.deepcopy(model.state_dict()),
                        key,
                        update,
                        0,
                    )
                else:
                    stale += 1
                log(
                    f"{name}: update {update}, epoch {epoch + 1}, loss {loss.item():.3f}, "
                    f"valid exact match {key[0]:.3f}, token accuracy {key[1]:.3f}"
                    f"{'' if stale else ' (best)'}"
                )
                if stale >= recipe.patience:
                    if halvings >= recipe.halvings:
                        done = True
                    else:
                        halvings, stale = halvings + 1, 0
                        for group in optimizer.param_groups:
                            group["lr"] /= 2
                        schedule.base_lrs = [b / 2 for b in schedule.base_lrs]
                        log(
                            f"{name}: no better for {recipe.patience} evaluations: learning "
                            f"rate halved ({halvings} of {recipe.halvings})"
                        )
            if done or update == max_updates:
                done = True
                break
        if done:
            break
    seconds = time.perf_counter() - wall

    # What the checkpoint holds, measured as a page will measure it: float16 weights, on the CPU.
    final = course_models.build(name, **overrides)
    final.load_state_dict(best if best is not None else model.state_dict())
    state = half_state(final)
    final.load_state_dict(state)
    final.tokenizer = tokenizer
    final.eval()
    valid = evaluate(final, valid_pairs)
    provenance = {
        "name": name,
        "command": command
        or f"attention_data.train.train({name!r}, device={str(device)!r}, "
        f"seed={seed}, max_updates={max_updates})",
        "seed": seed,
        "code hash": course_models.code_hash(name),
        "parameters": n_params,
        "config": {**course_models.MODELS[name][1], **overrides},
        "splits": SPLITS if data is course_data() else "other (not the course's)",
        "batch size": BATCH_SIZE,
        "recipe": asdict(recipe),
        "updates": update,
        "best update": best_update,
        "epochs": epoch + 1,
        "wall seconds": round(seconds, 1),
        "device": _describe(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": started.isoformat(timespec="seconds"),
        "weights dtype": "float16",
        "valid exact match": round(valid["exact match"], 4),
        "valid token accuracy": round(valid["token accuracy"], 4),
        "test by length": scores_by_length(final, data["test"]),
        "history": history,
    }
    if tokenizer is not None:
        provenance["tokenizer sha256"] = hashlib.sha256(tokenizer.to_str().encode()).hexdigest()
    provenance = json.loads(json.dumps(provenance))  # as the JSON file gives it back
    log(
        f"{name}: {update} updates in {seconds / 60:.1f} min; the kept model (update "
        f"{best_update}) in float16: valid exact match {valid['exact match']:.4f}, token accuracy "
        f"{valid['token accuracy']:.4f}"
    )
    if out_dir is not None:
        save(final, provenance, out_dir, state)
    return final, provenance


def save(model: nn.Module, provenance: dict, out_dir: str | Path, state: dict | None = None):
    """Write ``<name>.pt`` (float16 weights and the constructor's arguments), ``<name>.json``
    (the provenance) and, for the Transformer, ``transformer.tokenizer.json`` into `out_dir`."""
    name = provenance["name"]  # a wrong argument fails here, before any folder is made
    payload = {
        "name": name,
        "config": provenance["config"],
        "state_dict": state or half_state(model),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(payload, out / f"{name}.pt")
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        (out / f"{name}.tokenizer.json").write_text(tokenizer.to_str(pretty=True) + "\n")
    (out / f"{name}.json").write_text(json.dumps(provenance, indent=1) + "\n")


def _command_line() -> argparse.ArgumentParser:
    """The command line's parser (``python -m attention_data.train --help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m attention_data.train", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="name",
        help=f"models to train (default: all): {', '.join(course_models.MODELS)}",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--max-updates",
        type=int,
        default=None,
        help="stop after this many updates (a smoke test), not at convergence",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch's CPU threads")
    parser.add_argument(
        "--out",
        default=str(Path(__file__).parent / "checkpoints"),
        help="where to write the checkpoints (default: the package's)",
    )
    return parser


# The command line runs here, not in a function: a graded check that calls every function of the
# package with () or [] (tests/test_pages_are_not_answers.py does) must not start training.
if __name__ == "__main__":
    parser = _command_line()
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in course_models.MODELS]
    if unknown:
        parser.error(
            f"unknown model(s) {', '.join(unknown)}; the models are "
            f"{', '.join(course_models.MODELS)}"
        )
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    if args.threads:
        torch.set_num_threads(args.threads)
    command = shlex.join(["python", "-m", "attention_data.train", *sys.argv[1:]])
    for name in args.names or list(course_models.MODELS):
        train(
            name,
            device=args.device,
            seed=args.seed,
            max_updates=args.max_updates,
            out_dir=args.out,
            command=command,
            log=lambda s: print(s, flush=True),
        )
