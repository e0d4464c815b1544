"""The PostgreSQL driver (psycopg 3): one local server behind ``DatabaseDriver``.

Every verb opens its own short session over the settings' socket or address,
bounded by the verb's timeout (connect, statement and lock timeouts, and a
watchdog that cuts the socket of a frozen server); verbs that rewrite the data
directory (follow, rejoin) live in ``dbha.db.postgres.rejoin``. The probe, which runs
every probe interval, keeps one session instead (``ProbeLink``: same bounds,
dropped on any error, ended by ``close``).

About the soft fence, and its limit. ``fence()`` sets
``default_transaction_read_only = on`` with ALTER SYSTEM (so it survives a
restart), reloads, waits until a new session is read-only, then terminates
every other client session and waits for them to exit. From then on every new
transaction starts read-only. But ``default_transaction_read_only`` is only a
default: any client may ``SET default_transaction_read_only = off`` or
``BEGIN READ WRITE`` and write again, and a per-role or per-database setting
(``ALTER ROLE ... SET``) overrides the server-wide one (``fence`` refuses to
report success when such an override exists). The soft fence therefore stops
well-behaved applications, not hostile or careless ones. The stronger fence is
``fence(hard=True)``: the same persistent setting, then a fast shutdown, so
nothing can write; a supervisor fencing an isolated primary should use it, and
an operator-supplied fence command (STONITH-style) remains the strongest.
A superuser session can even undo the fence (ALTER SYSTEM): applications must
not connect as superusers.

Bounds. libpq never waits less than 2 s for a connection to open, so a verb
given less than 2 s may take up to 2 s to report a server that accepts TCP or
socket connections but never answers. A hard fence of a frozen (SIGSTOPped)
server raises DbTimeout, but its stop request is already queued: the server
shuts down as soon as it runs again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import psycopg
from psycopg import sql

from dbha.core.model import DbStatus, Position, ReplicaInfo, Role
from dbha.db.base import DbError, DbRefused, DbTimeout, PromoteResult, RejoinReport, Upstream
from dbha.db.postgres import rejoin as pgrejoin
from dbha.db.postgres.conn import (
    ENGINE,
    POLL,
    Conn,
    Deadline,
    PgSettings,
    ProbeLink,
    map_error,
    one,
    parse_lsn,
    session,
    walfile_timeline,
)
from dbha.db.postgres.tools import Tools

__all__ = ["ENGINE", "PgSettings", "PostgresDriver", "covers"]

log = logging.getLogger("dbha.db.postgres")

_SETTINGS_SQL = """
SELECT pg_is_in_recovery() AS recovery,
       current_setting('server_version') AS version,
       current_setting('default_transaction_read_only') AS read_only,
       current_setting('synchronous_standby_names') AS sync_names,
       current_setting('synchronous_commit') AS sync_commit,
       (SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep')::int AS sync_waiting,
       (SELECT extract(epoch FROM max(now() - query_start)) FROM pg_stat_activity
         WHERE wait_event = 'SyncRep')::float8 AS sync_wait_longest
"""

_PRIMARY_SQL = """
SELECT pg_current_wal_lsn()::text AS lsn,
       pg_walfile_name(pg_current_wal_lsn()) AS walfile,
       (SELECT timeline_id FROM pg_control_checkpoint()) AS checkpoint_tli
"""

_REPLICAS_SQL = """
SELECT application_name AS name, host(client_addr) AS address, state, sync_state,
       sent_lsn::text AS sent, flush_lsn::text AS flushed, replay_lsn::text AS replayed,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS lag_bytes,
       extract(epoch FROM replay_lag)::float8 AS lag_seconds
FROM pg_stat_replication ORDER BY application_name
"""

# The replayed position's timeline is not exposed directly: take the highest
# timeline the server knows of (WAL receiver, last restartpoint, WAL and history
# files). Erring high only makes covers() more conservative.
_REPLICA_SQL = """
SELECT greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text AS received,
       pg_last_wal_replay_lsn()::text AS replayed,
       CASE WHEN pg_last_wal_receive_lsn() IS NULL OR pg_last_wal_replay_lsn() IS NULL
              THEN NULL
            ELSE greatest(pg_wal_lsn_diff(pg_last_wal_receive_lsn(),
                                          pg_last_wal_replay_lsn()), 0)::bigint
       END AS lag_bytes,
       CASE WHEN pg_last_wal_receive_lsn() IS NULL THEN NULL
            WHEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0.0
            ELSE greatest(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)::float8
       END AS lag_seconds,
       pg_is_wal_replay_paused() AS paused,
       r.status AS receiver, r.received_tli, r.sender_host, r.sender_port,
       (SELECT timeline_id FROM pg_control_checkpoint()) AS checkpoint_tli,
       (SELECT max(name) FROM pg_ls_waldir()
         WHERE name ~ '^[0-9A-F]{24}$' OR name ~ '^[0-9A-F]{8}\\.history$') AS last_walfile,
       current_setting('primary_conninfo') AS conninfo,
       current_setting('cluster_name') AS cluster_name
FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver r ON true
"""

_STANDBY_NAME_SQL = """
SELECT pg_is_in_recovery() AS recovery,
       current_setting('primary_conninfo') AS conninfo,
       current_setting('cluster_name') AS cluster_name
"""

_SYNC_SQL = """
SELECT pg_is_in_recovery() AS recovery,
       current_setting('synchronous_standby_names') AS names,
       current_setting('synchronous_commit') AS sync_commit
"""

_SYNC_WAITING_SQL = "SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event = 'SyncRep'"

# Client sessions to end, with whether each belongs to a superuser: an account
# without SUPERUSER (pg_signal_backend) cannot end those, and asking for one makes
# the whole statement fail.
_CLIENTS_SQL = """
SELECT a.pid, coalesce(r.rolsuper, false) AS su,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS me_su
FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid
WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
"""

_OVERRIDES_SQL = """
SELECT coalesce(r.rolname, '*') AS role, coalesce(d.datname, '*') AS db
FROM pg_db_role_setting s
LEFT JOIN pg_roles r ON r.oid = s.setrole
LEFT JOIN pg_database d ON d.oid = s.setdatabase
WHERE EXISTS (SELECT 1 FROM unnest(s.setconfig) c
              WHERE c LIKE 'default_transaction_read_only=%')
"""


def covers(candidate: Position, reference: Position) -> bool:
    """Same timeline and an LSN at least as far. Across timelines the answer needs
    the timeline history (where the new timeline forked); without it, False."""
    if candidate.engine != ENGINE or reference.engine != ENGINE:
        return False
    if None in (candidate.lsn, candidate.timeline, reference.lsn, reference.timeline):
        return False
    assert candidate.lsn is not None and reference.lsn is not None
    return candidate.timeline == reference.timeline and candidate.lsn >= reference.lsn


def standby_name(conninfo: object, cluster_name: object) -> str | None:
    """The application_name a standby's WAL receiver connects with: the one in
    primary_conninfo, else cluster_name, else "walreceiver" (what PostgreSQL's WAL
    receiver does). None when primary_conninfo cannot be read."""
    text = conninfo if isinstance(conninfo, str) else ""
    try:
        given = psycopg.conninfo.conninfo_to_dict(text).get("application_name")
    except psycopg.Error:
        return None
    if given:
        return str(given)
    return str(cluster_name) if isinstance(cluster_name, str) and cluster_name else "walreceiver"


def _tli_max(*values: object) -> int | None:
    tlis = [v for v in values if isinstance(v, int) and v > 0]
    return max(tlis) if tlis else None


def primary_position(conn: Conn) -> Position:
    row = one(conn, _PRIMARY_SQL)
    return Position(
        engine=ENGINE, timeline=walfile_timeline(row["walfile"]), lsn=parse_lsn(row["lsn"])
    )


class _Answered(DbError):
    """The server answered the probe's first query but not the rest: ``status`` is
    what it said (reachable, role unknown, the error)."""

    def __init__(self, status: DbStatus) -> None:
        super().__init__(status.error or "probe: incomplete answer")
        self.status = status


class PostgresDriver:
    """``DatabaseDriver`` for one local PostgreSQL (15+) server. Thread-safe: the
    only connection it keeps between calls is the probe's (``ProbeLink``), which
    ``close`` ends."""

    engine = ENGINE

    def __init__(self, settings: PgSettings) -> None:
        self.settings = settings
        self.tools = Tools(settings)
        self._probe_link = ProbeLink(settings)

    def close(self) -> None:
        """End the probe's kept session. Idempotent; never raises; a later probe
        connects again."""
        self._probe_link.close()

    # -- probe ----------------------------------------------------------------

    def probe(self, timeout: float) -> DbStatus:
        """Observe the server. Never raises (any failure is in the status)."""
        try:
            return self._probe_link.run(Deadline(timeout, "probe"), self._probe)
        except _Answered as exc:
            return exc.status
        except DbError as exc:
            return DbStatus.unreachable(str(exc))
        except Exception as exc:  # the contract: probe never raises
            return DbStatus.unreachable(str(map_error(exc, "probe")))

    def _probe(self, conn: Conn) -> DbStatus:
        base = one(conn, _SETTINGS_SQL)
        seen = DbStatus(reachable=True, version=str(base["version"]), flavour=ENGINE)
        try:
            if not base["recovery"]:
                pos = primary_position(conn)
                reps = tuple(self._replica(r, pos.timeline) for r in conn.execute(_REPLICAS_SQL))
                return replace(
                    seen,
                    role=Role.PRIMARY,
                    writable=base["read_only"] == "off",
                    position=pos,
                    replicas=reps,
                    # A standby's setting (copied with its data directory) waits for
                    # nothing until it is promoted: only a primary's counts.
                    sync_replication=bool(base["sync_names"])
                    and base["sync_commit"] not in ("off", "local"),
                    sync_waiting=base["sync_waiting"],
                    sync_wait_longest=base["sync_wait_longest"],
                )
            row = one(conn, _REPLICA_SQL)
        except (psycopg.Error, DbError) as exc:
            # Reachable, but the server did not say what it is: half-broken. Raised
            # (not returned) so that the probe's session is dropped.
            why = str(map_error(exc, "probe"))
            raise _Answered(replace(seen, role=Role.UNKNOWN, error=why)) from exc
        tli = _tli_max(
            row["received_tli"], row["checkpoint_tli"], walfile_timeline(row["last_walfile"])
        )
        received = parse_lsn(row["received"])
        return replace(
            seen,
            role=Role.REPLICA,
            writable=False,
            position=Position(engine=ENGINE, timeline=tli, lsn=parse_lsn(row["replayed"])),
            received=None if received is None else Position(ENGINE, timeline=tli, lsn=received),
            lag_bytes=row["lag_bytes"],
            lag_seconds=row["lag_seconds"],
            streaming=row["receiver"] == "streaming",
            upstream=row["sender_host"] or _conninfo_host(row["conninfo"]),
            sync_ready=standby_name(row["conninfo"], row["cluster_name"])
            == self.settings.node_name,
            replay_paused=bool(row["paused"]),
        )

    @staticmethod
    def _replica(r: dict[str, object], tli: int | None) -> ReplicaInfo:
        def pos(v: object) -> Position | None:
            lsn = parse_lsn(v)
            return Position(engine=ENGINE, timeline=tli, lsn=lsn) if lsn is not None else None

        lag_b, lag_s = r["lag_bytes"], r["lag_seconds"]
        return ReplicaInfo(
            name=str(r["name"] or ""),
            address=str(r["address"]) if r["address"] else None,
            state=str(r["state"] or ""),
            sync=r["sync_state"] in ("sync", "quorum"),
            sent=pos(r["sent"]),
            flushed=pos(r["flushed"]),
            replayed=pos(r["replayed"]),
            lag_bytes=int(lag_b) if isinstance(lag_b, int) else None,
            lag_seconds=float(lag_s) if isinstance(lag_s, float) else None,
        )

    # -- fence ----------------------------------------------------------------

    def fence(self, timeout: float, hard: bool = False) -> None:
        """Soft: persistent read-only default + reload, wait until a new session is
        read-only, terminate every other client session. Verified before it returns.
        Hard: persist the read-only default if the server answers (best effort, half
        the budget), then a fast shutdown (immediate if fast does not finish).
        Idempotent. Raises DbTimeout / DbUnreachable / DbError when not verified."""
        deadline = Deadline(timeout, "fence")
        if hard:
            self._hard_fence(deadline)
            return
        with session(self.settings, deadline) as conn:
            self._set_read_only(conn, True)
            self._wait_new_session(deadline, read_only=True)
            self._terminate_clients(conn, deadline)
            overrides = conn.execute(_OVERRIDES_SQL).fetchall()
        if overrides:
            who = ", ".join(f"role {o['role']} in database {o['db']}" for o in overrides)
            raise DbError(
                f"fence: read-only default set, but a per-role/database setting overrides "
                f"default_transaction_read_only ({who}): those sessions can still write"
            )

    def _hard_fence(self, deadline: Deadline) -> None:
        if not self.tools.running(deadline):
            return  # a stopped server accepts no writes
        persist = Deadline(max(0.1, deadline.remaining() / 2), "fence")
        try:
            with session(self.settings, persist) as conn:
                self._set_read_only(conn, True)
        except DbError:
            pass  # a server too sick to answer is stopped all the same
        try:
            self.tools.stop("fast", Deadline(deadline.left() * 0.7, "fence"))
        except DbError:
            self.tools.stop("immediate", Deadline(deadline.left(), "fence"))

    def unfence(self, timeout: float) -> None:
        """Reset the read-only default and reload; on a primary, wait until a new
        session is writable. Idempotent. Raises DbError."""
        deadline = Deadline(timeout, "unfence")
        with session(self.settings, deadline) as conn:
            self._set_read_only(conn, False)
            recovery = one(conn, "SELECT pg_is_in_recovery() AS r")["r"]
        if not recovery:
            self._wait_new_session(deadline, read_only=False)

    @staticmethod
    def _set_read_only(conn: Conn, on: bool) -> None:
        if on:
            conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        else:
            conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
        conn.execute("SELECT pg_reload_conf()")

    def _wait_new_session(self, deadline: Deadline, read_only: bool) -> None:
        self._wait_setting(deadline, "default_transaction_read_only", "on" if read_only else "off")

    def _wait_setting(self, deadline: Deadline, name: str, want: str) -> None:
        # The reload is asynchronous: poll with new sessions until one sees it.
        while True:
            with session(self.settings, deadline) as probe:
                got = one(probe, "SELECT current_setting(%s) AS v", (name,))
            if got["v"] == want:
                return
            if deadline.remaining() < POLL * 2:
                raise DbTimeout(f"{deadline.what}: new sessions still have {name}={got['v']!r}")
            time.sleep(POLL)

    @staticmethod
    def _terminate_clients(conn: Conn, deadline: Deadline) -> None:
        # Signal every client backend at once, then wait (briefly polling) until they
        # are gone: pg_terminate_backend's own wait polls at 100 ms.
        rows = conn.execute(_CLIENTS_SQL).fetchall()
        pids = [r["pid"] for r in rows if r["me_su"] or not r["su"]]
        kept = len(rows) - len(pids)
        if kept:
            # Read-only applies to their next transactions too, but a superuser can
            # set it off again: applications must not connect as superusers.
            log.warning(
                "fence: %d superuser session(s) left open (dbha's account is not a "
                "superuser and cannot end them)",
                kept,
            )
        if not pids:
            return
        conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
        while True:
            left = one(
                conn,
                "SELECT count(*) AS n FROM pg_stat_activity WHERE pid = ANY(%s::int[])",
                (pids,),
            )["n"]
            if left == 0:
                return
            if deadline.remaining() < POLL * 2:
                raise DbTimeout(f"{deadline.what}: {left} client session(s) did not exit in time")
            time.sleep(POLL / 4)

    # -- replay and promotion ---------------------------------------------------

    def wait_replayed(self, timeout: float) -> Position:
        """Replica: wait until the replay position reaches what was received when the
        call started; return it. Primary: its current position. A paused replay is
        resumed (logged): this is the step before a promotion, which must apply
        everything received, and the decision core starts no automatic promotion
        of a paused replica, so reaching it paused means an operator forced it.
        Raises DbTimeout / DbError."""
        deadline = Deadline(timeout, "wait_replayed")
        with session(self.settings, deadline) as conn:
            target: int | None = None
            while True:
                if not one(conn, "SELECT pg_is_in_recovery() AS r")["r"]:
                    return primary_position(conn)
                row = one(conn, _REPLICA_SQL)
                if row["paused"]:
                    log.warning("wait_replayed: the replay was paused: resuming it to promote")
                    conn.execute("SELECT pg_wal_replay_resume()")
                    row = one(conn, _REPLICA_SQL)
                received, replayed = parse_lsn(row["received"]), parse_lsn(row["replayed"])
                if target is None:
                    target = received if received is not None else replayed
                tli = _tli_max(
                    row["received_tli"],
                    row["checkpoint_tli"],
                    walfile_timeline(row["last_walfile"]),
                )
                if replayed is not None and (target is None or replayed >= target):
                    return Position(engine=ENGINE, timeline=tli, lsn=replayed)
                if deadline.remaining() < POLL * 2:
                    paused = " (replay is paused)" if row["paused"] else ""
                    raise DbTimeout(
                        f"wait_replayed: replayed {row['replayed']} of {row['received']} "
                        f"within {timeout:g} s{paused}"
                    )
                time.sleep(POLL)

    def promote(self, timeout: float) -> PromoteResult:
        """pg_promote, wait until out of recovery, then CHECKPOINT (so the new
        timeline reaches pg_control and pg_rewind works later); lifts a read-only
        fence left from earlier. On a primary: a no-op that says ``already_primary``
        (it only finishes a promotion whose checkpoint did not happen). Raises
        DbTimeout / DbError."""
        deadline = Deadline(timeout, "promote")
        with session(self.settings, deadline) as conn:
            if not one(conn, "SELECT pg_is_in_recovery() AS r")["r"]:
                row = one(conn, _PRIMARY_SQL)
                if row["checkpoint_tli"] != walfile_timeline(row["walfile"]):
                    conn.execute("CHECKPOINT")
                return PromoteResult(already_primary=True, position=primary_position(conn))
            # pg_promote(wait => true) polls at 100 ms: ask, then poll more finely.
            if not one(conn, "SELECT pg_promote(false) AS ok")["ok"]:
                raise DbError("promote: the server refused to start the promotion")
            while one(conn, "SELECT pg_is_in_recovery() AS r")["r"]:
                if deadline.remaining() < POLL * 2:
                    raise DbTimeout(f"promote: still in recovery after {timeout:g} s")
                time.sleep(POLL / 4)
            conn.execute("CHECKPOINT")
            # Lift a fence left in the configuration only now: a reload during the
            # promotion was seen to delay it by wal_retrieve_retry_interval.
            fenced = one(
                conn,
                "SELECT setting = 'on' AND source <> 'default' AS f "
                "FROM pg_settings WHERE name = 'default_transaction_read_only'",
            )["f"]
            if fenced:
                self._set_read_only(conn, False)
                self._wait_new_session(deadline, read_only=False)
            return PromoteResult(already_primary=False, position=primary_position(conn))

    # -- synchronous commit -----------------------------------------------------

    def set_synchronous(self, on: bool, timeout: float) -> None:
        """``on``: ALTER SYSTEM SET synchronous_standby_names to ``FIRST 1`` of both
        node names (see ``PgSettings.sync_standby_names``: the same value on both
        nodes, so the copy pg_rewind / pg_basebackup carry to the other node is
        right too); ``off``: to '' (not RESET, which would fall back to a value in
        postgresql.conf). Then reload and wait until a new session sees the value;
        ``off`` also waits until no session waits for the standby any more (the
        checkpointer applies the reload and releases them). Skips the ALTER when the
        value is already in force. Refuses ``on`` on a standby (DbRefused) and when
        synchronous_commit is off or local (DbError: commits would not wait).
        Raises DbTimeout / DbUnreachable / DbError."""
        what = f"set_synchronous {'on' if on else 'off'}"
        deadline = Deadline(timeout, what)
        want = self.settings.sync_standby_names() if on else ""
        if want is None:
            raise DbError(f"{what}: the peer's node name is not configured (peer_name)")
        with session(self.settings, deadline) as conn:
            row = one(conn, _SYNC_SQL)
            if on and row["recovery"]:
                raise DbRefused(f"{what}: this server is a standby: commits happen on the primary")
            if on and row["sync_commit"] in ("off", "local"):
                raise DbError(
                    f"{what}: synchronous_commit is {row['sync_commit']}: commits would not "
                    "wait for the standby; set it to on, remote_write or remote_apply"
                )
            if row["names"] != want:
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(
                        sql.Literal(want)
                    )
                )
                conn.execute("SELECT pg_reload_conf()")
            self._wait_setting(deadline, "synchronous_standby_names", want)
            while not on:
                waiting = one(conn, _SYNC_WAITING_SQL)["n"]
                if waiting == 0:
                    return
                if deadline.remaining() < POLL * 2:
                    raise DbTimeout(
                        f"{deadline.what}: {waiting} session(s) still wait for the standby"
                    )
                time.sleep(POLL / 2)

    def prepare_replica(self, timeout: float) -> None:
        """Make the standby's WAL receiver connect with application_name = this
        node's name, the name ``set_synchronous`` makes the primary wait for: a
        standby built by its operator (pg_basebackup -R) connects as its
        cluster_name, which the primary does not wait for, so synchronous commits
        would wait for nobody that can answer. primary_conninfo is rewritten with
        ALTER SYSTEM (only application_name changes; the slot and every other
        setting are kept) and reloaded, which restarts the WAL receiver (PostgreSQL
        13+); returns once a new session sees it. Refuses (DbRefused, nothing
        changed) on a primary, and when primary_conninfo carries a password inline:
        the rewrite would put it in a statement the server may log. Idempotent."""
        deadline = Deadline(timeout, "prepare_replica")
        node = self.settings.node_name
        with session(self.settings, deadline) as conn:
            row = one(conn, _STANDBY_NAME_SQL)
            if not row["recovery"]:
                raise DbRefused("prepare_replica: this server is not a standby")
            if standby_name(row["conninfo"], row["cluster_name"]) == node:
                return
            try:
                given = psycopg.conninfo.conninfo_to_dict(row["conninfo"] or "")
            except psycopg.Error as exc:
                raise DbRefused(
                    f"prepare_replica: primary_conninfo cannot be read ({exc}): set "
                    f"application_name={node} in it yourself"
                ) from exc
            if given.get("password"):
                raise DbRefused(
                    "prepare_replica: primary_conninfo carries a password inline; dbha does "
                    f"not rewrite it (the statement could be logged): add application_name="
                    f"{node} to it yourself, or use a passfile"
                )
            want = psycopg.conninfo.make_conninfo(row["conninfo"] or "", application_name=node)
            conn.execute(
                sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(sql.Literal(want))
            )
            conn.execute("SELECT pg_reload_conf()")
        self._wait_setting(deadline, "primary_conninfo", want)

    # -- follow and rejoin ------------------------------------------------------

    def follow(self, upstream: Upstream, timeout: float) -> None:
        """See ``dbha.db.postgres.rejoin.follow``."""
        pgrejoin.follow(self.settings, self.tools, upstream, Deadline(timeout, "follow"))

    def rejoin(
        self,
        upstream: Upstream,
        timeout: float,
        force: bool = False,
        unacknowledged: bool = False,
    ) -> RejoinReport:
        """See ``dbha.db.postgres.rejoin.rejoin``. ``force`` changes nothing for PostgreSQL:
        a rejoin never discards, it keeps the diverged WAL (or the old data
        directory) aside and reports it."""
        return pgrejoin.rejoin(self.settings, self.tools, upstream, Deadline(timeout, "rejoin"))

    def covers(self, candidate: Position, reference: Position) -> bool:
        return covers(candidate, reference)


def _conninfo_host(conninfo: object) -> str | None:
    if not isinstance(conninfo, str) or not conninfo:
        return None
    try:
        host = psycopg.conninfo.conninfo_to_dict(conninfo).get("host")
    except psycopg.Error:
        return None
    return str(host) if host else None
