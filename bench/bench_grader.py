"""Benchmark: the batch grader against sequential `nbgrader autograde`, on the same submissions.

It makes N submissions of chapter 4 (by default 40: correct ones, untouched releases and three kinds
of mistakes, in turn), grades one copy of the course with plain `nbgrader autograde` (one process,
one student after another, no sandbox, the hidden tests in the student's kernel) and another with
`autograder.engine.grade` (every protection on: sandbox, checks outside it, scanner, feedback), and
prints the throughput of each, the ratio, and whether every student's automatic score is the same.
Then where the time goes, per notebook: for the engine, each step a result reports in its
``timings`` ("sandbox start", "execution", "judging", "scanner", "gradebook", "feedback", ...:
whatever keys it finds), mean and largest per notebook, and the batch's own time beyond the
workers'; for nbgrader, which cannot be split from outside, the total per notebook.

The machine may be shared: run it with `nice`, and read the load (printed before and after) with
the ratio. Both graders run the same way, one after the other.

Usage: python bench/bench_grader.py [--submissions 40] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
A = "ch04_self_attention"

# Edits that make one part wrong: (solution cell, old text, new text).
MISTAKES = [
    ("attention_scores_solution", "scale = 1.0 / math.sqrt(query.size(-1))", "scale = 1.0"),
    ("score_variance_solution", "variances.append(dots.var())", "variances.append(dots.std())"),
    (
        "attention_weights_solution",
        "torch.softmax(scores, dim=-1)",
        "torch.softmax(scores, dim=-2)",
    ),
]


def _meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def make_submissions(course: Path, n: int) -> None:
    source = nbformat.read(course / "solutions" / A / f"{A}.ipynb", 4)
    release = nbformat.read(course / "exercises" / A / f"{A}.ipynb", 4)
    answers = {
        _meta(c)["grade_id"]: "\n".join(ln for ln in c.source.split("\n") if "### " not in ln)
        for c in source.cells
        if _meta(c).get("solution")
    }
    for i in range(n):
        nb = nbformat.from_dict(release)
        kind = i % 5  # 0, 1: correct; 2: untouched; 3, 4: a mistake
        if kind != 2:
            for cell in nb.cells:
                if _meta(cell).get("solution"):
                    cell.source = answers[_meta(cell)["grade_id"]]
        if kind >= 3:
            cell_id, old, new = MISTAKES[i % len(MISTAKES)]
            cell = next(c for c in nb.cells if _meta(c).get("grade_id") == cell_id)
            assert old in cell.source, f"{old!r} is no longer in {cell_id}; update the benchmark"
            cell.source = cell.source.replace(old, new)
        path = course / "grading" / "submitted" / f"student{i:03d}" / A / f"{A}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)


def make_course(root: Path, n: int) -> Path:
    course = root / "course"
    course.mkdir(parents=True)
    shutil.copy2(REPO / "nbgrader_config.py", course)
    shutil.copytree(REPO / "solutions", course / "solutions")
    shutil.copytree(REPO / "exercises", course / "exercises")
    make_submissions(course, n)
    return course


def nbgrader(course: Path, *args: str) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"nbgrader {' '.join(args)} failed:\n{proc.stderr[-3000:]}")


def auto_scores(course: Path) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'grading' / 'gradebook.db'}") as gb:
        return {s.student.id: float(s.code_score) for s in gb.assignment_submissions(A)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=40)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()

    from autograder.engine.grade import Course, grade_assignment

    n = args.submissions
    load_before = _load()
    root = Path(tempfile.mkdtemp(prefix="bench-grader-"))
    try:
        sequential = make_course(root / "sequential", n)
        nbgrader(sequential, "generate_assignment", A, "--force")
        start = time.perf_counter()
        nbgrader(sequential, "autograde", A, "--force")
        t_seq = time.perf_counter() - start
        theirs = auto_scores(sequential)

        batch = make_course(root / "batch", n)
        nbgrader(batch, "generate_assignment", A, "--force")
        start = time.perf_counter()
        results = grade_assignment(Course.load(batch), A, workers=args.workers, progress=False)
        t_batch = time.perf_counter() - start
        ours = {r.student: r.score for r in results}
        differ = sorted(s for s in theirs if theirs[s] != ours.get(s))
        same = "yes" if not differ and len(ours) == n else f"NO ({', '.join(differ)})"

        print(f"load before: {load_before}; after: {_load()}")
        rows = [
            ("nbgrader autograde (sequential, no sandbox)", t_seq, ""),
            (f"autograder.engine.grade ({args.workers} workers, everything on)", t_batch, same),
        ]
        print(f"{n} submissions of {A}, {os.cpu_count()} cores (target: batch >= 4x sequential)")
        print(f"{'grader':<62} {'seconds':>8} {'per min':>8} {'ratio':>6}  same scores")
        for label, seconds, same_scores in rows:
            print(
                f"{label:<62} {seconds:8.1f} {60 * n / seconds:8.1f} {t_seq / seconds:5.2f}x  "
                f"{same_scores}"
            )
        print_breakdown(results, t_seq, t_batch, args.workers)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_breakdown(results, t_seq: float, t_batch: float, workers: int) -> None:
    """Seconds per notebook, step by step (mean and largest), for the engine; nbgrader's total."""
    n = max(len(results), 1)
    steps: dict[str, list[float]] = {}
    for r in results:
        for key, seconds in (getattr(r, "timings", None) or {}).items():
            steps.setdefault(key, []).append(float(seconds))
    worker_seconds = [float(getattr(r, "seconds", 0.0)) for r in results]
    print()
    print(f"{'per notebook (seconds)':<40} {'mean':>7} {'max':>7}")
    print(f"{'nbgrader autograde: all of it':<40} {t_seq / n:7.2f}")
    for key, values in steps.items():
        values += [0.0] * (n - len(values))
        print(f"{'engine: ' + key:<40} {sum(values) / n:7.2f} {max(values):7.2f}")
    if not steps:
        print("engine: the results carry no timings (StudentResult.timings); only the total")
    if worker_seconds:
        print(f"{'engine: a worker, all of it':<40} {sum(worker_seconds) / n:7.2f} "
              f"{max(worker_seconds):7.2f}")
        rest = t_batch - sum(worker_seconds) / max(workers, 1)
        print(f"{'engine: the batch beyond its workers':<40} {rest / n:7.2f}   "
              "(start, gradebook, feedback, reports: the parent's share)")


if __name__ == "__main__":
    main()
