"""The course's grader: what each chapter grades, and the machinery that grades it.

- ``autograder.chapters.<slug>``: course content, one package per chapter (its declaration, the
  reference implementation, the checks its hidden tests call, and known-wrong implementations);
- ``autograder.toolkit``: what every chapter's checks share (the student's code as a Subject,
  stand-ins for earlier parts, comparisons, property checks);
- ``autograder.engine``: grading machinery (the sandboxed runner, the judge, the batch command,
  the submission scanner). Its ``__init__`` describes the protocol.
"""
