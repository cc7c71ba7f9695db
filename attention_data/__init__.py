"""Data the book and its exercises generate or ship themselves: seeded, small, never downloaded.

- :mod:`attention_data.translation`: a toy translation task from an English-like subject–verb–object
  language into a Korean-like subject–object–verb language with particles. Chapters 1–3 train on it
  and compare their models on it; the capstone uses it again.
- :mod:`attention_data.corpus`: text the project ships for chapter 9's tokenizers: the book's own
  English prose and a Korean text written for the course.
- :mod:`attention_data.depth`: post-LN against pre-LN stacks of encoder layers trained at several
  depths and seeds, with and without warm-up; the script writes ``depth.json`` (results and
  provenance), which chapter 6 loads.
- :mod:`attention_data.models`: the translators chapters 1–3 and the capstone compare (chapter 1's
  encoder–decoder, Cho et al.'s baseline, Bahdanau's and Luong's attention models, the
  Transformer), written once, and :func:`~attention_data.models.score` on word lists.
- :mod:`attention_data.train` (``make checkpoints``): trains them to convergence, seeded; and
  :mod:`attention_data.checkpoints`: the small checkpoints it writes, their provenance, and
  ``load(name)`` for the pages.

This package is public: it holds data, models and checkpoints, not answers. The grader never
imports it.
"""
