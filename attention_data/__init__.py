"""Data sets the book and its exercises generate for themselves: seeded, small, never downloaded.

- :mod:`attention_data.translation`: a toy translation task from an English-like subject–verb–object
  language into a Korean-like subject–object–verb language with particles. Chapters 1–3 train on it
  and compare their models on it; the capstone uses it again.

This package is public: it holds data, not answers. The grader never imports it.
"""
