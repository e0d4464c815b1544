"""Keepalived-style check scripts: an executable per check, run on its interval,
bounded by its timeout, turned into passing/failed with fall and rise counts.

The counting is pure (``CheckState``); ``CheckRunner`` runs each check on a
thread of its own so that a slow check never delays another, nor the
supervisor's loop, which only reads the latest states.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from dbha import proc
from dbha.config import CheckConfig
from dbha.errors import CommandFailed, CommandTimeout


@dataclass(frozen=True, slots=True)
class CheckState:
    """Where one check stands. It starts passing: a check must fail ``fall`` times in
    a row before it counts, so a supervisor start never causes a hand-over."""

    name: str
    fall: int
    rise: int
    passing: bool = True
    fails_in_row: int = 0
    oks_in_row: int = 0
    runs: int = 0
    last_ok: bool | None = None
    last_detail: str = ""

    def record(self, ok: bool, detail: str = "") -> CheckState:
        """The state after one more result."""
        fails = 0 if ok else self.fails_in_row + 1
        oks = self.oks_in_row + 1 if ok else 0
        passing = self.passing
        if passing and fails >= self.fall:
            passing = False
        elif not passing and oks >= self.rise:
            passing = True
        return replace(
            self,
            passing=passing,
            fails_in_row=fails,
            oks_in_row=oks,
            runs=self.runs + 1,
            last_ok=ok,
            last_detail=detail,
        )


def run_check(check: CheckConfig) -> tuple[bool, str]:
    """Run one check once: (ok, one line saying why). Never raises."""
    try:
        res = proc.run(
            list(check.argv),
            timeout=check.timeout_ms / 1000,
            check=False,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
    except CommandTimeout:
        return False, f"no answer within {check.timeout_ms} ms"
    except CommandFailed as exc:
        return False, str(exc)
    lines = (res.stdout or res.stderr).strip().splitlines()
    detail = f"exit {res.returncode}" + (f": {lines[-1][:200]}" if lines else "")
    return res.returncode == 0, detail


class CheckRunner:
    """Runs every configured check on its own thread; ``states()`` is always current."""

    def __init__(self, checks: tuple[CheckConfig, ...]) -> None:
        self._checks = checks
        self._states = {c.name: CheckState(c.name, c.fall, c.rise) for c in checks}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Called (from a check's thread) when a check starts or stops passing.
        self.on_change: Callable[[], None] | None = None

    def start(self) -> None:
        for c in self._checks:
            t = threading.Thread(
                target=self._loop, args=(c,), name=f"dbha-check-{c.name}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def states(self) -> tuple[CheckState, ...]:
        with self._lock:
            return tuple(self._states.values())

    def all_passing(self) -> bool:
        return all(s.passing for s in self.states())

    def stop(self, timeout: float = 5.0) -> bool:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _loop(self, check: CheckConfig) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            ok, detail = run_check(check)
            with self._lock:
                before = self._states[check.name]
                self._states[check.name] = after = before.record(ok, detail)
            if after.passing != before.passing and self.on_change is not None:
                self.on_change()
            wait = check.interval_ms / 1000 - (time.monotonic() - started)
            self._stop.wait(max(0.0, wait))
