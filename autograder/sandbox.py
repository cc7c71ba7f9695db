"""Running student code under bubblewrap, and a notebook executor that survives what it does.

During grading every student kernel (and every trusted cross-check child) runs in a bubblewrap
sandbox built from nothing: the system's read-only directories (/usr, /etc, ...), the Python
installation and its packages (read-only), the ``autograder`` package that the hidden tests import
(read-only), and one writable folder, the copy of the submission being graded. The course tree,
the instructor's solutions, the gradebook and every other student's work are simply not there.
The sandbox has no network (a private network namespace: the kernel talks to nbgrader over Unix
sockets in a private folder, not TCP), a private /tmp, its own PID namespace, and resource limits
(address space and CPU time through prlimit).

What it does not protect against: a kernel exploit; reading what the Python installation itself
contains (the reference implementation in ``autograder`` is readable, which is why the submission
scanner flags imports of it); a GPU left in a bad state (on CUDA machines the NVIDIA devices are
passed through and the address-space limit is dropped, since CUDA reserves huge virtual ranges).

``ResilientExecute`` replaces nbgrader's ``Execute`` preprocessor: it starts the kernel in the
sandbox and, when the kernel dies (``os._exit``, a memory or CPU limit) or stops answering, it
keeps the outputs of the cells that completed and gives every cell that did not an error output
naming the reason, so that nbgrader scores exactly the completed cells instead of failing the
whole notebook.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import autograder

__all__ = [
    "SandboxUnavailable",
    "Limits",
    "bwrap_path",
    "bwrap_argv",
    "SandboxedKernelManager",
    "ResilientExecute",
]


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create a sandbox on this machine."""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one sandboxed process (and its children)."""

    memory_bytes: int = 6 * 2**30  # address space; torch on the CPU needs about 1.5 GiB of it
    cpu_seconds: int = 600  # CPU time of the whole kernel, all cells together
    file_bytes: int = 256 * 2**20  # largest file it may write


def bwrap_path() -> str:
    """The bwrap executable, or SandboxUnavailable with a message that says how to get it."""
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable(
            "bubblewrap (bwrap) is not installed, so student code cannot be sandboxed. Install it "
            "(Debian/Ubuntu: apt-get install bubblewrap), or pass --no-sandbox to grade without a "
            "sandbox (every row of the report is then marked unsandboxed)."
        )
    return path


def _python_roots() -> list[str]:
    """The folders the sandboxed Python needs: the installation, the venv, their real paths."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots |= {os.path.realpath(r) for r in list(roots)}
    roots.add(os.path.dirname(os.path.realpath(sys.executable)))
    return sorted(r for r in roots if os.path.isdir(r))


def _package_root() -> str:
    """The folder of the ``autograder`` package, which hidden tests import."""
    return os.path.dirname(os.path.abspath(autograder.__file__))


