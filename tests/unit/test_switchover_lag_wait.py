"""``dbha switchover`` asks again while refused for the lag bound alone
(dbha.node.switchover.ask_within_bound), bounded by ``--lag-wait``."""

from __future__ import annotations

from dbha.core.decide.requests import LAG_REFUSAL
from dbha.node import switchover as so

LAGGING = {"ok": False, "error": f"refused: b is 124 {LAG_REFUSAL} 100: --force"}
MAINTENANCE = {"ok": False, "error": "refused: maintenance is on (a): turn it off first"}
PASSES = {"ok": True, "answer": "switchover possible: a hands over to b (3 behind, bound 100)"}


class Clock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def _script(*answers: so.Answer) -> tuple[list[int], object]:
    calls = [0]

    def ask() -> so.Answer:
        calls[0] += 1
        return answers[min(calls[0], len(answers)) - 1]

    return calls, ask


def test_a_replica_back_within_the_bound_passes_and_the_wait_is_said() -> None:
    clock = Clock()
    calls, ask = _script(LAGGING, LAGGING, PASSES)
    got = so.ask_within_bound(ask, 10.0, clock.now, clock.sleep)  # type: ignore[arg-type]
    assert got.got == PASSES and calls[0] == 3
    assert got.waited == 2 * so.LAG_RETRY_EVERY
    note = so._lag_note(got, 10.0)
    assert note is not None and note.startswith("within the lag bound after 1.0 s")
    assert "b is 124 behind, more than the bound 100" in note


def test_a_replica_past_the_bound_for_the_whole_wait_is_refused_in_bounded_time() -> None:
    clock = Clock()
    calls, ask = _script(LAGGING)
    got = so.ask_within_bound(ask, 10.0, clock.now, clock.sleep)  # type: ignore[arg-type]
    assert so.lag_refused(got.got)
    assert clock.t <= 10.0 and calls[0] == 1 + int(10.0 / so.LAG_RETRY_EVERY)
    assert so._lag_note(got, 10.0) == "still past the lag bound after 10.0 s (--lag-wait 10)"


def test_other_refusals_and_no_wait_ask_once() -> None:
    for answers, wait in (((MAINTENANCE, PASSES), 10.0), ((LAGGING, PASSES), 0.0)):
        clock = Clock()
        calls, ask = _script(*answers)
        got = so.ask_within_bound(ask, wait, clock.now, clock.sleep)  # type: ignore[arg-type]
        assert got.got == answers[0] and calls[0] == 1 and clock.t == 0.0
    clock = Clock()
    calls, ask = _script("no answer within 15 s", PASSES)
    got = so.ask_within_bound(ask, 10.0, clock.now, clock.sleep)  # type: ignore[arg-type]
    assert got.got == "no answer within 15 s" and calls[0] == 1
    assert so._lag_note(got, 10.0) is None
