"""Load and validate a dbha config file (TOML) into the values of :mod:`dbha.config.model`.

:func:`load` never raises anything but :class:`~dbha.errors.ConfigError`, and
that error carries *every* problem found in one pass, each naming its key:
``heartbeat.interval_ms = -5: must be between 10 and 60000``. It does no I/O
beyond reading the file itself; :func:`dbha.config.rules.check_files` looks at
the files the config refers to, and never reads a secret.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar, cast
from urllib.parse import urlsplit

from dbha.config.model import (
    DEFAULT_ARBITER_LEASE_TTL_MS,
    DEFAULT_ARBITER_TIMEOUT_MS,
    DEFAULT_ARP_COUNT,
    DEFAULT_ARP_INTERVAL_MS,
    DEFAULT_ARP_PROBE_MS,
    DEFAULT_AUTO_REJOIN,
    DEFAULT_CHECK_FALL,
    DEFAULT_CHECK_INTERVAL_MS,
    DEFAULT_CHECK_RISE,
    DEFAULT_CHECK_TIMEOUT_MS,
    DEFAULT_CONNECT_TIMEOUT_MS,
    DEFAULT_CRON_PERIOD_MS,
    DEFAULT_DB_HOST,
    DEFAULT_DB_NAME,
    DEFAULT_DB_PORT,
    DEFAULT_DB_USER,
    DEFAULT_FENCE_COMMAND_TIMEOUT_MS,
    DEFAULT_FENCE_STOP_TIMEOUT_MS,
    DEFAULT_HEARTBEAT_INTERVAL_MS,
    DEFAULT_HEARTBEAT_MISSES,
    DEFAULT_HEARTBEAT_RISE,
    DEFAULT_HOOK_TIMEOUT_MS,
    DEFAULT_HTTP_MAX_CONNECTIONS,
    DEFAULT_HTTP_PORT,
    DEFAULT_HTTP_REQUEST_TIMEOUT_MS,
    DEFAULT_LOG_FORMAT,
    DEFAULT_LOG_LEVEL,
    DEFAULT_MAX_LAG_BYTES,
    DEFAULT_MAX_LAG_SECONDS,
    DEFAULT_MAX_LAG_TRANSACTIONS,
    DEFAULT_OS_USER,
    DEFAULT_PG_BIN,
    DEFAULT_PRE_PROMOTE_TIMEOUT_MS,
    DEFAULT_PROBE_INTERVAL_MS,
    DEFAULT_REPLICATION_MODE,
    DEFAULT_REPLICATION_USER,
    DEFAULT_RUN_DIR,
    DEFAULT_SAFETY_TIMEOUT_MS,
    DEFAULT_SELF_FENCE_DEADLINE_MS,
    DEFAULT_STATE_ROOT,
    DEFAULT_STATEMENT_TIMEOUT_MS,
    DEFAULT_SYNC_FALLBACK,
    ENGINES,
    LOG_FORMATS,
    LOG_LEVELS,
    MODES,
    SYNC_FALLBACKS,
    TARGET_KINDS,
    ArbiterConfig,
    CheckConfig,
    Config,
    DatabaseConfig,
    FenceConfig,
    HeartbeatConfig,
    HeartbeatPath,
    HooksConfig,
    HttpConfig,
    LogConfig,
    NodeConfig,
    PeerConfig,
    ReplicationConfig,
    SafetyConfig,
    SafetyTarget,
    ServiceConfig,
    VipConfig,
)
from dbha.config.rules import cross_check
from dbha.config.schema import (
    Invalid,
    Report,
    Table,
    absolute_path,
    argv,
    array,
    boolean,
    choice,
    integer,
    ip_address,
    ip_interface,
    number,
    one_or_more,
    socket_path,
    string,
)
from dbha.errors import ConfigError

MAX_CONFIG_BYTES = 1024 * 1024

_S = TypeVar("_S", bound=str)

_ID = (
    r"[a-z][a-z0-9_-]{0,31}",
    "must be 1-32 lowercase letters, digits, '-' or '_', starting with a letter",
)
_NAME = (r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", "must be 1-63 letters, digits, '.', '-' or '_'")
_HOST = (r"[A-Za-z0-9._:%-]{1,253}", "must be a host name or an IP address")
_IFNAME = (
    r"(?!\.\.?$)[A-Za-z0-9_.:@-]{1,15}",
    "must be a network interface name (1-15 characters)",
)
_LEASE_KEY = (r"/\S{0,255}", "must be a key path starting with '/', without spaces")
_NO_PATH = Path("/")
_NO_IP = ipaddress.ip_address("0.0.0.0")
_NO_VIP = ipaddress.ip_interface("0.0.0.1/32")


# ------------------------------------------------------------------- loading


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate the config file at ``path``; raise ConfigError listing every problem."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(source, [f"cannot read the file: {reason}"]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(source, [f"the file is larger than {MAX_CONFIG_BYTES} bytes"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            source, [f"the file is not UTF-8 text (bad byte at offset {exc.start})"]
        ) from None
    return loads(text, source)


def loads(text: str, source: str = "<string>") -> Config:
    """Parse and validate TOML text; ``source`` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"TOML syntax error: {exc}"]) from None
    except RecursionError:
        raise ConfigError(
            source, ["TOML syntax error: arrays or tables nested too deeply"]
        ) from None
    return from_dict(data, source)


