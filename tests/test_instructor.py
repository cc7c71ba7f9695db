"""The instructor's week (autograder.instructor): LMS downloads in, grades out.

Fast tests read made-up Canvas and Moodle archives, rosters and late policies. The slow one walks
the week the instructor guide describes, end to end, on a course laid out for real: collect a
Canvas archive (a renamed notebook, an invalid one, one zipped in a folder, a text file, a late
one), grade, grade a written answer by hand, collect a resubmission that cannot be read, grade
again, drop and rename students, export for the LMS. Every student has one row, the CSV says what
the gradebook says, and nothing handed in is changed.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from autograder import chapters
from autograder.course import Course, record
from autograder.course.grades import GradedCell
from autograder.course.policy import Policy, parse_time
from autograder.course.roster import Roster, safe_id
from autograder.instructor import collect as collect_mod

A = "ch04_self_attention"
OTHER = "ch01_seq2seq_bottleneck"
REPO = Path(__file__).resolve().parents[1]
SEOUL = dt.timezone(dt.timedelta(hours=9))


def _zip(path: Path, entries: dict[str, bytes | tuple[bytes, tuple]]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, value in entries.items():
            data, when = value if isinstance(value, tuple) else (value, (2027, 3, 10, 12, 0, 0))
            info = zipfile.ZipInfo(name, date_time=when)
            z.writestr(info, data)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


NB = b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'


# --- reading downloads ---------------------------------------------------------------------


def test_canvas_names_give_the_user_the_late_mark_and_the_original_name(tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("work/ch04.ipynb", NB)
        z.writestr("__MACOSX/work/._ch04.ipynb", b"junk")
    archive = _zip(
        tmp_path / "canvas.zip",
        {
            "doejane_123_456_Copy of ch04.ipynb": NB,
            "kimminji_LATE_124_457_ch04-1.ipynb": NB,
            "leejun_125_458_notes.txt": b"hello",
            "parkseo_126_459_work.zip": inner.getvalue(),
            "__MACOSX/._doejane_123_456_Copy of ch04.ipynb": b"junk",
        },
    )
    handed = {h.lms_id: h for h in collect_mod.read_download(archive)}
    assert set(handed) == {"123", "124", "125", "126"}
    assert handed["123"].names == ("doejane",) and handed["123"].lms == "canvas"
    assert [f.name for f in handed["123"].files] == ["Copy of ch04.ipynb"]
    assert handed["124"].late_by_lms and not handed["123"].late_by_lms
    assert handed["125"].files == [] and "notes.txt (not a notebook)" in handed["125"].skipped
    assert [f.name for f in handed["126"].files] == ["ch04.ipynb"]
    assert "inside work.zip (as work/ch04.ipynb)" in handed["126"].notes[0]
    assert handed["123"].files[0].when == dt.datetime(2027, 3, 10, 12, tzinfo=dt.UTC)


def test_moodle_archives_with_and_without_folders(tmp_path):
    for name, entries in {
        "flat": {"Jane Doe_901_assignsubmission_file_ch04.ipynb": NB},
        "folders": {
            "Jane Doe_901_assignsubmission_file_/ch04.ipynb": NB,
            "Min-ji Kim_902_assignsubmission_file_/sub/deeper.ipynb": NB,
        },
    }.items():
        handed = collect_mod.read_download(_zip(tmp_path / f"{name}.zip", entries))
        assert handed[0].lms == "moodle" and handed[0].names == ("Jane Doe",)
        assert [f.name for f in handed[0].files] == ["ch04.ipynb"]
    assert [f.name for f in handed[1].files] == ["deeper.ipynb"]


def test_an_archive_from_no_known_lms_is_refused_with_a_way_out(tmp_path):
    archive = _zip(tmp_path / "x.zip", {"homework.ipynb": NB})
    with pytest.raises(ValueError, match="pass --lms canvas or --lms moodle"):
        collect_mod.read_download(archive)
    with pytest.raises(ValueError, match="is not named as Canvas names"):
        collect_mod.read_download(archive, lms="canvas")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no .ipynb"):
        collect_mod.read_download(tmp_path / "empty")


def test_a_single_notebook_is_collected_under_the_released_name():
    f = collect_mod.File
    one = [f("Copy of ch04.ipynb", NB, None)]
    assert list(collect_mod._choose(one, ["ch04.ipynb"])) == ["ch04.ipynb"]
    resubmitted = [f("ch04.ipynb", b"old", None), f("ch04-1.ipynb", b"new", None)]
    assert collect_mod._choose(resubmitted, ["ch04.ipynb"])["ch04.ipynb"].data == b"new"
    two = [f("a.ipynb", NB, None), f("b/../c.ipynb", NB, None)]
    assert sorted(collect_mod._choose(two, ["ch04.ipynb"])) == ["a.ipynb", "b_.._c.ipynb"]


# --- rosters and policies ------------------------------------------------------------------


def test_the_roster_finds_students_by_lms_id_then_by_name(tmp_path):
    path = tmp_path / "roster.csv"
    path.write_text(
        "student_id,name,email,canvas_id\n"
        "s1,Jane Doe,j@x.org,123\ns2,Min-ji Kim,,\ns3,Lee Jun,,\ns4,Lee Jun,,\n"
    )
    roster = Roster.load(path)
    assert roster.find(lms="canvas", lms_id="123").student_id == "s1"
    assert roster.find(lms="canvas", names=("doejane",)).student_id == "s1"  # Canvas: last first
    assert roster.find(lms="moodle", names=("Min-ji  Kim",)).student_id == "s2"
    assert roster.find(lms="moodle", names=("Lee Jun",)) is None  # two students: ask for ids
    assert safe_id("Jane  Doe") == "jane-doe" and safe_id("김 민지") == "김-민지"


@pytest.mark.parametrize(
    "text, message",
    [
        ("name\nJane\n", "student_id"),
        ("student_id,shoe_size\ns1,42\n", "unknown columns"),
        ("student_id\ns/1\n", "line 2"),
        ("student_id\ns1\ns1\n", "appears twice"),
    ],
)
def test_a_bad_roster_is_named_with_its_line(tmp_path, text, message):
    path = tmp_path / "roster.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        Roster.load(path)


def _policy(**section) -> Policy:
    return Policy.from_config({"AttentionCourse": section})


def test_the_late_penalty_is_a_share_of_the_maximum_per_started_day():
    p = _policy(
        timezone="Asia/Seoul",
        due_dates={A: "2027-03-15 23:59"},
        late_policy={"grace_minutes": 15, "per_day": 0.1, "max_days": 3},
    )
    due = dt.datetime(2027, 3, 15, 23, 59, tzinfo=SEOUL)
    assert p.due(A) == due
    for after, penalty in [
        (dt.timedelta(minutes=-5), 0.0),
        (dt.timedelta(minutes=10), 0.0),  # grace
        (dt.timedelta(minutes=20), 1.4),
        (dt.timedelta(days=1, minutes=1), 2.8),
        (dt.timedelta(days=3, hours=1), 14.0),  # past max_days: nothing left
    ]:
        late = p.lateness(A, due + after, 14)
        assert late.penalty == pytest.approx(penalty), after
        assert late.late == (penalty > 0)
    assert p.lateness("other", due + dt.timedelta(days=9), 14).penalty == 0.0  # no due date
    naive = dt.datetime(2027, 3, 16, 0, 30)  # written without a zone: the course's
    assert p.lateness(A, naive, 10).penalty == pytest.approx(1.0)
    assert parse_time("2027-03-15 14:59:00.000001 UTC") == due + dt.timedelta(microseconds=1)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"timezone": "Mars/Olympus"}, "not a time zone"),
        ({"due_dates": {A: "next friday"}}, "is not a date"),
        ({"late_policy": {"per_dya": 0.1}}, "unknown keys"),
        ({"late_policy": {"per_day": 10}}, "between 0 and 1"),
    ],
)
def test_a_policy_that_cannot_be_understood_says_which_setting(section, message):
    with pytest.raises(ValueError, match=message):
        _policy(**section)


def test_an_extension_moves_one_students_due_date_and_can_be_taken_back(tmp_path):
    from autograder.course import policy

    path = tmp_path / "extensions.csv"
    base = Policy.from_config(
        {"AttentionCourse": {"timezone": "Asia/Seoul", "due_dates": {A: "2027-03-15 23:59"}}}
    )
    when = policy.extend(path, A, "jdoe", "2027-03-18 23:59", base.timezone)
    assert when == dt.datetime(2027, 3, 18, 23, 59, tzinfo=SEOUL)
    extended = base.with_extensions(path)
    assert extended.due(A, "jdoe") == when and extended.due(A, "mkim") == base.due(A)
    submitted = dt.datetime(2027, 3, 17, 9, 0, tzinfo=SEOUL)
    assert extended.lateness(A, submitted, 10, "jdoe").penalty == 0
    assert base.with_extensions(path).lateness(A, submitted, 10, "mkim").late
    policy.rename_student(path, "jdoe", "jane.doe")
    assert base.with_extensions(path).due(A, "jane.doe") == when
    policy.extend(path, A, "jane.doe", "", base.timezone)  # taken back
    assert base.with_extensions(path).due(A, "jane.doe") == base.due(A)
    path.write_text("student_id,assignment,due\njdoe,ch04_self_attention,next week\n")
    with pytest.raises(ValueError, match="line 2: due 'next week' is not a date"):
        base.with_extensions(path)


# --- the week, end to end ------------------------------------------------------------------


def _run(course_root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ATTENTION_GRADING_DIR"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=course_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _grade(course_root: Path, *args: str) -> subprocess.CompletedProcess:
    """What `make autograde` runs for chapter 4, with two workers unless `args` say otherwise."""
    args = args or ("--workers", "2", "--timeout", "60")
    return _run(course_root, "autograder.engine.grade", A, "--no-progress", *args)


def _rows(course: Course) -> dict[str, dict]:
    with open(course.reports / f"{A}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    students = [r["student"] for r in rows]
    assert len(students) == len(set(students)), "a student has two rows"
    return {r["student"]: r for r in rows}


def _gradebook(course: Course) -> dict[str, tuple[float, float, list[str]]]:
    """{student: (score, penalty, cells waiting for a hand)} as nbgrader's gradebook holds them."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course.db_path}") as gb:
        return {
            sub.student.id: (
                float(sub.score),
                float(sub.late_submission_penalty),
                sorted(
                    g.cell.name for nb in sub.notebooks for g in nb.grades if g.needs_manual_grade
                ),
            )
            for sub in gb.find_assignment(A).submissions
        }


