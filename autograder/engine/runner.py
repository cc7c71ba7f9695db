"""The sandboxed side of grading: run one student's notebook, then answer calls on what it defined.

This file is the only code of the course that enters the sandbox (``autograder/engine/__init__.py``
describes the protocol as a whole). The judge starts it under bubblewrap as ``python -I
runner.py``; it imports the standard library and torch (and IPython, to run cells as a notebook
does), nothing of the course. It never sees a check, a reference or a hidden test: it runs the
cells it is sent, then calls the student's functions, classes and objects on inputs that the judge
chose, and sends the results back as data.

The same helpers (:func:`call`, :func:`describe`, :func:`encode`, :func:`decode`) also serve the
checks when they run in-process (``autograder.toolkit.LocalSubject``), so a check sees one
behaviour whether the student's code runs beside it or in the sandbox.

Values cross the boundary as ``torch.save`` frames that the other side loads with
``torch.load(weights_only=True)``, which builds tensors and plain data only. Every value is a
tagged tree (:func:`encode`): scalars (None, bool, int, float, str) as themselves;
``("B", latin-1 text)`` for bytes, ``("T", tensor, device)`` for a tensor, ``("L", [...])`` for
a list, ``("U", [...])`` for a tuple, ``("D", [(key, value), ...])`` for a dict (so keys may be
tuples), and ``("H", id, type name)`` for an object that stays on its side (a module, a tokenizer)
and is named by its id in later requests.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import struct
import sys
import traceback

import torch

HEADER = struct.Struct(">Q")
MAX_FRAME = 256 * 2**20  # bytes in one frame
MAX_DEPTH = 32  # nesting of containers in one value
MAX_ITEMS = 100_000  # scalars, tensors and containers in one value
MAX_NUMEL = 2**27  # elements in one tensor
MAX_TEXT = 20_000  # characters of a cell's printed output that are kept
TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)
# The dtypes a value may name (a check asking for float64, a student's result in bfloat16).
DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64,
              torch.complex128, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
              torch.bool)
}


class ProtocolError(ValueError):
    """A frame or a value that does not follow the protocol."""


class TimeLimit(BaseException):
    """Raised in the student's code when a cell or a call runs past its time limit."""


@contextlib.contextmanager
def time_limit(seconds):
    """Raise TimeLimit in the block after `seconds` (None: no limit). The judge kills the process
    if the student's code catches it and goes on."""
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


# --------------------------------------------------------------------------------------------
# Values across the boundary
# --------------------------------------------------------------------------------------------


def encode(value, keep=None, _state=None, _depth: int = 0):
    """The tagged tree of `value`; objects that are not plain data go through keep(obj) -> id.

    Example: encode((torch.ones(1), {("a", 1): 2}, torch.float64)) ->
        ("U", [("T", tensor([1.]), "cpu"), ("D", [(("U", ["a", 1]), 2)]), ("Y", "float64")])
    """
    state = _state if _state is not None else [0]
    state[0] += 1
    if state[0] > MAX_ITEMS or _depth > MAX_DEPTH:
        raise ProtocolError("the value is too large or too deeply nested to send")
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, (bytes, bytearray)):  # weights_only cannot load an empty bytes
        return ("B", bytes(value).decode("latin-1"))
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, torch.dtype):
        if str(value).removeprefix("torch.") not in DTYPES:
            raise ProtocolError(f"the dtype {value} cannot be sent")
        return ("Y", str(value).removeprefix("torch."))
    if isinstance(value, torch.device):
        return ("V", value.type)
    if isinstance(value, torch.Tensor):
        device = value.device.type
        return ("T", value.detach().as_subclass(torch.Tensor).to("cpu").contiguous(), device)
    module = type(value).__module__ or ""
    if module == "numpy" or module.startswith("numpy."):
        value = _from_numpy(value)
        if isinstance(value, torch.Tensor) or type(value) in (bool, int, float, complex):
            return encode(value, keep, state, _depth)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list):
        return ("L", [encode(v, keep, state, _depth + 1) for v in value])
    if isinstance(value, tuple):
        return ("U", [encode(v, keep, state, _depth + 1) for v in value])
    if isinstance(value, dict):
        return (
            "D",
            [
                (encode(k, keep, state, _depth + 1), encode(v, keep, state, _depth + 1))
                for k, v in value.items()
            ],
        )
    if keep is None:
        raise ProtocolError(f"a {type(value).__name__} cannot be sent")
    return ("H", keep(value), type(value).__name__)


