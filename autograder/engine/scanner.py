"""The submission scanner: code in a student's notebook that the instructor should read.

The sandbox and the judge (``autograder/engine/__init__.py``) make patching torch, hooks, exits
and outside reads moot; what they cannot see is read here from the source, *without running it*,
following what each name stands for across cells as the kernel would. A finding never changes a
score; it is a line to read, with one sentence on why. The kinds:

- ``forbidden_builtin``: a built-in that does the exercise's work (the chapter's
  ``forbidden_builtins``), however it is reached: import aliases, star imports, assignments,
  attribute chains, ``getattr``, ``__dict__``/``vars`` items, the same op under another torch name.
- ``autograder_import``: importing the grader (``autograder``, ``nbgrader``), also by a name
  given to ``__import__``/``import_module``; or looking for it: a string naming it, nbgrader's
  ``NBGRADER_*`` variables, the sandbox's ``/grader``, ``/sandbox``, ``runner.py``, ``protocol.py``.
- ``dynamic_code``: ``exec``, ``eval`` or ``compile`` of anything but a string literal (a literal
  is read as code instead), an import of a computed name, ``getattr`` on torch with a computed
  name: code built at run time, in which any of the above could hide.
- ``unparsable``: a cell that is not Python even after IPython's ``%magic``/``!shell`` syntax is
  translated, or that nests too deeply to walk; one finding, to read by hand.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections import ChainMap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Finding", "scan_source", "scan_notebook"]

MAX_DEPTH = 200  # nesting of the syntax tree that the walk follows
CODE_WIDTH = 120  # characters of a line kept in a finding

# What a name means before the notebook binds it: the instructor's usual imports.
_DEFAULT_ALIASES = {"F": "torch.nn.functional", "nn": "torch.nn", "np": "numpy"}
# Strings that point at the grader: its packages, nbgrader's variables, the sandbox's paths.
_GRADER_NAME = re.compile(r"\s*(autograder|nbgrader)(\.\w+)*\s*")
_GRADER_SIGN = re.compile(
    _GRADER_NAME.pattern + r"|NBGRADER_\w+|/grader(/\S*)?|/sandbox(/\S*)?|\S*(runner|protocol)\.py"
)
_EXEC = frozenset({"exec", "eval", "compile", "builtins.exec", "builtins.eval", "builtins.compile"})
_IMPORTERS = frozenset({"__import__", "builtins.__import__", "importlib.import_module"})
_GETATTR = ("getattr", "builtins.getattr")
_CODE_MAGICS = frozenset({"time", "timeit", "capture", "prun"})  # cell magics whose body is Python

# What a finding says, by reason; the {} are the names at its line.
_SAYS = {
    "builtin": (
        "{} {}, a built-in that does what the exercise asks you to write; "
        "the instructor decides whether it counts."
    ),
    "grader": "Imports {}, the grader: the reference solutions and the checks.",
    "sign": "Names {!r}, a sign of the grader: code that behaves differently when it is graded.",
    "exec": "Runs code built at run time with {}(), which the scanner cannot read.",
    "import": "Imports a module whose name is computed ({}).",
    "getattr": (
        "Looks up an attribute of torch by a name computed at run time, which the scanner "
        "cannot read."
    ),
}


@dataclass(frozen=True)
class Finding:
    """One line to read. cell_id: the cell's nbgrader grade_id, else its id, else "cell-<index>";
    line: 1-based, in the cell; code: that line, stripped and cut to CODE_WIDTH characters."""

    kind: str
    cell_id: str
    line: int
    code: str
    message: str


def _parse(source: str) -> tuple[ast.Module | None, int]:
    """(the syntax tree, 0), or (None, the line of the error) when it is not Python."""
    try:
        with warnings.catch_warnings(action="ignore"):
            return ast.parse(source), 0
    except SyntaxError as exc:
        return None, exc.lineno or 1
    except (RecursionError, MemoryError, ValueError):
        return None, 1


def _too_deep(tree: ast.AST) -> bool:
    level, depth = [tree], 1  # one level at a time: the walk itself would recurse too deep
    while level and depth <= MAX_DEPTH:
        level, depth = [child for n in level for child in ast.iter_child_nodes(n)], depth + 1
    return bool(level)


def _python(source: str) -> str:
    """The cell as Python: IPython's %magics and !shell escapes translated."""
    lines = source.split("\n")
    if not any(s.lstrip()[:1] in ("%", "!") or "= !" in s or s.rstrip()[-1:] == "?" for s in lines):
        return source
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - IPython missing, or a cell it cannot translate
        return source


