"""The trusted cross-check: grade a notebook's functions outside the student's kernel.

Why. A notebook's hidden tests run in the student's kernel, after the student's code, so that code
can reach them: patch ``torch.allclose`` or ``CheckFailed``, install an IPython input transformer
that wraps every later cell in ``try/except``, print "passed". A verdict computed in the kernel can
be forged. This module computes verdicts that cannot be.

How. ``trusted_check(notebook, "ch04_self_attention")`` starts one child process for the notebook
(:mod:`autograder.trusted_child`, under bubblewrap: read-only system, a private folder holding a
copy of the notebook, no network, resource limits; see :mod:`autograder.sandbox`). The child runs
the student's code, then only answers calls. This process runs the same check functions as the
hidden tests (``GRADED[grade_id] = (name, check)``), passing each a proxy for the student's
callable: :class:`RemoteFunction` or, for an ``nn.Module`` class, :class:`RemoteModuleClass`. A
proxy sends the inputs the check chose, the child computes the student's outputs and sends them
back, and the check compares them with the reference here. Gradients go through a
``torch.autograd.Function`` whose backward asks the child for the inputs' gradients, so a check
can call ``.backward()`` and read ``.grad`` as in the kernel. A module proxy is a local
``nn.Module`` with the student's parameters (mirrored by name; ``nn.Linear``, ``LayerNorm``,
``Embedding`` and ``Dropout`` children mirrored as themselves), whose forward sends the current
local parameter values, so ``load_state_dict``, ``.to(...)`` and gradients to its parameters work.

This process never imports, executes or unpickles anything of the student's. It copies the
notebook's bytes; the child reads them. Replies are loaded with ``torch.load(weights_only=True)``,
which builds only tensors and plain data and runs no code, and every reply is validated (its keys,
tags, tensor layouts and sizes) before it is used; an exception the student's code raised comes
back as its name and message and is re-created here as a fresh class of that name.

What it protects against: anything the student's code does to the process it runs in (patched
comparisons or exceptions, input transformers, edited outputs, fake prints), since the verdict is
computed elsewhere; reading the instructor's solutions or other students' work (the sandbox hides
them); hanging or ending the process (timeouts, a restart, see below).

What it does not protect against:

- Code that behaves differently when cross-checked (it can tell: another process, no test cells).
  The verdict then reflects what the code did on the grader's inputs, which is what is graded.
  Code that recognises the checks' inputs and returns stored answers is the same case: the
  inputs come from seeds in the checks, readable inside the sandbox in the ``autograder`` package
  (the submission scanner flags imports of it).
- Calling a built-in that does the work (``getattr(F, "scaled_dot_product_attention")``): verdicts
  are about behaviour, not provenance; that is the scanner's job.
- Device placement: the child runs on the CPU only (no GPU is promised inside the sandbox, and
  ``CUDA_VISIBLE_DEVICES`` is empty there). Results come back to the device of the inputs, so a
  function that puts its result on the wrong device passes here; the in-kernel tests on a GPU
  machine catch that. Likewise in-place changes to the inputs and to module buffers made by the
  student's forward are not copied back.
- Double backward (``create_graph=True``) through a proxy: its backward is once-differentiable.
- Bugs in torch's weights-only unpickler, in bubblewrap or in the kernel. With ``sandboxed=False``
  the student's code runs as the grader's user among the grader's files: for development only.

When the student's code ends or hangs the process. The child runs every cell the way nbgrader
does (a cell that raises, ``SystemExit`` included, is recorded and the next one runs), and
announces each cell first. A cell that runs past ``call_timeout`` is interrupted (SIGINT, as
nbgrader's ``interrupt_on_timeout``) and the next one runs. A cell that ends the process
(``os._exit``, a crash, a sandbox limit), or does not stop when interrupted, makes the notebook run
again in a fresh child up to, not including, that cell: as the in-kernel grader keeps the cells
that completed, names defined before it are checked, names defined after it are reported as not
defined, with the reason. While the checks run, a call that ends the process or runs past
``call_timeout`` fails that check with the reason; the child is killed with its process group and
restarted once for the remaining checks; a second loss fails the rest as "not checked". ``timeout``
bounds the whole notebook: starting, running the cells, checking.

Not here: the checks themselves (``autograder/chNN_*.py``), the sandbox (``autograder/sandbox.py``)
and the batch grader that compares these verdicts with the kernel's.
"""

from __future__ import annotations

import builtins
import importlib
import io
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.autograd.function import once_differentiable

import autograder
from autograder.checking import CheckFailed
from autograder.sandbox import Limits, bwrap_argv
from autograder.trusted_child import HEADER, MAX_DEPTH, MAX_FRAME, map_tensors

__all__ = [
    "TrustedResult",
    "trusted_check",
    "TrustedSession",
    "RemoteFunction",
    "RemoteModuleClass",
    "RemoteModule",
    "ChildLost",
    "MirrorError",
]

log = logging.getLogger(__name__)

STDERR_TAIL = 2048  # bytes of the child's stderr (the student's prints) kept for debugging
MAX_NUMEL = 2**28  # elements in one returned tensor
INTERRUPT_GRACE = 5.0  # seconds a cell past its time limit gets to stop after an interrupt


@dataclass(frozen=True)
class TrustedResult:
    """The cross-check's verdict on one grade cell."""

    grade_id: str
    passed: bool
    reason: str  # "" when passed; else the CheckFailed message, or why the child failed


