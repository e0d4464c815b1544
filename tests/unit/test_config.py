"""The config layer: examples load, every mistake is named, secrets stay secret.

Most tests start from one small valid config (``BASE``), change one thing
(a key set to a value, or deleted), render it back to TOML and load it: the
table ``MISTAKES`` lists each change and the one problem line it must produce.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from dbha import config
from dbha.cli import main
from dbha.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "conf").glob("*.toml"))

DELETE = object()

# Node a of the lab's PostgreSQL pair, with only the required keys (plus the
# password file), so every default is exercised.
BASE: dict[str, Any] = {
    "service": {"id": "pg"},
    "node": {"name": "a"},
    "peer": {"name": "b"},
    "database": {
        "engine": "postgresql",
        "password_file": "/etc/dbha/pg.password",
        "data_directory": "/var/lib/postgresql/15/main",
        "replication_passfile": "/var/lib/postgresql/.pgpass-dbha",
    },
    "heartbeat": {
        "key_file": "/etc/dbha/heartbeat.key",
        "path": [
            {
                "name": "lan",
                "local_address": "198.18.0.11",
                "peer_address": "198.18.0.12",
                "port": 5405,
            },
            {
                "name": "hb",
                "local_address": "198.18.1.1",
                "peer_address": "198.18.1.2",
                "port": 5405,
            },
        ],
    },
    "safety": {"target": [{"kind": "icmp", "host": "198.18.0.1"}]},
    "vip": {"address": "198.18.0.100/24", "interface": "eth0"},
}


# ------------------------------------------------------------------- helpers


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{ " + ", ".join(f"{k} = {_literal(v)}" for k, v in value.items()) + " }"


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def render(data: dict[str, Any], prefix: str = "") -> str:
    """Render nested dicts as TOML: tables as [x], arrays of tables as [[x]]."""
    lines = [
        f"{k} = {_literal(v)}"
        for k, v in data.items()
        if not isinstance(v, dict) and not _is_table_array(v)
    ]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += [f"\n[{prefix}{k}]", render(v, f"{prefix}{k}.")]
        elif _is_table_array(v):
            for item in v:
                lines += [f"\n[[{prefix}{k}]]", render(item, f"{prefix}{k}.")]
    return "\n".join(lines)


def mutate(base: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with dotted ``key`` (``a.b[1].c``) set to ``value`` or deleted."""
    data = copy.deepcopy(base)
    parts: list[Any] = [
        int(p[1:-1]) if p.startswith("[") else p for p in re.findall(r"[^.\[\]]+|\[\d+\]", key)
    ]
    node: Any = data
    for part in parts[:-1]:
        node = node[part] if isinstance(part, int) else node.setdefault(part, {})
    if value is not DELETE:
        node[parts[-1]] = value
    elif isinstance(parts[-1], int) or parts[-1] in node:
        del node[parts[-1]]
    return data


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.loads(text, "test.toml")
    assert info.value.path == "test.toml"
    return info.value.problems


def changed(*changes: tuple[str, Any]) -> str:
    data = BASE
    for key, value in changes:
        data = mutate(data, key, value)
    return render(data)


def test_base_is_valid() -> None:
    cfg = config.loads(render(BASE))
    assert cfg.node.name == "a" and cfg.peer.name == "b"


# ------------------------------------------------------------------ examples


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_config_loads(path: Path) -> None:
    cfg = config.load(path)
    assert cfg.source == str(path)
    assert str(cfg.heartbeat.key_file) == "/etc/dbha/heartbeat.key"
    assert [p.name for p in cfg.heartbeat.paths] == ["lan", "hb"]
    assert config.summary(cfg)


def test_the_four_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"postgresql-a.toml", "postgresql-b.toml", "mariadb-a.toml", "mariadb-b.toml"} <= names


LAB = {  # the lab's fixed facts (dbha/lab/topology.py)
    "a": ("198.18.0.11", "198.18.1.1"),
    "b": ("198.18.0.12", "198.18.1.2"),
    "postgresql": ("pg", 5432, "198.18.0.100/24", 5405),
    "mariadb": ("mariadb", 3306, "198.18.0.101/24", 5406),
}


