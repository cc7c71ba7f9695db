"""How `make test` runs the suite: the xdist groups that keep a costly fixture on one worker.

`make test` runs `pytest -n 2 --dist loadgroup`. The book build (test_book.py), the graded
courses (test_engine.py, test_chapter_contract.py) and nbgrader's course
(test_nbgrader_roundtrip.py) are session fixtures used by the tests of one `xdist_group`. If the
groups stop holding, nothing fails: each worker builds the fixture for itself, and `make test` takes
minutes longer (pytest 9.2 with pytest-xdist 3.8 did exactly that). This test sees it happen.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

GROUPED = """
import pytest

pytestmark = pytest.mark.xdist_group("one")


@pytest.mark.parametrize("i", range(6))
def test_grouped(i):
    pass
"""


def test_an_xdist_group_runs_on_one_worker(tmp_path):
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "2",
            "--dist",
            "loadgroup",
            "-v",
            "-p",
            "no:cacheprovider",
            "-c",
            "/dev/null",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    workers = re.findall(r"\[(gw\d+)\].*PASSED .*test_grouped", proc.stdout)
    assert len(workers) == 6, proc.stdout[-2000:]
    assert len(set(workers)) == 1, (
        "`--dist loadgroup` spread one xdist_group over several workers: check the pytest and "
        "pytest-xdist pins in requirements.txt"
    )


@pytest.mark.parametrize(
    "path, group",
    [
        ("tests/test_book.py", "book"),
        ("tests/test_engine.py", "engine"),
        ("tests/test_chapter_contract.py", "contract"),
        ("tests/test_nbgrader_roundtrip.py", "nbgrader"),
    ],
)
def test_the_costly_files_declare_their_group(path, group):
    assert f'xdist_group("{group}")' in (REPO / path).read_text()


def test_make_test_distributes_by_group():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"pytest -n \d+ --dist loadgroup", makefile)
