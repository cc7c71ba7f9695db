"""Fixtures shared by every test file."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root folder: the one with the Makefile, _config.yml and solutions/."""
    return REPO_ROOT
