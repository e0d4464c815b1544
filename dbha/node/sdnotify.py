"""The systemd notify protocol (READY=1, STATUS=..., WATCHDOG=1, STOPPING=1).

Without ``NOTIFY_SOCKET`` in the environment every call is a no-op. Sending
never raises and never blocks: a lost notification is better than a stalled
supervisor.
"""

from __future__ import annotations

import os
import socket


def _address() -> str | None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return None
    if addr.startswith("@"):  # an abstract socket
        return "\0" + addr[1:]
    return addr


def enabled() -> bool:
    return _address() is not None


def notify(*fields: str) -> bool:
    """Send ``fields`` (e.g. ``"READY=1"``, ``"STATUS=..."``); True if sent."""
    addr = _address()
    if addr is None:
        return False
    msg = "\n".join(f.replace("\n", " ") for f in fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.setblocking(False)
            s.sendto(msg, addr)
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """How often systemd wants WATCHDOG=1, in seconds (half its timeout), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None
