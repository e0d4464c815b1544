"""The PostgreSQL driver on the lab's real PostgreSQL 15 pair (issue 4 acceptance).

The pair starts as built: primary on a, streaming replica on b. Every test that
changes roles gets the original pair back from the fixture (rebuild_service).
Timings printed here are observations for the report, never assertions beyond a
generous does-not-hang bound.
"""

from __future__ import annotations

import itertools
import os
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbha.core.model import Role
from dbha.db.base import DbError, DbRefused, DbTimeout
from dbha.db.postgres.driver import PostgresDriver
from dbha.lab.core import Lab
from dbha.lab.pg import PgNode
from tests.lab.drivers import pg_driver, pg_upstream
from tests.lab.helpers import timed

T = 30.0  # verb timeout
HUNG = 3.0
SLACK = 10.0


class Pg:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.a, self.b = pg_driver(lab, "a"), pg_driver(lab, "b")
        self.node_a = PgNode(lab.prefix, lab.layout, "a")
        self.node_b = PgNode(lab.prefix, lab.layout, "b")

    def node(self, host: str) -> PgNode:
        return self.node_a if host == "a" else self.node_b

    def write(self, host: str, n: int = 1) -> list[str]:
        rows = [secrets.token_hex(6) for _ in range(n)]
        for t in rows:
            self.node(host).write_token(t)
        return rows

    def has_all(self, host: str, rows: list[str]) -> bool:
        return all(self.node(host).has_token(t) for t in rows)

    def has_none(self, host: str, rows: list[str]) -> bool:
        return not any(self.node(host).has_token(t) for t in rows)

    def replicated(self, n: int) -> list[str]:
        rows = self.write("a", n)
        until(lambda: self.has_all("b", rows), "rows on b")
        return rows


def until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"{what}: not true within {timeout:g} s")
        time.sleep(0.05)


@pytest.fixture
def pg(healthy_lab: Lab) -> Iterator[Pg]:
    try:
        yield Pg(healthy_lab)
    finally:
        healthy_lab.heal()
        healthy_lab.rebuild_service("pg")


def sql(node: PgNode, query: str, user: str = "dbha", dbname: str = "postgres") -> Any:
    with node.connect(user, dbname) as c:
        cur = c.execute(query)
        row = cur.fetchone() if cur.description else None
        return None if row is None else next(iter(row.values()))


# ------------------------------------------------------------------------ lag


def test_lag_grows_while_replay_is_paused_and_returns_to_zero(
    pg: Pg, caplog: pytest.LogCaptureFixture
) -> None:
    """With b's replay paused and writes on a, b's probe reports a lag that grows
    in bytes and in seconds (and so does a's view of b). wait_replayed, the step
    before a promotion, resumes a paused replay (and says so in the log) and
    returns once everything received is applied: the lag is back to zero."""
    sql(pg.node_b, "SELECT pg_wal_replay_pause()")
    try:
        samples = []
        end = time.monotonic() + 20
        while time.monotonic() < end:
            pg.write("a", 5)
            st = pg.b.probe(5)
            assert st.role is Role.REPLICA and st.lag_bytes is not None, st
            samples.append((st.lag_bytes, st.lag_seconds or 0.0))
            grown = [
                (b1, s1, b2, s2)
                for (b1, s1), (b2, s2) in itertools.pairwise(samples)
                if 0 < b1 < b2 and 0 < s1 < s2
            ]
            if grown and samples[-1][1] > samples[0][1]:
                break
            time.sleep(0.2)
        assert grown, f"lag did not grow in bytes and seconds: {samples}"
        view = pg.a.probe(5).replicas
        assert view and view[0].lag_bytes is not None and view[0].lag_bytes > 0, view
        received = pg.b.probe(5).received
        assert received is not None
        with caplog.at_level("WARNING", logger="dbha.db.postgres"):
            replayed = pg.b.wait_replayed(T)
        assert "resuming it" in caplog.text, caplog.text
        assert replayed.lsn >= received.lsn, (replayed, received)
        assert sql(pg.node_b, "SELECT pg_is_wal_replay_paused()") is False
    finally:
        sql(pg.node_b, "SELECT pg_wal_replay_resume()")
    until(lambda: (st := pg.b.probe(5)).lag_bytes == 0 and st.lag_seconds == 0.0, "lag zero")
    assert pg.b.wait_replayed(T).lsn == pg.b.probe(5).received.lsn  # type: ignore[union-attr]


