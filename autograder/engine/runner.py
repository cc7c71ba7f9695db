"""The sandboxed side of grading: run one student's notebook, then answer calls on what it defined.

In the sandbox (beside ``protocol.py``, the only other code of the course there) it never sees a
check, a reference or a hidden test. :func:`call`, :func:`describe` and :func:`load_state` serve
in-process checks too (``autograder.toolkit.LocalSubject``): a check sees one behaviour either way.
"""

from __future__ import annotations

import contextlib
import io
import linecache
import os
import shutil
import signal
import sys
import traceback

import torch

if __name__ == "__main__":  # in the sandbox: protocol.py lies beside this file, alone
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import protocol

    del sys.path[0]
else:
    from autograder.engine import protocol

Op, Event, ProtocolError = protocol.Op, protocol.Event, protocol.ProtocolError
encode, decode = protocol.encode, protocol.decode
_from_numpy = protocol._from_numpy  # autograder.toolkit's name for it

MAX_TEXT = 20_000  # characters of a cell's printed output that are kept


class TimeLimit(BaseException):
    """Raised in the student's code when a cell or a call runs past its time limit."""


@contextlib.contextmanager
def time_limit(seconds):
    """Raise TimeLimit in the block after `seconds` (None: no limit)."""
    if not seconds:
        yield
        return

    def expire(signum, frame):
        raise TimeLimit(f"ran past the time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class NotDifferentiable(RuntimeError):
    """A call asked for gradients, but the output does not depend differentiably on the inputs."""


def tensor_leaves(value) -> list[torch.Tensor]:
    """The tensors in lists, tuples and dict values of `value`, in order."""
    leaves = []
    map_leaves(value, leaves.append)
    return leaves


def map_leaves(value, fn):
    """`value` with every tensor t in lists, tuples and dict values replaced by fn(t)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, list):
        return [map_leaves(v, fn) for v in value]
    if isinstance(value, tuple):
        return tuple(map_leaves(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: map_leaves(v, fn) for k, v in value.items()}
    return value


@contextlib.contextmanager
def seeded(seed: int | None):
    """Run the block with torch's CPU generator seeded by `seed` (and put it back afterwards)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def requiring_grad(value, flags=None) -> list[torch.Tensor]:
    """The floating-point tensors in `value` (those flagged, with `flags`), now requiring grad."""
    leaves = tensor_leaves(value)
    flags = [True] * len(leaves) if flags is None else flags
    marked = zip(leaves, flags, strict=False)
    return [t.requires_grad_() for t, f in marked if f and t.is_floating_point()]


def vjp(out: torch.Tensor, grad_output, wrt: list) -> tuple:
    """The gradients of <out, grad_output> (ones if None) with respect to `wrt`, None if unused."""
    g = torch.ones_like(out) if grad_output is None else grad_output.to(out.device, out.dtype)
    # <out, g> as a scalar: the same gradients as grad_outputs=g, without the import of
    # sympy that torch makes on the first non-scalar grad_outputs (half a second a process).
    return torch.autograd.grad((out * g).sum(), wrt, allow_unused=True)


def call(obj, method: str | None, args: tuple, kwargs: dict, seed=None, grad=None):
    """obj(*args, **kwargs), or obj.<method>(...): returns (output, gradients or None).

    With grad = {"inputs": bool, "params": bool, "grad_output": tensor or None}, the gradients of
    <output, grad_output> with respect to the floating-point arguments (when "inputs") and obj's
    parameters (when "params"): {"inputs": [grad or None, ...], "params": {name: grad or None}}.
    """
    fn = obj if method is None else getattr(obj, method)
    if grad is None:
        with seeded(seed):
            return fn(*args, **kwargs), None
    leaves = requiring_grad((args, kwargs)) if grad.get("inputs") else []
    params = list(obj.named_parameters()) if grad.get("params") else []
    with seeded(seed), torch.enable_grad():
        out = fn(*args, **kwargs)
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            raise NotDifferentiable(
                "the output does not depend differentiably on the inputs; use torch operations "
                "only (no .detach(), .item(), .numpy() or torch.no_grad())"
            )
        wrt = [*leaves, *(p for _, p in params)]
        grads = vjp(out, grad.get("grad_output"), wrt) if wrt else ()
    grads, n = [None if x is None else x.detach() for x in grads], len(leaves)
    names = (name for name, _ in params)
    return out, {"inputs": grads[:n], "params": dict(zip(names, grads[n:], strict=False))}


def describe(obj) -> dict:
    """What a check may know of an object: its type, and for a module its parts and its state."""
    out = {"type": type(obj).__name__, "modules": {}, "state": {}}
    if isinstance(obj, torch.nn.Module):
        out["modules"] = {name: type(m).__name__ for name, m in obj.named_modules()}
        out["state"] = dict(obj.state_dict())
    return out


def load_state(obj, state: dict, strict: bool) -> None:
    """obj.load_state_dict(state), with the tensors copied in without gradient tracking."""
    if not isinstance(obj, torch.nn.Module):
        raise TypeError(f"a {type(obj).__name__} is not an nn.Module")
    with torch.no_grad():
        obj.load_state_dict(state, strict=strict)


def _error(exc: BaseException, cells: dict | None = None) -> dict:
    """An exception as data; with `cells` ({code name: cell index}), where it was raised."""
    out = {"type": type(exc).__name__, "message": str(exc)[:2000]}
    frames = reversed(traceback.extract_tb(exc.__traceback__) if cells else [])
    if (frame := next((f for f in frames if f.filename in cells), None)) is not None:
        code = (frame.line or "").strip()[:300]
        out["where"] = f"cell {cells[frame.filename] + 1}, line {frame.lineno}: {code}"
    return out


class _Server:
    """Runs the cells it is sent, then answers calls, one request at a time."""

    def __init__(self, channel: protocol.Channel) -> None:
        self.channel = channel
        self.objects: dict[int, object] = {}  # handle -> object, kept alive (so ids stay unique)
        self.handles: dict[int, int] = {}  # id(object) -> handle
        self.bridges: dict[str, object] = {}  # name -> the stand-in that asks the judge
        self.shell = None
        self.namespace: dict = {}  # the shell's, once the cells run
        self.cells: dict[str, int] = {}  # IPython's code name of a cell -> its index

    def keep(self, obj) -> int:
        key = self.handles.setdefault(id(obj), len(self.objects) + 1)
        self.objects[key] = obj
        return key

    def resolve(self, key: int, _type: str):
        if key not in self.objects:
            raise ProtocolError(f"no object {key}")
        return self.objects[key]

    def value(self, enc):
        return decode(enc, self.resolve, protocol.device)

    def run_cell(self, index: int, source: str, seconds) -> list[dict]:
        out, err = io.StringIO(), io.StringIO()
        outputs, error = [], None
        known = set(linecache.cache)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                with time_limit(seconds):
                    result = self.shell.run_cell(source, store_history=False)
                    error = result.error_in_exec or result.error_before_exec
            except BaseException as exc:  # noqa: BLE001 - a cell may raise anything, SystemExit too
                error = exc
        # IPython caches each cell's source under a code name of its own: remember which
        # cell it was, so that an error raised later in a function defined here can say where.
        self.cells.update(dict.fromkeys(set(linecache.cache) - known, index))
        for name, stream in (("stdout", out), ("stderr", err)):
            text = stream.getvalue()
            if len(text) > MAX_TEXT:
                text = text[:MAX_TEXT] + "\n... (output cut by the grader)\n"
            if text:
                outputs.append({"output_type": "stream", "name": name, "text": text})
        if error is not None:
            lines = traceback.format_exception(type(error), error, error.__traceback__)
            lines = [line.rstrip("\n")[:2000] for line in lines if "runner.py" not in line][-12:]
            info = {"ename": type(error).__name__, "evalue": str(error)[:2000], "traceback": lines}
            outputs.append({"output_type": "error", **info})
        return outputs

    def run(self, request: dict) -> None:
        from IPython.core.interactiveshell import InteractiveShell

        shell = self.shell = InteractiveShell.instance()
        shell.enable_gui = lambda gui=None: None  # %matplotlib inline: no kernel, no GUI here
        shell.showtraceback = lambda *a, **k: None  # the error is reported as an output instead
        shell.showsyntaxerror = lambda *a, **k: None
        self.namespace = shell.user_ns
        cells = request.get("cells")
        if type(cells) is not list:
            raise ProtocolError("run needs a list of cells")
        for index, source in cells:
            self.channel.write({"event": Event.CELL, "index": int(index)})
            outputs = self.run_cell(int(index), str(source), request.get("seconds"))
            self.channel.write({"event": Event.CELL_DONE, "index": int(index), "outputs": outputs})
        items = list(self.namespace.items())  # a copy: a student's thread may still bind names
        names = {k: type(v).__name__ for k, v in items if isinstance(k, str) and k[:1] != "_"}
        self.channel.write({"event": Event.READY, "names": names})

    def stand_in(self, name: str):
        """A function that answers with the judge's reference for `name` (and its gradients)."""

        def ask(spec: dict, grad=None):
            return self.ask({"event": Event.STAND_IN, "name": name, **spec, "grad": grad})

        class _Bridge(torch.autograd.Function):
            @staticmethod
            def forward(ctx, spec, *tensors):
                ctx.spec = spec
                ctx.save_for_backward(*tensors)
                return ask(spec)

            @staticmethod
            def backward(ctx, grad_output):
                grads = ask(ctx.spec, encode(grad_output.detach().cpu()))
                if type(grads) is not list or len(grads) != len(ctx.saved_tensors):
                    raise ProtocolError("a malformed gradient from the judge")
                return (None, *grads)

        def reference(*args, **kwargs):
            flags = [t.requires_grad for t in tensor_leaves((args, kwargs))]
            spec = {"args": encode(args), "kwargs": encode(kwargs)}
            if any(flags) and torch.is_grad_enabled():
                leaves = [t for t in tensor_leaves((args, kwargs)) if t.requires_grad]
                return _Bridge.apply({**spec, "requires_grad": flags}, *leaves)
            return ask(spec)

        reference.__name__ = reference.__qualname__ = name
        return reference

    def ask(self, message: dict):
        self.channel.write(message)
        reply = self.channel.read()
        if not reply.get("ok"):
            raise RuntimeError(str(reply.get("error", "the reference failed"))[:2000])
        return self.value(reply["value"])

    @contextlib.contextmanager
    def standing_in(self, names):
        saved = {name: self.namespace.get(name, _MISSING) for name in names}
        for name in saved:
            if name not in self.bridges:  # one autograd.Function class per name, made once
                self.bridges[name] = self.stand_in(name)
            self.namespace[name] = self.bridges[name]
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is _MISSING:
                    self.namespace.pop(name, None)
                else:
                    self.namespace[name] = value

    def target(self, request: dict):
        kind, key = request["target"]
        if kind == "name":
            if key not in self.namespace:
                raise NameError(f"name {key!r} is not defined")
            return self.namespace[key]
        return self.resolve(key, "")

    def handle(self, request: dict) -> dict:
        op = request.get("op")
        obj = self.target(request)
        if op == Op.CALL:
            args, kwargs = self.value(request["args"]), self.value(request["kwargs"])
            grad = request.get("grad")
            if grad is not None:
                grad = {**grad, "grad_output": self.value(grad.get("grad_output"))}
            method, seed, seconds = (request.get(key) for key in ("method", "seed", "seconds"))
            with self.standing_in(request.get("stand_ins") or ()), time_limit(seconds):
                out, grads = call(obj, method, args, kwargs, seed, grad)
            return {"value": encode(out, self.keep), "grads": encode(grads)}
        if op == Op.GET:
            return {"value": encode(getattr(obj, request["name"]), self.keep)}
        if op == Op.DESCRIBE:
            return {"value": encode(describe(obj))}
        if op == Op.LOAD_STATE:
            load_state(obj, self.value(request["state"]), bool(request.get("strict", True)))
        elif op == Op.TO:
            device = protocol.device(str(request.get("device") or "cpu"))
            dtype = request.get("dtype")
            obj.to(device=device, dtype=protocol.DTYPES[dtype] if dtype else None)
        else:
            raise ProtocolError(f"unknown op {op!r}")
        return {"value": None}

    def serve(self) -> None:
        while True:
            try:
                request = self.channel.read()
            except EOFError:
                return
            if request.get("op") == Op.RUN:
                self.run(request)
                continue
            if request.get("op") == Op.EXIT:
                return
            try:
                reply = {"ok": True, **self.handle(request)}
            except BaseException as exc:  # noqa: BLE001 - the student's code may raise anything
                reply = {"ok": False, "error": _error(exc, self.cells)}
            try:
                self.channel.write(reply)
            except ProtocolError as exc:
                self.channel.write({"ok": False, "error": _error(exc)})


_MISSING = object()


# The fork server: one sandbox per grading worker, one fresh process per student

WRITABLE = ("/dev", "/tmp", "/sandbox")  # what the sandbox can write (its root is read-only)
IN_SANDBOX = "/grader/runner.py"  # where the sandbox puts this file (autograder/engine/sandbox.py)


def _tree(roots) -> set[str]:
    """Every path under `roots`, not following links."""
    paths = set()
    for root in roots:
        for folder, dirs, files in os.walk(root):
            paths.add(folder)
            paths.update(os.path.join(folder, n) for n in dirs + files)
    return paths


def _not_dumpable() -> None:
    """Keep other processes out of this one's memory and descriptors: with no capabilities, only
    a dumpable process can be read (/proc/PID/fd) or traced by another."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_dumpable = 4
    if libc.prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")


def _warm_up() -> None:
    """Import and run once what every student's run needs, so that each fork starts warm."""
    from IPython.core import interactiveshell  # noqa: F401

    x = torch.randn(4, 5, 8, requires_grad=True)  # (B, L, E)
    w = torch.softmax(x @ x.transpose(-2, -1) / 8**0.5, dim=-1)  # (B, L, L)
    torch.autograd.grad((w @ x).sum(), [x])
    frame = protocol.pack({"t": encode(x)})
    decode(protocol.unpack(frame[protocol.HEADER.size :])["t"])


def _clean_sandbox(before: set[str]) -> None:
    """After a student's process: kill everything it left running, and remove every file and
    folder not in the writable folders when the sandbox started (`before`). Only inside the
    sandbox, where this process tree is the whole PID namespace: outside, it would be a disaster.
    """
    if os.path.abspath(__file__) != IN_SANDBOX or os.getcwd() != "/sandbox":
        raise RuntimeError("refusing to clean up outside the sandbox")
    me = os.getpid()
    for _ in range(100):
        strays = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]
        if not strays:
            break
        for pid in strays:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
    for path in sorted(_tree(WRITABLE) - before, key=len):  # a path may be gone with its folder
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            with contextlib.suppress(OSError):
                os.unlink(path)


