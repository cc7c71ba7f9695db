"""What grading says to people: the students' feedback pages and the instructor's reports.

- :mod:`.reports`: the row of one student (:class:`~.reports.StudentResult`), the CSV, the
  Markdown report and the rows kept as JSON, rewritten from the gradebook after every command
  that changes a grade;
- :mod:`.class_report`: the page of mistakes part by part, for the next lecture;
- :mod:`.feedback`: the students' offline HTML pages, which nbgrader's formgrader makes too
  (``nbgrader_config.py`` names its preprocessor and exporter).

Below the engine and the instructor's commands, which both call it, and above the course layer
alone: it never runs a notebook (tests/test_layers.py).
"""