def from_dict(data: Mapping[str, object], source: str = "<dict>") -> Config:
    """Validate already-parsed TOML data; raise ConfigError listing every problem."""
    report = Report()
    root = Table(report, "", dict(data))
    service = _service(root.table("service"))
    node_t = root.table("node")
    node = NodeConfig(node_t.need("name", string(*_NAME), ""))
    peer_t = root.table("peer")
    peer_name = peer_t.need("name", string(*_NAME), "")
    peer_addresses = peer_t.opt("addresses", array(ip_address, min_items=1, max_items=16))
    database = _database(root.table("database"))
    heartbeat = _heartbeat(root.table("heartbeat"))
    if peer_addresses is None:  # default: the (valid) peer ends of the heartbeat paths
        ends = enumerate(heartbeat.paths)
        ok = [p.peer_address for i, p in ends if report.ok(f"heartbeat.path[{i}].peer_address")]
        peer_addresses = tuple(dict.fromkeys(ok))
    cfg = Config(
        source=source,
        service=service,
        node=node,
        peer=PeerConfig(peer_name, peer_addresses),
        database=database,
        heartbeat=heartbeat,
        safety=_safety(root.table("safety")),
        fence=_fence(root.table("fence")),
        vip=_vip(root.table("vip")),
        replication=_replication(root.table("replication")),
        arbiter=_arbiter(root.table("arbiter"), service.id) if root.has("arbiter") else None,
        hooks=_hooks(root.table("hooks")),
        checks=tuple(_check(t) for t in root.tables("check", required=False, max_items=32)),
        log=_log(root.table("log")),
        http=_http(root.table("http")) if root.has("http") else None,
    )
    for t in (node_t, peer_t, root):
        t.finish()
    report.finish()
    cross_check(cfg, report)
    if report.problems:
        raise ConfigError(source, report.problems)
    return cfg


def _pick(t: Table, key: str, options: tuple[_S, ...], default: _S | None) -> _S:
    """The value of ``key``, one of ``options``; required when ``default`` is None."""
    convert = choice(*options)
    if default is None:
        return cast(_S, t.need(key, convert, str(options[0])))
    return cast(_S, t.get(key, convert, str(default)))


def _service(t: Table) -> ServiceConfig:
    sid = t.need("id", string(*_ID), "")
    cfg = ServiceConfig(
        id=sid,
        state_dir=t.get("state_dir", absolute_path, DEFAULT_STATE_ROOT / sid),
        control_socket=t.get("control_socket", socket_path, DEFAULT_RUN_DIR / f"{sid}.sock"),
        auto_rejoin=t.get("auto_rejoin", boolean, DEFAULT_AUTO_REJOIN),
        cron_period_ms=t.get("cron_period_ms", integer(10_000, 86_400_000), DEFAULT_CRON_PERIOD_MS),
    )
    t.finish()
    return cfg


_OS_USER = (r"[a-z_][a-z0-9_-]{0,31}", "must be a user name such as postgres or mysql")


