"""The course's trained models: small seeded checkpoints with their provenance, and how to load
them.

Each model of :data:`attention_data.models.MODELS` (``seq2seq``, ``cho``, ``bahdanau``,
``luong_dot``, ``luong_general``, ``luong_concat``, ``transformer``) has, in this folder,
``<name>.pt`` (its weights in float16 and its constructor's arguments) and ``<name>.json`` (its
provenance: the command that made it, seed, code hash, updates, wall time, device, torch version,
date, and the validation exact match and token accuracy of exactly these weights); the
Transformer also has ``transformer.tokenizer.json``, its BPE tokenizer. ``make checkpoints``
(``python -m attention_data.train``) makes them all.

A page loads one in either of two ways::

    from attention_data import checkpoints

    model, provenance = checkpoints.load("bahdanau")  # attention_data's own class, eval mode
    state, provenance = checkpoints.load_state("bahdanau")  # float32 weights for the page's class
    my_model = Bahdanau()  # the page's own class, built in its cells
    my_model.load_state_dict(state, strict=True)
    print(checkpoints.describe(provenance))  # where the weights come from, in one paragraph

Both refuse a checkpoint whose recorded code hash differs from the current code's (the model's
classes changed since it was trained), with a message that names the command to retrain it; a
missing checkpoint gets the same kind of message. :func:`load_tokenizer` gives the Transformer's
tokenizer.

What it leaves out: training (:mod:`attention_data.train`), and any check that a page's own class
computes what attention_data's does (``load_state_dict(strict=True)`` checks names and shapes).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from attention_data import models

DIRECTORY = Path(__file__).parent


class CheckpointError(RuntimeError):
    """A checkpoint is missing or does not belong to the current model code."""


def _retrain(name: str) -> str:
    return f"`python -m attention_data.train {name}` (or `make checkpoints` for all of them)"


def provenance(name: str, directory: str | Path = DIRECTORY) -> dict:
    """The provenance recorded beside checkpoint `name` (a dict read from ``<name>.json``)."""
    if name not in models.MODELS:
        raise KeyError(f"unknown model {name!r}; the models are {', '.join(models.MODELS)}")
    path = Path(directory) / f"{name}.json"
    if not path.exists() or not path.with_suffix(".pt").exists():
        raise CheckpointError(
            f"no checkpoint of {name!r} in {Path(directory)}: make it with {_retrain(name)}"
        )
    return json.loads(path.read_text())


def load_tokenizer(name: str = "transformer", directory: str | Path = DIRECTORY):
    """The BPE tokenizer a model was trained with (``<name>.tokenizer.json``), a Hugging Face
    ``tokenizers.Tokenizer``, checked against the SHA-256 its provenance records."""
    try:
        from tokenizers import Tokenizer  # only the Transformer needs it
    except ImportError:
        raise ImportError(
            "the Transformer's tokenizer needs Hugging Face tokenizers: pip install tokenizers"
        ) from None
    record = provenance(name, directory)
    path = Path(directory) / f"{name}.tokenizer.json"
    if not path.exists():
        raise CheckpointError(f"{name!r} has no tokenizer in {path.parent}: {_retrain(name)}")
    tokenizer = Tokenizer.from_file(str(path))
    digest = hashlib.sha256(tokenizer.to_str().encode()).hexdigest()
    if digest != record.get("tokenizer sha256"):
        raise CheckpointError(
            f"{path.name} is not the tokenizer {name!r} was trained with (SHA-256 differs): "
            f"retrain with {_retrain(name)}"
        )
    return tokenizer


def load_state(name: str, directory: str | Path = DIRECTORY) -> tuple[dict, dict]:
    """(state dict in float32 on the CPU, provenance) of checkpoint `name`, after checking that
    it was trained on the current code of attention_data.models (:func:`models.code_hash`)."""
    record = provenance(name, directory)
    current = models.code_hash(name)
    if record["code hash"] != current:
        raise CheckpointError(
            f"the checkpoint of {name!r} was trained on other model code (code hash "
            f"{record['code hash'][:12]}, the current code's is {current[:12]}): "
            f"retrain it with {_retrain(name)}"
        )
    payload = torch.load(Path(directory) / f"{name}.pt", map_location="cpu", weights_only=True)
    state = {k: v.float() for k, v in payload["state_dict"].items()}
    return state, record


def load(
    name: str, device="cpu", directory: str | Path = DIRECTORY
) -> tuple[torch.nn.Module, dict]:
    """(model, provenance): attention_data's model `name` with the checkpoint's weights (float32,
    on `device`, eval mode; the Transformer with its ``tokenizer``)."""
    state, record = load_state(name, directory)
    model = models.build(name, **record["config"])
    model.load_state_dict(state, strict=True)
    if name == "transformer":
        model.tokenizer = load_tokenizer(name, directory)
    return model.to(device).eval(), record


def available(directory: str | Path = DIRECTORY) -> list[str]:
    """The models that have a checkpoint in `directory`, in :data:`models.MODELS`' order."""
    folder = Path(directory)
    return [n for n in models.MODELS if (folder / f"{n}.pt").exists()]


def describe(record: dict) -> str:
    """One paragraph that says where a checkpoint comes from, for a page to print."""
    minutes = record["wall seconds"] / 60
    return (
        f"{record['name']}: {record['parameters']:,} parameters, trained by `{record['command']}` "
        f"(seed {record['seed']}) for {record['updates']:,} updates, {minutes:.1f} min on "
        f"{record['device']}, torch {record['torch']}, {record['date']}; kept the weights of "
        f"update {record['best update']:,}, stored in {record['weights dtype']}; validation "
        f"exact match {record['valid exact match']:.4f}, token accuracy "
        f"{record['valid token accuracy']:.4f}; code hash {record['code hash'][:12]}."
    )
