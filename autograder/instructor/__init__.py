"""The instructor's week around the grader: from an LMS download to grades the LMS can import
(``python -m autograder.instructor --help``, or the Makefile's targets; the instructor guide
walks the week).

- :mod:`.collect`: an LMS's download into ``<grading>/submitted/<student>/<assignment>/``;
- :mod:`.students`: dropping, renaming or extending one student everywhere at once;
- :mod:`.handgrades`: hand grades from a CSV (student, cell, score, comment) into the gradebook;
- :mod:`.export`: a CSV shaped for the LMS's gradebook import.

The roster, the late policy, the submission record and the gradebook's scores are the course
layer's (``autograder.course``), which the grader uses too.

Nothing here ever changes or deletes a student's submission: a replaced one is moved to
``<grading>/superseded/``, a dropped student's work to ``<grading>/dropped/``.
"""