def test_wait_replayed_times_out_while_replay_is_held_back(pg: Pg) -> None:
    """Replay held back (not paused) by a recovery conflict: a session on b holds a
    lock on the proof table, a takes an exclusive lock on it, and b is set to wait
    for standby queries without limit. wait_replayed gives up at its bound with
    DbTimeout rather than wait past it; once the session ends, replay goes on."""
    sql(pg.node_b, "ALTER SYSTEM SET max_standby_streaming_delay = -1")
    sql(pg.node_b, "SELECT pg_reload_conf()")
    holder = pg.node_b.connect("dbha", "app")
    try:
        holder.execute("BEGIN")
        holder.execute("SELECT count(*) FROM dbha_lab_proof")
        with pg.node_a.connect("dbha", "app") as c:
            c.execute("BEGIN")
            c.execute("LOCK TABLE dbha_lab_proof IN ACCESS EXCLUSIVE MODE")
            c.execute("COMMIT")
        rows = pg.write("a", 3)
        until(
            lambda: (st := pg.b.probe(5)).lag_bytes is not None and st.lag_bytes > 0,
            "b to receive more than it replays",
        )
        with pytest.raises(DbTimeout, match="wait_replayed"):
            pg.b.wait_replayed(1.0)
    finally:
        holder.close()
        sql(pg.node_b, "ALTER SYSTEM RESET max_standby_streaming_delay")
        sql(pg.node_b, "SELECT pg_reload_conf()")
    until(lambda: pg.has_all("b", rows), "replay to go on once the lock holder is gone")


# ---------------------------------------------------------------------- fence


def test_fence_limits_and_the_hard_fence(pg: Pg) -> None:
    """The documented limit of the soft fence: a client that sets
    default_transaction_read_only=off in its own session can still write. fence
    refuses to call itself verified while a per-role setting overrides the read-only
    default. The hard fence stops the server: no connection at all."""
    pg.a.fence(T)
    with pg.node_a.connect("app", "app") as c:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            c.execute("INSERT INTO dbha_lab_proof (token) VALUES ('plain')")
        c.execute("SET default_transaction_read_only = off")
        c.execute("INSERT INTO dbha_lab_proof (token) VALUES ('escaped')")  # the limit
    pg.a.unfence(T)
    sql(pg.node_a, "ALTER ROLE app SET default_transaction_read_only = off")
    try:
        with pytest.raises(DbError, match="overrides"):
            pg.a.fence(T)
    finally:
        with pg.node_a.connect() as c:  # the server is read-only now: step around it
            c.execute("SET default_transaction_read_only = off")
            c.execute("ALTER ROLE app RESET default_transaction_read_only")
    pg.a.fence(T)  # no override left: verified
    pg.a.fence(T, hard=True)
    assert pg.node_a.pid() is None
    st = pg.a.probe(5)
    assert not st.reachable, st
    pg.a.fence(T, hard=True)  # idempotent on a stopped server


# --------------------------------------------------- promote / follow / rejoin


def test_switchover_hard_fence_promote_follow_needs_no_rewind(pg: Pg) -> None:
    """Planned switch the PostgreSQL way: a stops cleanly (its shutdown checkpoint
    reaches b), b promotes, with a CHECKPOINT so pg_control has the new timeline,
    and a follows b with no rewind and nothing set aside. Every row on both."""
    rows = pg.replicated(5)
    aside_before = set(pg.node_a.dir.glob("data.dbha-aside-*"))
    pg.a.fence(T, hard=True)
    pg.b.wait_replayed(T)
    res = pg.b.promote(T)
    assert res.position is not None and res.position.timeline == 2
    assert sql(pg.node_b, "SELECT timeline_id FROM pg_control_checkpoint()") == 2
    pg.a.follow(pg_upstream("b"), T)
    rows += pg.write("b", 3)
    until(lambda: pg.has_all("a", rows) and pg.has_all("b", rows), "rows on both")
    st = pg.a.probe(5)
    assert st.role is Role.REPLICA and st.streaming and st.upstream == "198.18.0.12", st
    assert set(pg.node_a.dir.glob("data.dbha-aside-*")) == aside_before


class ArgvWatch:
    """Samples every process's command line and environment while it runs, looking
    for the lab's passwords."""

    def __init__(self, secret_values: list[str]) -> None:
        self.secrets = [s for s in secret_values if s]
        self.leaks: list[str] = []
        self.seen: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            self.samples += 1
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or int(pid) == me:
                    continue
                for what in ("cmdline", "environ"):
                    try:
                        data = Path(f"/proc/{pid}/{what}").read_bytes().decode(errors="replace")
                    except OSError:
                        continue
                    if what == "cmdline":
                        for tool in ("pg_rewind", "pg_basebackup", "pg_receivewal", "pg_waldump"):
                            if tool in data:
                                self.seen.add(tool)
                    if "password=" in data or any(s in data for s in self.secrets):
                        self.leaks.append(f"{pid} {what}: {data[:80]}")
            time.sleep(0.002)

    def __enter__(self) -> ArgvWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _secrets(lab: Lab) -> list[str]:
    return [lab.layout.secret(f"pg-{u}") for u in ("dbha", "replicator", "app", "postgres")]


