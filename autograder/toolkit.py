"""The check toolkit: what every chapter's checks share.

A check is a function decorated with :func:`check`. It takes the student's function, class or
object (what the hidden test passes it), draws its own inputs from fixed seeds, calls the student's
code through a :class:`Subject`, and either returns or raises :class:`CheckFailed` with a message
that names the property that failed and where to look, never the hidden inputs or expected values.

The :class:`Subject` is what makes one check serve two places. In a plain nbgrader run, and in
pytest, the student's code is in this process (:class:`LocalSubject`). In the course's grader it
runs in a sandbox, and the check holds a ``RemoteSubject`` (``autograder/engine/judge.py``) that
sends the inputs there and gets outputs back as data. Both go through the same calls
(``autograder/engine/runner.py``): the same seeding, the same gradients, the same conversions.

**One bug, one part; stand-ins only where needed.** ``@check(stand_ins={"attention_weights":
reference.attention_weights})`` declares that the student's code may call ``attention_weights``,
an earlier part of the chapter. While the check runs, that name is the student's own when it
passes its own part's checks, and the reference otherwise (or when the student never defined it):
a mistake in Part 2 then costs Part 2 only, and a correct Part 2 (with an extra optional argument,
say) is what Part 3 runs on. When a stand-in was used and the check fails, its message says which
name was replaced and why. In the sandbox a stand-in answers from outside (the reference never
enters it); a name with no graded part in the chapter is always stood in for.
:func:`through` lets a check compute its expected values through the student's own earlier
functions, where it passed them, so that a freedom the instructions leave is not charged twice.

Not here: a chapter's references, checks and known-wrong implementations
(``autograder/chapters/<slug>/``), and the grading engine (``autograder/engine/``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch

from autograder.engine import runner

__all__ = [
    "CheckFailed",
    "GradingAborted",
    "StudentError",
    "TOLERANCES",
    "Subject",
    "LocalSubject",
    "as_subject",
    "check",
    "check_devices",
    "calling",
    "raises",
    "compare",
    "cases",
    "attention_rows",
    "module_state",
    "through",
    "close",
    "dropout_only_in_training",
    "draw",
    "dtype_name",
    "label",
]


class CheckFailed(AssertionError):
    """A property of the student's code did not hold.

    Subclasses AssertionError so that nbgrader counts it as a failed test, like a plain assert.
    """


class GradingAborted(RuntimeError):
    """The student's code could not be asked: it ran past its time or ended its process."""


class StudentError(Exception):
    """An exception the student's code raised in the sandbox: its type's name and its message."""

    def __init__(self, type_name: str, message: str, where: str = "") -> None:
        super().__init__(message)
        self.type_name = type_name
        self.where = where  # "cell 7, line 3: <the line>": the student's own line that raised


# (rtol, atol) per dtype, for one attention layer of width <= 64 compared with the reference.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-7, 1e-9),
    torch.float32: (1e-4, 1e-5),
    torch.bfloat16: (2e-2, 2e-2),
    torch.float16: (2e-3, 2e-3),
}


# --------------------------------------------------------------------------------------------
# Subjects: the student's code as a check sees it
# --------------------------------------------------------------------------------------------


