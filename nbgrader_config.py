"""nbgrader's configuration: where each stage of an assignment lives, and how it is graded.

The course root is the folder of this file (the repository root), whatever the working directory:
    solutions/<assignment>/      source notebooks (solutions, hidden tests)
    exercises/<assignment>/      the student release (`make exercises`)
    grading/                     students' work, grades and feedback (below; never in git)

Settings are for nbgrader 0.9.6 (see requirements.txt).
"""

import os
import sys

c = get_config()  # noqa: F821 (traitlets provides get_config when it runs this file)

HERE = os.path.dirname(os.path.abspath(__file__))

# When nbgrader creates a gradebook it runs the `alembic` command found on PATH (nbgrader.api.
# get_alembic_version), and `.venv/bin/nbgrader` does not put .venv/bin on PATH: the first run then
# fails half-way and leaves a gradebook without its alembic_version table. Put this interpreter's
# scripts folder first.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

# nbgrader resolves every folder below against CourseDirectory.root, which defaults to the working
# directory; pinning it to this file's folder makes `--config path/to/nbgrader_config.py` work from
# anywhere, and keeps a copy of this file in a temporary course (the tests) self-contained.
c.CourseDirectory.root = HERE
c.CourseDirectory.course_id = "attention-step-by-step"

# The slug appears in the same place in every stage: solutions/<slug>/ is the source and
# exercises/<slug>/ the release, as the house layout (shared/CONVENTIONS.md) puts them.
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"

# Students' work and everything made from it lives in one grading folder, outside the code: the
# sandbox that runs a student's notebook must not be able to see it, and the package's folder is
# not it. By default it is grading/ beside this file (git ignores it); set ATTENTION_GRADING_DIR
# to keep it elsewhere, for instance on a disk that is backed up.
#    <grading>/submitted/<student>/<assignment>/      submissions, as collected
#    <grading>/autograded/<student>/<assignment>/     the graded copies, with the grader's outputs
#    <grading>/feedback/<student>/<assignment>/       HTML feedback for the student
#    <grading>/reports/<assignment>.csv               the grades, one row per student
#    <grading>/gradebook.db                           the gradebook (SQLite)
GRADING = os.path.abspath(os.environ.get("ATTENTION_GRADING_DIR") or os.path.join(HERE, "grading"))
c.CourseDirectory.submitted_directory = os.path.join(GRADING, "submitted")
c.CourseDirectory.autograded_directory = os.path.join(GRADING, "autograded")
c.CourseDirectory.feedback_directory = os.path.join(GRADING, "feedback")

# An absolute path, so that the gradebook is the same file from any working directory. SQLite does
# not create missing folders, and nbgrader then fails with a misleading "run `nbgrader db upgrade`"
# hint; the folder is created here so that a fresh course works too.
os.makedirs(GRADING, exist_ok=True)
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(GRADING, "gradebook.db")

# `nbgrader export` writes every student's grades: into the grading folder, not the working tree.
c.CsvExportPlugin.to = os.path.join(GRADING, "grades.csv")

# What the student sees in place of a solution: a stub that fails loudly, so that an unanswered
# part scores 0 instead of passing tests by accident (this is also nbgrader's default for Python).
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# A student's infinite loop or a huge matrix must not hang the grader: each cell gets 120 s (the
# checks of a chapter take a few seconds), then the kernel is interrupted and the cell counts as an
# error, so that the rest of the notebook still runs. Execute is nbgrader's ExecutePreprocessor.
c.Execute.timeout = 120
c.Execute.interrupt_on_timeout = True

# A grade cell that a student deleted is put back from the gradebook (with its hidden tests) and
# graded like the others. Without this nbgrader grades only the cells it finds: a deleted test has
# no auto score and is flagged "needs manual grade" (measured with 0.9.6), so that deleting a
# failing test turns it into a hand-graded cell instead of a failure.
c.OverwriteCells.add_missing_cells = True

# The students' feedback pages (autograder/reporting/feedback.py). The hidden tests are cut out of the
# grade cells (nbgrader keeps them by default; jupyter/nbgrader#917); FeedbackGrades marks the
# written answers still waiting for a hand and drops the visible tests (the grader does not run
# them); FeedbackExporter shows each grade cell as its verdict and what failed, and typesets the
# math into SVG when the page is made (MathJax 3 in node, from `make vendor`): a small page that
# loads nothing from a CDN. Set here, the formgrader's "Generate Feedback" button makes the same
# pages as `make autograde` and `python -m autograder.instructor feedback`.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbgrader.preprocessors.ClearHiddenTests",
    "autograder.reporting.feedback.FeedbackGrades",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
c.GenerateFeedback.exporter_class = "autograder.reporting.feedback.FeedbackExporter"

# A traceback would quote the hidden-test lines of the cell and the code of the checks around the
# failing call, so only its first line (the rule) and its last line ("CheckFailed: <the property
# that failed>") are kept; with 3, LimitOutput keeps 1 + "... Traceback truncated ..." + 1. (Lower
# values do not work: LimitOutput then keeps the whole traceback.) This applies to the autograded
# notebooks too; the instructor has the source for the rest.
c.LimitOutput.max_traceback = 3
# A student who prints in a loop must not make the feedback unreadable.
c.LimitOutput.max_lines = 200

# Due dates and the late policy: the one place they are set (autograder/course/policy.py).
# A submission's time is its timestamp.txt: nbgrader's exchange writes one, and
# `python -m autograder.instructor collect` writes the time the LMS's archive gives.
# Dates and times written without a zone are in `timezone`. The penalty is a share of the
# assignment's maximum per day (or part of a day) late after the grace period, and the whole
# maximum after max_days; per_day = 0 reports lateness without a penalty. The grades CSV shows
# submitted_at, due, late_by and late_penalty, and `nbgrader export` the same penalty.
c.AttentionCourse.timezone = "UTC"
c.AttentionCourse.due_dates = {
    # "ch04_self_attention": "2027-03-15 23:59",
}
c.AttentionCourse.late_policy = {"grace_minutes": 15, "per_day": 0.1, "max_days": 7}
