"""Hooks: operator executables told about every event, without ever blocking a decision.

Each configured program runs as ``PROGRAM EVENT`` with the event also in the
environment (``DBHA_EVENT``, ``DBHA_SERVICE``, ``DBHA_NODE``, ``DBHA_PEER``,
``DBHA_EPOCH``, ``DBHA_ROLE``, ``DBHA_DETAIL``, ``DBHA_TIME``). Hooks run on a
worker thread from a bounded queue, each bounded by the configured timeout; a
failing, slow or missing hook is logged and counted, never raised.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dbha import proc
from dbha.errors import CommandFailed, CommandTimeout

log = logging.getLogger("dbha.hooks")

# The events dbha reports. Hooks receive exactly these names.
EVENTS = frozenset(
    {
        "started",
        "stopping",
        "path_down",
        "path_up",
        "peer_silent",
        "peer_heard",
        "heartbeats_broken",
        "heartbeats_restored",
        "failover_started",
        "failover_done",
        "failover_refused",
        "request_refused",
        "fenced",
        "unfenced",
        "promoted",
        "vip_taken",
        "vip_released",
        "resync_needed",
        "rejoined",
        "switchover_started",
        "switchover_done",
        "sync_fallback",
        "sync_restored",
        "replica_prepared",
        "sync_relaxed",
        "check_failed",
        "check_passed",
    }
)

QUEUE_LIMIT = 256


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    service: str
    node: str
    peer: str
    epoch: int
    role: str
    at: float  # wall-clock seconds since the epoch, for the operator
    detail: str = ""

    def __post_init__(self) -> None:
        if self.name not in EVENTS:
            raise ValueError(f"unknown event {self.name!r}")

    def environment(self) -> dict[str, str]:
        return {
            "DBHA_EVENT": self.name,
            "DBHA_SERVICE": self.service,
            "DBHA_NODE": self.node,
            "DBHA_PEER": self.peer,
            "DBHA_EPOCH": str(self.epoch),
            "DBHA_ROLE": self.role,
            "DBHA_DETAIL": self.detail,
            "DBHA_TIME": f"{self.at:.3f}",
        }


@dataclass
class HookStats:
    ran: int = 0
    failed: int = 0
    timed_out: int = 0
    dropped: int = 0  # the queue was full
    last_error: str | None = None
    by_event: dict[str, int] = field(default_factory=dict)


class HookRunner:
    """Runs hooks for events in order, on one worker thread. ``fire`` never blocks."""

    def __init__(self, programs: Sequence[Path], timeout_s: float) -> None:
        self.programs = tuple(programs)
        self.timeout_s = timeout_s
        self.stats = HookStats()
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=QUEUE_LIMIT)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.programs and self._thread is None:
            self._thread = threading.Thread(target=self._work, name="dbha-hooks", daemon=True)
            self._thread.start()

    def fire(self, event: Event) -> None:
        """Queue ``event`` for every hook; drop (and count) it if the queue is full."""
        if not self.programs:
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._lock:
                self.stats.dropped += 1
            log.warning("hook queue full: event %s not delivered to hooks", event.name)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop after the hooks already queued (bounded); True if the worker ended."""
        if self._thread is None:
            return True
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def run_now(self, event: Event) -> None:
        """Run every hook for ``event`` on the calling thread (for ``dbha check``)."""
        for program in self.programs:
            self._run_one(program, event)

    def _work(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            for program in self.programs:
                self._run_one(program, event)

    def _run_one(self, program: Path, event: Event) -> None:
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            **event.environment(),
        }
        try:
            proc.run([str(program), event.name], timeout=self.timeout_s, env=env)
            outcome = None
        except CommandTimeout as exc:
            outcome = ("timed_out", str(exc))
        except CommandFailed as exc:
            outcome = ("failed", str(exc))
        with self._lock:
            self.stats.ran += 1
            self.stats.by_event[event.name] = self.stats.by_event.get(event.name, 0) + 1
            if outcome is not None:
                setattr(self.stats, outcome[0], getattr(self.stats, outcome[0]) + 1)
                self.stats.last_error = outcome[1]
        if outcome is not None:
            log.warning(
                "hook %s for %s %s: %s",
                program,
                event.name,
                outcome[0].replace("_", " "),
                outcome[1],
            )
