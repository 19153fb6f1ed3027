"""Waiting for something a test cannot be told about (a daemon's pass, a flow's expiry): poll, bounded."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 10, interval: float = 0.05, what: str = "") -> T:
    """The first truthy result of check() within timeout, else AssertionError with the last one."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or check} never became true within {timeout} s (last: {result!r})")
        time.sleep(interval)
