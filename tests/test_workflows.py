"""The GitHub Actions workflows: valid YAML, triggered as documented, and doing their work through
the Makefile's targets only (so CI and a laptop run the same commands)."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"


def _load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True
    data["on"] = data.pop(True, data.get("on"))
    return data


@pytest.mark.parametrize(
    "name, target", [("test.yml", "make test"), ("publish.yml", "make publish")]
)
def test_each_workflow_runs_its_make_target(name, target):
    workflow = _load(name)
    assert workflow["on"], f"{name} has no trigger"
    runs = [
        step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step
    ]
    assert target in runs, f"{name} does not run `{target}`: {runs}"
    for run in runs:
        ok = run.startswith("make ") or run.startswith("sudo apt-get update")
        assert ok, f"{name} runs {run!r}: put it in the Makefile and call the target"
    makefile = (REPO / "Makefile").read_text()
    for run in runs:
        if run.startswith("make "):
            assert f"\n{run.split()[1]}:" in makefile, f"no target {run!r} in the Makefile"


def test_publishing_happens_on_main_and_reads_the_deploy_key_from_secrets():
    workflow = _load("publish.yml")
    assert workflow["on"]["push"]["branches"] == ["main"]
    text = (WORKFLOWS / "publish.yml").read_text()
    assert "secrets.PUBLIC_REPO_DEPLOY_KEY" in text
    assert workflow["permissions"] == {"contents": "read"}


def _make_n(*args: str) -> subprocess.CompletedProcess:
    """What `make` would run (-n: nothing runs, not even the install)."""
    return subprocess.run(["make", "-n", *args], cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize(
    "target, variables, command",
    [
        ("collect", ["A=ch04", "FROM=x.zip"], 'autograder.instructor collect ch04 "x.zip"'),
        ("grade", ["A=ch04", "STUDENT=jdoe"], "autograder.engine.grade ch04 --student jdoe"),
        ("feedback", ["A=ch04"], "autograder.instructor feedback ch04"),
        ("export", ["A=ch04", "LMS=canvas"], "autograder.instructor export ch04 --lms canvas"),
        (
            "extend",
            ["A=ch04", "STUDENT=jdoe", "DUE=2027-03-18"],
            'autograder.instructor extend ch04 jdoe "2027-03-18"',
        ),
        ("drop", ["STUDENT=jdoe"], "autograder.instructor drop jdoe"),
        ("autograde", ["A=ch04"], "autograder.engine.grade ch04\n"),
    ],
)
def test_the_instructors_commands_are_make_targets_that_need_no_activation(
    target, variables, command
):
    run = _make_n(target, *variables)
    assert run.returncode == 0, run.stderr
    assert f".venv/bin/python -m {command}" in run.stdout
    if target != "autograde":  # without its variables, a target says what it needs
        bare = _make_n(target)
        assert bare.returncode != 0 and f"make {target} " in bare.stderr, bare.stderr


def test_the_guide_names_only_make_targets_that_exist():
    guide = (REPO / "book" / "instructor_guide.md").read_text()
    named = set(re.findall(r"^make ([a-z]+)", guide, flags=re.M))
    assert {"collect", "grade", "feedback", "export", "extend", "drop"} <= named
    makefile = (REPO / "Makefile").read_text()
    for target in named:
        assert f"\n{target}:" in makefile, f"the guide names `make {target}`, the Makefile has not"
