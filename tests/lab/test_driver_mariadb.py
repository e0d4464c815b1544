"""The MySQL/MariaDB driver against the lab's real MariaDB 10.11 pair.

As built, b is the primary and a its GTID replica. Tests that change roles put
the pair back with ``lab.rebuild_service("mariadb")`` (the ``restore`` fixture).
Timings printed here are measurements for the report, never assertions, except
the generous does-not-hang bound on a SIGSTOPped server.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from dbha.core.model import Role
from dbha.db.base import DbError, DbRefused, Upstream
from dbha.db.mysql.conn import ReplicationStopped
from dbha.db.mysql.driver import MysqlDriver
from dbha.errors import LabError
from dbha.lab import topology as topo
from dbha.lab.core import Lab
from dbha.lab.maria import MariaNode
from tests.lab.drivers_mysql import mariadb_driver, mariadb_upstream
from tests.lab.helpers import timed

T = 5.0  # the timeout given to every verb unless a test says otherwise
SLACK = 10.0  # does-not-hang bound: elapsed <= timeout + SLACK


def node(lab: Lab, host: str) -> MariaNode:
    n = lab.node("mariadb", host)
    assert isinstance(n, MariaNode)
    return n


def token(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}"


def write_refused(n: MariaNode, tag: str) -> bool:
    try:
        n.write_token(token(tag))
    except LabError as exc:
        assert "read-only" in str(exc) or "1290" in str(exc), exc
        return True
    return False


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)


@pytest.fixture
def pair(lab: Lab) -> tuple[MysqlDriver, MysqlDriver]:
    """(a, b) drivers; b is the primary as built."""
    return mariadb_driver(lab, "a"), mariadb_driver(lab, "b")


@pytest.fixture
def restore(lab: Lab) -> Iterator[None]:
    """The test changes roles: rebuild the pair as built afterwards."""
    yield
    lab.rebuild_service("mariadb")


def test_probe_primary_and_replica(healthy_lab: Lab, pair: tuple[MysqlDriver, MysqlDriver]) -> None:
    """b answers as a writable primary with a streaming replica; a as a read-only
    replica of b, nothing pending; once a has replayed, its position covers b's."""
    a, b = pair
    node(healthy_lab, "b").write_token(token("probe"))
    assert a.wait_replayed(T)
    pb, pa = b.probe(T), a.probe(T)
    assert (pb.reachable, pb.role, pb.writable, pb.flavour) == (True, Role.PRIMARY, True, "mariadb")
    assert pb.version.startswith("10.11") and pb.position and pb.position.gtid
    assert [(r.name, r.address, r.state) for r in pb.replicas] == [
        ("a", "198.18.0.11", "streaming")
    ]
    assert (pa.role, pa.writable, pa.streaming, pa.upstream) == (
        Role.REPLICA,
        False,
        True,
        "198.18.0.12:3306",
    )
    assert pa.lag_transactions == 0 and pa.lag_seconds == 0.0 and pa.error is None
    assert pa.position is not None and pa.received is not None
    assert a.covers(pa.position, pb.position) and b.covers(pb.position, pa.position)


def test_lag_grows_in_transactions_and_seconds_then_returns_to_zero(
    healthy_lab: Lab, pair: tuple[MysqlDriver, MysqlDriver]
) -> None:
    """With a's applier stopped and writes on b, a's lag grows in transactions and in
    seconds; once the applier runs again it returns to zero."""
    a, _ = pair
    na, nb = node(healthy_lab, "a"), node(healthy_lab, "b")
    na.query("STOP SLAVE SQL_THREAD")
    try:
        for _ in range(3):
            nb.write_token(token("lag"))
        wait_for(lambda: a.probe(T).lag_transactions == 3, 10, "3 transactions received")
        time.sleep(1.2)  # the lag in seconds is the age of the oldest one not applied
        first = a.probe(T)
        for _ in range(4):
            nb.write_token(token("lag"))
        wait_for(lambda: a.probe(T).lag_transactions == 7, 10, "7 transactions received")
        time.sleep(1.0)
        second = a.probe(T)
        print(
            f"\nlag: {first.lag_transactions} tx / {first.lag_seconds:.2f} s, then "
            f"{second.lag_transactions} tx / {second.lag_seconds:.2f} s"
        )
        assert first.lag_seconds is not None and second.lag_seconds is not None
        assert first.lag_seconds >= 1.0 and second.lag_seconds > first.lag_seconds
        assert not second.streaming and second.role == Role.REPLICA
    finally:
        na.query("START SLAVE SQL_THREAD")
    wait_for(lambda: a.probe(T).lag_transactions == 0, 15, "the replica to catch up")
    caught_up = a.probe(T)
    assert caught_up.lag_seconds == 0.0 and caught_up.streaming