def _from_numpy(value):
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biuf":
            return torch.from_numpy(np.ascontiguousarray(value)).clone()
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode(enc, resolve=None, device_map=None, _state=None, _depth: int = 0):
    """The value of a tagged tree, checking every node; handles go through resolve(id, type name).

    device_map(name) says where a tensor, or a torch.device, that was on device `name` goes on
    this side.
    Raises ProtocolError for anything that is not a well-formed tree of plain data.
    """
    state = _state if _state is not None else [0]
    state[0] += 1
    if state[0] > MAX_ITEMS or _depth > MAX_DEPTH:
        raise ProtocolError("the value is too large or too deeply nested")
    if enc is None or type(enc) in (bool, int, float, str):
        return enc
    if type(enc) is not tuple or not enc or enc[0] not in ("T", "L", "U", "D", "H", "B", "Y", "V"):
        raise ProtocolError(f"unexpected {type(enc).__name__} in a value")
    tag = enc[0]
    if tag == "B":
        if len(enc) != 2 or type(enc[1]) is not str:
            raise ProtocolError("malformed bytes")
        try:
            return enc[1].encode("latin-1")
        except UnicodeEncodeError:
            raise ProtocolError("malformed bytes") from None
    if tag == "Y":
        if len(enc) != 2 or type(enc[1]) is not str or enc[1] not in DTYPES:
            raise ProtocolError("a malformed or unknown dtype")
        return DTYPES[enc[1]]
    if tag == "V":
        if len(enc) != 2 or enc[1] not in ("cpu", "cuda"):
            raise ProtocolError("a malformed or unknown device")
        return torch.device(device_map(enc[1]) if device_map else enc[1])
    if tag == "T":
        if len(enc) != 3 or type(enc[1]) not in TENSOR_TYPES or type(enc[2]) is not str:
            raise ProtocolError("a malformed tensor")
        t = enc[1]
        if t.layout != torch.strided or t.numel() > MAX_NUMEL or t.is_quantized:
            raise ProtocolError("a tensor that is sparse, quantized or too large")
        t = t.detach().as_subclass(torch.Tensor)
        return t.to(device_map(enc[2])) if device_map else t
    if tag in ("L", "U"):
        if len(enc) != 2 or type(enc[1]) is not list:
            raise ProtocolError("a malformed list or tuple")
        items = [decode(v, resolve, device_map, state, _depth + 1) for v in enc[1]]
        return items if tag == "L" else tuple(items)
    if tag == "D":
        if len(enc) != 2 or type(enc[1]) is not list:
            raise ProtocolError("a malformed dict")
        out = {}
        for pair in enc[1]:
            if type(pair) is not tuple or len(pair) != 2:
                raise ProtocolError("a malformed dict entry")
            key = decode(pair[0], resolve, device_map, state, _depth + 1)
            try:
                hash(key)
            except TypeError:
                raise ProtocolError("a dict key that is not hashable") from None
            out[key] = decode(pair[1], resolve, device_map, state, _depth + 1)
        return out
    if len(enc) != 3 or type(enc[1]) is not int or type(enc[2]) is not str or resolve is None:
        raise ProtocolError("a malformed or unexpected object handle")
    return resolve(enc[1], enc[2])