@pytest.mark.parametrize("engine", ["postgresql", "mariadb"])
@pytest.mark.parametrize(("me", "other"), [("a", "b"), ("b", "a")])
def test_examples_match_the_lab(engine: str, me: str, other: str) -> None:
    cfg = config.load(REPO / "conf" / f"{engine}-{me}.toml")
    sid, port, vip, hb_port = LAB[engine]
    assert (cfg.service.id, cfg.database.engine, cfg.database.port) == (sid, engine, port)
    assert (cfg.node.name, cfg.peer.name) == (me, other)
    assert str(cfg.vip.address) == vip and cfg.vip.interface == "eth0"
    ends = [(str(p.local_address), str(p.peer_address), p.port) for p in cfg.heartbeat.paths]
    assert ends == [(LAB[me][0], LAB[other][0], hb_port), (LAB[me][1], LAB[other][1], hb_port)]
    assert [str(a) for a in cfg.peer.addresses] == list(LAB[other])
    assert [str(t) for t in cfg.safety.targets] == ["icmp 198.18.0.1"]
    assert cfg.database.user == "dbha"
    assert str(cfg.database.password_file) == f"/etc/dbha/{sid}.password"
    assert str(cfg.service.state_dir) == f"/var/lib/dbha/{sid}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_key_in_the_examples_has_a_comment(path: Path) -> None:
    key = re.compile(r"^#? ?[a-z_]+ = ")  # a key, or a commented-out example of one
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if key.match(line):
            above = lines[i - 1]
            assert above.startswith("#") and not key.match(above), f"{path.name}:{i + 1}: {line}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_commented_out_examples_are_valid_too(path: Path) -> None:
    text = re.sub(r"(?m)^# ([a-z_]+ = |\[\[?[a-z.]+\]\]?$)", r"\1", path.read_text())
    text = re.sub(r"(?m)^(socket|port = 443).*$", "", text)  # alternatives to what is set
    text = text.replace('mode = "async"', 'mode = "sync"')
    text = text.replace('sync_fallback = "strict"', 'sync_fallback = "arbiter"')
    cfg = config.loads(text)
    assert cfg.arbiter is not None and cfg.checks and cfg.hooks.on_event and cfg.fence.command
    lines = config.summary(cfg).splitlines()
    assert len(lines) <= 24 and max(map(len, lines)) <= 100


def test_every_example_key_is_documented() -> None:
    docs = (REPO / "docs" / "config.md").read_text()
    keys = {m for path in EXAMPLES for m in re.findall(r"(?m)^#? ?([a-z_]+) = ", path.read_text())}
    assert keys and not {k for k in keys if f"| `{k}` |" not in docs}


# ------------------------------------------------------------------ defaults


def test_defaults_fill_every_optional_key() -> None:
    cfg = config.loads(render(BASE))
    assert cfg.service.state_dir == Path("/var/lib/dbha/pg")
    assert cfg.service.control_socket == Path("/run/dbha/pg.sock")
    assert cfg.service.auto_rejoin is False
    db = cfg.database
    assert (db.host, db.socket, db.port, db.user, db.dbname) == (
        "127.0.0.1",
        None,
        5432,
        "dbha",
        "postgres",
    )
    assert db.connect_timeout_ms == config.DEFAULT_CONNECT_TIMEOUT_MS
    assert db.statement_timeout_ms == config.DEFAULT_STATEMENT_TIMEOUT_MS
    assert cfg.heartbeat.interval_ms == config.DEFAULT_HEARTBEAT_INTERVAL_MS
    assert cfg.heartbeat.misses == config.DEFAULT_HEARTBEAT_MISSES
    assert cfg.heartbeat.rise == config.DEFAULT_HEARTBEAT_RISE
    assert cfg.heartbeat.peer_silent_after_ms == 500
    assert cfg.peer.addresses == (
        ipaddress.ip_address("198.18.0.12"),
        ipaddress.ip_address("198.18.1.2"),
    )
    assert cfg.safety.timeout_ms == config.DEFAULT_SAFETY_TIMEOUT_MS
    assert cfg.fence == config.FenceConfig(
        config.DEFAULT_SELF_FENCE_DEADLINE_MS, None, config.DEFAULT_FENCE_COMMAND_TIMEOUT_MS
    )
    assert (cfg.vip.arp_count, cfg.vip.arp_interval_ms, cfg.vip.arp_probe_ms) == (3, 200, 200)
    assert cfg.replication == config.ReplicationConfig("async", "strict", 1024 * 1024, 100, 10.0)
    assert cfg.arbiter is None
    assert cfg.hooks == config.HooksConfig((), config.DEFAULT_HOOK_TIMEOUT_MS)
    assert cfg.checks == ()
    assert cfg.log == config.LogConfig("text", "info")


TO_MARIADB = [
    ("database.engine", "mariadb"),
    ("database.data_directory", DELETE),
    ("database.replication_passfile", DELETE),
    ("database.replication_password_file", "/etc/dbha/repl.password"),
]


