"""Conditions an operator must act on, though nothing fails over for them: every
heartbeat path silent while the peer's database answers, a dead peer this
replica does not take over from, a promotion the pre_promote hook vetoes.
Logged as warnings (with a hook event) when they start and every ALERT_REPEAT
seconds while they last; shown by ``dbha status``."""

from __future__ import annotations

import logging
from collections.abc import Callable

from dbha.config import Config
from dbha.core.model import Decision, Observation, Verdict
from dbha.core.timing import gist

log = logging.getLogger("dbha")
# The rules of a promotion; one that runs without a veto ends a veto's alert.
PROMOTION_STARTS = frozenset({"failover-promote", "handover-promote", "failover-forced"})

# An alert that stays on is logged again this often (seconds).
ALERT_REPEAT = 30.0
# A pre_promote veto stays an alert this long after the last one (seconds): a
# handover that is vetoed again and again has ticks without a promotion between.
VETO_KEPT = 30.0


class Alerts:
    """The alerts of one supervisor; ``notify(event, detail)`` fires a hook event."""

    def __init__(self, cfg: Config, notify: Callable[[str, str], None]) -> None:
        self.cfg = cfg
        self._notify = notify
        self.active: dict[str, tuple[str, float]] = {}  # name -> (text, last logged)
        self._refusing_since: float | None = None
        self._veto: tuple[str, float] | None = None  # the last veto, and when

    def texts(self) -> dict[str, str]:
        return {name: text for name, (text, _) in self.active.items()}

    def update(self, obs: Observation, d: Decision, started_at: float, vetoed: str = "") -> None:
        """Raise, repeat and clear the alerts after a tick that saw ``obs`` and
        decided ``d`` (the supervisor started at ``started_at``, monotonic);
        ``vetoed``: why the pre_promote hook vetoed its promotion, if it did."""
        now: dict[str, str] = {}
        peer, safety = obs.peer, obs.safety
        settled = obs.now - started_at > 2 * self.cfg.heartbeat.peer_silent_after_ms / 1000
        if (
            settled  # at start the peer is silent until its first beats arrive
            and peer.silent
            and safety is not None
            and safety.verdict is Verdict.PEER_ALIVE_HEARTBEAT_BROKEN
            and (peer.heard_at is None or safety.at > peer.heard_at)
        ):
            now["heartbeats_broken"] = (
                f"every heartbeat path to {self.cfg.peer.name} is silent but its database "
                "answers: the heartbeats are broken, not the peer; no failover will happen "
                "until they work again (check the heartbeat paths, ports and key)"
            )
        # The peer is dead, yet this replica does not promote (its data, maintenance,
        # ...): longer than a failover takes, that needs an operator.
        refusing = (
            d.rule == "failover-blocked"
            and safety is not None
            and safety.verdict is Verdict.PEER_DEAD
        )
        if not refusing:
            self._refusing_since = None
        elif self._refusing_since is None:
            self._refusing_since = obs.now
        elif obs.now - self._refusing_since > 2 * self.cfg.fence.self_fence_deadline_ms / 1000:
            now["failover_refused"] = (
                f"{self.cfg.peer.name} is dead but this node does not take over: "
                f"{gist(d)[1]}. An operator who accepts the loss can force it: "
                f"dbha failover -c {self.cfg.source} --to {self.cfg.node.name} --force"
            )
        if vetoed:
            self._veto = (vetoed, obs.now)
        elif self._veto is not None and (
            obs.now - self._veto[1] > VETO_KEPT or d.rule in PROMOTION_STARTS
        ):
            self._veto = None  # promoting (or long quiet): the veto is over
        if self._veto is not None:
            now["failover_refused"] = (
                f"this node does not take over from {self.cfg.peer.name}: {self._veto[0]}; "
                "the hook is asked again every few seconds"
            )
        for name, text in now.items():
            seen = self.active.get(name)
            if seen is None:
                self._notify(name, text)  # logged as a warning
                self.active[name] = (text, obs.now)
            elif obs.now - seen[1] >= ALERT_REPEAT:
                log.warning("still %s: %s", name, text)
                self.active[name] = (text, obs.now)
        for name in [n for n in self.active if n not in now]:
            del self.active[name]
            if name == "heartbeats_broken":
                self._notify("heartbeats_restored", f"{self.cfg.peer.name} is heard again")
