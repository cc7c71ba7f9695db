"""The public release: everything students may see, and nothing else.

    python tools/publish.py [--html _build/html] [DEST]        (`make publish` runs it)

DEST (default ``_build/public``) becomes the tree of the public repository that the book's launch
buttons point to (``_config.yml``, ``repository:``):

    site/                    the built book (GitHub Pages serves it)
    exercises/<chapter>/     nbgrader's student release, as committed
    attention_data/          the data the pages and exercises generate (no answers in it)
    pyproject.toml           so that ``pip install <the public repository>`` gives attention_data
    requirements.txt         what the notebooks need
    README.md

It never copies solutions/, the grader (autograder/), tests, benchmarks or the grading folder, and
it refuses to finish (exit status 1) if what it wrote holds a solution marker, a hidden-test marker
or an import of the grader.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from autograder import chapters  # noqa: E402  (the tool runs as a script from tools/)

FORBIDDEN = (*chapters.MARKERS, "from autograder", "import autograder")
# What a student runs the notebooks with; the versions are the course's (requirements.txt).
STUDENT_PACKAGES = ("torch", "numpy", "matplotlib", "seaborn", "pandas", "ipywidgets", "tqdm",
                    "jupyterlab")  # fmt: skip

README = """# {title}: the public release

This repository is what the students of *{title}* see: the book (in `site/`, published at the
address in the repository's description) and the exercise notebooks (`exercises/<chapter>/`).

- **Read** the book online. Each chapter is followed by its exercise.
- **Do an exercise** in Colab (the *launch* button on the exercise's page in the book), or on your
  own machine: `pip install -r requirements.txt`, then `jupyter lab`, and open
  `exercises/<chapter>/<chapter>.ipynb`. The notebooks use the GPU when there is one, else the CPU.
- **Hand in** the notebook under its own name, as your course asks. The solutions and the tests
  that grade it are not in this repository.

`attention_data/` generates the data sets the book trains its models on; `pip install .` installs
it. Nothing here is downloaded at run time.
"""


def _title() -> str:
    text = (ROOT / "_config.yml").read_text()
    m = re.search(r'^title:\s*"?([^"\n]+)"?\s*$', text, re.M)
    return m.group(1) if m else "the course"


def _requirements() -> str:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if m:
            pins[m.group(1).lower()] = line.strip()
    missing = [p for p in STUDENT_PACKAGES if p not in pins]
    if missing:
        raise SystemExit(f"error: requirements.txt does not pin {missing}")
    return (
        "# What the exercise notebooks need (the course's versions).\n"
        + "\n".join(pins[p] for p in STUDENT_PACKAGES)
        + "\n"
    )


def public_pyproject() -> str:
    """The public package's pyproject.toml: attention_data, with the package data and the Python
    version that this repository's pyproject.toml names (one place), so an installed release has
    the corpus, the checkpoints and the recorded runs too."""
    ours = tomllib.loads((ROOT / "pyproject.toml").read_text())
    python = ours["project"]["requires-python"]
    data = ours["tool"]["setuptools"]["package-data"].get("attention_data", [])
    files = ", ".join(json.dumps(pattern) for pattern in data)
    return f"""[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "attention-step-by-step-data"
version = "0.1.0"
description = "The data, models and checkpoints of Attention, step by step (seeded, no downloads)"
requires-python = "{python}"
dependencies = ["torch", "tokenizers"]  # tokenizers: the capstone's subwords

[tool.setuptools.packages.find]
include = ["attention_data*"]

[tool.setuptools.package-data]
attention_data = [{files}]
"""


def leaks(dest: Path) -> list[str]:
    """Files under `dest` that hold a solution or hidden-test marker or import the grader, and
    paths that name a private folder."""
    private = {"solutions", "autograder", "grading", "tests", "bench", "node_modules"}
    found = []
    for path in sorted(dest.rglob("*")):
        rel = path.relative_to(dest)
        if private & set(rel.parts):
            found.append(f"{rel}: a private folder")
            continue
        if not path.is_file() or path.suffix not in {".ipynb", ".py", ".html", ".md", ".txt",
                                                       ".js", ".json", ".toml"}:  # fmt: skip
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [f"{rel}: {marker!r}" for marker in FORBIDDEN if marker in text]
    return found


def publish(html: Path, dest: Path) -> Path:
    if not (html / "index.html").is_file():
        raise SystemExit(f"error: {html} holds no built book; run `make book` first")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copytree(html, dest / "site")
    (dest / "site" / ".nojekyll").write_text("")  # GitHub Pages: serve _static/ as it is
    shutil.copytree(
        ROOT / "exercises", dest / "exercises", ignore=shutil.ignore_patterns(".ipynb_checkpoints")
    )
    shutil.copytree(
        ROOT / "attention_data",
        dest / "attention_data",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    (dest / "pyproject.toml").write_text(public_pyproject())
    (dest / "requirements.txt").write_text(_requirements())
    (dest / "README.md").write_text(README.format(title=_title()))
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", nargs="?", default=str(ROOT / "_build" / "public"))
    parser.add_argument("--html", default=str(ROOT / "_build" / "html"))
    args = parser.parse_args(argv)
    dest = publish(Path(args.html), Path(args.dest))
    found = leaks(dest)
    if found:
        print("error: the release holds what students must not see:", file=sys.stderr)
        for line in found:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"the public release is in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