def test_fence_stops_application_writes_and_unfence_lifts_it(
    healthy_lab: Lab, pair: tuple[MysqlDriver, MysqlDriver]
) -> None:
    """fence: the app user's new writes fail, an open transaction is cut off (its
    connection killed), replication keeps streaming. unfence: writes work again;
    unfencing a replica is refused."""
    a, b = pair
    nb = node(healthy_lab, "b")
    open_conn = nb.connect("app", "app")
    cur = open_conn.cursor()
    cur.execute("BEGIN")
    pending = token("uncommitted")
    cur.execute("INSERT INTO dbha_lab_proof (token) VALUES (%s)", (pending,))
    started = time.monotonic()
    b.fence(T)
    print(f"\nfence: {(time.monotonic() - started) * 1000:.1f} ms")
    with pytest.raises(pymysql.MySQLError):  # the connection was killed under it
        cur.execute("COMMIT")
    open_conn.close()
    assert write_refused(nb, "fenced") and not nb.has_token(pending)
    b.fence(T)  # idempotent
    pb = b.probe(T)
    assert pb.role == Role.PRIMARY and not pb.writable
    assert a.probe(T).streaming  # replication threads were left alone
    with pytest.raises(DbRefused):
        a.unfence(T)
    b.unfence(T)
    assert b.probe(T).writable and not write_refused(nb, "unfenced")


def test_fence_wins_over_a_held_table_lock(
    healthy_lab: Lab, pair: tuple[MysqlDriver, MysqlDriver]
) -> None:
    """An application session holding LOCK TABLES ... WRITE blocks read_only; fence
    waits part of its budget, ends that session and succeeds."""
    _, b = pair
    nb = node(healthy_lab, "b")
    holder = nb.connect("app", "app")
    holder.cursor().execute("LOCK TABLES dbha_lab_proof WRITE")
    started = time.monotonic()
    b.fence(6)
    print(f"\nfence past a table lock: {time.monotonic() - started:.2f} s")
    with pytest.raises(pymysql.MySQLError):
        holder.cursor().execute("SELECT 1")
    holder.close()
    assert write_refused(nb, "fenced")
    b.unfence(T)


def test_switchover_with_follow_keeps_every_acknowledged_row(
    lab: Lab, restore: None, pair: tuple[MysqlDriver, MysqlDriver]
) -> None:
    """Fence b, replay on a, promote a (writable; a second promote says it already is),
    b follows a: every acknowledged row is on both, and b is a streaming replica."""
    a, b = pair
    na, nb = node(lab, "a"), node(lab, "b")
    before = [token("before") for _ in range(5)]
    for t in before:
        nb.write_token(t)
    b.fence(T)
    a.wait_replayed(T)
    started = time.monotonic()
    result = a.promote(T)
    print(f"\npromote: {(time.monotonic() - started) * 1000:.1f} ms")
    assert not result.already_primary and a.probe(T).writable
    assert a.promote(T).already_primary
    after = token("after")
    na.write_token(after)
    b.follow(mariadb_upstream("a"), T)
    b.follow(mariadb_upstream("a"), T)  # idempotent
    a.wait_replayed(T)
    assert b.wait_replayed(T)
    for t in [*before, after]:
        assert na.has_token(t) and nb.has_token(t), t
    pb = b.probe(T)
    assert (pb.role, pb.writable, pb.streaming, pb.upstream) == (
        Role.REPLICA,
        False,
        True,
        "198.18.0.11:3306",
    )


