"""The MySQL/MariaDB driver (PyMySQL): MariaDB 10.6+ and MySQL 8.0.23+.

One :class:`MysqlDriver` drives one local server, built from a frozen
:class:`~dbha.db.mysql.conn.MysqlSettings`. The server's version picks the
flavour (:mod:`dbha.db.mysql.flavour`); GTID arithmetic is in
:mod:`dbha.db.gtid`, the rejoin in :mod:`dbha.db.mysql.rejoin`, connections,
timeouts and the exception boundary in :mod:`dbha.db.mysql.conn`.

Each verb opens its own connection, bounded by the verb's timeout, and closes
it; the probe, which runs every probe interval, keeps one instead (same bounds,
dropped on any error, ended by ``close``). On a reachable server,
``DbStatus.error`` carries warnings that need an operator even though the
server answers: a replication error, a semi-sync primary that fell back to
asynchronous commits, unsafe GTID settings.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path

from dbha import proc
from dbha.core.model import DbStatus, Position
from dbha.db import gtid, tcpkill
from dbha.db.base import (
    DbError,
    DbRefused,
    DbTimeout,
    DbUnreachable,
    PromoteResult,
    RejoinReport,
    Upstream,
)
from dbha.db.mysql import rejoin as mysqlrejoin
from dbha.db.mysql.conn import (
    Deadline,
    MysqlSettings,
    ProbeLink,
    ReplicationStopped,
    Session,
    boundary,
    read_secret,
)
from dbha.db.mysql.flavour import Flavour
from dbha.db.mysql.observe import (
    acknowledges,
    observe,
    position,
    prompt,
    received,
    server_state,
)
from dbha.db.mysql.rows import (
    ReplicaRow,
    ServerVars,
    clients_to_kill,
    parse_semisync,
)

log = logging.getLogger("dbha.db.mysql")

POLL = 0.05  # seconds between looks while waiting for replication to start or a server to stop
# How long a receiver's STOP may run before its upstream connections are ended
# (see MysqlDriver._stop_receiver), and how often that is repeated after.
RECEIVER_STOP_GRACE = 0.05
# A receiver that keeps failing to connect is given up on after at least this long
# (seconds), or three of its retries if longer (see MysqlDriver.wait_streaming).
RECEIVER_STUCK_MIN = 5.0
UNKNOWN_THREAD = 1094  # KILL of a connection that has just gone


class _Answered(DbError):
    """The server was reached but did not answer the whole probe: ``status`` says
    what it did say (reachable, the error)."""

    def __init__(self, status: DbStatus) -> None:
        super().__init__(status.error or "probe: incomplete answer")
        self.status = status


class MysqlDriver:
    """A MySQL or MariaDB server behind :class:`dbha.db.base.DatabaseDriver`."""

    def __init__(self, settings: MysqlSettings) -> None:
        self.settings = settings
        self.engine = settings.engine
        self.name = settings.name
        self._probe_link = ProbeLink(settings)

    # -- helpers ---------------------------------------------------------------

    def session(self, deadline: Deadline, what: str) -> Session:
        return Session(self.settings, deadline, what)

    @staticmethod
    def state(s: Session) -> tuple[ServerVars, ReplicaRow | None]:
        return server_state(s)

    @staticmethod
    def position(f: Flavour, gtid_text: str | None) -> Position | None:
        return position(f, gtid_text)

    def received(self, f: Flavour, v: ServerVars, rep: ReplicaRow) -> str | None:
        return received(f, v, rep)

    # -- probe -------------------------------------------------------------------

    def probe(self, timeout: float) -> DbStatus:
        """Role, writability, positions, lag, replicas. Never raises. Runs on the
        probe's kept session (:class:`~dbha.db.mysql.conn.ProbeLink`)."""
        what = f"probe {self.name}"
        try:
            return self._probe_link.run(Deadline(timeout), what, self._observed)
        except _Answered as exc:
            return exc.status
        except DbError as exc:
            return DbStatus.unreachable(str(exc))
        except Exception as exc:  # a probe never raises: say what broke instead
            return DbStatus.unreachable(f"{what}: unexpected {type(exc).__name__}: {exc}")

    def close(self) -> None:
        """End the probe's kept session. Idempotent; never raises; a later probe
        connects again."""
        self._probe_link.close()

    def _observed(self, s: Session) -> DbStatus:
        try:
            return self._observe(s)
        except (DbUnreachable, DbTimeout):
            # Gone (the probe link connects anew, once) or not answering in time (a
            # frozen server, whose kept session still looks open): unreachable.
            raise
        except Exception as exc:
            # Connected, but the server did not answer everything: raised (not
            # returned) so that the probe's session is dropped.
            why = str(exc) if isinstance(exc, DbError) else f"{type(exc).__name__}: {exc}"
            status = DbStatus(reachable=True, version=s.version, flavour=s.flavour.name, error=why)
            raise _Answered(status) from exc

    def _observe(self, s: Session) -> DbStatus:
        return observe(s, self.engine, self.settings.connect_retry)

    # -- fence / unfence --------------------------------------------------------

    def fence(self, timeout: float, hard: bool = False) -> None:
        """read_only (+ super_read_only on MySQL), then end every client connection
        but replication's and ours, then check read_only holds. ``hard`` then stops
        the server (``stop_argv``, or SQL SHUTDOWN) and waits until it is gone, even
        if the soft part failed. Idempotent."""
        dl, what = Deadline(timeout), f"fence {self.name}"
        try:
            with self.session(dl, what) as s:
                killed = self._fence(s, dl, what)
            log.info("%s: read-only, %d client connection(s) ended", what, killed)
        except DbError as exc:
            if not hard:
                raise
            log.warning("%s: soft fence failed (%s); stopping the server", what, exc)
        if hard:
            self._stop(dl, what)

    def _fence(self, s: Session, dl: Deadline, what: str) -> int:
        f = s.flavour
        # Setting read_only waits for commits in flight and for table locks, and a
        # commit waiting for a semi-sync acknowledgement from a replica that is gone
        # waits for ever: end the clients first (a commit whose connection ends is not
        # acknowledged), set read_only, and end whoever connected in between. If it
        # still waits, end the clients that hold it up and try again.
        killed = self._kill_clients(s)
        s.run(f"SET SESSION lock_wait_timeout = {max(1, int(dl.left(what) / 3))}")
        try:
            for sql in f.read_only_sql(True):
                s.run(sql)
        except DbTimeout:
            killed += self._kill_clients(s)
            s.run(f"SET SESSION lock_wait_timeout = {max(1, int(dl.left(what)))}")
            for sql in f.read_only_sql(True):
                s.run(sql)
        killed += self._kill_clients(s)
        v = f.parse_vars(s.one(f.vars_sql))
        if not f.fenced(v):
            raise DbError(f"{what}: read_only did not hold after setting it")
        return killed

    @staticmethod
    def _kill_clients(s: Session) -> int:
        ids = clients_to_kill(s.rows(s.flavour.processlist_sql), s.id)
        for cid in ids:
            s.run("KILL CONNECTION %s", (cid,), ignore=(UNKNOWN_THREAD,))
        return len(ids)

    def _stop(self, dl: Deadline, what: str) -> None:
        if self.settings.stop_argv:
            with boundary(f"{what}: stop command"):
                proc.run(self.settings.stop_argv, timeout=dl.left(what))
        else:
            with contextlib.suppress(DbUnreachable), self.session(dl, what) as s:
                s.run("SHUTDOWN", ignore_lost=True)
        while True:  # gone = a connection is refused, not merely slow
            try:
                with self.session(Deadline(min(1.0, dl.left(what))), what):
                    pass
            except DbUnreachable:
                return
            except DbTimeout:
                pass  # still shutting down (or hung): keep trying until the deadline
            time.sleep(min(POLL, max(dl.remaining(), 0)))

    def unfence(self, timeout: float) -> None:
        """Lift read_only on a primary. Refuses (DbRefused) on a configured replica:
        a writable replica would diverge. After a hard fence, starts the server first
        when ``start_argv`` is set. Idempotent."""
        dl, what = Deadline(timeout), f"unfence {self.name}"
        try:
            s = self.session(dl, what)
        except DbUnreachable:
            if not self.settings.start_argv:
                raise
            with boundary(f"{what}: start command"):
                proc.run(self.settings.start_argv, timeout=dl.left(what))
            s = self._connect_when_up(dl, what)
        with s:
            f = s.flavour
            v, rep = self.state(s)
            if rep is not None:
                raise DbRefused(
                    f"{what}: it replicates from {rep.source_host}:{rep.source_port}; "
                    "promote it instead of unfencing it"
                )
            for sql in f.read_only_sql(False):
                s.run(sql)
            v = f.parse_vars(s.one(f.vars_sql))
            if v.read_only or v.super_read_only:
                raise DbError(f"{what}: read_only is still on")

    def _connect_when_up(self, dl: Deadline, what: str) -> Session:
        while True:
            try:
                return self.session(Deadline(min(1.0, dl.left(what))), what)
            except DbUnreachable:
                time.sleep(min(POLL * 2, max(dl.remaining(), 0)))

    # -- replication --------------------------------------------------------------

    def wait_replayed(self, timeout: float) -> Position:
        """Apply everything received (starting a stopped applier that has no error);
        return the applied position. On a server that replicates from nobody there is
        nothing to apply: its position comes back at once."""
        dl, what = Deadline(timeout), f"wait_replayed {self.name}"
        with self.session(dl, what) as s:
            f = s.flavour
            v, rep = self.state(s)
            if rep is not None:
                self._apply_received(s, dl, what, v, rep)
                v = f.parse_vars(s.one(f.vars_sql))
            pos = self.position(f, v.executed)
            if pos is None:
                raise DbError(f"{what}: the server's GTID position is unreadable")
            return pos

    def _apply_received(
        self, s: Session, dl: Deadline, what: str, v: ServerVars, rep: ReplicaRow
    ) -> None:
        f = s.flavour
        behind = gtid.behind(f.name, self.received(f, v, rep), v.executed)
        if behind == 0:
            return
        if rep.sql_running != "Yes":
            if rep.sql_errno or rep.sql_error:
                raise DbError(f"{what}: the applier stopped on an error: {rep.error}")
            s.run(f.start_applier_sql)
        left = dl.left(what)
        sql, args = f.wait_sql(rep.received, max(0.0, left - min(0.5, left / 10)))
        row = s.one(sql, args)
        if row is None or not f.wait_succeeded(row.get("done")):
            raise DbTimeout(f"{what}: {behind} transaction(s) still not applied in time")

    def promote(self, timeout: float) -> PromoteResult:
        """Stop receiving, apply everything already received (a semi-sync ack means
        received, not applied), stop and forget replication, lift read_only.
        A writable server that replicates from nobody is already primary: no-op. One
        that is read-only (a promotion interrupted after the reset, or a fenced
        primary chosen to serve again) is made writable. If what was received cannot
        be applied in time, the receiver is restarted and nothing else changed."""
        dl, what = Deadline(timeout), f"promote {self.name}"
        with self.session(dl, what) as s:
            f = s.flavour
            v, rep = self.state(s)
            if rep is None and not (v.read_only or v.super_read_only):
                return PromoteResult(already_primary=True, position=self.position(f, v.executed))
            if rep is not None:
                self._stop_receiver(s, rep)
                v, after = self.state(s)
                try:
                    self._apply_received(s, dl, what, v, after or rep)
                except DbError:
                    with contextlib.suppress(DbError):
                        s.run(f.start_receiver_sql)  # leave it replicating, as found
                    raise
                s.run(f.stop_replica_sql)
                s.run(f.reset_replica_sql)
            for sql in f.read_only_sql(False):
                s.run(sql)
            v = f.parse_vars(s.one(f.vars_sql))
            if v.read_only or v.super_read_only:
                raise DbError(f"{what}: read_only is still on")
            log.info("%s: promoted at %s", what, v.executed)
            return PromoteResult(already_primary=False, position=self.position(f, v.executed))

    @staticmethod
    def _stop_receiver(s: Session, rep: ReplicaRow) -> None:
        """Stop receiving (what was received stays in the relay log). A semi-synchronous
        MariaDB receiver whose upstream is dead first connects to the upstream to end
        its dump thread, and STOP waits for that attempt: 2 s (measured 2.01 s). While
        the STOP runs past a short grace, the server's own TCP connections to the
        upstream's port are ended (``ss -K``; only a local server's, found by its pid
        file), which fails that attempt at once; where that cannot be done, the STOP
        merely takes its time."""
        pid = _server_pid(s)
        done = threading.Event()

        def unblock() -> None:
            if done.wait(RECEIVER_STOP_GRACE) or pid is None or rep.source_port is None:
                return
            while True:
                tcpkill.end_connections(pid, rep.source_host, rep.source_port, timeout=1.0)
                if done.wait(RECEIVER_STOP_GRACE):
                    return

        helper = threading.Thread(target=unblock, name="dbha-receiver-stop", daemon=True)
        helper.start()
        try:
            s.run(s.flavour.stop_receiver_sql)
        finally:
            done.set()
            helper.join(2.0)

    def follow(self, upstream: Upstream, timeout: float) -> None:
        """Keep read_only on, point replication at ``upstream`` with GTID
        auto-positioning and start it; returns once both threads run. Idempotent.
        Raises DbError when replication stops on an error (e.g. this server has
        transactions the upstream lacks: use rejoin), DbTimeout when it is still
        connecting at the deadline."""
        dl, what = Deadline(timeout), f"follow {self.name} -> {upstream.name}"
        with self.session(dl, what) as s:
            f = s.flavour
            v, rep = self.state(s)
            if not f.fenced(v):
                for sql in f.read_only_sql(True):
                    s.run(sql)
            if rep is not None and rep.follows(upstream.host, upstream.port):
                restarted = self.semisync_as_replica(s, rep)
                if rep.streaming and not restarted:
                    return
                s.run(f.start_replica_sql)
            else:
                self.point_at(s, upstream, v, rep)
                s.run(f.start_replica_sql)
            self.wait_streaming(s, dl, what)
            log.info("%s: replicating", what)

    def point_at(
        self, s: Session, upstream: Upstream, v: ServerVars, rep: ReplicaRow | None
    ) -> None:
        """CHANGE MASTER / CHANGE REPLICATION SOURCE to ``upstream`` (not started)."""
        f = s.flavour
        if rep is not None:
            s.run(f.stop_replica_sql)
        self.semisync_as_replica(s, None)
        start = f.slave_pos_to_set(v)
        if start is not None:  # a former primary: its own writes are in the binlog only
            s.run(f.set_position_sql, (start,))
        password = read_secret(self.settings.repl_password_file, f"{s.what}: replication")
        sql, args = f.change_source(
            upstream.host,
            upstream.port,
            self.settings.repl_user,
            password,
            self.settings.connect_retry,
            self.settings.heartbeat_period,
        )
        s.run(sql, args, secrets=(password,))

    def semisync_as_replica(self, s: Session, rep: ReplicaRow | None) -> bool:
        """Semi-sync as a replica needs it: the primary side off (a replica asking
        for acknowledgements of what it applies stalls its applier), the replica side
        on. The replica side is always switched on, whatever the pair's mode (the
        driver does not know it): it acknowledges only when the primary asks, and
        then a primary that turns synchronous commit on finds its replica ready.
        Commits still waiting here for an acknowledgement are never released as
        successes: their client connections are ended first (outcome unknown to the
        client, which is the truth). When the replica side was just switched on
        while the receiver runs (``rep``), the receiver reconnects so that it takes
        effect; returns True then (it has stopped the receiver: start replication)."""
        f = s.flavour
        semi = parse_semisync(s.rows(f.semisync_sql))
        if semi.enabled and semi.primary_side is not None:
            if semi.waiting:
                killed = self._kill_clients(s)
                log.warning(
                    "%s: %d commit(s) waited for a semi-sync acknowledgement; "
                    "%d client connection(s) ended so that none is acknowledged",
                    s.what,
                    semi.waiting,
                    killed,
                )
            for sql in f.semisync_primary_sql(semi.primary_side, False):
                s.run(sql)
        if semi.replica_side is None or semi.replica_enabled:
            return False
        s.run(f.semisync_replica_sql(semi.replica_side, True))
        if rep is None or rep.io_running == "No":
            return False
        s.run(f.stop_receiver_sql)
        return True

    def prepare_replica(self, timeout: float) -> None:
        """The replica side of semi-sync on (the primary side off), and the receiver
        reconnected when it was running without it, so that it registers with its
        primary as semi-synchronous and acknowledges what it receives: a replica
        that was replicating before dbha started (its operator never enabled
        semi-sync) would otherwise leave a synchronous primary with no one to
        answer. A receiver that waits longer between reconnection attempts than
        ``connect_retry`` (the server's default is 60 s) is set to it, the threads
        stopped and started again (GTID positions: nothing is lost), so that a
        primary's restart does not hold its synchronous commits that long. MariaDB
        keeps the semi-sync setting at runtime (the probe tells when a restart lost
        it, and the supervisor asks again); MySQL persists it. Refuses (DbRefused)
        on a server that replicates from nobody; raises DbError when the server has
        no semi-sync. Idempotent."""
        dl, what = Deadline(timeout), f"prepare_replica {self.name}"
        st = self.settings
        with self.session(dl, what) as s:
            f = s.flavour
            _, rep = self.state(s)
            if rep is None:
                raise DbRefused(f"{what}: it replicates from nobody")
            semi = parse_semisync(s.rows(f.semisync_sql))
            if semi.replica_side is None:
                raise DbError(f"{what}: {f.semisync_missing}")
            slow = not prompt(rep, st.connect_retry)
            if acknowledges(semi, rep) and not semi.enabled and not slow:
                return
            restarted = self.semisync_as_replica(s, rep)
            if slow:
                s.run(f.stop_replica_sql)  # both threads: the statement needs them stopped
                s.run(f.retry_sql(st.connect_retry, st.heartbeat_period))
                log.info(
                    "%s: the receiver retried every %s s; now every %s s",
                    what,
                    rep.connect_retry,
                    st.connect_retry,
                )
                restarted = True
            elif not restarted and rep.io_running == "Yes" and semi.replica_active is False:
                s.run(f.stop_receiver_sql)  # enabled, but not when the receiver connected
                restarted = True
            if restarted:
                s.run(f.start_replica_sql)
                self.wait_streaming(s, dl, what)
            log.info("%s: the replica side of semi-sync is on", what)

    # -- synchronous commit ---------------------------------------------------------

    def set_synchronous(self, on: bool, timeout: float) -> None:
        """The primary side of semi-synchronous replication on or off (SET GLOBAL:
        runtime only; after a restart the server's own configuration rules, and the
        probe says whether it holds). On: a timeout of ~49.7 days and waiting even
        with no replica connected, so that it never falls back to asynchronous on its
        own, then enabled; a primary that had fallen back is switched off and on
        again, which makes it wait again. Off: disabled, which releases the waiting
        commits. Verified by reading the state back: on = it waits and holds (what
        ``probe().sync_replication`` reports); off = disabled and no commit waiting.
        Refuses ``on`` on a replica (DbRefused). Raises DbError when the server has
        no semi-sync (MySQL without the plugin). Idempotent."""
        dl, what = Deadline(timeout), f"set_synchronous {self.name} {'on' if on else 'off'}"
        with self.session(dl, what) as s:
            f = s.flavour
            semi = parse_semisync(s.rows(f.semisync_sql))
            side = semi.primary_side
            if side is None:
                raise DbError(f"{what}: {f.semisync_missing}")
            if on:
                _, rep = self.state(s)
                if rep is not None:
                    raise DbRefused(
                        f"{what}: it replicates from {rep.source_host}:{rep.source_port}: "
                        "commits happen on the primary"
                    )
                if semi.holds and semi.wait_point in (None, "AFTER_SYNC"):
                    return
                if semi.holds and semi.primary_side is not None:
                    # The server's own settings turned it on, waiting AFTER_COMMIT.
                    s.run(f"SET GLOBAL rpl_semi_sync_{side}_wait_point = AFTER_SYNC")
                    return
                if semi.fell_back:  # waiting again takes a fresh start
                    for sql in f.semisync_primary_sql(side, False):
                        s.run(sql)
                for sql in f.semisync_primary_sql(side, True):
                    s.run(sql)
            elif semi.enabled:
                for sql in f.semisync_primary_sql(side, False):
                    s.run(sql)
            while True:
                semi = parse_semisync(s.rows(f.semisync_sql))
                done = semi.holds if on else (not semi.enabled and not semi.waiting)
                if done:
                    return
                if dl.remaining() <= POLL:
                    raise DbTimeout(
                        f"{what}: not in force in time (enabled {semi.enabled}, waiting "
                        f"{semi.active}, {semi.waiting} commit(s) waiting)"
                    )
                time.sleep(POLL / 5)

    def wait_streaming(self, s: Session, dl: Deadline, what: str) -> None:
        """Until both replication threads run. Raises ReplicationStopped when one
        stopped on an error, or when the receiver has kept failing to connect (an
        error while it retries, e.g. 1040 Too many connections, 1045 access denied)
        for longer than a few of its retries: it would otherwise count as "still
        connecting" until the verb's whole budget is spent. DbTimeout at the deadline."""
        f = s.flavour
        st = self.settings
        stuck_after = max(RECEIVER_STUCK_MIN, 3 * st.connect_retry + st.connect_timeout)
        failing_since: float | None = None
        while True:
            rep = f.parse_replica_status(s.rows(f.replica_status_sql))
            if rep is None:
                raise DbError(f"{what}: replication is not configured")
            if rep.streaming:
                return
            if (rep.io_running == "No" and rep.io_errno) or (
                rep.sql_running == "No" and rep.sql_errno
            ):
                raise ReplicationStopped(f"{what}: replication stopped: {rep.error}", rep)
            now = time.monotonic()
            if rep.io_running != "Yes" and rep.io_errno:
                failing_since = now if failing_since is None else failing_since
                if now - failing_since > stuck_after:
                    raise ReplicationStopped(
                        f"{what}: the receiver cannot connect to its upstream "
                        f"(for {now - failing_since:.0f} s): {rep.error}",
                        rep,
                    )
            else:
                failing_since = None
            if dl.remaining() <= POLL:
                raise DbTimeout(
                    f"{what}: not replicating yet (receiver {rep.io_running}, applier "
                    f"{rep.sql_running}{'; ' + rep.error if rep.error else ''})"
                )
            time.sleep(POLL)

    def rejoin(
        self,
        upstream: Upstream,
        timeout: float,
        force: bool = False,
        unacknowledged: bool = False,
    ) -> RejoinReport:
        """See :func:`dbha.db.mysql.rejoin.rejoin`."""
        return mysqlrejoin.rejoin(self, upstream, timeout, force, unacknowledged)

    def covers(self, candidate: Position, reference: Position) -> bool:
        """GTID containment (MariaDB: per domain and server id; MySQL: uuid sets).
        False for positions of different engines or unreadable text."""
        if candidate.engine != reference.engine:
            return False
        return gtid.covers(candidate.engine, candidate.gtid, reference.gtid)


def _server_pid(s: Session) -> int | None:
    """The server's process id when it runs on this host (its pid file readable here
    and naming a live mysqld/mariadbd), else None."""
    try:
        row = s.one("SELECT @@pid_file AS f")
        path = Path(str(row["f"])) if row is not None else None
        pid = int(path.read_text().split()[0]) if path is not None else 0
        comm = Path(f"/proc/{pid}/comm").read_text().strip() if pid > 0 else ""
    except (DbError, OSError, ValueError, IndexError):
        return None
    return pid if comm in ("mariadbd", "mysqld") else None
