"""The safety check on a thread of its own: while the peer is silent (or for a
while after the core asked), checks run overlapping, so a fresh verdict lands
often even though each may take its whole timeout; the loop reads the newest
(``view``)."""

from __future__ import annotations

import logging
import threading
import time

from dbha.beat.service import HeartbeatService
from dbha.core.model import SafetyView
from dbha.host.safety import SafetyCheck

log = logging.getLogger("dbha")

# How long a RunSafetyCheck action keeps the safety thread checking (seconds).
SAFETY_ARMED_FOR = 2.0
# Safety checks in flight at once while the peer is silent (see SafetyRunner.loop).
SAFETY_IN_FLIGHT = 3
# How often an idle safety thread looks at the heartbeat itself (seconds).
SAFETY_IDLE_POLL = 0.5


class SafetyRunner:
    """Runs ``safety`` while ``heartbeat`` hears the peer silent or while armed;
    stops with ``stop``; sets ``wake`` when a verdict lands (the loop ticks)."""

    def __init__(
        self,
        safety: SafetyCheck,
        heartbeat: HeartbeatService,
        interval: float,
        timeout: float,
        *,
        stop: threading.Event,
        wake: threading.Event,
    ) -> None:
        self.safety, self.heartbeat = safety, heartbeat
        self.interval, self.timeout = interval, timeout
        self._stop, self._wake = stop, wake
        self.view: SafetyView | None = None  # the newest verdict, by when its check began
        self._armed_until = 0.0
        self._poke = threading.Event()
        self._lock = threading.Lock()
        self._last_verdict = ""

    def arm(self) -> None:
        """Ask for safety checks now and for a while (the core asks when the peer is
        quiet); the safety thread also keeps checking on its own while the peer is
        silent, so a lone primary's lease is renewed even while this loop is busy."""
        self._armed_until = time.monotonic() + SAFETY_ARMED_FOR
        self._poke.set()

    def loop(self) -> None:
        # Checks overlap: while the peer is silent a new one starts every
        # SAFETY_STAGGER (at most SAFETY_IN_FLIGHT at once), so a fresh verdict lands
        # that often even though each check may take its whole timeout (the peer's
        # probes time out when it is dead). A lone primary's lease rests on them.
        every = max(self.interval, self.timeout / SAFETY_IN_FLIGHT)
        slots = threading.BoundedSemaphore(SAFETY_IN_FLIGHT)
        while not self._stop.is_set():
            now = time.monotonic()
            silent = self.heartbeat.snapshot(now, counters=False).peer_silent
            if not (silent or now < self._armed_until):
                # idle: the core's request (RunSafetyCheck) sets the event at once;
                # this poll is only the backstop for a loop too busy to ask
                self._poke.wait(max(self.interval, SAFETY_IDLE_POLL))
                self._poke.clear()
                continue
            if slots.acquire(timeout=self.interval):
                threading.Thread(
                    target=self._one, args=(slots,), name="dbha-safety", daemon=True
                ).start()
            self._stop.wait(every)

    def _one(self, slots: threading.BoundedSemaphore) -> None:
        try:
            started = time.monotonic()
            result = self.safety.run()
            with self._lock:
                current = self.view
                if current is None or started > current.at:  # the newest start wins
                    self.view = SafetyView(result.verdict, started)
            self._wake.set()
            log.debug("safety check started %.3f: %s", started, result.verdict.value)
            if result.verdict.value != self._last_verdict:
                log.info("safety check: %s (%s)", result.verdict.value, result.reason)
                self._last_verdict = result.verdict.value
        finally:
            slots.release()
