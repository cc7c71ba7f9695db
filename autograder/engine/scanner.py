"""The submission scanner: code in a student's notebook that the instructor should read.

The student's code runs in a sandbox that holds nothing of the course, and every verdict is
computed outside it (``autograder/engine/__init__.py``): patching torch, IPython hooks, ending
the process and reading files above the notebook can no longer change a score. What still matters
is what the sandbox cannot see, read here from the source *without running it*. A finding never
changes a score; it is a line to read, with one sentence on why. The kinds:

- ``forbidden_builtin``: a call of, or a reference to, a built-in that does the exercise's work
  (the chapter's ``forbidden_builtins``), however it is spelled: import aliases (``import
  torch.nn.functional as F``, ``from torch.nn import functional``, ``from ... import
  scaled_dot_product_attention as s``, ``from ... import *``), assignments (``f = F``),
  attribute chains, ``getattr(F, "name")``, ``F.__dict__["name"]``, a torch name that ends in
  the same function (``torch.ops.aten.scaled_dot_product_attention``), or ``getattr(anything,
  "name")``.
- ``autograder_import``: importing the grader (the course's ``autograder`` package or
  ``nbgrader``), also through ``importlib.import_module`` or ``__import__``; and code that
  looks for signs of being graded: a string that names the grader (``"autograder" in
  sys.modules``), nbgrader's environment variables (``NBGRADER_EXECUTION``), or the sandbox's
  own paths and files (``/grader``, ``/sandbox``, ``runner.py``).
- ``dynamic_code``: code built at run time, in which either of the above could hide: ``exec``,
  ``eval`` or ``compile`` of something other than a string literal (a literal is read as code
  instead), ``__import__`` or ``import_module`` of a computed name, ``getattr`` on torch with a
  computed name.
- ``unparsable``: a cell that is not Python even after IPython's ``%magic``/``!shell`` syntax is
  translated, or that nests too deeply to walk; one finding, to read by hand.

How it reads: each code cell is parsed with :mod:`ast` and walked in order, keeping track of what
each name refers to (imports, aliases, function parameters and locals), across cells as the
kernel would. Cells unchanged from the release (``release_nb``: the instructor's imports, locked
tests) are not reported on, but their imports still count.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Finding", "scan_source", "scan_notebook"]

MAX_DEPTH = 200  # nesting of the syntax tree that the walk follows
CODE_WIDTH = 120  # characters of a line kept in a finding

# What a name means before the notebook binds it: the instructor's usual imports.
_DEFAULT_ALIASES = {"F": "torch.nn.functional", "nn": "torch.nn", "np": "numpy"}
# Strings that point at the grader: its packages, nbgrader's variables, the sandbox's paths.
_GRADER_NAME = re.compile(r"\s*(autograder|nbgrader)(\.\w+)*\s*")
_GRADER_SIGN = re.compile(r"NBGRADER_\w+|/grader(/\S*)?|/sandbox(/\S*)?|\S*(runner|protocol)\.py")
_EXEC = frozenset({"exec", "eval", "compile", "builtins.exec", "builtins.eval", "builtins.compile"})
_IMPORTERS = frozenset({"__import__", "builtins.__import__", "importlib.import_module"})
_CODE_MAGICS = frozenset({"time", "timeit", "capture", "prun"})  # cell magics whose body is Python


@dataclass(frozen=True)
class Finding:
    """One line of a submitted notebook that the instructor should read.

    kind: see above; cell_id: the cell's nbgrader grade_id, else its id, else "cell-<index>";
    line: 1-based line in the cell; code: that line, stripped and cut to 120 characters;
    message: one sentence on what the code does and why it matters.
    """

    kind: str
    cell_id: str
    line: int
    code: str
    message: str


def _short(code: str) -> str:
    code = code.strip()
    return code if len(code) <= CODE_WIDTH else code[: CODE_WIDTH - 3] + "..."


def _parse(source: str) -> tuple[ast.Module | None, int]:
    """(the syntax tree, 0), or (None, the line of the error) when it is not Python."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(source), 0
    except SyntaxError as exc:
        return None, exc.lineno or 1
    except (RecursionError, MemoryError, ValueError):
        return None, 1


