"""The submission scanner: flag code in a student's notebook for the instructor to read.

A student's notebook runs in one kernel with the tests that grade it, so code in an answer cell
can reach the tests: replace ``torch.allclose`` with a function that always says yes, install an
IPython hook that wraps every later cell in ``try/except``, end the kernel before the tests run,
read the solutions from a folder above, or call the torch built-in that the exercise asks the
student to write. The scanner reads a submitted notebook *without running it* and lists such code,
cell by cell and line by line, with one sentence each on what it does and why it matters. It never
changes a score: a finding is something to read, and some findings are honest code.

What it flags, by kind (``KINDS`` holds the same list):

- ``monkeypatch``: writing to an attribute of a module the student did not create (torch and its
  submodules and classes, numpy, math, builtins, sys, os, unittest, pytest, nbgrader, autograder,
  IPython, ...) by assignment, ``del``, ``setattr``/``delattr``, ``X.__dict__[...]``,
  ``vars(X)[...]``, ``unittest.mock.patch``; replacing ``sys.modules[...]``; rebinding at the top
  level a built-in the tests use (``AssertionError``, ``isinstance``, ``len``, ...) or a name
  imported from such a module (``from torch import allclose`` then ``allclose = ...``); and calls
  that change torch's global state (``torch.set_default_dtype``, ``torch.backends.* = ...``).
- ``ipython_hook``: the IPython shell object (``get_ipython()``: input and AST transformers,
  events, custom exception handlers, magics), trace and exception hooks (``sys.settrace``,
  ``sys.excepthook``, ``atexit``, ``signal.signal``), import hooks, unknown magics, and reading
  the call stack (``sys._getframe``, ``inspect.stack``, ``.f_back``, ``.f_locals``,
  ``.__globals__``), from which a function can see a check's expected values.
- ``process_exit``: ending or killing the kernel (``sys.exit``, ``os._exit``, ``raise
  SystemExit``, ``os.kill``, ``ctypes``, ``faulthandler``, ...), which can stop the tests.
- ``outside_read``: opening, listing or loading files (``open``, ``pathlib``, ``os.listdir``,
  ``glob``, ``shutil``, ``sqlite3``, ``torch.load``, ``np.load``, ``pd.read_*``, ``%cd``, ...)
  whose path leaves the notebook's folder (it starts with ``/`` or ``~`` or has a ``..`` part) or
  names nbgrader's files (solutions, autograder, gradebook, submitted, autograded, ``.db``,
  ``.ipynb``), or whose path is computed at run time; shell commands (``!cmd``, ``%%bash``,
  ``os.system``, ``subprocess``); and the network (``socket``, ``urllib.request``, ``requests``).
- ``forbidden_builtin``: a call of, or a reference to, a dotted name in ``forbidden_builtins``
  (the chapter declaration's ``forbidden_builtins``), however it is spelled: through import aliases
  (``import torch.nn.functional as F``, ``from torch.nn import functional``, ``from ... import
  scaled_dot_product_attention as s``), attribute chains, ``getattr(F, "name")``,
  ``F.__dict__["name"]``, a torch name that ends in the same function name
  (``torch.ops.aten.scaled_dot_product_attention``), or ``getattr(anything, "name")``.
- ``autograder_import``: importing the course's ``autograder`` package (the reference solutions;
  the grader's sandbox does not hold it, but a plain ``nbgrader autograde`` kernel does) or
  ``nbgrader`` (whose API reaches the gradebook), also through
  ``importlib.import_module`` or ``__import__``; and looking for them to tell that the code is
  being graded (``"autograder" in sys.modules``, ``os.environ["NBGRADER_EXECUTION"]``).
- ``dynamic_code``: code the scanner cannot read because it is built at run time: ``exec``,
  ``eval``, ``compile``, ``__import__``/``importlib.import_module`` with a computed argument,
  ``getattr`` on a protected module with a computed name, ``runpy``, ``pickle.loads``, ``%run``.
  When ``exec``/``eval``/``compile`` get a string literal, the string itself is scanned instead.
- ``unparsable``: a cell that is not Python even after IPython's ``%magic``/``!shell`` syntax is
  translated (with ``TransformerManager().transform_cell``), or that nests too deeply to walk
  (hundreds of levels); it gets one finding, to read by hand.

How it reads: each code cell is parsed with :mod:`ast` and walked in order, keeping track of what
each name refers to (imports, aliases such as ``f = torch.nn.functional``, function parameters
and locals, ``global``), across cells as the kernel would. Given the released notebook
(``release_nb``), cells whose source is unchanged from the release (locked test cells, the
instructor's imports) are not reported on, but their imports still count.

What it leaves out. It is static: it reads the source, never runs it, so code that builds what it
does at run time (a string decoded from base64 and passed to ``exec``, an attribute name glued
together) is caught only as far as that construction is itself flagged (``exec`` of a non-literal
is). It cannot know the type of a value, so tensor methods (``q.softmax(-1)``) and objects passed
around are not followed; a path built from variables is reported as computed, not resolved. It
does not look at outputs, metadata or files other than the notebook, and it does not look for
memory or time bombs (the grader's limits deal with those). Scan the notebooks as submitted, not
the autograded copies, which carry the hidden tests (these import ``autograder`` on purpose).

Usage::

    python -m autograder.engine.scanner submitted/*/ch04_self_attention/ch04_self_attention.ipynb \\
        --release exercises/ch04_self_attention/ch04_self_attention.ipynb

(run from the course's root, ``--release`` defaults to that file and ``--assignment`` to the
notebook's name).

Example: scan_source("import torch\\ntorch.allclose = lambda *a, **k: True") ->
[("monkeypatch", 2, "torch.allclose = lambda *a, **k: True", "Replaces torch.allclose, ...")]
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shlex
import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import nbformat

__all__ = [
    "KINDS",
    "Finding",
    "scan_source",
    "scan_notebook",
    "forbidden_builtins_for",
    "format_findings",
    "main",
]

KINDS: dict[str, str] = {
    "monkeypatch": "changes a module, class or built-in the tests share",
    "ipython_hook": "hooks into IPython or the interpreter (or reads its call stack)",
    "process_exit": "ends or kills the kernel, which can stop the tests from running",
    "outside_read": "reads outside the notebook's folder, runs a shell command or uses the network",
    "forbidden_builtin": "uses a built-in that does what the exercise asks the student to write",
    "autograder_import": "reaches for the autograder (the reference solutions) or nbgrader",
    "dynamic_code": "runs code built at run time, which the scanner cannot read",
    "unparsable": "is not Python, so the scanner could not check it",
}


@dataclass(frozen=True)
class Finding:
    """One line of a submitted notebook that the instructor should read.

    kind: one of KINDS; cell_id: the cell's nbgrader grade_id, else its id, else "cell-<index>";
    line: 1-based line in the cell; code: that line, stripped and cut to 120 characters;
    message: one sentence on what the code does and why it matters.
    """

    kind: str
    cell_id: str
    line: int
    code: str
    message: str


# --------------------------------------------------------------------------------------------
# What counts as what
# --------------------------------------------------------------------------------------------

# Modules whose attributes the tests (or nbgrader, or the kernel) rely on: writing to them is a
# monkeypatch. Modules outside this set (matplotlib, pandas, ...) are left alone, since setting
# their options is ordinary notebook code.
PROTECTED_ROOTS = frozenset({
    "torch", "numpy", "math", "builtins", "sys", "os", "unittest", "pytest", "nbgrader",
    "autograder", "IPython", "ipykernel", "inspect", "importlib", "random", "functools",
    "operator", "types", "traceback", "warnings", "time", "copy", "collections", "numbers",
    "typing", "abc", "contextlib", "gc", "nbformat", "nbconvert", "jupyter_client", "traitlets",
})

# Built-ins the tests use; rebinding one at the top level changes it for the tests as well.
SHADOWED_BUILTINS = frozenset({
    "AssertionError", "Exception", "BaseException", "isinstance", "issubclass", "len", "abs",
    "max", "min", "sum", "all", "any", "round", "float", "int", "bool", "callable", "getattr",
    "hasattr",
})

# What a name means before the notebook binds it: its conventional module, so that a cell read
# on its own (or after the instructor's import cell) still resolves `F.` and `np.`.
_DEFAULT_ALIASES = {
    "np": "numpy", "F": "torch.nn.functional", "nn": "torch.nn", "pd": "pandas",
    "plt": "matplotlib.pyplot", "Path": "pathlib.Path", "__builtins__": "builtins",
}
# Unbound names that are taken to be imported modules, so rebinding them is flagged.
_DEFAULT_IMPORTED = frozenset({"torch", "numpy", "np", "math"})

_IPY = "get_ipython()"  # the path of the IPython shell object
_GLOBALS = "globals()"  # the path of the notebook's own namespace
_GET_IPYTHON = frozenset({
    "get_ipython", "IPython.get_ipython", "IPython.core.getipython.get_ipython",
})

# Attributes of get_ipython() that `!cmd` and `%magic` turn into; judged by what they run.
_IPY_SHELL = frozenset({"system", "getoutput", "system_piped", "system_raw"})
_IPY_MAGIC = frozenset({"run_line_magic", "run_cell_magic", "magic"})
_IPY_MESSAGES = {
    "input_transformers_cleanup": "rewrites the source of every later cell before it runs, the "
    "tests included (it can, e.g., wrap them in try/except so that no test fails)",
    "input_transformers_post": "rewrites the source of every later cell before it runs, the "
    "tests included (it can, e.g., wrap them in try/except so that no test fails)",
    "input_transformer_manager": "changes how the source of every later cell is rewritten before "
    "it runs, the tests included",
    "input_splitter": "changes how the source of every later cell is rewritten before it runs",
    "ast_transformers": "rewrites the syntax tree of every later cell before it runs, the tests "
    "included (it can, e.g., remove their asserts)",
    "events": "registers a callback that runs around every later cell, the tests included",
    "set_custom_exc": "replaces how errors in later cells are handled, so a failing test can be "
    "made to look like a passing one",
    "register_magic_function": "defines a magic, code that later cells can run without it being "
    "visible as Python",
    "register_magics": "defines magics, code that later cells can run without it being visible "
    "as Python",
    "magics_manager": "changes IPython's magics, which later cells run",
    "run_cell": "runs a cell's worth of code given as a string, which the scanner cannot read",
    "run_cell_async": "runs a cell's worth of code given as a string, which the scanner cannot "
    "read",
    "user_ns": "reaches into the notebook's namespace through IPython, where the tests' names live",
    "showtraceback": "changes how errors are shown, which can hide a failing test",
}
_IPY_GENERIC = ("the IPython shell object ({}), through which code can change how later cells, "
                "the tests included, are run")

_FRAMES = ("reads the interpreter's call stack, from which a function can see the checks' "
           "inputs and expected values, or tell that it is being graded")
_HOOKS = {
    "sys.settrace": "installs a trace function that sees, and can change, every line run later, "
    "the tests included",
    "sys.setprofile": "installs a profile function that runs on every call made later, the tests "
    "included",
    "threading.settrace": "installs a trace function for every thread, the tests' included",
    "threading.setprofile": "installs a profile function for every thread, the tests' included",
    "threading.settrace_all_threads": "installs a trace function for every thread",
    "threading.setprofile_all_threads": "installs a profile function for every thread",
    "threading.excepthook": "replaces how errors in threads are reported",
    "sys.excepthook": "replaces the hook that reports uncaught errors, which can hide a failing "
    "test",
    "sys.displayhook": "replaces how results are displayed in later cells",
    "sys.breakpointhook": "replaces what breakpoint() does",
    "sys.unraisablehook": "replaces how some errors are reported",
    "sys.addaudithook": "installs an audit hook that sees every later import, open and exec",
    "sys.monitoring": "installs monitoring callbacks that see every line run later",
    "sys.meta_path": "changes how modules are imported, so later imports (the tests' too) can "
    "get replacements",
    "sys.path_hooks": "changes how modules are imported, so later imports can get replacements",
    "sys.path_importer_cache": "changes how modules are imported",
    "builtins.__import__": "replaces the import statement itself, so the tests' imports can get "
    "replacements",
    "atexit": "registers code to run when the kernel exits, after the tests",
    "signal.signal": "installs a signal handler, which can interrupt or end the tests",
    "signal.setitimer": "sets a timer that interrupts the kernel, possibly during the tests",
    "gc.callbacks": "installs a callback that runs during garbage collection, in the tests too",
    "sys._getframe": _FRAMES,
    "sys._current_frames": _FRAMES,
    "inspect.currentframe": _FRAMES,
    "inspect.stack": _FRAMES,
    "inspect.trace": _FRAMES,
    "inspect.getouterframes": _FRAMES,
    "traceback.extract_stack": _FRAMES,
    "traceback.walk_stack": _FRAMES,
}
# Attributes that lead from any object to interpreter frames or to another module's globals.
_FRAME_ATTRS = frozenset({
    "f_back", "f_locals", "f_globals", "f_builtins", "tb_frame", "gi_frame", "cr_frame",
    "ag_frame", "__globals__",
})
# A string that names the grader: a module name, or nbgrader's environment variables
# (NBGRADER_EXECUTION is set while nbgrader autogrades).
_GRADER_NAME = re.compile(r"\s*(autograder|nbgrader)(\.\w+)*\s*")
# Parts of IPython that notebooks use honestly; anything else under IPython is its internals.
_IPYTHON_OK = ("IPython.display", "IPython.core.display", "IPython.lib.display")

_EXITS = {
    "sys.exit": "ends the kernel's current run, so the cells after it (the tests) do not run",
    "exit": "ends the kernel, so the cells after it (the tests) do not run",
    "quit": "ends the kernel, so the cells after it (the tests) do not run",
    "os._exit": "kills the kernel at once, so the tests do not run",
    "os.abort": "kills the kernel at once, so the tests do not run",
    "os.kill": "sends a signal to a process (the kernel itself, perhaps), which can stop the tests",
    "os.killpg": "sends a signal to a process group, which can stop the tests",
    "signal.raise_signal": "sends a signal to the kernel itself, which can stop the tests",
    "signal.pthread_kill": "sends a signal to a thread, which can stop the tests",
    "signal.alarm": "schedules a signal that interrupts the kernel, possibly during the tests",
    "_thread.interrupt_main": "interrupts the kernel, which can stop the tests",
    "ctypes": "can crash the kernel or change the interpreter from inside",
    "faulthandler": "can end the kernel on a timer",
}
_EXIT_EXCEPTIONS = frozenset({"SystemExit", "KeyboardInterrupt", "GeneratorExit"})

_NETWORK = (
    "socket", "ssl", "urllib.request", "urllib3", "requests", "http.client", "http.server",
    "httpx", "aiohttp", "ftplib", "smtplib", "telnetlib", "paramiko", "websocket", "websockets",
    "xmlrpc", "asyncio.open_connection",
)
_SHELL = (
    "os.system", "os.popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.posix_spawnp",
    "subprocess", "pty", "pexpect", "commands", "asyncio.create_subprocess_exec",
    "asyncio.create_subprocess_shell",
)
_SHELL_PREFIXES = ("os.spawn", "os.exec")

_EXEC_FUNCS = frozenset({"exec", "eval", "compile"})
_IMPORT_FUNCS = frozenset({"__import__", "importlib.import_module", "importlib.__import__"})
_DYNAMIC = (
    "runpy", "types.FunctionType", "types.CodeType", "types.LambdaType", "marshal.loads",
    "pickle.loads", "dill.loads", "code.InteractiveInterpreter", "code.InteractiveConsole",
    "code.interact", "codeop",
)
_SETATTR_FUNCS = {
    "setattr": "replaces", "object.__setattr__": "replaces", "type.__setattr__": "replaces",
    "delattr": "deletes", "object.__delattr__": "deletes", "type.__delattr__": "deletes",
}
_DICT_WRITERS = ("update", "setdefault", "__setitem__", "__delitem__", "pop", "popitem", "clear")

_GLOBAL_STATE_CALLS = frozenset({
    "torch.set_default_dtype", "torch.set_default_device", "torch.set_default_tensor_type",
    "torch.use_deterministic_algorithms", "torch.set_deterministic_debug_mode",
    "torch.set_float32_matmul_precision", "torch.set_flush_denormal",
    "torch.set_autocast_enabled", "torch.backends.cuda.enable_flash_sdp",
    "torch.backends.cuda.enable_math_sdp", "torch.backends.cuda.enable_mem_efficient_sdp",
})
# Used honestly as context managers; only a bare call (a statement of its own) is global.
_GRAD_MODE_CALLS = frozenset({"torch.set_grad_enabled", "torch.autograd.set_grad_enabled"})
_GLOBAL_STATE_MESSAGE = "changes torch's global state, which the hidden tests share"

# Functions that take a path: dotted name -> (position, keyword, verb).
_FILE_FUNCS = {
    "open": (0, "file", "opens"),
    "io.open": (0, "file", "opens"),
    "io.FileIO": (0, "file", "opens"),
    "codecs.open": (0, "filename", "opens"),
    "os.open": (0, "path", "opens"),
    "os.listdir": (0, "path", "lists"),
    "os.scandir": (0, "path", "lists"),
    "os.walk": (0, "top", "walks"),
    "os.chdir": (0, "path", "changes into"),
    "os.stat": (0, "path", "looks at"),
    "os.access": (0, "path", "looks at"),
    "os.path.exists": (0, "path", "looks at"),
    "os.path.isfile": (0, "path", "looks at"),
    "os.path.isdir": (0, "s", "looks at"),
    "os.path.getsize": (0, "filename", "looks at"),
    "os.path.expanduser": (0, "path", "expands"),
    "glob.glob": (0, "pathname", "lists"),
    "glob.iglob": (0, "pathname", "lists"),
    "sqlite3.connect": (0, "database", "connects to the database"),
    "torch.load": (0, "f", "loads"),
    "torch.jit.load": (0, "f", "loads"),
    "numpy.load": (0, "file", "loads"),
    "numpy.loadtxt": (0, "fname", "loads"),
    "numpy.genfromtxt": (0, "fname", "loads"),
    "numpy.fromfile": (0, "file", "loads"),
    "nbformat.read": (0, "fp", "reads"),
    "linecache.getline": (0, "filename", "reads"),
    "linecache.getlines": (0, "filename", "reads"),
    "tokenize.open": (0, "filename", "opens"),
    "runpy.run_path": (0, "path_name", "runs"),
    "importlib.util.spec_from_file_location": (1, "location", "imports code from"),
    "importlib.machinery.SourceFileLoader": (1, "path", "imports code from"),
    "tarfile.open": (0, "name", "opens"),
    "zipfile.ZipFile": (0, "file", "opens"),
    "sys.path.append": (0, None, "adds to the import path"),
    "sys.path.insert": (1, None, "adds to the import path"),
    "sys.path.extend": (0, None, "adds to the import path"),
}
_PATH_CTORS = frozenset({
    "pathlib.Path", "pathlib.PurePath", "pathlib.PosixPath", "pathlib.WindowsPath",
    "pathlib.PurePosixPath", "pathlib.PureWindowsPath",
})
_PATH_METHODS = {
    "read_text": "reads", "read_bytes": "reads", "open": "opens", "iterdir": "lists",
    "glob": "lists", "rglob": "lists", "walk": "walks", "write_text": "writes",
    "write_bytes": "writes", "unlink": "deletes", "rmdir": "deletes", "exists": "looks at",
    "is_file": "looks at", "is_dir": "looks at", "stat": "looks at",
}
_NBGRADER_WORDS = (
    "solutions", "autograder", "gradebook", "submitted", "autograded", "feedback", "nbgrader",
    ".db", ".ipynb", ".git",
)

# Magics. Those that take code are scanned as code; the rest are judged by name.
_CODE_LINE_MAGICS = frozenset({"time", "timeit", "prun"})
_SHELL_LINE_MAGICS = frozenset({
    "sx", "sc", "system", "alias", "unalias", "rehashx", "ls", "ll", "lf", "lk", "lx", "ldir",
    "cat", "less", "more", "man", "mkdir", "rmdir", "rm", "cp", "mv", "bash", "sh", "script",
})
_PACKAGE_MAGICS = frozenset({"pip", "conda", "mamba", "micromamba", "uv"})
_PATH_MAGICS = {
    "cd": "changes into", "pushd": "changes into", "bookmark": "bookmarks", "load": "loads",
    "loadpy": "loads", "pycat": "shows", "pfile": "shows", "notebook": "writes", "save": "writes",
    "logstart": "logs to", "run": "runs",
}
_HOOK_LINE_MAGICS = frozenset({
    "config", "alias_magic", "autocall", "automagic", "macro", "rerun", "recall", "gui",
    "autoawait", "killbgscripts", "unload_ext", "reload_ext", "load_ext", "store", "logon",
    "logoff", "popd",
})
_SAFE_EXTENSIONS = frozenset({"autoreload"})
_SAFE_LINE_MAGICS = frozenset({
    "matplotlib", "autoreload", "aimport", "precision", "pprint", "who", "whos", "who_ls", "pwd",
    "xmode", "lsmagic", "magic", "quickref", "page", "pinfo", "pinfo2", "psearch", "pdoc", "pdef",
    "psource", "tb", "colors", "doctest_mode", "env", "set_env", "history", "reset",
    "reset_selective", "xdel", "debug", "pdb", "dirs", "dhist", "clear", "notebook_mode",
})
_CODE_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun"})
_SHELL_CELL_MAGICS = frozenset({
    "bash", "sh", "zsh", "script", "system", "sx", "!", "perl", "ruby", "python", "python2",
    "python3", "pypy",
})
_SAFE_CELL_MAGICS = frozenset({"html", "HTML", "markdown", "latex", "svg", "javascript", "js"})


class _Binding(NamedTuple):
    """What a name refers to: a dotted path (None for the student's own objects)."""

    path: str | None
    imported: bool = False


_USER = _Binding(None)


class _Scope:
    def __init__(self, kind: str) -> None:
        self.kind = kind  # "module", "function" or "class"
        self.names: dict[str, _Binding] = {}
        self.globals: set[str] = set()


def _default(name: str) -> _Binding:
    return _Binding(_DEFAULT_ALIASES.get(name, name), name in _DEFAULT_IMPORTED)


def _norm(path: str) -> str:
    """builtins.open and open are the same function."""
    return path[len("builtins."):] if path.startswith("builtins.") else path


def _root(path: str) -> str:
    return path.split(".", 1)[0]


def _under(path: str, prefixes: Iterable[str]) -> str | None:
    """The first of `prefixes` that is `path` or a dotted parent of it."""
    for prefix in prefixes:
        if path == prefix or path.startswith(prefix + "."):
            return prefix
    return None


def _literal_str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _outside(text: str) -> str | None:
    """Why a path (as far as it is known) is suspect, or None for a plain name in the folder."""
    t = text.strip().replace("\\", "/")
    if t.startswith(("/", "~")) or re.match(r"^[A-Za-z]:/", t) or ".." in t.split("/"):
        return "outside the notebook's folder"
    lower = t.lower()
    for word in _NBGRADER_WORDS:
        if word in lower:
            return f"which names nbgrader's or the course's files ({word!r})"
    return None


def _short(node: ast.AST, limit: int = 60) -> str:
    try:
        text = ast.unparse(node)
    except Exception:  # ast.unparse fails on a few odd trees; the text is only for the message
        return "an expression"
    return text if len(text) <= limit else text[: limit - 3] + "..."


_TRANSFORMER = None


def _ipython_to_python(source: str) -> str | None:
    """Translate %magic, !shell and ? syntax into the Python IPython would run, or None."""
    global _TRANSFORMER
    try:
        if _TRANSFORMER is None:
            from IPython.core.inputtransformer2 import TransformerManager

            _TRANSFORMER = TransformerManager()
        return _TRANSFORMER.transform_cell(source)
    except Exception:  # no IPython, or source it cannot transform: the caller reports it
        return None


def _parse(source: str) -> tuple[ast.Module | None, BaseException | None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarning on odd escapes is the student's business
        try:
            flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT  # IPython allows `await`
            return compile(source, "<cell>", "exec", flags=flags, dont_inherit=True), None
        except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
            return None, exc


def _parse_cell(source: str) -> tuple[ast.Module | None, BaseException | None]:
    """Parse as Python; failing that, as IPython after translating its syntax."""
    tree, error = _parse(source)
    if tree is None:
        transformed = _ipython_to_python(source)
        if transformed is not None and transformed != source:
            tree, _ = _parse(transformed)
    return tree, error


# --------------------------------------------------------------------------------------------
# The walk
# --------------------------------------------------------------------------------------------


class _Scanner(ast.NodeVisitor):
    """Walks the cells of one notebook in order, keeping their shared namespace."""

    def __init__(self, forbidden_builtins: Iterable[str] = ()) -> None:
        names = (str(name).strip() for name in forbidden_builtins)
        self.forbidden = tuple(dict.fromkeys(name for name in names if name))
        self.forbidden_last: dict[str, str] = {}
        for name in self.forbidden:
            self.forbidden_last.setdefault(name.rsplit(".", 1)[-1], name)
        self.module = _Scope("module")
        self.scopes = [self.module]
        self.report = True
        self.findings: list[tuple[str, int, str]] = []
        self.parents: dict[ast.AST, ast.AST] = {}
        self.fixed_line: int | None = None
        self.line_offset = 0
        self.prefix = ""
        self.depth = 0

    # ----- entry point ----------------------------------------------------------------------

    def scan_cell(self, source: str, report: bool = True) -> list[tuple[str, int, str, str]]:
        """Findings (kind, line, code, message) for one cell; with report=False only bind names."""
        lines = source.splitlines()
        self.report, self.findings, self.parents = report, [], {}
        self.fixed_line, self.line_offset, self.prefix, self.depth = None, 0, "", 0
        tree, error = _parse_cell(source)
        if tree is None:
            if not report:
                return []
            line = getattr(error, "lineno", None) or 1
            reason = getattr(error, "msg", None) or type(error).__name__
            message = (f"Cannot be parsed as Python, even after IPython's %magic and !shell "
                       f"syntax is translated ({reason}), so the scanner could not check this "
                       "cell; read it by hand.")
            line = min(max(line, 1), max(len(lines), 1))
            return [("unparsable", line, _code_at(lines, line), message)]
        try:
            self._walk(tree)
        except RecursionError:
            self.scopes = [self.module]
            self.fixed_line = None
            self._emit("unparsable", None, "is nested too deeply for the scanner to follow, so "
                       "the rest of this cell was not checked; read it by hand")
        seen: set[tuple[str, int]] = set()
        out = []
        for kind, line, message in sorted(self.findings, key=lambda f: f[1]):
            if (kind, line) not in seen:  # one finding per kind and line is enough to send
                seen.add((kind, line))    # the instructor there
                out.append((kind, line, _code_at(lines, line), message))
        return out

    def _walk(self, tree: ast.AST) -> None:
        for parent in ast.walk(tree):
            for child in ast.iter_child_nodes(parent):
                self.parents[child] = parent
        self.visit(tree)

    def _embedded(self, node: ast.AST, code: str, prefix: str, *, body: bool = False) -> bool:
        """Scan code given as a string (exec's argument, a %%time body); False if not Python.

        A cell magic's body starts on the cell's second line; anything else is reported on the
        line of `node`.
        """
        if self.depth >= 5:
            return True
        tree, _ = _parse_cell(code)
        if tree is None:
            return False
        saved = (self.fixed_line, self.line_offset, self.prefix)
        if body and self.fixed_line is None:
            self.line_offset = self._line(node)
        else:
            self.fixed_line = self._line(node)
        self.prefix = self.prefix or prefix
        self.depth += 1
        try:
            self._walk(tree)
        finally:
            self.depth -= 1
            self.fixed_line, self.line_offset, self.prefix = saved
        return True

    def _line(self, node: ast.AST | None) -> int:
        if self.fixed_line is not None:
            return self.fixed_line
        return getattr(node, "lineno", 1) + self.line_offset

    def _emit(self, kind: str, node: ast.AST | None, message: str) -> None:
        if not self.report:
            return
        message = self.prefix + message
        message = message[0].upper() + message[1:]
        if not message.endswith("."):
            message += "."
        self.findings.append((kind, self._line(node), message))

    # ----- names ----------------------------------------------------------------------------

    def _lookup(self, name: str) -> _Binding:
        for i, scope in enumerate(reversed(self.scopes)):
            if scope.kind == "class" and i != 0:
                continue  # methods do not see their class's names
            if name in scope.globals:
                break
            if name in scope.names:
                return scope.names[name]
        return self.module.names.get(name) or _default(name)

    def _bind(self, name: str, binding: _Binding, node: ast.AST, via_import: bool = False) -> None:
        scope = self.scopes[-1]
        if scope.kind != "module" and name not in scope.globals:
            scope.names[name] = binding
            return
        self._check_rebind(name, binding, node, via_import)
        self.module.names[name] = binding

    def _check_rebind(self, name: str, new: _Binding, node: ast.AST, via_import: bool) -> None:
        """A top-level name the tests may use is made to mean something else."""
        if name in SHADOWED_BUILTINS and new.path not in (name, f"builtins.{name}"):
            self._emit("monkeypatch", node, f"rebinds the built-in {name} for the whole notebook, "
                       f"so the tests, which run in the same namespace, would use the replacement")
            return
        old = self.module.names.get(name) or _default(name)
        if not (old.imported and old.path and _root(old.path) in PROTECTED_ROOTS):
            return
        if new.path == old.path or (via_import and new.path and _root(new.path) in PROTECTED_ROOTS):
            return
        self._emit("monkeypatch", node, f"rebinds {name} (imported: {old.path}), so later code "
                   f"that uses {name} (a test, say) would run the replacement")

    # ----- what an expression refers to -----------------------------------------------------

    def _resolve(self, node: ast.AST) -> str | None:
        """The dotted path an expression refers to, or None when it is not a known module's."""
        if isinstance(node, ast.Name):
            return self._lookup(node.id).path
        if isinstance(node, ast.Attribute):
            base = self._resolve(node.value)
            return None if base is None else f"{base}.{node.attr}"
        if isinstance(node, ast.Subscript):
            base, key = self._resolve(node.value), _literal_str(node.slice)
            if base is None or key is None:
                return None
            if base == "sys.modules":
                return key
            if base == _GLOBALS:
                return (self.module.names.get(key) or _default(key)).path
            if base.endswith(".__dict__"):
                return f"{base[: -len('.__dict__')]}.{key}"
            if base == "builtins":
                return f"builtins.{key}"
            return None
        if isinstance(node, ast.Call):
            return self._resolve_call(node)
        return None

    def _resolve_call(self, node: ast.Call) -> str | None:
        func = self._resolve(node.func)
        if func is None:
            return None
        f, args = _norm(func), node.args
        if f in _GET_IPYTHON:
            return _IPY
        if f == "getattr" and len(args) >= 2:
            base, name = self._resolve(args[0]), _literal_str(args[1])
            return f"{base}.{name}" if base and name else None
        if f.endswith((".__getattribute__", ".__getattr__", ".__dict__.get")) and args:
            name = _literal_str(args[0])
            base = f.rsplit(".", 1)[0].removesuffix(".__dict__")
            return f"{base}.{name}" if name else None
        if f == "vars" and args:
            base = self._resolve(args[0])
            return f"{base}.__dict__" if base else None
        if f == "globals" or (f in ("vars", "locals") and not args and len(self.scopes) == 1):
            return _GLOBALS
        if f in _IMPORT_FUNCS and args:
            return _literal_str(args[0])
        if f == "importlib.reload" and args:
            return self._resolve(args[0])
        if f in ("sys.modules.get", "sys.modules.__getitem__") and args:
            return _literal_str(args[0])
        return None

    def _extends(self, parent: ast.AST | None, node: ast.AST) -> bool:
        """Whether `parent` refers to something through `node` (so only it is checked)."""
        if isinstance(parent, ast.Attribute):
            return parent.value is node
        if isinstance(parent, ast.Subscript):
            return parent.value is node and self._resolve(parent) is not None
        if isinstance(parent, ast.Call):
            via = parent.func is node or (bool(parent.args) and parent.args[0] is node)
            return via and self._resolve(parent) is not None
        return False

    def _reference(self, node: ast.AST) -> None:
        path = self._resolve(node)
        if path is not None and not self._extends(self.parents.get(node), node):
            self._check_path(node, path, "uses")

    # ----- judging a path -------------------------------------------------------------------

    def _forbidden(self, path: str) -> str | None:
        hit = _under(path, self.forbidden)
        if hit is None and _root(path) == "torch":
            hit = self.forbidden_last.get(path.rsplit(".", 1)[-1])
        return hit

    def _check_path(self, node: ast.AST, path: str, verb: str) -> None:
        """Flag what a reference (or an import) to `path` means."""
        p = _norm(path)
        parts = p.split(".")
        root = parts[0]
        hit = self._forbidden(p)
        if hit is not None:
            alias = f" (the same function as {hit})" if not _under(p, (hit,)) else ""
            self._emit("forbidden_builtin", node, f"{verb} {p}{alias}, a built-in that does what "
                       "this exercise asks the student to write")
        if root == "autograder":
            self._emit("autograder_import", node, f"{verb} {p}, the course's autograder, which "
                       "holds the reference solutions during grading (students do not have it)")
        elif root == "nbgrader":
            self._emit("autograder_import", node, f"{verb} {p}, whose API can read and change "
                       "the gradebook")
        exit_ = _under(p, _EXITS)
        if exit_ is not None:
            self._emit("process_exit", node, f"{verb} {p}, which {_EXITS[exit_]}")
        hook = _under(p, _HOOKS)
        if hook is not None:
            self._emit("ipython_hook", node, f"{verb} {p}, which {_HOOKS[hook]}")
        elif root in ("IPython", "ipykernel") and len(parts) > 1:
            if not _under(p, _IPYTHON_OK) and p not in _GET_IPYTHON:
                self._emit("ipython_hook", node, f"{verb} {p}, part of IPython's internals, "
                           "through which code can change how later cells (the tests) run")
        elif root == _IPY:
            attr = parts[1] if len(parts) > 1 else None
            if attr in _IPY_MESSAGES:
                self._emit("ipython_hook", node, f"{verb} {p}, which {_IPY_MESSAGES[attr]}")
            elif attr not in _IPY_SHELL | _IPY_MAGIC:
                self._emit("ipython_hook", node, f"{verb} " + _IPY_GENERIC.format(p))
        if _under(p, _NETWORK):
            self._emit("outside_read", node, f"{verb} {p}, which reaches the network")
        if _under(p, _SHELL) or p.startswith(_SHELL_PREFIXES):
            self._emit("outside_read", node, f"runs a shell command or program ({verb} {p}), "
                       "which can read anything the grader's account can")
        if p.startswith(("unittest.mock.patch", "mock.patch")) or p == "pytest.MonkeyPatch":
            self._emit("monkeypatch", node, f"{verb} {p}, which replaces functions for the code "
                       "that runs while it is active")
        if p in ("pathlib.Path.home", "os.path.expanduser", "os.getlogin"):
            self._emit("outside_read", node, f"{verb} {p}, which points to the home folder, "
                       "outside the notebook's")

    def _attribute_write(self, node: ast.AST, base: str | None, attr: str | None,
                         verb: str) -> None:
        """`base.attr` is assigned or deleted (attr None: an attribute chosen at run time)."""
        if base is None:
            return
        if base == _GLOBALS:
            if attr is None:
                self._emit("monkeypatch", node, f"{verb} a name chosen at run time in the "
                           "notebook's namespace (globals()), which the tests share")
            else:
                self._check_rebind(attr, _USER, node, False)
                self.module.names[attr] = _USER
            return
        if base == "sys.modules":
            which = f"the module {attr!r}" if attr else "a module"
            self._emit("monkeypatch", node, f"{verb} {which} in sys.modules, so later imports (the "
                       "tests' too) get the replacement")
            return
        if _root(base) == _IPY:
            attr_path = f"{base}.{attr}" if attr else base
            self._emit("ipython_hook", node, f"{verb} {attr_path}, which "
                       + _IPY_MESSAGES.get(attr or "", "changes how later cells run"))
            return
        if _root(base) not in PROTECTED_ROOTS:
            return
        if attr is None:
            self._emit("monkeypatch", node, f"{verb} an attribute of {base} whose name is computed "
                       "at run time, so the tests may be calling a replacement")
            return
        full = f"{base}.{attr}"
        hook = _under(full, _HOOKS)
        if hook is not None:
            self._emit("ipython_hook", node, f"{verb} {full}, which {_HOOKS[hook]}")
        elif full.startswith("torch.backends.") or full in _GLOBAL_STATE_CALLS:
            self._emit("monkeypatch", node, f"{verb} {full}, which {_GLOBAL_STATE_MESSAGE}")
        elif (attr.startswith("__") and attr.endswith("__") and _root(base) == "torch"
              and base.rsplit(".", 1)[-1][:1].isupper()):
            self._emit("monkeypatch", node, f"{verb} {full}, which changes how every {base} "
                       "behaves, in the tests too")
        elif verb == "deletes":
            self._emit("monkeypatch", node, f"deletes {full}, which the tests may use")
        else:
            self._emit("monkeypatch", node, f"{verb} {full}, which the tests may use: a test "
                       "that relies on it would run the replacement")

    def _store(self, target: ast.AST, binding: _Binding, verb: str = "replaces") -> None:
        if isinstance(target, ast.Name):
            if verb == "deletes":
                if len(self.scopes) == 1:
                    self.module.names.pop(target.id, None)
            else:
                self._bind(target.id, binding, target)
        elif isinstance(target, ast.Attribute):
            self._attribute_write(target, self._resolve(target.value), target.attr, verb)
            self.generic_visit(target)
        elif isinstance(target, ast.Subscript):
            base = self._resolve(target.value)
            if base is not None and (base in ("sys.modules", _GLOBALS, "builtins")
                                     or base.endswith(".__dict__")):
                base = base.removesuffix(".__dict__")
                self._attribute_write(target, base, _literal_str(target.slice), verb)
            self.generic_visit(target)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self._store(element, _USER, verb)
        elif isinstance(target, ast.Starred):
            self._store(target.value, _USER, verb)
        else:
            self.visit(target)

    def _value_binding(self, value: ast.AST | None) -> _Binding:
        path = self._resolve(value) if value is not None else None
        return _Binding(path) if path is not None else _USER

    # ----- statements -----------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_path(node, alias.name, "imports")
            if alias.asname:
                self._bind(alias.asname, _Binding(alias.name, True), node, via_import=True)
            else:
                top = _root(alias.name)
                self._bind(top, _Binding(top, True), node, via_import=True)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        for alias in node.names:
            if node.level:  # a relative import; a notebook has no package to import from
                if alias.name != "*":
                    self._bind(alias.asname or alias.name, _USER, node)
                continue
            if alias.name == "*":
                self._check_path(node, module, "imports")
                for name in self.forbidden:
                    if name.rsplit(".", 1)[0] == module:
                        self._emit("forbidden_builtin", node, f"imports every public name of "
                                   f"{module}, {name} among them, a built-in that does what "
                                   "this exercise asks the student to write")
                continue
            full = f"{module}.{alias.name}"
            self._check_path(node, full, "imports")
            self._bind(alias.asname or alias.name, _Binding(full, True), node, via_import=True)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        binding = self._value_binding(node.value)
        for target in node.targets:
            self._store(target, binding)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.annotation)
        if node.value is not None:
            self.visit(node.value)
            self._store(node.target, self._value_binding(node.value))

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        self._store(node.target, _USER, "changes")

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self._store(node.target, self._value_binding(node.value))

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self._store(target, _USER, "deletes")

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self._store(node.target, _USER)
        for statement in node.body + node.orelse:
            self.visit(statement)

    visit_AsyncFor = visit_For

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self._store(item.optional_vars, _USER)
        for statement in node.body:
            self.visit(statement)

    visit_AsyncWith = visit_With

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self._bind(node.name, _USER, node)
        for statement in node.body:
            self.visit(statement)

    def visit_Global(self, node: ast.Global) -> None:
        if len(self.scopes) > 1:
            self.scopes[-1].globals.update(node.names)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        self._visit_arguments(node.args)
        if node.returns is not None:
            self.visit(node.returns)
        self._bind(node.name, _USER, node)
        self._in_function(node.args, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._visit_arguments(node.args)
        self._in_function(node.args, [node.body])

    def _visit_arguments(self, args: ast.arguments) -> None:
        for default in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
            self.visit(default)
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None and arg.annotation is not None:
                self.visit(arg.annotation)

    def _in_function(self, args: ast.arguments, body: list[ast.AST]) -> None:
        scope = _Scope("function")
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None:
                scope.names[arg.arg] = _USER
        self.scopes.append(scope)
        try:
            for statement in body:
                self.visit(statement)
        finally:
            self.scopes.pop()

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in [*node.decorator_list, *node.bases, *node.keywords]:
            self.visit(expr)
        self.scopes.append(_Scope("class"))
        try:
            for statement in node.body:
                self.visit(statement)
        finally:
            self.scopes.pop()
        self._bind(node.name, _USER, node)

    def _comprehension(self, node: ast.AST, results: list[ast.AST]) -> None:
        self.scopes.append(_Scope("function"))
        try:
            for generator in node.generators:
                self.visit(generator.iter)
                self._store(generator.target, _USER)
                for condition in generator.ifs:
                    self.visit(condition)
            for result in results:
                self.visit(result)
        finally:
            self.scopes.pop()

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self._comprehension(node, [node.elt])

    visit_SetComp = visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._comprehension(node, [node.key, node.value])

    def visit_Raise(self, node: ast.Raise) -> None:
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        path = self._resolve(exc) if exc is not None else None
        if path is not None and _norm(path) in _EXIT_EXCEPTIONS:
            self._emit("process_exit", node, f"raises {_norm(path)}, which ends the kernel's run, "
                       "so the cells after it (the tests) do not run")
        self.generic_visit(node)

    # ----- expressions ----------------------------------------------------------------------

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._reference(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Load):
            self._reference(node)
        if node.attr == "__globals__":
            self._emit("ipython_hook", node, "uses .__globals__, which reaches the namespace of "
                       "the module a function comes from (a check's helpers and values, say)")
        elif node.attr in _FRAME_ATTRS:
            self._emit("ipython_hook", node, f"uses .{node.attr}, which {_FRAMES}")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if not isinstance(node.value, str):
            return
        if _GRADER_NAME.fullmatch(node.value):
            self._emit("autograder_import", node, f"names the package {node.value.strip()!r} in a "
                       "string, e.g. to import it by name or to look for it in sys.modules and "
                       "tell that it is being graded")
        elif "NBGRADER_" in node.value:
            self._emit("autograder_import", node, "mentions nbgrader's environment variables "
                       f"({node.value.strip()[:40]!r}), which tell code that it is being graded")

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, ast.Load):
            self._reference(node)
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        parent = self.parents.get(node)
        if (isinstance(node.op, ast.Div) and self._is_path(node)
                and not (isinstance(parent, ast.BinOp) and self._is_path(parent))):
            self._check_path_arg(node, node, "builds the path", literal_only=True)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = self._resolve(node.func)
        if func is not None:
            self._check_call(node, _norm(func))
        self._check_path_method(node)
        self._reference(node)
        self.generic_visit(node)

    def _check_call(self, node: ast.Call, f: str) -> None:
        args = node.args
        first = args[0] if args else None
        if f in _EXEC_FUNCS:
            code = first.value if isinstance(first, ast.Constant) else None
            if isinstance(code, bytes):
                code = code.decode("utf-8", "replace")
            if isinstance(code, str):
                if not self._embedded(node, code, f"in the string run by {f}(): "):
                    self._emit("dynamic_code", node, f"runs with {f}() a string that is not valid "
                               "Python")
            elif first is not None:
                self._emit("dynamic_code", node, f"runs with {f}() code built at run time "
                           f"({_short(first)}), which the scanner cannot read")
        elif f in _IMPORT_FUNCS:
            name = _literal_str(first)
            if name is not None:
                self._check_path(node, name, "imports")
            elif first is not None:
                self._emit("dynamic_code", node, f"imports with {f}() a module whose name is "
                           f"computed at run time ({_short(first)}), which the scanner cannot read")
        elif _under(f, _DYNAMIC):
            self._emit("dynamic_code", node, f"calls {f}, which runs code the scanner cannot read")
        elif f in _SETATTR_FUNCS and len(args) >= 2:
            self._attribute_write(node, self._resolve(args[0]), _literal_str(args[1]),
                                  _SETATTR_FUNCS[f])
        elif f.endswith((".__setattr__", ".__delattr__")) and args:
            verb = "deletes" if f.endswith("__delattr__") else "replaces"
            self._attribute_write(node, f.rsplit(".", 1)[0], _literal_str(first), verb)
        elif f.rsplit(".", 1)[-1] in _DICT_WRITERS and "." in f:
            self._check_dict_write(node, f.rsplit(".", 1)[0])
        elif f in _GLOBAL_STATE_CALLS or (
            f in _GRAD_MODE_CALLS and isinstance(self.parents.get(node), ast.Expr)
        ):
            self._emit("monkeypatch", node, f"calls {f}, which {_GLOBAL_STATE_MESSAGE}")
        elif f in ("unittest.mock.patch", "mock.patch") and _literal_str(first):
            self._emit("monkeypatch", node, f"patches {_literal_str(first)} with unittest.mock, "
                       "so code that runs while the patch is active gets a replacement")
        elif f in ("unittest.mock.patch.object", "mock.patch.object") and len(args) >= 2:
            target = self._resolve(args[0])
            self._emit("monkeypatch", node, f"patches {target or _short(args[0])}."
                       f"{_literal_str(args[1]) or '<computed>'} with unittest.mock")
        elif f in ("getattr", "operator.attrgetter") or f.endswith(".__getattribute__"):
            self._check_getattr(node, f)
        elif f.startswith(_IPY + "."):
            self._check_ipython_call(node, f.split(".", 1)[1])
        self._check_file_call(node, f)

    def _check_dict_write(self, node: ast.Call, container: str) -> None:
        if container == "sys.modules":
            self._emit("monkeypatch", node, "changes sys.modules, so later imports (the tests' "
                       "too) can get replacements")
        elif container == _GLOBALS:
            self._emit("monkeypatch", node, "rebinds names in the notebook's namespace through "
                       "globals(), which the tests share")
        elif container.endswith(".__dict__") and _root(container) in PROTECTED_ROOTS:
            self._emit("monkeypatch", node, f"changes the attributes of "
                       f"{container.removesuffix('.__dict__')} through its __dict__, which the "
                       "tests may use")

    def _check_getattr(self, node: ast.Call, f: str) -> None:
        at = 1 if f == "getattr" else 0
        if len(node.args) <= at:
            return
        name = _literal_str(node.args[at])
        if name is not None:
            hit = self.forbidden_last.get(name)
            looked_up = self._resolve(node)
            if hit is not None and (looked_up is None or self._forbidden(_norm(looked_up)) is None):
                self._emit("forbidden_builtin", node, f"looks up {name!r} by name, the name of "
                           f"{hit}, a built-in that does what this exercise asks the student to "
                           "write")
            return
        base = self._resolve(node.args[0]) if f == "getattr" else f.rsplit(".", 1)[0]
        if base is not None and (_root(base) in PROTECTED_ROOTS or _root(base) == _IPY):
            self._emit("dynamic_code", node, f"looks up an attribute of {base} whose name is "
                       f"computed at run time ({_short(node.args[at])}), which hides what it uses")

    def _check_ipython_call(self, node: ast.Call, attr: str) -> None:
        args = node.args
        if attr in _IPY_SHELL:
            command = _literal_str(args[0]) if args else None
            shown = f" ({command.strip()!r})" if command else ""
            self._emit("outside_read", node, f"runs a shell command{shown}, which can read "
                       "anything the grader's account can, outside the notebook's folder too")
        elif attr in ("run_line_magic", "magic"):
            name = _literal_str(args[0]) if args else None
            if name is None:
                self._emit("dynamic_code", node, "runs a magic whose name is computed at run time")
                return
            line = _literal_str(args[1]) if len(args) > 1 else ""
            if attr == "magic":
                name, _, line = name.lstrip("%").partition(" ")
            self._line_magic(node, name.lstrip("%"), line or "")
        elif attr == "run_cell_magic":
            name = _literal_str(args[0]) if args else None
            line = _literal_str(args[1]) if len(args) > 1 else None
            body = _literal_str(args[2]) if len(args) > 2 else None
            if name is None or line is None or body is None:
                self._emit("dynamic_code", node, "runs a cell magic built at run time")
                return
            self._cell_magic(node, name, line, body)

    def _line_magic(self, node: ast.Call, name: str, arg: str) -> None:
        if name in _CODE_LINE_MAGICS:
            code = arg
            while code and not _parse(code)[0]:
                head, _, rest = code.partition(" ")
                if not head.startswith("-") and not head.isdigit():
                    break
                code = rest.strip()
            if code and not self._embedded(node, code, f"in %{name}: "):
                self._emit("unparsable", node, f"the code given to %{name} could not be read")
        elif name in _SHELL_LINE_MAGICS:
            self._emit("outside_read", node, f"runs a shell command (%{name} {arg.strip()}), which "
                       "can read anything the grader's account can")
        elif name in _PACKAGE_MAGICS:
            self._emit("outside_read", node, f"installs packages with %{name}, which reaches the "
                       "network and changes the grader's environment")
        elif name in _PATH_MAGICS:
            if name == "run":
                self._emit("dynamic_code", node, f"runs the file named in %run {arg.strip()}, "
                           "whose code the scanner cannot see")
            self._check_magic_path(node, f"%{name}", arg, _PATH_MAGICS[name])
        elif name == "load_ext" and arg.split()[:1] and arg.split()[0] in _SAFE_EXTENSIONS:
            pass
        elif name in _HOOK_LINE_MAGICS:
            self._emit("ipython_hook", node, f"runs %{name} {arg.strip()}, which changes IPython's "
                       "configuration, extensions or stored values for the cells after it")
        elif name not in _SAFE_LINE_MAGICS:
            self._emit("ipython_hook", node, f"runs %{name}, a magic the scanner does not know (it "
                       "may have been defined in the notebook)")

    def _cell_magic(self, node: ast.Call, name: str, line: str, body: str) -> None:
        if name in _CODE_CELL_MAGICS:
            if not self._embedded(node, body, "", body=True):
                self._emit("unparsable", node, f"the body of this %%{name} cell is not Python, "
                           "so the scanner could not check it; read it by hand")
        elif name in _SHELL_CELL_MAGICS:
            first = next((text.strip() for text in body.splitlines() if text.strip()), "")
            self._emit("outside_read", node, f"runs a shell command (a %%{name} cell: "
                       f"{first[:60]!r}), which can read anything the grader's account can")
        elif name in ("writefile", "file"):
            self._check_magic_path(node, f"%%{name}", line, "writes")
        elif name not in _SAFE_CELL_MAGICS:
            self._emit("ipython_hook", node, f"runs the cell magic %%{name}, which the scanner "
                       "does not know (it may have been defined in the notebook)")

    def _check_magic_path(self, node: ast.AST, magic: str, arg: str, verb: str) -> None:
        try:
            tokens = shlex.split(arg)
        except ValueError:
            tokens = arg.split()
        paths = [token for token in tokens if not token.startswith("-")]
        path = paths[-1] if paths else ("~" if magic == "%cd" and not tokens else "")
        if "$" in path or "{" in path:
            self._emit("outside_read", node, f"{verb} a path computed at run time with {magic} "
                       f"({path!r}), so the scanner cannot tell whether it leaves the folder")
            return
        why = _outside(path)
        if why is not None:
            self._emit("outside_read", node, f"{verb} {path!r} with {magic}, {why}")

    # ----- files ----------------------------------------------------------------------------

    def _check_file_call(self, node: ast.Call, f: str) -> None:
        if f in _FILE_FUNCS:
            position, keyword, verb = _FILE_FUNCS[f]
            arg = node.args[position] if len(node.args) > position else None
            if arg is None and keyword is not None:
                arg = next((k.value for k in node.keywords if k.arg == keyword), None)
            if arg is not None:
                self._check_path_arg(node, arg, verb)
        elif f.startswith("pandas.read_") and node.args:
            self._check_path_arg(node, node.args[0], "reads")
        elif f.startswith("shutil."):
            for arg in node.args[:2]:
                self._check_path_arg(node, arg, "copies, moves or deletes")
        elif f in _PATH_CTORS or f == "os.path.join":
            parent = self.parents.get(node)
            if not (isinstance(parent, ast.BinOp) and self._is_path(parent)):
                self._check_path_arg(node, node, "builds the path", literal_only=True)

    def _check_path_method(self, node: ast.Call) -> None:
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr in _PATH_METHODS
                and self._is_path(func.value)):
            self._check_path_arg(node, func.value, _PATH_METHODS[func.attr])

    def _is_path(self, node: ast.AST) -> bool:
        """Whether `node` is a pathlib path built in place (Path(...), p / "x", p.parent)."""
        if isinstance(node, ast.Call):
            f = self._resolve(node.func)
            if f is not None and (f in _PATH_CTORS or f.rsplit(".", 1)[0] in _PATH_CTORS):
                return True
            return isinstance(node.func, ast.Attribute) and self._is_path(node.func.value)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return self._is_path(node.left)
        if isinstance(node, ast.Attribute) and node.attr in ("parent", "parents"):
            return self._is_path(node.value)
        if isinstance(node, ast.Subscript):
            return self._is_path(node.value)
        return False

    def _path_text(self, node: ast.AST) -> tuple[str, bool]:
        """What is known of a path expression's text, and whether any of it is computed."""
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            value = node.value
            return (value.decode("utf-8", "replace") if isinstance(value, bytes) else value), False
        if isinstance(node, ast.JoinedStr):
            parts, computed = [], False
            for value in node.values:
                if isinstance(value, ast.Constant):
                    parts.append(str(value.value))
                else:
                    parts.append("{}")
                    computed = True
            return "".join(parts), computed
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Div)):
            (left, lc), (right, rc) = self._path_text(node.left), self._path_text(node.right)
            joiner = "/" if isinstance(node.op, ast.Div) and left else ""
            return left + joiner + right, lc or rc
        if isinstance(node, ast.Attribute) and node.attr in ("parent", "parents"):
            text, computed = self._path_text(node.value)
            return (text + "/.." if text else ".."), computed or node.attr == "parents"
        if isinstance(node, ast.Subscript) and self._is_path(node.value):
            text, _ = self._path_text(node.value)
            return text, True
        if isinstance(node, ast.Call):
            f = self._resolve(node.func)
            f = _norm(f) if f else ""
            method = node.func.attr if isinstance(node.func, ast.Attribute) else ""
            if f.endswith(".home") and f.rsplit(".", 1)[0] in _PATH_CTORS:
                return "~", False
            if f == "os.getcwd" or (f.endswith(".cwd") and f.rsplit(".", 1)[0] in _PATH_CTORS):
                return "", False
            if f in _PATH_CTORS or f == "os.path.join" or method == "joinpath":
                pieces = [self._path_text(arg) for arg in node.args]
                if method == "joinpath":
                    pieces.insert(0, self._path_text(node.func.value))
                text = "/".join(t for t, _ in pieces if t)
                return text, any(c for _, c in pieces)
            if f in ("os.path.expanduser", "os.path.abspath", "os.path.realpath",
                     "os.path.normpath", "os.fspath", "str") and node.args:
                return self._path_text(node.args[0])
            if method in ("resolve", "absolute", "expanduser") and self._is_path(node.func.value):
                return self._path_text(node.func.value)
            if method in ("with_name", "with_suffix", "with_stem") and node.args:
                (text, computed), (tail, tail_computed) = (
                    self._path_text(node.func.value), self._path_text(node.args[0]))
                return text + tail, computed or tail_computed
        return "", True

    def _check_path_arg(self, node: ast.AST, arg: ast.AST, verb: str,
                        literal_only: bool = False) -> None:
        text, computed = self._path_text(arg)
        why = _outside(text)
        if why is not None:
            shown = text if not computed else f"{text} (partly computed)"
            self._emit("outside_read", node, f"{verb} {shown!r}, {why}")
        elif computed and not literal_only:
            self._emit("outside_read", node, f"{verb} a path computed at run time "
                       f"({_short(arg)}), so the scanner cannot tell whether it leaves the "
                       "notebook's folder")


