"""The book: it builds with warnings as errors, works offline, and publishes no solutions.

The book is built once for this file, into pytest's temporary folder, with the command that
`make book` runs (about a minute: the chapter pages are executed). The tests then read the HTML:

- every page of _toc.yml is built; chapter pages are executed, exercise pages are shown as released,
  never run, with a download button and launch links (Colab, Binder, JupyterHub);
- no page loads anything from another site: MathJax and the widgets' JavaScript are the copies that
  book/vendor/copy.sh puts in book/_vendor (`make vendor`); the few CDN addresses written inside
  those libraries are listed below, each with the reason the book never reaches it, and a test
  checks each reason;
- nothing from solutions/ (solutions, model answers, hidden tests) or autograder/ is published.

Not here: whether the pages look right in a browser, which needs a browser to check.
"""

from __future__ import annotations

import fnmatch
import functools
import html
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
import yaml
from bs4 import BeautifulSoup

from autograder import chapters

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("book")]

BUILD_TIMEOUT_S = 1800

# Pages that must be in the book today. Later chapters are found from _toc.yml.
EXPECTED_PAGES = {
    "book/intro",
    "book/notation",
    "book/ch04_self_attention",
    "exercises/ch04_self_attention/ch04_self_attention",
    "book/instructor_guide",
}

# Where copy.sh puts each vendored library, inside book/_vendor and so inside _static/.
MATHJAX = "_static/mathjax/tex-mml-chtml.js"
REQUIREJS = "_static/requirejs/require.js"
EMBED_AMD = "_static/html-manager/embed-amd.js"

# The widget modules that embed-amd.js carries in its own bundle. A widget from any other module
# would be fetched from html-manager's CDN; the book must use none.
BUNDLED_WIDGET_MODULES = {
    "@jupyter-widgets/base",
    "@jupyter-widgets/controls",
    "@jupyter-widgets/output",
}

# Hosts that serve code or fonts to web pages. Any address on one of them, anywhere in the built
# site's JavaScript, must be one of KNOWN_UNREACHED below.
CDN_HOSTS = (
    "cdn.jsdelivr.net",
    "unpkg.com",
    "cdnjs.cloudflare.com",
    "ajax.googleapis.com",
    "fonts.googleapis.com",
    "fonts.gstatic.com",
    "code.jquery.com",
    "cdn.mathjax.org",
    "raw.githubusercontent.com",
    "use.fontawesome.com",
    "kit.fontawesome.com",
    "stackpath.bootstrapcdn.com",
    "maxcdn.bootstrapcdn.com",
    "cdn.plot.ly",
    "www.googletagmanager.com",
    "plausible.io",
    "polyfill.io",
)

# CDN addresses that the site's JavaScript contains but never loads: the exact address, where it
# may appear (a glob over the site's files, or "<inline>" for a page's inline scripts), and why it
# is never reached. Each "why" is checked by a test below. A new address, or a known one in a new
# place (after a version bump, say), fails test_javascript_reaches_no_cdn or
# test_inline_scripts_name_no_other_site.
KNOWN_UNREACHED = {
    "https://cdn.jsdelivr.net/npm/speech-rule-engine@": (
        "_static/mathjax/*",
        "the speech rule engine's default folder for its rule files; MathJax replaces it with "
        "[mathjax]/sre/mathmaps, which copy.sh vendors (test_mathjax_loads_its_parts_locally)",
    ),
    "https://cdn.jsdelivr.net/npm/sre-mathmaps-ie@": (
        "_static/mathjax/*",
        "the speech rule engine's rule files for Internet Explorer, which MathJax 3 never asks "
        "for in a current browser",
    ),
    "https://cdn.jsdelivr.net/npm/wicked-good-xpath@1.3.0/dist/wgxpath.install.js": (
        "_static/mathjax/*",
        "an XPath polyfill, loaded only where the browser has no document.evaluate (IE11)",
    ),
    "https://cdn.jsdelivr.net/npm/": (
        EMBED_AMD,
        "html-manager's fallback for widget modules it does not bundle; the book's widgets all "
        "come from bundled modules (test_widgets_are_local)",
    ),
    "https://fonts.googleapis.com/css?family=Roboto+Mono": (
        EMBED_AMD,
        "inside a commented-out @import of ipywidgets' CSS (test_commented_out_font_import)",
    ),
    "https://raw.githubusercontent.com/ajv-validator/ajv/master/lib/refs/data.json#": (
        EMBED_AMD,
        "the $id of a JSON schema that ajv carries in its bundle; ajv resolves $ref to it from "
        "that copy and fetches nothing",
    ),
    "https://unpkg.com/thebe@0.8.2/lib/index.js": (
        "<inline>",
        "sphinx-thebe loads thebe from here only when a reader clicks the 'Live code' launch "
        "button, which the book does not show (launch_buttons.thebe is false; "
        "test_no_live_code_button)",
    ),
}


def _known_unreached(url: str, where: str) -> bool:
    place, _why = KNOWN_UNREACHED.get(url, ("", ""))
    return bool(place) and fnmatch.fnmatchcase(where, place)


