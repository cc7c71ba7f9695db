"""What every chapter's checks share: the failure type, devices, dtypes, tolerances, comparisons.

A check is a function that takes the student's callable, runs it on inputs it draws itself from a
fixed seed, and either returns None or raises :class:`CheckFailed`. The message names the property
that failed and where to look; it never prints the hidden inputs or the expected values, so that
feedback cannot be used to reverse-engineer the tests.

Not here: the chapter's reference implementations and the checks themselves (``chNN_slug.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = [
    "CheckFailed",
    "TOLERANCES",
    "check_devices",
    "compare",
    "calling",
]


class CheckFailed(AssertionError):
    """A property of the student's code did not hold.

    Subclasses AssertionError so that nbgrader counts it as a failed test, like a plain assert.
    """


# (rtol, atol) per dtype, for one attention layer of width <= 64 compared with the reference.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-7, 1e-9),
    torch.float32: (1e-4, 1e-5),
    torch.bfloat16: (2e-2, 2e-2),
    torch.float16: (2e-3, 2e-3),
}


def check_devices() -> list[torch.device]:
    """The devices a check runs on: the CPU, and the GPU when there is one."""
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    return devices


def calling(what: str, fn: Callable, *args, **kwargs):
    """Call the student's function; turn any exception into a CheckFailed that names `what`."""
    try:
        return fn(*args, **kwargs)
    except CheckFailed:
        raise
    except Exception as exc:  # the student's code may raise anything
        raise CheckFailed(f"{what} raised {type(exc).__name__}: {exc}") from None


def compare(
    actual,
    expected: torch.Tensor,
    what: str,
    *,
    equal_nan: bool = False,
    tolerance: tuple[float, float] | None = None,
) -> None:
    """Raise CheckFailed unless `actual` matches `expected` in shape, dtype, device and values.

    The message says which of those differs, and for values how large the largest difference is,
    but not the values themselves.
    """
    if not isinstance(actual, torch.Tensor):
        raise CheckFailed(f"{what}: expected a torch.Tensor, got {type(actual).__name__}.")
    if actual.shape != expected.shape:
        raise CheckFailed(
            f"{what}: wrong shape {tuple(actual.shape)}, expected {tuple(expected.shape)}. "
            "Check which dimensions you transpose and which one the softmax runs over."
        )
    if actual.dtype != expected.dtype:
        raise CheckFailed(
            f"{what}: the result is {actual.dtype} but the inputs were {expected.dtype}; "
            "keep the inputs' dtype (create new tensors with dtype=query.dtype)."
        )
    if actual.device != expected.device:
        raise CheckFailed(
            f"{what}: the result is on {actual.device} but the inputs were on {expected.device}; "
            "create new tensors with device=query.device."
        )
    if not equal_nan and bool(torch.isnan(actual).any()):
        raise CheckFailed(f"{what}: the result contains NaN.")
    rtol, atol = tolerance or TOLERANCES[expected.dtype]
    if not torch.allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=equal_nan):
        diff = (actual.double() - expected.double()).abs().nan_to_num(nan=float("inf")).max()
        raise CheckFailed(
            f"{what}: values differ from the reference (largest absolute difference "
            f"{diff.item():.3g}, allowed {atol:g} + {rtol:g}·|expected|)."
        )
