"""The course's grader: what each chapter grades, and the machinery that grades it.

- ``autograder.chapters.<slug>``: course content, one package per chapter (its declaration, the
  reference implementation, the checks its hidden tests call, and known-wrong implementations);
- ``autograder.toolkit``: what every chapter's checks share (the student's code as a Subject,
  stand-ins for earlier parts, comparisons, property checks);
- ``autograder.course``: the course on disk (paths, roster, late policy, what ``collect``
  recorded of each submission, the gradebook's scores), below the three packages that use it:
- ``autograder.reporting``: what grading says to people (the students' feedback pages, the
  instructor's reports and class report), from the gradebook; it never runs a notebook;
- ``autograder.engine``: grading machinery (the sandboxed runner, the judge, the batch command,
  the submission scanner). Its ``__init__`` describes the protocol.
- ``autograder.instructor``: the instructor's commands around the grader (collect, feedback,
  export, drop, rename). It may use the engine; the engine never uses it (tests/test_layers.py).
"""