# Things a browser fetches by itself when it renders a page (links and navigation do not count).
FETCHED = {
    "script": ("src",),
    "img": ("src", "srcset"),
    "iframe": ("src",),
    "frame": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "source": ("src", "srcset"),
    "video": ("src", "poster"),
    "audio": ("src",),
    "track": ("src",),
    "input": ("src",),
}
FETCHED_LINK_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon", "manifest"}

# An address with a scheme anywhere, or a protocol-relative one ("//host/...") right after a quote.
URL_RE = re.compile(r"""(?:https?:|(?<=["'`(]))//[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+[^\s"'`)<>\\]*""")


# Files of the built site that hold no text.
BINARY_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".ico", ".woff", ".woff2", ".ttf"}
BINARY_SUFFIXES |= {".eot", ".inv"}


@dataclass(frozen=True)
class Book:
    html: Path  # _build/html
    executed: Path  # _build/jupyter_execute: the notebooks as myst-nb executed them
    log: str  # the build's output, colours removed


def _toc_files(repo_root: Path) -> list[str]:
    """Every page of _toc.yml, root first, in order."""
    toc = yaml.safe_load((repo_root / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return [str(Path(f).with_suffix("")) for f in files]


def _jupyter_book() -> str:
    # The one next to this Python first, so that a venv's interpreter builds with its own book.
    exe = Path(sys.executable).with_name("jupyter-book")
    if exe.is_file():
        return str(exe)
    found = shutil.which("jupyter-book")
    if not found:
        pytest.fail("jupyter-book is not installed in this environment: run `make install`")
    return found


# Session scope: under xdist a worker can run another file's tests between two of this file's,
# and pytest would tear a module fixture down and build it again (see tests/conftest.py).
@pytest.fixture(scope="session")
def book(tmp_path_factory, repo_root) -> Book:
    vendor = repo_root / "book" / "_vendor"
    needed = [
        vendor / "mathjax" / "tex-mml-chtml.js",
        vendor / "requirejs" / "require.js",
        vendor / "html-manager" / "embed-amd.js",
    ]
    if not all(p.is_file() for p in needed):
        pytest.fail(
            "\n\n    book/_vendor is missing or incomplete: run `make vendor` first.\n\n"
            "    It copies MathJax and the widgets' JavaScript from npm into the book, so that\n"
            "    the book works offline (see book/vendor/copy.sh). `make test` runs it for you.\n",
            pytrace=False,
        )
    out = tmp_path_factory.mktemp("book")
    env = dict(os.environ)
    # The kernel that executes the pages must be this environment's Python.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [
        _jupyter_book(),
        "build",
        str(repo_root),
        "--path-output",
        str(out),
        "--warningiserror",
        "--keep-going",
        "--builder",
        "html",
    ]
    proc = subprocess.run(
        cmd,
        cwd=repo_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    log = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)
    (out / "build.log").write_text(log, encoding="utf-8")
    if proc.returncode != 0:
        tail = "\n".join(log.splitlines()[-80:])
        pytest.fail(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}); the end of its log:\n"
            f"{tail}\n(whole log: {out / 'build.log'})",
            pytrace=False,
        )
    return Book(out / "_build" / "html", out / "_build" / "jupyter_execute", log)


@pytest.fixture(scope="module")
def toc_pages(repo_root) -> list[str]:
    return _toc_files(repo_root)


@pytest.fixture(scope="module")
def chapter_pages(toc_pages) -> list[str]:
    pages = [p for p in toc_pages if re.fullmatch(r"book/ch\d\d_\w+", p)]
    assert pages, "_toc.yml lists no chapter page (book/chNN_<slug>)"
    return pages


@pytest.fixture(scope="module")
def exercise_pages(toc_pages) -> list[str]:
    pages = [p for p in toc_pages if p.startswith("exercises/")]
    assert pages, "_toc.yml lists no exercise page (exercises/<slug>/<notebook>)"
    return pages