def test_rejoin_repoints_a_clean_old_primary(
    lab: Lab, restore: None, pair: tuple[MysqlDriver, MysqlDriver]
) -> None:
    """b is fenced before a is promoted, so b holds nothing a lacks: rejoin re-points
    it (no clone, nothing set aside) and every row is on both."""
    a, b = pair
    na, nb = node(lab, "a"), node(lab, "b")
    acked = token("acked")
    nb.write_token(acked)
    b.fence(T)
    a.wait_replayed(T)
    a.promote(T)
    later = token("later")
    na.write_token(later)
    report = b.rejoin(mariadb_upstream("a"), 30)
    assert (report.method, report.set_aside, report.errant) == ("repoint", (), None)
    b.wait_replayed(T)
    assert all(n.has_token(t) for n in (na, nb) for t in (acked, later))
    assert b.rejoin(mariadb_upstream("a"), 30).method == "follow"  # already done


def test_rejoin_after_the_upstream_purged_the_binlog_needs_a_clone(
    lab: Lab, restore: None, pair: tuple[MysqlDriver, MysqlDriver]
) -> None:
    """b holds nothing errant, but a purged the binlog b needs to catch up: a plain
    re-point cannot work, so rejoin refuses without force and re-clones with it
    (keeping b's data aside all the same)."""
    a, b = pair
    na, nb = node(lab, "a"), node(lab, "b")
    acked = token("acked")
    nb.write_token(acked)
    b.fence(T)
    a.wait_replayed(T)
    a.promote(T)
    na.write_token(token("purged"))
    first = na.query("SHOW BINARY LOGS")[0]["Log_name"]

    def purged() -> bool:  # a binlog still needed for crash recovery is kept: retry
        na.query("FLUSH BINARY LOGS")
        current = na.query("SHOW MASTER STATUS")[0]["File"]
        na.query(f"PURGE BINARY LOGS TO '{current}'")
        return bool(na.query("SHOW BINARY LOGS")[0]["Log_name"] != first)

    wait_for(purged, 10, "a to purge its first binlog")
    kept = token("kept")
    na.write_token(kept)
    with pytest.raises(DbRefused, match="no longer has the binlog"):
        b.rejoin(mariadb_upstream("a"), 30)
    report = b.rejoin(mariadb_upstream("a"), 60, force=True)
    assert report.method == "reclone" and report.errant is None and len(report.set_aside) == 2
    assert b.probe(T).streaming
    assert all(nb.has_token(t) for t in (acked, kept))


class ArgvWatch:
    """Every child this process starts (its argv and env), and every process on the
    machine whose command line shows a secret while the watch runs."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets, self.argvs, self.leaks = secrets, [], []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._scan, daemon=True)

    def _scan(self) -> None:
        while not self._stop.wait(0.005):
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                    except OSError:
                        continue
                    if any(s in cmd for s in self.secrets):
                        self.leaks.append(cmd)

    def popen(self, real: type[subprocess.Popen[Any]]) -> type[subprocess.Popen[Any]]:
        watch = self

        class Recording(real):  # type: ignore[valid-type,misc]
            def __init__(self, args: Any, *rest: Any, **kw: Any) -> None:
                watch.argvs.append((list(args), dict(kw.get("env") or {})))
                super().__init__(args, *rest, **kw)

        return Recording

    def __enter__(self) -> ArgvWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def test_rejoin_with_errant_transactions(
    lab: Lab, restore: None, pair: tuple[MysqlDriver, MysqlDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """a is promoted while b still takes writes: b's later rows are errant. rejoin is
    refused without force (b stays fenced, its rows untouched); with force it keeps
    them aside (binlog events + a full dump, 0600), reports them, re-clones b from a
    and replicates. No password ever appears on a child's command line."""
    a, b = pair
    na, nb = node(lab, "a"), node(lab, "b")
    acked = token("acked")
    nb.write_token(acked)
    a.wait_replayed(T)
    a.promote(T)  # split brain: b was not fenced
    errant = [token("errant") for _ in range(2)]
    for t in errant:
        nb.write_token(t)
    on_a = token("on-a")
    na.write_token(on_a)
    with pytest.raises(DbRefused, match="errant"):
        b.rejoin(mariadb_upstream("a"), 30)
    assert write_refused(nb, "refused") and all(nb.has_token(t) for t in errant)
    secrets = [lab.layout.secret(f"mariadb-{u}") for u in ("dbha", "repl", "app")]
    with ArgvWatch(secrets) as watch:
        monkeypatch.setattr(subprocess, "Popen", watch.popen(subprocess.Popen))
        started = time.monotonic()
        report = b.rejoin(mariadb_upstream("a"), 60, force=True)
        print(f"\nforced rejoin (re-clone): {time.monotonic() - started:.2f} s; {report}")
    monkeypatch.undo()
    assert report.method == "reclone" and report.errant
    assert len(watch.argvs) >= 4, watch.argvs  # binlog tool, dump, upstream queries, copy
    for argv, env in watch.argvs:
        assert not any(s in " ".join(argv) or s in str(env) for s in secrets), argv
    assert watch.leaks == []
    binlog, dump, summary = (Path(p) for p in report.set_aside)
    for path in (binlog, dump, summary):
        assert path.stat().st_mode & 0o077 == 0, path
    assert all(t in binlog.read_text() and t in dump.read_text() for t in errant)
    assert acked not in binlog.read_text()  # only the errant ones
    assert any("2 found" in n for n in report.notes), report.notes
    b.wait_replayed(T)
    assert all(nb.has_token(t) for t in (acked, on_a))
    assert not any(nb.has_token(t) or na.has_token(t) for t in errant)
    pa, pb = a.probe(T), b.probe(T)
    assert pb.role == Role.REPLICA and pb.streaming and not pb.writable
    assert pa.position and pb.position and b.covers(pb.position, pa.position)
    later = token("later")
    na.write_token(later)
    b.wait_replayed(T)
    assert nb.has_token(later)


