"""`torch.compiler.assume_constant_result` without importing `torch._dynamo` at import time.

The decorator imports `torch._dynamo` (1.7 s of CPU on this machine's 2 cores, more than
torch itself) only to set one attribute on the function. kan_core's availability checks
carry that mark from import on, so any later `torch.compile` (ours or a user's) evaluates
them once, outside the graph; `tests/kan_core/test_engine.py` checks that the mark is the
one torch's decorator sets, so a torch upgrade that changes it fails a test, not a user.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

MARK = "_dynamo_marked_constant"  # what torch._dynamo.assume_constant_result sets (torch 2.x)


def assume_constant_result(fn: F) -> F:
    """Mark ``fn`` as torch's decorator does (its result is a constant under torch.compile)."""
    setattr(fn, MARK, True)
    return fn
