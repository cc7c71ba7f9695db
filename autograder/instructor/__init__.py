"""The instructor's week around the grader: from an LMS download to grades the LMS can import.

    python -m autograder.instructor collect ch04_self_attention DOWNLOAD.zip [--roster roster.csv]
    make grade A=ch04_self_attention                 (or python -m autograder.engine.grade ...)
    python -m autograder.instructor handgrades ch04_self_attention MARKS.csv   (grading offline)
    python -m autograder.instructor feedback ch04_self_attention     (after hand grading)
    python -m autograder.instructor export ch04_self_attention --lms canvas
    python -m autograder.instructor extend ch04_self_attention STUDENT "2027-03-18 23:59"
    python -m autograder.instructor drop STUDENT | rename OLD NEW

(each is also a make target that needs no activated environment: see the Makefile's head).

- :mod:`.collect`: Canvas and Moodle "download all submissions" archives, or a folder of
  ``<student>.ipynb`` files, into ``<grading>/submitted/<student>/<assignment>/``;
- :mod:`.students`: dropping, renaming or extending one student everywhere at once;
- :mod:`.handgrades`: hand grades from a CSV (student, cell, score, comment) into the gradebook;
- :mod:`.export`: a CSV shaped for the LMS's gradebook import.

The roster, the late policy, the submission record and the gradebook's scores are the course
layer's (``autograder.course``), which the grader uses too.

Nothing here ever changes or deletes a student's submission: a replaced one is moved to
``<grading>/superseded/``, a dropped student's work to ``<grading>/dropped/``.
"""
