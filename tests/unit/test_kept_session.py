"""The kept-session protocol both probe links share (dbha.db.kept), on a toy engine.

The engines' own parts (connect, bound, close) are tested against real servers
in tests/lab/test_probe_session.py; here only the protocol: reuse, no reuse after
an error, one reconnect for a reused session that is gone, close at any time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from dbha.db.base import DbError, DbTimeout, DbUnreachable
from dbha.db.kept import RECONNECT_MIN, KeptSession


@dataclass
class Budget:
    left: float = 5.0

    def remaining(self) -> float:
        return self.left


@dataclass
class Toy:
    n: int
    open: bool = True


@dataclass
class Link(KeptSession[Toy, Budget]):
    opened: list[Toy] = field(default_factory=list)
    discarded: list[int] = field(default_factory=list)
    detached: int = 0
    fail_open: type[DbError] | None = None

    def __post_init__(self) -> None:
        super().__init__()

    def run(self, budget: Budget, observe: Callable[[Toy], int]) -> int:
        return self._run(budget, "probe", observe)

    def _open(self, deadline: Budget, what: str) -> Toy:
        if self.fail_open is not None:
            raise self.fail_open(f"{what}: refused")
        toy = Toy(len(self.opened) + 1)
        self.opened.append(toy)
        return toy

    def _use(self, s: Toy, deadline: Budget, observe: Callable[[Toy], int]) -> tuple[int, bool]:
        try:
            out = observe(s)
        except BaseException:
            self._discard(s)
            raise
        return out, s.open

    def _discard(self, s: Toy) -> None:
        s.open = False
        self.discarded.append(s.n)

    def _detach(self) -> Callable[[], None] | None:
        def release() -> None:
            self.detached += 1

        return release


def test_one_session_serves_every_use() -> None:
    link = Link()
    assert [link.run(Budget(), lambda s: s.n) for _ in range(3)] == [1, 1, 1]
    assert len(link.opened) == 1 and link.discarded == []


def test_after_an_error_nothing_is_kept() -> None:
    link = Link()

    def boom(s: Toy) -> int:
        raise DbError("syntax")

    with pytest.raises(DbError, match="syntax"):
        link.run(Budget(), boom)
    assert link.discarded == [1]
    assert link.run(Budget(), lambda s: s.n) == 2


def test_a_session_the_engine_will_not_keep_is_closed() -> None:
    link = Link()

    def drop(s: Toy) -> int:
        s.open = False  # e.g. the watchdog cut it, or the server ended it
        return 7

    assert link.run(Budget(), drop) == 7
    assert link.discarded == [1]
    assert link.run(Budget(), lambda s: s.n) == 2


def test_a_reused_session_that_is_gone_is_replaced_once_within_the_use() -> None:
    link = Link()
    link.run(Budget(), lambda s: s.n)
    calls: list[int] = []

    def gone_once(s: Toy) -> int:
        calls.append(s.n)
        if s.n == 1:
            raise DbUnreachable("server restarted")
        return s.n

    assert link.run(Budget(), gone_once) == 2
    assert calls == [1, 2]

    def always_gone(s: Toy) -> int:
        calls.append(s.n)
        raise DbUnreachable("down")

    calls.clear()
    with pytest.raises(DbUnreachable):
        link.run(Budget(), always_gone)
    assert calls == [2, 3]  # the kept one, then one fresh one: no loop


def test_a_fresh_session_that_fails_is_not_retried() -> None:
    link = Link()
    calls: list[int] = []

    def gone(s: Toy) -> int:
        calls.append(s.n)
        raise DbUnreachable("down")

    with pytest.raises(DbUnreachable):
        link.run(Budget(), gone)
    assert calls == [1]


def test_no_reconnect_when_too_little_of_the_budget_is_left() -> None:
    link = Link()
    link.run(Budget(), lambda s: s.n)

    def gone(s: Toy) -> int:
        raise DbUnreachable("down")

    with pytest.raises(DbUnreachable):
        link.run(Budget(left=RECONNECT_MIN / 2), gone)
    assert len(link.opened) == 1


def test_close_during_a_use_keeps_nothing_and_close_is_idempotent() -> None:
    link = Link()
    link.run(Budget(), lambda s: s.n)

    def closing(s: Toy) -> int:
        link.close()  # from another thread in life; here the lock is held, as then
        return s.n

    assert link.run(Budget(), closing) == 1
    assert link.discarded == [1] and link.detached == 0  # the use ended it, not close()
    link.run(Budget(), lambda s: s.n)
    link.close()
    link.close()
    assert link.discarded == [1, 2] and link.detached == 2
    assert link.run(Budget(), lambda s: s.n) == 3


def test_a_use_waits_for_the_lock_only_within_its_budget() -> None:
    link = Link()
    inside, release = threading.Event(), threading.Event()

    def hold(s: Toy) -> int:
        inside.set()
        release.wait(5)
        return s.n

    t = threading.Thread(target=link.run, args=(Budget(), hold))
    t.start()
    try:
        assert inside.wait(5)
        with pytest.raises(DbTimeout, match="probe: another probe still holds the session"):
            link.run(Budget(left=0.05), lambda s: s.n)
    finally:
        release.set()
        t.join(5)


def test_an_open_that_fails_raises_and_keeps_nothing() -> None:
    link = Link(fail_open=DbUnreachable)
    with pytest.raises(DbUnreachable, match="probe: refused"):
        link.run(Budget(), lambda s: s.n)
    link.fail_open = None
    assert link.run(Budget(), lambda s: s.n) == 1