@functools.cache
def _soup(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def _html_files(book: Book) -> list[Path]:
    """The pages of the built site."""
    # _static holds the themes' Jinja macro files (*.html), which are not pages.
    files = sorted(
        p for p in book.html.rglob("*.html") if "_static" not in p.relative_to(book.html).parts
    )
    assert len(files) >= len(EXPECTED_PAGES), f"only {len(files)} HTML files in {book.html}"
    return files


def _is_remote(url: str) -> bool:
    parts = urlsplit(url.strip())
    if parts.scheme == "data":
        return False
    return bool(parts.scheme or parts.netloc or url.strip().startswith("//"))


def _local_target(page: Path, url: str) -> Path:
    """The file a page-relative URL points at (query and fragment dropped)."""
    path = unquote(urlsplit(url).path)
    return (page.parent / path).resolve() if path else page


def _fetched_urls(soup: BeautifulSoup) -> list[tuple[str, str]]:
    """(what, url) for everything the browser fetches when it renders the page."""
    found = []
    for tag_name, attrs in FETCHED.items():
        for tag in soup.find_all(tag_name):
            for attr in attrs:
                value = tag.get(attr)
                if not value:
                    continue
                urls = (
                    [c.split()[0] for c in value.split(",") if c.strip()]
                    if attr == "srcset"
                    else [value]
                )
                found += [(f"<{tag_name} {attr}>", u) for u in urls if u.strip()]
    for tag in soup.find_all("link"):
        rels = {r.lower() for r in (tag.get("rel") or [])}
        if rels & FETCHED_LINK_RELS and tag.get("href"):
            found.append((f"<link rel={' '.join(sorted(rels))}>", tag["href"]))
    css = [t.get_text() for t in soup.find_all("style")]
    css += [t["style"] for t in soup.find_all(style=True)]
    for text in css:
        found += [("CSS url()", u) for u in _css_urls(text)]
    return found


def _css_urls(css: str) -> list[str]:
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    urls = re.findall(r"""url\(\s*['"]?([^'")\s]+)""", css)
    urls += re.findall(r"""@import\s+['"]([^'"]+)""", css)
    return urls


def _script_src(book: Book, page: Path, relative: str) -> list[BeautifulSoup]:
    """The page's <script> tags whose src is the built site's file `relative`."""
    target = (book.html / relative).resolve()
    return [
        s
        for s in _soup(page).find_all("script", src=True)
        if not _is_remote(s["src"]) and _local_target(page, s["src"]) == target
    ]


# ---------------------------------------------------------------------------------------------
# The vendored JavaScript (no build needed)
# ---------------------------------------------------------------------------------------------


def test_vendored_versions_are_pinned_and_match_ipywidgets(repo_root):
    vendor = repo_root / "book" / "vendor"
    wanted = json.loads((vendor / "package.json").read_text(encoding="utf-8"))["dependencies"]
    assert set(wanted) == {"mathjax", "requirejs", "@jupyter-widgets/html-manager"}
    lock = json.loads((vendor / "package-lock.json").read_text(encoding="utf-8"))["packages"]
    for name, version in wanted.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} is not pinned: {version!r}"
        assert lock[f"node_modules/{name}"]["version"] == version, f"package-lock.json: {name}"
    assert lock[""]["dependencies"] == wanted, "package-lock.json is older than package.json"
    assert wanted["mathjax"].startswith("3."), "the book's MathJax configuration is for MathJax 3"
    # The widget state that ipywidgets writes must be drawable by this html-manager: ipywidgets
    # names the range it needs as "^X.Y.Z".
    from ipywidgets._version import __html_manager_version__ as needed

    low = tuple(int(x) for x in needed.lstrip("^").split("."))
    have = tuple(int(x) for x in wanted["@jupyter-widgets/html-manager"].split("."))
    assert have[0] == low[0] and have >= low, (
        f"ipywidgets needs html-manager {needed}, book/vendor pins {have}"
    )


# ---------------------------------------------------------------------------------------------
# (a) the pages
# ---------------------------------------------------------------------------------------------


def test_every_toc_page_is_built(book, toc_pages):
    assert EXPECTED_PAGES <= set(toc_pages), (
        f"_toc.yml lacks {sorted(EXPECTED_PAGES - set(toc_pages))}"
    )
    missing = [p for p in toc_pages if not (book.html / f"{p}.html").is_file()]
    assert not missing, f"pages in _toc.yml that were not built: {missing}"
    for page in toc_pages:
        h1 = _soup(book.html / f"{page}.html").find("h1")
        assert h1 is not None and h1.get_text(strip=True), f"{page}.html has no title (<h1>)"
    index = (book.html / "index.html").read_text(encoding="utf-8")
    assert f"{toc_pages[0]}.html" in index, "index.html does not lead to the book's first page"


def test_chapter_pages_are_executed(book, chapter_pages):
    for page in chapter_pages:
        soup = _soup(book.html / f"{page}.html")
        assert soup.select(".cell_output"), f"{page}: no cell has an output; was it executed?"
        errors = soup.select(".cell_output .output.traceback, .cell_output .output.error")
        assert not errors, f"{page} shows an error output: {errors[0].get_text()[:500]}"


# ---------------------------------------------------------------------------------------------
# (b) offline: nothing comes from another site
# ---------------------------------------------------------------------------------------------


def test_pages_fetch_only_local_files(book):
    remote, broken = [], []
    for page in _html_files(book):
        for what, url in _fetched_urls(_soup(page)):
            name = page.relative_to(book.html)
            if _is_remote(url):
                remote.append(f"{name}: {what} {url}")
            elif not url.startswith("data:"):
                target = _local_target(page, url)
                if not target.is_file() or book.html.resolve() not in target.parents:
                    broken.append(f"{name}: {what} {url}")
    assert not remote, "pages load files from other sites:\n" + "\n".join(remote[:30])
    assert not broken, "pages load files that are not in the built site:\n" + "\n".join(broken[:30])


def test_inline_scripts_name_no_other_site(book):
    """Inline JavaScript may mention a URL only if it is a known, never-loaded one."""
    found = []
    for page in _html_files(book):
        for script in _soup(page).find_all("script", src=False):
            if script.get("type", "text/javascript") not in ("text/javascript", "module"):
                continue  # data (widget state, thebe config), not code
            for url in URL_RE.findall(script.get_text()):
                if not _known_unreached(url, "<inline>"):
                    found.append(f"{page.relative_to(book.html)}: {url}")
    assert not found, "inline scripts refer to other sites:\n" + "\n".join(sorted(set(found))[:30])


