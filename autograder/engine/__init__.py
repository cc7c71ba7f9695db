"""The grading engine (filled in below)."""
