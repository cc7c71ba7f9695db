"""The trusted side of grading (the whole flow: ``engine/__init__.py``): :func:`judge_notebook`.

A process lost during a check (it ended, or ran past its time limit) fails that part, saying why,
and is started again for the next.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from autograder.engine import protocol, runner
from autograder.engine.protocol import Event, Op
from autograder.engine.sandbox import Limits, bwrap_argv, runner_command
from autograder.toolkit import (
    UNKNOWN,
    CheckFailed,
    GradingAborted,
    StudentError,
    Subject,
    fails_own_check,
)

__all__ = ["Options", "PartVerdict", "NotebookRun", "RemoteSubject", "judge_notebook"]

GRACE = 5.0  # seconds the runner gets, past a time limit, before it is killed
MAX_STARTS = 4  # runner starts for one submission


@dataclass(frozen=True)
class Options:
    sandboxed: bool = True
    cell_seconds: float = 120.0  # one cell
    part_seconds: float = 120.0  # one part's check, all its calls together
    start_seconds: float = 60.0  # starting Python and torch in the sandbox
    limits: Limits = Limits()
    hidden: tuple[str, ...] = ()  # folders the sandbox must not show
    # torch threads of the checks here: one, since a grading worker runs on each core and the
    # student's process beside it (its own torch has one too); more fight over the cores
    threads: int = 1


@dataclass
class PartVerdict:
    grade_id: str
    passed: bool
    message: str = ""  # the property that failed, for the student's feedback


@dataclass
class NotebookRun:
    """What running the cells gave: each cell's outputs, the names defined, and incidents."""

    outputs: dict[int, list[dict]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)  # cell index -> why it was skipped
    verdicts: list[PartVerdict] = field(default_factory=list)
    aborted: str = ""  # why the notebook could not be run at all
    # seconds spent on "sandbox start" (a fork server, a fork), "execution" (the cells) and
    # "judging" (the checks); the grader adds its own ("scanner", "gradebook", "feedback")
    timings: dict[str, float] = field(default_factory=dict)


class _Lost(Exception):
    """The student's process ended or was killed."""


class ForkServer:
    """A grading worker's sandbox (``runner.serve_forks``): data on its stdin and stdout, control
    on a pipe pair. A student's process that does not stop in time takes it down with it."""

    def __init__(self, options: Options) -> None:
        workdir = self.workdir = tempfile.mkdtemp(prefix="sandbox-")
        to_child, from_judge = os.pipe()
        to_judge, from_child = os.pipe()
        cmd = [*runner_command(), "--control", str(to_child), str(from_child)]
        if options.sandboxed:
            cmd = bwrap_argv(cmd, workdir=workdir, hidden=options.hidden, limits=options.limits)
            env = None
        else:
            cmd = [cmd[0], "-I", str(runner.__file__), *cmd[3:]]
            env = {**os.environ, "MPLBACKEND": "agg", "OMP_NUM_THREADS": "1"}
        fds = (to_child, from_child)  # the fork server's ends of the control channel
        pipe = subprocess.PIPE
        self.proc = subprocess.Popen(
            cmd, stdin=pipe, stdout=pipe, stderr=pipe, cwd=workdir, env=env, pass_fds=fds,
            start_new_session=True,
        )  # fmt: skip
        for fd in fds:
            os.close(fd)
        self.control_out = os.fdopen(from_judge, "wb", buffering=0)
        self.control_in = os.fdopen(to_judge, "rb", buffering=0)
        self.data = protocol.FrameBuffer(self.proc.stdout.fileno())
        self.control = protocol.FrameBuffer(self.control_in.fileno())
        self.child = False
        self.alive = True
        kind, frame = self.receive(time.monotonic() + options.start_seconds)
        if kind != "control" or frame.get("event") != Event.READY:
            raise self._lost("the grading process did not start")

    def _lost(self, why: str) -> _Lost:
        self.kill()
        return _Lost(why)

    def kill(self) -> None:
        self.alive = self.child = False
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        proc = self.proc
        for pipe in (proc.stdin, proc.stdout, proc.stderr, self.control_in, self.control_out):
            with contextlib.suppress(OSError):
                pipe.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _write(self, pipe, message: dict) -> None:
        try:
            pipe.write(protocol.pack(message))
            pipe.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise self._lost("the grading process ended") from None

    def fork(self) -> None:
        """A fresh process for the next student, on the data channel."""
        protocol.drain(self.data.fd)  # what an earlier student's process left: no one reads it
        self.data.buffer = b""
        self._write(self.control_out, {"op": Op.FORK})
        self.child = True

    def send(self, message: dict) -> None:
        self._write(self.proc.stdin, message)

    def receive(self, deadline: float) -> tuple[str, dict]:
        """("data" or "control", the next frame); _Lost at the deadline (everything is killed)."""
        while True:
            if self.control.complete():
                # "ended" comes once the student's process is gone: what it wrote before is in
                # the data pipe already, and comes first.
                self.data.buffer += protocol.drain(self.data.fd)
            for kind, frames in (("data", self.data), ("control", self.control)):
                try:
                    frame = frames.next()
                except protocol.ProtocolError as exc:
                    raise self._lost(str(exc)) from None
                if frame is not None:
                    if kind == "control" and frame.get("event") == Event.ENDED:
                        self.child = False
                    return kind, frame
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._lost("it ran past its time limit and was stopped")
            pipes = (self.proc.stdout, self.control_in, self.proc.stderr)
            ready, _, _ = select.select([p for p in pipes if not p.closed], [], [], left)
            for pipe in ready:
                chunk = os.read(pipe.fileno(), 1 << 20)
                if pipe is self.proc.stderr:  # read so the pipe never fills; nothing is kept
                    if not chunk:
                        pipe.close()
                elif not chunk:
                    raise self._lost(_ended(self.proc.wait()))
                else:
                    (self.control if pipe is self.control_in else self.data).buffer += chunk

    def end_child(self) -> None:
        """Ask the student's process to end and wait until the sandbox is clean again (what it
        left in the data pipe, the next fork drops)."""
        if self.child:
            self.send({"op": Op.EXIT})
            deadline = time.monotonic() + GRACE
            while self.child:
                self.receive(deadline)