def _depth(tree: ast.AST) -> int:
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


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
        self.scopes: list[dict[str, str | None]] = [dict(_DEFAULT_ALIASES)]
        self.found: list[tuple[str, int, str]] = []  # (kind, line, message)

    def lookup(self, name: str) -> str | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return name  # unbound here: a module imported where the scanner cannot see (torch)

    def bind(self, name: str, path: str | None) -> None:
        self.scopes[-1][name] = path

    def path(self, node: ast.AST) -> str | None:
        """The dotted name an expression stands for ("torch.nn.functional.softmax"), or None."""
        if isinstance(node, ast.Name):
            return self.lookup(node.id)
        if isinstance(node, ast.Attribute):
            base = self.path(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Call) and self.path(node.func) in ("getattr", "builtins.getattr"):
            if len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
                base = self.path(node.args[0])
                return f"{base}.{node.args[1].value}" if base else None
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            holder = node.value  # F.__dict__["name"], vars(F)["name"]
            if isinstance(holder, ast.Attribute) and holder.attr == "__dict__":
                base = self.path(holder.value)
            elif isinstance(holder, ast.Call) and self.path(holder.func) == "vars" and holder.args:
                base = self.path(holder.args[0])
            else:
                return None
            return f"{base}.{node.slice.value}" if base else None
        return None

    def forbidden_in(self, path: str | None) -> str | None:
        """The forbidden built-in that `path` reaches, if any."""
        if not path:
            return None
        for name in self.forbidden:
            if path == name or path.startswith(name + "."):
                return name
        tail = path.rsplit(".", 1)[-1]
        if tail in self.tails and path.split(".", 1)[0] == "torch":
            return self.tails[tail]  # the same op under another torch name
        return None

    def emit(self, kind: str, node: ast.AST, message: str) -> None:
        self.found.append((kind, getattr(node, "lineno", 1), message))

    def grader_module(self, node: ast.AST, module: str) -> None:
        if _GRADER_NAME.fullmatch(module):
            self.emit(
                "autograder_import",
                node,
                f"Imports {module.strip()}, the grader: the reference solutions and the checks.",
            )

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.grader_module(node, alias.name)
            if alias.asname:
                self.bind(alias.asname, alias.name)
            else:
                root = alias.name.split(".", 1)[0]
                self.bind(root, root)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:  # a relative import: nothing the scanner knows
            for alias in node.names:
                self.bind(alias.asname or alias.name, None)
            return
        self.grader_module(node, module)
        for alias in node.names:
            if alias.name == "*":
                for name in self.forbidden:
                    if name.rsplit(".", 1)[0] == module:
                        self.emit("forbidden_builtin", node, _forbidden_message(name, "imports"))
                continue
            path = f"{module}.{alias.name}"
            self.grader_module(node, path)
            if (name := self.forbidden_in(path)) is not None:
                self.emit("forbidden_builtin", node, _forbidden_message(name, "imports"))
            self.bind(alias.asname or alias.name, path)

    def visit_FunctionDef(self, node) -> None:
        """A def or a lambda: decorators and defaults in the enclosing scope, the body in its own,
        where the parameters stand for nothing the scanner knows."""
        args = node.args
        for expr in [*getattr(node, "decorator_list", ()), *args.defaults, *args.kw_defaults]:
            if expr is not None:
                self.visit(expr)
        if not isinstance(node, ast.Lambda):
            self.bind(node.name, None)
        params = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
        self.scopes.append({p.arg: None for p in params if p is not None})
        for statement in node.body if isinstance(node.body, list) else [node.body]:
            self.visit(statement)
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_Lambda = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in [*node.decorator_list, *node.bases, *node.keywords]:
            self.visit(expr)
        self.scopes.append({})
        for statement in node.body:
            self.visit(statement)
        self.scopes.pop()
        self.bind(node.name, None)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        value = self.path(node.value)
        for target in node.targets:
            if isinstance(target, ast.Name):
                self.bind(target.id, value)
            else:
                self.visit(target)
                for name in ast.walk(target):
                    if isinstance(name, ast.Name) and isinstance(name.ctx, ast.Store):
                        self.bind(name.id, None)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            self.bind(node.id, None)
        elif isinstance(node.ctx, ast.Load):
            self.reference(node)

    def reference(self, node: ast.AST) -> bool:
        """Flag `node` if it reaches a forbidden built-in; whether it did."""
        name = self.forbidden_in(self.path(node))
        if name is None:
            return False
        self.emit("forbidden_builtin", node, _forbidden_message(name, "uses"))
        return True

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Load) and self.reference(node):
            return
        self.visit(node.value)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if not self.reference(node):
            self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if type(node.value) is not str:
            return
        if _GRADER_NAME.fullmatch(node.value) or _GRADER_SIGN.fullmatch(node.value.strip()):
            self.emit(
                "autograder_import",
                node,
                f"Names {node.value.strip()!r}, a sign of the grader: code that behaves "
                "differently when it is graded.",
            )

    def visit_Call(self, node: ast.Call) -> None:
        func = self.path(node.func)
        first = node.args[0] if node.args else None
        literal = isinstance(first, ast.Constant) and isinstance(first.value, (str, bytes))
        if func in _EXEC and first is not None:
            if literal:
                self.exec_literal(node, first.value)
            else:
                self.emit(
                    "dynamic_code",
                    node,
                    f"Runs code built at run time with {func}(), which the scanner cannot read.",
                )
        elif func in _IMPORTERS and first is not None:
            if literal:
                self.grader_module(node, str(first.value))
            else:
                self.emit(
                    "dynamic_code", node, f"Imports a module whose name is computed ({func})."
                )
        elif func in ("getattr", "builtins.getattr") and len(node.args) >= 2:
            name = node.args[1]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                if not self.reference(node) and name.value in self.tails:
                    self.emit(
                        "forbidden_builtin",
                        node,
                        _forbidden_message(self.tails[name.value], "looks up"),
                    )
            elif (self.path(node.args[0]) or "").split(".", 1)[0] == "torch":
                self.emit(
                    "dynamic_code",
                    node,
                    "Looks up an attribute of torch by a name computed at run time, which the "
                    "scanner cannot read.",
                )
        self.generic_visit(node)

    def exec_literal(self, node: ast.AST, code: str | bytes) -> None:
        """Read the code an exec/eval/compile of a literal runs; findings at the call's line."""
        if isinstance(code, bytes):
            code = code.decode("utf-8", "replace")
        tree, _ = _parse(code)
        if tree is None or _depth(tree) > MAX_DEPTH:
            return
        found, self.found = self.found, []
        self.visit(tree)
        inner, self.found = self.found, found
        self.found += [(kind, node.lineno, message) for kind, _, message in inner]

    def scan_cell(self, source: str, report: bool = True) -> list[tuple[str, int, str, str]]:
        """The findings of one cell: (kind, line, code, message), by line."""
        lines = source.split("\n")
        offset, python = 0, source
        if source.startswith("%%"):
            magic = source[2:].split(None, 1)[0] if source[2:].strip() else ""
            if magic not in _CODE_MAGICS:
                return []  # another language (%%bash, %%html): nothing the scanner reads
            offset, python = 1, "\n".join(lines[1:])
        tree, error_line = _parse(_python(python))
        self.found = []
        if tree is None or _depth(tree) > MAX_DEPTH:
            line = error_line + offset if tree is None else 1
            why = "is not Python" if tree is None else "nests too deeply to read"
            self.found = [("unparsable", line, f"This cell {why}, so the scanner skipped it.")]
        else:
            for statement in tree.body:
                self.visit(statement)
            self.found = [(kind, line + offset, msg) for kind, line, msg in self.found]
        if not report:
            return []
        out, seen = [], set()
        for kind, line, message in sorted(self.found, key=lambda f: f[1]):
            if (kind, line) in seen:
                continue
            seen.add((kind, line))
            code = lines[line - 1] if 0 < line <= len(lines) else ""
            out.append((kind, line, _short(code), message))
        return out


