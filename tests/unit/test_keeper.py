"""The lease keeper's rules, with the watchdog device behind a fake (pure logic).

This machine has no watchdog device: the device's three operations are the
:class:`~dbha.node.keeper.WatchdogDevice` interface, faked here; the keeper's rules
(when to fence, when to pet, when to stop petting, when to disarm) are driven
with a hand-moved clock. The I/O loop is run on a real pipe.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Callable

import pytest

from dbha.core.params import LEASE_FRACTION
from dbha.node.keeper import (
    IDLE_WAIT,
    PETS_PER_TIMEOUT,
    FenceOutcome,
    Keeper,
    Watchdog,
    WatchdogError,
    _loop,
    watchdog_timeout,
)


class FakeDevice:
    """Records what the keeper did to the device; ``takes`` is the timeout it
    accepts (a real driver may round what it is asked for)."""

    def __init__(self, takes: int | None = None, fail_pet: bool = False) -> None:
        self.takes, self.fail_pet = takes, fail_pet
        self.asked: list[int] = []
        self.pets: list[float] = []
        self.closed: bool | None = None  # None: open; else whether it was disarmed
        self.clock = 0.0

    def set_timeout(self, seconds: int) -> int:
        self.asked.append(seconds)
        return self.takes if self.takes is not None else seconds

    def keepalive(self) -> None:
        if self.fail_pet:
            raise WatchdogError("EIO")
        self.pets.append(self.clock)

    def close(self, disarm: bool) -> None:
        self.closed = disarm


class Rig:
    """A keeper with a fake device, a fake fence and a hand-moved clock."""

    def __init__(
        self,
        fence_fails: bool = False,
        fence_takes: float = 0.0,
        device: FakeDevice | None = None,
        stop_takes: float = 0.0,
        stop_fails: bool = False,
    ) -> None:
        self.now = 100.0
        self.device = device or FakeDevice()
        self.fences: list[float] = []
        self.reports: list[str] = []
        self.fence_fails, self.fence_takes = fence_fails, fence_takes
        self.stop_takes, self.stop_fails = stop_takes, stop_fails
        self.keeper = Keeper(
            self._fence, Watchdog(self.device, 1), self.reports.append, clock=lambda: self.now
        )

    def _fence(self, tend: Callable[[], None]) -> FenceOutcome:
        """As fence_now: the read-only step (``fence_takes``; fails with
        ``fence_fails``), then the stop (``stop_takes``, ``tend`` called every 0.1 s
        meanwhile when the read-only step confirmed; fails with ``stop_fails``, and
        with ``fence_fails``)."""
        self.fences.append(self.now)
        self.now += self.fence_takes
        self.device.clock = self.now
        end = self.now + self.stop_takes
        while self.now < end:
            self.now = self.device.clock = min(end, self.now + 0.1)
            if not self.fence_fails:
                tend()
        failed = []
        if self.fence_fails:
            failed.append("read-only: no answer")
        if self.fence_fails or self.stop_fails:
            failed.append("stop: no answer")
        return FenceOutcome(tuple(failed), writable=self.fence_fails)

    def step(self, to: float) -> float:
        self.now = self.device.clock = to
        return self.keeper.step(to)

    def run(self, until: float) -> None:
        """Step as the I/O loop would: wake when the keeper says, until ``until``."""
        while self.now < until:
            wait = self.step(self.now)
            self.now = self.device.clock = min(until, self.now + max(wait, 1e-3))


@pytest.mark.parametrize(
    ("deadline_s", "expected"),
    [(0.1, 1), (1.0, 1), (6.0, 1), (1 / (1 - LEASE_FRACTION) + 0.01, 1), (20.0, 3), (600.0, 90)],
)
def test_watchdog_timeout_is_the_lease_margin_in_whole_seconds(
    deadline_s: float, expected: int
) -> None:
    """The share of the deadline a lease leaves before the peer may promote, rounded
    down (the reset must not come later than it where the device can count that
    fast), never under the device's 1 s."""
    assert watchdog_timeout(deadline_s) == expected
    assert watchdog_timeout(deadline_s) <= max(1.0, (1 - LEASE_FRACTION) * deadline_s)


def test_device_timeout_is_what_the_device_took() -> None:
    dev = FakeDevice(takes=2)
    dog = Watchdog(dev, 1)
    assert dev.asked == [1] and dog.timeout == 2 and dog.every == 2 / PETS_PER_TIMEOUT
    with pytest.raises(WatchdogError):
        Watchdog(FakeDevice(takes=0), 1)


