"""A Sphinx extension: each script once per page.

Jupyter Book 1 runs sphinx-thebe's and sphinx-togglebutton's set-up twice, so every page gets their
inline scripts twice; the second `const THEBE_JS_URL = ...` then throws "Identifier has already
been declared" in the reader's console (tests/test_book.py opens every page in Chromium and fails
on any console error). This drops the repeats, keeping the first of each.
"""


def _unique(app, pagename, templatename, context, doctree):
    seen, kept = set(), []
    for script in context.get("script_files", []):
        key = (
            str(getattr(script, "filename", script) or ""),  # an inline script's is None or ""
            tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items())),
        )
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _unique, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