def _ended(code: int | None) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else code
        return f"the grading process was killed ({name}; a memory or CPU-time limit?)"
    if code is not None and os.WIFSIGNALED(code):
        return f"the grading process was killed (signal {os.WTERMSIG(code)}; a memory limit?)"
    if code is not None and os.WIFEXITED(code):
        code = os.WEXITSTATUS(code)
    return f"the grading process ended (exit status {code}; os._exit, sys.exit or a crash?)"


_SERVERS: dict[Options, ForkServer] = {}


def fork_server(options: Options) -> ForkServer:
    """This process's fork server for `options`, started on first use (and after a loss)."""
    server = _SERVERS.get(options)
    if server is None or not server.alive or server.proc.poll() is not None:
        if server is not None:
            server.kill()
        server = _SERVERS[options] = ForkServer(options)
    return server


class Session:
    """A submission's process (forked again as needed), and the stand-ins of the current check."""

    def __init__(self, cells: list[tuple[int, str]], options: Options, parts: tuple) -> None:
        self.cells = cells
        self.options = options
        self.parts = parts  # the chapter's parts being judged
        self.run = NotebookRun()
        self.server: ForkServer | None = None  # while a process of this student's is alive
        self.starts = 0
        self.stand_ins: Mapping[str, Callable] = {}
        self.deadline = 0.0
        # name -> why the student's own is replaced (None: it passed every check of it)
        self.verdicts: dict[str, str | None] = {}

    def close(self) -> None:
        """End this student's process; the fork server is clean for the next student."""
        server, self.server = self.server, None
        with contextlib.suppress(_Lost):  # killed, with the fork server: the next gets a new one
            if server is not None:
                server.end_child()

    def _receive(self, deadline: float) -> dict:
        kind, frame = self.server.receive(deadline)
        if kind == "control":  # the student's process ended
            self.server = None
            raise _Lost(_ended(frame.get("status")))
        return frame

    def start(self) -> None:
        """Fork a process and run every cell not skipped; a cell that ends it is skipped."""
        options = self.options
        while True:
            self.close()
            if self.starts >= MAX_STARTS:
                raise GradingAborted("the grading process was lost too often; not checked")
            self.starts += 1
            current = None
            try:
                started = time.perf_counter()
                self.server = fork_server(options)
                self.server.fork()
                self._time("sandbox start", started)
                started = time.perf_counter()
                todo = [(i, src) for i, src in self.cells if i not in self.run.skipped]
                self.server.send({"op": Op.RUN, "cells": todo, "seconds": options.cell_seconds})
                deadline = time.monotonic() + options.start_seconds
                while True:
                    frame = self._receive(deadline)
                    event = frame.get("event")
                    if event == Event.CELL:
                        current = int(frame["index"])
                        deadline = time.monotonic() + options.cell_seconds + GRACE
                    elif event == Event.CELL_DONE:
                        outputs = frame.get("outputs")
                        if type(outputs) is list:
                            self.run.outputs[int(frame["index"])] = _clean_outputs(outputs)
                        current = None
                        deadline = time.monotonic() + options.start_seconds
                    elif event == Event.READY:
                        names = frame.get("names")
                        if type(names) is dict:
                            self.run.names = {str(k): str(v) for k, v in names.items()}
                        self._time("execution", started)
                        return
                    else:
                        raise _Lost("the grading process sent an unexpected frame")
            except _Lost as lost:
                if current is None:
                    raise GradingAborted(f"the notebook could not be run: {lost}") from None
                why = f"this cell stopped the grading process ({lost}); it was skipped"
                self.run.skipped[current] = why
                self.run.outputs[current] = [_error_output("GradingStopped", why)]

    def _time(self, key: str, started: float) -> None:
        self.run.timings[key] = self.run.timings.get(key, 0.0) + time.perf_counter() - started

    def request(self, message: dict) -> dict:
        """Send a request; answer the stand-in calls it makes; return its reply."""
        if self.server is None:
            self.start()
        seconds = max(0.1, self.deadline - time.monotonic())
        try:
            self.server.send({**message, "seconds": seconds, "stand_ins": list(self.stand_ins)})
            while (frame := self._receive(self.deadline + GRACE)).get("event") == Event.STAND_IN:
                self.server.send(self._stand_in(frame))
            return frame
        except _Lost as lost:
            self.server = None
            raise GradingAborted(str(lost)) from None

    def _stand_in(self, frame: dict) -> dict:
        """The reference's answer to a stand-in call from the student's code (or its gradient)."""
        try:
            fn = self.stand_ins[frame["name"]]
            args = protocol.decode(frame["args"], device_map=protocol.device)
            kwargs = protocol.decode(frame["kwargs"], device_map=protocol.device)
            if type(args) is not tuple or type(kwargs) is not dict:
                raise protocol.ProtocolError("malformed arguments")
            if frame.get("grad") is None:
                return {"ok": True, "value": protocol.encode(fn(*args, **kwargs))}
            grad_output = protocol.decode(frame["grad"], device_map=protocol.device)
            # the leaves its autograd saved: those that require grad in the student's process
            leaves = runner.requiring_grad((args, kwargs), frame.get("requires_grad") or [])
            with torch.enable_grad():
                grads = runner.vjp(fn(*args, **kwargs), grad_output, leaves)
            grads = [
                torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads, strict=False)
            ]
            return {"ok": True, "value": protocol.encode(grads)}
        except Exception as exc:  # bad arguments from the student's code: it gets the error
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def _error_output(ename: str, evalue: str, traceback=()) -> dict:
    return {"output_type": "error", "ename": ename, "evalue": evalue, "traceback": list(traceback)}


