"""Turn an LMS download (a Canvas or Moodle zip, read in memory and never changed, or a folder
of ``<student>.ipynb``) into ``<grading>/submitted/<student>/<assignment>/``: the notebook under
the released name and its record (:mod:`autograder.course.record`) with the upload time, the
archive entry's (in ``--archive-timezone``, by default the course's: a zip has no zone), and a
list of every download and roster student, ``<grading>/reports/<assignment>-collect.csv``.
book/instructor_guide.md, "2. Collect", says the rest.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import shutil
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from autograder.course import record
from autograder.course.roster import Roster, Student, safe_id

__all__ = ["Handed", "collect", "read_download"]

MAX_NOTEBOOK_BYTES = 100 * 2**20  # a notebook with every output is a few MB; a zip bomb is not
# How each LMS names an archive's entries: the student's name and LMS id, then the file.
CANVAS = re.compile(r"^(?P<name>[^_/]+)_(?:(?P<late>LATE)_)?(?P<id>\d+)_\d+_(?P<file>[^/]+)$")
MOODLE_FOLDER = re.compile(r"^(?P<name>[^/]+?)_(?P<id>\d+)_assignsubmission_file_?/(?P<file>.+)$")
MOODLE = re.compile(r"^(?P<name>[^/]+?)_(?P<id>\d+)_assignsubmission_file_?[/_]?(?P<file>[^/]*)$")
NAMING = {"canvas": (CANVAS,), "moodle": (MOODLE_FOLDER, MOODLE)}
NAMED_AS = {  # what an error says an entry should look like
    "canvas": "(<lastfirst>_<user id>_<submission id>_<file>); is this a Canvas archive?",
    "moodle": "(<Full Name>_<participant id>_assignsubmission_file_...)",
}
RESUBMITTED = re.compile(r"-\d+(?=\.ipynb$)")


@dataclass
class File:
    name: str  # the file name the student gave it (the LMS's prefix removed)
    data: bytes
    when: dt.datetime | None  # the upload time, if the download says


@dataclass
class Handed:
    """Everything one student handed in, as the LMS names them."""

    lms: str  # canvas | moodle | folder
    lms_id: str  # Canvas user id, Moodle participant id, or the folder's file stem
    names: tuple[str, ...]  # names to find them on a roster by
    files: list[File] = field(default_factory=list)
    late_by_lms: bool = False  # Canvas's LATE mark
    skipped: list[str] = field(default_factory=list)  # entries not taken, and why
    notes: list[str] = field(default_factory=list)  # what an instructor should know


def read_download(path: Path, lms: str | None = None, tz: dt.tzinfo = dt.UTC) -> list[Handed]:
    """What each student handed in, from a Canvas or Moodle zip or a folder of notebooks."""
    path = Path(path)
    if path.is_dir():
        if lms not in (None, "folder"):
            raise ValueError(f"{path} is a folder; --lms {lms} reads a zip archive")
        # no upload time: a file's modification time says when it was copied, not handed in
        students = [
            Handed("folder", nb.stem, (nb.stem,), [File(nb.name, nb.read_bytes(), None)])
            for nb in sorted(path.glob("*.ipynb"))
        ]
        if not students:
            raise ValueError(f"{path} holds no .ipynb file (expected <student>.ipynb files)")
        return students
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is neither a folder nor a zip archive")
    with zipfile.ZipFile(path) as archive:
        entries = [i for i in archive.infolist() if not i.is_dir() and not _junk(i.filename)]
        kind = lms or _guess([i.filename for i in entries], path)
        handed: dict[str, Handed] = {}
        for info in entries:
            if kind not in NAMING:
                raise ValueError(f"--lms must be canvas, moodle or folder, not {kind!r}")
            m = _match(kind, info.filename)
            if not m or not m["file"]:
                raise ValueError(
                    f"{path}: {info.filename!r} is not named as {kind.title()} names a download "
                    + NAMED_AS[kind]
                )
            h = handed.setdefault(m["id"], Handed(kind, m["id"], (m["name"],)))
            h.late_by_lms |= bool(m.groupdict().get("late"))
            file_name = PurePosixPath(m["file"]).name
            when = dt.datetime(*info.date_time, tzinfo=tz)
            if file_name.endswith(".zip") and info.file_size <= MAX_NOTEBOOK_BYTES:
                _read_inner_zip(h, file_name, archive.read(info), when)
            elif not file_name.endswith(".ipynb"):
                h.skipped.append(f"{file_name} (not a notebook)")
            elif info.file_size > MAX_NOTEBOOK_BYTES:
                h.skipped.append(f"{file_name} ({info.file_size} bytes: too large for a notebook)")
            else:
                h.files.append(File(file_name, archive.read(info), when))
    return sorted(handed.values(), key=lambda h: h.lms_id)


def _read_inner_zip(h: Handed, zip_name: str, data: bytes, when) -> None:
    """A student who zipped their folder: the notebooks inside, at any depth, are theirs."""
    try:
        inner = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        h.skipped.append(f"{zip_name} (not a readable zip archive)")
        return
    found = [i for i in inner.infolist() if i.filename.endswith(".ipynb") and not _junk(i.filename)]
    if not found:
        h.skipped.append(f"{zip_name} (a zip archive without a notebook)")
    for info in found:
        if info.file_size > MAX_NOTEBOOK_BYTES:
            h.skipped.append(f"{info.filename} in {zip_name} (too large for a notebook)")
            continue
        name = PurePosixPath(info.filename).name
        h.files.append(File(name, inner.read(info), when))
        h.notes.append(f"{name} was inside {zip_name} (as {info.filename})")


def _junk(name: str) -> bool:
    # .ipynb_checkpoints too
    return any(p.startswith(".") or p == "__MACOSX" for p in PurePosixPath(name).parts)


def _match(kind: str, name: str) -> re.Match | None:
    return next(filter(None, (p.match(name) for p in NAMING[kind])), None)


def _guess(names: list[str], path: Path) -> str:
    for kind in ("moodle", "canvas"):
        if names and all(_match(kind, n) for n in names):
            return kind
    raise ValueError(
        f"{path}: cannot tell which LMS made this archive from its file names (first: "
        f"{names[0] if names else 'none'!r}); pass --lms canvas or --lms moodle"
    )


@dataclass
class Row:
    student_id: str
    lms: str = ""
    lms_id: str = ""
    handed_in: str = ""
    collected_as: str = ""
    submitted_at: str = ""
    status: str = ""
    note: str = ""


def collect(
    course,
    assignment: str,
    download: Path,
    *,
    roster_csv: str | None = None,
    lms: str | None = None,
    tz: dt.tzinfo | None = None,
) -> list[Row]:
    """Collect `download` into `course` (an :class:`autograder.course.Course`) for
    `assignment`; return one row per download and per roster student."""
    released = sorted(p.name for p in (course.release / assignment).glob("*.ipynb"))
    if not released:
        raise ValueError(
            f"no released notebook in {course.release / assignment}: is {assignment!r} the "
            "assignment's slug, and has `make exercises` run?"
        )
    tz = tz or course.policy().timezone
    roster = course.roster()
    if roster_csv:
        for student in Roster.load(Path(roster_csv)).students.values():
            roster.add(student)
    handed = read_download(Path(download), lms, tz)
    rows: list[Row] = []
    taken: set[str] = set()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    for h in handed:
        student, note = _who(roster, h, taken)
        taken.add(student.student_id)
        row = Row(student.student_id, h.lms, h.lms_id, " | ".join(f.name for f in h.files))
        rows.append(row)
        if student.dropped:  # what a dropped student hands in stays in the download only
            row.status, row.note = "dropped", f"dropped ({student.dropped}): not collected"
            continue
        notes = ([note] if note else []) + h.notes
        if h.skipped:
            notes.append("not taken: " + ", ".join(h.skipped))
        if h.late_by_lms:
            notes.append(f"{h.lms} marked it late")
        files = _choose(h.files, released)
        if not files:
            row.status, row.note = "no notebook", "; ".join(notes + ["no notebook was handed in"])
            continue
        older = [f for f in h.files if not any(f is c for c in files.values())]
        if older:
            kept = _keep_older(course, student.student_id, assignment, older)
            notes.append(
                f"{len(older) + len(files)} notebooks handed in; "
                f"{', '.join(f.name for f in older)} not collected (kept in {kept}/)"
            )
        if renamed := [f"{f.name} as {name}" for name, f in files.items() if f.name != name]:
            only = "the latest notebook" if older else "the only notebook handed in"
            notes.append("collected " + ", ".join(renamed) + f" ({only})")
        row.collected_as = " | ".join(files)
        when = max((f.when for f in files.values() if f.when), default=None)
        row.submitted_at = when.isoformat() if when else ""
        rec = record.Record(
            handed_in={name: f.name for name, f in files.items()},
            submitted_at=row.submitted_at,
            lms=h.lms,
            lms_id=h.lms_id,
            late_by_lms=h.late_by_lms,
            download=str(Path(download).resolve()),
        )
        row.status = _place(course, student.student_id, assignment, files, rec, stamp)
        if row.status == "replaced":
            notes.append(f"the earlier collection is kept in superseded/{student.student_id}/")
        row.note = "; ".join(notes)
    for sid in (s for s in roster if s not in taken):
        kept = (course.submitted / sid / assignment).is_dir()
        note = "not in this download; the earlier collection stays" if kept else ""
        rows.append(Row(sid, status="kept" if kept else "nothing handed in", note=note))
    roster.save()
    _write_rows(course, assignment, rows)
    return rows


def _who(roster: Roster, h: Handed, taken: set[str]) -> tuple[Student, str]:
    """The roster student who handed `h` in, adding one made from the LMS's name if none."""
    found = roster.find(lms=h.lms, lms_id=h.lms_id, names=h.names)
    if found is None and h.lms == "folder" and h.lms_id in roster:
        found = roster.students[h.lms_id]
    # the LMS id goes on the roster (add fills in only what is empty), for export
    ids = {f"{h.lms}_id": h.lms_id} if h.lms in ("canvas", "moodle") else {}
    if found is not None and found.student_id not in taken:
        return roster.add(Student(found.student_id, **ids)), ""
    base = safe_id(h.names[0] if h.names else h.lms_id)
    sid = f"{base}-{h.lms_id}" if base in roster or base in taken else base
    note = "not on the roster: added as " + sid if roster.students else ""
    new = Student(sid, name=h.names[0] if h.lms == "moodle" else "", **ids)
    roster.add(new)
    return new, note