class _Scanner(ast.NodeVisitor):
    """Walks the cells of one notebook in order; the module scope carries over between cells."""

    def __init__(self, forbidden: Iterable[str]) -> None:
        self.forbidden = tuple(forbidden)
        self.tails = {name.rsplit(".", 1)[-1]: name for name in self.forbidden}
        # What each bound name stands for (None: nothing the scanner knows), innermost scope first.
        self.scopes: ChainMap[str, str | None] = ChainMap(dict(_DEFAULT_ALIASES))
        self.found: list[tuple[str, int, str]] = []  # (kind, line, message)

    def path(self, node: ast.AST) -> str | None:
        """The dotted name an expression stands for ("torch.nn.functional.softmax"), or None."""
        if isinstance(node, ast.Name):  # unbound: a module imported where the scanner cannot see
            return self.scopes.get(node.id, node.id)
        base = None
        if isinstance(node, ast.Attribute):
            base, attr = node.value, node.attr
        elif isinstance(node, ast.Call) and self.path(node.func) in _GETATTR:
            if len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
                base, attr = node.args[0], node.args[1].value
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            holder, attr = node.value, node.slice.value  # F.__dict__["name"], vars(F)["name"]
            if isinstance(holder, ast.Attribute) and holder.attr == "__dict__":
                base = holder.value
            elif isinstance(holder, ast.Call) and self.path(holder.func) == "vars" and holder.args:
                base = holder.args[0]
        base = None if base is None else self.path(base)
        return f"{base}.{attr}" if base else None

    def forbidden_in(self, path: str | None) -> str | None:
        """The forbidden built-in that `path` is, or is inside of, if any."""
        if not path:
            return None
        for name in self.forbidden:
            if path == name or path.startswith(name + "."):
                return name
        if path.split(".", 1)[0] == "torch":  # the same op under another torch name
            return self.tails.get(path.rsplit(".", 1)[-1])
        return None

    def emit(self, kind: str, node: ast.AST, reason: str, *names: object) -> None:
        self.found.append((kind, getattr(node, "lineno", 1), _SAYS[reason].format(*names)))

    def grader_module(self, node: ast.AST, module: str) -> None:
        if _GRADER_NAME.fullmatch(module):
            self.emit("autograder_import", node, "grader", module.strip())

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.grader_module(node, alias.name)
            root = alias.name.split(".", 1)[0]
            self.scopes[alias.asname or root] = alias.name if alias.asname else root

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if not node.level:
            self.grader_module(node, module)
        for alias in node.names:
            if node.level:  # a relative import: nothing the scanner knows
                self.scopes[alias.asname or alias.name] = None
            elif alias.name == "*":
                for name in self.forbidden:
                    if name.rsplit(".", 1)[0] == module:
                        self.emit("forbidden_builtin", node, "builtin", "Imports", name)
            else:
                path = f"{module}.{alias.name}"
                self.grader_module(node, path)
                if (name := self.forbidden_in(path)) is not None:
                    self.emit("forbidden_builtin", node, "builtin", "Imports", name)
                self.scopes[alias.asname or alias.name] = path

    def walk_body(self, body: list[ast.AST] | ast.AST, scope: dict[str, str | None]) -> None:
        self.scopes = self.scopes.new_child(scope)
        for statement in body if isinstance(body, list) else [body]:  # a lambda's is one expression
            self.visit(statement)
        self.scopes = self.scopes.parents

    def visit_FunctionDef(self, node) -> None:
        """A def or a lambda: decorators and defaults outside, the body in a scope of its own, where
        the parameters stand for nothing the scanner knows."""
        args = node.args
        for expr in [*getattr(node, "decorator_list", ()), *args.defaults, *args.kw_defaults]:
            if expr is not None:
                self.visit(expr)
        if not isinstance(node, ast.Lambda):
            self.scopes[node.name] = None
        params = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
        self.walk_body(node.body, {p.arg: None for p in params if p is not None})

    visit_AsyncFunctionDef = visit_Lambda = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in [*node.decorator_list, *node.bases, *node.keywords]:
            self.visit(expr)
        self.walk_body(node.body, {})
        self.scopes[node.name] = None

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        value = self.path(node.value)
        for target in node.targets:
            if isinstance(target, ast.Name):
                self.scopes[target.id] = value
            else:
                self.visit(target)  # its names, bound to nothing the scanner knows (visit_Name)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            self.scopes[node.id] = None
        elif isinstance(node.ctx, ast.Load):
            self.reference(node)

    def reference(self, node: ast.AST) -> bool:
        """Flag `node` if it reaches a forbidden built-in; whether it did."""
        name = self.forbidden_in(self.path(node))
        if name is not None:
            self.emit("forbidden_builtin", node, "builtin", "Uses", name)
        return name is not None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if not (isinstance(node.ctx, ast.Load) and self.reference(node)):
            self.visit(node.value)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if not self.reference(node):
            self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if type(node.value) is str and _GRADER_SIGN.fullmatch(node.value.strip()):
            self.emit("autograder_import", node, "sign", node.value.strip())

    def visit_Call(self, node: ast.Call) -> None:
        func = self.path(node.func)
        first = node.args[0] if node.args else None
        literal = isinstance(first, ast.Constant) and isinstance(first.value, (str, bytes))
        if first is not None and (func in _EXEC or func in _IMPORTERS):
            if not literal:
                self.emit("dynamic_code", node, "exec" if func in _EXEC else "import", func)
            elif func in _EXEC:
                self.exec_literal(node, first.value)
            else:
                self.grader_module(node, str(first.value))
        elif func in _GETATTR and len(node.args) >= 2:
            name = node.args[1]
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                if (self.path(node.args[0]) or "").split(".", 1)[0] == "torch":
                    self.emit("dynamic_code", node, "getattr")
            elif not self.reference(node) and name.value in self.tails:
                self.emit("forbidden_builtin", node, "builtin", "Looks up", self.tails[name.value])
        self.generic_visit(node)

    def exec_literal(self, node: ast.AST, code: str | bytes) -> None:
        """Read the code an exec/eval/compile of a literal runs; findings at the call's line."""
        if isinstance(code, bytes):
            code = code.decode("utf-8", "replace")
        tree, _ = _parse(code)
        if tree is None or _too_deep(tree):
            return
        found, self.found = self.found, []
        self.visit(tree)
        self.found = found + [(kind, node.lineno, message) for kind, _, message in self.found]

    def scan_cell(self, source: str, report: bool = True) -> list[tuple[str, int, str, str]]:
        """The findings of one cell: (kind, line, code, message), by line, one per kind and line."""
        lines = source.split("\n")
        offset, python = 0, source
        if source.startswith("%%"):
            if (source[2:].split(None, 1) or [""])[0] not in _CODE_MAGICS:
                return []  # another language (%%bash, %%html): nothing the scanner reads
            offset, python = 1, "\n".join(lines[1:])
        tree, error_line = _parse(_python(python))
        self.found = []
        if tree is None or _too_deep(tree):
            why = "is not Python" if tree is None else "nests too deeply to read"
            line = error_line + offset or 1  # error_line is 0 when it parsed: the whole cell
            self.found = [("unparsable", line, f"This cell {why}, so the scanner skipped it.")]
        else:
            self.visit(tree)
            self.found = [(kind, line + offset, msg) for kind, line, msg in self.found]
        if not report:
            return []
        out: dict[tuple[str, int], tuple[str, int, str, str]] = {}
        for kind, line, message in sorted(self.found, key=lambda f: f[1]):
            code = lines[line - 1].strip() if 0 < line <= len(lines) else ""
            code = code if len(code) <= CODE_WIDTH else code[: CODE_WIDTH - 3] + "..."
            out.setdefault((kind, line), (kind, line, code, message))
        return list(out.values())