def bwrap_argv(
    cmd: list[str],
    *,
    workdir: str | os.PathLike,
    writable: tuple[str | os.PathLike, ...] = (),
    limits: Limits = Limits(),
    env: dict[str, str] | None = None,
) -> list[str]:
    """Wrap `cmd` so that it runs in the sandbox, in `workdir` (writable), with `limits`.

    Example: bwrap_argv(["python", "-c", "print(1)"], workdir="/tmp/x") ->
        ["/bin/sh", "-c", ..., "/usr/bin/bwrap", "--unshare-all", ..., "--chdir", "/tmp/x", "--",
         "/usr/bin/prlimit", ..., "python", "-c", "print(1)"]
    """
    bwrap = bwrap_path()
    workdir = os.path.abspath(workdir)
    argv = [
        # An interrupt is sent to the kernel's whole process group, bwrap included, and bwrap
        # dies of SIGINT (taking the kernel with it). An ignored signal stays ignored across
        # exec, so bwrap survives; the kernel installs its own SIGINT handler while it runs a cell.
        "/bin/sh",
        "-c",
        'trap "" INT; exec "$@"',
        "sandbox",
        bwrap,
        "--unshare-all",  # network, PID, IPC, UTS, cgroup and user namespaces
        "--die-with-parent",
        "--cap-drop",
        "ALL",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--dir",
        "/var/tmp",
    ]
    for path in ("/usr", "/etc", "/opt", "/bin", "/sbin", "/lib", "/lib64", "/lib32"):
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for path in (*_python_roots(), _package_root()):
        argv += ["--ro-bind", path, path]
    gpu = sorted(glob.glob("/dev/nvidia*"))
    for device in gpu:
        argv += ["--dev-bind", device, device]
    for path in (workdir, *map(os.path.abspath, writable)):
        argv += ["--bind", path, path]
    base_env = {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "MPLBACKEND": "agg",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "IPYTHONDIR": "/tmp/ipython",
        "JUPYTER_RUNTIME_DIR": "/tmp/jupyter",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    base_env.update(env or {})
    argv += ["--clearenv"]
    for key, value in base_env.items():
        argv += ["--setenv", key, value]
    argv += ["--chdir", workdir, "--"]
    prlimit = shutil.which("prlimit")
    if prlimit:
        argv += [prlimit, f"--cpu={limits.cpu_seconds}", f"--fsize={limits.file_bytes}", "--core=0"]
        if not gpu:
            argv += [f"--as={limits.memory_bytes}"]
        argv += ["--"]
    return argv + list(cmd)


# --------------------------------------------------------------------------------------------
# Kernels for nbgrader
# --------------------------------------------------------------------------------------------

from jupyter_client.manager import AsyncKernelManager  # noqa: E402
from nbclient.exceptions import CellTimeoutError, DeadKernelError  # noqa: E402
from nbformat.notebooknode import NotebookNode  # noqa: E402
from nbgrader.preprocessors import Execute  # noqa: E402
from traitlets import Bool, Integer, Unicode  # noqa: E402


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager that starts the kernel under bubblewrap and talks to it over IPC.

    The connection file and the kernel's Unix sockets live in a private folder that is the only
    thing, besides the notebook's own folder, that the sandbox can write.
    """

    sandboxed = Bool(True, help="Run the kernel under bubblewrap.").tag(config=True)
    memory_bytes = Integer(Limits.memory_bytes).tag(config=True)
    cpu_seconds = Integer(Limits.cpu_seconds).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._ipc_dir = tempfile.mkdtemp(prefix="kernel-ipc-")
        self.transport = "ipc"
        self.ip = os.path.join(self._ipc_dir, "kernel")
        self.connection_file = os.path.join(self._ipc_dir, "connection.json")

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:
        if self.sandboxed:
            workdir = kw.get("cwd") or os.getcwd()
            limits = Limits(memory_bytes=self.memory_bytes, cpu_seconds=self.cpu_seconds)
            kernel_cmd = bwrap_argv(
                kernel_cmd, workdir=workdir, writable=(self._ipc_dir,), limits=limits
            )
            kw.pop("env", None)  # bwrap sets the environment itself (--clearenv)
        # What the kernel prints outside a cell (its banner) would only clutter the grader's
        # output; what a cell prints reaches the notebook over the kernel's sockets.
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        await super()._async_launch_kernel(kernel_cmd, **kw)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)


class ResilientExecute(Execute):
    """nbgrader's Execute, sandboxed, that keeps the completed cells when the kernel is lost.

    Cells that did not complete get an error output that names the reason (the kernel died, the
    cell timed out and could not be interrupted, the kernel did not start), so nbgrader gives
    them no credit; cells that completed keep theirs. The reason is also written as JSON to
    ``incident_file`` for the grading report.
    """

    sandboxed = Bool(True, help="Run the kernel under bubblewrap.").tag(config=True)
    incident_file = Unicode("", help="Where to write what went wrong, as JSON.").tag(config=True)

    def __init__(self, *args, **kwargs):
        kwargs["kernel_manager_class"] = SandboxedKernelManager
        super().__init__(*args, **kwargs)
        self._current = 0

    def create_kernel_manager(self):
        km = super().create_kernel_manager()
        km.sandboxed = self.sandboxed
        return km

    def preprocess_cell(self, cell, resources, index):
        self._current = index
        return super().preprocess_cell(cell, resources, index)

    def preprocess(self, nb, resources=None, km=None):
        self._current = 0
        try:
            return super().preprocess(nb, resources, km)
        except (DeadKernelError, CellTimeoutError, RuntimeError, TimeoutError, OSError) as exc:
            reason = _describe(exc)
        except Exception as exc:  # a kernel that misbehaves can break nbclient in other ways
            reason = f"grading stopped: {type(exc).__name__}: {exc}"
        self.log.warning("Execution stopped at cell %d: %s", self._current, reason)
        self._fail_remaining(nb, self._current, reason)
        if self.incident_file:
            incident = {"cell": self._current, "reason": reason, "detail": traceback.format_exc()}
            Path(self.incident_file).write_text(json.dumps(incident))
        return nb, resources

    @staticmethod
    def _fail_remaining(nb, start: int, reason: str) -> None:
        for index, cell in enumerate(nb.cells):
            if index < start or cell.cell_type != "code":
                continue
            why = reason if index == start else f"not run: an earlier cell stopped ({reason})"
            error = NotebookNode(
                output_type="error",
                ename="GradingStopped",
                evalue=why,
                traceback=[f"GradingStopped: {why}"],
            )
            cell.outputs = [*cell.get("outputs", []), error] if index == start else [error]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DeadKernelError):
        return (
            "the kernel died (the code exited the process, or hit the sandbox's memory or "
            "CPU-time limit)"
        )
    if isinstance(exc, CellTimeoutError):
        return "the cell ran past the time limit and could not be interrupted"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"the kernel failed: {text}"