class ChildLost(RuntimeError):
    """The child ended, hung or broke the protocol; the message says which and during what."""


class MirrorError(TypeError):
    """The student's module has a structure the local proxy cannot mirror."""


class _Timeout(Exception):
    pass


class _EndOfFile(Exception):
    pass


class _BadFrame(Exception):
    pass


class _StoppedAtCell(Exception):
    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index, self.reason = index, reason


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise _BadFrame(f"expected {what}")


# --------------------------------------------------------------------------------------------
# The child process
# --------------------------------------------------------------------------------------------


class _Child:
    """One child process, its protocol pipes and its private folder."""

    def __init__(
        self,
        notebook: Path,
        *,
        sandboxed: bool,
        deadline: float,
        timeout: float,
        call_timeout: float,
    ) -> None:
        self.deadline, self.timeout, self.call_timeout = deadline, timeout, call_timeout
        self.lost: str | None = None
        self._tail = bytearray()
        self._pending = bytearray()  # bytes read from the child that do not make a frame yet
        self.workdir = Path(tempfile.mkdtemp(prefix="trusted-check-"))
        self.notebook = self.workdir / "submission.ipynb"
        shutil.copyfile(notebook, self.notebook)
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(autograder.__file__)))
        env = {
            # The autograder package the parent uses, ahead of any editable install elsewhere.
            "PYTHONPATH": package_parent,
            "CUDA_VISIBLE_DEVICES": "",
        }
        argv = [sys.executable, "-m", "autograder.trusted_child"]
        if sandboxed:
            limits = Limits(cpu_seconds=int(timeout) + 30)
            try:
                argv = bwrap_argv(argv, workdir=self.workdir, env=env, limits=limits)
            except Exception:
                shutil.rmtree(self.workdir, ignore_errors=True)
                raise
            popen_env = None
        else:
            popen_env = {
                **os.environ,
                **env,
                "IPYTHONDIR": str(self.workdir / ".ipython"),
                "MPLBACKEND": "agg",
                "MPLCONFIGDIR": str(self.workdir / ".matplotlib"),
            }
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.workdir,
            env=popen_env,
            bufsize=0,
            start_new_session=True,  # one process group: a hung child is killed with all it started
        )
        self._in, self._out = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        os.set_blocking(self._in, False)
        self._drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self._drain.start()

    # -- process --------------------------------------------------------------------------

    def _drain_stderr(self) -> None:
        fd = self.proc.stderr.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self._tail += chunk
            del self._tail[:-STDERR_TAIL]

    @property
    def stderr_tail(self) -> str:
        return bytes(self._tail).decode("utf-8", "replace")

    def close(self) -> None:
        self._signal(signal.SIGKILL)
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            pipe.close()
        self._drain.join(timeout=2)
        self.proc.stderr.close()
        if self._tail:
            log.debug("the child's stderr ended with: %s", self.stderr_tail)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def _lose(self, reason: str) -> ChildLost:
        self.lost = reason
        self._signal(signal.SIGKILL)
        return ChildLost(reason)

    def _ended(self, what: str) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        status = "still running" if code is None else f"exit status {code}"
        return (
            f"the student's code ended the process during {what} ({status}: os._exit, a crash, "
            "or the sandbox's memory or CPU-time limit)"
        )

    def _limit(self, seconds: float | None, what: str) -> tuple[float, str]:
        now = time.monotonic()
        if seconds is not None and now + seconds < self.deadline:
            return now + seconds, f"timed out: {what} did not finish within {seconds:g} s"
        return self.deadline, (
            f"timed out: the time limit for the whole notebook ({self.timeout:g} s) ran out "
            f"during {what}"
        )

    # -- frames ---------------------------------------------------------------------------

    def _send(self, message: dict, deadline: float) -> None:
        buffer = io.BytesIO()
        torch.save(message, buffer)
        payload = buffer.getvalue()
        view = memoryview(HEADER.pack(len(payload)) + payload)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout
            _, writable, _ = select.select([], [self._in], [], remaining)
            if not writable:
                continue
            try:
                view = view[os.write(self._in, view) :]
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                raise _EndOfFile from None

    def _fill(self, n: int, deadline: float) -> None:
        """Read until `n` bytes are pending; what a timeout interrupts stays for the next read."""
        while len(self._pending) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout
            readable, _, _ = select.select([self._out], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(self._out, min(n - len(self._pending), 2**20))
            if not chunk:
                raise _EndOfFile
            self._pending += chunk

    def _receive(self, deadline: float) -> dict:
        self._fill(HEADER.size, deadline)
        (length,) = HEADER.unpack_from(self._pending)
        _expect(length <= MAX_FRAME, f"a frame of at most {MAX_FRAME} bytes, not {length}")
        self._fill(HEADER.size + length, deadline)
        payload = bytes(self._pending[HEADER.size : HEADER.size + length])
        del self._pending[: HEADER.size + length]
        try:
            # weights_only: tensors and plain data, never code (the point of this module).
            message = torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
        except Exception as exc:
            raise _BadFrame(f"a payload of tensors and plain data ({type(exc).__name__})") from None
        _expect(isinstance(message, dict), "a dict")
        return message

    def request(self, message: dict, what: str, seconds: float | None = None) -> dict:
        """Send `message`, return the reply; ChildLost (and the child killed) if that fails."""
        if self.lost:
            raise ChildLost(self.lost)
        deadline, why = self._limit(self.call_timeout if seconds is None else seconds, what)
        try:
            self._send(message, deadline)
            return self._receive(deadline)
        except _Timeout:
            raise self._lose(why) from None
        except _EndOfFile:
            raise self._lose(self._ended(what)) from None
        except _BadFrame as exc:
            raise self._lose(
                f"the grading process broke the protocol during {what}: {exc}"
            ) from None

    # -- the notebook ---------------------------------------------------------------------

    def load(self, names: list[str], stop_before: int | None) -> dict:
        """Run the notebook's cells; the child's description of `names`, its errors, its cells.

        Raises _StoppedAtCell when a cell ends or hangs the child, ChildLost when the child
        fails before the first cell (it could not start).
        """
        what = "the start of the grading process"
        deadline, why = self._limit(None, what)
        cell = None
        interrupted: dict[int, str] = {}
        try:
            message = {
                "op": "load",
                "notebook": str(self.notebook),
                "names": names,
                "stop_before": stop_before,
            }
            self._send(message, deadline)
            while True:
                try:
                    frame = self._receive(deadline)
                except _Timeout:
                    if cell is None or cell in interrupted or time.monotonic() >= self.deadline:
                        raise
                    # As nbgrader does (interrupt_on_timeout): interrupt the cell, run the next.
                    interrupted[cell] = why
                    self._signal(signal.SIGINT)
                    deadline = min(time.monotonic() + INTERRUPT_GRACE, self.deadline)
                    why += f", and did not stop within {INTERRUPT_GRACE:g} s of an interrupt"
                    continue
                if frame.get("event") == "cell":
                    _expect(type(frame.get("index")) is int, "a cell index")
                    cell = frame["index"]
                    what = f"cell {cell}"
                    deadline, why = self._limit(self.call_timeout, f"cell {cell}")
                elif frame.get("event") == "ready":
                    info = _validate_ready(frame, names)
                    info["interrupted"] = interrupted
                    return info
                elif frame.get("ok") is False:
                    reason = f"the notebook could not be read: {_error_text(frame)}"
                    break
                else:
                    raise _BadFrame("a cell event")
        except _Timeout:
            reason = why
        except _EndOfFile:
            reason = self._ended(what)
            if cell is None:
                reason = f"the grading process did not start: {self.stderr_tail[-500:].strip()}"
        except _BadFrame as exc:
            reason = f"the grading process broke the protocol during {what}: {exc}"
        self._lose(reason)
        if cell is None:
            raise ChildLost(reason)
        raise _StoppedAtCell(cell, reason)

    # -- calls ----------------------------------------------------------------------------

    def call(
        self, target: tuple, args: tuple, kwargs: dict, module: RemoteModule | None, what: str
    ):
        """Call the student's `target` on (args, kwargs); the output, with gradients wired."""
        call = _Call(self, target, args, kwargs, module, what)
        if torch.is_grad_enabled() and any(call.grad):
            outputs = _RemoteFunctionCall.apply(call, *call.inputs)[:-1]
        else:
            call.grad = [False] * len(call.grad)  # as under no_grad: nothing to keep
            outputs = call.run(call.inputs, keep_graph=False)
            for t, differentiable in zip(outputs, call.differentiable, strict=True):
                if differentiable and (t.is_floating_point() or t.is_complex()):
                    t.requires_grad_()  # the student made a leaf that requires grad
        return _fill(call.skeleton, list(outputs))


def _error_text(frame: dict) -> str:
    error = frame.get("error")
    if isinstance(error, dict):
        return f"{error.get('type')}: {str(error.get('message'))[:300]}"
    return "no details"


def _validate_ready(frame: dict, names: list[str]) -> dict:
    info = {key: frame.get(key) for key in ("names", "errors", "defines")}
    _expect(isinstance(info["names"], dict) and set(info["names"]) == set(names), "the names")
    for entry in info["names"].values():
        _expect(
            isinstance(entry, dict)
            and type(entry.get("defined")) is bool
            and isinstance(entry.get("kind"), str)
            and isinstance(entry.get("type"), str),
            "a description of each name",
        )
    _expect(isinstance(info["errors"], list), "a list of errors")
    errors = {}
    for error in info["errors"]:
        _expect(
            isinstance(error, list)
            and len(error) == 3
            and type(error[0]) is int
            and all(isinstance(e, str) for e in error[1:]),
            "[cell, type, message] for each error",
        )
        errors.setdefault(error[0], (error[1][:100], error[2][:500]))
    info["errors"] = errors
    _expect(isinstance(info["defines"], dict), "the defining cells")
    for cells in info["defines"].values():
        _expect(isinstance(cells, list) and all(type(i) is int for i in cells), "cell indices")
    return info


# --------------------------------------------------------------------------------------------
# Calls and gradients
# --------------------------------------------------------------------------------------------


def _to_cpu(t: torch.Tensor) -> torch.Tensor:
    # clone: a view would otherwise carry its whole storage over the pipe
    return t.detach().to("cpu").resolve_conj().resolve_neg().clone()


class _Call:
    """One remote call: its inputs (argument tensors, then module parameters) and its outputs."""

    def __init__(
        self,
        child: _Child,
        target: tuple,
        args: tuple,
        kwargs: dict,
        module: RemoteModule | None,
        what: str,
    ) -> None:
        self.child, self.target, self.what = child, target, what
        self.args, self.kwargs = args, kwargs
        tensors: list[torch.Tensor] = []
        map_tensors((args, kwargs), tensors.append)
        self.n_args = len(tensors)
        self.param_names: list[str] = []
        params: list[torch.Tensor] = []
        self.buffers: list[tuple[str, torch.Tensor]] = []
        self.training: list[tuple[str, bool]] = []
        if module is not None:
            for name, p in module.named_parameters():
                self.param_names.append(name)
                params.append(p)
            self.buffers = [(name, _to_cpu(b)) for name, b in module.named_buffers()]
            self.training = [(name, m.training) for name, m in module.named_modules()]
        self.inputs = tensors + params
        devices = {t.device for t in self.inputs if t.dim() > 0}
        if len(devices) > 1:
            raise RuntimeError(
                "Expected all tensors to be on the same device, but found at least two devices, "
                + " and ".join(sorted(str(d) for d in devices))
            )
        self.device = self.inputs[0].device if self.inputs else torch.device("cpu")
        self.grad = [bool(t.requires_grad) for t in self.inputs]
        self.differentiable: list[bool] = []
        self.call_id: int | None = None
        self.skeleton = None

    def run(self, inputs: Iterable[torch.Tensor], keep_graph: bool) -> list[torch.Tensor]:
        cpu = [_to_cpu(t) for t in inputs]
        arg_tensors = iter(cpu[: self.n_args])
        args, kwargs = map_tensors((self.args, self.kwargs), lambda _: next(arg_tensors))
        state = None
        if self.target[0] == "instance":
            state = {
                "params": list(zip(self.param_names, cpu[self.n_args :], strict=True)),
                "buffers": self.buffers,
                "training": self.training,
            }
        message = {
            "op": "call",
            "target": self.target,
            "args": args,
            "kwargs": kwargs,
            "grad": self.grad,
            "state": state,
            "keep_graph": keep_graph,
            "rng": torch.get_rng_state(),
        }
        reply = self.child.request(message, self.what)
        if reply.get("ok") is False:
            raise _student_error(reply.get("error"))
        try:
            _expect(reply.get("ok") is True, "ok")
            self.skeleton, tensors = _Decoder(self.child).decode(reply.get("output"))
            differentiable = reply.get("differentiable")
            _expect(
                isinstance(differentiable, list)
                and len(differentiable) == len(tensors)
                and all(type(d) is bool for d in differentiable),
                "one differentiable flag per output tensor",
            )
            call_id = reply.get("call")
            _expect(call_id is None or type(call_id) is int, "a call id")
            rng = reply.get("rng")
            current = torch.get_rng_state()
            _expect(
                _valid_tensor(rng) and rng.dtype == current.dtype and rng.shape == current.shape,
                "the generator's state",
            )
        except _BadFrame as exc:
            raise self.child._lose(
                f"the grading process broke the protocol during {self.what}: {exc}"
            ) from None
        torch.set_rng_state(rng)
        self.differentiable, self.call_id = differentiable, call_id
        return [t.to(self.device) for t in tensors]

    def backward(self, grads: tuple[torch.Tensor, ...]) -> list[torch.Tensor | None]:
        if self.call_id is None:
            return [None] * len(self.inputs)
        sent = [
            _to_cpu(g) if d and g is not None else None
            for g, d in zip(grads, self.differentiable, strict=True)
        ]
        what = f"the backward pass of {self.what}"
        reply = self.child.request({"op": "backward", "call": self.call_id, "grads": sent}, what)
        if reply.get("ok") is False:
            raise _student_error(reply.get("error"))
        got = reply.get("grads")
        result: list[torch.Tensor | None] = []
        try:
            _expect(isinstance(got, list) and len(got) == len(self.inputs), "one grad per input")
            for g, t, wanted in zip(got, self.inputs, self.grad, strict=True):
                if g is None or not wanted:
                    result.append(None)
                    continue
                _expect(_valid_tensor(g) and g.shape == t.shape, "a gradient of the input's shape")
                result.append(g.to(device=t.device, dtype=t.dtype))
        except _BadFrame as exc:
            reason = f"the grading process broke the protocol during {what}: {exc}"
            raise self.child._lose(reason) from None
        return result


class _RemoteFunctionCall(torch.autograd.Function):
    """A remote call as one autograd node: backward asks the child for the inputs' gradients."""

    @staticmethod
    def forward(ctx, call: _Call, *inputs: torch.Tensor):
        outputs = call.run(inputs, keep_graph=True)
        # Outputs the student's code did not compute differentiably (detach, numpy) do not
        # require grad here either, exactly as in the kernel.
        frozen = [
            t
            for t, d in zip(outputs, call.differentiable, strict=True)
            if not d or not (t.is_floating_point() or t.is_complex())
        ]
        marker = torch.empty(0)  # autograd.Function needs at least one tensor output
        ctx.mark_non_differentiable(*frozen, marker)
        ctx.call = call
        return (*outputs, marker)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: torch.Tensor):
        return (None, *ctx.call.backward(grads[:-1]))