def test_mariadb_defaults() -> None:
    cfg = config.loads(changed(*TO_MARIADB))
    assert (cfg.database.port, cfg.database.dbname) == (3306, "mysql")
    assert (cfg.database.os_user, cfg.database.replication_user) == ("mysql", "repl")
    assert not cfg.database.is_postgresql


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            [("database.data_directory", DELETE)],
            ['database.data_directory: required with database.engine = "postgresql"'],
        ),
        (
            [("database.replication_password_file", "/x")],
            ["database.replication_password_file: is not used with this database.engine"],
        ),
        (
            [*TO_MARIADB[:3]],
            ['database.replication_password_file: required with database.engine = "mariadb"'],
        ),
        (
            [*TO_MARIADB, ("database.data_directory", "/var/lib/mysql")],
            ["database.data_directory: is not used with this database.engine"],
        ),
    ],
)
def test_engine_specific_database_keys(changes: list[tuple[str, Any]], expected: list[str]) -> None:
    problems = problems_of(changed(*changes))
    assert len(problems) == len(expected), problems
    for p, e in zip(problems, expected, strict=True):
        assert p.startswith(e), problems


def test_defaults_leave_room_for_the_fence_deadline() -> None:
    silent = config.DEFAULT_HEARTBEAT_INTERVAL_MS * config.DEFAULT_HEARTBEAT_MISSES
    assert silent + config.DEFAULT_SAFETY_TIMEOUT_MS < config.DEFAULT_SELF_FENCE_DEADLINE_MS


def test_config_is_frozen() -> None:
    cfg = config.loads(render(BASE))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.heartbeat.interval_ms = 5  # type: ignore[misc]


def test_optional_features_load() -> None:
    cfg = config.loads(
        changed(
            ("database.socket", "/var/run/postgresql"),
            ("fence.command", ["/usr/local/sbin/fence-peer", "--node", "b"]),
            ("replication.mode", "sync"),
            ("replication.sync_fallback", "arbiter"),
            ("arbiter", {"endpoints": ["http://198.18.0.5:2379", "https://[2001:db8::5]:2379"]}),
            ("hooks.on_event", "/usr/local/lib/dbha/notify"),
            ("check", [{"name": "ready", "argv": ["/usr/bin/pg_isready", "-q"]}]),
            (
                "safety.target",
                [
                    {"kind": "icmp", "host": "198.18.0.1"},
                    {"kind": "tcp", "host": "198.18.0.1", "port": 53},
                ],
            ),
        )
    )
    assert cfg.database.host is None and cfg.database.socket == Path("/var/run/postgresql")
    assert cfg.fence.command == ("/usr/local/sbin/fence-peer", "--node", "b")
    assert cfg.arbiter is not None and cfg.arbiter.key == "/dbha/pg/sync-lease"
    assert cfg.hooks.on_event == (Path("/usr/local/lib/dbha/notify"),)
    assert cfg.checks[0] == config.CheckConfig(
        "ready", ("/usr/bin/pg_isready", "-q"), 2000, 1000, 3, 2
    )
    assert [str(t) for t in cfg.safety.targets] == ["icmp 198.18.0.1", "tcp 198.18.0.1:53"]


def test_ipv6_config_loads() -> None:
    cfg = config.loads(
        changed(
            (
                "heartbeat.path",
                [
                    {
                        "name": "lan",
                        "local_address": "2001:db8::11",
                        "peer_address": "2001:db8::12",
                        "port": 5405,
                    }
                ],
            ),
            ("vip.address", "2001:db8::100/64"),
            ("safety.target", [{"kind": "tcp", "host": "2001:db8::1", "port": 443}]),
        )
    )
    assert cfg.vip.address.ip == ipaddress.ip_address("2001:db8::100")
    assert str(cfg.safety.targets[0]) == "tcp [2001:db8::1]:443"


# ------------------------------------------------------------------ mistakes