class Subject:
    """The student's function, class or object.

    - ``subject(*args, **kwargs)`` calls it (a class: constructs an instance). A result that is
      plain data (tensors, numbers, str, bytes, lists, tuples, dicts) comes back as itself; any
      other object (a module, a tokenizer) comes back as a Subject.
    - ``subject.seeded(seed)(*args)`` calls it with torch's generator seeded, so that a module's
      initial weights are the same on every side.
    - ``subject.method("encode")(text)``, ``subject.attribute("merges")``.
    - ``subject.describe()``: {"type", "modules": {name: class name}, "state": state dict}.
    - ``subject.load_state_dict(state, strict=True)``, ``subject.to(device, dtype)``.
    - ``subject.gradients(args, kwargs, params=False, grad_output=None, method=None)``: the
      output and the gradients of <output, grad_output> with respect to the floating-point
      tensors in the arguments and (with params) the parameters: (output, [grads], {name: grad}).
    """

    label = "the student's code"

    def invoke(self, method, args, kwargs, *, seed=None, grad=None):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.invoke(None, args, kwargs)[0]

    def seeded(self, seed: int) -> Callable:
        return lambda *args, **kwargs: self.invoke(None, args, kwargs, seed=seed)[0]

    def method(self, name: str) -> Callable:
        return lambda *args, **kwargs: self.invoke(name, args, kwargs)[0]

    def gradients(self, args=(), kwargs=None, *, params=False, grad_output=None, method=None):
        grad = {"inputs": True, "params": params, "grad_output": grad_output}
        out, grads = self.invoke(method, tuple(args), dict(kwargs or {}), grad=grad)
        return out, grads["inputs"], grads["params"]

    def attribute(self, name: str):
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        raise NotImplementedError

    def to(self, device=None, dtype: torch.dtype | None = None) -> Subject:
        raise NotImplementedError

    def standing_in(self, stand_ins: Mapping[str, Callable]):
        raise NotImplementedError

    def sibling(self, name: str) -> Subject | None:
        """Another name the student's notebook defines, as a Subject; None if it has none."""
        raise NotImplementedError

    def checks_of(self, name: str, checker: Callable) -> list[Callable] | None:
        """The checks of the student's `name`, as the chapter grades it (None: not graded)."""
        from autograder import chapters

        slug = chapters.chapter_of(checker)
        if slug is None:
            return None
        return [p.check for p in chapters.load(slug).parts_of(name)] or None

    def verdict(self, name: str):
        """Why the student's own `name` was replaced (a str), None if it passed its checks, or
        UNKNOWN if it has not been checked yet."""
        return UNKNOWN

    def remember(self, name: str, why: str | None) -> None:
        """Keep the verdict on `name` for the other checks of this grading."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"


UNKNOWN = object()

# (id of the namespace, name) -> (the object, why it is replaced or None): the verdicts on the
# student's own earlier parts in this process (a plain nbgrader run, pytest). The object is kept,
# so a verdict is never taken for another object that reuses its id.
_LOCAL_VERDICTS: dict[tuple[int, str], tuple[object, str | None]] = {}


class LocalSubject(Subject):
    """The student's code in this process (a plain nbgrader run, or pytest)."""

    def __init__(self, obj, label: str | None = None) -> None:
        self.obj = obj
        self.label = label or getattr(obj, "__name__", type(obj).__name__)

    def invoke(self, method, args, kwargs, *, seed=None, grad=None):
        # Fresh copies of the inputs, as the sandbox gets: an in-place change by the student's
        # code cannot reach the check's own tensors.
        args, kwargs = runner.map_leaves((args, kwargs), lambda t: t.detach().clone())
        out, grads = runner.call(self.obj, method, args, kwargs, seed, grad)
        return self._wrap(out), grads

    def _wrap(self, value):
        module = type(value).__module__ or ""
        if module == "numpy" or module.startswith("numpy."):  # np.float64 is a float too
            return runner._from_numpy(value)
        if value is None or isinstance(value, (torch.Tensor, bool, int, float, str, bytes)):
            return value
        if isinstance(value, list):
            return [self._wrap(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._wrap(v) for v in value)
        if isinstance(value, dict):
            return {k: self._wrap(v) for k, v in value.items()}
        return LocalSubject(value, f"{type(value).__name__} object")

    def attribute(self, name: str):
        return self._wrap(getattr(self.obj, name))

    def describe(self) -> dict:
        return runner.describe(self.obj)

    def load_state_dict(self, state, strict: bool = True) -> None:
        runner.load_state(self.obj, dict(state), strict)

    def to(self, device=None, dtype=None) -> LocalSubject:
        self.obj.to(device=device, dtype=dtype)
        return self

    def sibling(self, name: str) -> LocalSubject | None:
        namespace = _namespace_of(self.obj)
        if namespace is None or name not in namespace:
            return None
        return LocalSubject(namespace[name], name)

    def verdict(self, name: str):
        namespace = _namespace_of(self.obj)
        if namespace is None or name not in namespace:
            return UNKNOWN
        obj, why = _LOCAL_VERDICTS.get((id(namespace), name), (None, UNKNOWN))
        return why if obj is namespace[name] else UNKNOWN

    def remember(self, name: str, why: str | None) -> None:
        namespace = _namespace_of(self.obj)
        if namespace is not None and name in namespace:
            _LOCAL_VERDICTS[(id(namespace), name)] = (namespace[name], why)

    @contextlib.contextmanager
    def standing_in(self, stand_ins: Mapping[str, Callable]) -> Iterator[None]:
        namespace = _namespace_of(self.obj)
        saved = {}
        if namespace is not None:
            for name, fn in stand_ins.items():
                saved[name] = namespace.get(name, _MISSING)
                namespace[name] = fn
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is _MISSING:
                    namespace.pop(name, None)
                else:
                    namespace[name] = value


_MISSING = object()


def _namespace_of(obj) -> dict | None:
    """The global namespace the student's code looks names up in (a notebook's, a module's)."""
    if inspect.ismethod(obj):
        obj = obj.__func__
    if inspect.isfunction(obj):
        return obj.__globals__
    cls = obj if inspect.isclass(obj) else type(obj)
    for value in vars(cls).values():
        value = getattr(value, "__func__", value)
        if inspect.isfunction(value):
            return value.__globals__
    return None


def as_subject(student) -> Subject:
    return student if isinstance(student, Subject) else LocalSubject(student)


def check(*, stand_ins: Mapping[str, Callable] | None = None):
    """Make a check: it takes the student's code (a Subject, or the object itself) and raises
    CheckFailed. While it runs, each name in `stand_ins` is the student's own when that passes its
    own part's checks, and the given reference otherwise (see the module's docstring).
    """
    stand_ins = dict(stand_ins or {})

    def decorate(body: Callable[[Subject], None]) -> Callable:
        @functools.wraps(body)
        def run(student) -> None:
            subject = as_subject(student)
            replaced: dict[str, str] = {}  # name -> why the student's own is not used
            active: dict[str, Callable] = {}
            own: dict[str, Subject] = {}
            for name, reference in stand_ins.items():
                why = _why_replaced(subject, name, run)
                if why is None:
                    own[name] = subject.sibling(name)
                    continue
                active[name] = reference
                if why:
                    replaced[name] = why
            token = _OWN.set(own)
            try:
                with subject.standing_in(active):
                    body(subject)
            except CheckFailed as exc:
                if not replaced:
                    raise
                raise CheckFailed(f"{exc} {_replaced_note(replaced)}") from None
            finally:
                _OWN.reset(token)

        run.stand_ins = stand_ins
        return run

    return decorate


# The student's own earlier parts that a running check uses (they passed their checks).
_OWN: contextvars.ContextVar[dict | None] = contextvars.ContextVar("own_parts", default=None)


def _why_replaced(subject: Subject, name: str, checker: Callable) -> str | None:
    """None when the student's own `name` is used; else why the reference stands in ("" when the
    name is not graded in the chapter, so it always stands in and that is no news)."""
    own = subject.sibling(name)
    if own is None:
        return f"your notebook does not define {name}"
    why = subject.verdict(name)
    if why is not UNKNOWN:
        return why
    checks = subject.checks_of(name, checker)
    if checks is None:
        return ""
    why = None
    for fn in checks:
        try:
            fn(own)
        except (CheckFailed, GradingAborted) as exc:
            why = fails_own_check(name, str(exc))
            break
    subject.remember(name, why)
    return why


def fails_own_check(name: str, message: str) -> str:
    """Why the student's own `name` is not used: its check failed with `message`."""
    return f"your {name} fails its own part's check ({_first_sentence(message)})"


def _first_sentence(text: str, limit: int = 200) -> str:
    text = text.strip().split("\n")[0]
    cut = text.find(". ")
    text = text[: cut + 1] if 0 < cut < limit else text
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _replaced_note(replaced: Mapping[str, str]) -> str:
    names = ", ".join(replaced)
    whys = "; ".join(replaced.values())
    return (
        f"(While this part was checked, the course's correct {names} stood in for yours: {whys}. "
        "Fix that part first. The stand-in takes the arguments the instructions describe, so a "
        "call made any other way fails here.)"
    )


@contextlib.contextmanager
def through(module) -> Iterator[None]:
    """Inside the block, `module`'s global names of the running check's stand-ins reach the
    student's own earlier parts where they passed their checks: expected values computed with
    the reference module then go through the same earlier functions as the student's code.

    Only for earlier parts that are functions returning plain data (a class would come back as a
    handle the reference cannot use).
    """
    own = _OWN.get() or {}
    saved = {}
    for name, subject in own.items():
        if subject is not None and hasattr(module, name):
            saved[name] = getattr(module, name)
            setattr(module, name, subject)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


# --------------------------------------------------------------------------------------------
# Running and comparing
# --------------------------------------------------------------------------------------------


def check_devices() -> list[torch.device]:
    """The devices a check runs on: the CPU, and the GPU when there is one."""
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    return devices


def calling(what: str, fn: Callable, *args, **kwargs):
    """Call the student's code; turn any exception it raises into a CheckFailed naming `what`."""
    try:
        return fn(*args, **kwargs)
    except (CheckFailed, GradingAborted):
        raise
    except StudentError as exc:
        at = f" (in your code at {exc.where})" if exc.where else ""
        raise CheckFailed(f"{what} raised {exc.type_name}: {exc}{at}") from None
    except Exception as exc:  # the student's code may raise anything
        raise CheckFailed(f"{what} raised {type(exc).__name__}: {exc}") from None


def raises(expected: type[Exception], what: str, fn: Callable, *args, **kwargs) -> None:
    """Raise CheckFailed unless the student's code raises `expected` (by its name, as an
    exception from the sandbox comes back as its type's name and message)."""
    try:
        fn(*args, **kwargs)
    except (CheckFailed, GradingAborted):
        raise
    except Exception as exc:  # the student's code may raise anything
        name = exc.type_name if isinstance(exc, StudentError) else type(exc).__name__
        if name != expected.__name__:
            raise CheckFailed(f"{what} must raise {expected.__name__}, not {name}.") from None
    else:
        raise CheckFailed(f"{what} must raise {expected.__name__}.")


def compare(
    actual,
    expected: torch.Tensor,
    what: str,
    *,
    equal_nan: bool = False,
    tolerance: tuple[float, float] | None = None,
    hint: str = "",
) -> None:
    """Raise CheckFailed unless `actual` matches `expected` in shape, dtype, device and values.

    The message says which of those differs, and for values how large the largest difference is,
    but not the values themselves; `hint` (where to look) is added to a shape or value failure.
    """
    hint = f" {hint}" if hint else ""
    if not isinstance(actual, torch.Tensor):
        raise CheckFailed(f"{what}: expected a torch.Tensor, got {type(actual).__name__}.")
    if actual.shape != expected.shape:
        raise CheckFailed(
            f"{what}: wrong shape {tuple(actual.shape)}, expected {tuple(expected.shape)}.{hint}"
        )
    if actual.dtype != expected.dtype:
        raise CheckFailed(
            f"{what}: the result is {actual.dtype} but the inputs were {expected.dtype}; "
            "the result keeps the inputs' dtype (do not convert, and create new tensors with "
            "the inputs' dtype)."
        )
    if actual.device.type != expected.device.type:
        raise CheckFailed(
            f"{what}: the result is on {actual.device} but the inputs were on {expected.device}; "
            "create new tensors on the inputs' device."
        )
    if not equal_nan and bool(torch.isnan(actual).any()):
        raise CheckFailed(f"{what}: the result contains NaN.")
    rtol, atol = tolerance or TOLERANCES[expected.dtype]
    if not torch.allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=equal_nan):
        diff = (actual.double() - expected.double()).abs().nan_to_num(nan=float("inf")).max()
        raise CheckFailed(
            f"{what}: values differ from the reference (largest absolute difference "
            f"{diff.item():.3g}, allowed {atol:g} + {rtol:g}·|expected|).{hint}"
        )


