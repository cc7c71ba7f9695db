"""The grading engine: one sandboxed run per submission, verdicts computed outside it.

How it fits together; ``protocol.py`` holds the messages themselves, in code.

Who runs where
    The **parent** (``batch.py``, run by the command ``grade.py``) reads the submissions, never
    writes them, and alone writes the gradebook (``gradebook.py``), the autograded notebooks, the
    feedback and the reports (``autograder.reporting``). It hands each submission to a
    **worker** (``pool.py``) as a self-contained ``Job`` (``submission.py``: the notebook's bytes,
    the release, the points): a local process, or a Dask worker (``--scheduler``).

    In the worker, the **judge** (``judge.py``) runs the chapter's checks. It never runs or
    imports anything of a student's, and builds nothing but plain data and tensors from what the
    sandbox sends. The student's code runs in the **runner**
    (``runner.py``) inside the **sandbox** (``sandbox.py``: bubblewrap; the Python installation
    read-only, the runner script, one empty writable folder; no course, no package, no other
    submission, no gradebook, no network, its own PID namespace).

    Each worker keeps one sandbox, a **fork server**: the runner imports torch once, then forks a
    fresh process for each student. Between two students it kills whatever the first left
    running, empties the writable folders and drains the pipes; it is not dumpable, so a student's
    process cannot reach its control pipe.

One submission
    1. The parent builds the plan of the notebook (``submission._plan``): the student's cells in
       order, locked cells as released (put back if deleted); grade cells of tests, cells tagged
       ``visible-tests`` and unchanged illustration cells are not run.
    2. The judge asks the fork server for a fresh process (``fork``) and sends it ``{"op": "run",
       "cells", "seconds"}``; the runner runs each cell in an IPython shell under a time limit,
       sending ``{"event": "cell"}`` before and ``{"event": "cell_done", "outputs"}`` after it,
       then ``{"event": "ready", "names"}``. A cell that ends the process is skipped and the
       notebook runs again without it.
    3. For each part the judge runs its check with a ``RemoteSubject``. Each call the check makes
       is a request, ``{"op": "call" | "get" | "describe" | "load_state" | "to", "target",
       ...}``, answered ``{"ok": True, "value"}`` or ``{"ok": False, "error": {"type",
       "message"}}``. A call may ask for gradients (``"grad"``): they come back as data. While a
       check runs, an earlier part it goes through that fails its own check (or is missing) is
       replaced in the student's namespace by a function that asks the judge (``{"event":
       "stand_in"}``), which answers with the reference (and, for the backward pass, its
       vector-Jacobian product); an earlier part that passes its own check is used as written.
       So one mistake costs one part, and the reference never enters the sandbox.
    4. The judge sends ``exit``; the fork server answers ``ended`` once the process is gone and
       the sandbox is clean. The verdicts become the grade cells' scores and outputs; the parent
       merges them.

The wire
    ``protocol.py``, imported by both sides, holds it in code and lists every message: the names
    (``Op``, ``Event``), the frame codec (plain data only), the tagged values and the devices.

Time
    A cell, and a part's check, run under a limit the runner enforces itself (an alarm); if the
    student's code does not stop, the judge kills the fork server a few seconds later and the
    next part or student gets a new one.
"""