def test_every_verb_is_bounded_on_a_sigstopped_server(
    healthy_lab: Lab, pair: tuple[MysqlDriver, MysqlDriver]
) -> None:
    """b's server is frozen (SIGSTOP): every verb returns (probe: unreachable) or raises
    a DbError within its timeout (+ a generous slack against a noisy machine)."""
    _, b = pair
    timeout = 2.0
    up = mariadb_upstream("a")
    verbs: dict[str, Callable[[], object]] = {
        "probe": lambda: b.probe(timeout),
        "fence": lambda: b.fence(timeout),
        "fence(hard)": lambda: b.fence(timeout, hard=True),
        "unfence": lambda: b.unfence(timeout),
        "wait_replayed": lambda: b.wait_replayed(timeout),
        "promote": lambda: b.promote(timeout),
        "follow": lambda: b.follow(up, timeout),
        "rejoin": lambda: b.rejoin(up, timeout),
        "rejoin(force)": lambda: b.rejoin(up, timeout, force=True),
        "set_synchronous": lambda: b.set_synchronous(True, timeout),
    }
    healthy_lab.stop_db("b", "mariadb")
    times = {}
    for name, call in verbs.items():
        started = time.monotonic()
        try:
            result = call()
            assert name == "probe", f"{name} returned {result!r} on a frozen server"
            assert not result.reachable  # type: ignore[attr-defined]
        except DbError:
            pass
        times[name] = time.monotonic() - started
        assert times[name] <= timeout + SLACK, f"{name} took {times[name]:.1f} s"
    print(
        "\nSIGSTOPped server, timeout 2 s: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items())
    )


def test_hard_fence_stops_the_server(
    healthy_lab: Lab, pair: tuple[MysqlDriver, MysqlDriver]
) -> None:
    """fence(hard=True) makes b read-only, then shuts it down and returns once it
    refuses connections; the lab's heal starts it again (as a reboot would)."""
    _, b = pair
    nb = node(healthy_lab, "b")
    b.fence(10, hard=True)
    st = b.probe(T)
    assert not st.reachable and st.error
    wait_for(lambda: nb.pid() is None, 30, "mariadbd to exit")


