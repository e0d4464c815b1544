"""Process helpers for the lab: process trees and liveness, by PID."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def zombie(pid: int) -> bool:
    """True if ``pid`` has died but was not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (parent first)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children(p))
    return out


def signal_tree(pid: int, sig: signal.Signals) -> list[int]:
    """Send ``sig`` to a process and its descendants; freeze first for SIGKILL."""
    pids = tree(pid)
    if sig == signal.SIGKILL:
        for p in pids:
            _kill(p, signal.SIGSTOP)
    for p in pids:
        _kill(p, sig)
    return pids


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