def _split_brain(pg: Pg) -> tuple[list[str], list[str]]:
    """b is promoted while a still accepts writes: a then commits rows b never gets."""
    acked = pg.replicated(5)
    pg.b.promote(T)
    lost = pg.write("a", 2)
    acked += pg.write("b", 3)
    return acked, lost


def test_rejoin_rewinds_a_diverged_old_primary(pg: Pg) -> None:
    """a committed rows after b was promoted. follow refuses (it would lose them) and
    leaves a stopped; rejoin rewinds a with pg_rewind, keeps the diverged WAL aside
    and reports it, and a streams from b with every acknowledged row. No password
    on any command line or environment meanwhile."""
    acked, lost = _split_brain(pg)
    with ArgvWatch(_secrets(pg.lab)) as watch:
        with pytest.raises(DbRefused, match="transaction"):
            pg.a.follow(pg_upstream("b"), T)
        assert pg.node_a.pid() is None
        t0 = time.monotonic()
        report = pg.a.rejoin(pg_upstream("b"), T * 2)
        took = time.monotonic() - t0
    print(f"rejoin (pg_rewind) took {took:.2f} s: {report}")
    assert not watch.leaks, watch.leaks
    assert watch.samples > 10 and "pg_rewind" in watch.seen, (watch.samples, watch.seen)
    assert report.method == "pg_rewind", report
    assert report.errant is not None and not report.errant.startswith("0 "), report
    (aside,) = report.set_aside
    assert list((Path(aside) / "pg_wal").iterdir()), "diverged WAL kept aside"
    acked += pg.write("b", 2)
    until(lambda: pg.has_all("a", acked) and pg.has_all("b", acked), "acked rows on both")
    assert pg.has_none("a", lost) and pg.has_none("b", lost)
    st = pg.a.probe(5)
    assert st.role is Role.REPLICA and st.streaming, st


def test_rejoin_falls_back_to_basebackup_when_rewind_is_impossible(pg: Pg) -> None:
    """With a's WAL gone, pg_rewind cannot run: rejoin renames a's data directory
    aside (never deletes it), takes a pg_basebackup from b and a streams from b with
    every acknowledged row. No password on any command line meanwhile."""
    acked, _lost = _split_brain(pg)
    pg.a.fence(T, hard=True)
    for f in (pg.node_a.data / "pg_wal").iterdir():
        if len(f.name) == 24:
            f.unlink()
    with ArgvWatch(_secrets(pg.lab)) as watch:
        t0 = time.monotonic()
        report = pg.a.rejoin(pg_upstream("b"), T * 2)
        took = time.monotonic() - t0
    print(f"rejoin (pg_basebackup) took {took:.2f} s: {report}")
    assert not watch.leaks, watch.leaks
    assert "pg_basebackup" in watch.seen, watch.seen
    assert report.method == "pg_basebackup", report
    (aside,) = report.set_aside
    assert (Path(aside) / "PG_VERSION").exists(), "old data directory kept aside"
    acked += pg.write("b", 2)
    until(lambda: pg.has_all("a", acked) and pg.has_all("b", acked), "acked rows on both")
    st = pg.a.probe(5)
    assert st.role is Role.REPLICA and st.streaming, st


# ---------------------------------------------------------- synchronous commit

SYNC_NAMES = 'FIRST 1 ("a", "b")'


class Committer:
    """One application commit in a thread of its own, on its own session: bounded by
    a statement timeout far longer than the test waits for it, and watching for the
    warning PostgreSQL gives when a commit stops waiting for its standby because it
    was cancelled (which would mean the timeout, not the driver, released it)."""

    def __init__(self, node: PgNode) -> None:
        self.token = secrets.token_hex(6)
        self.error: BaseException | None = None
        self.notices: list[str] = []
        self.done = threading.Event()
        self._node = node
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._node.connect("app", "app") as c:
                c.add_notice_handler(lambda d: self.notices.append(str(d.message_primary)))
                c.execute("SET statement_timeout = '120s'")
                c.execute("INSERT INTO dbha_lab_proof (token) VALUES (%s)", (self.token,))
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.done.set()