def _choose(files: list[File], released: list[str]) -> dict[str, File]:
    """{name to collect it under: file}: the released names where the student used them (a
    Canvas resubmission's -1 ignored); a single notebook under any name when one is released;
    otherwise every notebook under its own name (the grader then says which is missing)."""
    by_name = {}
    for f in sorted(files, key=lambda f: f.when or dt.datetime.min.replace(tzinfo=dt.UTC)):
        by_name[RESUBMITTED.sub("", f.name)] = f  # the latest of a name wins
    if any(name in by_name for name in released):
        return {name: by_name[name] for name in released if name in by_name}
    if len(by_name) == 1 and len(released) == 1:
        return {released[0]: next(iter(by_name.values()))}
    return {safe_file(name): f for name, f in by_name.items()}


def _keep_older(course, student: str, assignment: str, files: list[File]) -> str:
    """Notebooks handed in beside the one collected, into superseded/; the folder."""
    where = course.superseded(student, assignment, "older")
    for i, f in enumerate(files, start=1):
        (where / f"{i}-{safe_file(f.name)}").write_bytes(f.data)
    return str(where.relative_to(course.grading))


def safe_file(name: str) -> str:
    stem = re.sub(r"[^\w.() -]+", "_", name.removesuffix(".ipynb")).strip(" .") or "notebook"
    return stem + ".ipynb"


def _place(course, student: str, assignment: str, files: dict[str, File], rec, stamp) -> str:
    """Write the student's folder; an earlier, different one is moved to superseded/ first."""
    folder = course.submitted / student / assignment
    new = {name: f.data for name, f in files.items()}
    status = "collected"
    if folder.is_dir():
        if {p.name: p.read_bytes() for p in folder.glob("*.ipynb")} == new:
            return "unchanged"
        target = course.grading / "superseded" / student / assignment / stamp
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(folder), str(target))
        status = "replaced"
    folder.mkdir(parents=True)
    for name, data in new.items():
        (folder / name).write_bytes(data)
    record.write(folder, rec)
    return status


def _write_rows(course, assignment: str, rows: list[Row]) -> None:
    course.reports.mkdir(parents=True, exist_ok=True)
    path = course.reports / record.COLLECT_TABLE.format(assignment=assignment)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(Row.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(r) for r in sorted(rows, key=lambda r: r.student_id))