def test_stylesheets_fetch_only_local_files(book):
    remote, broken = [], []
    css_files = sorted(book.html.rglob("*.css"))
    assert css_files, "the built site has no stylesheet at all"
    for css in css_files:
        for url in _css_urls(css.read_text(encoding="utf-8", errors="replace")):
            if url.startswith("data:") or url.startswith("#"):
                continue
            if _is_remote(url):
                remote.append(f"{css.relative_to(book.html)}: {url}")
            elif not _local_target(css, url).is_file():
                broken.append(f"{css.relative_to(book.html)}: {url}")
    assert not remote, "stylesheets load from other sites:\n" + "\n".join(remote)
    # A missing local font or image only degrades the page, but it should not go unnoticed.
    assert not broken, "stylesheets refer to files missing from the site:\n" + "\n".join(broken)


def test_javascript_reaches_no_cdn(book):
    """Every CDN address in the site's .js files is a known one that the book never reaches."""
    unknown = []
    scripts = sorted(book.html.rglob("*.js"))
    assert (book.html / MATHJAX) in scripts and (book.html / EMBED_AMD) in scripts
    for script in scripts:
        text = script.read_text(encoding="utf-8", errors="replace")
        for url in URL_RE.findall(text):
            host = urlsplit(url if "://" in url else "https:" + url).hostname or ""
            where = str(script.relative_to(book.html))
            if host in CDN_HOSTS and not _known_unreached(url, where):
                unknown.append(f"{script.relative_to(book.html)}: {url}")
    assert not unknown, (
        "the site's JavaScript names CDN addresses that nobody has shown to be unreachable; "
        "vendor what they load, or add them to KNOWN_UNREACHED with the reason and a test:\n"
        + "\n".join(sorted(set(unknown)))
    )


def test_mathjax_loads_its_parts_locally(book):
    """MathJax's lazily loaded parts resolve against its own folder, and copy.sh copied them."""
    mathjax = (book.html / MATHJAX).read_text(encoding="utf-8")
    # Its root is the folder of the script that loaded it, so every "[mathjax]/..." path is local.
    assert re.search(
        r'document\.currentScript\|\|document\.getElementById\("MathJax-script"\)', mathjax
    )
    for loader_path in ('tex:"[mathjax]/input/tex/extensions"', 'sre:"[mathjax]/sre/mathmaps"'):
        assert loader_path in mathjax, f"MathJax's loader no longer has {loader_path}"
    assert re.search(r'fontURL:\w+\.Package\.resolvePath\("output/chtml/fonts/woff-v2"', mathjax)
    folder = book.html / MATHJAX
    for part in (
        "input/tex/extensions/boldsymbol.js",
        "input/tex/extensions/ams.js",
        "sre/mathmaps/base.json",
        "sre/mathmaps/en.json",
        "a11y/explorer.js",
        "ui/menu.js",
        "output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff",
        "output/chtml/fonts/woff-v2/MathJax_Math-Italic.woff",
    ):
        assert (folder.parent / part).is_file(), f"MathJax's {part} was not vendored"
    # The page's own MathJax configuration must not move those paths elsewhere.
    for page in _html_files(book):
        for script in _soup(page).find_all("script", src=False):
            config = script.get_text()
            if "window.MathJax" in config:
                assert "loader" not in config and "fontURL" not in config, (
                    f"{page.relative_to(book.html)} reconfigures MathJax's paths: {config}"
                )


def test_commented_out_font_import(book):
    embed = (book.html / EMBED_AMD).read_text(encoding="utf-8")
    url = "https://fonts.googleapis.com/css?family=Roboto+Mono"
    commented = re.findall(r"/\* @import url\('" + re.escape(url) + r"'\); \*/", embed)
    assert embed.count(url) == len(commented) > 0, f"{url} is used outside a CSS comment"


def test_no_live_code_button(book):
    """sphinx-thebe's inline script names unpkg.com; only a 'Live code' button would load it."""
    for page in _html_files(book):
        soup = _soup(page)
        assert not soup.select(".thebe-launch-button"), f"{page.name} has a thebe launch button"
        assert not soup.find(onclick=re.compile("initThebe")), f"{page.name} can start thebe"


# ---------------------------------------------------------------------------------------------
# (c) math and widgets
# ---------------------------------------------------------------------------------------------


def test_math_is_typeset_by_the_local_mathjax(book, chapter_pages, repo_root):
    vendored = (repo_root / "book" / "_vendor" / "mathjax" / "tex-mml-chtml.js").read_bytes()
    assert (book.html / MATHJAX).read_bytes() == vendored, (
        "the site's MathJax is not the vendored one"
    )
    for page in [*chapter_pages, "book/notation"]:
        path = book.html / f"{page}.html"
        math = _soup(path).select(".math")
        assert math, f"{page} has no math: nothing for MathJax to typeset"
        assert any("\\(" in m.get_text() or "\\[" in m.get_text() for m in math), (
            f"{page}: the math is not left in TeX delimiters for MathJax"
        )
        assert _script_src(book, path, MATHJAX), f"{page} does not load {MATHJAX}"
        mathjaxes = [
            s["src"]
            for s in _soup(path).find_all("script", src=True)
            if "mathjax" in s["src"].lower()
        ]
        assert len(mathjaxes) == 1, f"{page} loads MathJax more than once: {mathjaxes}"