def _agree(course: Course) -> dict[str, dict]:
    """The CSV and the gradebook say the same, for every student the gradebook holds."""
    rows = _rows(course)
    for student, (score, penalty, waiting) in _gradebook(course).items():
        row = rows[student]
        assert float(row["raw_score"]) == pytest.approx(score), student
        assert float(row["late_penalty"]) == pytest.approx(penalty), student
        assert float(row["score"]) == pytest.approx(max(0.0, score - penalty)), student
        assert row["needs_manual_grade"].split() == waiting, student
    return rows


def test_a_row_says_what_ran_out_of_time_what_was_flagged_and_what_else_was_handed_in(
    monkeypatch,
):
    """The judge is replaced by one that reports a cell and a part past the time limit: the
    reason says both, the flags keep the scanner's message, a second notebook is named."""
    from autograder.engine import judge
    from autograder.engine.submission import Job, grade_submission

    from nbgrader_helpers import cell_by_id, filled_in, read_notebook

    source = read_notebook(REPO / "solutions" / A / f"{A}.ipynb")
    release = read_notebook(REPO / "exercises" / A / f"{A}.ipynb")
    nb = filled_in(release, source)
    cell = cell_by_id(nb, "attention_scores_solution")
    cell.source = "import torch.nn.functional as F\nsdpa = F.scaled_dot_product_attention\n" + (
        cell.source
    )
    index = nb.cells.index(cell)
    parts = chapters.load(A).parts

    def judged(cells, parts_, options):
        timeout = {"output_type": "error", "ename": "TimeLimit", "evalue": "", "traceback": []}
        verdicts = [judge.PartVerdict(p.grade_id, True) for p in parts_[1:]]
        late = judge.PartVerdict(parts_[0].grade_id, False, "it ran past the time limit of 5 s")
        return judge.NotebookRun(outputs={index: [timeout]}, verdicts=[late, *verdicts])

    monkeypatch.setattr(judge, "judge_notebook", judged)
    cells = {
        c.metadata["nbgrader"]["grade_id"]: GradedCell(
            A, c.metadata["nbgrader"].get("points", 0), bool(c.metadata["nbgrader"].get("solution"))
        )
        for c in source.cells
        if c.metadata.get("nbgrader", {}).get("grade")
    }
    job = Job(
        A,
        "kim",
        {f"{A}.ipynb": nbformat.writes(nb).encode(), "scratch.ipynb": NB},
        {f"{A}.ipynb": nbformat.writes(release)},
        cells,
        sandboxed=False,
    )
    result = grade_submission(job)
    assert result.status == "graded", result.reason
    assert f"cell {index + 1} ran past the time limit" in result.reason
    assert f"the checks of {parts[0].grade_id} ran past the time limit" in result.reason
    assert "also handed in, not graded: scratch.ipynb" in result.reason
    assert any("forbidden_builtin: Uses torch.nn.functional" in f for f in result.findings)
    assert {"scanner"} <= set(result.timings)


