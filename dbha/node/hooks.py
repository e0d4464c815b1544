"""Hooks: operator executables told about every event, and one asked before a promotion.

Each ``on_event`` program runs as ``PROGRAM EVENT`` with the event also in the
environment (``DBHA_EVENT``, ``DBHA_SERVICE``, ``DBHA_NODE``, ``DBHA_PEER``,
``DBHA_EPOCH``, ``DBHA_ROLE``, ``DBHA_DETAIL``, ``DBHA_TIME``). Hooks run on a
worker thread from a bounded queue, each bounded by the configured timeout; a
failing, slow or missing hook is logged and counted, never raised: they never
block a decision.

The ``pre_promote`` program (:class:`PrePromoteHook`) is the one hook that
decides: the executor asks it before a promotion changes anything, and a
non-zero exit, or no answer within its timeout, vetoes the promotion.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dbha import proc
from dbha.errors import CommandFailed, CommandTimeout, Refused

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
        "switchover_promoting",
        "switchover_done",
        "sync_fallback",
        "sync_restored",
        "replica_prepared",
        "sync_relaxed",
        "check_failed",
        "check_passed",
        "reloaded",  # systemctl reload read the config (dbha.node.reload)
    }
)

QUEUE_LIMIT = 256
_HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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
            "PATH": _HOOK_PATH,
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


# ------------------------------------------------------------------ pre_promote

# After a veto, an automatic promotion is decided again at every tick; the hook is
# run again only this long (seconds) after its last veto, and in between the
# promotion is refused with that veto's reason: a hook that always vetoes runs a
# dozen times a minute, not ten times a second. An operator's forced failover
# always runs it.
VETO_HOLD = 5.0
# How much of the hook's output is kept (its last bytes) and logged.
OUTPUT_LIMIT = 4096
# How much of its last output line goes into the refusal's reason.
REASON_LIMIT = 200
PROMOTION_KINDS = ("failover", "switchover", "forced")


class PromotionVetoed(Refused):
    """The pre_promote hook vetoed a promotion (non-zero exit, or no answer in its
    time): nothing was changed."""


class PrePromoteHook:
    """The operator's ``pre_promote`` program, run as ``PROGRAM KIND`` (failover,
    switchover or forced) with ``DBHA_EVENT=pre_promote``, ``DBHA_PROMOTION=KIND``,
    ``DBHA_SERVICE``, ``DBHA_NODE``, ``DBHA_PEER``, ``DBHA_EPOCH`` (the epoch it
    would promote at), ``DBHA_DETAIL`` (why) and ``DBHA_TIME`` in its environment,
    standard input closed, in a session of its own (killed whole at its timeout)."""

    def __init__(
        self,
        program: Path | None,
        timeout_s: float,
        *,
        service: str,
        node: str,
        peer: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.program = program
        self.timeout_s = timeout_s
        self._who = {"DBHA_SERVICE": service, "DBHA_NODE": node, "DBHA_PEER": peer}
        self._clock = clock
        self._veto: tuple[float, str] | None = None  # (when, why) of the last veto
        self._logged: tuple[str, str] | None = None  # the last veto logged (why, output)
        self.runs = 0

    def check(self, kind: str, epoch: int, reason: str = "") -> None:
        """Pass (return) or veto (raise PromotionVetoed) the promotion of ``kind``
        at ``epoch``. No program configured: it passes at once."""
        if self.program is None:
            return
        if kind not in PROMOTION_KINDS:
            raise ValueError(f"unknown promotion kind {kind!r}")
        last = self._veto
        if kind != "forced" and last is not None and self._clock() - last[0] < VETO_HOLD:
            raise PromotionVetoed(last[1])
        env = {
            "PATH": _HOOK_PATH,
            "LANG": "C.UTF-8",
            **self._who,
            "DBHA_EVENT": "pre_promote",
            "DBHA_PROMOTION": kind,
            "DBHA_EPOCH": str(epoch),
            "DBHA_DETAIL": reason,
            "DBHA_TIME": f"{time.time():.3f}",
        }
        self.runs += 1
        program = str(self.program)
        try:
            code, output = proc.run_limited(
                [program, kind], timeout=self.timeout_s, env=env, max_output=OUTPUT_LIMIT
            )
        except CommandTimeout as exc:
            why = (
                f"the pre_promote hook {program} did not answer within {self.timeout_s:g} s: a veto"
            )
            output = exc.output
        except CommandFailed as exc:
            why = f"the pre_promote hook cannot run ({exc}): a veto"
            output = ""
        else:
            if code == 0:
                if last is not None:
                    log.info("pre_promote hook %s passes again (%s)", program, kind)
                else:
                    log.info("pre_promote hook %s passed (%s at epoch %d)", program, kind, epoch)
                self._veto = self._logged = None
                return
            tail = _last_line(output)
            status = f"exit {code}" if code > 0 else f"killed by signal {-code}"
            said = f": {tail}" if tail else ""
            why = f"vetoed by the pre_promote hook {program} ({status}{said})"
        self._veto = (self._clock(), why)
        seen = (why, output)
        level = logging.DEBUG if seen == self._logged else logging.WARNING
        self._logged = seen
        log.log(
            level,
            "pre_promote hook vetoed the %s at epoch %d: %s; its output: %s",
            kind,
            epoch,
            why,
            output.strip() or "(none)",
        )
        raise PromotionVetoed(why)


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= REASON_LIMIT else line[: REASON_LIMIT - 3] + "..."