def test_widgets_are_local(book, chapter_pages):
    with_widgets = []
    for page in chapter_pages:
        nb = nbformat.read(book.executed / f"{page}.ipynb", as_version=4)
        views = [
            o
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.get("outputs", [])
            if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
        ]
        if views:
            with_widgets.append(page)
    if not with_widgets:
        pytest.skip("no chapter page displays a widget yet, so no page carries widget state")
    for page in with_widgets:
        path = book.html / f"{page}.html"
        soup = _soup(path)
        states = soup.find_all("script", type="application/vnd.jupyter.widget-state+json")
        assert len(states) == 1, f"{page}: expected one widget-state script, found {len(states)}"
        state = json.loads(states[0].get_text())["state"]
        views = [
            json.loads(s.get_text())["model_id"]
            for s in soup.find_all("script", type="application/vnd.jupyter.widget-view+json")
        ]
        assert views, f"{page} displays no widget view"
        assert set(views) <= set(state), (
            f"{page}: widget views without state: {set(views) - set(state)}"
        )
        modules = {
            m[key] for m in state.values() for key in ("model_module", "view_module") if m.get(key)
        }
        assert modules <= BUNDLED_WIDGET_MODULES, (
            f"{page} uses widget modules that embed-amd.js would fetch from a CDN: "
            f"{sorted(modules - BUNDLED_WIDGET_MODULES)}"
        )
        require, embed = _script_src(book, path, REQUIREJS), _script_src(book, path, EMBED_AMD)
        assert require and embed, f"{page} does not load the local require.js and embed-amd.js"
        scripts = soup.find_all("script", src=True)
        assert scripts.index(require[0]) < scripts.index(embed[0]), "require.js must come first"
        for script in soup.find_all("script"):
            assert not script.has_attr("data-jupyter-widgets-cdn-only"), f"{page}: CDN-only widgets"
            cdn = script.get("data-jupyter-widgets-cdn")
            assert cdn is None or not _is_remote(cdn), f"{page}: widgets' CDN is {cdn}"
    # embed-amd.js loads its icon fonts from the folder of its AMD module's URL. _config.yml
    # points require.js at _static/html-manager/ for that module (or the fonts would be looked
    # for next to each page), and copy.sh puts the fonts there.
    for page in with_widgets:
        path = book.html / f"{page}.html"
        soup = _soup(path)
        root = soup.find("html").get("data-content_root")
        assert root is not None and (path.parent / root).resolve() == book.html.resolve()
        fixes = [
            s.get_text()
            for s in soup.find_all("script", src=False)
            if "@jupyter-widgets/html-manager/dist/libembed-amd" in s.get_text()
        ]
        assert fixes, f"{page}: require.js is not told where embed-amd's module lives"
        for needed in ("require.config", "dataset.content_root", '"_static/html-manager/"'):
            assert needed in fixes[0], f"{page}: the require.js paths script lacks {needed}"
    embed_js = book.html / EMBED_AMD
    fonts = set(
        re.findall(
            r'"([0-9a-f]{20}\.(?:woff2|woff|ttf|eot|svg))"', embed_js.read_text(encoding="utf-8")
        )
    )
    assert fonts, "found no font file names in embed-amd.js"
    missing = sorted(f for f in fonts if not (embed_js.parent / f).is_file())
    assert not missing, f"embed-amd.js's fonts are missing from the site: {missing}"


# ---------------------------------------------------------------------------------------------
# (d) exercises: shown as released, not run, downloadable; (f) launch buttons
# ---------------------------------------------------------------------------------------------


def test_exercise_pages_are_not_executed(book, exercise_pages, repo_root):
    for page in exercise_pages:
        soup = _soup(book.html / f"{page}.html")
        assert soup.select(".cell_input"), f"{page} shows no code cell"
        outputs = soup.select(".cell_output")
        assert not outputs, f"{page} was executed: {outputs[0].get_text()[:300]}"
        text = soup.get_text()
        assert "YOUR CODE HERE" in text and "raise NotImplementedError()" in text, (
            f"{page} is not the student release (no YOUR CODE HERE stubs)"
        )
        notebook = repo_root / f"{page}.ipynb"
        assert f"{page}.ipynb: Excluded from execution by pattern" in book.log, (
            f"myst-nb did not report {page}.ipynb as excluded from execution"
        )
        released = nbformat.read(notebook, as_version=4)
        assert not any(c.get("outputs") for c in released.cells if c.cell_type == "code"), (
            f"{page}.ipynb is committed with outputs"
        )