_ERROR_CLASSES: dict[tuple[str, type], type] = {}


class StudentError(Exception):
    """Base of the exceptions re-created from the student's code (by name and message)."""


def _student_error(error) -> Exception:
    """A fresh exception with the student's exception's name, under the nearest built-in base."""
    if not isinstance(error, dict):
        return StudentError("the student's code raised an exception (no details)")
    name = error.get("type") if isinstance(error.get("type"), str) else ""
    name = name if name.isidentifier() else "StudentError"
    message = error.get("message") if isinstance(error.get("message"), str) else ""
    base: type = StudentError
    bases = error.get("bases") if isinstance(error.get("bases"), list) else []
    for candidate in bases:
        cls = getattr(builtins, candidate, None) if isinstance(candidate, str) else None
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                cls(message)
            except Exception:
                continue
            base = cls
            break
    key = (name, base)
    if key not in _ERROR_CLASSES:
        # str() gives the student's message as it was (KeyError's own str would quote it again)
        attrs = {"__module__": "student", "__str__": lambda self: self.args[0]}
        _ERROR_CLASSES[key] = type(name, (base,), attrs)
    return _ERROR_CLASSES[key](message)


# --------------------------------------------------------------------------------------------
# Decoding what the child returns
# --------------------------------------------------------------------------------------------


