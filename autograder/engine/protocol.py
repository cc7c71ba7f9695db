"""The judge and the runner's protocol, in code: message names, frames, values, devices.

Both sides import it: the runner (in the sandbox) as the file beside it, ``/grader/protocol.py``;
so it imports the standard library and torch only.

Channels and frames
    **data**: the judge and one student's process (the runner's stdin and stdout, moved to private
    descriptors); **control**: the judge and the fork server alone. A frame is an 8-byte big-endian
    length, then a pickle of a dict of plain data, read by an unpickler that refuses every class
    and function. Requests carry ``"op"``, events ``"event"``, replies ``"ok"``.

Messages (``Op`` judge -> runner, ``Event`` runner -> judge)
    control channel:
        ``fork``                        the fork server forks a fresh process for the next student
        ``ready``                       the fork server has started (torch imported and warm)
        ``ended``, ``status``           the student's process has ended (its wait status); the
                                        sandbox is clean again: no process, no file left behind
    data channel, running the notebook:
        ``run``, ``cells``, ``seconds`` run each (index, source) cell under a time limit
        ``cell``, ``index``             a cell starts
        ``cell_done``, ``index``, ``outputs``  a cell has run: its stream and error outputs
        ``ready``, ``names``            every cell has run: {name: type name} of the namespace
    data channel, calls (one reply each; ``target`` is ("name", str) or ("handle", id)):
        ``call``, ``method``, ``args``, ``kwargs``, ``seed``, ``grad``, ``seconds``, ``stand_ins``
                                        call the target (or its method); ``grad``: gradients too
        ``get``, ``name``               an attribute of the target
        ``describe``                    the target's type, and a module's submodules and state
        ``load_state``, ``state``, ``strict``  the target module's load_state_dict
        ``to``, ``device``, ``dtype``   move or cast the target module
        reply: ``{"ok": True, "value"[, "grads"]}`` or ``{"ok": False, "error": {"type",
                                        "message"[, "where"]}}``
        ``stand_in``, ``name``, ``args``, ``kwargs``, ``grad``[, ``requires_grad``]
                                        (event, during a call) the student's code called a part
                                        the reference stands in for; the judge answers ``{"ok",
                                        "value" | "error"}``: its value, or with ``grad`` its VJP
        ``exit``                        the student's process ends (then ``ended``, on control)

Values
    Tagged trees (:func:`encode`, :func:`decode`): scalars (None, bool, int, float, str) as
    themselves; ``("B", latin-1 text)`` for bytes, ``("T", dtype, shape, bytes, device)`` for a
    tensor, ``("Y", name)`` for a dtype, ``("V", type)`` for a device, ``("L", [...])`` for a
    list, ``("U", [...])`` for a tuple, ``("D", [(key, value), ...])`` for a dict (so keys may be
    tuples), and ``("H", id, type name)`` for an object that stays on its side (a module, a
    tokenizer), named by its id in later requests. Every frame and value is checked before use.
    A tensor keeps the name of its device; the other side puts it on the same kind, or the CPU.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import struct

import torch


class Op:
    """Requests, the judge's ``"op"``."""

    FORK = "fork"  # control
    RUN = "run"
    CALL = "call"
    GET = "get"
    DESCRIBE = "describe"
    LOAD_STATE = "load_state"
    TO = "to"
    EXIT = "exit"


class Event:
    """What the runner tells the judge, its ``"event"``."""

    READY = "ready"  # control (the fork server is up) and data (every cell has run)
    ENDED = "ended"  # control
    CELL = "cell"
    CELL_DONE = "cell_done"
    STAND_IN = "stand_in"


HEADER = struct.Struct(">Q")
MAX_FRAME = 256 * 2**20  # bytes in one frame
MAX_DEPTH = 32  # nesting of containers in one value
MAX_ITEMS = 100_000  # scalars, tensors and containers in one value
MAX_NUMEL = 2**27  # elements in one tensor
# The dtypes a value may name (a check asking for float64, a student's result in bfloat16).
_NAMES = "float16 bfloat16 float32 float64 complex64 complex128 uint8 int8 int16 int32 int64 bool"
DTYPES = {name: getattr(torch, name) for name in _NAMES.split()}


