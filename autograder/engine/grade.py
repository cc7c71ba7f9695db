"""Batch grading for instructors: every submission of an assignment, one sandboxed run each.

    python -m autograder.engine.grade ch04_self_attention [--workers N] [--student ID ...]
        [--scheduler ADDRESS] [--no-sandbox] [--course ROOT]

(`make autograde` runs it for every assignment.) The command line only; the work is split by
concern: :mod:`.submission` (one submission, the unit of work), :mod:`.pool` (local workers or
Dask), :mod:`.batch` (the parent: reads, hands out, writes) and :mod:`.gradebook`; the feedback and
the reports are ``autograder.reporting``'s, the course on disk the course layer's.
"""

from __future__ import annotations

import argparse
import sys

from autograder.course import Course
from autograder.engine.batch import _digest, grade_assignment  # noqa: F401 (tests use _digest)

__all__ = ["Course", "grade_assignment", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m autograder.engine.grade",
        description="Grade every submission of an assignment, each in one sandboxed run, judged "
        "outside the sandbox. Writes <grading>/reports/<assignment>.csv and -report.md.",
    )
    parser.add_argument("assignments", nargs="+", help="assignment slugs: ch04_self_attention")
    parser.add_argument("--course", default=".", help="the course root (holds nbgrader_config.py)")
    parser.add_argument("--student", action="append", help="only this student (repeatable)")
    parser.add_argument("--workers", type=int, default=None, help="local workers (default: cores)")
    parser.add_argument(
        "--scheduler",
        default=None,
        help="grade on a Dask cluster: the scheduler's address, e.g. tcp://10.0.0.5:8786",
    )
    parser.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run student code without bubblewrap; every row is marked unsandboxed",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds a cell, or a part's check, may run"
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from autograder.engine.sandbox import SandboxUnavailable

    course = Course.load(args.course)
    for assignment in args.assignments:
        try:
            results = grade_assignment(
                course,
                assignment,
                students=args.student,
                workers=args.workers,
                sandboxed=not args.no_sandbox,
                timeout=args.timeout,
                scheduler=args.scheduler,
                progress=not args.no_progress,
            )
        except SandboxUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        flagged = sum(bool(r.findings or r.integrity) for r in results)
        handed = sum(bool(r.autograded) or r.status == "error" for r in results)
        print(
            f"{assignment}: {handed} notebooks handed in"
            + (f" and graded; {flagged} flagged for review" if handed else "")
            + f"\n  grades:   {course.reports / (assignment + '.csv')}"
            + f"\n  report:   {course.reports / (assignment + '-report.md')}"
            + f"\n  feedback: {course.feedback}/<student>/{assignment}/"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