def _valid_tensor(t) -> bool:
    return (
        type(t) is torch.Tensor
        and t.layout == torch.strided
        and t.device.type == "cpu"
        and not t.is_quantized
        and t.numel() <= MAX_NUMEL
        # no stride tricks: a returned tensor owns as many bytes as it has elements
        and t.untyped_storage().nbytes() >= t.numel() * t.element_size()
    )


class _Slot:
    """Where the i-th output tensor goes in the rebuilt output."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


class Opaque:
    """Stands for a returned object the grader does not rebuild; its class has the object's name."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} returned by the student's code>"


_OPAQUE_CLASSES: dict[str, type] = {}


def _opaque(name) -> Opaque:
    name = name if isinstance(name, str) and name.isidentifier() else "object"
    if name not in _OPAQUE_CLASSES:
        _OPAQUE_CLASSES[name] = type(name, (Opaque,), {"__module__": "student"})
    return _OPAQUE_CLASSES[name]()


_PRIMITIVES = (bool, int, float, str, type(None))


class _Decoder:
    """Validates the child's tagged tree and rebuilds it, tensors replaced by slots."""

    def __init__(self, child: _Child) -> None:
        self.child = child
        self.tensors: list[torch.Tensor] = []

    def decode(self, enc) -> tuple[object, list[torch.Tensor]]:
        return self._decode(enc, 0), self.tensors

    def _decode(self, enc, depth: int):
        _expect(depth <= MAX_DEPTH + 1, "a shallower output")
        _expect(isinstance(enc, tuple) and len(enc) >= 2 and isinstance(enc[0], str), "a tag")
        tag, body = enc[0], enc[1:]
        if tag == "v":
            _expect(type(body[0]) in _PRIMITIVES, "a number, string, bool or None")
            return body[0]
        if tag == "t":
            _expect(_valid_tensor(body[0]), "a dense CPU tensor of reasonable size")
            self.tensors.append(body[0])
            return _Slot(len(self.tensors) - 1)
        if tag in ("l", "u"):
            _expect(isinstance(body[0], list), "a list")
            items = [self._decode(x, depth + 1) for x in body[0]]
            return items if tag == "l" else tuple(items)
        if tag == "d":
            _expect(isinstance(body[0], list), "a list of items")
            out = {}
            for item in body[0]:
                _expect(isinstance(item, tuple) and len(item) == 2, "a (key, value) pair")
                key = item[0]
                _expect(
                    isinstance(key, tuple) and len(key) == 2 and key[0] in ("v", "other"),
                    "a plain key",
                )
                out[self._decode(key, depth + 1)] = self._decode(item[1], depth + 1)
            return out
        if tag == "c":
            _expect(len(body) == 2 and all(type(x) is float for x in body), "a complex number")
            return complex(body[0], body[1])
        if tag == "size":
            _expect(
                isinstance(body[0], list) and all(type(d) is int and d >= 0 for d in body[0]),
                "a size",
            )
            return torch.Size(body[0])
        if tag == "dtype":
            dtype = getattr(torch, body[0], None) if isinstance(body[0], str) else None
            _expect(isinstance(dtype, torch.dtype), "a dtype")
            return dtype
        if tag in ("np", "nps"):
            _expect(_valid_tensor(body[0]), "a numpy array's data")
            array = body[0].numpy().copy()
            return array if tag == "np" else array[()]
        if tag == "m":
            _expect(len(body) == 2 and type(body[0]) is int, "a module handle")
            return _build_module(self.child, body[0], body[1])
        if tag == "other":
            return _opaque(body[0])
        raise _BadFrame(f"a known tag, not {tag!r}")