def _database(t: Table) -> DatabaseConfig:
    engine = _pick(t, "engine", ENGINES, None)
    host = t.opt("host", string(*_HOST))
    sock = t.opt("socket", absolute_path)
    t.forbid(
        "password",
        "passwords are not allowed in the config file; put the password alone in a file "
        "only dbha can read (chmod 600) and set database.password_file to its absolute path",
    )
    cfg = DatabaseConfig(
        engine=engine,
        host=DEFAULT_DB_HOST if host is None and sock is None else host,
        socket=sock,
        port=t.get("port", integer(1, 65535), DEFAULT_DB_PORT[engine]),
        user=t.get(
            "user",
            string(r"[^\x00-\x1f]{1,63}", "must be 1-63 printable characters"),
            DEFAULT_DB_USER,
        ),
        dbname=t.get(
            "dbname",
            string(r"[^\x00-\x1f]{1,63}", "must be 1-63 printable characters"),
            DEFAULT_DB_NAME[engine],
        ),
        password_file=t.opt("password_file", absolute_path),
        connect_timeout_ms=t.get(
            "connect_timeout_ms", integer(100, 60_000), DEFAULT_CONNECT_TIMEOUT_MS
        ),
        statement_timeout_ms=t.get(
            "statement_timeout_ms", integer(100, 600_000), DEFAULT_STATEMENT_TIMEOUT_MS
        ),
        probe_interval_ms=t.get(
            "probe_interval_ms", integer(10, 60_000), DEFAULT_PROBE_INTERVAL_MS
        ),
        data_directory=t.opt("data_directory", absolute_path),
        bin_directory=t.get("bin_directory", absolute_path, DEFAULT_PG_BIN),
        os_user=t.get("os_user", string(*_OS_USER), DEFAULT_OS_USER.get(engine, "mysql")),
        start_command=t.opt("start_command", argv),
        stop_command=t.opt("stop_command", argv),
        replication_user=t.get(
            "replication_user",
            string(r"[^\x00-\x1f']{1,63}", "must be 1-63 printable characters, no quote"),
            DEFAULT_REPLICATION_USER.get(engine, "repl"),
        ),
        replication_passfile=t.opt("replication_passfile", absolute_path),
        replication_password_file=t.opt("replication_password_file", absolute_path),
        aside_directory=t.opt("aside_directory", absolute_path),
    )
    t.finish()
    return cfg


def _heartbeat(t: Table) -> HeartbeatConfig:
    t.forbid("key", "keys are not allowed in the config file; set heartbeat.key_file instead")
    key_file = t.need("key_file", absolute_path, _NO_PATH)
    interval = t.get("interval_ms", integer(10, 60_000), DEFAULT_HEARTBEAT_INTERVAL_MS)
    misses = t.get("misses", integer(2, 100), DEFAULT_HEARTBEAT_MISSES)
    rise = t.get("rise", integer(1, 100), DEFAULT_HEARTBEAT_RISE)
    paths = []
    for p in t.tables("path", required=True, max_items=8):
        paths.append(
            HeartbeatPath(
                name=p.need("name", string(*_NAME), ""),
                local_address=p.need("local_address", ip_address, _NO_IP),
                peer_address=p.need("peer_address", ip_address, _NO_IP),
                port=p.need("port", integer(1, 65535), 0),
            )
        )
        p.finish()
    t.finish()
    return HeartbeatConfig(key_file, interval, misses, rise, tuple(paths))


def _safety(t: Table) -> SafetyConfig:
    targets = []
    for x in t.tables("target", required=True, max_items=16):
        kind = _pick(x, "kind", TARGET_KINDS, None)
        host = x.need("host", ip_address, _NO_IP)
        port = x.opt("port", integer(1, 65535))
        if kind == "tcp" and port is None and not x.has("port") and x.report.ok(x.key("kind")):
            x.missing("port", ' (kind = "tcp" needs a port)')
        if kind == "icmp" and x.has("port") and x.report.ok(x.key("kind")):
            x.report.add(x.key("port"), port, 'only used with kind = "tcp"')
        targets.append(SafetyTarget(kind, host, port if kind == "tcp" else None))
        x.finish()
    cfg = SafetyConfig(
        tuple(targets), t.get("timeout_ms", integer(10, 10_000), DEFAULT_SAFETY_TIMEOUT_MS)
    )
    t.finish()
    return cfg


def _fence(t: Table) -> FenceConfig:
    cfg = FenceConfig(
        self_fence_deadline_ms=t.get(
            "self_fence_deadline_ms", integer(100, 600_000), DEFAULT_SELF_FENCE_DEADLINE_MS
        ),
        command=t.opt("command", argv),
        command_timeout_ms=t.get(
            "command_timeout_ms", integer(100, 600_000), DEFAULT_FENCE_COMMAND_TIMEOUT_MS
        ),
        watchdog_device=t.opt("watchdog_device", absolute_path),
        stop_timeout_ms=t.get(
            "stop_timeout_ms", integer(1000, 600_000), DEFAULT_FENCE_STOP_TIMEOUT_MS
        ),
    )
    t.finish()
    return cfg