class ProtocolError(ValueError):
    """A frame or a value that does not follow the protocol."""


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise ProtocolError(what)


def device(name: str) -> str:
    """Where a tensor (or a torch.device) that was on device `name` goes on this side."""
    return name if name.startswith("cuda") and torch.cuda.is_available() else "cpu"


def dtype_name(dtype) -> str | None:
    """ "float64" for torch.float64; None for None."""
    return None if dtype is None else str(dtype).removeprefix("torch.")


class _PlainData(pickle.Unpickler):
    """Unpickles plain data only: every class or function a pickle names is refused."""

    def find_class(self, module, name):
        raise ProtocolError(f"a frame may hold plain data only, not {module}.{name}")


def pack(message: dict) -> bytes:
    """A whole frame: the header, then the payload."""
    payload = pickle.dumps(message, protocol=5)
    _check(len(payload) <= MAX_FRAME, "the message is larger than the frame limit")
    return HEADER.pack(len(payload)) + payload


def unpack(payload: bytes) -> dict:
    """The message of a frame's payload; ProtocolError if it is not a dict of plain data."""
    try:
        message = _PlainData(io.BytesIO(payload)).load()
    except Exception:  # a forged or broken frame: nothing in it is run
        message = None
    _check(type(message) is dict, "a frame that could not be read")
    return message


def drain(fd: int) -> bytes:
    """Everything the pipe `fd` holds now, read without waiting."""
    chunks = []
    os.set_blocking(fd, False)
    try:
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    finally:
        os.set_blocking(fd, True)
    return b"".join(chunks)


def _frame_size(buffer: bytes) -> int | None:
    """The payload size the header at the start of `buffer` announces; None before a header."""
    if len(buffer) < HEADER.size:
        return None
    (n,) = HEADER.unpack(buffer[: HEADER.size])
    _check(n <= MAX_FRAME, "a frame larger than the limit")
    return n