def _fill(skeleton, outputs: list[torch.Tensor]):
    if isinstance(skeleton, _Slot):
        return outputs[skeleton.index]
    if type(skeleton) is list:
        return [_fill(x, outputs) for x in skeleton]
    if type(skeleton) is tuple:
        return tuple(_fill(x, outputs) for x in skeleton)
    if type(skeleton) is dict:
        return {k: _fill(v, outputs) for k, v in skeleton.items()}
    return skeleton


# --------------------------------------------------------------------------------------------
# Module proxies
# --------------------------------------------------------------------------------------------


class _RemoteRef:
    """Which remote module a proxy stands for; shared, not copied, by copy.deepcopy."""

    __slots__ = ("child", "handle", "path", "type_name")

    def __init__(self, child: _Child, handle: int, path: str, type_name: str) -> None:
        self.child, self.handle, self.path, self.type_name = child, handle, path, type_name

    def __deepcopy__(self, memo):
        return self  # a deep copy has its own parameters and sends them: same remote module

    def __reduce__(self):
        raise TypeError("a proxy for a student's module cannot be pickled")


class RemoteModule(nn.Module):
    """Local stand-in for a module of the student's: local parameters, remote forward.

    Its parameters, buffers and children mirror the student's module (same names, values,
    requires_grad); ``nn.Linear``, ``LayerNorm``, ``Embedding`` and ``Dropout`` children are those
    torch modules, other children are RemoteModules too. ``forward`` sends the current local
    parameter values, so ``load_state_dict``, ``.to(device)``, ``.double()`` and ``train()`` are
    respected, and gradients flow to the local parameters.
    """

    def __init__(self, ref: _RemoteRef) -> None:
        super().__init__()
        self._remote = ref

    def forward(self, *args, **kwargs):
        r = self._remote
        return r.child.call(
            ("instance", r.handle, r.path), args, kwargs, self, f"{r.type_name}.forward"
        )

    def extra_repr(self) -> str:
        return f"remote {self._remote.type_name}"


