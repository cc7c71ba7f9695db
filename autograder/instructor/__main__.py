"""python -m autograder.instructor COMMAND: the commands of __init__.py, and feedback."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

from autograder.course import Course
from autograder.course.record import COLLECT_TABLE
from autograder.instructor import students
from autograder.instructor.collect import collect
from autograder.instructor.export import export
from autograder.instructor.handgrades import import_hand_grades


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m autograder.instructor",
        description="The instructor's week around the grader (the instructor guide walks it).",
    )
    parser.add_argument("--course", default=".", help="the course root (holds nbgrader_config.py)")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="an LMS download into grading/submitted/")
    c.add_argument("assignment")
    c.add_argument("download", help="a Canvas or Moodle zip, or a folder of <student>.ipynb")
    c.add_argument("--roster", help="a roster CSV (student_id,name,email,canvas_id,moodle_id,...)")
    c.add_argument("--lms", choices=["canvas", "moodle", "folder"], help="default: guessed")
    c.add_argument("--archive-timezone", help="the zone of the archive's times (default: course)")
    e = sub.add_parser("export", help="grades as the LMS gradebook imports them")
    e.add_argument("assignment")
    e.add_argument("--lms", choices=["canvas", "moodle"], required=True)
    e.add_argument("--column", help="the assignment's column title in the LMS")
    fb = sub.add_parser("feedback", help="refresh the feedback pages after hand grading")
    fb.add_argument("assignment")
    x = sub.add_parser("extend", help="give one student a later due date for one assignment")
    x.add_argument("assignment")
    x.add_argument("student")
    x.add_argument("due", help='"2027-03-18 23:59" (the course\'s zone), or "" to take it back')
    d = sub.add_parser("drop", help="drop a student (their work is moved to grading/dropped/)")
    d.add_argument("student")
    r = sub.add_parser("rename", help="give a student another id everywhere")
    r.add_argument("old")
    r.add_argument("new")
    hg = sub.add_parser("handgrades", help="hand grades from a CSV: student,cell,score,comment")
    hg.add_argument("assignment")
    hg.add_argument("csv", help="a CSV with the header student,cell,score,comment")
    args = parser.parse_args(argv)
    course = Course.load(args.course)
    try:
        if args.command == "handgrades":
            for note in import_hand_grades(course, args.assignment, Path(args.csv)):
                print(f"  note: {note}")
            print(
                f"{args.assignment}: hand grades from {args.csv} are in the gradebook and "
                f"{course.reports / (args.assignment + '.csv')}; refresh the students' pages with "
                f"`python -m autograder.instructor feedback {args.assignment}`"
            )
        elif args.command == "collect":
            _collect(course, args)
        elif args.command == "export":
            path, warnings = export(course, args.assignment, args.lms, args.column)
            print(f"{args.assignment}: grades for {args.lms} in {path}")
            for w in warnings:
                print(f"  warning: {w}")
        elif args.command == "feedback":
            from autograder.reporting.feedback import refresh_feedback  # nbconvert takes seconds

            failed = refresh_feedback(course, args.assignment)
            for student, why in failed.items():
                print(f"  no feedback for {student}: {why}")
            print(f"{args.assignment}: feedback in {course.feedback}/<student>/{args.assignment}/")
            return 1 if failed else 0
        elif args.command == "extend":
            print(students.extend(course, args.assignment, args.student, args.due))
        elif args.command == "drop":
            print(f"dropped {args.student}; their work is in {students.drop(course, args.student)}")
        else:
            students.rename(course, args.old, args.new)
            print(f"renamed {args.old} to {args.new}")
        return 0
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _collect(course, args) -> None:
    tz = ZoneInfo(args.archive_timezone) if args.archive_timezone else None
    rows = collect(
        course, args.assignment, Path(args.download), roster_csv=args.roster, lms=args.lms, tz=tz
    )
    width = max((len(r.student_id) for r in rows), default=7)
    for r in rows:
        print(f"{r.student_id:<{width}}  {r.status:<17}  {r.collected_as or '-'}  {r.note}")
    counts = Counter(r.status for r in rows)
    summary = ", ".join(f"{counts[status]} {status}" for status in sorted(counts))
    listing = course.reports / COLLECT_TABLE.format(assignment=args.assignment)
    print(f"{args.assignment}: {summary}; the list is in {listing}")


if __name__ == "__main__":
    sys.exit(main())