def _vip(t: Table) -> VipConfig:
    cfg = VipConfig(
        address=t.need("address", ip_interface, _NO_VIP),
        interface=t.need("interface", string(*_IFNAME), ""),
        arp_count=t.get("arp_count", integer(1, 100), DEFAULT_ARP_COUNT),
        arp_interval_ms=t.get("arp_interval_ms", integer(10, 10_000), DEFAULT_ARP_INTERVAL_MS),
        arp_probe_ms=t.get("arp_probe_ms", integer(10, 10_000), DEFAULT_ARP_PROBE_MS),
    )
    t.finish()
    return cfg


def _replication(t: Table) -> ReplicationConfig:
    cfg = ReplicationConfig(
        mode=_pick(t, "mode", MODES, DEFAULT_REPLICATION_MODE),
        sync_fallback=_pick(t, "sync_fallback", SYNC_FALLBACKS, DEFAULT_SYNC_FALLBACK),
        max_lag_bytes=t.get("max_lag_bytes", integer(0, 2**62), DEFAULT_MAX_LAG_BYTES),
        max_lag_transactions=t.get(
            "max_lag_transactions", integer(0, 10**9), DEFAULT_MAX_LAG_TRANSACTIONS
        ),
        max_lag_seconds=t.get("max_lag_seconds", number(0, 86_400), DEFAULT_MAX_LAG_SECONDS),
    )
    t.finish()
    return cfg


def _endpoint(value: object) -> str:
    url = string(r"\S+", "must be a URL without spaces")(value)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Invalid("must be a URL like http://198.18.0.5:2379") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise Invalid("must be a URL like http://198.18.0.5:2379 (http or https, with a port)")
    if parts.username is not None or parts.password is not None:
        raise Invalid("must not contain credentials")
    return url


def _arbiter(t: Table, service_id: str) -> ArbiterConfig:
    cfg = ArbiterConfig(
        endpoints=t.need("endpoints", array(_endpoint, min_items=1, max_items=16), ()),
        key=t.get("key", string(*_LEASE_KEY), f"/dbha/{service_id}/sync-lease"),
        lease_ttl_ms=t.get("lease_ttl_ms", integer(1000, 600_000), DEFAULT_ARBITER_LEASE_TTL_MS),
        timeout_ms=t.get("timeout_ms", integer(10, 60_000), DEFAULT_ARBITER_TIMEOUT_MS),
    )
    t.finish()
    return cfg


def _hooks(t: Table) -> HooksConfig:
    cfg = HooksConfig(
        on_event=t.get("on_event", one_or_more(absolute_path), ()),
        timeout_ms=t.get("timeout_ms", integer(100, 600_000), DEFAULT_HOOK_TIMEOUT_MS),
        pre_promote=t.opt("pre_promote", absolute_path),
        pre_promote_timeout_ms=t.get(
            "pre_promote_timeout_ms", integer(100, 60_000), DEFAULT_PRE_PROMOTE_TIMEOUT_MS
        ),
    )
    t.finish()
    return cfg


def _check(t: Table) -> CheckConfig:
    cfg = CheckConfig(
        name=t.need("name", string(*_NAME), ""),
        argv=t.need("argv", argv, ()),
        interval_ms=t.get("interval_ms", integer(100, 3_600_000), DEFAULT_CHECK_INTERVAL_MS),
        timeout_ms=t.get("timeout_ms", integer(100, 600_000), DEFAULT_CHECK_TIMEOUT_MS),
        fall=t.get("fall", integer(1, 100), DEFAULT_CHECK_FALL),
        rise=t.get("rise", integer(1, 100), DEFAULT_CHECK_RISE),
    )
    t.finish()
    return cfg


def _http(t: Table) -> HttpConfig:
    cfg = HttpConfig(
        address=t.need("address", ip_address, _NO_IP),
        port=t.get("port", integer(1, 65535), DEFAULT_HTTP_PORT),
        cert_file=t.opt("cert_file", absolute_path),
        key_file=t.opt("key_file", absolute_path),
        client_ca_file=t.opt("client_ca_file", absolute_path),
        auth_file=t.opt("auth_file", absolute_path),
        max_connections=t.get("max_connections", integer(1, 4096), DEFAULT_HTTP_MAX_CONNECTIONS),
        request_timeout_ms=t.get(
            "request_timeout_ms", integer(100, 60_000), DEFAULT_HTTP_REQUEST_TIMEOUT_MS
        ),
    )
    if (cfg.cert_file is None) != (cfg.key_file is None) and t.report.ok(
        t.key("cert_file"), t.key("key_file")
    ):
        given, other = (
            ("cert_file", "key_file") if cfg.key_file is None else ("key_file", "cert_file")
        )
        t.missing(other, f" (TLS needs both; {t.key(given)} is set)")
    if cfg.client_ca_file is not None and cfg.cert_file is None and t.report.ok(t.key("cert_file")):
        t.report.add(
            t.key("client_ca_file"),
            str(cfg.client_ca_file),
            f"client certificates need TLS: set {t.key('cert_file')} and {t.key('key_file')}",
        )
    t.finish()
    return cfg


