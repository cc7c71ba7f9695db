"""The GitHub Actions workflows: valid YAML, triggered as documented, and doing their work through
the Makefile's targets only (so CI and a laptop run the same commands)."""

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