def test_exercise_pages_offer_the_notebook_for_download(book, exercise_pages, repo_root):
    for page in exercise_pages:
        path = book.html / f"{page}.html"
        links = [a["href"] for a in _soup(path).select("a.btn-download-source-button[href]")]
        ipynb = [h for h in links if urlsplit(h).path.endswith(f"{Path(page).name}.ipynb")]
        assert ipynb, f"{page} has no download button for its .ipynb (found {links})"
        downloaded = _local_target(path, ipynb[0])
        assert downloaded.is_file(), f"{page}: the download button points at nothing ({ipynb[0]})"
        nb = nbformat.read(downloaded, as_version=4)
        released = nbformat.read(repo_root / f"{page}.ipynb", as_version=4)
        assert [c.source for c in nb.cells] == [c.source for c in released.cells], (
            f"{page}: the downloadable notebook differs from the released one"
        )
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_exercise_pages_have_launch_buttons(book, exercise_pages, repo_root):
    config = yaml.safe_load((repo_root / "_config.yml").read_text(encoding="utf-8"))
    repo = config["repository"]
    org_repo = urlsplit(repo["url"]).path.strip("/")
    assert repo["url"] == f"https://github.com/{org_repo}"
    launch = config["launch_buttons"]
    for page in exercise_pages:
        nb_path = f"{page}.ipynb"
        links = [a["href"] for a in _soup(book.html / f"{page}.html").find_all("a", href=True)]
        colab = f"{launch['colab_url']}/github/{org_repo}/blob/{repo['branch']}/{nb_path}"
        assert colab in links, f"{page} has no Colab link {colab}; it has {links}"
        binder = f"{launch['binderhub_url']}/v2/gh/{org_repo}/{repo['branch']}?urlpath="
        assert any(h.startswith(binder) and h.endswith(nb_path) for h in links), (
            f"{page}: no Binder link"
        )
        hub = f"{launch['jupyterhub_url']}/hub/user-redirect/git-pull?"
        assert any(h.startswith(hub) and nb_path in h for h in links), f"{page}: no JupyterHub link"


# ---------------------------------------------------------------------------------------------
# (e) nothing from solutions/ or autograder/ is published
# ---------------------------------------------------------------------------------------------


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _secrets(repo_root: Path, slug: str = "") -> tuple[list[str], list[str]]:
    """(solution blocks, hidden-test blocks) of every source notebook in solutions/ (of one
    chapter's, with `slug`)."""
    solutions, hidden = [], []
    notebooks = sorted((repo_root / "solutions" / slug).rglob("*.ipynb"))
    notebooks = [nb for nb in notebooks if ".ipynb_checkpoints" not in nb.parts]
    assert notebooks, "no notebook in solutions/"
    for path in notebooks:
        for cell in nbformat.read(path, as_version=4).cells:
            src = cell.source
            blocks = list(chapters.regions(src, chapters.SOLUTION))
            if cell.get("metadata", {}).get("nbgrader", {}).get("solution") and not blocks:
                blocks = [src]  # without delimiters, nbgrader replaces the whole cell
            solutions += blocks
            hidden += chapters.regions(src, chapters.HIDDEN_TESTS)
    assert solutions, "found no solution in solutions/: has the delimiter changed?"
    return solutions, hidden


def _output_text(cell) -> str:
    texts = []
    for output in cell.get("outputs", []):
        texts.append(output.get("text", ""))
        for mime in ("text/plain", "text/html", "text/markdown", "text/latex"):
            texts.append(output.get("data", {}).get(mime, ""))
    return "\n".join(t if isinstance(t, str) else "".join(t) for t in texts)


def _published_texts(book: Book) -> dict[str, str]:
    """Every text file of the built site, as a reader could see it (HTML: text and markup)."""
    texts = {}
    for path in sorted(book.html.rglob("*")):
        if not path.is_file() or path.suffix in BINARY_SUFFIXES:
            continue
        raw = path.read_text(encoding="utf-8", errors="replace")
        name = str(path.relative_to(book.html))
        if path.suffix == ".html":
            raw = _soup(path).get_text() + "\n" + html.unescape(raw)
        elif path.suffix == ".ipynb":
            cells = nbformat.reads(raw, as_version=4).cells
            raw = "\n".join([c.source for c in cells] + [_output_text(c) for c in cells])
        texts[name] = _normalise(raw)
    return texts


def _given(repo_root: Path) -> str:
    """The released exercises' text, whitespace-normalised: what students are given is no secret,
    even when the model answer repeats it (a constructor line, say)."""
    return _normalise(
        "\n".join(
            cell.source
            for path in sorted((repo_root / "exercises").rglob("*.ipynb"))
            for cell in nbformat.read(path, as_version=4).cells
        )
    )


def _chapter_number(name: str) -> int | None:
    m = re.search(r"(?:^|/)ch(\d\d)_", name)
    return int(m.group(1)) if m else None


def test_no_solution_or_hidden_test_is_published(book, repo_root):
    """No hidden test line anywhere; no solution of chapter N on chapter N's page or any earlier
    one, in any exercise or anywhere else (a later chapter builds on an earlier one's answers
    and may show them)."""
    given = _given(repo_root)
    texts = _published_texts(book)
    leaks = []
    for slug in sorted(p.name for p in (repo_root / "solutions").glob("ch*")):
        solutions, hidden = _secrets(repo_root, slug)
        number = _chapter_number(slug)
        for block in hidden:
            for line in block.splitlines():
                line = _normalise(line)
                leaks += [
                    f"hidden test line {line!r} in {n}"
                    for n, t in texts.items()
                    if line and line in t
                ]
        shown_on = {
            n: t
            for n, t in texts.items()
            if not (
                n.startswith(("book/", "_sources/book/")) and (_chapter_number(n) or 0) > number
            )
        }
        for block in solutions:
            whole = _normalise(block)
            leaks += [
                f"solution block {whole[:60]!r}... in {n}"
                for n, t in shown_on.items()
                if whole in t
            ]
            for line in block.splitlines():
                line = _normalise(line)
                if len(line) > 30 and line not in given:
                    leaks += [
                        f"{slug} solution line {line!r} in {n}"
                        for n, t in shown_on.items()
                        if line in t
                    ]
    assert not leaks, "the built book publishes parts of solutions/:\n" + "\n".join(
        sorted(set(leaks))
    )