def _clean_outputs(outputs: list) -> list[dict]:
    """The runner's outputs, kept only as the plain strings a notebook output holds."""
    clean = []
    for out in (o for o in outputs[:20] if type(o) is dict):
        if out.get("output_type") == "stream" and out.get("name") in ("stdout", "stderr"):
            text = str(out.get("text", ""))
            clean.append({"output_type": "stream", "name": out["name"], "text": text})
        elif out.get("output_type") == "error":
            tb = out.get("traceback") if type(out.get("traceback")) is list else []
            ename, evalue = str(out.get("ename", "Error")), str(out.get("evalue", ""))
            clean.append(_error_output(ename, evalue, map(str, tb[:20])))
    return clean


class RemoteSubject(Subject):
    """The student's function, class or object in the runner, as a check sees it."""

    def __init__(self, session: Session, target: tuple, label: str) -> None:
        self.session = session
        self.target = target
        self.label = label

    def _keep(self, obj) -> int:
        if isinstance(obj, RemoteSubject) and obj.target[0] == "handle":
            return obj.target[1]
        raise protocol.ProtocolError(f"a {type(obj).__name__} cannot be sent to the student's code")

    def _ask(self, message: dict):
        reply = self.session.request({**message, "target": self.target})
        if reply.get("ok") is not True:
            error = reply.get("error") if type(reply.get("error")) is dict else {}
            where = error.get("where") if type(error.get("where")) is str else ""
            kind, message = str(error.get("type", "Error")), str(error.get("message", ""))
            raise StudentError(kind, message, where)
        return reply

    def _value(self, enc):
        def resolve(key: int, type_name: str):
            return RemoteSubject(self.session, ("handle", key), f"{type_name} object")

        try:
            return protocol.decode(enc, resolve, protocol.device)
        except protocol.ProtocolError as exc:
            raise CheckFailed(f"{self.label}: the result could not be read ({exc}).") from None

    def invoke(self, method, args, kwargs, *, seed=None, grad=None):
        args, kwargs = (protocol.encode(x, self._keep) for x in (tuple(args), dict(kwargs)))
        message = {"op": Op.CALL, "method": method, "args": args, "kwargs": kwargs, "seed": seed}
        if grad is not None:
            message["grad"] = {**grad, "grad_output": protocol.encode(grad.get("grad_output"))}
        reply = self._ask(message)
        out = self._value(reply.get("value"))
        if grad is None:
            return out, None
        grads = self._value(reply.get("grads"))
        if type(grads) is not dict or type(grads.get("inputs")) is not list:
            raise CheckFailed(f"{self.label}: the gradients could not be read.")
        grads.setdefault("params", {})
        return out, grads

    def attribute(self, name: str):
        return self._value(self._ask({"op": Op.GET, "name": name}).get("value"))

    def describe(self) -> dict:
        info = self._value(self._ask({"op": Op.DESCRIBE}).get("value"))
        if type(info) is not dict or not {"type", "modules", "state"} <= set(info):
            raise CheckFailed(f"{self.label}: its description could not be read.")
        return info

    def load_state_dict(self, state, strict: bool = True) -> None:
        self._ask({"op": Op.LOAD_STATE, "state": protocol.encode(dict(state)), "strict": strict})

    def to(self, device=None, dtype=None) -> RemoteSubject:
        dtype_name = protocol.dtype_name(dtype)
        self._ask({"op": Op.TO, "device": str(torch.device(device or "cpu")), "dtype": dtype_name})
        return self

    def sibling(self, name: str) -> RemoteSubject | None:
        if name not in self.session.run.names:
            return None
        return RemoteSubject(self.session, ("name", name), name)

    def checks_of(self, name: str, checker: Callable) -> list[Callable] | None:
        return [p.check for p in self.session.parts if p.name == name] or None

    def verdict(self, name: str):
        return self.session.verdicts.get(name, UNKNOWN)

    def remember(self, name: str, why: str | None) -> None:
        self.session.verdicts[name] = why

    @contextlib.contextmanager
    def standing_in(self, stand_ins: Mapping[str, Callable]):
        saved, self.session.stand_ins = self.session.stand_ins, dict(stand_ins)
        try:
            yield
        finally:
            self.session.stand_ins = saved