def test_semisync_fallback_is_reported(
    lab: Lab, restore: None, pair: tuple[MysqlDriver, MysqlDriver]
) -> None:
    """With semi-sync on, the primary reports synchronous replication and a sync replica;
    when the replica stops acknowledging and the timeout passes, MariaDB silently commits
    asynchronously: the probe says so. A wait point after the commit is reported too."""
    a, b = pair
    na, nb = node(lab, "a"), node(lab, "b")
    nb.query("SET GLOBAL rpl_semi_sync_master_enabled = ON")
    na.query("SET GLOBAL rpl_semi_sync_slave_enabled = ON")
    na.query("STOP SLAVE IO_THREAD")
    na.query("START SLAVE IO_THREAD")
    wait_for(lambda: [r.sync for r in b.probe(T).replicas] == [True], 10, "a sync replica")
    # The server's default wait point shows other sessions a commit before the
    # replica has it: the probe says so; AFTER_SYNC is what dbha itself sets.
    st = b.probe(T)
    assert st.sync_replication and st.error and "AFTER_COMMIT" in st.error
    nb.query("SET GLOBAL rpl_semi_sync_master_wait_point = AFTER_SYNC")
    st = b.probe(T)
    assert st.sync_replication and st.error is None
    nb.query("SET GLOBAL rpl_semi_sync_master_timeout = 300")  # ms
    na.query("STOP SLAVE IO_THREAD")
    nb.write_token(token("unacknowledged"))  # waits 0.3 s, then falls back
    st = b.probe(T)
    assert not st.sync_replication and st.error and "asynchronous fallback" in st.error
    assert a.probe(T).role == Role.REPLICA


# ---------------------------------------------------------- synchronous commit


class Committer:
    """One application commit in a thread of its own, on its own connection, bounded
    by a read timeout far longer than the test waits for it."""

    def __init__(self, lab: Lab, n: MariaNode) -> None:
        self.token = token("sync")
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._lab, self._node = lab, n
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            conn = pymysql.connect(
                unix_socket=str(self._node.socket),
                user="app",
                password=self._lab.layout.secret("mariadb-app"),
                database="app",
                connect_timeout=3,
                read_timeout=120,
                write_timeout=120,
                autocommit=True,
            )
            try:
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO dbha_lab_proof (token) VALUES (%s)", (self.token,))
            finally:
                conn.close()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.done.set()


def semisync_vars(n: MariaNode) -> dict[str, Any]:
    (row,) = n.query(
        "SELECT @@rpl_semi_sync_master_enabled AS master, @@rpl_semi_sync_slave_enabled AS slave,"
        " @@rpl_semi_sync_master_timeout AS timeout"
    )
    return row


def test_semisync_commit_waits_without_an_ack_until_sync_is_off(
    lab: Lab, restore: None, pair: tuple[MysqlDriver, MysqlDriver]
) -> None:
    """a follows b (so its replica side is on and acknowledges); set_synchronous(on) on
    b: a commit is acknowledged and returns. With a's receiver stopped, a commit on b
    does not return, and it does not fall back to asynchronous on its own (no
    timeout short enough); the probe counts it waiting. set_synchronous(False)
    releases it (committed) and the probe says nothing waits. On and off are
    idempotent; set_synchronous times are printed (median of 7 on/off pairs)."""
    a, b = pair
    na, nb = node(lab, "a"), node(lab, "b")
    ons, offs = [], []
    for _ in range(7):
        ons.append(timed(lambda: b.set_synchronous(True, T)))
        offs.append(timed(lambda: b.set_synchronous(False, T)))
    a.follow(mariadb_upstream("b"), T)
    assert semisync_vars(na)["slave"] == 1 and semisync_vars(na)["master"] == 0
    for _ in range(2):
        b.set_synchronous(True, T)
        st = b.probe(T)
        assert st.sync_replication and st.sync_waiting == 0 and st.error is None, st
    assert semisync_vars(nb)["timeout"] >= 3_600_000
    wait_for(lambda: [r.sync for r in b.probe(T).replicas] == [True], 10, "a sync replica")
    acked = token("acked")
    nb.write_token(acked)  # acknowledged by a (bounded by the lab client's read timeout)
    na.query("STOP SLAVE IO_THREAD")
    commit = Committer(lab, nb)
    assert not commit.done.wait(1.0), commit.error
    wait_for(lambda: (b.probe(T).sync_waiting or 0) >= 1, 10, "the commit counted as waiting")
    st = b.probe(T)
    assert st.sync_replication and st.error is None, st  # still waiting: no fallback
    released = timed(lambda: b.set_synchronous(False, T))
    assert commit.done.wait(30), "the commit still waits after set_synchronous(False)"
    assert commit.error is None, commit.error
    st = b.probe(T)
    assert not st.sync_replication and st.sync_waiting == 0, st
    b.set_synchronous(False, T)
    assert nb.has_token(acked) and nb.has_token(commit.token)
    print(
        f"\nset_synchronous MariaDB, median of 7: on {statistics.median(ons) * 1000:.1f} ms,"
        f" off {statistics.median(offs) * 1000:.1f} ms; off releasing a waiting commit"
        f" {released * 1000:.1f} ms"
    )


