"""The bubblewrap sandbox that a student's code runs in (what it holds: ``engine/__init__.py``).

Besides ``/sandbox``, it can write only /tmp (also /var/tmp) and /dev; the root is read-only. It has
a clean environment, no capabilities and resource limits through prlimit; nothing it starts
outlives it. :func:`bwrap_argv` refuses to mount a folder that holds the course.

What it does not protect against: a kernel or bubblewrap exploit; a fork bomb (there is no process
limit); a GPU left in a bad state (on CUDA machines the NVIDIA devices are passed through and the
address-space limit is dropped, since CUDA reserves huge virtual ranges).
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SandboxUnavailable", "Limits", "bwrap_path", "bwrap_argv", "RUNNER", "INSIDE"]

RUNNER = Path(__file__).with_name("runner.py")
INSIDE = "/sandbox"  # the writable working directory, inside
_GRADER = "/grader"  # where the runner (runner.IN_SANDBOX) and protocol.py, which it imports, are


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing, or the sandbox could not hide the course."""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one sandboxed runner (and anything it starts)."""

    memory_bytes: int = 6 * 2**30  # address space; torch on the CPU needs about 1.5 GiB of it
    cpu_seconds: int = 600  # CPU time of the whole run
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


def bwrap_argv(
    cmd: list[str],
    *,
    workdir: str | os.PathLike,
    hidden: tuple[str | os.PathLike, ...],
    limits: Limits = Limits(),
) -> list[str]:
    """Wrap `cmd` (the runner is ``/grader/runner.py`` there) to run in the sandbox, in `workdir`
    (seen as /sandbox); a mount that would show a folder of `hidden` raises SandboxUnavailable."""
    # --unshare-all: network, PID, IPC, UTS, cgroup and user namespaces
    argv = [bwrap_path(), *"--unshare-all --die-with-parent --cap-drop ALL --proc /proc".split()]
    argv += "--dev /dev --tmpfs /tmp --symlink /tmp /var/tmp".split()
    mounts = []
    for path in ("/usr", "/etc", "/opt", "/bin", "/sbin", "/lib", "/lib64", "/lib32"):
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            mounts.append(path)
    mounts += _python_roots()
    for path in mounts:
        real = os.path.realpath(path)
        for secret in hidden:
            if os.path.commonpath([real, os.path.realpath(secret)]) == real:
                raise SandboxUnavailable(
                    f"the sandbox would have to show {path}, which holds {secret}; keep the "
                    "course and its grading folder outside the system and Python folders"
                )
        argv += ["--ro-bind", path, path]
    for path in (RUNNER, RUNNER.with_name("protocol.py")):
        argv += ["--ro-bind", str(path), f"{_GRADER}/{path.name}"]
    gpu = sorted(glob.glob("/dev/nvidia*"))
    for device in gpu:
        argv += ["--dev-bind", device, device]
    argv += ["--bind", os.path.abspath(workdir), INSIDE]
    # The root (a tmpfs of bwrap's) read-only: a file left there would outlive the student's
    # process; what stays writable (/tmp, /sandbox, /dev) is emptied between students.
    argv += ["--remount-ro", "/"]
    env = {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
        "HOME": INSIDE,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "MPLBACKEND": "agg",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "IPYTHONDIR": "/tmp/ipython",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    argv += ["--clearenv", *(x for kv in env.items() for x in ("--setenv", *kv))]
    argv += ["--chdir", INSIDE, "--"]
    prlimit = shutil.which("prlimit")
    if prlimit:
        argv += [prlimit, f"--cpu={limits.cpu_seconds}", f"--fsize={limits.file_bytes}", "--core=0"]
        if not gpu:
            argv += [f"--as={limits.memory_bytes}"]
        argv += ["--"]
    return argv + list(cmd)


def runner_command() -> list[str]:
    """The runner, as the sandbox starts it: this Python, isolated mode."""
    return [sys.executable, "-I", f"{_GRADER}/runner.py"]
