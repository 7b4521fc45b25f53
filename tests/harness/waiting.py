"""Polling for a condition, the one helper every kind of test uses."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    pred: Callable[[], object],
    timeout: float = 5.0,
    what: str = "the condition",
    step: float = 0.05,
) -> float:
    """Poll ``pred`` until it is true; return the seconds it took (a figure to print,
    never to assert on), or fail naming ``what`` after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