class Channel:
    """Blocking frames on two file descriptors (the runner's side)."""

    def __init__(self, fd_in: int, fd_out: int) -> None:
        self.fd_in, self.fd_out = fd_in, fd_out

    def read(self) -> dict:
        return unpack(self._read_exact(_frame_size(self._read_exact(HEADER.size))))

    def _read_exact(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            chunk = os.read(self.fd_in, min(n - got, 1 << 20))
            if not chunk:
                raise EOFError("the other side closed the channel")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def write(self, message: dict) -> None:
        data = pack(message)
        while data:
            data = data[os.write(self.fd_out, data) :]


class FrameBuffer:
    """Frames read from a pipe as they come, without blocking (the judge's side)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def complete(self) -> bool:
        """Whether a whole frame (or a header announcing too large a one) is waiting."""
        try:
            n = _frame_size(self.buffer)
        except ProtocolError:
            return True
        return n is not None and len(self.buffer) >= HEADER.size + n

    def next(self) -> dict | None:
        """The next whole frame, None if it has not all arrived."""
        if not self.complete():
            return None
        end = HEADER.size + _frame_size(self.buffer)
        payload, self.buffer = self.buffer[HEADER.size : end], self.buffer[end:]
        return unpack(payload)


def encode(value, keep=None, _state=None, _depth: int = 0):
    """The tagged tree of `value`; objects that are not plain data go through keep(obj) -> id."""
    state = _state if _state is not None else [0]
    state[0] += 1
    if state[0] > MAX_ITEMS or _depth > MAX_DEPTH:
        raise ProtocolError("the value is too large or too deeply nested to send")
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, (bytes, bytearray)):  # weights_only cannot load an empty bytes
        return ("B", bytes(value).decode("latin-1"))
    if isinstance(value, torch.dtype):
        _check(dtype_name(value) in DTYPES, f"the dtype {value} cannot be sent")
        return ("Y", dtype_name(value))
    if isinstance(value, torch.device):
        return ("V", value.type)
    if isinstance(value, torch.Tensor):
        t = value.detach().as_subclass(torch.Tensor).to("cpu").resolve_conj().resolve_neg()
        t = t.contiguous()
        if dtype_name(t.dtype) not in DTYPES or t.layout != torch.strided:
            raise ProtocolError(f"a {t.dtype} tensor cannot be sent")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        return ("T", dtype_name(t.dtype), list(t.shape), data, value.device.type)
    module = type(value).__module__ or ""
    if module == "numpy" or module.startswith("numpy."):
        value = _from_numpy(value)
        if isinstance(value, torch.Tensor) or type(value) in (bool, int, float, complex):
            return encode(value, keep, state, _depth)
    for plain in (int, float, str):  # a subclass (an IntEnum) travels as the plain value
        if isinstance(value, plain):
            return plain(value)
    if isinstance(value, list):
        return ("L", [encode(v, keep, state, _depth + 1) for v in value])
    if isinstance(value, tuple):
        return ("U", [encode(v, keep, state, _depth + 1) for v in value])
    if isinstance(value, dict):
        pairs = [tuple(encode(x, keep, state, _depth + 1) for x in kv) for kv in value.items()]
        return ("D", pairs)
    _check(keep is not None, f"a {type(value).__name__} cannot be sent")
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
    """The value of a tagged tree, checking every node; handles go through resolve(id, type name)
    and device_map(name) says where a tensor, or a torch.device, on device `name` goes here.
    """
    state = _state if _state is not None else [0]
    state[0] += 1
    if state[0] > MAX_ITEMS or _depth > MAX_DEPTH:
        raise ProtocolError("the value is too large or too deeply nested")
    if enc is None or type(enc) in (bool, int, float, str):
        return enc
    if type(enc) is not tuple or not enc or enc[0] not in ("T", "L", "U", "D", "H", "B", "Y", "V"):
        raise ProtocolError(f"unexpected {type(enc).__name__} in a value")
    if len(enc) != {"T": 5, "H": 3}.get(enc[0], 2):
        raise ProtocolError(f"a malformed {enc[0]!r} value")
    tag, arg = enc[0], enc[1]
    if tag == "B":
        _check(type(arg) is str, "malformed bytes")
        try:
            return arg.encode("latin-1")
        except UnicodeEncodeError:
            raise ProtocolError("malformed bytes") from None
    if tag == "Y":
        _check(type(arg) is str and arg in DTYPES, "a malformed or unknown dtype")
        return DTYPES[arg]
    if tag == "V":
        _check(arg in ("cpu", "cuda"), "a malformed or unknown device")
        return torch.device(device_map(arg) if device_map else arg)
    if tag == "T":
        _, name, shape, data, where = enc
        _check(type(name) is str and name in DTYPES and type(shape) is list, "a malformed tensor")
        ok = len(shape) <= MAX_DEPTH and all(type(n) is int and n >= 0 for n in shape)
        _check(ok, "a malformed tensor shape")
        dtype, numel = DTYPES[name], math.prod(shape)
        ok = numel <= MAX_NUMEL and type(data) is bytes and type(where) is str
        _check(ok, "a malformed or too large tensor")
        _check(len(data) == numel * dtype.itemsize, "a tensor whose bytes do not match its shape")
        t = torch.frombuffer(bytearray(data), dtype=dtype) if numel else torch.empty(0, dtype=dtype)
        t = t.reshape(shape)
        return t.to(device_map(where)) if device_map else t
    if tag == "H":
        ok = type(arg) is int and type(enc[2]) is str and resolve is not None
        _check(ok, "a malformed or unexpected object handle")
        return resolve(arg, enc[2])
    _check(type(arg) is list, "a malformed list, tuple or dict")
    if tag in ("L", "U"):
        items = [decode(v, resolve, device_map, state, _depth + 1) for v in arg]
        return items if tag == "L" else tuple(items)
    out = {}
    for pair in arg:
        _check(type(pair) is tuple and len(pair) == 2, "a malformed dict entry")
        key = decode(pair[0], resolve, device_map, state, _depth + 1)
        try:
            hash(key)
        except TypeError:
            raise ProtocolError("a dict key that is not hashable") from None
        out[key] = decode(pair[1], resolve, device_map, state, _depth + 1)
    return out
