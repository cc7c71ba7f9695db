"""The post-LN/pre-LN training runs behind chapter 6 (attention_data.depth): the shipped results
were made by the code in the repository, cover the grid they claim, and the code reproduces them."""

import json

import pytest

from attention_data import depth


@pytest.fixture(scope="module")
def results():
    return depth.load()


def test_the_results_were_made_by_this_code(results):
    assert results["provenance"]["code_sha256"] == depth.code_hash(), (
        "attention_data/depth.py changed since attention_data/depth.json was written: run "
        "`python -m attention_data.depth` again and commit the new file")


def test_the_results_cover_the_grid_they_claim(results):
    made = results["provenance"]
    keys = {(r["depth"], r["norm_first"], r["warmup"], r["seed"]) for r in results["runs"]}
    assert keys == {(d, n, w, s) for d in made["depths"] for n in (False, True)
                    for w in (False, True) for s in made["seeds"]}
    assert len(keys) == len(results["runs"])
    assert all(len(r["losses"]) == made["steps"] // depth.WINDOW for r in results["runs"])
    assert all(0 <= r["test_accuracy"] <= 1 for r in results["runs"])
    for field in ("command", "seconds", "torch", "created"):
        assert made[field]


def test_a_short_run_reproduces_the_start_of_a_recorded_one(results):
    recorded = next(r for r in results["runs"] if (r["depth"], r["norm_first"], r["warmup"],
                                                   r["seed"]) == (2, False, False, 0))
    again = depth.train_run(depth=2, norm_first=False, warmup=False, seed=0, steps=20)
    assert again["losses"] == pytest.approx(recorded["losses"][:2], abs=1e-3)


def test_the_script_writes_results_with_their_provenance(tmp_path):
    out = tmp_path / "depth.json"
    depth.main(["--depths", "1", "--seeds", "0", "--steps", "10", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written == depth.load(out)
    assert written["provenance"]["command"].endswith(f"--steps 10 --out {out}")
    assert written["provenance"]["code_sha256"] == depth.code_hash()
    assert len(written["runs"]) == 4 and all(len(r["losses"]) == 1 for r in written["runs"])


def test_bad_arguments_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        depth.main(["--steps", "5", "--out", str(tmp_path / "x.json")])
    assert "--steps must be at least 10" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="python -m attention_data.depth"):
        depth.load(tmp_path / "missing.json")