def scan_source(source: str, *, forbidden_builtins: Iterable[str] = ()) -> list[tuple]:
    """The findings of one piece of code, as (kind, line, code, message)."""
    return _Scanner(forbidden_builtins).scan_cell(source)


def _code_cells(path_or_nb) -> list[tuple[int, Mapping, str]]:
    """(index, cell, source) of each code cell of a notebook, given as a path or a notebook."""
    import nbformat

    if isinstance(path_or_nb, Mapping):
        nb = nbformat.from_dict(path_or_nb)
    else:
        nb = nbformat.read(str(path_or_nb), as_version=4)
    return [
        (index, cell, "".join(s) if isinstance(s := cell.get("source"), list) else str(s or ""))
        for index, cell in enumerate(nb.cells)
        if cell.get("cell_type") == "code"
    ]


def scan_notebook(
    path_or_nb, *, forbidden_builtins: Iterable[str] = (), release_nb=None
) -> list[Finding]:
    """Findings for every code cell of a notebook (a path or a notebook), in order. Cells as
    in `release_nb` (the released notebook) are not reported on, though their imports count.
    Raises what nbformat raises when a file cannot be read."""
    cells = _code_cells(path_or_nb)  # read first: a bad submission raises before the release
    release = _code_cells(release_nb) if release_nb is not None else []
    released = {src.replace("\r\n", "\n").strip() for *_, src in release}
    scanner = _Scanner(forbidden_builtins)
    findings = []
    for index, cell, source in cells:
        grade_id = ((cell.get("metadata") or {}).get("nbgrader") or {}).get("grade_id")
        cell_id = str(grade_id or cell.get("id") or f"cell-{index}")
        untouched = source.replace("\r\n", "\n").strip() in released
        for kind, line, code, message in scanner.scan_cell(source, report=not untouched):
            findings.append(Finding(kind, cell_id, line, code, message))
    return findings