def _code_at(lines: list[str], line: int) -> str:
    text = lines[line - 1].strip() if 1 <= line <= len(lines) else ""
    return text if len(text) <= 120 else text[:117] + "..."


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def scan_source(
    source: str, *, forbidden_builtins: Iterable[str] = ()
) -> list[tuple[str, int, str, str]]:
    """Findings for one cell's code, read on its own.

    Args:
        source: the cell's source; IPython syntax (%magic, !cmd, ?) is translated first.
        forbidden_builtins: dotted names of built-ins the exercise forbids.

    Returns:
        (kind, line, code, message) tuples, by line; kind is one of KINDS.

    Example: scan_source("import sys\\nsys.exit(0)") ->
    [("process_exit", 2, "sys.exit(0)", "Uses sys.exit: ends the kernel's current run, ...")]
    """
    return _Scanner(forbidden_builtins).scan_cell(source)


def _load(path_or_nb) -> nbformat.NotebookNode:
    if isinstance(path_or_nb, (str, os.PathLike)):
        text = Path(path_or_nb).read_text(encoding="utf-8")  # a missing file fails before
        import nbformat  # nbformat, which takes seconds to import; scan_source needs none of it

        nb = nbformat.reads(text, as_version=4)
    elif isinstance(path_or_nb, Mapping):
        import nbformat

        nb = path_or_nb if isinstance(path_or_nb, nbformat.NotebookNode) else (
            nbformat.from_dict(path_or_nb))
    else:
        raise TypeError(f"expected a notebook path or a notebook, got {type(path_or_nb).__name__}")
    if not isinstance(nb.get("cells"), list):
        raise ValueError("not a notebook: it has no list of cells")
    return nb