def serve_forks(control: protocol.Channel, data_in: int, data_out: int) -> None:
    """The fork server: a fresh process for each ``fork``; ``ended`` once the sandbox is clean."""
    _not_dumpable()
    _warm_up()
    sandboxed = os.path.abspath(__file__) == IN_SANDBOX
    before = _tree(WRITABLE) if sandboxed else set()
    control.write({"event": Event.READY})
    while True:
        try:
            request = control.read()
        except EOFError:
            return
        if request.get("op") != Op.FORK:
            continue
        pid = os.fork()
        if pid == 0:
            os.close(control.fd_in)
            os.close(control.fd_out)
            try:
                _Server(protocol.Channel(data_in, data_out)).serve()
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        if sandboxed:
            _clean_sandbox(before)
        protocol.drain(data_in)  # what the student's process sent and no one read
        control.write({"event": Event.ENDED, "status": int(status)})


def main() -> None:
    # The data channel moves to private descriptors; what the student's code prints to fd 1 (or
    # reads from fd 0) then cannot reach it. A forged frame would only feed its own grading.
    # Each student's process closes the control channel before any of its code runs.
    if len(sys.argv) != 4 or sys.argv[1] != "--control":
        raise SystemExit("usage: runner.py --control IN OUT (the judge starts it)")
    fd_in, fd_out = os.dup(0), os.dup(1)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    serve_forks(protocol.Channel(int(sys.argv[2]), int(sys.argv[3])), fd_in, fd_out)


if __name__ == "__main__":
    sys.exit(main())
