"""What a reload (SIGHUP) applies and what it refuses: the pure diff of two configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from dbha import config
from dbha.config.digest import digest, shared_settings
from dbha.node.reload import LIVE, changes, merge, split

CONF = Path(__file__).resolve().parents[2] / "conf"


def _a() -> config.Config:
    return config.load(CONF / "postgresql-a.toml")


def _with(cfg: config.Config, section: str, **values: Any) -> config.Config:
    return dataclasses.replace(
        cfg, **{section: dataclasses.replace(getattr(cfg, section), **values)}
    )


def test_the_same_file_changes_nothing() -> None:
    assert changes(_a(), _a()) == []
    plan = split(_a(), _a())
    assert plan.applied == () and plan.refused == ()


CHECK = config.CheckConfig("true", ("/bin/true",), 1000, 500, 2, 2)

LIVE_CHANGES = [
    ("log", {"level": "debug"}, "log.level"),
    ("hooks", {"on_event": (Path("/usr/local/bin/hook"),)}, "hooks.on_event"),
    ("hooks", {"timeout_ms": 900}, "hooks.timeout_ms"),
    ("replication", {"max_lag_bytes": 1}, "replication.max_lag_bytes"),
    ("replication", {"max_lag_transactions": 1}, "replication.max_lag_transactions"),
    ("replication", {"max_lag_seconds": 1.5}, "replication.max_lag_seconds"),
    ("service", {"auto_rejoin": True}, "service.auto_rejoin"),
]


@pytest.mark.parametrize(("section", "values", "key"), LIVE_CHANGES)
def test_live_keys_are_applied(section: str, values: dict[str, Any], key: str) -> None:
    old = _a()
    new = _with(old, section, **values)
    plan = split(old, new)
    assert plan.applied == (key,) and plan.refused == ()
    merged = merge(old, new, plan.applied)
    assert getattr(getattr(merged, section), key.split(".")[1]) == next(iter(values.values()))
    assert changes(merged, new) == []


def test_the_check_list_is_applied_whole() -> None:
    old = _a()
    new = dataclasses.replace(old, checks=(CHECK,))
    plan = split(old, new)
    assert plan.applied == ("check",) and plan.refused == ()
    assert merge(old, new, plan.applied).checks == (CHECK,)


REFUSED = [
    ("node", {"name": "c"}, "node.name"),
    ("peer", {"name": "c"}, "peer.name"),
    ("vip", {"interface": "eth9"}, "vip.interface"),
    ("database", {"port": 6543}, "database.port"),
    ("database", {"engine": "mariadb"}, "database.engine"),
    ("heartbeat", {"interval_ms": 200}, "heartbeat.interval_ms"),
    ("heartbeat", {"key_file": Path("/elsewhere/key")}, "heartbeat.key_file"),
    ("heartbeat", {"paths": ()}, "heartbeat.path"),
    ("service", {"state_dir": Path("/elsewhere")}, "service.state_dir"),
    ("service", {"control_socket": Path("/elsewhere.sock")}, "service.control_socket"),
    ("fence", {"self_fence_deadline_ms": 2000}, "fence.self_fence_deadline_ms"),
    ("replication", {"mode": "sync"}, "replication.mode"),
    ("log", {"format": "json"}, "log.format"),
]


@pytest.mark.parametrize(("section", "values", "key"), REFUSED)
def test_keys_that_need_a_restart_are_refused(
    section: str, values: dict[str, Any], key: str
) -> None:
    old = _a()
    new = _with(old, section, **values)
    plan = split(old, new)
    assert plan.refused == (key,) and plan.applied == ()
    assert key not in LIVE
    with pytest.raises(ValueError, match=key):
        merge(old, new, (key,))


def test_a_mixed_change_applies_the_live_part_and_keeps_the_rest() -> None:
    old = _a()
    new = _with(_with(old, "replication", max_lag_bytes=5), "heartbeat", interval_ms=200)
    plan = split(old, new)
    assert plan.applied == ("replication.max_lag_bytes",)
    assert plan.refused == ("heartbeat.interval_ms",)
    merged = merge(old, new, plan.applied)
    assert merged.replication.max_lag_bytes == 5
    assert merged.heartbeat.interval_ms == old.heartbeat.interval_ms
    # A shared key applied live changes the digest the beats carry.
    kid = "00000000"
    assert digest(shared_settings(merged, kid)) != digest(shared_settings(old, kid))


def test_every_live_key_is_a_key_of_the_config() -> None:
    flat_keys = set(changes(_a(), dataclasses.replace(_a(), checks=(CHECK,)))) | {
        k for s, v, k in LIVE_CHANGES
    }
    assert flat_keys == LIVE