def _source_text(source) -> str:
    return "".join(source) if isinstance(source, list) else str(source or "")


def _normal(source: str) -> str:
    return source.replace("\r\n", "\n").strip()


def _cell_id(cell: Mapping, index: int) -> str:
    grade_id = ((cell.get("metadata") or {}).get("nbgrader") or {}).get("grade_id")
    return str(grade_id or cell.get("id") or f"cell-{index}")


def scan_notebook(
    path_or_nb, *, forbidden_builtins: Iterable[str] = (), release_nb=None
) -> list[Finding]:
    """Findings for every code cell of a notebook, in order.

    Args:
        path_or_nb: a path to an .ipynb file, or a notebook (NotebookNode or dict).
        forbidden_builtins: dotted names of built-ins the exercise forbids
            (``forbidden_builtins_for(assignment)``).
        release_nb: the released student notebook (path or notebook). Cells whose source is the
            same as one of its code cells are the instructor's and are not reported on; their
            imports still count for the cells after them.

    Raises OSError or ValueError (among others nbformat raises) when the file cannot be read.

    Example: a notebook whose cell "sdpa_impl" has `return F.scaled_dot_product_attention(q, k, v)`
    on line 3 -> [Finding("forbidden_builtin", "sdpa_impl", 3, "return F.scaled_...", "...")]
    """
    nb = _load(path_or_nb)
    released: set[str] = set()
    if release_nb is not None:
        released = {
            _normal(_source_text(cell.get("source")))
            for cell in _load(release_nb).cells
            if cell.get("cell_type") == "code"
        }
    scanner = _Scanner(forbidden_builtins)
    findings = []
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        source = _source_text(cell.get("source"))
        untouched = _normal(source) in released
        cell_id = _cell_id(cell, index)
        for kind, line, code, message in scanner.scan_cell(source, report=not untouched):
            findings.append(Finding(kind, cell_id, line, code, message))
    return findings


