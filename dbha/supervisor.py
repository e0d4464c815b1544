"""The supervisor: gather an observation, call decide(), carry out the actions.

Threads (one concurrency model for all of dbha): the heartbeat service sends
and receives on its own threads; a database observer probes the local server
on its own thread, so a slow or hung database never delays the loop or the
beats; the safety check and check scripts run on theirs; the loop reads the
latest of each, decides, acts, hands the lease to the keeper process, and
tells its beats what to say. One log line per decision, with its reason.
"""

from __future__ import annotations

import json
import logging
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from dbha import adapt, sdnotify
from dbha import state as statefile
from dbha.checks import CheckRunner
from dbha.config import Config
from dbha.control import LocalControlServer, PeerControlServer
from dbha.db.base import DatabaseDriver, DbError, DbStatus, Role
from dbha.decide import announce, decide
from dbha.drivers import local_driver, upstream
from dbha.errors import DbhaError
from dbha.executor import Executor, Parts, Timeouts
from dbha.heartbeat import HeartbeatService, PathConfig
from dbha.hooks import Event, HookRunner
from dbha.model import (
    Announce,
    Decision,
    NodeState,
    Observation,
    PeerView,
    Request,
    RequestKind,
    SafetyView,
    Verdict,
)
from dbha.safety import SafetyCheck

log = logging.getLogger("dbha")

# How long a RunSafetyCheck action keeps the safety thread checking (seconds).
SAFETY_ARMED_FOR = 2.0
# Safety checks in flight at once while the peer is silent (see _safety_loop).
SAFETY_IN_FLIGHT = 3


@dataclass
class _Pending:
    request: Request
    done: threading.Event = field(default_factory=threading.Event)
    answer: str | None = None


class DbObserver:
    """Probes the local database on its own thread; ``latest`` never blocks."""

    def __init__(self, driver: DatabaseDriver, every: float, timeout: float) -> None:
        self.driver, self.every, self.timeout = driver, every, timeout
        self._latest: tuple[DbStatus, float] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dbha-db", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def probe_once(self) -> DbStatus:
        st = self.driver.probe(self.timeout)
        with self._lock:
            self._latest = (st, time.monotonic())
        return st

    def latest(self, now: float) -> DbStatus | None:
        """The newest probe, or an unreachable status if probes stopped answering."""
        with self._lock:
            got = self._latest
        if got is None:
            return None
        st, at = got
        if now - at > self.timeout + 3 * self.every:
            return DbStatus.unreachable(f"no probe answer for {now - at:.1f}s")
        return st

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.probe_once()
            self._stop.wait(max(0.0, self.every - (time.monotonic() - started)))