def cases(
    shapes: Sequence[tuple], dtypes: Sequence[torch.dtype], seeds: Sequence[int] | None = None
) -> Iterator[tuple[torch.device, torch.dtype, int, tuple]]:
    """(device, dtype, seed, shape) for every shape, on every device, with every dtype.

    The seed is the shape's index unless `seeds` gives one per shape.
    """
    for device in check_devices():
        for dtype in dtypes:
            for i, shape in enumerate(shapes):
                yield device, dtype, (seeds[i] if seeds else i), shape


def draw(shape, seed: int, device="cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal values of `shape` from `seed`, the same numbers on every device and dtype
    (drawn in float64 on the CPU, then cast and moved)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


def dtype_name(dtype: torch.dtype) -> str:
    """torch.float32 -> "float32"."""
    return str(dtype).removeprefix("torch.")


def label(dtype: torch.dtype, device) -> str:
    """(torch.float32, cuda:0) -> "float32, cuda": how a check's message names a case."""
    return f"{dtype_name(dtype)}, {torch.device(device).type}"


def close(
    actual,
    expected: torch.Tensor,
    dtype: torch.dtype | None = None,
    *,
    tolerance: tuple[float, float] | None = None,
    equal_nan: bool = False,
) -> bool:
    """Whether `actual` is a tensor of `expected`'s shape, on its kind of device, and equal to it
    within the tolerance of `dtype` (default: expected's); for telling mistakes apart, where
    :func:`compare` would raise."""
    if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape:
        return False
    if actual.device.type != expected.device.type:
        return False
    rtol, atol = tolerance or TOLERANCES[dtype or expected.dtype]
    return bool(
        torch.allclose(actual.to(expected.dtype), expected, rtol, atol, equal_nan=equal_nan)
    )


def dropout_only_in_training(
    model: Subject, name: str, plain: Subject, plain_name: str, inputs: tuple, advice: str
) -> None:
    """`model` (built with dropout) in eval mode equals `plain` (the same weights, dropout=0.0)
    on `inputs`; in training mode it does not. `advice` says where the dropout should go."""
    calling(f"{name}.eval()", model.method("eval"))
    calling(f"{plain_name}.eval()", plain.method("eval"))
    expected = calling(plain_name, plain, *inputs)
    compare(calling(f"{name} in eval mode", model, *inputs), expected,
            f"{name} in eval mode, against the same weights with dropout=0.0",
            hint="Use nn.Dropout modules (and the attention's own dropout), which do nothing in "
            "eval mode.")  # fmt: skip
    calling(f"{name}.train()", model.method("train"))
    out = calling(f"{name} in training mode", model, *inputs)
    if isinstance(out, torch.Tensor) and close(out, expected):
        raise CheckFailed(f"{name} in training mode: the dropout does nothing; {advice}.")


def attention_rows(weights, mask: torch.Tensor | None, what: str) -> None:
    """Properties of attention weights, checked before any value: a tensor, finite, >= 0,
    exactly 0 where the boolean mask (True = allowed) forbids, rows that sum to 1, and all-zero
    rows where every key is masked.
    """
    if not isinstance(weights, torch.Tensor):
        raise CheckFailed(f"{what}: expected a torch.Tensor, got {type(weights).__name__}.")
    if mask is not None and not _broadcasts_to(mask.shape, weights.shape):
        raise CheckFailed(
            f"{what}: wrong shape {tuple(weights.shape)}; the weights have one row per query "
            "and one column per key, (..., L, S)."
        )
    if bool(torch.isnan(weights).any()):
        raise CheckFailed(f"{what}: the weights contain NaN.")
    if bool((weights < 0).any()):
        raise CheckFailed(f"{what}: some weights are negative; softmax output is never negative.")
    _, atol = TOLERANCES.get(weights.dtype, (0, 1e-3))
    sums = weights.double().sum(dim=-1)  # (..., L)
    if mask is not None:
        mask = mask.to(weights.device).expand_as(weights)  # (..., L, S)
        if bool((weights.masked_select(~mask) != 0).any()):
            raise CheckFailed(
                f"{what}: a masked key (mask False) got a nonzero weight; masked keys must get "
                "weight exactly 0, so mask the scores *before* the softmax."
            )
        attends = mask.any(dim=-1)  # (..., L)
        if bool((sums[~attends] != 0).any()):
            raise CheckFailed(
                f"{what}: a query whose keys are all masked must get weights 0 (it attends to "
                "nothing)."
            )
        sums = sums[attends]
    if not torch.allclose(sums, torch.ones_like(sums), rtol=0, atol=10 * atol):
        raise CheckFailed(
            f"{what}: the rows do not sum to 1; each query's weights are a softmax over the "
            "keys (the last dimension), taken after masking."
        )


def _broadcasts_to(shape: tuple, target: tuple) -> bool:
    """Whether a tensor of `shape` broadcasts to exactly `target`."""
    if len(shape) > len(target):
        return False
    return all(a in (1, b) for a, b in zip(reversed(shape), reversed(target), strict=False))


def module_state(subject: Subject, what: str, layers: Mapping[str, tuple[str, tuple]]) -> dict:
    """The student's module's state dict, after checking that it has the named layers.

    layers maps a submodule name to (class name, weight shape), e.g.
    {"W_q": ("Linear", (8, 8))}; a missing layer, another class or another shape fails with a
    message that names it.
    """
    info = subject.describe()
    for name, (kind, shape) in layers.items():
        found = info["modules"].get(name)
        if found is None:
            raise CheckFailed(f"{what} must have a submodule called {name} (an nn.{kind}).")
        if found != kind:
            raise CheckFailed(f"{what}.{name} must be an nn.{kind}, not a {found}.")
        weight = info["state"].get(f"{name}.weight")
        if weight is None or tuple(weight.shape) != tuple(shape):
            got = None if weight is None else tuple(weight.shape)
            raise CheckFailed(f"{what}.{name}.weight must have shape {tuple(shape)}, not {got}.")
    return info["state"]