def _forbidden_message(name: str, verb: str) -> str:
    return (
        f"{verb.capitalize()} {name}, a built-in that does what the exercise asks you to write; "
        "the instructor decides whether it counts."
    )


def scan_source(source: str, *, forbidden_builtins: Iterable[str] = ()) -> list[tuple]:
    """The findings of one piece of code, as (kind, line, code, message)."""
    return _Scanner(forbidden_builtins).scan_cell(source)


def _source_text(source) -> str:
    return "".join(source) if isinstance(source, list) else str(source or "")


def _load(path_or_nb):
    import nbformat

    if isinstance(path_or_nb, Mapping):
        return nbformat.from_dict(path_or_nb)
    return nbformat.read(str(path_or_nb), as_version=4)


def _cell_id(cell: Mapping, index: int) -> str:
    grade_id = ((cell.get("metadata") or {}).get("nbgrader") or {}).get("grade_id")
    return str(grade_id or cell.get("id") or f"cell-{index}")


def scan_notebook(
    path_or_nb, *, forbidden_builtins: Iterable[str] = (), release_nb=None
) -> list[Finding]:
    """Findings for every code cell of a notebook (a path or a notebook), in order.

    Cells whose source is that of a code cell of `release_nb` (the released notebook, a path or
    a notebook) are the instructor's: not reported on, though their imports count.
    Raises what nbformat raises when a file cannot be read.
    """
    nb = _load(path_or_nb)
    released = set()
    if release_nb is not None:
        released = {
            _source_text(cell.get("source")).replace("\r\n", "\n").strip()
            for cell in _load(release_nb).cells
            if cell.get("cell_type") == "code"
        }
    scanner = _Scanner(forbidden_builtins)
    findings = []
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        source = _source_text(cell.get("source"))
        untouched = source.replace("\r\n", "\n").strip() in released
        for kind, line, code, message in scanner.scan_cell(source, report=not untouched):
            findings.append(Finding(kind, _cell_id(cell, index), line, code, message))
    return findings
