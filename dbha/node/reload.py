"""``systemctl reload`` (SIGHUP): read the config file again and apply what can change live.

The signal handler only asks (an Event and a wake-up); the loop's thread calls
:func:`reload` between two ticks, so nothing a tick reads changes under it.

- A file that does not load, or names files that are not usable (the checks
  ``dbha run`` makes at start), is refused whole: the old config is kept and the
  error logged.
- Of the keys that changed, those in :data:`LIVE` are applied; every other one
  is refused by name and keeps its old value until a restart
  (``reload: not applied: key1, key2 (restart needed)``).

The diff (:func:`changes`, :func:`split`, :func:`merge`) is pure; :func:`reload`
applies it to the running parts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import TYPE_CHECKING, Protocol

from dbha import config
from dbha.config import ArbiterConfig, Config
from dbha.config.params import params
from dbha.errors import ConfigError
from dbha.node import sdnotify
from dbha.node.checkscripts import CheckRunner
from dbha.node.hooks import HookRunner

if TYPE_CHECKING:
    from dbha.core.model import NodeState
    from dbha.core.params import Params
    from dbha.node.alerts import Alerts
    from dbha.node.parts import NodeParts

log = logging.getLogger("dbha")

# The keys a reload applies. Everything else (names, addresses, ports, the VIP,
# heartbeat paths and timings, the key file, the state directory and control
# socket, the engine and the database's connection, the fence, the safety check,
# the arbiter) is built into threads, sockets and the lease arithmetic at start.
LIVE = frozenset(
    {
        "log.level",
        "hooks.on_event",
        "hooks.timeout_ms",
        "check",  # the whole [[check]] list: the check scripts start over, passing
        "replication.max_lag_bytes",
        "replication.max_lag_transactions",
        "replication.max_lag_seconds",
        "service.auto_rejoin",
    }
)
# A dataclass field's name -> the config file's key, where they differ.
_KEY_OF = {"checks": "check", "paths": "path", "targets": "target"}


def _flat(cfg: Config) -> dict[str, object]:
    """``cfg`` by dotted key (one entry per scalar key of a table; an array of tables,
    such as ``check`` or ``heartbeat.path``, is one entry)."""
    out: dict[str, object] = {}
    for f in fields(cfg):
        if f.name == "source":
            continue
        value = getattr(cfg, f.name)
        name = _KEY_OF.get(f.name, f.name)
        if f.name == "arbiter":
            for g in fields(ArbiterConfig):
                out[f"arbiter.{g.name}"] = None if value is None else getattr(value, g.name)
        elif is_dataclass(value) and not isinstance(value, type):
            for g in fields(value):
                out[f"{name}.{_KEY_OF.get(g.name, g.name)}"] = getattr(value, g.name)
        else:
            out[name] = value
    return out


def changes(old: Config, new: Config) -> list[str]:
    """The dotted keys whose values differ between ``old`` and ``new``, sorted."""
    a, b = _flat(old), _flat(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


@dataclass(frozen=True)
class Plan:
    applied: tuple[str, ...]  # changed keys a reload applies
    refused: tuple[str, ...]  # changed keys that need a restart


def split(old: Config, new: Config) -> Plan:
    """Which of the changed keys a reload applies and which it refuses."""
    changed = changes(old, new)
    return Plan(tuple(k for k in changed if k in LIVE), tuple(k for k in changed if k not in LIVE))


def merge(old: Config, new: Config, keys: tuple[str, ...]) -> Config:
    """``old`` with the values of ``keys`` (of :data:`LIVE`) taken from ``new``."""
    cfg = old
    for key in keys:
        if key not in LIVE:
            raise ValueError(f"{key} cannot change live")
        if key == "check":
            cfg = replace(cfg, checks=new.checks)
            continue
        section, name = key.split(".")
        part = replace(getattr(cfg, section), **{name: getattr(getattr(new, section), name)})
        cfg = replace(cfg, **{section: part})
    return cfg


class Reloadable(Protocol):
    """What a reload changes of a running supervisor (dbha.node.daemon.Supervisor)."""

    cfg: Config
    params: Params
    state: NodeState
    parts: NodeParts
    checks: CheckRunner
    hooks: HookRunner
    alerts: Alerts


def reload(sup: Reloadable) -> Plan | None:
    """Read ``sup.cfg.source`` again and apply what may change live; log what was
    applied and what was refused. Returns the plan, or None when the file was refused
    whole. Runs on the loop's thread; never raises for a bad file."""
    path = sup.cfg.source
    sdnotify.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
    try:
        return _reload(sup, path)
    finally:
        sdnotify.notify("READY=1")


def _reload(sup: Reloadable, path: str) -> Plan | None:
    try:
        new = config.load(path)
        problems = config.run_problems(new)
        if problems:
            raise ConfigError(path, problems)
    except ConfigError as exc:
        log.warning("reload: refused, the running config is kept: %s", str(exc).replace("\n", ";"))
        return None
    plan = split(sup.cfg, new)
    if plan.refused:
        log.warning("reload: not applied: %s (restart needed)", ", ".join(plan.refused))
    if plan.applied:
        _apply(sup, merge(sup.cfg, new, plan.applied), plan.applied)
        log.info("reload: applied: %s", ", ".join(plan.applied))
    else:
        log.info("reload: %s: nothing to apply", path)
    # In the history and to the hooks (the new ones, if they changed).
    said = [f"applied: {', '.join(plan.applied) or 'nothing'}"]
    if plan.refused:
        said.append(f"not applied (restart needed): {', '.join(plan.refused)}")
    sup.parts.notify(sup.state, "reloaded", "; ".join(said))
    return plan


def _apply(sup: Reloadable, cfg: Config, keys: tuple[str, ...]) -> None:
    parts = sup.parts
    sup.cfg = parts.cfg = sup.alerts.cfg = cfg
    sup.params = parts.params = params(cfg)
    if "log.level" in keys:
        logging.getLogger().setLevel(cfg.log.level.upper())
    if "hooks.on_event" in keys or "hooks.timeout_ms" in keys:
        old_hooks, hooks = parts.hooks, HookRunner(cfg.hooks.on_event, cfg.hooks.timeout_ms / 1000)
        hooks.start()
        sup.hooks = parts.hooks = hooks
        _stop_later(old_hooks.stop)  # the events it has queued still run, on its thread
    if "check" in keys:
        old_checks, checks = parts.checks, CheckRunner(cfg.checks)
        checks.on_change = old_checks.on_change
        checks.start()
        sup.checks = parts.checks = checks
        old_checks.stop(timeout=0)  # its threads end after the check they run
    parts.heartbeat.settings = parts.settings.reconfigure(cfg)  # lag bounds are shared


def _stop_later(stop: Callable[[], object]) -> None:
    threading.Thread(target=stop, name="dbha-reload", daemon=True).start()
