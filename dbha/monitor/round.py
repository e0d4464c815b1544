"""One supervision round of ``dbha check``, for cron or a monitoring system.

:func:`dbha.monitor.command.check` first asks this node's supervisor (its
control socket). If one runs, it only reports what that supervisor sees: the
running supervisor acts, never the check. If none runs (cron mode),
:func:`run_round` runs ONE bounded round in this process over the node's parts
(:class:`dbha.node.parts.NodeParts`, the same ones ``dbha run`` builds): it
sends and hears heartbeats for a listening window, probes the database three
times, runs the check scripts once, runs the safety check when the peer is
silent, calls :func:`dbha.core.decide.decide` once, and carries out
the actions with the executor (unless ``act`` is False: ``--report-only``
changes nothing, writes no file). Both ways end in the same Nagios mapping
(:mod:`dbha.monitor.nagios`).

Cron mode's safety rests on two things (docs/operations.md says more):

- the decision uses :func:`dbha.monitor.memory.cron_params`, whose self-fence
  deadline covers the cron period plus a whole round: a replica promotes only
  after the primary has been silent for that long, by which time a primary
  that was cut off has run a round of its own and fenced itself;
- no lease keeper runs: the decision's lease is not handed to anyone and does
  not outlive the round. Between rounds, nothing fences.

Errors never escape :func:`run_round`: whatever goes wrong is a CRITICAL
result that says what.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from dbha.beat import announce as adapt
from dbha.beat.service import HeartbeatSnapshot
from dbha.config import Config
from dbha.core.decide import announce, decide
from dbha.core.model import (
    Announce,
    DbStatus,
    Decision,
    NodeState,
    Observation,
    PeerView,
    Role,
    SafetyView,
)
from dbha.errors import DbhaError
from dbha.monitor import memory as cronstate
from dbha.monitor.nagios import Limits, View, assess
from dbha.monitor.result import CheckResult, failed, result
from dbha.monitor.views import acting, view_from_round
from dbha.node import observe, statefile
from dbha.node.checkscripts import CheckState, run_check
from dbha.node.executor import Outcome
from dbha.node.parts import NodeParts

if TYPE_CHECKING:
    from dbha.host.safety import SafetyResult

log = logging.getLogger("dbha.check")


def run_round(cfg: Config, act: bool) -> CheckResult:
    """One cron round (see the module docstring). Never raises."""
    started = time.monotonic()
    try:
        parts = NodeParts(cfg)
    except (DbhaError, OSError, ValueError) as exc:
        return failed(f"{cfg.service.id} on {cfg.node.name}: cannot set up a round: {exc}")
    rnd = _Round(cfg, parts, act, started)
    try:
        return rnd.run()
    except DbhaError as exc:  # every part maps its failures to ours
        return failed(f"{cfg.service.id} on {cfg.node.name}: round failed: {exc}", mode="round")
    finally:
        rnd.close()


# ------------------------------------------------------------------- round


def _state_doc(s: NodeState) -> dict[str, Any]:
    return {
        "role": s.role.value,
        "epoch": s.epoch,
        "needs_resync": s.needs_resync,
        "maintenance": s.maintenance,
    }


def _db_doc(st: DbStatus) -> dict[str, Any]:
    return {
        "reachable": st.reachable,
        "role": st.role.value,
        "writable": st.writable,
        "position": adapt.position_text(st.position),
        "lag_bytes": st.lag_bytes,
        "lag_transactions": st.lag_transactions,
        "lag_seconds": st.lag_seconds,
        "streaming": st.streaming,
        "error": st.error,
    }


class _Round:
    def __init__(self, cfg: Config, parts: NodeParts, act: bool, started: float) -> None:
        self.cfg, self.parts, self.act, self.started = cfg, parts, act, started
        # What the round's events say of this node: the state it decided from.
        self.state = NodeState()
        self.executor = parts.executor(
            save_state=lambda st: statefile.save(cfg.service.state_dir, st),
            notify=lambda event, detail: parts.notify(self.state, event, detail),
            start_safety_check=lambda: None,  # the round runs its safety check itself
        )
        self.interval = cfg.heartbeat.interval_ms / 1000
        self.probe_timeout = cfg.database.statement_timeout_ms / 1000
        # A probe returns within its connect and statement timeouts (the driver's
        # contract), plus a little for cleanup.
        self.probe_bound = (
            cfg.database.connect_timeout_ms + cfg.database.statement_timeout_ms
        ) / 1000 + 1.0
        self.probes: list[DbStatus] = []
        self.errors: list[str] = []
        self.listened = 0.0
        self._hb_started = False

    # -- parts

    def close(self) -> None:
        if self._hb_started:
            self.parts.heartbeat.stop()
        self.parts.hooks.stop(self.cfg.hooks.timeout_ms / 1000)
        with contextlib.suppress(DbhaError):
            self.parts.vip.close()

    def _probe(self) -> DbStatus:
        st = self.parts.driver.probe(self.probe_timeout)
        self.probes.append(st)
        return st

    def _vip_held(self) -> bool:
        try:
            return self.parts.vip.holds_vip()
        except DbhaError as exc:
            self.errors.append(f"cannot read the VIP: {exc}")
            return False

    def say(self, state: NodeState, local: DbStatus) -> None:
        obs = Observation(now=time.monotonic(), local=local, peer=PeerView())
        self.parts.heartbeat.set_status(adapt.local_status(announce(state, obs)))

    # -- the round

    def run(self) -> CheckResult:
        cfg, parts = self.cfg, self.parts
        boot = statefile.boot_id()
        mem = cronstate.load(cfg.service.state_dir, boot)
        loaded = statefile.load(cfg.service.state_dir)
        # The database is probed on its own thread (now and halfway through the
        # listening), so that a hung server does not keep this round from beating.
        prober = _Prober(self)
        if loaded is None:  # a first round: what this node is depends on the probe
            prober.first.wait(2 * self.probe_bound)
        first = prober.latest()
        persisted = loaded or statefile.initial(
            first is not None and first.role is Role.PRIMARY and first.writable
        )
        state = cronstate.continuing(persisted, mem, self.started, False)
        self.state = state
        prober.say_as(state)
        try:
            parts.heartbeat.start()
        except DbhaError as exc:
            return failed(
                f"{cfg.service.id} on {cfg.node.name}: cannot send heartbeats ({exc}); "
                "is a supervisor or another round running?",
                mode="round",
            )
        self._hb_started = True
        if self.act:
            parts.hooks.start()
        checks = self._start_checks()
        self._listen(prober)
        # The round judges the peer as it stood when the listening ended (it may end
        # its own round while a slow probe here still runs); a silent peer is judged
        # after the safety check, from a fresh look.
        snap = parts.heartbeat.snapshot()
        earlier = prober.done(2 * self.probe_bound)
        local = self._probe()
        self.say(state, local)
        fails = mem.db_fails
        for p in earlier:  # decide() counts the last probe itself
            fails = 0 if p.reachable else fails + 1
        state = replace(state, db_fails=fails)
        results = checks()
        check_states = cronstate.checks_after(cfg.checks, mem, results)
        safety_result: SafetyResult | None = None
        safety = None
        if snap.peer_silent:
            at = time.monotonic()
            safety_result = parts.safety.run()
            safety = SafetyView(safety_result.verdict, at)
            snap = parts.heartbeat.snapshot()
        peer = self._peer(snap, mem)
        # The fence timer of cron mode is the next round, which the raised deadline
        # of cron_params() waits for: keeper_ok says the deadline is enforced. The
        # lag is judged against the newest position the peer ever announced (a
        # primary whose database died announces none).
        obs = observe.observation(
            snap.at,
            local,
            peer,
            newest=None if mem.peer is None else mem.peer.announce,
            vip_held=self._vip_held(),
            safety=safety,
            checks_ok=all(c.passing for c in check_states),
            keeper_ok=True,
            covers=parts.driver.covers,
            wall=time.time(),
        )
        d = decide(state, obs, cronstate.cron_params(cfg))
        if (
            snap.last_beat is not None
            and mem.peer is not None
            and snap.last_beat.boot_id == mem.peer.boot
        ):
            self.errors.append(
                f"{cfg.peer.name} runs a long-lived supervisor while this node runs cron "
                "rounds: run the same mode on both nodes"
            )
        final: NodeState = state
        outcome: Outcome | None = None
        after_local: DbStatus | None = None
        after_vip: bool | None = None
        if self.act:
            final, outcome = self._act(d, state, loaded)
            if acting(d):
                after_local, after_vip = self._probe(), self._vip_held()
            self.say(final, after_local or local)
            self._remember(mem, final, d, snap, peer, check_states)
        paths = tuple((p.name, p.up) for p in snap.paths)
        view = view_from_round(
            cfg,
            final,
            obs,
            d,
            paths=paths,
            local=after_local,
            vip_held=after_vip,
            checks_failing=tuple(c.name for c in check_states if not c.passing),
            errors=tuple(self.errors),
        )
        return self._report(view, state, final, obs, d, outcome, safety_result, mem)

    def _start_checks(self) -> Callable[[], dict[str, tuple[bool, str]]]:
        """Run every check script once, each on its own thread (bounded by its own
        timeout); the returned function collects the results."""
        results: dict[str, tuple[bool, str]] = {}
        threads = []
        for c in self.cfg.checks:

            def work(c: Any = c) -> None:
                results[c.name] = run_check(c)

            t = threading.Thread(target=work, name=f"dbha-check-{c.name}", daemon=True)
            t.start()
            threads.append((t, c.timeout_ms / 1000))

        def collect() -> dict[str, tuple[bool, str]]:
            for t, timeout in threads:
                t.join(timeout + 1.0)
            return dict(results)

        return collect

    def _listen(self, prober: _Prober) -> None:
        """Beat and listen: until every path is up and the peer echoes us (then a
        little longer, so that the peer's round hears us too), or the window passes
        with nothing heard, or twice the window with the peer only partly heard."""
        hb = self.parts.heartbeat
        window = cronstate.listen_window(self.cfg)
        t0 = time.monotonic()
        prober.again_at(t0 + window / 2)
        hard_end = t0 + 2 * window
        linger = (self.cfg.heartbeat.rise + 1) * self.interval
        settled: float | None = None
        while True:
            now = time.monotonic()
            snap = hb.snapshot(now)
            if snap.paths and all(p.up for p in snap.paths) and snap.echo_sent_at is not None:
                settled = now if settled is None else settled
                if now - settled >= linger:
                    break
            else:
                settled = None
            if (now >= t0 + window and snap.last_beat is None) or now >= hard_end:
                break
            time.sleep(max(0.0, min(self.interval / 2, hard_end - time.monotonic())))
        self.listened = time.monotonic() - t0

    def _peer(self, snap: HeartbeatSnapshot, mem: cronstate.Memory) -> PeerView:
        """What the core sees of the peer: this round's beats, or, if it heard none,
        the peer's last beat from an earlier round (when it was heard, what it said)."""
        if snap.last_beat is not None or mem.peer is None:
            return adapt.peer_view(snap)
        return PeerView(paths_up=0, last=mem.peer.announce, heard_at=mem.peer.heard_at)

    def _act(
        self, d: Decision, state: NodeState, loaded: NodeState | None
    ) -> tuple[NodeState, Outcome]:
        """Run the actions; persist the next state when they all succeeded and a
        persisted field changed (or no state file existed yet). When one failed, the
        state is what a PersistState before it made permanent, else unchanged."""
        out = self.executor.run(d.actions)
        if not out.ok:
            self.errors.append(f"{type(out.failed).__name__} failed: {out.error}")
            return (out.persisted if out.persisted is not None else state), out
        final = d.next_state
        if loaded is None or not final.same_persisted(loaded):
            try:
                statefile.save(self.cfg.service.state_dir, final.persisted())
            except DbhaError as exc:
                self.errors.append(str(exc))
        return final, out

    def _remember(
        self,
        mem: cronstate.Memory,
        final: NodeState,
        d: Decision,
        snap: HeartbeatSnapshot,
        peer: PeerView,
        check_states: tuple[CheckState, ...],
    ) -> None:
        pmem = mem.peer
        beat = snap.last_beat
        if beat is not None and peer.last is not None and peer.heard_at is not None:
            last: Announce = peer.last
            if last.position is None and pmem is not None:
                last = last._replace(position=pmem.announce.position)
            heard_wall = time.time() - (time.monotonic() - peer.heard_at)
            pmem = cronstate.PeerMemory(peer.heard_at, heard_wall, beat.boot_id, last)
        new = cronstate.Memory(
            boot_id=mem.boot_id,
            role=final.role.value,
            role_since=final.since,
            db_fails=d.next_state.db_fails,
            dead_since=d.next_state.dead_since,
            peer=pmem,
            checks=check_states,
        )
        try:
            cronstate.save(self.cfg.service.state_dir, new)
        except DbhaError as exc:
            self.errors.append(str(exc))

    def _report(
        self,
        view: View,
        before: NodeState,
        final: NodeState,
        obs: Observation,
        d: Decision,
        outcome: Outcome | None,
        safety_result: SafetyResult | None,
        mem: cronstate.Memory,
    ) -> CheckResult:
        a = assess(view, Limits.of(self.cfg))
        summary = a.summary
        if acting(d):
            verb = "did" if self.act and outcome is not None and outcome.ok else "would"
            if self.act and outcome is not None and not outcome.ok:
                verb = "tried"
            summary += f" [{d.rule}: {verb} {', '.join(acting(d))}]"
        heard = obs.peer.heard_at
        doc: dict[str, Any] = {
            "mode": "round",
            "service": self.cfg.service.id,
            "node": self.cfg.node.name,
            "acted": self.act,
            "state_before": _state_doc(before),
            "state": _state_doc(final),
            "observation": {
                "database": _db_doc(obs.local),
                "probes_failed": sum(1 for p in self.probes if not p.reachable),
                "vip_held": obs.vip_held,
                "paths": dict(view.paths),
                "peer": {
                    "silent": obs.peer.silent,
                    "heard_s_ago": None if heard is None else round(obs.now - heard, 3),
                    "last": None if obs.peer.last is None else _announce_doc(obs.peer.last),
                },
                "safety": None if safety_result is None else safety_result.as_dict(),
                "checks_failing": list(view.checks_failing),
                "lag_units": obs.lag_units,
            },
            "decision": {
                "rule": d.rule,
                "reason": d.reason,
                "actions": [type(x).__name__ for x in d.actions],
            },
            "outcome": None
            if outcome is None
            else {
                "ok": outcome.ok,
                "done": outcome.done,
                "failed": None if outcome.failed is None else type(outcome.failed).__name__,
                "error": outcome.error or None,
            },
            "cron_deadline_s": cronstate.cron_deadline_ms(self.cfg) / 1000,
            "listened_s": round(self.listened, 3),
            "duration_s": round(time.monotonic() - self.started, 3),
        }
        if mem.note:
            doc["memory_note"] = mem.note
        return result(replace(a, summary=summary[:1000]), **doc)


class _Prober:
    """Probes the local database on a thread of its own: once at once, once more at
    a time the round sets (halfway through its listening, or when the listening
    ends, whichever comes first). Each result is announced in the beats, as
    ``state`` says, once the round has set it."""

    def __init__(self, rnd: _Round) -> None:
        self._rnd = rnd
        self._lock = threading.Lock()
        self._results: list[DbStatus] = []
        self._state: NodeState | None = None
        self._second_at: float | None = None
        self._told = threading.Event()
        self._hurry = threading.Event()
        self.first = threading.Event()
        self._thread = threading.Thread(target=self._work, name="dbha-check-probe", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        self._one()
        self.first.set()
        self._told.wait(2 * cronstate.listen_window(self._rnd.cfg))
        with self._lock:
            at = self._second_at
        if at is not None:
            self._hurry.wait(max(0.0, at - time.monotonic()))
        self._one()

    def _one(self) -> None:
        st = self._rnd.parts.driver.probe(self._rnd.probe_timeout)
        with self._lock:
            self._results.append(st)
            state = self._state
        if state is not None:
            self._rnd.say(state, st)

    def latest(self) -> DbStatus | None:
        with self._lock:
            return self._results[-1] if self._results else None

    def say_as(self, state: NodeState) -> None:
        """Announce ``state`` with the newest probe (an unknown database until one)."""
        with self._lock:
            self._state = state
            latest = self._results[-1] if self._results else None
        self._rnd.say(state, latest or DbStatus.unreachable("not probed yet"))

    def again_at(self, at: float) -> None:
        with self._lock:
            self._second_at = at
        self._told.set()

    def done(self, timeout: float) -> list[DbStatus]:
        """Both probes' results, in order (a probe that did not end in time counts as
        a failed one). A second probe still waiting for its time runs now."""
        self._told.set()
        self._hurry.set()
        self._thread.join(timeout)
        with self._lock:
            got = list(self._results)
        self._rnd.probes.extend(got)
        missing = [DbStatus.unreachable("probe did not end in time")] * (2 - len(got))
        return got + missing


def _announce_doc(a: Announce) -> dict[str, Any]:
    return {
        "role": a.role.value,
        "epoch": a.epoch,
        "db_reachable": a.db_reachable,
        "db_writable": a.db_writable,
        "position": adapt.position_text(a.position),
        "maintenance": a.maintenance,
        "needs_resync": a.needs_resync,
    }


__all__ = ["run_round"]
