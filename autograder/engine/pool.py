"""Where submissions are graded: local worker processes, or a Dask cluster (``--scheduler``).

Each :class:`~autograder.engine.submission.Job` is self-contained, so :func:`run` only hands
them out and yields the results as they finish; a worker that dies still gives its student a row.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed

from autograder.engine.submission import Job, StudentResult, grade_submission

__all__ = ["progress", "run"]


def run(jobs: list[Job], workers: int | None, scheduler):
    """Yield a StudentResult for every job, locally or on a Dask cluster, as they finish."""
    if not jobs:
        return
    if scheduler is not None:
        from distributed import Client
        from distributed import as_completed as dask_completed

        client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
        try:
            futures = client.map(grade_submission, jobs, pure=False)
            for future in dask_completed(futures):
                yield _collect(future.result, future.key, jobs)
        finally:
            if client is not scheduler:
                client.close()
        return
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(grade_submission, job): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            yield _collect(future.result, job.student, jobs)


def _collect(get, key, jobs) -> StudentResult:
    try:
        return get()
    except Exception as exc:  # the worker itself died
        student = key if any(j.student == key for j in jobs) else str(key)
        return StudentResult(
            student=student,
            status="error",
            reason=f"the grading worker died: {exc!r}",
            grader_fault=True,
        )


def progress(total: int, assignment: str, enabled: bool):
    from tqdm import tqdm

    desc = f"grading {assignment}"
    return tqdm(total=total, desc=desc, unit="notebook", file=sys.stderr, disable=not enabled)