MISTAKES: list[tuple[str, Any, str]] = [
    # types and ranges
    ("heartbeat.interval_ms", -5, "heartbeat.interval_ms = -5: must be between 10 and 60000"),
    ("heartbeat.interval_ms", "fast", 'heartbeat.interval_ms = "fast": must be an integer'),
    ("heartbeat.interval_ms", True, "heartbeat.interval_ms = true: must be an integer"),
    ("heartbeat.interval_ms", 1.5, "heartbeat.interval_ms = 1.5: must be an integer"),
    ("heartbeat.misses", 1, "heartbeat.misses = 1: must be between 2 and 100"),
    ("heartbeat.rise", 0, "heartbeat.rise = 0: must be between 1 and 100"),
    (
        "heartbeat.path[1].port",
        70000,
        "heartbeat.path[1].port = 70000: must be between 1 and 65535",
    ),
    (
        "heartbeat.path[0].local_address",
        "198.18.0.300",
        'heartbeat.path[0].local_address = "198.18.0.300": must be an IP address',
    ),
    (
        "heartbeat.key_file",
        "heartbeat.key",
        'heartbeat.key_file = "heartbeat.key": must be an absolute',
    ),
    ("safety.target[0].host", "0.0.0.0", 'safety.target[0].host = "0.0.0.0": must be the address'),
    ("heartbeat.path[1].peer_address", "224.0.0.18", "(not unspecified or multicast)"),
    ("database.port", True, "database.port = true: must be an integer"),
    (
        "database.engine",
        "postgres",
        'database.engine = "postgres": must be one of "postgresql", "mariadb", "mysql" '
        '(did you mean "postgresql"?)',
    ),
    (
        "database.password_file",
        "pg.password",
        'database.password_file = "pg.password": must be an abs',
    ),
    ("database.connect_timeout_ms", 0, "database.connect_timeout_ms = 0: must be between 100 and"),
    (
        "database.statement_timeout_ms",
        10**7,
        "database.statement_timeout_ms = 10000000: must be bet",
    ),
    ("service.id", "PG", 'service.id = "PG": must be 1-32 lowercase letters'),
    (
        "service.state_dir",
        "var/lib/dbha",
        'service.state_dir = "var/lib/dbha": must be an absolute',
    ),
    ("service.control_socket", "/run/" + "x" * 120, 'service.control_socket = "/run/xxx'),
    ("service.auto_rejoin", "yes", 'service.auto_rejoin = "yes": must be true or false'),
    ("node.name", "", 'node.name = "": must be 1-63 letters'),
    ("vip.address", "198.18.0.100", 'vip.address = "198.18.0.100": must include the prefix length'),
    ("vip.address", "198.18.0.0/24", 'vip.address = "198.18.0.0/24": is the network address'),
    ("vip.address", "198.18.0.255/24", "is the broadcast address of 198.18.0.0/24"),
    ("vip.interface", "eth0 x", 'vip.interface = "eth0 x": must be a network interface name'),
    ("vip.arp_count", 0, "vip.arp_count = 0: must be between 1 and 100"),
    ("vip.arp_interval_ms", "1s", 'vip.arp_interval_ms = "1s": must be an integer'),
    ("vip.arp_probe_ms", 5, "vip.arp_probe_ms = 5: must be between 10 and 10000"),
    ("safety.timeout_ms", 0, "safety.timeout_ms = 0: must be between 10 and 10000"),
    ("safety.target[0].kind", "udp", 'safety.target[0].kind = "udp": must be one of "icmp", "tcp"'),
    ("safety.target[0].host", "gw.example", 'safety.target[0].host = "gw.example": must be an IP'),
    ("fence.self_fence_deadline_ms", 50, "fence.self_fence_deadline_ms = 50: must be between 100"),
    ("fence.command", "/usr/sbin/fence", 'fence.command = "/usr/sbin/fence": must be an array'),
    ("fence.command", ["fence-peer"], 'fence.command[0] = "fence-peer": must be an absolute path'),
    ("fence.command", ["/bin/fence", 3], "fence.command[1] = 3: must be a string"),
    ("fence.command", [], "fence.command = []: must have at least 1 item"),
    ("replication.mode", "semi", 'replication.mode = "semi": must be one of "sync", "async"'),
    ("replication.max_lag_bytes", -1, "replication.max_lag_bytes = -1: must be between 0 and"),
    ("replication.max_lag_seconds", -0.5, "replication.max_lag_seconds = -0.5: must be between 0"),
    ("replication.max_lag_seconds", math.nan, "replication.max_lag_seconds = nan: must be between"),
    ("replication.max_lag_seconds", "10s", 'replication.max_lag_seconds = "10s": must be a number'),
    ("hooks.on_event", "notify", 'hooks.on_event = "notify": must be an absolute path'),
    ("hooks.on_event", ["/bin/a", 3], "hooks.on_event[1] = 3: must be a string"),
    ("hooks.timeout_ms", -1, "hooks.timeout_ms = -1: must be between 100 and 600000"),
    ("log.format", "xml", 'log.format = "xml": must be one of "text", "json"'),
    ("log.level", "infos", '(did you mean "info"?)'),
    (
        "check",
        [{"name": "c", "argv": ["/bin/true"], "fall": 0}],
        "check[0].fall = 0: must be between 1 and 100",
    ),
    (
        "check",
        [{"name": "c", "argv": ["/bin/true"], "rise": 0}],
        "check[0].rise = 0: must be between 1 and 100",
    ),
    ("check", [{"name": "c", "argv": []}], "check[0].argv = []: must have at least 1 item"),
    ("check", [{"argv": ["/bin/true"]}], "check[0].name: required key is missing"),
    # missing keys, unknown keys, wrong shapes
    ("node.name", DELETE, "node.name: required key is missing"),
    ("vip.address", DELETE, "vip.address: required key is missing"),
    ("heartbeat.key_file", DELETE, "heartbeat.key_file: required key is missing"),
    ("heartbeat.path", DELETE, "heartbeat.path: required key is missing"),
    ("heartbeat.path", [], "heartbeat.path = []: must have at least 1 entry"),
    ("heartbeat.path", {"name": "lan"}, 'heartbeat.path = { name = "lan" }: must be an array of'),
    ("safety.target", DELETE, "safety.target: required key is missing"),
    ("heartbeat", 5, "heartbeat = 5: must be a table"),
    (
        "heartbeat.intervl_ms",
        100,
        "heartbeat.intervl_ms: unknown key (did you mean heartbeat.interval_ms?)",
    ),
    (
        "heartbeat.path[1].prot",
        5405,
        "heartbeat.path[1].prot: unknown key (did you mean heartbeat.path[1].port?)",
    ),
    (
        "database.max_lag_bytes",
        5,
        "database.max_lag_bytes: unknown key (did you mean replication.max_lag_bytes?)",
    ),
    ("interval_ms", 100, "interval_ms: unknown key (did you mean heartbeat.interval_ms?)"),
    ("database.colour", "blue", "database.colour: unknown key"),
    ("database.password", "hunter2", "database.password: passwords are not allowed in the config"),
    ("heartbeat.key", "s3cret", "heartbeat.key: keys are not allowed in the config file"),
    # cross-field rules
    ("peer.name", "a", 'peer.name = "a": must differ from node.name'),
    (
        "fence.self_fence_deadline_ms",
        500,
        "fence.self_fence_deadline_ms = 500: must be longer than heartbeat.interval_ms * "
        "heartbeat.misses (100 * 5 = 500)",
    ),
    (
        "fence.self_fence_deadline_ms",
        800,
        "fence.self_fence_deadline_ms = 800: must be longer than heartbeat.interval_ms * "
        "heartbeat.misses + safety.timeout_ms (500 + 300 = 800)",
    ),
    (
        "vip.address",
        "198.18.7.100/24",
        'vip.address = "198.18.7.100/24": is not in the subnet of any local address of this node',
    ),
    ("vip.address", "198.18.0.12/24", "198.18.0.12 is an address of this node or its peer"),
    ("vip.address", "198.18.1.1/24", "198.18.1.1 is an address of this node or its peer"),
    (
        "heartbeat.path[1].name",
        "lan",
        'heartbeat.path[1].name = "lan": is also the name of heartbeat.path[0]',
    ),
    (
        "heartbeat.path[0].peer_address",
        "198.18.0.11",
        'heartbeat.path[0].peer_address = "198.18.0.11": must differ from local_address',
    ),
    ("heartbeat.path[0].peer_address", "2001:db8::12", "is IPv6 but local_address is IPv4"),
    (
        "peer.addresses",
        ["198.18.0.12"],
        'heartbeat.path[1].peer_address = "198.18.1.2": is not in peer.addresses',
    ),
    (
        "peer.addresses",
        ["198.18.0.12", "198.18.1.2", "198.18.0.11"],
        'heartbeat.path[0].local_address = "198.18.0.11": is also in peer.addresses',
    ),
    ("peer.addresses", ["198.18.0.12", "x"], 'peer.addresses[1] = "x": must be an IP address'),
    (
        "safety.target[0].kind",
        "tcp",
        'safety.target[0].port: required key is missing (kind = "tcp" needs a port)',
    ),
    ("safety.target[0].port", 53, 'safety.target[0].port = 53: only used with kind = "tcp"'),
    (
        "safety.target[0].host",
        "198.18.0.12",
        'safety.target[0].host = "198.18.0.12": is an address of the peer',
    ),
    ("safety.target[0].host", "198.18.1.1", "is an address of this node"),
    ("safety.target[0].host", "198.18.0.100", "is the VIP"),
    (
        "replication.sync_fallback",
        "fallback",
        'replication.sync_fallback = "fallback": only used with replication.mode = "sync"',
    ),
    (
        "replication.max_lag_transactions",
        5,
        "replication.max_lag_transactions = 5: only used with "
        'database.engine = "mariadb" or "mysql"',
    ),
    (
        "arbiter",
        {"endpoints": ["http://198.18.0.5:2379"]},
        'arbiter: only used with replication.mode = "sync" and '
        'replication.sync_fallback = "arbiter"',
    ),
    (
        "check",
        [{"name": "c", "argv": ["/bin/true"], "interval_ms": 1000, "timeout_ms": 1000}],
        "check[0].timeout_ms = 1000: must be shorter than check[0].interval_ms (1000)",
    ),
    (
        "check",
        [{"name": "c", "argv": ["/bin/true"]}, {"name": "c", "argv": ["/bin/false"]}],
        'check[1].name = "c": is also the name of check[0]',
    ),
]


