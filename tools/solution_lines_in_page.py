"""Lines of a chapter's model answers that its book page repeats word for word.

    python tools/solution_lines_in_page.py ch02_bahdanau_attention

The page teaches the idea and the exercise asks the student to write it: a line of the solution
(inside ``### BEGIN SOLUTION`` / ``### END SOLUTION``, longer than 30 characters once whitespace
is normalised) must not appear on the page, unless the released exercise gives it to students
anyway. tests/test_book.py checks the same on the built book; this is the quick check while
writing a page. Exit status 1 when it finds any.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from autograder import chapters  # noqa: E402  (the tool runs as a script from tools/)


def _norm(text: str) -> str:
    return " ".join(text.split())


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def main(slug: str) -> int:
    lines = set()
    for cell in _cells(ROOT / "solutions" / slug / f"{slug}.ipynb"):
        for block in chapters.regions(_source(cell), chapters.SOLUTION):
            lines |= {_norm(x) for x in block.splitlines() if len(_norm(x)) > 30}
    given = _norm(
        "\n".join(_source(c) for c in _cells(ROOT / "exercises" / slug / f"{slug}.ipynb"))
    )
    page = _norm((ROOT / "book" / f"{slug}.md").read_text())
    found = sorted(x for x in lines if x in page and x not in given)
    for line in found:
        print(line)
    print(f"{len(found)} solution line(s) on book/{slug}.md", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
