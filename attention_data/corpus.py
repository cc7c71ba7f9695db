"""Two small text corpora that the course ships, for the tokenizer chapter (chapter 9).

- ``en.txt``: the English prose of the book's own pages (chapters 1–6, the introduction and the
  notation page), one paragraph per line. Made by :func:`build_english` from ``book/*.md``:
  front matter, code cells, fenced blocks, display math, tables, labels and directives are
  dropped; MyST roles keep their text (``{term}`heads <Head>``` becomes ``heads``), links keep
  their text, and a paragraph's wrapped lines are joined. Regenerate it, from the repository
  root, with ``python -m attention_data.corpus``.
- ``ko.txt``: a Korean text written for this project (an overview of the course's topics in
  Korean, and the glossary's Korean terms), one paragraph per line. Nothing in it is copied.

:func:`load` reads one of them; :func:`sample` draws paragraphs from one with a seeded generator
until a given size, for benchmarks that need more text than the corpus has (the paragraphs
repeat, so the distinct words are the corpus's own).

Both files are package data: they load the same from a checkout, an editable install or a wheel.
This package is public: it holds data, not answers. The grader never imports it.

Example::

    >>> text = load("en")
    >>> len(text.encode("utf-8")) > 50_000
    True
"""

from __future__ import annotations

import random
import re
from importlib import resources
from pathlib import Path

__all__ = ["LANGUAGES", "load", "paragraphs", "sample", "build_english"]

LANGUAGES = ("en", "ko")

# The pages en.txt is made of, in book order.
ENGLISH_PAGES = (
    "intro",
    "notation",
    "ch01_seq2seq_bottleneck",
    "ch02_bahdanau_attention",
    "ch03_luong_attention",
    "ch04_self_attention",
    "ch05_multi_head_attention",
    "ch06_add_and_norm",
)


def load(lang: str) -> str:
    """The corpus in language `lang` ("en" or "ko"): paragraphs separated by newlines."""
    if lang not in LANGUAGES:
        raise ValueError(f"no corpus {lang!r}; there are {', '.join(LANGUAGES)}")
    return resources.files(__package__).joinpath("corpus", f"{lang}.txt").read_text("utf-8")


def paragraphs(lang: str) -> list[str]:
    """The corpus's paragraphs, without their newlines."""
    return [p for p in load(lang).split("\n") if p.strip()]


def sample(n_bytes: int, seed: int = 0, lang: str = "en") -> str:
    """At least `n_bytes` bytes of UTF-8: paragraphs of the corpus drawn uniformly with
    replacement by random.Random(seed), one per line, cut at the first line that reaches the
    size (so a little over `n_bytes`)."""
    rng = random.Random(seed)
    pool = paragraphs(lang)
    lines, size = [], 0
    while size < n_bytes:
        line = rng.choice(pool)
        lines.append(line)
        size += len(line.encode("utf-8")) + 1
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# How en.txt is made
# --------------------------------------------------------------------------------------------

_ROLE = re.compile(r"\{(?:term|doc|ref)\}`([^`<]*?)\s*(?:<[^>]*>)?`")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")


def _prose(markdown: str) -> list[str]:
    """The paragraphs of prose of a MyST page, as plain text."""
    text = re.sub(r"\A---\n.*?\n---\n", "", markdown, flags=re.S)  # front matter
    text = re.sub(r"^(```|~~~).*?^\1\s*$", "", text, flags=re.S | re.M)  # code and directives
    text = re.sub(r"^\$\$.*?^.*?\$\$\s*$", "", text, flags=re.S | re.M)  # display math
    text = re.sub(r"^:::.*$", "", text, flags=re.M)  # admonition fences (their text stays)
    text = re.sub(r"^\(.*\)=\s*$", "", text, flags=re.M)  # labels
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
        if not lines or lines[0].startswith("|"):  # tables
            continue
        para = " ".join(ln.lstrip("#").strip() for ln in lines)
        para = _ROLE.sub(lambda m: m.group(1), para)
        para = _LINK.sub(lambda m: m.group(1), para)
        para = re.sub(r"\*\*?([^*]+)\*\*?", r"\1", para)  # emphasis
        para = re.sub(r"\s+", " ", para).strip()
        if len(para) > 1:
            out.append(para)
    return out


def build_english(book: Path) -> str:
    """en.txt's text from the pages named in ENGLISH_PAGES under `book`."""
    paras = []
    for name in ENGLISH_PAGES:
        paras += _prose((book / f"{name}.md").read_text("utf-8"))
    return "\n".join(paras) + "\n"


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    target = Path(__file__).with_name("corpus") / "en.txt"
    target.write_text(build_english(root / "book"), "utf-8")
    print(f"wrote {target} ({target.stat().st_size:,} bytes)")
