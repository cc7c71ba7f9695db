"""The child process of the trusted cross-check: it runs one student's notebook, then serves calls.

:mod:`autograder.trusted` starts it, under bubblewrap, as ``python -m autograder.trusted_child``, in
a private folder that holds a copy of the notebook. It runs the student's code (every code cell in
order, except the locked test cells), then answers requests: call a function the notebook defined,
construct a module, run a module's forward with given parameter values, backpropagate through an
earlier call. It ships back *outputs* (tensors, numbers, the structure of a module), never verdicts:
the parent compares them with the reference in a process that never ran student code.

Protocol. Requests arrive on stdin and replies leave on stdout as frames: an 8-byte big-endian
length, then a ``torch.save`` payload. Before any student code runs, the protocol pipes are moved to
private descriptors, stdin is pointed at /dev/null and fd 1 at stderr, so ``print`` (or a C library
writing to fd 1) cannot corrupt a frame. Requests come from the trusted parent and are loaded
normally; replies contain only tensors, numbers, strings, bools, None and lists, tuples and dicts of
those, because the parent loads them with ``torch.load(weights_only=True)``. Every value the
student's code returns is encoded as a tagged tree (:func:`encode`) so that the parent can
validate it and rebuild it without unpickling anything of the student's.

- ``{"op": "load", "notebook", "names", "stop_before"}``: run the cells (a ``{"event": "cell",
  "index"}`` frame before each, so that the parent knows which cell hung or ended the process),
  then reply ``{"event": "ready", "names", "errors", "defines"}``.
- ``{"op": "call", "target", "args", "kwargs", "grad", "state", "keep_graph", "rng"}``: call
  ``("name", name)`` or the module ``("instance", handle, path)`` (then ``state`` holds the
  parameter and buffer values to use, through ``torch.func.functional_call``); the inputs flagged in
  ``grad`` (argument tensors, then parameters) require grad; with ``keep_graph`` the graph is kept
  under a call id for a later backward. ``rng`` is the parent's CPU generator state, used for the
  call and sent back afterwards, so that initialisations and draws match the student's kernel.
  Reply ``{"ok": True, "output", "differentiable", "call", "rng"}`` or
  ``{"ok": False, "error": {"type", "bases", "message"}}``.
- ``{"op": "backward", "call", "grads"}``: ``torch.autograd.grad`` of the kept outputs with the
  given output gradients; reply ``{"ok": True, "grads"}`` with one entry (None or a tensor) per
  input of that call.

Not here: the comparison with the reference, timeouts and the sandbox (all in the parent).
"""

from __future__ import annotations

import os
import re
import signal
import struct
import sys
from collections import OrderedDict
from collections.abc import Callable

HEADER = struct.Struct(">Q")
MAX_FRAME = 256 * 2**20  # bytes; the parent refuses larger replies
MAX_DEPTH = 32  # nesting of returned containers
KEPT_GRAPHS = 64  # calls whose autograd graph the child keeps for a later backward


def map_tensors(obj, fn: Callable, _depth: int = 0):
    """Rebuild lists, tuples and dicts in `obj` with every tensor t replaced by fn(t), in order.

    Parent and child both use it, so that "the i-th tensor of the arguments" means the same on
    both sides. Example: map_tensors(([a], {"m": b}), f) -> ([f(a)], {"m": f(b)})
    """
    import torch

    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if _depth > MAX_DEPTH:
        return obj
    if isinstance(obj, list):
        return [map_tensors(x, fn, _depth + 1) for x in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(map_tensors(x, fn, _depth + 1) for x in obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn, _depth + 1) for k, v in obj.items()}
    return obj


def cells_to_run(nb: dict) -> list[tuple[int, str]]:
    """(index in the notebook, source) of the code cells to run: all but the locked test cells.

    A grade cell that is not a solution cell holds the visible and hidden tests; it is skipped.
    The instructor's locked setup cells (not grade cells) and the student's cells run.
    """
    cells = []
    for index, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution"):
            continue
        source = cell.get("source", "")
        cells.append((index, "".join(source) if isinstance(source, list) else str(source)))
    return cells


def defining_cells(cells: list[tuple[int, str]], name: str) -> list[int]:
    """Indices of the cells that look as if they define `name` (def, class or assignment)."""
    n = re.escape(name)
    pattern = re.compile(
        rf"^[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+{n}\b|^[ \t]*{n}[ \t]*(?::[^=\n]*)?=(?!=)",
        re.MULTILINE,
    )
    return [index for index, source in cells if pattern.search(source)]


# --------------------------------------------------------------------------------------------
# Encoding what the student's code returns
# --------------------------------------------------------------------------------------------