@pytest.mark.parametrize(
    ("key", "value", "expected"), MISTAKES, ids=[f"{k}={v!r:.30}" for k, v, _ in MISTAKES]
)
def test_each_mistake_gives_exactly_its_message(key: str, value: Any, expected: str) -> None:
    problems = problems_of(changed((key, value)))
    assert len(problems) == 1, problems
    assert expected in problems[0]


MULTI: list[tuple[list[tuple[str, Any]], list[str]]] = [
    (
        [("database.host", "db.local"), ("database.socket", "/var/run/postgresql")],
        ['database.socket = "/var/run/postgresql": cannot be used together with database.host'],
    ),
    (
        [*TO_MARIADB, ("replication.max_lag_bytes", 5)],
        ['replication.max_lag_bytes = 5: only used with database.engine = "postgresql"'],
    ),
    (
        [("replication.mode", "sync"), ("replication.sync_fallback", "arbiter")],
        ['arbiter: required when replication.sync_fallback = "arbiter"'],
    ),
    (
        [
            ("replication.mode", "sync"),
            ("replication.sync_fallback", "arbiter"),
            (
                "arbiter",
                {"endpoints": ["http://u:pw@198.18.0.5:2379", "ftp://x"], "timeout_ms": 6000},
            ),
        ],
        [
            'arbiter.endpoints[0] = "http://u:pw@198.18.0.5:2379": must not contain credentials',
            'arbiter.endpoints[1] = "ftp://x": must be a URL like',
            "arbiter.timeout_ms = 6000: must be shorter than arbiter.lease_ttl_ms (5000)",
        ],
    ),
    (
        [
            (
                "heartbeat.path[1]",
                {
                    "name": "lan2",
                    "local_address": "198.18.0.11",
                    "peer_address": "198.18.0.12",
                    "port": 5405,
                },
            )
        ],
        [
            "heartbeat.path[1].port = 5405: heartbeat.path[0] already has the same local_address, "
            "peer_address and port"
        ],
    ),
    (
        [
            (
                "safety.target",
                [{"kind": "icmp", "host": "198.18.0.1"}, {"kind": "icmp", "host": "198.18.0.1"}],
            )
        ],
        ['safety.target[1].host = "198.18.0.1": repeats safety.target[0]'],
    ),
]