class Supervisor:
    def __init__(self, cfg: Config, *, json_log: bool = False) -> None:
        self.cfg = cfg
        self.json_log = json_log or cfg.log.format == "json"
        hb = cfg.heartbeat
        self.interval = hb.interval_ms / 1000
        self.key = hb.key_file.read_bytes().strip()
        self.driver = local_driver(cfg)
        self.heartbeat = HeartbeatService(
            paths=[
                PathConfig(p.name, str(p.local_address), str(p.peer_address), p.port)
                for p in hb.paths
            ],
            key=self.key,
            service=cfg.service.id,
            node=cfg.node.name,
            peer=cfg.peer.name,
            interval_ms=hb.interval_ms,
            misses=hb.misses,
            rise=hb.rise,
        )
        self.observer = DbObserver(
            self.driver, self.interval, cfg.database.statement_timeout_ms / 1000
        )
        self.checks = CheckRunner(cfg.checks)
        self.hooks = HookRunner(cfg.hooks.on_event, cfg.hooks.timeout_ms / 1000)
        self.safety = SafetyCheck.from_config(cfg)
        self._safety_view: SafetyView | None = None
        self._safety_armed_until = 0.0
        self._safety_wake = threading.Event()
        self._safety_lock = threading.Lock()
        self._last_verdict = ""
        from dbha.vip import Vip

        self.vip = Vip.from_config(cfg.vip)
        self.executor = Executor(
            Parts(
                driver=self.driver,
                vip=self.vip,
                upstream=upstream(cfg),
                save_state=lambda s: statefile.save(cfg.service.state_dir, s),
                notify=self._notify,
                start_safety_check=self._start_safety_check,
                fence_peer=self._fence_peer,
                set_synchronous=self._set_synchronous,
            ),
            Timeouts.of(cfg),
        )
        self.state = NodeState()
        self._peer_announced: Announce | None = None
        self.last: Decision | None = None
        self.last_obs: Observation | None = None
        self._requests: queue.Queue[_Pending] = queue.Queue(maxsize=16)
        self._stop = threading.Event()
        self._keeper: subprocess.Popen[bytes] | None = None
        self._local = LocalControlServer(cfg.service.control_socket, self._handle)
        self._peer_door = PeerControlServer(
            [(str(p.local_address), p.port) for p in hb.paths], self.key, self._handle
        )
        self._ready = False
        self._started_at = time.monotonic()

    # -- life cycle -----------------------------------------------------------

    def start(self) -> None:
        self._started_at = time.monotonic()
        db = self.observer.probe_once()
        self.state, found = statefile.load_or_initial(
            self.cfg.service.state_dir, db.reachable and db.role is Role.PRIMARY and db.writable
        )
        log.info(
            "starting: state %s (%s), epoch %d, database %s",
            self.state.role.value,
            "from the state file" if found else "new",
            self.state.epoch,
            db.role.value if db.reachable else f"unreachable ({db.error})",
        )
        self._keeper = subprocess.Popen(
            [sys.executable, "-m", "dbha.keeper", "-c", self.cfg.source],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        self.heartbeat.start()
        self.observer.start()
        self.checks.start()
        self.hooks.start()
        self._local.start()
        self._peer_door.start()
        threading.Thread(target=self._safety_loop, name="dbha-safety", daemon=True).start()
        self._notify("started", f"as {self.state.role.value}")

    def stop(self) -> None:
        """Stop cleanly, without causing a failover: the database keeps its role and the
        peer finds it alive (its safety check says so), so it does not promote."""
        self._stop.set()
        sdnotify.notify("STOPPING=1")
        self._notify("stopping", "")
        self._lease(None, quit_keeper=True)
        for part in (self._local, self._peer_door):
            part.stop()
        self.observer.stop()
        self.checks.stop()
        self.heartbeat.stop()
        self.hooks.stop()

    def run(self) -> None:
        self.start()
        try:
            next_tick = time.monotonic()
            while not self._stop.is_set():
                self.tick()
                next_tick += self.interval
                delay = next_tick - time.monotonic()
                if delay < 0:  # a slow tick: do not try to catch up in a burst
                    next_tick, delay = time.monotonic(), 0.0
                self._stop.wait(delay)
        finally:
            self.stop()

    def request_stop(self) -> None:
        self._stop.set()

    # -- one round ------------------------------------------------------------

    def observe(self, request: Request | None = None) -> Observation:
        now = time.monotonic()
        snap = self.heartbeat.snapshot(now)
        peer = adapt.peer_view(snap)
        local = self.observer.latest(now) or DbStatus.unreachable("not probed yet")
        return Observation(
            now=now,
            local=local,
            peer=peer,
            vip_held=self.vip.holds_vip(),
            safety=self._safety_view,
            lag_units=adapt.lag_units(local, self._newest_peer_position(peer)),
            checks_ok=self.checks.all_passing(),
            keeper_ok=self._keeper is not None and self._keeper.poll() is None,
            request=request,
            covers=self.driver.covers,
            wall=time.time(),
        )

    def _newest_peer_position(self, peer: PeerView) -> Announce | None:
        """The peer's last beat, with the newest position it ever announced: a primary
        whose database died announces none, and the lag must still be judged against
        what it had."""
        last = peer.last
        if last is not None and last.position is not None:
            self._peer_announced = last
        if last is None or last.position is not None or self._peer_announced is None:
            return last
        return last._replace(position=self._peer_announced.position)

    def tick(self) -> Decision:
        pending = self._next_request()
        obs = self.observe(pending.request if pending else None)
        for ev in self.heartbeat.drain_events():
            self._notify(ev.kind.value, ev.path or "")
        d = decide(self.state, obs, self.cfg)
        out = self.executor.run(d.actions)
        if out.ok:
            self.state = d.next_state
            self._lease(d.lease_until)
        else:
            if out.persisted is not None:
                self.state = out.persisted
            # The state did not move on; the lease is what the old state allows.
            self._lease(d.lease_until if self.state.role is d.next_state.role else None)
        if pending is not None:
            pending.answer = d.answer or d.reason
            pending.done.set()
        self.heartbeat.update_status(**adapt.beat_fields(announce(self.state, obs)))  # type: ignore[arg-type]
        self._log(d, obs, out.error if not out.ok else "")
        self.last, self.last_obs = d, obs
        self._systemd(obs)
        return d

    # -- helpers --------------------------------------------------------------

    def _lease(self, until: float | None, quit_keeper: bool = False) -> None:
        k = self._keeper
        if k is None or k.stdin is None or k.poll() is not None:
            return
        line = "QUIT\n" if quit_keeper else ("NONE\n" if until is None else f"LEASE {until:.6f}\n")
        log.debug("lease to keeper at %.3f: %s", time.monotonic(), line.strip())
        try:
            k.stdin.write(line.encode())
            k.stdin.flush()
        except OSError:
            log.error("lease keeper does not listen any more")

    def _start_safety_check(self) -> None:
        """Ask for safety checks now and for a while (the core asks when the peer is
        quiet); the safety thread also keeps checking on its own while the peer is
        silent, so a lone primary's lease is renewed even while this loop is busy."""
        self._safety_armed_until = time.monotonic() + SAFETY_ARMED_FOR
        self._safety_wake.set()

    def _safety_loop(self) -> None:
        # Checks overlap: while the peer is silent a new one starts every
        # SAFETY_STAGGER (at most SAFETY_IN_FLIGHT at once), so a fresh verdict lands
        # that often even though each check may take its whole timeout (the peer's
        # probes time out when it is dead). A lone primary's lease rests on them.
        every = max(self.interval, self.cfg.safety.timeout_ms / 1000 / SAFETY_IN_FLIGHT)
        slots = threading.BoundedSemaphore(SAFETY_IN_FLIGHT)
        while not self._stop.is_set():
            now = time.monotonic()
            if not (self.heartbeat.snapshot(now).peer_silent or now < self._safety_armed_until):
                self._safety_wake.wait(self.interval)
                self._safety_wake.clear()
                continue
            if slots.acquire(timeout=self.interval):
                threading.Thread(
                    target=self._one_safety_check, args=(slots,), name="dbha-safety", daemon=True
                ).start()
            self._stop.wait(every)

    def _one_safety_check(self, slots: threading.BoundedSemaphore) -> None:
        try:
            started = time.monotonic()
            result = self.safety.run()
            with self._safety_lock:
                current = self._safety_view
                if current is None or started > current.at:  # the newest start wins
                    self._safety_view = SafetyView(Verdict(result.verdict.value), started)
            log.debug("safety check started %.3f: %s", started, result.verdict.value)
            if result.verdict.value != self._last_verdict:
                log.info("safety check: %s (%s)", result.verdict.value, result.reason)
                self._last_verdict = result.verdict.value
        finally:
            slots.release()

    def _fence_peer(self, timeout: float) -> None:
        cmd = self.cfg.fence.command
        if cmd:
            from dbha import proc

            proc.run(list(cmd), timeout=timeout)

    def _set_synchronous(self, on: bool, timeout: float) -> None:
        raise DbError("switching synchronous replication on or off is not supported yet")

    def _notify(self, event: str, detail: str) -> None:
        st = self.state
        ev = Event(
            event,
            self.cfg.service.id,
            self.cfg.node.name,
            self.cfg.peer.name,
            st.epoch,
            st.role.value,
            time.time(),
            detail,
        )
        self.hooks.fire(ev)
        log.info("event %s%s", event, f": {detail}" if detail else "")

    def _next_request(self) -> _Pending | None:
        try:
            return self._requests.get_nowait()
        except queue.Empty:
            return None

    def _log(self, d: Decision, obs: Observation, error: str) -> None:
        prev = self.last
        if d.actions or error or prev is None or (prev.rule, prev.reason) != (d.rule, d.reason):
            if self.json_log:
                log.info(
                    json.dumps(
                        {
                            "rule": d.rule,
                            "reason": d.reason,
                            "role": self.state.role.value,
                            "epoch": self.state.epoch,
                            "actions": [type(a).__name__ for a in d.actions],
                            "error": error or None,
                        }
                    )
                )
            else:
                acts = ", ".join(type(a).__name__ for a in d.actions)
                log.info(
                    "%s: %s%s%s",
                    d.rule,
                    d.reason,
                    f" [{acts}]" if acts else "",
                    f" FAILED: {error}" if error else "",
                )

    def _systemd(self, obs: Observation) -> None:
        if not sdnotify.enabled():
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
        kinds = {k.value: k for k in RequestKind}
        if cmd in kinds and origin == "local":
            pending = _Pending(Request(kinds[cmd], bool(req.get("force", False))))
            try:
                self._requests.put_nowait(pending)
            except queue.Full:
                return {"ok": False, "error": "too many requests waiting; try again"}
            if not pending.done.wait(10.0):
                return {"ok": False, "error": "the supervisor did not take the request in 10 s"}
            return {"ok": True, "answer": pending.answer}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def status(self) -> dict[str, Any]:
        obs, d, st = self.last_obs, self.last, self.state
        snap = self.heartbeat.snapshot()
        local = obs.local if obs else None
        return {
            "service": self.cfg.service.id,
            "node": self.cfg.node.name,
            "peer": self.cfg.peer.name,
            "role": st.role.value,
            "epoch": st.epoch,
            "needs_resync": st.needs_resync,
            "maintenance": st.maintenance,
            "last_failover": st.last_failover,
            "vip": {
                "address": str(self.cfg.vip.address),
                "held_here": obs.vip_held if obs else None,
            },
            "database": None
            if local is None
            else {
                "reachable": local.reachable,
                "role": local.role.value,
                "writable": local.writable,
                "position": adapt.position_text(local.position),
                "lag_bytes": local.lag_bytes,
                "lag_transactions": local.lag_transactions,
                "lag_seconds": local.lag_seconds,
                "streaming": local.streaming,
                "error": local.error,
            },
            "peer_state": None
            if obs is None or obs.peer.last is None
            else {
                "role": obs.peer.last.role.value,
                "epoch": obs.peer.last.epoch,
                "db_writable": obs.peer.last.db_writable,
                "maintenance": obs.peer.last.maintenance,
            },
            "paths": {p.name: {"up": p.up} for p in snap.paths},
            "heartbeat_counters": snap.counters.as_dict(),
            "checks": {c.name: c.passing for c in self.checks.states()},
            "decision": None if d is None else {"rule": d.rule, "reason": d.reason},
            "keeper_alive": self._keeper is not None and self._keeper.poll() is None,
            "summary": self.summary(),
        }


def run(cfg: Config, json_log: bool = False) -> int:
    """``dbha run``: the supervisor in the foreground until SIGTERM/SIGINT."""
    import signal

    sup = Supervisor(cfg, json_log=json_log)

    def _term(_sig: int, _frm: object) -> None:
        sup.request_stop()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    try:
        sup.run()
    except DbhaError as exc:
        log.error("supervisor stopped: %s", exc)
        return 2
    return 0
