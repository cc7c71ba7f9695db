"""The course's autograder: reference implementations, checks and batch grading.

One module per chapter (``autograder.ch04_self_attention``) holds that chapter's reference
implementation and the check functions that the hidden tests of its nbgrader notebook call with
the student's callable. ``autograder.checking`` is the small framework the checks share,
``autograder.wrong`` is the bank of known-wrong implementations the tests prove the checks catch,
and ``autograder.grade`` is the instructors' batch-grading command.
"""
