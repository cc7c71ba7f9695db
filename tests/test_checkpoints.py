"""The course's trained models: attention_data.models, the training script (attention_data.train)
and the shipped checkpoints (attention_data.checkpoints).

Checked: the script trains every model a few steps and writes a checkpoint that loads back to the
same translations; every model has a shipped checkpoint, which loads into the current classes with
``strict=True``, records the current code hash, and reproduces its recorded validation scores; the
shipped models have learned what the pages say (chapter 1's model every one-clause sentence, the
attention models and the Transformer near 1 at the training lengths); a change to a model's code
makes ``load`` refuse its checkpoint with a message that names the command to retrain it, and
leaves the other models' checkpoints alone; ``score`` on word lists; the Transformer's key–value
cache, and its equality with ``nn.Transformer`` under the name map its docstring gives.

Not here: how long training takes, the scores past the training lengths (the provenance records
them; the pages show them), and whether the pages' own classes load the checkpoints (their build
does).
"""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from attention_data import checkpoints, models
from attention_data import train as training
from attention_data.translation import splits

NAMES = list(models.MODELS)
# Greedy decoding compares logits; float rounding on another CPU may flip a near-tie in a sentence
# or two of the 1,000: at most this much of a recorded validation score.
SCORE_TOLERANCE = 0.002


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models' tensors are small: a second thread mostly waits, and on a busy machine its
    waiting costs more CPU time than the work (measured: 15 times as much)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_data():
    return splits(
        seed=1,
        train_size=256,
        valid_size=16,
        train_lengths=(3, 8),
        test_lengths=(3, 5),
        test_per_length=2,
    )


@pytest.mark.parametrize("name", NAMES)
def test_the_script_trains_each_model_and_writes_a_checkpoint_that_loads_back(
    name, small_data, tmp_path
):
    model, record = training.train(
        name, max_updates=3, out_dir=tmp_path, data=small_data, log=lambda _: None
    )
    assert record["updates"] == 3 and record["best update"] in (2, 3)  # an epoch is 2 batches
    assert record["code hash"] == models.code_hash(name)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in record["history"])
    torch.manual_seed(training.SEED)
    untrained = training.half_state(models.build(name, **record["config"]))
    trained = training.half_state(model)
    # The Transformer's first updates are tiny (its warm-up), so compare the float16 weights
    # exactly: some of them round differently once trained.
    assert any(not torch.equal(v, trained[k]) for k, v in untrained.items()), "nothing trained"

    loaded, loaded_record = checkpoints.load(name, directory=tmp_path)
    assert loaded_record == record
    sources = [p.source for p in small_data["valid"]]
    assert loaded.translate(sources) == model.translate(sources)
    scores = training.evaluate(loaded, small_data["valid"])
    assert scores["exact match"] == pytest.approx(record["valid exact match"], abs=1e-4)
    assert scores["token accuracy"] == pytest.approx(record["valid token accuracy"], abs=1e-4)


def test_every_model_has_a_shipped_checkpoint():
    assert checkpoints.available() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_a_shipped_checkpoint_matches_the_current_code_and_loads_strictly(name):
    record = checkpoints.provenance(name)
    assert record["code hash"] == models.code_hash(name), (
        f"{name}'s model code changed since its checkpoint was trained: run "
        f"python -m attention_data.train {name}"
    )
    state, _ = checkpoints.load_state(name)
    model = models.build(name, **record["config"])
    model.load_state_dict(state, strict=True)  # raises on a missing or unexpected name
    assert record["splits"] == json.loads(json.dumps(training.SPLITS))
    assert record["weights dtype"] == "float16"


@pytest.mark.parametrize("name", NAMES)
def test_a_shipped_checkpoint_reproduces_its_recorded_validation_scores(name):
    model, record = checkpoints.load(name)
    scores = training.evaluate(model, training.course_data()["valid"])
    assert scores["exact match"] == pytest.approx(record["valid exact match"], abs=SCORE_TOLERANCE)
    assert scores["token accuracy"] == pytest.approx(
        record["valid token accuracy"], abs=SCORE_TOLERANCE
    )


# The course's claims about its converged models (issues 20 and 22): chapter 1's model translates
# every one-clause sentence; the attention models and the Transformer are near 1 at the training
# lengths, the Transformer at least 0.99 on held-out test sentences of those lengths.
ATTENTION_MODELS = ["bahdanau", "luong_dot", "luong_general", "luong_concat", "transformer"]


def test_the_shipped_models_have_learned_what_the_pages_say_they_have():
    test = training.course_data()["test"]
    seq2seq, _ = checkpoints.load("seq2seq")
    one_clause = [p for p in test if len(p.source) <= 6]  # a clause has 3 to 6 words
    assert training.evaluate(seq2seq, one_clause)["exact match"] == 1.0
    for name in ATTENTION_MODELS:  # the recorded scores are reproduced by the test above
        assert checkpoints.provenance(name)["valid exact match"] >= 0.99, name
    transformer, _ = checkpoints.load("transformer")
    longest = training.SPLITS["train_lengths"][1]
    seen_lengths = [p for p in test if len(p.source) <= longest]
    assert training.evaluate(transformer, seen_lengths)["exact match"] >= 0.99


def test_a_missing_checkpoint_names_the_command(tmp_path):
    with pytest.raises(checkpoints.CheckpointError, match="python -m attention_data.train cho"):
        checkpoints.load("cho", directory=tmp_path)
    with pytest.raises(KeyError, match="unknown model 'gpt'"):
        checkpoints.load("gpt")