@pytest.mark.parametrize(("changes", "expected"), MULTI)
def test_rules_across_keys(changes: list[tuple[str, Any]], expected: list[str]) -> None:
    problems = problems_of(changed(*changes))
    assert len(problems) == len(expected), problems
    for line, want in zip(problems, expected, strict=True):
        assert want in line


def test_every_problem_is_reported_in_one_pass() -> None:
    problems = problems_of(
        changed(("heartbeat.interval_ms", "fast"), ("heartbeat.intervl_ms", 100))
    )
    assert problems == [
        'heartbeat.interval_ms = "fast": must be an integer',
        "heartbeat.intervl_ms: unknown key (did you mean heartbeat.interval_ms?)",
    ]


def test_many_mistakes_at_once_are_all_named() -> None:
    changes = [
        (k, v)
        for k, v, want in MISTAKES
        if want
        and k.startswith(("log.", "service."))
        and k not in ("service.auto_rejoin", "service.control_socket")
    ]
    changes = list({k: (k, v) for k, v in changes}.values())
    problems = problems_of(changed(*changes))
    assert {p.split(" ")[0].rstrip(":") for p in problems} == {k for k, _ in changes}


def test_a_bad_value_is_reported_once() -> None:
    # The interval is wrong; the deadline rule that reads it must stay quiet.
    problems = problems_of(
        changed(("heartbeat.interval_ms", "fast"), ("fence.self_fence_deadline_ms", 200))
    )
    assert problems == ['heartbeat.interval_ms = "fast": must be an integer']


def test_inline_password_is_refused_and_never_echoed() -> None:
    problems = problems_of(changed(("database.password", "hunter2-very-secret")))
    assert len(problems) == 1
    assert problems[0].startswith("database.password: ")
    assert "password_file" in problems[0]
    assert "hunter2" not in problems[0]


def test_a_toml_syntax_error_names_line_and_column() -> None:
    problems = problems_of('[node]\nname = "a"\n[peer]\nname = \n')
    assert len(problems) == 1
    assert problems[0].startswith("TOML syntax error:")
    assert "line 4" in problems[0] and "column" in problems[0]


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path / "nope.toml")
    assert info.value.problems == ["cannot read the file: No such file or directory"]


def test_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        config.load(tmp_path)


def test_a_binary_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bin.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load(path)


def test_deep_nesting_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        config.loads("a = " + "[" * 5000 + "]" * 5000)


# Any value TOML can hold, placed at any key: the loader answers with a Config
# or a ConfigError, never with another exception.
toml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
KEYS = sorted(
    {
        *(k for k, _, _ in MISTAKES),
        "service",
        "node",
        "peer",
        "database",
        "heartbeat.path[0]",
        "safety.target[0]",
        "fence",
        "vip",
        "replication",
        "arbiter",
        "hooks",
        "check",
        "log",
        "database.host",
        "vip.interface",
    }
)


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value if v is not None]
    return value


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KEYS), toml_values), min_size=1, max_size=4))
def test_the_loader_never_raises_a_foreign_exception(changes: list[tuple[str, Any]]) -> None:
    data = BASE
    for key, value in changes:
        try:
            data = mutate(data, key, DELETE if value is None else _strip_none(value))
        except (LookupError, TypeError, AttributeError):
            continue  # an earlier change replaced a table on the way to ``key``
    try:
        config.from_dict(data)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    try:
        config.loads(text)
    except ConfigError as exc:
        assert exc.problems