def test_sync_commit_waits_for_the_gone_standby_until_sync_is_off(pg: Pg) -> None:
    """Strict mode after the standby is gone: with synchronous commit on, b stopped,
    a commit on a does not return, and the probe counts one session waiting for the
    standby; set_synchronous(False) releases it (committed, not cancelled) and the
    probe says nothing waits and commits no longer wait. On and off are idempotent.
    The time set_synchronous takes is printed (median of 7 on/off pairs)."""
    ons, offs = [], []
    for _ in range(7):
        ons.append(timed(lambda: pg.a.set_synchronous(True, T)))
        offs.append(timed(lambda: pg.a.set_synchronous(False, T)))
    for _ in range(2):
        pg.a.set_synchronous(True, T)
        assert sql(pg.node_a, "SHOW synchronous_standby_names") == SYNC_NAMES
        st = pg.a.probe(5)
        assert st.sync_replication and st.sync_waiting == 0, st
    rows = pg.replicated(2)  # b acknowledges: commits return
    pg.node_b.stop("fast")
    commit = Committer(pg.node_a)
    assert not commit.done.wait(1.0), commit.error
    until(lambda: (pg.a.probe(5).sync_waiting or 0) >= 1, "the commit counted as waiting")
    assert pg.a.probe(5).sync_replication
    released = timed(lambda: pg.a.set_synchronous(False, T))
    assert commit.done.wait(30), "the commit still waits after set_synchronous(False)"
    assert commit.error is None, commit.error
    assert not any("synchronous replication" in n for n in commit.notices), commit.notices
    st = pg.a.probe(5)
    assert not st.sync_replication and st.sync_waiting == 0, st
    pg.a.set_synchronous(False, T)
    assert sql(pg.node_a, "SHOW synchronous_standby_names") == ""
    assert pg.has_all("a", [*rows, commit.token, *pg.write("a", 1)])
    print(
        f"\nset_synchronous PostgreSQL, median of 7: on {statistics.median(ons) * 1000:.1f} ms,"
        f" off {statistics.median(offs) * 1000:.1f} ms; off releasing a waiting commit"
        f" {released * 1000:.1f} ms"
    )


def test_sync_setting_travels_with_rewind_and_holds_after_promotion(pg: Pg) -> None:
    """pg_rewind copies postgresql.auto.conf from the new primary into the rejoined
    node. The synchronous_standby_names value names both nodes, so that copy is right
    there too: a (off) diverges from b, b turns synchronous commit on, a rejoins with
    pg_rewind and comes back carrying b's value, b's commits are acknowledged by a,
    a standby's value is not reported as waiting, and when a is promoted again its
    commits wait for b at once, before anyone sets it."""
    pg.a.set_synchronous(False, T)
    assert sql(pg.node_a, "SHOW synchronous_standby_names") == ""
    _split_brain(pg)
    pg.b.set_synchronous(True, T)
    report = pg.a.rejoin(pg_upstream("b"), T * 2)
    assert report.method == "pg_rewind", report
    assert sql(pg.node_a, "SHOW synchronous_standby_names") == SYNC_NAMES
    assert not pg.a.probe(5).sync_replication  # a standby's setting waits for nothing
    until(lambda: [r.sync for r in pg.b.probe(5).replicas] == [True], "a acknowledges b")
    rows = pg.write("b", 2)  # acknowledged by a (bounded by the lab's statement timeout)
    until(lambda: pg.has_all("a", rows), "b's rows on a")
    pg.b.fence(T, hard=True)
    pg.a.wait_replayed(T)
    pg.a.promote(T)
    st = pg.a.probe(5)
    assert st.role is Role.PRIMARY and st.sync_replication, st


# --------------------------------------------------------------------- frozen


def test_every_verb_is_bounded_on_a_frozen_primary(pg: Pg) -> None:
    """SIGSTOPped postmaster and backends: probe says unreachable, every other verb
    raises a DbError, each within its timeout plus slack. Times are printed."""
    up = pg_upstream("b")
    drv: PostgresDriver = pg.a
    verbs: list[tuple[str, Callable[[], Any]]] = [
        ("probe", lambda: drv.probe(HUNG)),
        ("fence", lambda: drv.fence(HUNG)),
        ("unfence", lambda: drv.unfence(HUNG)),
        ("wait_replayed", lambda: drv.wait_replayed(HUNG)),
        ("promote", lambda: drv.promote(HUNG)),
        ("follow", lambda: drv.follow(up, HUNG)),
        ("rejoin", lambda: drv.rejoin(up, HUNG)),
        ("set_synchronous", lambda: drv.set_synchronous(True, HUNG)),
        ("fence_hard", lambda: drv.fence(HUNG, hard=True)),
    ]
    pg.lab.stop_db("a", "pg")
    times = {}
    for name, call in verbs:
        t0 = time.monotonic()
        try:
            result = call()
        except DbError:
            result = None
        times[name] = round(time.monotonic() - t0, 2)
        if name == "probe":
            assert result is not None and not result.reachable, result
        else:
            assert result is None, f"{name} returned on a frozen server"
    print(f"frozen server, timeout {HUNG:g} s: {times}")
    slow = {k: v for k, v in times.items() if v > HUNG + SLACK}
    assert not slow, slow