def _log(t: Table) -> LogConfig:
    cfg = LogConfig(
        format=_pick(t, "format", LOG_FORMATS, DEFAULT_LOG_FORMAT),
        level=_pick(t, "level", LOG_LEVELS, DEFAULT_LOG_LEVEL),
    )
    t.finish()
    return cfg


# ------------------------------------------------------------------- summary


def summary(cfg: Config) -> str:
    """A one-screen human description of ``cfg``; it never shows a secret."""
    db, hb, fence, vip, rep = cfg.database, cfg.heartbeat, cfg.fence, cfg.vip, cfg.replication
    where = f"socket {db.socket}" if db.socket is not None else f"{db.host}:{db.port}"
    password = f"password from {db.password_file}" if db.password_file else "no password"
    command = f"{fence.command[0]} (+{len(fence.command) - 1} args)" if fence.command else "none"
    bound = (
        f"{rep.max_lag_bytes} bytes"
        if db.is_postgresql
        else f"{rep.max_lag_transactions} transactions"
    )
    mode = f"sync ({rep.sync_fallback} when the replica is gone)" if rep.mode == "sync" else "async"
    lines = [
        f"{cfg.source}: OK",
        f"service      {cfg.service.id} ({db.engine}): node {cfg.node.name} -> "
        f"peer {cfg.peer.name} ({', '.join(map(str, cfg.peer.addresses))})",
        f"database     {where}, user {db.user}, database {db.dbname}, {password}",
        f"             timeouts: connect {db.connect_timeout_ms} ms, "
        f"statement {db.statement_timeout_ms} ms; probed every {db.probe_interval_ms} ms",
        f"heartbeat    every {hb.interval_ms} ms; a path is down after {hb.misses} misses "
        f"({hb.peer_silent_after_ms} ms), up after {hb.rise} beats",
        f"             key from {hb.key_file}",
        *(
            f"  path {p.name:<8} {p.local_address} -> {p.peer_address} port {p.port}"
            for p in hb.paths
        ),
        f"safety       {', '.join(map(str, cfg.safety.targets))}; "
        f"timeout {cfg.safety.timeout_ms} ms",
        f"fence        self-fence deadline {fence.self_fence_deadline_ms} ms; command {command}",
        *([f"             watchdog {fence.watchdog_device}"] if fence.watchdog_device else []),
        f"vip          {vip.address} on {vip.interface}; {vip.arp_count} gratuitous ARPs "
        f"{vip.arp_interval_ms} ms apart",
        f"replication  {mode}; max lag to promote {bound}, {rep.max_lag_seconds:g} s",
    ]
    if cfg.arbiter is not None:
        lines.append(f"arbiter      {', '.join(cfg.arbiter.endpoints)} key {cfg.arbiter.key}")
    checks = ", ".join(f"{c.name} ({c.argv[0]} every {c.interval_ms} ms)" for c in cfg.checks)
    lines += [
        f"checks       {checks or 'none'}",
        f"hooks        {', '.join(map(str, cfg.hooks.on_event)) or 'none'}",
        *(
            [
                f"             pre_promote {cfg.hooks.pre_promote} "
                f"(a veto within {cfg.hooks.pre_promote_timeout_ms} ms)"
            ]
            if cfg.hooks.pre_promote
            else []
        ),
        f"state        {cfg.service.state_dir}; control socket {cfg.service.control_socket}",
        f"behaviour    auto_rejoin {'on' if cfg.service.auto_rejoin else 'off'}; "
        f"log {cfg.log.format}, level {cfg.log.level}",
    ]
    if cfg.http is not None:
        h = cfg.http
        guard = [
            *(["client certificate"] if h.client_ca_file else []),
            *(["basic auth"] if h.auth_file else []),
        ]
        lines += [
            f"http         {'https' if h.tls else 'http'}://{h.address}:{h.port}; at most "
            f"{h.max_connections} connections, {h.request_timeout_ms} ms a request",
            f"             /status and /metrics: {' or '.join(guard) if guard else 'open'}",
        ]
    return "\n".join(lines)
