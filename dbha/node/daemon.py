"""The supervisor: gather an observation, call decide(), carry out the actions.

Threads (one concurrency model for all of dbha): the heartbeat service sends
and receives on its own threads; a database observer probes the local server
on its own thread, so a slow or hung database never delays the loop or the
beats; the safety check and check scripts run on theirs; the loop reads the
latest of each, decides, acts, hands the lease to the keeper process, and
tells its beats what to say. One log line per decision, with its reason.
"""

from __future__ import annotations

import logging
import math
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from dbha.beat import announce as adapt
from dbha.config import Config
from dbha.core.decide import announce, decide, lease_until, restart
from dbha.core.model import (
    Announce,
    DbStatus,
    Decision,
    Fence,
    Follow,
    NodeRole,
    NodeState,
    Observation,
    PeerView,
    PrepareReplica,
    PrePromote,
    Promote,
    Rejoin,
    ReleaseVip,
    Request,
    RequestKind,
    Role,
    RunSafetyCheck,
    SetSynchronous,
    Unfence,
)
from dbha.core.timing import gist, plan_wait, steady
from dbha.errors import DbhaError
from dbha.node import history, logs, observe, reload, restartmem, sdnotify, statefile, statusview
from dbha.node.alerts import Alerts
from dbha.node.control import LocalControlServer, PeerControlServer
from dbha.node.http import Feed
from dbha.node.parts import NodeParts
from dbha.node.safetyloop import SafetyRunner

log = logging.getLogger("dbha")

# Actions after which the local database's status must be probed again at once.
_CHANGES_DB = (Fence, Unfence, Promote, Follow, Rejoin, SetSynchronous, PrepareReplica)
# Roles that serve writes under a lease.
SERVING_ROLES = (NodeRole.PRIMARY, NodeRole.PROMOTING)
# A serving node's actions stop this long before its lease ends (seconds).
LEASE_MARGIN = 0.1
# In a steady state (see steady()) the loop ticks this many heartbeat intervals
# apart, but never more than this fraction of the self-fence deadline (the lease
# it renews is 0.85 of it), and at once on news: a path going up or down, a beat
# that says something new, a probe that answers differently, a safety verdict, a
# check that flips, an operator's request.
STEADY_INTERVALS = 3
STEADY_DEADLINE_FRACTION = 0.25
# A replica's memory for a restart (dbha.node.restartmem) is rewritten at most this often
# while only its times move (seconds): an older echo only ends its window sooner.
MEMORY_EVERY = 0.2
# An operator's request must be taken by the loop within this (seconds).
REQUEST_TAKEN_WITHIN = 10.0
# Requests the peer's door accepts (signed with the pair's key): a switchover run
# on the replica's host, and maintenance, which the CLI sets on both nodes.
PEER_REQUESTS = ("switchover", "maintenance_on", "maintenance_off")


@dataclass
class _Pending:
    request: Request
    taken: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    answer: str | None = None