@pytest.mark.slow
def test_a_week_from_an_lms_download_to_grades_the_lms_imports(tmp_path):
    from nbgrader.api import Gradebook

    from nbgrader_helpers import cell_by_id, filled_in, make_course, read_notebook

    course_root = make_course(tmp_path)
    shutil.copytree(REPO / "exercises", course_root / "exercises")
    with open(course_root / "nbgrader_config.py", "a") as f:
        f.write(
            f'\nc.AttentionCourse.timezone = "Asia/Seoul"\n'
            f'c.AttentionCourse.due_dates = {{"{A}": "2027-03-15 23:59"}}\n'
            'c.AttentionCourse.late_policy = {"grace_minutes": 0, "per_day": 0.1, "max_days": 7}\n'
        )
    course = Course.load(course_root)
    source = read_notebook(course_root / "solutions" / A / f"{A}.ipynb")
    release = read_notebook(course_root / "exercises" / A / f"{A}.ipynb")
    right = nbformat.writes(filled_in(release, source)).encode()
    buggy = filled_in(release, source)  # part 1 raises in the student's own line
    cell_by_id(buggy, "attention_scores_solution").source = (
        "def attention_scores(query, key, scale=None):\n"
        "    dims = [query.shape[-1]]\n"
        "    return query @ key.transpose(-2, -1) / dims[3] ** 0.5\n"
    )
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr(f"my work/{A}.ipynb", nbformat.writes(buggy))
    on_time, late = (2027, 3, 15, 20, 0, 0), (2027, 3, 17, 9, 0, 0)  # Seoul: 1 d 9 h late
    download = _zip(
        tmp_path / "canvas.zip",
        {
            f"doejane_101_9001_Copy of {A}.ipynb": (right, on_time),
            f"kimminji_102_9001_{A}.ipynb": (nbformat.writes(buggy).encode(), on_time),
            f"kimminji_LATE_102_9002_{A}-1.ipynb": (right, late),
            f"ohblank_107_9007_{A}.ipynb": (nbformat.writes(release).encode(), on_time),
            f"leejun_103_9003_{A}.ipynb": (right[:4000], on_time),
            "parkseo_104_9004_my work.zip": (zipped.getvalue(), on_time),
            "choiara_105_9005_notes.txt": (b"I ran out of time", on_time),
        },
    )
    roster = tmp_path / "roster.csv"
    roster.write_text(
        "student_id,name,email,canvas_id\n"
        "jdoe,Jane Doe,jane@example.org,101\nmkim,Min-ji Kim,,102\njlee,Jun Lee,,103\n"
        "spark,Seo Park,,104\nachoi,Ara Choi,,105\nabsent,Never There,,106\n"
        "oblank,Blank Oh,,107\n"
    )
    handed_in = {"download": _sha(download), "roster": _sha(roster)}

    # Monday: collect and grade.
    out = _run(
        course_root, "autograder.instructor", "collect", A, str(download), "--roster", str(roster)
    ).stdout
    assert "6 collected" not in out and "5 collected" in out, out
    assert "2 notebooks handed in" in out  # mkim's older one is kept, not collected
    assert len(list((course.grading / "superseded" / "mkim" / A).glob("*-older/*.ipynb"))) == 1
    jdoe = record.read(course, A, "jdoe")  # what collect knows, in one record
    assert jdoe.handed_in == {f"{A}.ipynb": f"Copy of {A}.ipynb"}
    assert (jdoe.lms, jdoe.lms_id) == ("canvas", "101")
    assert jdoe.when == dt.datetime(2027, 3, 15, 20, 0, tzinfo=SEOUL)  # the zip's time, in Seoul
    assert record.read(course, A, "achoi").status == "no notebook"
    _grade(course_root)
    rows = _agree(course)
    timings = {
        r["student"]: r["timings"] for r in json.loads((course.reports / f"{A}.json").read_text())
    }
    for student in ("jdoe", "mkim", "spark"):  # graded: the parent's stages beside the worker's
        assert {"gradebook", "feedback", "scanner"} <= set(timings[student]), timings[student]
        assert all(seconds >= 0 for seconds in timings[student].values())
    assert set(rows) == {"jdoe", "mkim", "jlee", "spark", "achoi", "absent", "oblank"}
    assert "nothing was answered" in rows["oblank"]["reason"]
    assert rows["oblank"]["scaling_gradients_answer"] == "unanswered"  # not 0
    full = float(rows["jdoe"]["max_score"]) - 2  # the written answer waits for a hand
    assert (rows["jdoe"]["status"], float(rows["jdoe"]["score"])) == ("graded", full)
    assert f"'Copy of {A}.ipynb' as {A}.ipynb" in rows["jdoe"]["reason"]
    assert rows["jdoe"]["late_by"] == "" and rows["jdoe"]["due"].startswith("2027-03-15T23:59")
    assert rows["mkim"]["late_by"].startswith("late by 1 d 9 h")
    assert float(rows["mkim"]["late_penalty"]) == pytest.approx(
        0.2 * float(rows["mkim"]["max_score"])
    )
    assert rows["jlee"]["status"] == "error" and "not valid JSON (line " in rows["jlee"]["reason"]
    assert rows["spark"]["status"] == "graded"
    part_1 = [p.grade_id for p in chapters.load(A).parts_of("attention_scores")]
    assert all(rows["spark"][g] == "0" for g in part_1)  # that part only
    assert float(rows["spark"]["score"]) == full - sum(float(rows["jdoe"][g]) for g in part_1)
    where = "in your code at cell "
    spark = (course.feedback / "spark" / A / f"{A}.html").read_text()
    assert where in spark and "line 3: return query @ key.transpose(-2, -1) / dims[3]" in spark
    assert rows["achoi"]["status"] == "no notebook"
    assert "notes.txt (not a notebook)" in rows["achoi"]["reason"]
    assert (
        rows["absent"]["status"] == "no notebook"
        and "no notebook was handed in" in rows["absent"]["reason"]
    )
    # The class report, for the next lecture: who made which mistake, part by part, offline.
    report = (course.reports / f"{A}-class.html").read_text()
    assert "http://" not in report and "https://" not in report
    assert "<code>attention_scores</code>" in report and "data:image/png;base64," in report
    part_1 = report[report.index("<code>attention_scores</code>") :]
    part_1 = part_1[: part_1.index("<h3>", 1)]
    assert "2 of 4 graded notebooks passed every check of this part" in part_1, part_1
    assert "<summary>who</summary>spark</details>" in part_1, part_1  # its own line, not a stub
    assert "not attempted (the stub still raises NotImplementedError)" in part_1, part_1
    assert part_1.count("<summary>who</summary>oblank</details>") == 1, part_1
    feedback = (course.feedback / "mkim" / A / f"{A}.html").read_text()
    assert "graded by hand later (2 points)" in feedback and "Score: 0.0 / 2.0" not in feedback
    assert "cdnjs" not in feedback and "mjx-container" in feedback

    # Tuesday: the written answers are graded by hand; grading again keeps them.
    with Gradebook(f"sqlite:///{course.db_path}") as gb:
        for student, points in (("jdoe", 2.0), ("spark", 1.0)):
            grade = gb.find_grade("scaling_gradients_answer", A, A, student)
            grade.manual_score, grade.needs_manual_grade = points, False
        gb.db.commit()
    _run(course_root, "autograder.instructor", "feedback", A)
    rows = _agree(course)  # the CSV follows the hand grades at once
    assert float(rows["jdoe"]["score"]) == full + 2 and rows["jdoe"]["needs_manual_grade"] == ""
    page = (course.feedback / "jdoe" / A / f"{A}.html").read_text()
    assert "graded by hand later" not in page and "mjx-container" in page
    _grade(course_root)
    rows = _agree(course)
    assert float(rows["jdoe"]["score"]) == full + 2 and rows["jdoe"]["needs_manual_grade"] == ""
    assert "graded by hand later" not in (course.feedback / "jdoe" / A / f"{A}.html").read_text()

    # Wednesday: Jane Doe gets an extension and hands in again, late for everyone else, with her
    # written answer rewritten and a line the scanner flags; Min-ji Kim's extension comes after
    # her grade, which changes at once.
    out = _run(course_root, "autograder.instructor", "extend", A, "mkim", "2027-03-18 12:00")
    assert "late penalty now 0" in out.stdout, out.stdout
    rows = _agree(course)
    assert float(rows["mkim"]["late_penalty"]) == 0 and rows["mkim"]["late_by"] == ""
    assert rows["mkim"]["due"].startswith("2027-03-18T12:00")
    _run(course_root, "autograder.instructor", "extend", A, "jdoe", "2027-03-20 23:59")
    rewritten = filled_in(release, source)
    cell_by_id(rewritten, "scaling_gradients_answer").source = "I now think it is the other way."
    solution = cell_by_id(rewritten, "attention_scores_solution")
    solution.source = (
        "import torch.nn.functional as F_\nsdpa = F_.scaled_dot_product_attention\n"
        + (solution.source)
    )
    resubmitted = _zip(
        tmp_path / "jdoe-again.zip",
        {f"doejane_101_9101_{A}.ipynb": (nbformat.writes(rewritten).encode(), late)},
    )
    _run(course_root, "autograder.instructor", "collect", A, str(resubmitted))
    _grade(course_root, "--workers", "1", "--student", "jdoe")
    rows = _agree(course)
    assert rows["jdoe"]["late_by"] == "" and float(rows["jdoe"]["late_penalty"]) == 0
    assert rows["jdoe"]["due"].startswith("2027-03-20T23:59")
    assert rows["jdoe"]["needs_manual_grade"] == "scaling_gradients_answer"
    assert "changed since it was graded by hand (2 points)" in rows["jdoe"]["reason"]
    assert float(rows["jdoe"]["score"]) == full
    hand = next((course.grading / "superseded" / "jdoe" / A).glob("*-hand/grades.json"))
    assert json.loads(hand.read_text())["grades"]["scaling_gradients_answer"]["manual_score"] == 2
    assert (
        "forbidden_builtin: Uses torch.nn.functional.scaled_dot_product_attention"
        in (rows["jdoe"]["flags"])
    )

    # Seo Park hands in again, a file that cannot be read; the old grade stops standing.
    again = _zip(tmp_path / "again.zip", {f"parkseo_104_9104_{A}.ipynb": (b"{not json", late)})
    out = _run(course_root, "autograder.instructor", "collect", A, str(again)).stdout
    assert "replaced" in out
    assert list((course.grading / "superseded" / "spark" / A).iterdir())  # the first one is kept
    _grade(course_root, "--workers", "1", "--student", "spark")
    rows = _agree(course)
    assert rows["spark"]["status"] == "error" and float(rows["spark"]["score"]) == 0
    assert "no longer stands" in rows["spark"]["reason"]
    assert "spark" not in _gradebook(course)
    assert not (course.feedback / "spark" / A).exists()
    kept = json.loads(
        next((course.grading / "superseded" / "spark" / A).glob("*-grade/grades.json")).read_text()
    )
    assert kept["grades"]["scaling_gradients_answer"]["manual_score"] == 1.0

    # Thursday: a student leaves, another changes id; a full run reports a folder that vanished.
    _run(course_root, "autograder.instructor", "drop", "achoi")
    late_one = _zip(tmp_path / "achoi.zip", {f"choiara_105_9205_{A}.ipynb": (right, late)})
    out = _run(course_root, "autograder.instructor", "collect", A, str(late_one)).stdout
    assert "dropped" in out and not (course.submitted / "achoi").exists(), out
    _run(course_root, "autograder.instructor", "rename", "jdoe", "jane.doe")
    shutil.move(course.submitted / "mkim", tmp_path / "mkim-elsewhere")
    _grade(course_root)
    rows = _agree(course)
    assert "achoi" not in rows and "jdoe" not in rows
    assert float(rows["jane.doe"]["score"]) == full  # the rewritten answer waits for a hand
    assert rows["jane.doe"]["due"].startswith("2027-03-20T23:59")  # her extension moved with her
    assert rows["mkim"]["status"] == "folder gone" and "drop" in rows["mkim"]["reason"]
    assert (course.grading / "dropped" / "achoi").is_dir()

    # Friday: grades for Canvas, as its gradebook imports them.
    out = _run(
        course_root,
        "autograder.instructor",
        "export",
        A,
        "--lms",
        "canvas",
        "--column",
        "Chapter 4 (77)",
    ).stdout
    warned = {line.split()[1].rstrip(":") for line in out.splitlines() if "warning:" in line}
    # an error, no notebook, nothing answered, flagged or waiting for a hand: each is named
    assert {"jlee", "spark", "absent", "oblank", "jane.doe", "mkim"} <= warned, out
    assert "flagged for review" in out and "waiting for hand grading" in out
    _agree(course)
    with open(course.grading / "exports" / f"{A}-canvas.csv", newline="") as f:
        exported = list(csv.reader(f))
    assert exported[0] == [
        "Student",
        "ID",
        "SIS User ID",
        "SIS Login ID",
        "Section",
        "Chapter 4 (77)",
    ]
    assert exported[1][0] == "Points Possible" and float(exported[1][5]) == float(
        rows["mkim"]["max_score"]
    )
    by_id = {r[1]: r[5] for r in exported[2:]}
    assert by_id["101"] == by_id["102"] == ""  # waiting for a hand: the LMS keeps what it had
    assert float(by_id["103"]) == 0 and float(by_id["104"]) == 0 and float(by_id["106"]) == 0
    assert float(by_id["107"]) == 0

    # Another chapter, with nothing handed in, says so.
    out = _run(course_root, "autograder.engine.grade", OTHER, "--no-progress").stdout
    assert f"{OTHER}: 0 notebooks handed in" in out, out
    assert "105" not in by_id  # dropped

    # Nothing handed in was changed, and the grades never entered the working tree.
    assert {"download": _sha(download), "roster": _sha(roster)} == handed_in
    assert (tmp_path / "mkim-elsewhere" / A / f"{A}.ipynb").read_bytes() == right
    jane = course.submitted / "jane.doe" / A / f"{A}.ipynb"
    assert jane.read_bytes() == nbformat.writes(rewritten).encode()
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True
    )
    assert "grades.csv" not in status.stdout and "canvas.csv" not in status.stdout