def _checked_int(value, what: str, low: int = 0) -> int:
    if type(value) is not int or not low <= value <= 2**31:
        raise MirrorError(f"{what} must be an int >= {low}, got {value!r}")
    return value


def _make_local(child: _Child, handle: int, entry: dict) -> nn.Module:
    kind, c, path = entry["kind"], entry["config"], entry["path"]
    if not isinstance(c, dict):
        raise MirrorError(f"{path}: a configuration")
    if kind == "Linear":
        return nn.Linear(
            _checked_int(c.get("in_features"), "in_features"),
            _checked_int(c.get("out_features"), "out_features"),
            bias=bool(c.get("bias")),
            device="meta",
        )
    if kind == "LayerNorm":
        shape = c.get("normalized_shape")
        if not isinstance(shape, list) or not 0 < len(shape) <= 8:
            raise MirrorError(f"{path}: normalized_shape")
        eps = c.get("eps")
        if type(eps) is not float:
            raise MirrorError(f"{path}: eps")
        return nn.LayerNorm(
            [_checked_int(d, "normalized_shape", 1) for d in shape],
            eps=eps,
            elementwise_affine=bool(c.get("elementwise_affine")),
            bias=bool(c.get("bias")),
            device="meta",
        )
    if kind == "Embedding":
        padding_idx, max_norm = c.get("padding_idx"), c.get("max_norm")
        if padding_idx is not None:
            padding_idx = _checked_int(padding_idx, "padding_idx", -(2**31))
        if max_norm is not None and type(max_norm) is not float:
            raise MirrorError(f"{path}: max_norm")
        norm_type = c.get("norm_type")
        return nn.Embedding(
            _checked_int(c.get("num_embeddings"), "num_embeddings"),
            _checked_int(c.get("embedding_dim"), "embedding_dim"),
            padding_idx=padding_idx,
            max_norm=max_norm,
            norm_type=norm_type if type(norm_type) is float else 2.0,
            scale_grad_by_freq=bool(c.get("scale_grad_by_freq")),
            sparse=bool(c.get("sparse")),
            device="meta",
        )
    if kind == "Dropout":
        p = c.get("p")
        if type(p) is not float or not 0.0 <= p <= 1.0:
            raise MirrorError(f"{path}: p")
        return nn.Dropout(p, inplace=bool(c.get("inplace")))
    containers = {
        "ModuleList": nn.ModuleList,
        "Sequential": nn.Sequential,
        "ModuleDict": nn.ModuleDict,
    }
    if kind in containers:
        return containers[kind]()
    type_name = entry.get("type") if isinstance(entry.get("type"), str) else "Module"
    return RemoteModule(_RemoteRef(child, handle, path, type_name))


def _owner(local: dict[str, nn.Module], name) -> tuple[nn.Module, str]:
    if not isinstance(name, str) or not name:
        raise MirrorError("a parameter name")
    owner_path, _, leaf = name.rpartition(".")
    if owner_path not in local or not leaf:
        raise MirrorError(f"no module owns {name!r}")
    return local[owner_path], leaf


def _mirror_attributes(module: nn.Module, attrs) -> None:
    if not isinstance(attrs, dict):
        raise MirrorError("attributes")
    for name, value in attrs.items():
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            continue
        if hasattr(type(module), name) or name in vars(module) or name in module._modules:
            continue
        if name in module._parameters or name in module._buffers:
            continue
        plain = type(value) in _PRIMITIVES or (
            isinstance(value, list) and all(type(v) in _PRIMITIVES for v in value)
        )
        if plain:
            setattr(module, name, tuple(value) if isinstance(value, list) else value)


def _build_module(child: _Child, handle: int, desc) -> RemoteModule:
    """The local proxy for the student's module described by `desc` (see trusted_child)."""
    try:
        return _build_module_unchecked(child, handle, desc)
    except MirrorError:
        raise
    except Exception as exc:  # a malformed description: report it, never crash the grader
        raise MirrorError(
            f"the grader could not mirror the student's module ({type(exc).__name__}: {exc})"
        ) from None