_PRIMITIVES = (bool, int, float, str, type(None))


def _describe_error(exc: BaseException) -> dict:
    try:
        message = str(exc)
    except Exception:  # a student's exception may have a broken __str__
        message = "<unprintable message>"
    bases = [c.__name__ for c in type(exc).__mro__ if c.__module__ == "builtins"]
    return {"type": type(exc).__name__[:100], "bases": bases[:20], "message": message[:1000]}


class _Encoder:
    """Turns a returned value into the tagged tree the parent validates (see :func:`encode`)."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.tensors: list = []  # the student's own tensors, in order, for the autograd graph

    def encode(self, obj, depth: int = 0):
        import torch
        from torch import nn

        if depth > MAX_DEPTH:
            return ("other", "deeply nested object")
        if type(obj) in _PRIMITIVES:
            return ("v", obj)
        if isinstance(obj, torch.Tensor):
            return self._tensor(obj)
        if isinstance(obj, nn.Module):
            return ("m", self.server.keep(obj), self.server.describe(obj))
        if isinstance(obj, torch.Size):
            return ("size", [int(d) for d in obj])
        if isinstance(obj, torch.dtype):
            return ("dtype", str(obj).removeprefix("torch."))
        if isinstance(obj, bool | int | float | str):  # subclasses: IntEnum, numpy.float64, ...
            base = next(t for t in (bool, int, float, str) if isinstance(obj, t))
            return ("v", base(obj))
        if isinstance(obj, complex):
            return ("c", float(obj.real), float(obj.imag))
        if isinstance(obj, list):
            return ("l", [self.encode(x, depth + 1) for x in obj])
        if isinstance(obj, tuple):
            return ("u", [self.encode(x, depth + 1) for x in obj])
        if isinstance(obj, dict):
            items = []
            for key, value in obj.items():
                # Keys stay plain (the parent must hash them): a key of another type is named only.
                key = ("v", key) if type(key) in _PRIMITIVES else ("other", type(key).__name__)
                items.append((key, self.encode(value, depth + 1)))
            return ("d", items)
        if type(obj).__module__ == "numpy":
            return self._numpy(obj)
        return ("other", type(obj).__name__)

    def _tensor(self, obj):
        import torch

        t = obj.detach()
        if type(t) is not torch.Tensor:
            t = torch.Tensor.as_subclass(t, torch.Tensor)
        if t.layout != torch.strided or t.device.type != "cpu" or t.is_quantized:
            return ("other", f"{t.layout} tensor on {t.device.type}")
        self.tensors.append(obj)
        return ("t", t.resolve_conj().resolve_neg().clone())

    def _numpy(self, obj):
        import numpy as np
        import torch

        try:
            if isinstance(obj, np.ndarray):
                return ("np", torch.from_numpy(np.ascontiguousarray(obj)).clone())
            if isinstance(obj, np.generic):
                return ("nps", torch.from_numpy(np.asarray(obj)).clone())
        except (TypeError, ValueError, RuntimeError):  # object arrays, unsupported dtypes
            pass
        return ("other", type(obj).__name__)


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class _Channel:
    """The protocol pipes, moved away from fds 0 and 1 before any student code runs."""

    def __init__(self) -> None:
        self.rfd = os.dup(0)  # os.dup makes non-inheritable descriptors: `!cmd` does not get them
        self.wfd = os.dup(1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(2, 1)
        sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process

    def read(self) -> bytes | None:
        header = self._read_exact(HEADER.size)
        if header is None:
            return None
        (length,) = HEADER.unpack(header)
        return self._read_exact(length)

    def _read_exact(self, n: int) -> bytes | None:
        chunks, left = [], n
        while left:
            chunk = os.read(self.rfd, min(left, 2**20))
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def write(self, payload: bytes) -> None:
        view = memoryview(HEADER.pack(len(payload)) + payload)
        while view:
            view = view[os.write(self.wfd, view) :]


class _Server:
    def __init__(self, channel: _Channel) -> None:
        import io

        import torch
        from torch import nn
        from torch.func import functional_call

        # Held before student code runs, so that an (honest) monkeypatch of torch does not break
        # the transport; a dishonest one can only make the student's own results wrong.
        self._io, self._torch, self._nn = io, torch, nn
        self._save, self._load = torch.save, torch.load
        self._grad, self._functional_call = torch.autograd.grad, functional_call
        self._get_rng, self._set_rng = torch.get_rng_state, torch.set_rng_state
        self.channel = channel
        self.namespace: dict = {}
        self.instances: dict[int, object] = {}
        self.graphs: OrderedDict[int, tuple] = OrderedDict()
        self._next_id = 0

    # -- framing --------------------------------------------------------------------------

    def send(self, message: dict) -> None:
        buffer = self._io.BytesIO()
        self._save(message, buffer)
        self.channel.write(buffer.getvalue())

    def receive(self) -> dict | None:
        payload = self.channel.read()
        if payload is None:
            return None
        return self._load(self._io.BytesIO(payload), weights_only=False)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # -- running the notebook -------------------------------------------------------------

    def load(self, request: dict) -> None:
        import json

        from IPython.core.interactiveshell import InteractiveShell
        from traitlets.config import Config

        with open(request["notebook"], encoding="utf-8") as f:
            nb = json.load(f)
        cells = cells_to_run(nb)
        config = Config()
        config.HistoryManager.enabled = False
        shell = InteractiveShell.instance(config=config)
        self.namespace = shell.user_ns
        stop_before = request.get("stop_before")
        errors = []
        for index, source in cells:
            if stop_before is not None and index >= stop_before:
                break
            self.send({"event": "cell", "index": index})
            # The parent interrupts a cell that runs past its time limit, as nbgrader does; the
            # interrupt is honoured only while a cell runs, never while a frame is being sent.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                result = shell.run_cell(source, store_history=False, silent=True)
                error = result.error_before_exec or result.error_in_exec
            except BaseException as exc:  # IPython catches almost all; this is the rest
                error = exc
            finally:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            if error is not None:
                described = _describe_error(error)
                errors.append([index, described["type"], described["message"]])
        names = {}
        for name in request["names"]:
            names[name] = self._describe_name(name)
        self.send(
            {
                "event": "ready",
                "names": names,
                "errors": errors,
                "defines": {name: defining_cells(cells, name) for name in request["names"]},
            }
        )

    def _describe_name(self, name: str) -> dict:
        if name not in self.namespace:
            return {"defined": False, "kind": "", "type": ""}
        obj = self.namespace[name]
        if isinstance(obj, type) and issubclass(obj, self._nn.Module):
            kind = "module_class"
        elif callable(obj):
            kind = "callable"
        else:
            kind = "other"
        return {"defined": True, "kind": kind, "type": type(obj).__name__[:100]}

    # -- modules --------------------------------------------------------------------------

    def keep(self, module) -> int:
        handle = self._new_id()
        self.instances[handle] = module
        return handle

    def describe(self, module) -> dict:
        """The module's structure and values, for the parent's local mirror of it."""
        nn = self._nn
        modules, seen = [], {}
        for path, m in module.named_modules(remove_duplicate=False):
            if id(m) in seen:
                modules.append(
                    {
                        "path": path,
                        "kind": "alias",
                        "config": {},
                        "alias": seen[id(m)],
                        "attrs": {},
                        "training": bool(m.training),
                    }
                )
                continue
            seen[id(m)] = path
            kind, config = "remote", {}
            if isinstance(m, nn.Linear):
                kind = "Linear"
                config = {
                    "in_features": int(m.in_features),
                    "out_features": int(m.out_features),
                    "bias": m.bias is not None,
                }
            elif isinstance(m, nn.LayerNorm):
                kind = "LayerNorm"
                config = {
                    "normalized_shape": [int(d) for d in m.normalized_shape],
                    "eps": float(m.eps),
                    "elementwise_affine": bool(m.elementwise_affine),
                    "bias": getattr(m, "bias", None) is not None,
                }
            elif isinstance(m, nn.Embedding):
                kind = "Embedding"
                config = {
                    "num_embeddings": int(m.num_embeddings),
                    "embedding_dim": int(m.embedding_dim),
                    "padding_idx": m.padding_idx,
                    "max_norm": m.max_norm,
                    "norm_type": float(m.norm_type),
                    "scale_grad_by_freq": bool(m.scale_grad_by_freq),
                    "sparse": bool(m.sparse),
                }
            elif isinstance(m, nn.Dropout):
                kind, config = "Dropout", {"p": float(m.p), "inplace": bool(m.inplace)}
            elif type(m) in (nn.ModuleList, nn.Sequential, nn.ModuleDict):
                kind = type(m).__name__
            modules.append(
                {
                    "path": path,
                    "kind": kind,
                    "config": config,
                    "alias": None,
                    "attrs": _plain_attributes(m),
                    "training": bool(m.training),
                    "type": type(m).__name__[:100],
                }
            )
        params, seen = [], {}
        for name, p in module.named_parameters(remove_duplicate=False):
            alias = seen.setdefault(id(p), name)
            value = None if alias != name else self._encode_tensor(p)
            params.append(
                {
                    "name": name,
                    "alias": None if alias == name else alias,
                    "value": value,
                    "requires_grad": bool(p.requires_grad),
                }
            )
        buffers, seen = [], {}
        for name, b in module.named_buffers(remove_duplicate=False):
            alias = seen.setdefault(id(b), name)
            owner, _, leaf = name.rpartition(".")
            persistent = leaf not in module.get_submodule(owner)._non_persistent_buffers_set
            value = None if alias != name else self._encode_tensor(b)
            buffers.append(
                {
                    "name": name,
                    "alias": None if alias == name else alias,
                    "value": value,
                    "persistent": persistent,
                }
            )
        return {
            "type": type(module).__name__[:100],
            "modules": modules,
            "params": params,
            "buffers": buffers,
        }

    def _encode_tensor(self, t):
        torch = self._torch
        t = torch.Tensor.as_subclass(t.detach(), torch.Tensor)
        return t.to("cpu").resolve_conj().resolve_neg().clone()

    # -- calls ----------------------------------------------------------------------------

    def call(self, request: dict) -> dict:
        flags = list(request["grad"])
        counter = iter(range(len(flags)))

        def prepare(t):
            i = next(counter)
            if flags[i] and (t.is_floating_point() or t.is_complex()):
                t.requires_grad_()
            return t

        args, kwargs = map_tensors((request["args"], request["kwargs"]), prepare)
        inputs = []
        map_tensors((args, kwargs), inputs.append)
        target = request["target"]
        state = request.get("state")
        self._set_rng(request["rng"])
        if target[0] == "name":
            if target[1] not in self.namespace:
                raise NameError(f"name '{target[1]}' is not defined")
            output = self.namespace[target[1]](*args, **kwargs)
        else:
            _, handle, path = target
            module = self.instances[handle].get_submodule(path)
            values = {}
            for name, value in state["params"]:
                values[name] = prepare(value)
                inputs.append(values[name])
            for name, value in state["buffers"]:
                values[name] = value
            for sub, training in state["training"]:
                module.get_submodule(sub).training = training
            output = self._functional_call(module, values, tuple(args), kwargs)
        encoder = _Encoder(self)
        encoded = encoder.encode(output)
        differentiable = [bool(t.requires_grad) for t in encoder.tensors]
        call_id = None
        if request.get("keep_graph") and any(differentiable):
            call_id = self._new_id()
            self.graphs[call_id] = (encoder.tensors, differentiable, inputs)
            while len(self.graphs) > KEPT_GRAPHS:
                self.graphs.popitem(last=False)
        return {
            "ok": True,
            "output": encoded,
            "differentiable": differentiable,
            "call": call_id,
            "rng": self._get_rng(),
        }

    def backward(self, request: dict) -> dict:
        if request["call"] not in self.graphs:
            raise RuntimeError("the graph of this call was released; run the forward again")
        outputs, differentiable, inputs = self.graphs[request["call"]]
        pairs = [
            (o, g)
            for o, g, d in zip(outputs, request["grads"], differentiable, strict=True)
            if d and g is not None
        ]
        wanted = [i for i, t in enumerate(inputs) if t.requires_grad]
        grads = [None] * len(inputs)
        if pairs and wanted:
            found = self._grad(
                [o for o, _ in pairs],
                [inputs[i] for i in wanted],
                [g for _, g in pairs],
                retain_graph=True,
                allow_unused=True,
            )
            for i, g in zip(wanted, found, strict=True):
                grads[i] = None if g is None else self._encode_tensor(g)
        return {"ok": True, "grads": grads}

    def serve(self) -> None:
        while True:
            request = self.receive()
            if request is None or request.get("op") == "exit":
                return
            try:
                if request["op"] == "load":
                    self.load(request)
                    continue
                if request["op"] == "call":
                    reply = self.call(request)
                elif request["op"] == "backward":
                    reply = self.backward(request)
                else:
                    raise ValueError(f"unknown request {request['op']!r}")
            except BaseException as exc:  # the student's code may raise anything, SystemExit too
                reply = {"ok": False, "error": _describe_error(exc)}
            try:
                self.send(reply)
            except Exception as exc:
                self.send({"ok": False, "error": _describe_error(exc)})


def _plain_attributes(module) -> dict:
    """The module's own attributes that are numbers, strings or short tuples of them."""
    attrs = {}
    for name, value in vars(module).items():
        if name.startswith("_") or name == "training":
            continue
        if type(value) in _PRIMITIVES:
            attrs[name] = value
        elif isinstance(value, tuple | list) and len(value) <= 16:
            if all(type(v) in _PRIMITIVES for v in value):
                attrs[name] = list(value)
    return attrs


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = _Channel()
    server = _Server(channel)
    server.serve()


if __name__ == "__main__":
    main()
