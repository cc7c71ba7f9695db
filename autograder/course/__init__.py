"""The course on disk, below the reports, the engine and the instructor's commands, none of
which it imports (tests/test_layers.py): :class:`Course` (where nbgrader keeps the folders),
:mod:`.policy` (due dates, late policy), :mod:`.roster`, :mod:`.record` (what ``collect`` knows
about one submission) and :mod:`.grades` (the gradebook's scores).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Course", "load_config"]


@dataclass(frozen=True)
class Course:
    """Where an nbgrader course keeps its folders, read from its nbgrader_config.py."""

    root: Path
    source: Path
    release: Path
    submitted: Path
    autograded: Path
    feedback: Path
    db_path: Path

    @property
    def grading(self) -> Path:
        """The folder of the students' work and everything made from it (never in git)."""
        return self.submitted.parent

    @property
    def reports(self) -> Path:
        return self.grading / "reports"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.db_path}"

    @property
    def extensions_path(self) -> Path:
        return self.grading / "extensions.csv"

    def config(self):
        return load_config(self.root)

    def policy(self):
        """The due dates, extensions and late policy (ValueError naming what it cannot read)."""
        from autograder.course.policy import Policy

        return Policy.from_config(self.config()).with_extensions(self.extensions_path)

    def roster(self):
        from autograder.course.roster import Roster

        return Roster.load(self.grading / "roster.csv")

    def superseded(self, student: str, assignment: str, why: str) -> Path:
        """A new folder <grading>/superseded/<student>/<assignment>/<time>-<why>/ for what a
        command moves out of the way: nothing is ever deleted."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.grading / "superseded" / student / assignment / f"{stamp}-{why}"
        target.mkdir(parents=True)
        return target

    @classmethod
    def load(cls, root: str | os.PathLike) -> Course:
        root = Path(root).resolve()
        if not (root / "nbgrader_config.py").is_file():
            raise SystemExit(f"error: {root} has no nbgrader_config.py; pass --course COURSE_ROOT")
        cd = load_config(root).CourseDirectory
        course_root = Path(cd.get("root", root))
        db_url = cd.get("db_url", f"sqlite:///{course_root / 'gradebook.db'}")
        if not db_url.startswith("sqlite:///"):
            raise SystemExit(f"error: the batch grader needs an SQLite gradebook, got {db_url}")
        db_path = Path(db_url.removeprefix("sqlite:///"))
        folders = ("source", "release", "submitted", "autograded", "feedback")  # nbgrader's names
        return cls(
            root=course_root,
            db_path=db_path if db_path.is_absolute() else course_root / db_path,
            **{name: course_root / cd.get(f"{name}_directory", name) for name in folders},
        )


def load_config(root: Path):
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
