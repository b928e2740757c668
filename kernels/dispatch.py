"""Which implementation a mechanism uses: the Triton kernel or the plain-PyTorch reference.

``auto`` (the default) takes the kernel for CUDA tensors when Triton imports, and the reference
everywhere else. ``triton`` forces the kernel (on CPU tensors that needs ``TRITON_INTERPRET=1``,
Triton's interpreter, which is how the tests run it); ``reference`` forces the reference. Set it
for a process with the environment variable ``ABLATE_KERNELS`` or in code with
:func:`set_backend` / the :func:`backend` context manager.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

BACKENDS = ("auto", "triton", "reference")
_forced: str | None = None


def _check(name: str, where: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{where}: unknown kernel backend {name!r}; valid: {', '.join(BACKENDS)}")
    return name


def current() -> str:
    """The backend setting in force: set_backend/backend() first, then $ABLATE_KERNELS, then auto."""
    if _forced is not None:
        return _forced
    return _check(os.environ.get("ABLATE_KERNELS", "auto").strip().lower() or "auto", "ABLATE_KERNELS")


def set_backend(name: str | None) -> None:
    """Force ``triton`` or ``reference`` (``auto`` or None returns to the default rule)."""
    global _forced
    _forced = None if name is None else _check(name, "set_backend")


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    global _forced
    before = _forced
    set_backend(name)
    try:
        yield
    finally:
        _forced = before


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def use_triton(*tensors) -> bool:
    """True when the kernel should run for these tensors under the current setting."""
    mode = current()
    if mode == "reference":
        return False
    on_cuda = all(t.is_cuda for t in tensors)
    if mode == "auto":
        return on_cuda and triton_available()
    # forced
    if not triton_available():
        raise RuntimeError("kernel backend 'triton' was forced but Triton does not import here")
    if not on_cuda and not interpreting():
        raise RuntimeError("kernel backend 'triton' was forced on CPU tensors: set TRITON_INTERPRET=1 "
                           "(Triton's interpreter) or use CUDA tensors")
    return True