def test_no_lease_pets_steadily_and_waits_bounded() -> None:
    """Not primary: pets at least every timeout/4 and never waits past IDLE_WAIT."""
    rig = Rig()
    rig.run(110.0)
    gaps = [b - a for a, b in itertools.pairwise(rig.device.pets)]
    assert len(rig.device.pets) >= 10 * PETS_PER_TIMEOUT - 1
    assert max(gaps) <= 1 / PETS_PER_TIMEOUT + 1e-9
    assert rig.fences == [] and rig.step(rig.now) <= IDLE_WAIT


def test_a_renewed_lease_keeps_the_pets_coming_and_fences_nothing() -> None:
    rig = Rig()
    for _ in range(50):  # renewed every 0.1 s, 0.85 s ahead
        rig.keeper.line(f"LEASE {rig.now + 0.85:.6f}".encode())
        rig.run(rig.now + 0.1)
    assert rig.fences == [] and rig.keeper.expirations == 0
    assert len(rig.device.pets) >= 5 * PETS_PER_TIMEOUT - 1


def test_the_keeper_wakes_at_the_end_of_the_lease() -> None:
    rig = Rig()
    rig.step(100.0)  # first pet
    rig.keeper.line(b"LEASE 100.2")
    assert rig.step(100.05) == pytest.approx(0.15)  # the lease ends before the next pet


def test_expired_lease_with_a_confirmed_fence_keeps_petting() -> None:
    rig = Rig()
    rig.keeper.line(b"LEASE 100.5")
    rig.run(103.0)
    assert rig.fences == [100.5] and rig.keeper.expirations == 1
    assert rig.reports and rig.reports[0].startswith("EXPIRED lease ended 0 ms ago")
    assert not rig.keeper.watchdog.stopped  # type: ignore[union-attr]
    assert rig.device.pets[-1] > 102.0
    rig.keeper.close(disarm=True)
    assert rig.device.closed is True  # magic close


def test_expired_lease_with_a_failed_fence_stops_petting_for_good() -> None:
    """The fence did not confirm: no pet after the lease's end, ever (the device
    resets the host), not even after a new lease or NONE, and no magic close."""
    rig = Rig(fence_fails=True)
    rig.keeper.line(b"LEASE 100.5")
    rig.run(101.0)
    assert rig.fences == [100.5]
    assert rig.device.pets and max(rig.device.pets) <= 100.5
    assert "the host resets within 1 s" in rig.reports[0]
    rig.keeper.line(b"NONE")
    rig.keeper.line(f"LEASE {rig.now + 10}".encode())
    rig.run(105.0)
    assert max(rig.device.pets) <= 100.5
    rig.keeper.close(disarm=True)
    assert rig.device.closed is False


def test_no_pet_between_the_end_of_a_lease_and_a_confirmed_fence() -> None:
    """The fence takes 0.3 s: the last pet before it is at or before the lease's
    end, and the next one comes once the fence confirmed."""
    rig = Rig(fence_takes=0.3)
    rig.keeper.line(b"LEASE 100.6")
    rig.run(102.0)
    before = [t for t in rig.device.pets if t < 100.75]  # none while the fence runs
    after = [t for t in rig.device.pets if t >= 100.75]
    assert before and max(before) <= 100.6 and after and min(after) == pytest.approx(100.9)


def test_a_stop_slower_than_the_device_keeps_the_pets_coming_once_read_only() -> None:
    """The read-only step confirms at once; the clean stop that follows takes 3 s,
    three times the device's timeout. Nothing can be written meanwhile, so the
    keeper goes on petting while it waits (no reset of a fenced host)."""
    rig = Rig(stop_takes=3.0)
    rig.keeper.line(b"LEASE 100.5")
    rig.run(105.0)
    assert rig.fences == [100.5] and not rig.keeper.watchdog.stopped  # type: ignore[union-attr]
    during = sorted(t for t in rig.device.pets if 100.5 < t <= 103.5)
    gaps = [b - a for a, b in itertools.pairwise([100.5, *during, 103.5])]
    assert during and max(gaps) < 1.0, rig.device.pets


