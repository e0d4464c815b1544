"""Config rules that span several keys, and checks of the files a config names.

:func:`cross_check` runs inside :func:`dbha.config.from_dict` after every key
was read on its own; :func:`check_files` is re-exported as
:func:`dbha.config.check_files`. Both speak in the same problem lines as the
rest of the config layer: ``key = value: what is wrong``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dbha.config.schema import NOTHING, IPAddress, Report, problem

if TYPE_CHECKING:
    from dbha.config.model import Config

MIN_KEY_FILE_BYTES = 16  # a heartbeat key shorter than this is not a key


# --------------------------------------------------------- cross-field rules


def cross_check(cfg: Config, r: Report) -> None:
    """Rules that involve several keys; each runs only when the keys it reads are valid."""
    if r.ok("node.name", "peer.name") and cfg.node.name == cfg.peer.name:
        r.add("peer.name", cfg.peer.name, "must differ from node.name")
    _check_timing(cfg, r)
    _check_paths(cfg, r)
    _check_vip(cfg, r)
    _check_targets(cfg, r)
    _check_engine(cfg, r)
    _check_replication(cfg, r)
    _check_http(cfg, r)
    names: dict[str, int] = {}
    for i, c in enumerate(cfg.checks):
        key = f"check[{i}]"
        if r.ok(f"{key}.name") and names.setdefault(c.name, i) != i:
            r.add(f"{key}.name", c.name, f"is also the name of check[{names[c.name]}]")
        if r.ok(f"{key}.interval_ms", f"{key}.timeout_ms") and c.timeout_ms >= c.interval_ms:
            r.add(
                f"{key}.timeout_ms",
                c.timeout_ms,
                f"must be shorter than {key}.interval_ms ({c.interval_ms})",
            )


def _check_http(cfg: Config, r: Report) -> None:
    """The HTTP door must not take the TCP port of the peer door on a heartbeat path
    (dbha.node.control listens on each path's local address and port)."""
    h = cfg.http
    if h is None or not r.ok("http.address", "http.port"):
        return
    for i, p in enumerate(cfg.heartbeat.paths):
        key = f"heartbeat.path[{i}]"
        if not r.ok(f"{key}.local_address", f"{key}.port") or p.port != h.port:
            continue
        if h.address == p.local_address:
            r.add("http.port", h.port, f"is the peer door's port on {key} ({p.local_address})")
            return


def _check_timing(cfg: Config, r: Report) -> None:
    keys = ("heartbeat.interval_ms", "heartbeat.misses", "safety.timeout_ms")
    if not r.ok("fence.self_fence_deadline_ms", *keys):
        return
    hb, deadline, safety = cfg.heartbeat, cfg.fence.self_fence_deadline_ms, cfg.safety.timeout_ms
    silent = hb.peer_silent_after_ms
    if deadline <= silent:
        r.add(
            "fence.self_fence_deadline_ms",
            deadline,
            f"must be longer than heartbeat.interval_ms * heartbeat.misses "
            f"({hb.interval_ms} * {hb.misses} = {silent})",
        )
    elif deadline <= silent + safety:
        r.add(
            "fence.self_fence_deadline_ms",
            deadline,
            f"must be longer than heartbeat.interval_ms * heartbeat.misses + safety.timeout_ms "
            f"({silent} + {safety} = {silent + safety}), the time an isolated primary needs "
            f"to notice it and fence itself",
        )


def _local_addresses(cfg: Config, r: Report) -> list[IPAddress] | None:
    """This node's addresses (the paths' local ends), or None if one of them is invalid."""
    keys = [f"heartbeat.path[{i}].local_address" for i in range(len(cfg.heartbeat.paths))]
    if not keys or not r.ok("heartbeat.path", *keys):
        return None
    return list(dict.fromkeys(p.local_address for p in cfg.heartbeat.paths))


def _check_paths(cfg: Config, r: Report) -> None:
    peers = cfg.peer.addresses if r.ok("peer.addresses") else ()
    names: dict[str, int] = {}
    ends: dict[tuple[IPAddress, IPAddress, int], int] = {}
    for i, p in enumerate(cfg.heartbeat.paths):
        key = f"heartbeat.path[{i}]"
        if r.ok(f"{key}.name") and names.setdefault(p.name, i) != i:
            r.add(f"{key}.name", p.name, f"is also the name of heartbeat.path[{names[p.name]}]")
        if not r.ok(f"{key}.local_address", f"{key}.peer_address", f"{key}.port"):
            continue
        local, peer = p.local_address, p.peer_address
        if local.version != peer.version:
            r.add(
                f"{key}.peer_address",
                str(peer),
                f"is IPv{peer.version} but local_address is IPv{local.version}",
            )
            continue
        if local == peer:
            r.add(f"{key}.peer_address", str(peer), "must differ from local_address")
            continue
        if ends.setdefault((local, peer, p.port), i) != i:
            r.add(
                f"{key}.port",
                p.port,
                f"heartbeat.path[{ends[local, peer, p.port]}] already has "
                "the same local_address, peer_address and port",
            )
        if local in peers:
            r.add(
                f"{key}.local_address",
                str(local),
                "is also in peer.addresses; an address cannot belong to both nodes",
            )
        if peers and r.given("peer.addresses") and peer not in peers:
            r.add(f"{key}.peer_address", str(peer), "is not in peer.addresses")


def _check_vip(cfg: Config, r: Report) -> None:
    local = _local_addresses(cfg, r)
    if not r.ok("vip.address") or local is None:
        return
    vip = cfg.vip.address
    if not any(a.version == vip.version and a in vip.network for a in local):
        r.add(
            "vip.address",
            str(vip),
            "is not in the subnet of any local address of this node "
            f"({', '.join(map(str, local))}); "
            "the VIP must be in the subnet of a heartbeat path's local_address",
        )
    others = [*local, *cfg.peer.addresses, *(p.peer_address for p in cfg.heartbeat.paths)]
    if vip.ip in others:
        r.add(
            "vip.address",
            str(vip),
            f"{vip.ip} is an address of this node or its peer; "
            "the VIP must be an address of its own",
        )


def _check_targets(cfg: Config, r: Report) -> None:
    local = _local_addresses(cfg, r) or []
    peers = cfg.peer.addresses if r.ok("peer.addresses") else ()
    seen: dict[str, int] = {}
    for i, t in enumerate(cfg.safety.targets):
        key = f"safety.target[{i}]"
        if not r.ok(f"{key}.kind", f"{key}.host", f"{key}.port"):
            continue
        if t.host in local:
            r.add(
                f"{key}.host",
                str(t.host),
                "is an address of this node; a safety target must be "
                "a third party such as the gateway or a witness",
            )
        elif t.host in peers:
            r.add(
                f"{key}.host",
                str(t.host),
                "is an address of the peer; a safety target must be "
                "a third party such as the gateway or a witness",
            )
        elif r.ok("vip.address") and t.host == cfg.vip.address.ip:
            r.add(f"{key}.host", str(t.host), "is the VIP; a safety target must be a third party")
        elif seen.setdefault(str(t), i) != i:
            r.add(f"{key}.host", str(t.host), f"repeats safety.target[{seen[str(t)]}]")


def _engine_only(r: Report, applies: bool, *keys: str) -> None:
    """Refuse keys that the configured engine does not use."""
    if applies:
        return
    for key in keys:
        if r.given(f"database.{key}") and r.ok(f"database.{key}"):
            r.add(f"database.{key}", NOTHING, "is not used with this database.engine")


def _check_engine(cfg: Config, r: Report) -> None:
    db = cfg.database
    if db.socket is not None and r.given("database.host") and r.ok("database.host"):
        r.add(
            "database.socket",
            str(db.socket),
            "cannot be used together with database.host; set one of them",
        )
    if not r.ok("database.engine"):
        return
    _engine_only(r, db.is_postgresql, "data_directory", "bin_directory", "replication_passfile")
    _engine_only(r, not db.is_postgresql, "replication_password_file")
    if db.is_postgresql:
        for key in ("data_directory", "replication_passfile"):
            if not r.given(f"database.{key}"):
                r.add(f"database.{key}", NOTHING, 'required with database.engine = "postgresql"')
    elif not r.given("database.replication_password_file"):
        r.add(
            "database.replication_password_file",
            NOTHING,
            f'required with database.engine = "{db.engine}" (the replication account\'s password, '
            "for CHANGE MASTER)",
        )
    if (
        not db.is_postgresql
        and r.given("replication.max_lag_bytes")
        and r.ok("replication.max_lag_bytes")
    ):
        r.add(
            "replication.max_lag_bytes",
            cfg.replication.max_lag_bytes,
            'only used with database.engine = "postgresql"; MySQL and MariaDB lag is bounded '
            "by replication.max_lag_transactions",
        )
    if (
        db.is_postgresql
        and r.given("replication.max_lag_transactions")
        and r.ok("replication.max_lag_transactions")
    ):
        r.add(
            "replication.max_lag_transactions",
            cfg.replication.max_lag_transactions,
            'only used with database.engine = "mariadb" or "mysql"; PostgreSQL lag is bounded '
            "by replication.max_lag_bytes",
        )


def _check_replication(cfg: Config, r: Report) -> None:
    rep, arb = cfg.replication, cfg.arbiter
    if not r.ok("replication.mode", "replication.sync_fallback"):
        return
    if rep.mode != "sync" and r.given("replication.sync_fallback"):
        r.add(
            "replication.sync_fallback",
            rep.sync_fallback,
            'only used with replication.mode = "sync"',
        )
    wants_arbiter = rep.mode == "sync" and rep.sync_fallback == "arbiter"
    if wants_arbiter and arb is None:
        r.add(
            "arbiter",
            NOTHING,
            'required when replication.sync_fallback = "arbiter" (add an [arbiter] table)',
        )
    if not wants_arbiter and arb is not None and r.ok("arbiter"):
        r.add(
            "arbiter",
            NOTHING,
            'only used with replication.mode = "sync" and replication.sync_fallback = "arbiter"',
        )
    if (
        arb is not None
        and r.ok("arbiter.timeout_ms", "arbiter.lease_ttl_ms")
        and arb.timeout_ms >= arb.lease_ttl_ms
    ):
        r.add(
            "arbiter.timeout_ms",
            arb.timeout_ms,
            f"must be shorter than arbiter.lease_ttl_ms ({arb.lease_ttl_ms})",
        )


# --------------------------------------------------------------- file checks


def check_files(cfg: Config) -> list[str]:
    """Check the files ``cfg`` refers to that exist; return one problem line each.

    Secret files (password, heartbeat key) must be regular files that only
    their owner can access; programs must be executable. Only metadata is
    looked at: no secret is ever opened, read or printed. A file that does not
    exist on this host is not a problem of the config: see ``missing_files``.
    """
    return [line for line, missing in _file_findings(cfg) if not missing]


def unavailable(cfg: Config) -> list[str]:
    """What ``cfg`` asks for that this release cannot do, one problem line each.

    The etcd arbiter (``sync_fallback = "arbiter"``) is modelled by the decision
    core and the simulation, but no store client is shipped: a supervisor that
    started with it would fail the arbiter's actions at the worst moment. So the
    supervisor, ``dbha check`` and ``dbha config check`` refuse it up front.
    """
    if cfg.replication.mode == "sync" and cfg.replication.sync_fallback == "arbiter":
        return [
            problem(
                "replication.sync_fallback",
                "arbiter",
                'the etcd arbiter is not available in this release: use "fallback" '
                '(or "strict") and see docs/config.md',
            )
        ]
    return []


def missing_files(cfg: Config) -> list[str]:
    """The files ``cfg`` refers to that do not exist on this host, one line each.

    ``dbha config check`` reports them as warnings (a config is often checked
    before it is deployed); the supervisor refuses to start without them.
    """
    return [line for line, missing in _file_findings(cfg) if missing]


def run_problems(cfg: Config) -> list[str]:
    """Everything that stops ``dbha run`` (and a reload, and a cron round) on this
    host: bad files, missing files, features not available."""
    return check_files(cfg) + missing_files(cfg) + unavailable(cfg)


def _file_findings(cfg: Config) -> list[tuple[str, bool]]:
    found: list[tuple[str, bool]] = []
    secrets = [("heartbeat.key_file", cfg.heartbeat.key_file, MIN_KEY_FILE_BYTES)]
    if cfg.database.password_file is not None:
        secrets.insert(0, ("database.password_file", cfg.database.password_file, 1))
    for key in ("replication_passfile", "replication_password_file"):
        path = getattr(cfg.database, key)
        if path is not None:
            secrets.append((f"database.{key}", path, 1))
    h = cfg.http
    if h is not None:
        secrets += [
            (f"http.{k}", p, 1)
            for k, p in (("key_file", h.key_file), ("auth_file", h.auth_file))
            if p
        ]
        for key, path in (
            ("http.cert_file", h.cert_file),
            ("http.client_ca_file", h.client_ca_file),
        ):
            if path is not None and (why := _readable_problem(path)):
                found.append((problem(key, str(path), why), why == _MISSING))
    for key, path, min_size in secrets:
        why = _secret_problem(path, min_size)
        if why:
            found.append((problem(key, str(path), why), why == _MISSING))
    programs: list[tuple[str, str]] = []
    if cfg.fence.command:
        programs.append(("fence.command[0]", cfg.fence.command[0]))
    many = len(cfg.hooks.on_event) > 1
    programs += [
        (f"hooks.on_event[{i}]" if many else "hooks.on_event", str(p))
        for i, p in enumerate(cfg.hooks.on_event)
    ]
    if cfg.hooks.pre_promote is not None:
        programs.append(("hooks.pre_promote", str(cfg.hooks.pre_promote)))
    programs += [(f"check[{i}].argv[0]", c.argv[0]) for i, c in enumerate(cfg.checks)]
    for key, program in programs:
        why = _program_problem(program)
        if why:
            found.append((problem(key, program, why), why == _MISSING))
    device = cfg.fence.watchdog_device
    if device is not None and (why := _device_problem(device)):
        found.append((problem("fence.watchdog_device", str(device), why), why == _MISSING))
    return found


_MISSING = "does not exist"


def _stat(path: str | Path) -> tuple[os.stat_result | None, str | None]:
    try:
        return os.stat(path), None
    except FileNotFoundError:
        return None, _MISSING
    except (OSError, ValueError) as exc:
        return None, f"cannot be checked: {exc.strerror if isinstance(exc, OSError) else exc}"


def _secret_problem(path: Path, min_size: int) -> str | None:
    st, why = _stat(path)
    if st is None:
        return why
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        what = "readable" if mode & 0o044 else "accessible"
        return f"is {what} by group or others (mode {mode:04o}); chmod 600 it"
    if st.st_size < min_size:
        return (
            "is empty"
            if st.st_size == 0
            else f"holds only {st.st_size} bytes; use at least {min_size} random bytes"
        )
    if not os.access(path, os.R_OK):
        return f"cannot be read by this user (uid {os.getuid()})"
    return None


def _readable_problem(path: Path) -> str | None:
    """A file that is not secret (a certificate) but must be there and readable."""
    return _file_problem(path, stat.S_ISREG, "is not a regular file", os.R_OK, "read")


def _device_problem(path: Path) -> str | None:
    not_device = "is not a character device (a watchdog device such as /dev/watchdog)"
    return _file_problem(path, stat.S_ISCHR, not_device, os.W_OK, "written")


def _file_problem(
    path: Path, is_kind: Callable[[int], bool], not_kind: str, access: int, verb: str
) -> str | None:
    st, why = _stat(path)
    if st is None:
        return why
    if not is_kind(st.st_mode):
        return not_kind
    if not os.access(path, access):
        return f"cannot be {verb} by this user (uid {os.getuid()})"
    return None


def _program_problem(program: str) -> str | None:
    st, why = _stat(program)
    if st is None:
        return why
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if not os.access(program, os.X_OK):
        return "is not executable"
    if st.st_mode & 0o002:
        return f"is writable by anyone (mode {stat.S_IMODE(st.st_mode):04o}); chmod o-w it"
    return None