def tensor_leaves(value) -> list[torch.Tensor]:
    """The tensors in lists, tuples and dict values of `value`, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensor_leaves(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensor_leaves(v)]
    return []


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


# --------------------------------------------------------------------------------------------
# Calls on the student's objects (used in the sandbox and by in-process checks alike)
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def seeded(seed: int | None):
    """Run the block with torch's CPU generator seeded by `seed` (and put it back afterwards)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def call(obj, method: str | None, args: tuple, kwargs: dict, seed=None, grad=None):
    """obj(*args, **kwargs), or obj.<method>(...): returns (output, gradients or None).

    With grad = {"inputs": bool, "params": bool, "grad_output": tensor or None}, every
    floating-point tensor in the arguments (when "inputs") and every parameter of obj (when
    "params") requires grad, and the gradients of <output, grad_output> (grad_output defaults to
    ones) come back as {"inputs": [grad or None, ...], "params": {name: grad or None}}.
    """
    fn = obj if method is None else getattr(obj, method)
    if grad is None:
        with seeded(seed):
            return fn(*args, **kwargs), None
    leaves = []
    if grad.get("inputs"):
        leaves = [t for t in tensor_leaves((args, kwargs)) if t.is_floating_point()]
        for t in leaves:
            t.requires_grad_(True)
    params = list(obj.named_parameters()) if grad.get("params") else []
    with seeded(seed), torch.enable_grad():
        out = fn(*args, **kwargs)
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            raise NotDifferentiable(
                "the output does not depend differentiably on the inputs; use torch operations "
                "only (no .detach(), .item(), .numpy() or torch.no_grad())"
            )
        g = grad.get("grad_output")
        g = torch.ones_like(out) if g is None else g.to(out.device, out.dtype)
        wrt = [*leaves, *(p for _, p in params)]
        # <out, g> as a scalar: the same gradients as grad_outputs=g, without the import of
        # sympy that torch makes on the first non-scalar grad_outputs (half a second a process).
        grads = torch.autograd.grad((out * g).sum(), wrt, allow_unused=True) if wrt else ()
    n = len(leaves)
    return out, {
        "inputs": [None if x is None else x.detach() for x in grads[:n]],
        "params": {
            name: None if x is None else x.detach()
            for (name, _), x in zip(params, grads[n:], strict=False)
        },
    }


def describe(obj) -> dict:
    """What a check may know of an object: its type, and for a module its parts and its state.

    Example: describe(nn.Linear(2, 3)) -> {"type": "Linear", "modules": {"": "Linear"},
    "state": {"weight": (3, 2) tensor, "bias": (3,) tensor}}
    """
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


# --------------------------------------------------------------------------------------------
# The sandboxed process
# --------------------------------------------------------------------------------------------