def judge_notebook(
    cells: list[tuple[int, str]], parts, options: Options = Options()
) -> NotebookRun:
    """Run `cells` ((index, source) pairs) in the sandbox, then check every part of `parts`
    (``autograder.chapters.Part``); never raises for anything the student's code does."""
    session = Session(cells, options, tuple(parts))
    threads = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    try:
        try:
            session.start()
        except GradingAborted as exc:
            session.run.aborted = str(exc)
            session.run.verdicts = [PartVerdict(p.grade_id, False, str(exc)) for p in parts]
            return session.run
        for i, part in enumerate(parts):
            started = time.perf_counter()
            verdict = _judge_part(session, part)
            session._time("judging", started)
            session.run.verdicts.append(verdict)
            # Once every cell of a name is judged, a later part that calls it knows whether the
            # student's own is used or the reference stands in for it.
            if all(p.name != part.name for p in parts[i + 1 :]):
                judged = zip(session.run.verdicts, parts, strict=False)
                failed = [v.message for v, p in judged if p.name == part.name and not v.passed]
                why = fails_own_check(part.name, failed[0]) if failed else None
                session.verdicts[part.name] = why
        return session.run
    finally:
        session.close()
        torch.set_num_threads(threads)


def _judge_part(session: Session, part) -> PartVerdict:
    if part.name not in session.run.names:
        return PartVerdict(
            part.grade_id,
            False,
            f"{part.name} is not defined after the notebook has run; look for an error in the "
            "cell that defines it.",
        )
    session.deadline = time.monotonic() + session.options.part_seconds
    try:
        if session.server is None:
            session.start()
        part.check(RemoteSubject(session, ("name", part.name), part.name))
    except CheckFailed as exc:
        return PartVerdict(part.grade_id, False, str(exc))
    except GradingAborted as exc:
        return PartVerdict(part.grade_id, False, f"{part.name}: {exc}")
    except Exception as exc:  # the check itself broke on what came back: say so, never crash
        why = f"{part.name} could not be checked ({type(exc).__name__}: {exc})"
        return PartVerdict(part.grade_id, False, why)
    return PartVerdict(part.grade_id, True)
