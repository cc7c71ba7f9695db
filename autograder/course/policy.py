"""Due dates and the late policy, read from the one place they are set, ``c.AttentionCourse`` in
``nbgrader_config.py`` (``timezone``, ``due_dates``, ``late_policy``; the instructor guide says
what they mean), and the students' extensions, ``<grading>/extensions.csv``.

A submission's time is its record's (:mod:`.record`). The penalty is a share of the assignment's
maximum, so that it does not move when a written answer is graded by hand later.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Lateness", "Policy", "extend", "parse_time"]

DEFAULT_LATE_POLICY = {"grace_minutes": 0.0, "per_day": 0.0, "max_days": None}


@dataclass(frozen=True)
class Lateness:
    submitted: dt.datetime | None
    due: dt.datetime | None
    late_by: dt.timedelta  # zero when on time, when there is no due date or no time
    penalty: float  # points taken off

    @property
    def late(self) -> bool:
        return self.late_by > dt.timedelta(0)

    def describe(self) -> str:
        if self.due is not None and self.submitted is None:
            return "no submission time (timestamp.txt) to compare with the due date"
        return f"late by {_duration(self.late_by)}; penalty {self.penalty:g}" if self.late else ""


@dataclass(frozen=True)
class Policy:
    timezone: dt.tzinfo = dt.UTC
    due_dates: dict[str, dt.datetime] = field(default_factory=dict)
    grace: dt.timedelta = dt.timedelta(0)
    per_day: float = 0.0
    max_days: float | None = None
    # (assignment, student) -> that student's own due date (<grading>/extensions.csv)
    extensions: dict[tuple[str, str], dt.datetime] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config) -> Policy:
        """The policy of an nbgrader config object (``c.AttentionCourse``); a clear error for a
        setting that cannot be understood."""
        section = config.get("AttentionCourse", {}) if hasattr(config, "get") else {}
        name = section.get("timezone", "UTC")
        try:
            tz = ZoneInfo(str(name))
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"c.AttentionCourse.timezone = {name!r} is not a time zone; use a name such as "
                "'Asia/Seoul' or 'UTC'"
            ) from None
        due = {}
        for assignment, text in dict(section.get("due_dates", {})).items():
            try:
                due[assignment] = parse_time(str(text), tz)
            except ValueError:
                raise ValueError(
                    f"c.AttentionCourse.due_dates[{assignment!r}] = {text!r} is not a date and "
                    "time; write it as '2027-03-15 23:59' (in the course's time zone) or with an "
                    "offset, '2027-03-15T23:59+09:00'"
                ) from None
        late = {**DEFAULT_LATE_POLICY, **dict(section.get("late_policy", {}))}
        if unknown := set(late) - set(DEFAULT_LATE_POLICY):
            raise ValueError(
                f"c.AttentionCourse.late_policy has unknown keys {sorted(unknown)}; it takes "
                f"{sorted(DEFAULT_LATE_POLICY)}"
            )
        try:
            grace = dt.timedelta(minutes=float(late["grace_minutes"]))
            per_day = float(late["per_day"])
            max_days = None if late["max_days"] is None else float(late["max_days"])
        except (TypeError, ValueError):
            raise ValueError(
                f"c.AttentionCourse.late_policy = {late!r}: grace_minutes and per_day must be "
                "numbers, max_days a number or None"
            ) from None
        negative = grace < dt.timedelta(0) or (max_days is not None and max_days < 0)
        if not 0 <= per_day <= 1 or negative:
            raise ValueError(
                "c.AttentionCourse.late_policy: per_day is a share of the maximum between 0 and "
                "1; grace_minutes and max_days cannot be negative"
            )
        return cls(tz, due, grace, per_day, max_days)

    def due(self, assignment: str, student: str | None = None) -> dt.datetime | None:
        """The due date of `assignment`, for `student` if they have an extension."""
        return self.extensions.get((assignment, student)) or self.due_dates.get(assignment)

    def with_extensions(self, path: Path) -> Policy:
        """This policy and the extensions in `path` (student_id,assignment,due), if it exists."""
        extensions = {}
        for line, row in enumerate(_read_extensions(path), start=2):
            try:
                due = parse_time(row["due"], self.timezone)
            except ValueError:
                raise ValueError(
                    f"{path}, line {line}: due {row['due']!r} is not a date and time; write "
                    "it as '2027-03-18 23:59' (in the course's time zone)"
                ) from None
            extensions[(row["assignment"], row["student_id"])] = due
        return replace(self, extensions=extensions)

    def lateness(
        self,
        assignment: str,
        submitted: dt.datetime | None,
        max_score: float,
        student: str | None = None,
    ) -> Lateness:
        due = self.due(assignment, student)
        if due is None or submitted is None:
            return Lateness(submitted, due, dt.timedelta(0), 0.0)
        if submitted.tzinfo is None:
            submitted = submitted.replace(tzinfo=self.timezone)
        late_by = submitted - due
        if late_by <= self.grace:
            return Lateness(submitted, due, dt.timedelta(0), 0.0)
        days = late_by / dt.timedelta(days=1)
        past_max = self.max_days is not None and days > self.max_days
        share = 1.0 if past_max else min(1.0, self.per_day * math.ceil(days))
        return Lateness(submitted, due, late_by, round(share * max_score, 6))


def parse_time(text: str, tz: dt.tzinfo = dt.UTC) -> dt.datetime:
    """A date and time, in `tz` when it names no zone: ISO 8601, or what nbgrader writes in
    timestamp.txt ('2027-03-15 23:59:00.123456 UTC'). ValueError when it is neither."""
    text = text.strip()
    for suffix, zone in ((" UTC", dt.UTC), ("Z", dt.UTC)):
        if text.endswith(suffix):
            return dt.datetime.fromisoformat(text.removesuffix(suffix)).replace(tzinfo=zone)
    when = dt.datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=tz)


def _duration(delta: dt.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [f"{n} {unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "min")) if n]
    return " ".join(parts) or "under a minute"


EXTENSION_COLUMNS = ["student_id", "assignment", "due"]


def _read_extensions(path: Path) -> list[dict[str, str]]:
    if not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != EXTENSION_COLUMNS:
            raise ValueError(f"{path}: the first row must be {','.join(EXTENSION_COLUMNS)}")
        return [{k: (v or "").strip() for k, v in row.items()} for row in reader]


def extend(path: Path, assignment: str, student: str, due: str, tz: dt.tzinfo):
    """Give `student` until `due` for `assignment` in `path` (replacing an earlier extension);
    "" takes the extension back. The new due date, or None."""
    try:
        when = parse_time(due, tz) if due else None
    except ValueError:
        raise ValueError(f"{due!r} is not a date and time; write '2027-03-18 23:59'") from None
    rows = [
        r
        for r in _read_extensions(path)
        if (r["assignment"], r["student_id"]) != (assignment, student)
    ]
    if when is not None:
        rows.append({"student_id": student, "assignment": assignment, "due": when.isoformat()})
    _write_extensions(path, rows)
    return when


def rename_student(path: Path, old: str, new: str) -> None:
    """`old`'s extensions become `new`'s."""
    rows = _read_extensions(path)
    if any(r["student_id"] == old for r in rows):
        _write_extensions(
            path, [{**r, "student_id": new} if r["student_id"] == old else r for r in rows]
        )


def _write_extensions(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, EXTENSION_COLUMNS)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: (r["assignment"], r["student_id"])))