class _Channel:
    """Frames on two private file descriptors: an 8-byte big-endian length, then the payload."""

    def __init__(self, fd_in: int, fd_out: int) -> None:
        self.fd_in, self.fd_out = fd_in, fd_out

    def read(self) -> dict:
        header = self._read_exact(HEADER.size)
        (n,) = HEADER.unpack(header)
        if n > MAX_FRAME:
            raise ProtocolError("a frame larger than the limit")
        payload = self._read_exact(n)
        message = torch.load(io.BytesIO(payload), weights_only=True)
        if type(message) is not dict:
            raise ProtocolError("a frame that is not a dict")
        return message

    def _read_exact(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            chunk = os.read(self.fd_in, min(n - got, 1 << 20))
            if not chunk:
                raise EOFError("the judge closed the channel")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def write(self, message: dict) -> None:
        buf = io.BytesIO()
        torch.save(message, buf, _use_new_zipfile_serialization=False)
        payload = buf.getvalue()
        if len(payload) > MAX_FRAME:
            raise ProtocolError("the reply is larger than the frame limit")
        data = HEADER.pack(len(payload)) + payload
        while data:
            data = data[os.write(self.fd_out, data) :]


def _error(exc: BaseException, cells: dict | None = None) -> dict:
    """An exception as data; with `cells` ({code name: cell index}), also where in the
    student's cells it was raised: the innermost frame of theirs."""
    out = {"type": type(exc).__name__, "message": str(exc)[:2000]}
    for frame in reversed(traceback.extract_tb(exc.__traceback__) if cells else []):
        if frame.filename in cells:
            code = (frame.line or "").strip()[:300]
            out["where"] = f"cell {cells[frame.filename] + 1}, line {frame.lineno}: {code}"
            break
    return out


class _Server:
    """Runs the cells it is sent, then answers calls, one request at a time."""

    def __init__(self, channel: _Channel) -> None:
        self.channel = channel
        self.objects: dict[int, object] = {}
        self.shell = None
        self.namespace: dict = {"__name__": "__main__"}
        self.stand_ins: tuple = ()
        self.cells: dict[str, int] = {}  # IPython's code name of a cell -> its index
        self.index = -1  # the cell running now

    # -- values ------------------------------------------------------------------------------

    def keep(self, obj) -> int:
        for key, value in self.objects.items():
            if value is obj:
                return key
        key = len(self.objects) + 1
        self.objects[key] = obj
        return key

    def resolve(self, key: int, _type: str):
        if key not in self.objects:
            raise ProtocolError(f"no object {key}")
        return self.objects[key]

    @staticmethod
    def device(name: str):
        if name.startswith("cuda") and torch.cuda.is_available():
            return name
        return "cpu"

    def value(self, enc):
        return decode(enc, self.resolve, self.device)

    # -- cells -------------------------------------------------------------------------------

    def start_shell(self) -> None:
        try:
            from IPython.core.interactiveshell import InteractiveShell
        except ImportError:  # plain Python still runs plain cells
            return
        shell = InteractiveShell.instance()
        shell.enable_gui = lambda gui=None: None  # %matplotlib inline: no kernel, no GUI here
        shell.showtraceback = lambda *a, **k: None  # the error is reported as an output instead
        shell.showsyntaxerror = lambda *a, **k: None
        self.shell = shell
        self.namespace = shell.user_ns

    def run_cell(self, source: str, seconds) -> list[dict]:
        import linecache
        from contextlib import redirect_stderr, redirect_stdout

        out, err = io.StringIO(), io.StringIO()
        outputs, error = [], None
        known = set(linecache.cache)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                with time_limit(seconds):
                    if self.shell is not None:
                        result = self.shell.run_cell(source, store_history=False)
                        error = result.error_in_exec or result.error_before_exec
                    else:
                        exec(compile(source, "<cell>", "exec"), self.namespace)
            except BaseException as exc:  # noqa: BLE001 - a cell may raise anything, SystemExit too
                error = exc
        # IPython caches each cell's source under a code name of its own: remember which
        # cell it was, so that an error raised later in a function defined here can say where.
        self.cells.update(dict.fromkeys(set(linecache.cache) - known, self.index))
        for name, stream in (("stdout", out), ("stderr", err)):
            text = stream.getvalue()
            if len(text) > MAX_TEXT:
                text = text[:MAX_TEXT] + "\n... (output cut by the grader)\n"
            if text:
                outputs.append({"output_type": "stream", "name": name, "text": text})
        if error is not None:
            lines = traceback.format_exception(type(error), error, error.__traceback__)
            lines = [line for line in lines if "runner.py" not in line][-12:]
            outputs.append(
                {
                    "output_type": "error",
                    "ename": type(error).__name__,
                    "evalue": str(error)[:2000],
                    "traceback": [line.rstrip("\n")[:2000] for line in lines],
                }
            )
        return outputs

    def run(self, request: dict) -> None:
        self.start_shell()
        cells = request.get("cells")
        if type(cells) is not list:
            raise ProtocolError("run needs a list of cells")
        seconds = request.get("seconds")
        for index, source in cells:
            self.index = int(index)
            self.channel.write({"event": "cell", "index": int(index)})
            outputs = self.run_cell(str(source), seconds)
            self.channel.write({"event": "cell_done", "index": int(index), "outputs": outputs})
        names = {
            name: type(value).__name__
            for name, value in list(self.namespace.items())
            if isinstance(name, str) and not name.startswith("_")
        }
        self.channel.write({"event": "ready", "names": names})

    # -- calls -------------------------------------------------------------------------------

    def stand_in(self, name: str):
        """A function that answers with the judge's reference for `name` (and its gradients)."""
        server = self

        class _Bridge(torch.autograd.Function):
            @staticmethod
            def forward(ctx, spec, *tensors):
                ctx.spec = spec
                ctx.save_for_backward(*tensors)
                return server.ask({"event": "stand_in", "name": name, **spec, "grad": None})

            @staticmethod
            def backward(ctx, grad_output):
                spec = {**ctx.spec, "grad": ("T", grad_output.detach().cpu(), "cpu")}
                grads = server.ask({"event": "stand_in", "name": name, **spec})
                if type(grads) is not list or len(grads) != len(ctx.saved_tensors):
                    raise ProtocolError("a malformed gradient from the judge")
                return (None, *grads)

        def reference(*args, **kwargs):
            leaves = [t for t in tensor_leaves((args, kwargs)) if t.requires_grad]
            spec = {"args": encode(args), "kwargs": encode(kwargs)}
            if leaves and torch.is_grad_enabled():
                spec["requires_grad"] = [t.requires_grad for t in tensor_leaves((args, kwargs))]
                return _Bridge.apply(spec, *leaves)
            return server.ask({"event": "stand_in", "name": name, **spec, "grad": None})

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
        saved = {}
        for name in names:
            saved[name] = self.namespace.get(name, _MISSING)
            self.namespace[name] = self.stand_in(name)
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
        if op == "call":
            args = self.value(request["args"])
            kwargs = self.value(request["kwargs"])
            grad = request.get("grad")
            if grad is not None:
                grad = {**grad, "grad_output": self.value(grad.get("grad_output"))}
            with (
                self.standing_in(request.get("stand_ins") or ()),
                time_limit(request.get("seconds")),
            ):
                out, grads = call(
                    obj, request.get("method"), args, kwargs, request.get("seed"), grad
                )
            return {"value": encode(out, self.keep), "grads": encode(grads)}
        if op == "get":
            return {"value": encode(getattr(obj, request["name"]), self.keep)}
        if op == "describe":
            return {"value": encode(describe(obj))}
        if op == "load_state":
            load_state(obj, self.value(request["state"]), bool(request.get("strict", True)))
            return {"value": None}
        if op == "to":
            device = self.device(str(request.get("device") or "cpu"))
            dtype = request.get("dtype")
            obj.to(device=device, dtype=getattr(torch, dtype) if dtype else None)
            return {"value": None}
        raise ProtocolError(f"unknown op {op!r}")

    def serve(self) -> None:
        while True:
            try:
                request = self.channel.read()
            except EOFError:
                return
            if request.get("op") == "run":
                self.run(request)
                continue
            if request.get("op") == "exit":
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


# --------------------------------------------------------------------------------------------
# The fork server: one sandbox per grading worker, one fresh process per student
# --------------------------------------------------------------------------------------------

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
    """Keep every other process out of this one's memory and file descriptors (/proc/PID/fd):
    with no capabilities, only a dumpable process can be read or traced by another."""
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
    buf = io.BytesIO()
    torch.save({"t": ("T", x.detach(), "cpu")}, buf, _use_new_zipfile_serialization=False)
    torch.load(io.BytesIO(buf.getvalue()), weights_only=True)


def _clean_sandbox(before: set[str]) -> None:
    """After a student's process: kill everything it left running, and remove every file and
    folder that was not in the writable folders when the sandbox started (`before`), so that the
    next student meets none of it.

    Only inside the sandbox, where this process and its children are all there is of the PID
    namespace and the folders are the sandbox's own: outside, it would be a disaster.
    """
    import shutil
    import signal as sig

    if os.path.abspath(__file__) != IN_SANDBOX or os.getcwd() != "/sandbox":
        raise RuntimeError("refusing to clean up outside the sandbox")
    me = os.getpid()
    for _ in range(100):
        strays = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]
        if not strays:
            break
        for pid in strays:
            try:
                os.kill(pid, sig.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
    for path in sorted(_tree(WRITABLE) - before, key=len):
        if not os.path.lexists(path):
            continue  # inside a folder removed a moment ago
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def _drain(fd: int) -> None:
    """Read and throw away whatever waits in the pipe `fd`."""
    os.set_blocking(fd, False)
    try:
        while os.read(fd, 1 << 20):
            pass
    except BlockingIOError:
        pass
    finally:
        os.set_blocking(fd, True)


def serve_forks(control: _Channel, data_in: int, data_out: int) -> None:
    """Wait for "fork" on the control channel; each fork serves one student on the data channel
    and the control channel says when it has ended and the sandbox is clean again."""
    _not_dumpable()
    _warm_up()
    sandboxed = os.path.abspath(__file__) == IN_SANDBOX
    before = _tree(WRITABLE) if sandboxed else set()
    control.write({"event": "ready"})
    while True:
        try:
            request = control.read()
        except EOFError:
            return
        if request.get("op") != "fork":
            continue
        pid = os.fork()
        if pid == 0:
            os.close(control.fd_in)
            os.close(control.fd_out)
            try:
                _Server(_Channel(data_in, data_out)).serve()
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        if sandboxed:
            _clean_sandbox(before)
        _drain(data_in)
        control.write({"event": "ended", "status": int(status)})


def main() -> None:
    # The data channel moves to private descriptors; what the student's code prints to fd 1 (or
    # reads from fd 0) then cannot reach it. A forged frame would only feed its own grading.
    # The control channel (``--control IN OUT``) belongs to the fork server alone: each
    # student's process closes it before any of the student's code runs.
    fd_in, fd_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    if len(sys.argv) == 4 and sys.argv[1] == "--control":
        control = _Channel(int(sys.argv[2]), int(sys.argv[3]))
        serve_forks(control, fd_in, fd_out)
    else:
        _Server(_Channel(fd_in, fd_out)).serve()


if __name__ == "__main__":
    sys.exit(main())