# --------------------------------------------------------------- check_files


def _secret(path: Path, mode: int, content: str = "s3cret-marker-0123456789\n") -> Path:
    path.write_text(content)
    path.chmod(mode)
    return path


def _program(path: Path, mode: int = 0o755) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return path


def _with_files(tmp_path: Path, *changes: tuple[str, Any]) -> config.Config:
    password = tmp_path / "pg.password"
    key = tmp_path / "heartbeat.key"
    passfile = tmp_path / "pgpass"
    for path in (password, key, passfile):
        if not path.exists():
            _secret(path, 0o600)
    return config.loads(
        changed(
            ("database.password_file", str(password)),
            ("heartbeat.key_file", str(key)),
            ("database.replication_passfile", str(passfile)),
            *changes,
        )
    )


def test_check_files_accepts_private_files(tmp_path: Path) -> None:
    hook = _program(tmp_path / "notify")
    check = _program(tmp_path / "ready")
    fence = _program(tmp_path / "fence")
    cfg = _with_files(
        tmp_path,
        ("hooks.on_event", [str(hook)]),
        ("check", [{"name": "ready", "argv": [str(check)]}]),
        ("fence.command", [str(fence), "b"]),
    )
    assert config.check_files(cfg) == []


def test_check_files_refuses_a_world_readable_password(tmp_path: Path) -> None:
    password = _secret(tmp_path / "pg.password", 0o644)
    cfg = _with_files(tmp_path)
    assert config.check_files(cfg) == [
        f'database.password_file = "{password}": is readable by group or others (mode 0644); '
        "chmod 600 it"
    ]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (0o640, "is readable by group or others (mode 0640)"),
        (0o620, "is accessible by group or others (mode 0620)"),
        (0o400, None),
        (0o600, None),
    ],
)
def test_check_files_key_file_modes(tmp_path: Path, mode: int, expected: str | None) -> None:
    _secret(tmp_path / "heartbeat.key", mode)
    problems = config.check_files(_with_files(tmp_path))
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert problems[0].startswith("heartbeat.key_file = ") and expected in problems[0]


def test_check_files_missing_empty_short_and_not_regular(tmp_path: Path) -> None:
    (tmp_path / "pg.password").mkdir()
    _secret(tmp_path / "heartbeat.key", 0o600, content="short")
    cfg = _with_files(tmp_path)
    assert config.check_files(cfg) == [
        f'database.password_file = "{tmp_path}/pg.password": is not a regular file',
        f'heartbeat.key_file = "{tmp_path}/heartbeat.key": holds only 5 bytes; '
        "use at least 16 random bytes",
    ]
    cfg = dataclasses.replace(
        cfg, heartbeat=dataclasses.replace(cfg.heartbeat, key_file=tmp_path / "absent.key")
    )
    missing = f'heartbeat.key_file = "{tmp_path}/absent.key": does not exist'
    # A file absent on this host is a warning of its own, not a problem of the config.
    assert missing in config.missing_files(cfg)
    assert missing not in config.check_files(cfg)


def test_check_files_programs(tmp_path: Path) -> None:
    not_exec = _program(tmp_path / "notify", 0o644)
    writable = _program(tmp_path / "ready", 0o777)
    cfg = _with_files(
        tmp_path,
        ("hooks.on_event", [str(not_exec), str(tmp_path / "gone")]),
        ("check", [{"name": "ready", "argv": [str(writable)]}]),
        ("fence.command", [str(tmp_path)]),
    )
    assert config.check_files(cfg) == [
        f'fence.command[0] = "{tmp_path}": is not a regular file',
        f'hooks.on_event[0] = "{not_exec}": is not executable',
        f'check[0].argv[0] = "{writable}": is writable by anyone (mode 0777); chmod o-w it',
    ]
    assert config.missing_files(cfg) == [f'hooks.on_event[1] = "{tmp_path}/gone": does not exist']


def test_check_files_and_summary_never_show_a_secret(tmp_path: Path) -> None:
    _secret(tmp_path / "pg.password", 0o644, content="TOPSECRET-PASSWORD\n")
    _secret(tmp_path / "heartbeat.key", 0o644, content="TOPSECRET-HEARTBEAT-KEY\n")
    cfg = _with_files(tmp_path)
    out = "\n".join(config.check_files(cfg)) + config.summary(cfg) + repr(cfg)
    assert "TOPSECRET" not in out