class Supervisor:
    def __init__(self, cfg: Config, *, json_log: bool = False) -> None:
        self.cfg = cfg
        self.parts = parts = NodeParts(cfg)
        self.params = parts.params
        self.json_log = json_log or cfg.log.format == "json"
        hb = cfg.heartbeat
        self.interval = parts.interval
        self.key = parts.key
        self.driver = parts.driver
        self.heartbeat = parts.heartbeat
        self.observer = parts.observer
        self.checks = parts.checks
        self.hooks = parts.hooks
        self.safety = parts.safety
        self._stop = threading.Event()
        self._wake = threading.Event()  # news: tick now rather than at the period's end
        self.reload_wanted = threading.Event()  # SIGHUP: the loop reloads between ticks
        self.safety_runner = SafetyRunner(
            parts.safety,
            parts.heartbeat,
            self.interval,
            cfg.safety.timeout_ms / 1000,
            stop=self._stop,
            wake=self._wake,
        )
        self.vip = parts.vip
        self.executor = parts.executor(
            save_state=self._save_state,
            notify=self._notify,
            start_safety_check=self.safety_runner.arm,
        )
        self.state = NodeState()
        self._saved: tuple[object, ...] | None = None  # persisted fields as last saved
        self._lease_sent: str | None = None  # the last line the keeper was sent
        self._peer_announced: Announce | None = None
        self.last: Decision | None = None
        self.last_obs: Observation | None = None
        self._requests: queue.Queue[_Pending] = queue.Queue(maxsize=16)
        self.heartbeat.on_news = self.observer.on_change = self.checks.on_change = self._wake.set
        self._prev: Decision | None = None  # the decision before self.last
        hb_s = self.interval
        self.steady_period = max(
            hb_s,
            min(
                STEADY_INTERVALS * hb_s,
                STEADY_DEADLINE_FRACTION * cfg.fence.self_fence_deadline_ms / 1000,
            ),
        )
        self.ticking_every = self.interval  # the period the loop waits out now
        self._keeper: subprocess.Popen[bytes] | None = None
        self.feed = Feed(self.status, parts.metrics)  # what the HTTP door reads
        self.door = parts.http_door(self.feed)
        self._local = LocalControlServer(cfg.service.control_socket, self._handle)
        self._peer_door = PeerControlServer(
            [(str(p.local_address), p.port) for p in hb.paths], self.key, self._handle
        )
        self._ready = False
        self._sd = sdnotify.enabled()  # NOTIFY_SOCKET does not change while we run
        self._started_at = time.monotonic()
        # Since when (monotonic) the local primary's commits wait with no synchronous
        # standby connected (None: they do not).
        self._blocked_since: float | None = None
        # What a restart of this process carries over (dbha.core.decide.restart), and the
        # gist of what was last written of it.
        self._boot = ""
        self._memory: restart.Remembered | None = None
        self._mem_key: object = None
        self._mem_at = -math.inf
        self._mem_peer: PeerView | None = None
        self.alerts = Alerts(cfg, self._notify)
        self._failures = logs.Repeats()  # the decisions that fail again and again

    # -- life cycle -----------------------------------------------------------

    def start(self) -> None:
        self._started_at = time.monotonic()
        self._preflight()
        if self.door is not None:
            self.door.start()  # a door configured but not listening stops the start
        db = self.observer.probe_once()
        # Without a state file, a node whose database is a primary (writable or
        # read-only: a fenced primary, or one configured to start read-only) starts
        # fenced and resumes only once the peer confirms it has not taken over.
        self.state, found = statefile.load_or_initial(
            self.cfg.service.state_dir, db.reachable and db.role is Role.PRIMARY
        )
        self._saved = _persisted(self.state) if found else None
        self._boot = restartmem.boot_id()
        self._memory = restartmem.load(self.cfg.service.state_dir, self._boot)
        if self._memory is not None and found:
            resumed = restart.resume(self.state, self._memory)
            if resumed != self.state:
                heard = self._memory.peer.heard_at
                log.info(
                    "restarted in the same boot: %s was last heard %.1f s ago, as %s",
                    self.cfg.peer.name,
                    time.monotonic() - heard if heard is not None else math.nan,
                    self._memory.peer.last.role.value if self._memory.peer.last else "?",
                )
            self.state = resumed
        else:
            self._memory = None
        log.info(
            "starting: state %s (%s), epoch %d, database %s",
            self.state.role.value,
            "from the state file" if found else "new",
            self.state.epoch,
            db.role.value if db.reachable else f"unreachable ({db.error})",
        )
        self._keeper = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dbha.node.keeper",
                "-c",
                self.cfg.source,
                *(["--json-log"] if self.json_log else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        # The doors first: a peer that hears our first beats may ask at once (the
        # settings watch of dbha.node.settings asks which shared settings differ).
        self._local.start()
        self._peer_door.start()
        self.heartbeat.start()
        self.observer.start()
        self.checks.start()
        self.hooks.start()
        threading.Thread(target=self.safety_runner.loop, name="dbha-safety", daemon=True).start()
        self._notify("started", f"as {self.state.role.value}")

    def _preflight(self) -> None:
        """This node's server and host against dbha's prerequisites (dbha.node.preflight):
        what dbha will make right and what is weaker than it should be is logged;
        what would make running unsafe stops the start."""
        from dbha.node import preflight

        items = preflight.run(self.cfg, peer=False)
        for item in items:
            if item.level in ("fix", "warn", "fail"):
                log.warning("preflight: %s", item.line().replace("\n    ", ""))
        unsafe = [i for i in items if i.unsafe and i.level == "fail"]
        if unsafe:
            raise DbhaError(
                "refusing to start: " + "; ".join(f"{i.what} (fix: {i.fix})" for i in unsafe)
            )

    def stop(self) -> None:
        """Stop cleanly, without causing a failover: the database keeps its role and the
        peer finds it alive (its safety check says so), so it does not promote."""
        self._stop.set()
        sdnotify.notify("STOPPING=1")
        self._notify("stopping", "")
        self._lease(None, quit_keeper=True)
        for part in (self._local, self._peer_door, self.door):
            if part is not None:
                part.stop()
        self.observer.stop()
        self.driver.close()
        self.checks.stop()
        self.heartbeat.stop()
        self.hooks.stop()

    def run(self) -> None:
        self.start()
        try:
            next_tick = time.monotonic()
            while not self._stop.is_set():
                self._wake.clear()  # news from now on wakes the wait below
                began = time.monotonic()
                before = self.state
                d = self.tick()
                self.feed.ticked(began, time.monotonic())
                steady = self._steady(before, d)
                period = self.steady_period if steady else self.interval
                next_tick, delay = plan_wait(
                    next_tick,
                    began,
                    time.monotonic(),
                    period,
                    d,
                    steady,
                    self.observer.overdue_at(),
                )
                self.ticking_every = period
                self._wake.wait(delay)
                if self.reload_wanted.is_set():
                    self.reload_wanted.clear()
                    reload.reload(self)
        finally:
            self.stop()

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _steady(self, before: NodeState, d: Decision) -> bool:
        obs = self.last_obs
        return (
            obs is not None
            and not self.alerts.active
            and steady(self._prev, d, before, obs, len(self.cfg.heartbeat.paths))
        )

    # -- one round ------------------------------------------------------------

    def observe(self, request: Request | None = None) -> Observation:
        now = time.monotonic()
        snap = self.heartbeat.snapshot(now, counters=False)  # status() reads counters
        self.parts.settings.seen(snap.last_beat, now)  # the pair's settings agree?
        # Until the peer is heard again, a supervisor restarted in this boot shows the
        # core the peer as it last saw it (dbha.core.decide.restart).
        peer = restart.peer_view(adapt.peer_view(snap), self._memory)
        probed = self.observer.latest_probe(now)
        local, probe_at = probed or (DbStatus.unreachable("not probed yet"), None)
        if peer.last is not None and peer.last.position is not None:
            self._peer_announced = peer.last
        return observe.observation(
            now,
            local,
            peer,
            newest=self._peer_announced,
            vip_held=self.vip.holds_vip(),
            safety=self.safety_runner.view,
            checks_ok=self.checks.all_passing(),
            keeper_ok=self._keeper is not None and self._keeper.poll() is None,
            request=request,
            covers=self.driver.covers,
            wall=time.time(),
            probe_at=probe_at,
        )

    def tick(self) -> Decision:
        pending = self._next_request()
        if pending is not None:
            pending.taken.set()
        obs = self.observe(pending.request if pending else None)
        for ev in self.heartbeat.drain_events():
            self._notify(ev.kind.value, ev.path or "")
        d = decide(self.state, obs, self.params)
        self.parts.metrics.decisions.labels(d.rule).inc()
        if not obs.local.commits_blocked:
            self._blocked_since = None
        elif self._blocked_since is None:
            self._blocked_since = obs.now
        deadline = None
        if self.state.role in SERVING_ROLES and d.next_state.role is self.state.role:
            # Renew before acting (the evidence is this observation's, whatever the
            # actions take), and keep the actions within the lease: a slow or failing
            # action must not starve the loop until the keeper fences a healthy node.
            self._lease(d.lease_until)
            if d.lease_until is not None:
                deadline = d.lease_until - LEASE_MARGIN
        self.feed.stepping_down(any(isinstance(a, Fence | ReleaseVip) for a in d.actions))
        out = self.executor.run(d.actions, deadline)
        if obs.local.reachable and any(isinstance(a, _CHANGES_DB) for a in d.actions[: out.done]):
            # Probes may be rarer than ticks: the next decision must see what these
            # actions did, not the status from before them (it would act again). Not
            # when the database did not answer: the loop must not wait for it.
            self.observer.probe_once()
        if out.ok:
            self.state = d.next_state
            self._persist()
            lease = d.lease_until
            if d.actions and self.state.role in SERVING_ROLES:
                # The actions (a promotion: replay, promote, VIP) took time: the lease
                # from the evidence gathered meanwhile may reach further.
                fresh = lease_until(self.params, self.observe())
                if fresh is not None and (lease is None or fresh > lease):
                    lease = fresh
            self._lease(lease)
        else:
            if out.persisted is not None:
                self.state = out.persisted
            # The state did not move on; the lease is what the old state allows.
            self._lease(d.lease_until if self.state.role is d.next_state.role else None)
        if pending is not None:
            # Refused, or accepted but an action failed: the operator is told so.
            pending.ok = out.ok and d.rule != "request-refused"
            answer = d.answer or d.reason
            # The first word says what happened: "refused: ..." when an action refused
            # as unsafe (nothing changed), "failed: ..." when it failed.
            word = "refused" if out.refused else "failed"
            pending.answer = answer if out.ok else f"{word}: {d.rule}: {out.error}"
            pending.done.set()
        self._remember(obs)
        self.heartbeat.set_status(adapt.local_status(announce(self.state, obs)))
        self._log(d, obs, out.error if not out.ok else "")
        vetoed = out.refused and isinstance(out.failed, PrePromote)
        self.alerts.update(obs, d, self._started_at, out.error if vetoed else "")
        self._prev = self.last
        self.last, self.last_obs = d, obs
        self._systemd(obs)
        return d

    # -- helpers --------------------------------------------------------------

    def _save_state(self, state: NodeState) -> None:
        statefile.save(self.cfg.service.state_dir, state)
        self._saved = _persisted(state)

    def _remember(self, obs: Observation) -> None:
        """Keep what a restart of this process must not forget (a replica's view of its
        peer and its eligibility: dbha.core.decide.restart): rewritten when it says
        something new, and at most every MEMORY_EVERY while only its times move."""
        m = restart.remember(self.state, obs)
        state_dir = self.cfg.service.state_dir
        if m is None:
            if self._mem_key is not None:
                restartmem.forget(state_dir)
                self._mem_key = None
            return
        last = m.peer.last
        key = (m.role, m.eligible_since, None if last is None else last._replace(position=None))
        if key == self._mem_key and obs.now - self._mem_at < MEMORY_EVERY:
            return
        if key == self._mem_key and m.peer == self._mem_peer:
            return
        try:
            restartmem.save(state_dir, m, self._boot)
        except OSError as exc:
            log.error("could not save the supervisor's memory: %s", exc)
            return
        self._mem_key, self._mem_at, self._mem_peer = key, obs.now, m.peer

    def _persist(self) -> None:
        """Save the state when a persisted field changed (role, epoch, needs_resync,
        maintenance, last failover, sync mark), so a restart resumes from it. The
        core persists before acting where it must (a promotion's epoch); the rest
        is saved once its actions succeeded."""
        if _persisted(self.state) == self._saved:
            return
        try:
            self._save_state(self.state)
        except DbhaError as exc:
            log.error("could not save the node state: %s", exc)

    def _lease(self, until: float | None, quit_keeper: bool = False) -> None:
        self.feed.lease(None if quit_keeper else until)
        k = self._keeper
        if k is None or k.stdin is None or k.poll() is not None:
            return
        line = "QUIT\n" if quit_keeper else ("NONE\n" if until is None else f"LEASE {until:.6f}\n")
        if line == self._lease_sent:
            return  # the keeper has it (a replica's NONE, a lease sent before acting)
        self._lease_sent = line
        log.debug("lease to keeper at %.3f: %s", time.monotonic(), line.strip())
        try:
            k.stdin.write(line.encode())
            k.stdin.flush()
        except OSError:
            log.error("lease keeper does not listen any more")

    def _notify(self, event: str, detail: str) -> None:
        self.parts.notify(self.state, event, detail)

    def _next_request(self) -> _Pending | None:
        if self._requests.empty():  # the usual case, without raising queue.Empty
            return None
        try:
            return self._requests.get_nowait()
        except queue.Empty:
            return None

    def _log(self, d: Decision, obs: Observation, error: str) -> None:
        """One line per decision that acts or says something new: a decision that
        repeats the last one, or only asks for another safety check, is not logged;
        nor one that fails again as the last logged one did, but once a minute
        (dbha.node.logs.Repeats). The line carries its fields for the JSON log."""
        prev = self.last
        acting = [a for a in d.actions if not isinstance(a, RunSafetyCheck)]
        if not (acting or error or prev is None or gist(prev) != gist(d)):
            return
        repeats = self._failures.admit((d.rule, d.reason, error) if error else None)
        if repeats is not None:
            text, fields = logs.decision_line(d, self.state, error, repeats)
            log.info("%s", text, extra={logs.FIELDS: fields})

    def _systemd(self, obs: Observation) -> None:
        if not self._sd:
            return
        if not self._ready:
            # Ready once it has a view of both nodes: the local database probed, and
            # the peer heard or known silent (longer than a path takes to go down).
            probed = self.observer.latest(obs.now) is not None
            waited = obs.now - self._started_at > self.cfg.heartbeat.peer_silent_after_ms / 1000
            if probed and (obs.peer.heard_at is not None or waited):
                sdnotify.notify("READY=1")
                self._ready = True
        sdnotify.notify("WATCHDOG=1", f"STATUS={self.summary(obs)}")

    def summary(self, obs: Observation | None = None) -> str:
        obs = obs or self.last_obs
        st = self.state
        if obs is None:
            return f"{st.role.value}, epoch {st.epoch}"
        return (
            f"{st.role.value}, epoch {st.epoch}, db {obs.local.role.value}"
            f"{' writable' if obs.local.writable else ''}, peer "
            f"{'silent' if obs.peer.silent else f'up on {obs.peer.paths_up} path(s)'}"
            f"{', VIP here' if obs.vip_held else ''}"
        )

    # -- control --------------------------------------------------------------

    def _handle(self, req: dict[str, Any], origin: str) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": self.status()}
        if cmd == "history":
            last = req.get("last")
            n = last if isinstance(last, int) and 0 < last <= history.MAX_REPLY else 50
            events = history.read(self.cfg.service.state_dir, n)
            return {"ok": True, "events": history.within(events, history.MAX_REPLY_BYTES)}
        kinds = {k.value: k for k in RequestKind}
        if cmd in kinds and (origin == "local" or cmd in PEER_REQUESTS):
            kind = kinds[cmd]
            dry = kind is RequestKind.SWITCHOVER and req.get("dry_run") is True
            pending = _Pending(Request(kind, req.get("force") is True, dry))
            try:
                self._requests.put_nowait(pending)
            except queue.Full:
                return {"ok": False, "error": "too many requests waiting; try again"}
            self._wake.set()
            if not pending.taken.wait(REQUEST_TAKEN_WITHIN):
                return {"ok": False, "error": "the supervisor did not take the request in 10 s"}
            # Taken: the tick runs its actions, each bounded (a rejoin may copy the
            # whole database); the answer comes when they are done.
            if not pending.done.wait(self.executor.t.rejoin + REQUEST_TAKEN_WITHIN):
                return {"ok": False, "error": "the request is still running; see the log"}
            if pending.ok:
                return {"ok": True, "answer": pending.answer}
            return {"ok": False, "error": pending.answer}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def status(self) -> dict[str, Any]:
        return statusview.status(
            self.cfg,
            self.heartbeat,
            self.checks,
            self.alerts,
            state=self.state,
            obs=self.last_obs,
            decision=self.last,
            blocked_since=self._blocked_since,
            ticking_every=self.ticking_every,
            keeper_alive=self._keeper is not None and self._keeper.poll() is None,
            summary=self.summary(),
            settings=self.parts.settings.view(),
        )


def _persisted(st: NodeState) -> tuple[object, ...]:
    """The fields the state file keeps (dbha.node.statefile.encode), to tell a change cheaply."""
    return (st.role, st.epoch, st.needs_resync, st.maintenance, st.last_failover, st.sync_mark)


def run(cfg: Config, json_log: bool = False) -> int:
    """``dbha run``: the supervisor in the foreground until SIGTERM/SIGINT."""
    import signal

    sup = Supervisor(cfg, json_log=json_log)

    def _term(_sig: int, _frm: object) -> None:
        sup.request_stop()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)

    def _hup(_sig: int, _frm: object) -> None:  # systemctl reload: the loop does it
        sup.reload_wanted.set()
        sup._wake.set()

    signal.signal(signal.SIGHUP, _hup)
    try:
        sup.run()
    except DbhaError as exc:
        log.error("supervisor stopped: %s", exc)
        return 2
    return 0
