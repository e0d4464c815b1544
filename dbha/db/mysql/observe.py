"""What a probe of a MySQL / MariaDB server learns: role, writability, positions,
lag, its replicas and the state of semi-synchronous replication, from one
session. Read-only; the driver (:mod:`dbha.db.mysql.driver`) runs it on its kept
probe session."""

from __future__ import annotations

import time

from dbha.core.model import DbStatus, Position, Role
from dbha.db import gtid
from dbha.db.mysql import relaylog
from dbha.db.mysql.conn import Session
from dbha.db.mysql.flavour import Flavour
from dbha.db.mysql.rows import (
    ReplicaRow,
    SemiSync,
    ServerVars,
    number,
    parse_replicas,
    parse_semisync,
    text,
)


def server_state(s: Session) -> tuple[ServerVars, ReplicaRow | None]:
    """The server's variables and its replication status (None: not a replica)."""
    f = s.flavour
    return f.parse_vars(s.one(f.vars_sql)), f.parse_replica_status(s.rows(f.replica_status_sql))


def position(f: Flavour, gtid_text: str | None) -> Position | None:
    return None if gtid_text is None else Position(engine=f.name, gtid=gtid_text)


def received(f: Flavour, v: ServerVars, rep: ReplicaRow) -> str | None:
    """What a replica has received: what it executed and what its relay log holds."""
    return gtid.merge(f.name, v.executed, rep.received or None)


def observe(s: Session, engine: str, retry: int) -> DbStatus:
    """What one probe learns on ``s`` of a server configured as ``engine``, whose
    receiver should reconnect within ``retry`` seconds."""
    f = s.flavour
    v, rep = server_state(s)
    notes = list(v.problems)
    if f.name != engine:
        notes.append(f"configured as {engine}, but the server is {f.name}")
    writable = not (v.read_only or v.super_read_only)
    if rep is None:
        semi = parse_semisync(s.rows(f.semisync_sql))
        procs = s.rows(f.processlist_sql)
        dumps = [
            r for r in procs if text(r, "command").lower() in ("binlog dump", "binlog dump gtid")
        ]
        waits = [
            number(r, "time") or 0
            for r in procs
            if text(r, "state").lower().startswith("waiting for semi-sync ack")
        ]
        replicas = parse_replicas(s.rows(f.replica_hosts_sql), dumps, semi)
        if semi.fell_back:
            notes.append(
                "semi-synchronous replication is enabled but off: commits are being "
                "acknowledged without any replica (asynchronous fallback)"
            )
        elif semi.active and semi.weak:
            notes.append(
                "semi-synchronous replication is on but falls back to asynchronous "
                f"commits {semi.weak}: not counted as synchronous"
            )
        if semi.active and semi.wait_point == "AFTER_COMMIT":
            notes.append(
                "semi-synchronous replication waits AFTER_COMMIT: other sessions see a "
                "commit before the replica has it (AFTER_SYNC is lossless)"
            )
        return DbStatus(
            reachable=True,
            role=Role.PRIMARY,
            writable=writable,
            version=s.version,
            flavour=f.name,
            position=position(f, v.executed),
            replicas=replicas,
            sync_replication=semi.holds,
            sync_waiting=semi.waiting,
            sync_wait_longest=float(max(waits)) if waits else None,
            error="; ".join(notes) or None,
        )
    got = received(f, v, rep)
    behind = gtid.behind(f.name, got, v.executed)
    if rep.error:
        notes.append(rep.error)
    semi = parse_semisync(s.rows(f.semisync_sql))
    return DbStatus(
        reachable=True,
        role=Role.REPLICA,
        writable=writable,
        version=s.version,
        flavour=f.name,
        position=position(f, v.executed),
        received=position(f, got),
        lag_transactions=behind,
        lag_seconds=lag_seconds(f, v, rep, behind),
        streaming=rep.streaming,
        upstream=f"{rep.source_host}:{rep.source_port}",
        sync_ready=ready(semi, rep, retry),
        replay_paused=rep.sql_running == "No" and not rep.sql_errno and not rep.sql_error,
        error="; ".join(notes) or None,
    )


def lag_seconds(f: Flavour, v: ServerVars, rep: ReplicaRow, behind: int | None) -> float | None:
    """Age of the oldest received transaction not yet applied (0 when none); None
    when unknown (nothing pending, but not connected to the primary either)."""
    sbm = None if rep.seconds_behind is None else float(rep.seconds_behind)
    if behind == 0:
        return sbm if sbm is not None else (0.0 if rep.io_running == "Yes" else None)
    stamp = relaylog.pending_timestamp(
        v.datadir, rep.relay_file, rep.relay_pos or 0, f.gtid_event_types
    )
    if stamp is not None:
        return max(0.0, time.time() - stamp)
    return sbm


def prompt(rep: ReplicaRow, retry: int) -> bool:
    """Whether the receiver reconnects within ``retry`` seconds of losing its
    primary (a server's default is 60 s: a restarted primary's synchronous
    commits would wait that long for it)."""
    return rep.connect_retry is None or rep.connect_retry <= retry


def ready(semi: SemiSync, rep: ReplicaRow, retry: int) -> bool | None:
    """Whether a replica is ready for its primary's synchronous commits: it
    acknowledges them and reconnects promptly. None: the server has no semi-sync."""
    ack = acknowledges(semi, rep)
    return ack if not ack else prompt(rep, retry)


def acknowledges(semi: SemiSync, rep: ReplicaRow) -> bool | None:
    """Whether a replica acknowledges its primary's semi-synchronous commits: the
    replica side is on and, when the receiver runs, it registered with it (the
    setting takes effect when the receiver connects). None: the server has no
    semi-sync (MySQL without the plugin)."""
    if semi.replica_enabled is None:
        return None
    if not semi.replica_enabled:
        return False
    return not (rep.io_running == "Yes" and semi.replica_active is False)