def forbidden_builtins_for(assignment: str) -> tuple[str, ...]:
    """The forbidden built-ins that chapter `assignment` declares; () for an unknown chapter.

    Example: forbidden_builtins_for("ch04_self_attention") ->
    ("torch.nn.functional.scaled_dot_product_attention", ...)
    """
    from autograder import chapters

    if not assignment.isidentifier():
        raise ValueError(f"not an assignment name: {assignment!r}")
    if assignment not in chapters.slugs():
        return ()
    return chapters.load(assignment).forbidden_builtins


def format_findings(findings_by_student: Mapping[str, list[Finding]]) -> str:
    """A plain-text table for the instructor: student, cell, line, kind, code, then why.

    Example: {"alice": [Finding("process_exit", "sdpa_impl", 2, "sys.exit(0)", "Ends ...")],
    "bob": []} ->
        student  cell       line  kind          code
        alice    sdpa_impl     2  process_exit  sys.exit(0)
                 why: Ends ...
        No findings: bob.
    """
    header = ("student", "cell", "line", "kind", "code")
    rows, clean = [], []
    for student, findings in findings_by_student.items():
        if not findings:
            clean.append(student)
        for finding in findings:
            row = (student, finding.cell_id, str(finding.line), finding.kind, finding.code)
            rows.append((row, finding.message))
    lines = []
    if rows:
        widths = [max(len(r[i]) for r in [header, *(row for row, _ in rows)]) for i in range(4)]

        def render(row: tuple[str, ...]) -> str:
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]),
                     row[2].rjust(widths[2]), row[3].ljust(widths[3]), row[4]]
            return "  ".join(cells).rstrip()

        lines.append(render(header))
        indent = " " * (widths[0] + 2)
        for row, message in rows:
            lines.append(render(row))
            lines.append(f"{indent}why: {message}")
    total = sum(len(findings) for findings in findings_by_student.values())
    flagged = len(findings_by_student) - len(clean)
    if clean:
        lines.append(f"No findings: {', '.join(clean)}.")
    lines.append(
        f"{total} finding{'s' if total != 1 else ''} for {flagged} of {len(findings_by_student)} "
        "notebook(s). Findings are code to read; the scanner changes no score."
    )
    return "\n".join(lines)


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def _student_of(path: str) -> str:
    """nbgrader keeps submissions in .../submitted/<student>/<assignment>/<notebook>.ipynb."""
    parts = Path(path).parts
    for marker in ("submitted", "autograded"):
        if marker in parts:
            i = len(parts) - 1 - parts[::-1].index(marker)
            if i + 2 < len(parts):
                return parts[i + 1]
    return path


