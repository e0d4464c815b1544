"""Bounded waiting for the lab: every wait has a deadline and says what it waited for."""

from __future__ import annotations

import time
from collections.abc import Callable

from dbha.errors import LabError


def wait_until(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``cond`` until it is true; raise LabError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return
        if time.monotonic() >= deadline:
            raise LabError(f"gave up waiting for {what} after {timeout:g} s")
        time.sleep(interval)
