"""Every part of one node, built from its config, here and nowhere else.

``dbha run`` (:mod:`dbha.node.daemon`) builds its parts here and runs its loop
over them; a cron round (:mod:`dbha.monitor.round`) builds the same parts here
and runs one round over them, never building a supervisor it does not start.
Building starts nothing: no thread, no socket, no connection (the VIP's
netlink socket opens on first use).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from dbha import proc
from dbha.beat.service import HeartbeatService, PathConfig
from dbha.config import Config
from dbha.config.params import params
from dbha.core.model import DbStatus, NodeState, PrePromote
from dbha.db.base import DatabaseDriver, Upstream
from dbha.db.factory import local_driver, upstream
from dbha.errors import DbhaError
from dbha.host.safety import SafetyCheck
from dbha.host.vip import Vip
from dbha.node.checkscripts import CheckRunner
from dbha.node.executor import Executor, Parts, Timeouts
from dbha.node.history import History
from dbha.node.hooks import Event, HookRunner, PrePromoteHook
from dbha.node.http import Feed, HttpDoor
from dbha.node.httpviews import Bounds
from dbha.node.metrics import Metrics
from dbha.node.observe import DbObserver
from dbha.node.settings import SettingsWatch

log = logging.getLogger("dbha")

# Events an operator must see: logged as warnings.
LOUD_EVENTS = frozenset(
    {
        "path_down",
        "peer_silent",
        "heartbeats_broken",
        "fenced",
        "failover_refused",
        "resync_needed",
        "sync_fallback",
        "check_failed",
    }
)


class NodeParts:
    """The parts of one node: its database driver and observer, heartbeat service,
    check scripts, hooks, safety check, VIP, and the peer as an upstream. The
    caller starts and stops the ones it uses."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.params = params(cfg)
        hb = cfg.heartbeat
        self.interval = hb.interval_ms / 1000
        self.key = hb.key_file.read_bytes().strip()
        self.driver: DatabaseDriver = local_driver(cfg)
        self.upstream: Upstream = upstream(cfg)
        self.settings = SettingsWatch(cfg, self.key)  # the pair's shared settings
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
            settings=self.settings.digest,
        )
        self.metrics = Metrics()  # served by the HTTP door when [http] is set
        self.observer = DbObserver(
            self.driver,
            cfg.database.probe_interval_ms / 1000,
            cfg.database.statement_timeout_ms / 1000,
            retry_every=self.interval,
        )
        self.observer.on_probe = self.metrics.probe_seconds.observe
        self.checks = CheckRunner(cfg.checks)
        self.hooks = HookRunner(cfg.hooks.on_event, cfg.hooks.timeout_ms / 1000)
        self.pre_promote_hook = PrePromoteHook(
            cfg.hooks.pre_promote,
            cfg.hooks.pre_promote_timeout_ms / 1000,
            service=cfg.service.id,
            node=cfg.node.name,
            peer=cfg.peer.name,
        )
        self.safety = SafetyCheck.from_config(cfg)
        self.vip = Vip.from_config(cfg.vip)
        self.history = History(cfg.service.state_dir, cfg.service.id, cfg.node.name)

    def executor(
        self,
        *,
        save_state: Callable[[NodeState], None],
        notify: Callable[[str, str], None],
        start_safety_check: Callable[[], None],
    ) -> Executor:
        """The executor over these parts; the caller says how a state is saved, an
        event announced and a safety check started."""
        return Executor(
            Parts(
                driver=self.driver,
                vip=self.vip,
                upstream=self.upstream,
                save_state=save_state,
                notify=notify,
                start_safety_check=start_safety_check,
                fence_peer=self.fence_peer,
                set_synchronous=self.set_synchronous,
                pre_promote=self.pre_promote,
            ),
            Timeouts.of(self.cfg),
        )

    def http_door(self, feed: Feed) -> HttpDoor | None:
        """The HTTP door of ``[http]`` (None without it), answering from ``feed``;
        the lag bounds are read at each request (a reload changes them)."""
        if self.cfg.http is None:
            return None
        feed.metrics.watch(feed.metrics_view)
        return HttpDoor(self.cfg.http, lambda: lag_bounds(self.cfg), feed.view, feed.metrics)

    def fence_peer(self, timeout: float) -> None:
        """The operator's fence command (fence.command), if there is one."""
        cmd = self.cfg.fence.command
        if cmd:
            proc.run(list(cmd), timeout=timeout)

    def pre_promote(self, action: PrePromote, _timeout: float) -> None:
        """The operator's pre_promote hook, if there is one (it bounds itself)."""
        self.pre_promote_hook.check(action.kind, action.epoch, action.reason)

    def set_synchronous(self, on: bool, timeout: float) -> None:
        self.driver.set_synchronous(on, timeout)

    def notify(self, state: NodeState, event: str, detail: str) -> None:
        """Record ``event`` (this node in ``state``) in the history, fire the hooks
        for it and log it."""
        cfg = self.cfg
        ev = Event(
            event,
            cfg.service.id,
            cfg.node.name,
            cfg.peer.name,
            state.epoch,
            state.role.value,
            time.time(),
            detail,
        )
        self.metrics.event(event)
        problem = self.history.record(event, detail, state.epoch, state.role.value)
        if problem is not None:
            log.warning("%s", problem)
        self.hooks.fire(ev)
        level = logging.WARNING if event in LOUD_EVENTS else logging.INFO
        log.log(level, "event %s%s", event, f": {detail}" if detail else "")


def lag_bounds(cfg: Config) -> Bounds:
    r = cfg.replication
    return Bounds(cfg.database.engine, r.max_lag_bytes, r.max_lag_transactions, r.max_lag_seconds)


def look_alone(cfg: Config, timeout: float) -> tuple[DbStatus, bool | None, str | None]:
    """This node as seen directly, with no supervisor running (``dbha status``): one
    probe of the local database bounded by ``timeout`` (never raises), and whether
    the VIP is on this host (None, with why, when that cannot be told)."""
    driver = local_driver(cfg)
    try:
        db = driver.probe(timeout)
    finally:
        driver.close()
    try:
        with Vip.from_config(cfg.vip) as vip:
            return db, vip.holds_vip(), None
    except (DbhaError, OSError) as exc:
        return db, None, str(exc)