def main(argv: list[str] | None = None) -> int:
    """The command line: scan notebooks, print the findings, exit 0 (1 on bad usage or files)."""
    parser = _ArgumentParser(
        prog="python -m autograder.engine.scanner",
        description="Flag suspicious code in submitted notebooks for the instructor to read. "
        "Findings never change a score.",
    )
    parser.add_argument("notebooks", nargs="+", metavar="NOTEBOOK", help="submitted .ipynb files")
    parser.add_argument(
        "--assignment",
        help="whose forbidden built-ins to flag (autograder.chapters.<ASSIGNMENT>); by default the "
        "notebook's file name without .ipynb",
    )
    parser.add_argument(
        "--release", metavar="NOTEBOOK",
        help="the released student notebook, whose untouched cells (the locked tests) are not "
        "reported on; by default exercises/<ASSIGNMENT>/<the notebook's file name> when it exists",
    )
    args = parser.parse_args(argv)
    if args.assignment is not None and not args.assignment.isidentifier():
        parser.error(f"--assignment must be a name such as ch04_self_attention, "
                     f"not {args.assignment!r}")

    def release_file(path: str, assignment: str) -> str | None:
        if args.release is not None:
            return args.release
        default = Path("exercises") / assignment / Path(path).name
        return str(default) if default.is_file() else None

    releases: dict[str, nbformat.NotebookNode] = {}
    results: dict[str, list[Finding]] = {}
    failed = False
    for path in args.notebooks:
        assignment = args.assignment or Path(path).stem
        try:
            nb = _load(path)
        except Exception as exc:  # whatever nbformat raises, the instructor needs the file name
            print(f"scanner: cannot read {path}: {exc}", file=sys.stderr)
            failed = True
            continue
        release = release_file(path, assignment)
        if release is not None and release not in releases:
            try:
                releases[release] = _load(release)
            except Exception as exc:  # as above: without it every locked cell would be reported
                print(f"scanner: cannot read the release notebook {release}: {exc}",
                      file=sys.stderr)
                return 1
            print(f"scanner: cells unchanged from {release} are not reported on", file=sys.stderr)
        forbidden = forbidden_builtins_for(assignment) if assignment.isidentifier() else ()
        student = _student_of(path)
        if student in results:
            student = path
        results[student] = scan_notebook(
            nb, forbidden_builtins=forbidden, release_nb=releases.get(release or "")
        )
    if results:
        print(format_findings(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
