"""Reading MySQL/MariaDB result rows into values. Pure; never raises.

Every function takes rows as PyMySQL returns them (dicts) and copes with a
missing column, a NULL, bytes or an odd value by giving a neutral value.
Both servers' spellings are accepted (``Master_*``/``Source_*``,
``Slave_*``/``Replica_*``, ``master``/``source`` in semi-sync names).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dbha.core.model import ReplicaInfo

Row = Mapping[str, Any]

# Connections fence() leaves alone: the replication threads of both directions and
# the server's own daemons (``system user`` is how both servers show their threads).
KEEP_COMMANDS = frozenset(
    {"binlog dump", "binlog dump gtid", "daemon", "slave_io", "slave_sql", "slave_worker"}
)
KEEP_USERS = frozenset({"system user", "event_scheduler"})
SYSTEM_SCHEMAS = frozenset({"mysql", "information_schema", "performance_schema", "sys"})


def text(row: Row | None, *keys: str) -> str:
    """The first present, non-NULL column of ``keys`` as text ("" if none)."""
    if row is None:
        return ""
    for key in keys:
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, bytes | bytearray):
            return bytes(value).decode("utf-8", "replace")
        return str(value)
    return ""


def number(row: Row | None, *keys: str) -> int | None:
    value = text(row, *keys).strip()
    try:
        return int(value)
    except ValueError:
        try:
            return int(float(value))
        except (ValueError, OverflowError):  # "", "abc", "nan", "inf"
            return None


def flag(row: Row | None, *keys: str) -> bool:
    return text(row, *keys).strip().upper() in ("1", "ON", "YES", "TRUE")


# ----------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class ServerVars:
    """The global variables a probe reads in one statement."""

    version: str
    server_id: int | None
    read_only: bool
    super_read_only: bool
    executed: str | None  # everything this server has applied, normalized; None if unreadable
    slave_pos: str  # MariaDB's gtid_slave_pos as the server has it ("" on MySQL)
    datadir: str
    problems: tuple[str, ...] = ()  # settings that make GTID replication unsafe


@dataclass(frozen=True, slots=True)
class ReplicaRow:
    """The default replication channel, from SHOW SLAVE / REPLICA STATUS."""

    source_host: str
    source_port: int | None
    io_running: str  # "Yes" | "No" | "Connecting"
    sql_running: str
    received: str  # Gtid_IO_Pos / Retrieved_Gtid_Set, as the server wrote it
    seconds_behind: int | None
    io_errno: int
    io_error: str
    sql_errno: int
    sql_error: str
    relay_file: str
    relay_pos: int | None
    auto_position: bool  # MASTER_USE_GTID (any) / SOURCE_AUTO_POSITION=1
    # Seconds the receiver waits between reconnection attempts (None: not shown).
    connect_retry: int | None = None

    @property
    def streaming(self) -> bool:
        return self.io_running == "Yes" and self.sql_running == "Yes"

    @property
    def error(self) -> str:
        parts = []
        if self.io_errno or self.io_error:
            parts.append(f"receiver error {self.io_errno}: {self.io_error}")
        if self.sql_errno or self.sql_error:
            parts.append(f"applier error {self.sql_errno}: {self.sql_error}")
        return "; ".join(parts)

    def follows(self, host: str, port: int) -> bool:
        return self.source_host == host and self.source_port == port and self.auto_position


# A semi-synchronous wait shorter than this is a fallback to asynchronous commits
# waiting to happen: the probe does not count it as synchronous replication.
MIN_HOLD_MS = 3_600_000
# What ``set_synchronous(on)`` sets: about 49.7 days, the largest value both
# servers take (MariaDB allows more), i.e. never on its own.
HOLD_MS = 4_294_967_295


@dataclass(frozen=True, slots=True)
class SemiSync:
    enabled: bool  # the primary is configured to wait for an acknowledgement
    active: bool  # ... and currently does (False after the silent fallback)
    clients: int  # replicas connected in semi-synchronous mode
    waiting: int | None = None  # sessions whose commit waits for an acknowledgement
    timeout_ms: int | None = None  # how long a commit waits before falling back
    wait_no_replica: bool | None = None  # keep waiting when no replica is connected
    replica_enabled: bool | None = None  # the replica side (acknowledges when asked)
    # The running receiver registered as semi-synchronous (None: not reported).
    replica_active: bool | None = None
    # When a commit waits: AFTER_SYNC (lossless: visible only once acknowledged) or
    # AFTER_COMMIT (visible to others before the replica has it). None: not reported.
    wait_point: str | None = None
    # How this server spells the variables: "master" / "source" for the primary
    # side, "slave" / "replica" for the replica side; None when it has none (MySQL
    # without the semi-sync plugin).
    primary_side: str | None = None
    replica_side: str | None = None

    @property
    def fell_back(self) -> bool:
        return self.enabled and not self.active

    @property
    def weak(self) -> str | None:
        """Why commits that wait now may stop waiting on their own (None if they will not)."""
        why = []
        if self.timeout_ms is not None and self.timeout_ms < MIN_HOLD_MS:
            why.append(f"after {self.timeout_ms} ms without an acknowledgement")
        if self.wait_no_replica is False:
            why.append("as soon as no replica is connected")
        return " or ".join(why) or None

    @property
    def holds(self) -> bool:
        """Commits wait for a replica's acknowledgement, and will not stop waiting
        on their own (a long timeout, and waiting even with no replica connected)."""
        return self.active and self.weak is None


def parse_version(version: str) -> tuple[int, ...]:
    """``"5.5.5-10.11.6-MariaDB-log"`` -> ``(10, 11, 6)``; ``()`` if unreadable."""
    version = version.removeprefix("5.5.5-")
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)", version)
    return tuple(int(g) for g in m.groups()) if m else ()


def clients_to_kill(rows: Sequence[Row], own_id: int | None) -> list[int]:
    """Ids of the client connections a fence must end: all but replication, the
    server's own threads and the fencing connection itself."""
    out = []
    for row in rows:
        cid = number(row, "id", "ID", "Id")
        if cid is None or cid == own_id:
            continue
        if text(row, "command", "COMMAND", "Command").strip().lower() in KEEP_COMMANDS:
            continue
        if text(row, "user", "USER", "User").strip().lower() in KEEP_USERS:
            continue
        out.append(cid)
    return out