def test_private_folders_are_not_published(book):
    private = {"solutions", "autograder", "grading", "tests", "bench", "node_modules"}
    leaked = sorted(
        str(p.relative_to(book.html))
        for p in book.html.rglob("*")
        if private & set(p.relative_to(book.html).parts)
    )
    assert not leaked, f"private folders are published: {leaked[:20]}"
    assert not (book.html / "solutions").exists() and not (book.html / "autograder").exists()


# ---------------------------------------------------------------------------------------------
# (f) the public release (make publish) holds what students may see, and nothing else
# ---------------------------------------------------------------------------------------------


def _publish_module(repo_root: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("publish", repo_root / "tools" / "publish.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_public_release_holds_the_book_and_exercises_and_no_answer(
    book, repo_root, exercise_pages, tmp_path
):
    publish = _publish_module(repo_root)
    dest = publish.publish(book.html, tmp_path / "public")
    assert publish.leaks(dest) == []
    assert (dest / "site" / "index.html").is_file() and (dest / "site" / ".nojekyll").is_file()
    for page in exercise_pages:  # the launch buttons' paths exist in the release
        assert (dest / f"{page}.ipynb").is_file(), page
    assert (dest / "attention_data" / "translation.py").is_file()
    pins = (repo_root / "requirements.txt").read_text()
    for line in (dest / "requirements.txt").read_text().splitlines():
        assert line.startswith("#") or line in pins, line
    # No solution or hidden test outside site/ (the book's own test covers site/), and no three
    # lines in a row of a chapter's reference or checks anywhere.
    solutions, hidden = _secrets(repo_root)
    secret = [_normalise(x) for block in solutions + hidden for x in block.split("\n")]
    given = _given(repo_root)  # what the release gives students (a helper table, say)
    windows, leaked = {}, []
    for path in sorted(dest.rglob("*")):
        if not path.is_file() or path.suffix not in {".ipynb", ".py", ".md", ".txt", ".html"}:
            continue
        name = str(path.relative_to(dest))
        if path.suffix == ".html":
            text = _soup(path).get_text()
        elif path.suffix == ".ipynb":
            cells = nbformat.read(path, as_version=4).cells
            text = "\n".join([c.source for c in cells] + [_output_text(c) for c in cells])
        else:
            text = path.read_text(errors="replace")
        if not name.startswith("site/"):
            flat = _normalise(text)
            leaked += [
                f"{x!r} in {name}" for x in secret if len(x) > 30 and x in flat and x not in given
            ]
        for window in _windows(text):
            windows.setdefault(window, name)
    # The references and the checks: the right banks are correct answers written from the
    # instructions and the pages, and share their boilerplate (a constructor's signature) with them.
    chapter_modules = [p for p in (repo_root / "autograder" / "chapters").glob("*/*.py")
                       if p.name in ("reference.py", "checks.py")]  # fmt: skip
    for module in sorted(chapter_modules):
        for window in _windows(_code_only(module.read_text())):
            if window in windows and window.replace(" | ", " ") not in given:
                leaked.append(
                    f"{module.parent.name}/{module.name}: {window[:70]!r} in {windows[window]}"
                )
    assert not leaked, "the public release holds answers:\n" + "\n".join(sorted(set(leaked))[:20])


def _code_only(source: str) -> str:
    """A module's source without its docstrings and comment lines: instructions may repeat a
    reference's docstring (it states the behaviour asked for); its code is the answer. Nor the
    lines between ``# GIVEN BEGIN`` and ``# GIVEN END``: a copy of what the release's setup cell
    gives students (chapter 10's task and given model), public by design."""
    import ast

    lines = source.splitlines()
    given = False
    for i, line in enumerate(lines):
        marker = line.strip()
        if marker in ("# GIVEN BEGIN", "# GIVEN END"):
            given = marker == "# GIVEN BEGIN"
            lines[i] = ""
        elif given:
            lines[i] = ""
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(getattr(body[0], "value", None), ast.Constant):
                for i in range(body[0].lineno - 1, body[0].end_lineno):
                    lines[i] = ""
    return "\n".join(x for x in lines if not x.strip().startswith("#"))


def _windows(text: str) -> set[str]:
    """Every three consecutive lines longer than 12 characters, whitespace-normalised."""
    lines = [_normalise(x) for x in text.splitlines() if len(x.strip()) > 12]
    return {" | ".join(lines[i : i + 3]) for i in range(len(lines) - 2)}


# ---------------------------------------------------------------------------------------------
# (g) in a real browser: headless Chromium, the network blocked but for the book's own server
# ---------------------------------------------------------------------------------------------

# Written for CI to keep as an artifact: the first screen of every page.
SCREENSHOTS = Path(__file__).resolve().parents[1] / "_build" / "screenshots"


@pytest.fixture(scope="session")
def browser(book):
    """A headless Chromium (Debian's chromium + chromium-driver, driven by Selenium) that can
    reach nothing but a local server of the built book; yields (driver, base URL)."""
    import http.server
    import threading

    # Debian's packages (.ci/run installs them), or the Chrome that GitHub's runners carry
    chromium = next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    driver_path = shutil.which("chromedriver") or shutil.which(
        "chromedriver", path=os.environ.get("CHROMEWEBDRIVER", "")
    )
    if not chromium or not driver_path:
        pytest.skip(
            "\n\n    SKIPPED LOUDLY: the browser tests need Debian's `chromium` and\n"
            "    `chromium-driver` (apt-get install chromium chromium-driver; .ci/run does it).\n"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: Quiet(*a, directory=str(book.html), **k)
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        # every host but the book's server resolves to nothing: a CDN would show up as an error
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    try:
        yield driver, f"http://127.0.0.1:{server.server_port}/"
    finally:
        driver.quit()
        server.shutdown()


PAGE_STATE = """
const done = arguments[arguments.length - 1];
const ready = window.MathJax && MathJax.startup && MathJax.startup.promise
    ? MathJax.startup.promise : Promise.resolve();
ready.then(() => new Promise(r => setTimeout(r, 300))).then(() => {
  const body = document.body.cloneNode(true);
  body.querySelectorAll("pre, code, script, style, mjx-container, .MathJax, textarea")
      .forEach(e => e.remove());
  const text = body.textContent;
  done({
    raw_math: ["\\\\(", "\\\\[", "$$"].filter(s => text.includes(s)),
    typeset: document.querySelectorAll("mjx-container").length,
    broken_images: Array.from(document.images)
        .filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),
    widget_state: document.querySelectorAll(
        'script[type="application/vnd.jupyter.widget-state+json"]').length,
    widget_views: document.querySelectorAll(
        'script[type="application/vnd.jupyter.widget-view+json"]').length,
    launch: document.querySelectorAll('a[href*="colab.research.google.com"]').length,
    download: document.querySelectorAll('a[href$=".ipynb"], .dropdown-download-buttons').length,
  });
});
"""

WIDGETS_DRAWN = """
const done = arguments[arguments.length - 1];
const start = Date.now();
(function poll() {
  const n = document.querySelectorAll(".jupyter-widgets, .widget-interact").length;
  if (n > 0 || Date.now() - start > 20000) done(n); else setTimeout(poll, 200);
})();
"""


def test_every_page_in_a_real_browser(book, browser, toc_pages, exercise_pages):
    driver, base = browser
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    problems = []
    for page in toc_pages:
        url = base + f"{page}.html"  # index.html only redirects to the root page
        driver.get(url)
        state = driver.execute_async_script(PAGE_STATE)
        driver.save_screenshot(str(SCREENSHOTS / f"{page.replace('/', '__')}.png"))
        errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        problems += [f"{page}: console error: {m[:200]}" for m in errors]
        if state["raw_math"]:
            problems.append(f"{page}: math left untypeset ({state['raw_math']})")
        source = (book.html / f"{page}.html").read_text(encoding="utf-8")
        if ("\\(" in source or "\\[" in source) and not state["typeset"]:
            problems.append(f"{page}: the page has math and MathJax typeset none of it")
        problems += [f"{page}: image not loaded: {src}" for src in state["broken_images"]]
        if state["widget_views"]:
            drawn = driver.execute_async_script(WIDGETS_DRAWN)
            if not drawn:
                problems.append(f"{page}: {state['widget_views']} widgets saved, none drawn")
        if page in exercise_pages and not (state["launch"] and state["download"]):
            problems.append(f"{page}: no launch ({state['launch']}) or download button")
    assert not problems, "\n".join(problems)


def test_the_search_page_finds_a_word_of_a_chapter(browser):
    driver, base = browser
    driver.get(base + "search.html?q=softmax")
    found = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const start = Date.now();
        // Sphinx lists the hits one by one and writes its summary line only when it is done.
        (function poll() {
          const summary = document.querySelector("p.search-summary");
          if ((summary && summary.innerText.trim()) || Date.now() - start > 60000) {
            const hits = document.querySelectorAll("#search-results li, ul.search li");
            done(Array.from(hits).map(li => li.querySelector("a").getAttribute("href")));
          } else setTimeout(poll, 250);
        })();
        """
    )
    assert any("ch04_self_attention" in href for href in found), found


def test_every_internal_link_and_anchor_resolves(book):
    """Checked on the files: a link to a page that is not there, or to an id that the page
    does not have, is a broken link."""
    broken = []
    ids: dict[Path, set[str]] = {}
    for page in _html_files(book):
        for a in _soup(page).find_all("a", href=True):
            href = a["href"]
            if _is_remote(href) or href.startswith(("mailto:", "javascript:")):
                continue
            target = _local_target(page, href)
            if not target.exists():
                broken.append(f"{page.relative_to(book.html)}: {href} (no such file)")
                continue
            fragment = urlsplit(href).fragment
            if fragment and target.suffix == ".html":
                if target not in ids:
                    soup = _soup(target)
                    ids[target] = {t["id"] for t in soup.find_all(id=True)}
                    ids[target] |= {t["name"] for t in soup.find_all("a", attrs={"name": True})}
                if unquote(fragment) not in ids[target]:
                    broken.append(f"{page.relative_to(book.html)}: {href} (no such anchor)")
    assert not broken, "\n".join(broken[:30])