def _build_module_unchecked(child: _Child, handle: int, desc) -> RemoteModule:
    if not isinstance(desc, dict) or not all(
        isinstance(desc.get(k), list) for k in ("modules", "params", "buffers")
    ):
        raise MirrorError("a module description")
    type_name = desc.get("type") if isinstance(desc.get("type"), str) else "Module"
    local: dict[str, nn.Module] = {}
    for entry in desc["modules"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise MirrorError("a module entry")
        path = entry["path"]
        if not local:
            if path != "":
                raise MirrorError("the root module first")
            module = RemoteModule(_RemoteRef(child, handle, "", type_name))
        else:
            parent_path, _, leaf = path.rpartition(".")
            if parent_path not in local or not leaf:
                raise MirrorError(f"the parent of {path!r} first")
            alias = entry.get("alias")
            if alias is not None:
                if alias not in local:
                    raise MirrorError(f"{path!r} aliases an unknown module")
                module = local[alias]
            else:
                module = _make_local(child, handle, entry)
            local[parent_path].add_module(leaf, module)
        if path in local:
            raise MirrorError(f"{path!r} twice")
        local[path] = module
        if entry.get("alias") is None:
            _mirror_attributes(module, entry.get("attrs", {}))
            module.training = bool(entry.get("training"))
    root = local[""]

    params: dict[str, nn.Parameter] = {}
    for entry in desc["params"]:
        if not isinstance(entry, dict):
            raise MirrorError("a parameter entry")
        owner, leaf = _owner(local, entry.get("name"))
        alias = entry.get("alias")
        if alias is not None:
            if alias not in params:
                raise MirrorError(f"{entry['name']!r} aliases an unknown parameter")
            owner._parameters[leaf] = params[alias]
            params[entry["name"]] = params[alias]
            continue
        value = entry.get("value")
        if not _valid_tensor(value):
            raise MirrorError(f"{entry['name']!r} is not a dense CPU tensor")
        old = owner._parameters.get(leaf)
        if old is not None and old.shape != value.shape:
            raise MirrorError(
                f"{entry['name']!r} has shape {tuple(value.shape)}, expected {tuple(old.shape)}"
            )
        differentiable = value.is_floating_point() or value.is_complex()
        p = nn.Parameter(value, requires_grad=bool(entry.get("requires_grad")) and differentiable)
        owner._parameters[leaf] = p
        params[entry["name"]] = p

    for entry in desc["buffers"]:
        if not isinstance(entry, dict):
            raise MirrorError("a buffer entry")
        owner, leaf = _owner(local, entry.get("name"))
        alias = entry.get("alias")
        if alias is not None:
            owner._buffers[leaf] = root.get_buffer(alias)
        else:
            if not _valid_tensor(entry.get("value")):
                raise MirrorError(f"{entry['name']!r} is not a dense CPU tensor")
            owner._buffers[leaf] = entry["value"]
        if not entry.get("persistent", True):
            owner._non_persistent_buffers_set.add(leaf)

    mirrored = {name for name, _ in root.named_parameters(remove_duplicate=False)}
    if mirrored != set(params):
        raise MirrorError(
            "the mirrored parameters differ from the student's: "
            f"{sorted(mirrored ^ set(params))[:5]}"
        )
    for name, p in root.named_parameters():
        if p.is_meta:
            raise MirrorError(f"{name!r} was not sent")
    return root


# --------------------------------------------------------------------------------------------
# Proxies for the names a check receives
# --------------------------------------------------------------------------------------------


class RemoteFunction:
    """Stands for the student's function `name`: calls it in the child on the given arguments.

    Tensors go to the child on the CPU and come back on the device of the inputs; outputs keep the
    dtype the student's code gave them. Gradients flow back to the inputs through the child.
    """

    def __init__(self, child: _Child, name: str) -> None:
        self._child = child
        self.__name__ = self.__qualname__ = name

    def __call__(self, *args, **kwargs):
        return self._child.call(("name", self.__name__), args, kwargs, None, self.__name__)

    def __repr__(self) -> str:
        return f"<remote function {self.__name__}>"


class RemoteModuleClass(RemoteFunction):
    """Stands for the student's ``nn.Module`` class: calling it builds the module in the child.

    Returns a :class:`RemoteModule`. The parent's CPU generator state is used for the
    construction (and taken back after it), so a seeded construction gives the student's kernel's
    initial weights.
    """

    def __call__(self, *args, **kwargs) -> RemoteModule:
        module = super().__call__(*args, **kwargs)
        if not isinstance(module, RemoteModule):
            raise TypeError(
                f"{self.__name__}(...) returned {type(module).__name__}, not an nn.Module"
            )
        return module

    def __repr__(self) -> str:
        return f"<remote class {self.__name__}>"


# --------------------------------------------------------------------------------------------
# Sessions and the entry point
# --------------------------------------------------------------------------------------------


class TrustedSession:
    """One notebook's child (restarted when lost), and proxies for the names it defines.

    Example:
        with TrustedSession("sub.ipynb", ["attention_scores"], sandboxed=True) as session:
            result = session.check("attention_scores_tests", "attention_scores",
                                   check_attention_scores)
    """

    def __init__(
        self,
        notebook: str | Path,
        names: Iterable[str],
        *,
        sandboxed: bool = True,
        timeout: float = 120.0,
        call_timeout: float = 30.0,
        restarts: int = 1,
    ) -> None:
        self.notebook = Path(notebook)
        self.names = list(dict.fromkeys(names))
        self.sandboxed, self.timeout, self.call_timeout = sandboxed, timeout, call_timeout
        self.deadline = time.monotonic() + timeout
        self.restarts_left = restarts
        self.child: _Child | None = None
        self.info: dict = {}
        self.stop_before: int | None = None  # a cell that ended or hung the child, and why
        self.stop_reason = ""
        self.failed: str | None = None  # why nothing more can be checked

    def __enter__(self) -> TrustedSession:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> None:
        """Start a child and run the notebook; if a cell ends or hangs it, again up to that cell."""
        self.close()
        for _ in range(2):
            child = _Child(
                self.notebook,
                sandboxed=self.sandboxed,
                deadline=self.deadline,
                timeout=self.timeout,
                call_timeout=self.call_timeout,
            )
            try:
                self.info = child.load(self.names, self.stop_before)
            except _StoppedAtCell as stop:
                child.close()
                if self.stop_before is not None:
                    self.failed = f"the notebook could not be run: {stop.reason}"
                    return
                self.stop_before, self.stop_reason = stop.index, stop.reason
                continue
            except ChildLost as exc:
                child.close()
                self.failed = str(exc)
                return
            self.child = child
            return

    def close(self) -> None:
        if self.child is not None:
            self.child.close()
            self.child = None

    def _ensure_child(self) -> None:
        if self.child is not None and self.child.lost:
            lost = self.child.lost
            self.close()
            if self.restarts_left <= 0:
                self.failed = f"the grading process was lost again ({lost})"
            else:
                self.restarts_left -= 1
        if self.failed is None and self.child is None:
            if time.monotonic() >= self.deadline:
                self.failed = f"the time limit for the whole notebook ({self.timeout:g} s) ran out"
            else:
                self.start()

    def not_defined(self, name: str) -> str | None:
        """Why `name` cannot be checked, or None when the child defined it."""
        entry = self.info["names"].get(name)
        if entry is not None and entry["defined"]:
            return None
        stop = f"the notebook stopped at cell {self.stop_before}: {self.stop_reason}"
        for cell in self.info["defines"].get(name, []):
            if self.stop_before is not None and cell >= self.stop_before:
                return f"{name} is not defined ({stop}; the cell that defines it did not run)"
            if cell in self.info["interrupted"]:
                why = self.info["interrupted"][cell]
                return f"{name} is not defined (its cell was interrupted: {why})"
            if cell in self.info["errors"]:
                error_type, message = self.info["errors"][cell]
                return f"{name} is not defined (its cell raised {error_type}: {message})"
        if self.stop_before is not None:
            return f"{name} is not defined (no cell of the notebook defines it; {stop})"
        return f"{name} is not defined (no cell of the notebook defines it)"

    def proxy(self, name: str) -> RemoteFunction:
        """The proxy for `name`: a RemoteModuleClass for an nn.Module class, else a RemoteFunction.

        Raises NameError with the reason when the notebook did not define `name`.
        """
        self._ensure_child()
        if self.failed is not None or self.child is None:
            raise ChildLost(self.failed or "no grading process")
        reason = self.not_defined(name)
        if reason is not None:
            raise NameError(reason)
        if self.info["names"][name]["kind"] == "module_class":
            return RemoteModuleClass(self.child, name)
        return RemoteFunction(self.child, name)

    def check(self, grade_id: str, name: str, check: Callable[[Callable], None]) -> TrustedResult:
        """Run `check` on the proxy for `name`; its verdict, or why it could not run."""
        try:
            proxy = self.proxy(name)
        except ChildLost as exc:
            return TrustedResult(grade_id, False, f"not checked: {exc}")
        except NameError as exc:
            return TrustedResult(grade_id, False, str(exc))
        child = self.child
        try:
            check(proxy)
        except CheckFailed as exc:
            reason = str(exc) or "the check failed"
        except ChildLost as exc:
            reason = str(exc)
        except Exception as exc:  # a check that trips over something odd the student returned
            reason = f"the check could not complete: {type(exc).__name__}: {exc}"
        else:
            reason = ""
        if child.lost:  # whatever the check made of it, the process was lost during this check
            reason = child.lost
        return TrustedResult(grade_id, not reason, reason)


def trusted_check(
    notebook: str | Path,
    assignment: str,
    *,
    sandboxed: bool = True,
    timeout: float = 120.0,
    call_timeout: float = 30.0,
) -> dict[str, TrustedResult]:
    """Run every check of `assignment`'s GRADED map on `notebook`'s code, outside its kernel.

    Args:
        notebook: the submitted .ipynb (it is copied; the child never sees where it came from).
        assignment: the chapter's slug; ``autograder.<assignment>`` must have ``GRADED``.
        sandboxed: run the child under bubblewrap (SandboxUnavailable if bwrap is missing).
        timeout: seconds for the whole notebook: start, cells, all checks.
        call_timeout: seconds for each cell and each call of the student's code.

    Returns:
        grade cell id -> TrustedResult, in GRADED's order.

    Example: trusted_check("sub.ipynb", "ch04_self_attention")["sdpa_tests"] ->
        TrustedResult(grade_id="sdpa_tests", passed=True, reason="")
    """
    graded = importlib.import_module(f"autograder.{assignment}").GRADED
    names = [name for name, _ in graded.values()]
    results = {}
    with TrustedSession(
        notebook, names, sandboxed=sandboxed, timeout=timeout, call_timeout=call_timeout
    ) as session:
        for grade_id, (name, check) in graded.items():
            results[grade_id] = session.check(grade_id, name, check)
    return results