def parse_semisync(rows: Sequence[Row]) -> SemiSync:
    """From ``name``/``value`` rows of the semi-sync variables and status (both the
    ``master``/``slave`` and the MySQL 8.0.26+ ``source``/``replica`` spellings)."""
    values = {text(r, "name").lower(): text(r, "value") for r in rows}
    primary = next(
        (p for p in ("master", "source") if f"rpl_semi_sync_{p}_enabled" in values), None
    )
    replica = next(
        (p for p in ("slave", "replica") if f"rpl_semi_sync_{p}_enabled" in values), None
    )

    def get(suffix: str) -> str:
        for side in ("master", "source"):
            if f"rpl_semi_sync_{side}_{suffix}" in values:
                return values[f"rpl_semi_sync_{side}_{suffix}"]
        return ""

    def on_off(value: str) -> bool | None:
        return None if not value.strip() else value.strip().upper() in ("1", "ON")

    enabled = get("enabled").strip().upper() in ("1", "ON")
    active = get("status").strip().upper() in ("1", "ON")
    clients = number({"c": get("clients")}, "c") or 0
    return SemiSync(
        enabled=enabled,
        active=enabled and active,
        clients=clients,
        waiting=number({"w": get("wait_sessions")}, "w"),
        timeout_ms=number({"t": get("timeout")}, "t"),
        wait_no_replica=on_off(get("wait_no_slave") or get("wait_no_replica")),
        replica_enabled=None
        if replica is None
        else on_off(values[f"rpl_semi_sync_{replica}_enabled"]),
        replica_active=None
        if replica is None
        else on_off(values.get(f"rpl_semi_sync_{replica}_status", "")),
        wait_point=get("wait_point").strip().upper() or None,
        primary_side=primary,
        replica_side=replica,
    )


def parse_replicas(
    hosts: Sequence[Row], dumps: Sequence[Row], semisync: SemiSync
) -> tuple[ReplicaInfo, ...]:
    """Connected replicas, from SHOW SLAVE HOSTS / SHOW REPLICAS (names) and the
    binlog dump threads (addresses, state). The server does not say which row
    belongs to which thread, so a name is given only when there is one of each."""
    infos = []
    sync = semisync.active and semisync.clients >= len(dumps) > 0
    for dump in dumps:
        address = text(dump, "host", "HOST").rsplit(":", 1)[0] or None
        state = text(dump, "state", "STATE").lower()
        infos.append(
            ReplicaInfo(
                name=address or "?",
                address=address,
                state="streaming" if "sent all binlog" in state else "catchup",
                sync=sync,
            )
        )
    if len(infos) == 1 and len(hosts) == 1:
        h = hosts[0]
        name = text(h, "Host") or f"server-{text(h, 'Server_id', 'Server_Id')}"
        only = infos[0]
        infos = [ReplicaInfo(name=name, address=only.address, state=only.state, sync=only.sync)]
    return tuple(infos)
