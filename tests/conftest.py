"""Fixtures shared by every test file.

A fixture that costs minutes (building the book, grading a course) is session-scoped even when one
file uses it. `make test` runs under pytest-xdist with `--dist loadgroup`: a worker may be handed
another file's tests between two of this file's, and pytest tears a module-scoped fixture down at
that point and builds it again when the file's next test comes. Each worker has its own session,
so the tests of such a fixture share an `xdist_group`, which keeps them on one worker;
tests/test_suite_setup.py checks that the groups hold.
"""

import os
from pathlib import Path

# Two xdist workers share two cores: torch on one thread each (and in every process a test starts:
# the book's kernels, the graders), instead of each worker's threads waiting on the other's.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root folder: the one with the Makefile, _config.yml and solutions/."""
    return REPO_ROOT