def test_a_failed_stop_after_a_confirmed_read_only_step_does_not_reset_the_host() -> None:
    """Read-only confirmed, then the stop fails: the host accepts no writes, the
    report says so, and the watchdog goes on being petted (and may be disarmed)."""
    rig = Rig(stop_fails=True)
    rig.keeper.line(b"LEASE 100.5")
    rig.run(102.0)
    assert "with failures: stop: no answer" in rig.reports[0]
    assert "accepts no writes" in rig.reports[0] and "resets" not in rig.reports[0]
    assert not rig.keeper.watchdog.stopped  # type: ignore[union-attr]
    assert max(rig.device.pets) > 101.5
    rig.keeper.close(disarm=True)
    assert rig.device.closed is True


def test_a_pet_that_fails_stops_petting_and_keeps_the_device_armed() -> None:
    rig = Rig(device=FakeDevice(fail_pet=True))
    rig.step(100.0)
    assert rig.keeper.watchdog is not None and rig.keeper.watchdog.stopped
    assert rig.reports and rig.reports[0].startswith("WATCHDOG")
    rig.keeper.close(disarm=True)
    assert rig.device.closed is False


def test_a_broken_keeper_does_not_disarm() -> None:
    rig = Rig()
    rig.keeper.close(disarm=False)
    assert rig.device.closed is False


@pytest.mark.parametrize(
    "line", [b"LEASE nan", b"LEASE inf", b"LEASE -inf", b"LEASE soon", b"LEASE", b"hello"]
)
def test_bad_lines_change_nothing(line: bytes) -> None:
    rig = Rig()
    rig.keeper.line(b"LEASE 200.0")
    assert rig.keeper.line(line) is True
    assert rig.keeper.lease == 200.0


def test_quit_and_none() -> None:
    rig = Rig()
    rig.keeper.line(b"LEASE 200.0")
    assert rig.keeper.line(b"NONE") is True and rig.keeper.lease is None
    assert rig.keeper.line(b"QUIT") is False


# ------------------------------------------------------------------ I/O loop


def _keeper_on_pipe(fence_calls: list[int]) -> tuple[Keeper, int, int]:
    r, w = os.pipe()

    def fence(_tend: Callable[[], None]) -> FenceOutcome:
        fence_calls.append(1)
        return FenceOutcome()

    return Keeper(fence, None, lambda _text: None), r, w


def test_loop_returns_0_on_quit() -> None:
    calls: list[int] = []
    keeper, r, w = _keeper_on_pipe(calls)
    try:
        os.write(w, b"LEASE 1e12\nQUIT\n")
        assert _loop(keeper, r) == 0
        assert calls == []
    finally:
        os.close(r)
        os.close(w)


def test_loop_enforces_the_lease_after_the_supervisor_is_gone() -> None:
    """End of input with a lease running: the keeper fences when it ends, then
    exits 1; with no lease running it exits 0 at once."""
    import time

    calls: list[int] = []
    keeper, r, w = _keeper_on_pipe(calls)
    os.write(w, f"LEASE {time.monotonic() + 0.05:.6f}\n".encode())
    os.close(w)
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(_loop(keeper, r)))
    t.start()
    t.join(10.0)
    os.close(r)
    assert result == [1] and calls == [1]

    keeper, r, w = _keeper_on_pipe(calls := [])
    os.write(w, b"NONE\n")
    os.close(w)
    assert _loop(keeper, r) == 0 and calls == []
    os.close(r)


def test_renewals_that_came_while_the_keeper_slept_are_read_before_judging() -> None:
    """The keeper sleeps through a running lease; a renewal written meanwhile is
    read when it wakes, before it judges the lease: no fence."""
    import time

    calls: list[int] = []
    keeper, r, w = _keeper_on_pipe(calls)
    os.write(w, f"LEASE {time.monotonic() + 1.0:.6f}\n".encode())

    def supervisor() -> None:
        time.sleep(0.2)
        os.write(w, f"LEASE {time.monotonic() + 60:.6f}\n".encode())
        time.sleep(1.5)
        os.write(w, b"QUIT\n")

    t = threading.Thread(target=supervisor)
    t.start()
    try:
        assert _loop(keeper, r) == 0
        assert calls == [] and keeper.expirations == 0
    finally:
        t.join(10.0)
        os.close(r)
        os.close(w)


def test_waits_are_finite() -> None:
    rig = Rig()
    rig.keeper.line(b"LEASE 1e300")
    assert 0 <= rig.step(100.0) <= IDLE_WAIT and not math.isinf(rig.step(100.1))