def test_rejoin_turns_the_old_primarys_semisync_around(
    lab: Lab, restore: None, pair: tuple[MysqlDriver, MysqlDriver]
) -> None:
    """b is a synchronous primary (primary side on); switch to a and turn it on there;
    b rejoins a: b's primary side is off (a replica asking for acknowledgements of
    what it applies would stall) and its replica side on, so a's commits are
    acknowledged by b and return, and a's probe reports b as its synchronous replica.
    A former primary that never had the replica side on is the case here (the pair
    is built asynchronous)."""
    a, b = pair
    na, nb = node(lab, "a"), node(lab, "b")
    b.set_synchronous(True, T)
    assert semisync_vars(nb)["slave"] == 0
    b.fence(T)
    a.wait_replayed(T)
    a.promote(T)
    a.set_synchronous(True, T)
    report = b.rejoin(mariadb_upstream("a"), 30)
    assert report.method == "repoint", report
    assert semisync_vars(nb)["master"] == 0 and semisync_vars(nb)["slave"] == 1
    wait_for(lambda: [r.sync for r in a.probe(T).replicas] == [True], 10, "b acknowledges a")
    later = token("later")
    na.write_token(later)  # acknowledged by b (bounded by the lab client's read timeout)
    assert a.probe(T).sync_replication
    b.wait_replayed(T)
    assert nb.has_token(later)


def test_set_synchronous_after_a_silent_fallback_waits_again(
    lab: Lab, restore: None, pair: tuple[MysqlDriver, MysqlDriver]
) -> None:
    """Someone shortened the semi-sync timeout and the primary fell back to
    asynchronous commits (the probe says so, and says the short timeout was not
    counted as synchronous before); set_synchronous(on) makes it wait again, with a
    timeout that does not fall back on its own, and the probe says so."""
    a, b = pair
    na, nb = node(lab, "a"), node(lab, "b")
    a.follow(mariadb_upstream("b"), T)
    b.set_synchronous(True, T)
    nb.query("SET GLOBAL rpl_semi_sync_master_timeout = 300")  # ms
    st = b.probe(T)
    assert not st.sync_replication and st.error and "300 ms" in st.error, st
    na.query("STOP SLAVE IO_THREAD")
    nb.write_token(token("unacknowledged"))  # waits 0.3 s, then falls back
    st = b.probe(T)
    assert not st.sync_replication and st.error and "asynchronous fallback" in st.error, st
    b.set_synchronous(True, T)
    st = b.probe(T)
    assert st.sync_replication and st.error is None, st
    assert semisync_vars(nb)["timeout"] >= 3_600_000
    commit = Committer(lab, nb)
    assert not commit.done.wait(1.0), commit.error  # it waits again: a receives nothing
    na.query("START SLAVE IO_THREAD")  # a acknowledges: the commit returns
    assert commit.done.wait(30), "the commit still waits with a replicating again"
    assert commit.error is None, commit.error


def test_follow_gives_up_on_a_receiver_that_cannot_connect(
    lab: Lab, restore: None, pair: tuple[MysqlDriver, MysqlDriver]
) -> None:
    """The replica is pointed at an upstream whose server refuses it (a port where
    nothing listens: as a primary out of connection slots, or a wrong password,
    refuses a receiver). follow does not count a receiver that keeps failing to
    connect as "still connecting" until its whole budget is spent: it raises,
    naming the error, within a few of its retries; the budget given is 120 s."""
    a, _ = pair
    up = Upstream(name="b", host=topo.HOSTS["b"].lan, port=1)
    t0 = time.monotonic()
    with pytest.raises(ReplicationStopped) as err:
        a.follow(up, 120)
    took = time.monotonic() - t0
    print(f"\nfollow gave up after {took:.1f} s: {err.value}")
    assert "cannot connect" in str(err.value) and took < 60, (took, err.value)