# ------------------------------------------------------------------- summary


def test_summary_is_one_screen_and_says_what_matters() -> None:
    cfg = config.load(REPO / "conf" / "postgresql-a.toml")
    text = config.summary(cfg)
    lines = text.splitlines()
    assert len(lines) <= 24 and max(map(len, lines)) <= 100
    for fact in (
        "pg (postgresql)",
        "node a -> peer b",
        "198.18.0.11 -> 198.18.0.12 port 5405",
        "198.18.1.1 -> 198.18.1.2 port 5405",
        "198.18.0.100/24 on eth0",
        "async",
        "self-fence deadline 1000 ms",
        "500 ms",
        "icmp 198.18.0.1",
    ):
        assert fact in text, fact


def test_summary_shows_only_the_program_of_a_fence_command() -> None:
    cfg = config.loads(changed(("fence.command", ["/usr/sbin/fence_ipmilan", "-p", "ipmi-pw"])))
    text = config.summary(cfg)
    assert "/usr/sbin/fence_ipmilan (+2 args)" in text and "ipmi-pw" not in text


# ----------------------------------------------------------------------- CLI


def _config_file(tmp_path: Path, *changes: tuple[str, Any]) -> Path:
    """``pg-a.toml`` in ``tmp_path``, its secret files made (see _with_files)."""
    cfg = _with_files(tmp_path)
    path = tmp_path / "pg-a.toml"
    path.write_text(
        changed(
            ("database.password_file", str(cfg.database.password_file)),
            ("heartbeat.key_file", str(cfg.heartbeat.key_file)),
            *changes,
        )
    )
    return path


def test_cli_config_check_ok(tmp_path: Path) -> None:
    path = _config_file(tmp_path)
    result = CliRunner().invoke(main, ["config", "check", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{path}: OK" in result.output
    assert "node a -> peer b" in result.output
    assert "s3cret" not in result.output


def test_cli_config_check_reports_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(
        changed(
            ("heartbeat.interval_ms", "fast"), ("vip.interface", DELETE), ("vip.interfase", "eth0")
        )
    )
    result = CliRunner().invoke(main, ["config", "check", "-c", str(path)])
    assert result.exit_code == 1
    assert f"{path}: 3 problems" in result.output
    assert 'heartbeat.interval_ms = "fast": must be an integer' in result.output
    assert "vip.interfase: unknown key (did you mean vip.interface?)" in result.output
    assert "vip.interface: required key is missing" in result.output


def test_the_arbiter_is_refused_until_it_is_available(tmp_path: Path) -> None:
    """The core and the simulation model the etcd arbiter, but no store client is
    shipped: dbha config check, dbha run and dbha check refuse it by name rather
    than fail its actions during a failover."""
    arbiter = (
        ("replication.mode", "sync"),
        ("replication.sync_fallback", "arbiter"),
        ("arbiter", {"endpoints": ["http://198.18.0.5:2379"]}),
    )
    cfg = config.loads(changed(*arbiter))
    (line,) = config.unavailable(cfg)
    assert line.startswith('replication.sync_fallback = "arbiter": the etcd arbiter is not')
    fallback = config.loads(
        changed(("replication.mode", "sync"), ("replication.sync_fallback", "fallback"))
    )
    assert config.unavailable(fallback) == []
    path = _config_file(tmp_path, *arbiter)
    for argv, code in ((["config", "check"], 1), (["run"], 2)):
        result = CliRunner().invoke(main, [*argv, "-c", str(path)])
        assert result.exit_code == code, result.output
        assert "the etcd arbiter is not available in this release" in result.output
    result = CliRunner().invoke(main, ["check", "-c", str(path)])
    assert result.exit_code == 2, result.output  # CRITICAL, before any round runs
    assert "the etcd arbiter is not available in this release" in result.output


def test_cli_config_check_reports_file_problems(tmp_path: Path) -> None:
    _secret(tmp_path / "pg.password", 0o644)
    path = _config_file(tmp_path)
    result = CliRunner().invoke(main, ["config", "check", "-c", str(path)])
    assert result.exit_code == 1
    assert "database.password_file" in result.output and "chmod 600" in result.output


def test_module_constants_are_consistent() -> None:
    assert set(config.DEFAULT_DB_PORT) == set(config.ENGINES) == set(config.DEFAULT_DB_NAME)


@pytest.mark.parametrize("example", sorted((REPO / "conf").glob("*.toml")), ids=lambda p: p.name)
def test_config_check_accepts_every_example_as_shipped(example: Path) -> None:
    """`dbha config check -c conf/X.toml` exits 0 on a fresh host; absent files are warnings."""
    from click.testing import CliRunner

    from dbha.cli import main

    res = CliRunner().invoke(main, ["config", "check", "-c", str(example)])
    assert res.exit_code == 0, res.output
    assert "OK" in res.output