def test_a_change_to_a_models_code_retires_its_checkpoint_and_no_other(tmp_path):
    """A copy of the package whose attention softmax is written differently (the same function):
    Bahdanau's checkpoint is refused, naming the command; chapter 1's, which does not use it,
    still loads."""
    package = tmp_path / "attention_data"
    shutil.copytree(
        checkpoints.DIRECTORY.parent, package, ignore=shutil.ignore_patterns("__pycache__")
    )
    source = (package / "models.py").read_text()
    edited = source.replace(
        "return scores.softmax(dim=-1)\n", "return torch.softmax(scores, dim=-1)\n", 1
    )
    assert edited != source
    (package / "models.py").write_text(edited)
    script = textwrap.dedent("""
        import attention_data
        from attention_data import checkpoints
        print(attention_data.__file__)
        checkpoints.load("seq2seq")
        print("seq2seq loads")
        try:
            checkpoints.load("bahdanau")
        except checkpoints.CheckpointError as error:
            print("refused:", error)
    """)
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith(str(package)), "the subprocess imported the wrong package"
    assert lines[1] == "seq2seq loads"
    assert lines[2].startswith("refused: the checkpoint of 'bahdanau' was trained on other model")
    assert "python -m attention_data.train bahdanau" in lines[2]


def test_score_counts_words_and_the_end():
    got = models.score(
        [["a", "b"], ["a"], ["a", "b", "c"], ["x", "b"], []],
        [["a", "b"], ["a", "b"], ["a", "b"], ["a", "b"], ["a"]],
    )
    assert got["exact match"] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert got["token accuracy"] == pytest.approx([1.0, 1 / 3, 2 / 3, 2 / 3, 0.0])
    with pytest.raises(TypeError, match="list of words"):
        models.score(torch.tensor([[4, 5, 2]]), torch.tensor([[4, 5, 2]]))
    with pytest.raises(ValueError, match="2 guesses for 1 references"):
        models.score([["a"], ["b"]], [["a"]])


def test_the_transformers_cache_changes_nothing_but_the_work():
    model, _ = checkpoints.load("transformer")
    pairs = [p for p in training.course_data()["test"][::9] if len(p.source) <= 20]
    encoded = model.tokenizer.encode_batch([" ".join(p.source) for p in pairs])
    src = nn.utils.rnn.pad_sequence([torch.tensor(e.ids) for e in encoded], batch_first=True)
    steps = 2 * src.size(1) + 10  # more subwords than any of these translations has
    with_cache = model.greedy(src, steps, use_cache=True)  # (B, ≤ steps)
    without = model.greedy(src, steps, use_cache=False)  # (B, ≤ steps)
    assert torch.equal(with_cache, without)
    assert (with_cache == models.EOS).any(1).all(), "a translation did not end"


def _torch_state(ours: models.Transformer) -> dict:
    """Our Transformer's weights under nn.Transformer's names (the map in its docstring)."""
    state, out = ours.state_dict(), {}
    norms = {
        "encoder": ["add_norm_attn", "add_norm_ff"],
        "decoder": ["add_norm_self", "add_norm_cross", "add_norm_ff"],
    }
    for stack, blocks in (("encoder", ours.encoder), ("decoder", ours.decoder)):
        for i in range(len(blocks)):
            ours_at, theirs_at = f"{stack}.{i}.", f"{stack}.layers.{i}."
            attentions = [("self_attn", "self_attn")]
            if stack == "decoder":
                attentions.append(("cross_attn", "multihead_attn"))
            for mine, theirs in attentions:
                for kind in ("weight", "bias"):
                    out[f"{theirs_at}{theirs}.in_proj_{kind}"] = torch.cat(
                        [state[f"{ours_at}{mine}.{p}_proj.{kind}"] for p in "qkv"]
                    )
                    out[f"{theirs_at}{theirs}.out_proj.{kind}"] = state[
                        f"{ours_at}{mine}.out_proj.{kind}"
                    ]
            for kind in ("weight", "bias"):
                for j, norm in enumerate(norms[stack], start=1):
                    out[f"{theirs_at}norm{j}.{kind}"] = state[f"{ours_at}{norm}.ln.{kind}"]
                out[f"{theirs_at}linear1.{kind}"] = state[f"{ours_at}feed_forward.up.{kind}"]
                out[f"{theirs_at}linear2.{kind}"] = state[f"{ours_at}feed_forward.down.{kind}"]
    return out


def test_the_transformer_is_nn_transformer_with_the_paper_layout():
    torch.manual_seed(0)
    E, H, F, V = 16, 4, 32, 11
    ours = models.Transformer(
        vocab_size=V,
        d_model=E,
        nhead=H,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=F,
        dropout=0.0,
    ).eval()
    # train mode (dropout is 0): eval mode takes the nested-tensor fast path, a prototype API
    theirs = nn.Transformer(E, H, 2, 2, F, dropout=0.0, batch_first=True)
    theirs.encoder.norm = theirs.decoder.norm = None  # the paper has no final LayerNorm
    theirs.load_state_dict(_torch_state(ours), strict=True)
    src = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]])  # (B, S): 0 = <pad>
    tgt = torch.tensor([[1, 4, 5, 6], [1, 4, 0, 0]])  # (B, L)
    src_allowed, tgt_allowed = src.ne(0), tgt.ne(0)  # (B, S), (B, L): True = a real token
    causal = torch.ones(4, 4, dtype=torch.bool).tril()  # (L, L): True = allowed
    with torch.no_grad():
        mine = ours(src, tgt)  # (B, L, V)
        hidden = theirs(
            ours._embed(src),
            ours._embed(tgt),
            tgt_mask=~causal,
            src_key_padding_mask=~src_allowed,
            tgt_key_padding_mask=~tgt_allowed,
            memory_key_padding_mask=~src_allowed,
        )  # (B, L, E): True = not allowed
    reference = hidden @ ours.embedding.weight.T  # (B, L, V): the tied output projection
    torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-5)
