"""Helpers for tests that run nbgrader: a throwaway course, the nbgrader CLI, made-up submissions.

A course is a temporary folder with a copy of the repository's ``nbgrader_config.py`` and
``solutions/``; the config pins the course root to its own folder, so every file nbgrader writes
(release, submissions, gradebook) stays in that folder. Submissions are made by editing the release
the way a student would: filling in solution cells, breaking one, deleting a cell.

Not here: the assertions (the tests say what they expect) and the batch grader.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat

from autograder import chapters

REPO = Path(__file__).resolve().parents[1]
NBFORMAT_VERSION = 4

SOLUTION_MARKERS = chapters.SOLUTION
HIDDEN_TEST_MARKERS = chapters.HIDDEN_TESTS


def assignments() -> list[str]:
    """The assignment slugs, as the Makefile finds them: the folders solutions/ch*."""
    return sorted(p.name for p in (REPO / "solutions").glob("ch*") if p.is_dir())


def make_course(root: Path) -> Path:
    """A course folder under `root` with this repository's nbgrader config and source notebooks."""
    course = root / "course"
    course.mkdir(parents=True)
    shutil.copy2(REPO / "nbgrader_config.py", course / "nbgrader_config.py")
    for slug in assignments():
        shutil.copytree(
            REPO / "solutions" / slug,
            course / "solutions" / slug,
            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
        )
    return course


def nbgrader(course: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m nbgrader *args` in `course` with this Python; raise with its log on failure.

    The user's own Jupyter config is kept out (JUPYTER_CONFIG_DIR is a fresh folder), and this
    checkout comes first on the kernels' PYTHONPATH so that the hidden tests import its checks even
    if the environment's editable install points at another checkout.
    """
    env = dict(os.environ)
    config_dir = course.parent / "jupyter_config"
    config_dir.mkdir(exist_ok=True)
    env["JUPYTER_CONFIG_DIR"] = str(config_dir)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"nbgrader {' '.join(args)} exited with {proc.returncode}:\n"
            f"{proc.stdout}\n{proc.stderr}"
        )
    return proc


def read_notebook(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=NBFORMAT_VERSION)


def write_notebook(nb: nbformat.NotebookNode, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def cell_by_id(nb: nbformat.NotebookNode, gid: str):
    """The cell whose nbgrader grade_id is `gid`."""
    for cell in nb.cells:
        if grade_id(cell) == gid:
            return cell
    raise KeyError(f"no cell with grade_id {gid!r}")


def is_solution(cell) -> bool:
    return bool(cell.metadata.get("nbgrader", {}).get("solution"))


def filled_in(release: nbformat.NotebookNode, source: nbformat.NotebookNode):
    """The release with every solution cell answered as in the source: a student who got all right.

    The markers are dropped, as a student's notebook would not have them.
    """
    nb = nbformat.from_dict(release)
    for cell in nb.cells:
        if is_solution(cell):
            cell.source = chapters.without_markers(cell_by_id(source, grade_id(cell)).source)
    return nb


def replace_in_cell(nb: nbformat.NotebookNode, gid: str, old: str, new: str) -> None:
    """Edit the cell `gid` as a student would; fails if `old` is not in it (the source changed)."""
    cell = cell_by_id(nb, gid)
    if old not in cell.source:
        raise AssertionError(f"{old!r} is not in cell {gid!r}; update the test's edit")
    cell.source = cell.source.replace(old, new)


def delete_cell(nb: nbformat.NotebookNode, gid: str) -> None:
    nb.cells.remove(cell_by_id(nb, gid))


def submit(course: Path, student: str, assignment: str, nb: nbformat.NotebookNode) -> Path:
    """Put `nb` where nbgrader collects it: grading/submitted/<student>/<assignment>/."""
    path = course / "grading" / "submitted" / student / assignment / f"{assignment}.ipynb"
    write_notebook(nb, path)
    return path


def regions(text: str, markers: tuple[str, str]) -> Iterator[str]:
    """The lines strictly between each pair of begin/end markers in `text`."""
    for block in chapters.regions(text, markers):
        yield from block.split("\n")


def tree_digest(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder`."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
