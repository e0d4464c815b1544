"""The pair's shared settings: one digest for the same settings, a new one for any
change of a shared key, the same one whatever a per-node key says; and the beats
that carry it, from this release and from an older one."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from dbha import config
from dbha.beat.wire import MAGIC, VERSION, Beat, DbSummary, Drop, DropReason, decode, encode
from dbha.config.digest import (
    DIGEST_LEN,
    differing,
    digest,
    key_id,
    mismatch_text,
    shared_settings,
)
from dbha.core.model import NodeRole

CONF = Path(__file__).resolve().parents[2] / "conf"
KEY = b"k" * 32
KID = key_id(KEY)


def _load(name: str) -> config.Config:
    return config.load(CONF / name)


def _with(cfg: config.Config, section: str, **values: Any) -> config.Config:
    return dataclasses.replace(
        cfg, **{section: dataclasses.replace(getattr(cfg, section), **values)}
    )


def _digest(cfg: config.Config, kid: str = KID) -> str:
    return digest(shared_settings(cfg, kid))


@pytest.mark.parametrize("engine", ["postgresql", "mariadb"])
def test_the_two_nodes_of_an_example_pair_share_their_settings(engine: str) -> None:
    a, b = _load(f"{engine}-a.toml"), _load(f"{engine}-b.toml")
    assert a.node.name != b.node.name
    assert shared_settings(a, KID) == shared_settings(b, KID)
    assert _digest(a) == _digest(b)
    assert len(_digest(a)) == DIGEST_LEN and int(_digest(a), 16) >= 0


# One change of each shared key (section, field, new value) -> the key it shows as.
SHARED = [
    ("heartbeat", {"interval_ms": 150}, "heartbeat.interval_ms"),
    ("heartbeat", {"misses": 7}, "heartbeat.misses"),
    ("heartbeat", {"rise": 4}, "heartbeat.rise"),
    ("fence", {"self_fence_deadline_ms": 1500}, "fence.self_fence_deadline_ms"),
    ("replication", {"mode": "sync"}, "replication.mode"),
    ("replication", {"sync_fallback": "fallback"}, "replication.sync_fallback"),
    ("replication", {"max_lag_bytes": 2 * 1024 * 1024}, "replication.max_lag_bytes"),
    ("replication", {"max_lag_transactions": 7}, "replication.max_lag_transactions"),
    ("replication", {"max_lag_seconds": 4.5}, "replication.max_lag_seconds"),
    ("service", {"cron_period_ms": 30_000}, "service.cron_period_ms"),
    ("database", {"engine": "mariadb"}, "database.engine"),
]


@pytest.mark.parametrize(("section", "values", "key"), SHARED)
def test_any_shared_key_changes_the_digest(section: str, values: dict[str, Any], key: str) -> None:
    a = _load("postgresql-a.toml")
    changed = _with(a, section, **values)
    assert _digest(changed) != _digest(a)
    assert differing(shared_settings(a, KID), shared_settings(changed, KID)) == [key]


def test_the_vip_paths_and_key_id_are_shared() -> None:
    a = _load("postgresql-a.toml")
    vip = _with(a, "vip", address=config.load(CONF / "mariadb-a.toml").vip.address)
    assert a.vip.address != vip.vip.address and _digest(vip) != _digest(a)
    p0 = a.heartbeat.paths[0]
    moved = _with(a, "heartbeat", paths=(dataclasses.replace(p0, port=p0.port + 1),))
    assert _digest(moved) != _digest(a)
    assert _digest(a, key_id(b"o" * 32)) != _digest(a)


# Per-node keys: a node's own names, addresses, files, commands and local timeouts.
NOT_SHARED = [
    ("log", {"level": "debug"}),
    ("log", {"format": "json"}),
    ("vip", {"interface": "eth9"}),
    ("vip", {"arp_count": 5}),
    ("database", {"port": 6543}),
    ("database", {"probe_interval_ms": 250}),
    ("database", {"password_file": Path("/elsewhere/pw")}),
    ("hooks", {"timeout_ms": 1234}),
    ("safety", {"timeout_ms": 222}),
    ("service", {"auto_rejoin": True}),
    ("fence", {"command": ("/bin/true",)}),
    ("heartbeat", {"key_file": Path("/elsewhere/key")}),
]


@pytest.mark.parametrize(("section", "values"), NOT_SHARED)
def test_per_node_keys_leave_the_digest_alone(section: str, values: dict[str, Any]) -> None:
    a = _load("postgresql-a.toml")
    changed = _with(a, section, **values)
    assert changed != a
    assert _digest(changed) == _digest(a)


def test_the_key_id_says_nothing_of_the_key() -> None:
    kid = key_id(KEY)
    assert len(kid) == 8 and kid == key_id(KEY) and kid != key_id(b"o" * 32)
    assert kid not in KEY.hex() and kid not in hashlib.sha256(KEY).hexdigest()
    assert KEY.decode() not in json.dumps(shared_settings(_load("postgresql-a.toml"), kid))


def test_the_check_line_of_a_status_settings_field() -> None:
    assert mismatch_text(None) is None
    assert mismatch_text({"match": True, "differ": []}) is None
    assert mismatch_text({"match": None}) is None  # the peer's digest is unknown
    text = mismatch_text({"match": False, "peer": "b", "differ": ["replication.max_lag_bytes"]})
    assert text == "settings differ from b: replication.max_lag_bytes"
    assert "not known yet" in (mismatch_text({"match": False, "peer": "b", "differ": None}) or "")


# ----------------------------------------------------------------- the wire


def _beat(**over: object) -> Beat:
    base = Beat("pg", "b", "lan", "b0" * 16, 1, 3, NodeRole.REPLICA, DbSummary(True, False, "x"))
    return dataclasses.replace(base, **over)  # type: ignore[arg-type]


def test_a_beat_carries_the_digest_both_ways() -> None:
    d = _digest(_load("postgresql-a.toml"))
    b = _beat(settings=d)
    data = encode(b, KEY)
    assert b'"cfg":"' + d.encode() + b'"' in data
    assert decode(data, KEY) == b


def test_a_beat_from_an_older_sender_without_the_digest_is_admitted() -> None:
    # The payload exactly as the release before the digest wrote it (no "cfg").
    body = {
        "svc": "pg", "node": "b", "path": "lan", "boot": "b0" * 16, "seq": 1, "epoch": 3,
        "role": "replica", "db": {"up": True, "rw": False, "pos": "x"}, "maint": False,
        "sent": 0.0, "echo": {"boot": "", "seq": 0}, "resync": False, "mark": None,
        "elig": False,
    }  # fmt: skip
    head = MAGIC + bytes([VERSION]) + json.dumps(body, separators=(",", ":")).encode()
    got = decode(head + hmac.new(KEY, head, hashlib.sha256).digest(), KEY)
    assert isinstance(got, Beat)
    assert got.settings == "" and got == _beat()
    assert b'"cfg"' not in encode(_beat(), KEY)  # and a beat without one sends none


@pytest.mark.parametrize("bad", ["XYZ", "0" * 15, "A" * 16, 12])
def test_a_malformed_digest_is_dropped(bad: object) -> None:
    with pytest.raises(ValueError, match="settings"):
        _beat(settings=bad)
    data = encode(_beat(), KEY)
    signed = data[: -hashlib.sha256().digest_size]
    body = json.loads(signed[len(MAGIC) + 1 :])
    body["cfg"] = bad
    head = MAGIC + bytes([VERSION]) + json.dumps(body).encode()
    got = decode(head + hmac.new(KEY, head, hashlib.sha256).digest(), KEY)
    assert isinstance(got, Drop) and got.reason is DropReason.MALFORMED
