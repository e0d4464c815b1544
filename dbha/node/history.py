"""The node's history: every event it reported (the hook events: failovers,
switchovers, fences, resyncs, synchronous-commit changes, paths going down and
up, ...), one JSON object per line in ``history.jsonl`` in ``service.state_dir``
(0600), appended as they happen, newest last; ``dbha history`` reads it.

Bounded: past ``MAX_BYTES`` the file is rewritten with its newest half
(atomically: a temporary file and a rename). Appends are not fsynced: a crash
of the process loses nothing (the page cache outlives it), a crash of the
host may lose the last lines. A failover's or a switchover's end carries how
long it took since its start (``duration_s``), when both happened in the same
supervisor process. Reading never raises on a damaged line: it is skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

HISTORY_FILE = "history.jsonl"
MAX_BYTES = 1024 * 1024
MAX_LINE = 4096  # a detail longer than this is cut
MAX_REPLY = 1000  # events one answer of the control door carries at most
MAX_REPLY_BYTES = 128 * 1024  # and its size (the door's messages are bounded)
# Events that end something another event started: end -> the starts it ends.
ENDS = {
    "promoted": ("failover_started", "switchover_promoting"),
    "switchover_done": ("switchover_started",),
}
STARTS = frozenset(s for starts in ENDS.values() for s in starts)


def path_of(state_dir: Path) -> Path:
    return state_dir / HISTORY_FILE


class History:
    """Appends the events of one node to its history file. Never raises: a history
    that cannot be written must not stop a failover (the failure is returned)."""

    def __init__(self, state_dir: Path, service: str, node: str) -> None:
        self.path = path_of(state_dir)
        self.service, self.node = service, node
        self._started: dict[str, float] = {}  # start event -> monotonic time

    def record(self, event: str, detail: str, epoch: int, role: str) -> str | None:
        """Append one event; the reason it could not be written, or None."""
        now = time.monotonic()
        entry: dict[str, Any] = {
            "at": round(time.time(), 3),
            "service": self.service,
            "node": self.node,
            "event": event,
            "epoch": epoch,
            "role": role,
            "detail": detail[:MAX_LINE],
        }
        if event in STARTS:
            self._started[event] = now
        start = None
        for begun in ENDS.get(event, ()):
            start = self._started.pop(begun, None)
            if start is not None:
                break
        if start is not None:
            entry["duration_s"] = round(now - start, 3)
        line = (json.dumps(entry, ensure_ascii=True) + "\n").encode("ascii")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            if size > MAX_BYTES:
                self._trim()
        except OSError as exc:
            return f"cannot write the history {self.path}: {exc.strerror or exc}"
        return None

    def _trim(self) -> None:
        """Keep the newest half of the file (whole lines)."""
        data = self.path.read_bytes()
        keep = data[len(data) - MAX_BYTES // 2 :]
        keep = keep[keep.find(b"\n") + 1 :]
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, keep)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)


def read(state_dir: Path, last: int | None = None) -> list[dict[str, Any]]:
    """The history's events, oldest first (the ``last`` newest ones only, when
    given). A missing file is an empty history; a line that is not an event is
    skipped."""
    try:
        data = path_of(state_dir).read_bytes()
    except FileNotFoundError:
        return []
    events = []
    for raw in data.splitlines():
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            doc = json.loads(raw)
            if isinstance(doc, dict) and isinstance(doc.get("event"), str):
                events.append(doc)
    return events[-last:] if last else events


def time_of(e: dict[str, Any]) -> float:
    """An event's wall-clock time (0 when it has none), to order events by."""
    at = e.get("at")
    return float(at) if isinstance(at, int | float) and not isinstance(at, bool) else 0.0


def within(events: list[dict[str, Any]], max_bytes: int) -> list[dict[str, Any]]:
    """The newest of ``events`` whose JSON fits in ``max_bytes`` (for a reply)."""
    out: list[dict[str, Any]] = []
    size = 0
    for e in reversed(events):
        size += len(json.dumps(e)) + 2
        if size > max_bytes:
            break
        out.append(e)
    return out[::-1]


def line(e: dict[str, Any]) -> str:
    """One event as a person reads it."""
    at = e.get("at")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
        if isinstance(at, int | float)
        else "?"
    )
    took = f" ({e['duration_s']:.3f} s)" if isinstance(e.get("duration_s"), int | float) else ""
    detail = f": {e['detail']}" if e.get("detail") else ""
    who = f"{e.get('node', '?')} epoch {e.get('epoch', '?')} {e.get('role', '?')}"
    return f"{when}  {who}  {e['event']}{took}{detail}"
