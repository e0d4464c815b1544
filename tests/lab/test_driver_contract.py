"""One contract, every driver: the fake, PostgreSQL and MariaDB behave alike.

Each case runs against the fake driver (a fresh simulated pair), against the
real PostgreSQL and MariaDB pairs of the session lab, and against the same
engines' pairs as an operator builds them (``*-operator``: the operator lab,
``dbha lab up --pairs operator``, where dbha's accounts have only the grants of
docs/grants.md). The fake is only worth something if it passes exactly the cases
the real drivers pass, so a case that needs an engine-specific branch does not
belong here.

The pair starts as built (a primary, a streaming replica); a case that changes
roles marks the pair dirty and the fixture rebuilds the real pair afterwards.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import psycopg
import pymysql
import pytest
from psycopg import sql as psql

from dbha.core.model import Position, Role
from dbha.db.base import DatabaseDriver, DbError, DbRefused, Upstream
from dbha.db.fake import FakeCluster, FakeDriver
from dbha.errors import LabError
from dbha.lab import topology as topo
from dbha.lab.core import Lab
from tests.lab.drivers import pg_driver, pg_upstream

ENGINES = ["fake", "postgresql", "mariadb", "postgresql-operator", "mariadb-operator"]
OPERATOR = "-operator"
# Cases that fail on an operator-built pair because of what dbha does with a pair
# it adopts (not because of a missing grant): (case, engine) -> the defect. Strict,
# so that each turns red once the driver is fixed and the mark can go.
ADOPTION_DEFECTS: dict[tuple[str, str], str] = {}
# Cases whose premise the operator's pair does not meet: (case, engine) -> why.
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("test_follow_makes_the_old_primary_a_replica", "postgresql-operator"): (
        "follow of a former primary runs pg_rewind --dry-run, which needs the old "
        "primary's WAL back to the last checkpoint before the fork; this pair keeps no "
        "WAL beyond its last checkpoint (no wal_keep_size, no archive), so follow "
        "refuses (DbRefused: rejoin it): test_operator_pairs checks that"
    ),
}
VERB_TIMEOUT = 30.0
HUNG_TIMEOUT = 3.0
SLACK = 10.0  # a does-not-hang check on a shared, noisy machine, not a timing claim


class Pair(Protocol):
    engine: str
    primary: str
    replica: str
    dirty: bool

    def driver(self, host: str) -> DatabaseDriver: ...
    def upstream(self, host: str) -> Upstream: ...
    def write(self, host: str, token: str) -> None: ...
    def has(self, host: str, token: str) -> bool: ...
    def settle(self) -> None: ...
    def hang(self, host: str) -> None: ...
    def thaw(self) -> None: ...
    def unready(self, host: str) -> None: ...


class FakePair:
    """A simulated pair; ``settle`` plays the part of the network and the applier."""

    engine = "fake"
    primary, replica = "a", "b"

    def __init__(self) -> None:
        self.cluster = FakeCluster()
        self.cluster.add("a")
        self.cluster.add("b", upstream="a")
        self.dirty = False

    def driver(self, host: str) -> DatabaseDriver:
        return FakeDriver(self.cluster.servers[host])

    def upstream(self, host: str) -> Upstream:
        return Upstream(name=host, host=host, port=0)

    def write(self, host: str, token: str) -> None:
        if self.cluster.servers[host].write(token) is None:
            raise DbError(f"{host} refused the write")

    def has(self, host: str, token: str) -> bool:
        return token in self.cluster.servers[host].rows()

    def settle(self) -> None:
        for srv in self.cluster.servers.values():
            if srv.upstream is not None and srv.upstream in self.cluster.servers:
                self.cluster.servers[srv.upstream].ship(srv)
                srv.replay()

    def hang(self, host: str) -> None:
        self.cluster.servers[host].hang()

    def thaw(self) -> None:
        for srv in self.cluster.servers.values():
            srv.hang(False)

    def unready(self, host: str) -> None:
        self.cluster.servers[host].acks = False


class LabPair:
    """A real pair of the lab; application writes go through the ``app`` user."""

    def __init__(
        self,
        lab: Lab,
        service: str,
        engine: str,
        make: Callable[[Lab, str], DatabaseDriver],
        upstream: Callable[[str], Upstream],
    ) -> None:
        self.lab, self.service, self.engine = lab, service, engine
        self._make, self._upstream = make, upstream
        svc = topo.SERVICES[service]
        self.primary, self.replica = svc.primary, svc.replica
        self.dirty = False

    def driver(self, host: str) -> DatabaseDriver:
        return self._make(self.lab, host)

    def upstream(self, host: str) -> Upstream:
        return self._upstream(host)

    def write(self, host: str, token: str) -> None:
        try:
            self.lab.node(self.service, host).write_token(token)
        except (LabError, psycopg.Error, pymysql.MySQLError) as exc:
            raise DbError(f"{host} refused the write: {exc}") from exc

    def has(self, host: str, token: str) -> bool:
        return self.lab.node(self.service, host).has_token(token)

    def settle(self) -> None:
        time.sleep(0.05)

    def hang(self, host: str) -> None:
        self.lab.stop_db(host, self.service)

    def thaw(self) -> None:
        self.lab.heal()

    def unready(self, host: str) -> None:
        """Make the replica on ``host`` what its operator would have built: it does
        not acknowledge synchronous commits (PostgreSQL: its WAL receiver names itself
        '15/main', Debian's cluster name, not the node; MariaDB: the replica side of
        semi-sync off, the receiver reconnected without it)."""
        node = self.lab.node(self.service, host)
        if self.service == "pg":
            with node.connect() as conn:  # type: ignore[attr-defined]
                row = conn.execute("SELECT current_setting('primary_conninfo') AS c").fetchone()
                want = psycopg.conninfo.make_conninfo(row["c"], application_name="15/main")
                conn.execute(
                    psql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(psql.Literal(want))
                )
                conn.execute("SELECT pg_reload_conf()")
            return
        node.query("SET GLOBAL rpl_semi_sync_slave_enabled = OFF")  # type: ignore[union-attr]
        node.query("STOP SLAVE IO_THREAD")  # type: ignore[union-attr]
        node.query("START SLAVE IO_THREAD")  # type: ignore[union-attr]


def _lab_pair(request: pytest.FixtureRequest, param: str) -> LabPair:
    engine = param.removesuffix(OPERATOR)
    lab: Lab = request.getfixturevalue("operator_lab" if param.endswith(OPERATOR) else "lab")
    if engine == "postgresql":
        return LabPair(lab, "pg", engine, pg_driver, pg_upstream)
    try:
        from tests.lab.drivers_mysql import mariadb_driver, mariadb_upstream
    except ImportError as exc:  # the MySQL/MariaDB driver is built separately
        pytest.skip(f"the MariaDB driver is not available: {exc}")
    return LabPair(lab, "mariadb", engine, mariadb_driver, mariadb_upstream)


@pytest.fixture(params=ENGINES)
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    if request.param == "fake":
        yield FakePair()
        return
    defect = ADOPTION_DEFECTS.get((request.node.originalname, request.param))
    if defect is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=defect))
    premise = NOT_APPLICABLE.get((request.node.originalname, request.param))
    if premise is not None:
        pytest.skip(premise)
    p = _lab_pair(request, request.param)
    st = p.lab.status()
    assert st["healthy"], st["problems"]
    try:
        yield p
    finally:
        if p.dirty:
            p.lab.heal()
            p.lab.rebuild_service(p.service)


def eventually(pair: Pair, check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while True:
        pair.settle()
        if check():
            return
        if time.monotonic() > end:
            pytest.fail(f"{pair.engine}: {what} not true within {timeout:g} s")


def tokens(n: int) -> list[str]:
    return [secrets.token_hex(6) for _ in range(n)]


def write_replicated(pair: Pair, n: int) -> list[str]:
    """Write ``n`` rows on the primary and wait until the replica has them: the rows
    the pair has acknowledged (in asynchronous mode, what a failover must keep)."""
    rows = tokens(n)
    for t in rows:
        pair.write(pair.primary, t)
    eventually(pair, lambda: all(pair.has(pair.replica, t) for t in rows), "replication")
    return rows


def on_both(pair: Pair, rows: list[str]) -> bool:
    return all(pair.has(h, t) for h in (pair.primary, pair.replica) for t in rows)


def write_fails(pair: Pair, host: str) -> bool:
    try:
        pair.write(host, secrets.token_hex(6))
    except DbError:
        return True
    return False


# ------------------------------------------------------------------------ cases


def test_probe_reports_roles_and_positions(pair: Pair) -> None:
    """A healthy pair: the primary is writable and has a position and its replica;
    the replica is read-only, streams from an upstream and reports received and
    replayed positions."""
    drv_p, drv_r = pair.driver(pair.primary), pair.driver(pair.replica)
    eventually(pair, lambda: drv_r.probe(5).streaming, "replica streaming")
    p, r = drv_p.probe(5), drv_r.probe(5)
    assert p.reachable and p.role is Role.PRIMARY and p.writable, p
    assert p.position is not None and p.version, p
    eventually(pair, lambda: len(drv_p.probe(5).replicas) == 1, "primary sees its replica")
    assert r.reachable and r.role is Role.REPLICA and not r.writable, r
    assert r.position is not None and r.received is not None and r.upstream, r
    assert r.lag_seconds is not None and r.lag_seconds >= 0, r


def test_fence_makes_writes_fail_and_unfence_restores(pair: Pair) -> None:
    """fence: once it returns, an application write fails and probe says not
    writable; fencing twice is fine; unfence makes writes work again."""
    pair.dirty = True
    drv = pair.driver(pair.primary)
    pair.write(pair.primary, secrets.token_hex(6))
    drv.fence(VERB_TIMEOUT)
    assert write_fails(pair, pair.primary)
    st = drv.probe(5)
    assert st.role is Role.PRIMARY and not st.writable, st
    drv.fence(VERB_TIMEOUT)  # idempotent
    assert write_fails(pair, pair.primary)
    drv.unfence(VERB_TIMEOUT)
    drv.unfence(VERB_TIMEOUT)  # idempotent
    row = secrets.token_hex(6)
    pair.write(pair.primary, row)
    assert drv.probe(5).writable
    eventually(pair, lambda: pair.has(pair.replica, row), "replication after unfence")
    pair.dirty = False


def test_promote_is_idempotent_and_makes_the_replica_writable(pair: Pair) -> None:
    """promote on a primary changes nothing and says so; on the replica it makes a
    writable primary holding every replicated row; a second promote is a no-op."""
    first = pair.driver(pair.primary).promote(VERB_TIMEOUT)
    assert first.already_primary and first.position is not None
    assert pair.driver(pair.primary).probe(5).writable
    rows = write_replicated(pair, 3)
    pair.dirty = True
    pair.driver(pair.primary).fence(VERB_TIMEOUT)
    drv = pair.driver(pair.replica)
    res = drv.promote(VERB_TIMEOUT)
    assert not res.already_primary and res.position is not None
    st = drv.probe(5)
    assert st.role is Role.PRIMARY and st.writable, st
    again = drv.promote(VERB_TIMEOUT)
    assert again.already_primary
    pair.write(pair.replica, secrets.token_hex(6))
    assert all(pair.has(pair.replica, t) for t in rows)


def test_wait_replayed_covers_the_primary_position(pair: Pair) -> None:
    """After writes on the primary, the replica's wait_replayed position covers the
    primary's position (once the writes have arrived); the earlier position never
    covers the later one."""
    drv_p, drv_r = pair.driver(pair.primary), pair.driver(pair.replica)
    before = drv_p.probe(5).position
    for t in tokens(5):
        pair.write(pair.primary, t)
    after = drv_p.probe(5).position
    assert before is not None and after is not None

    def caught_up() -> bool:
        return drv_r.covers(drv_r.wait_replayed(VERB_TIMEOUT), after)

    eventually(pair, caught_up, "replica position covers the primary's")
    assert not drv_r.covers(before, after)


def test_covers_truth_table(pair: Pair) -> None:
    """covers() on real positions: a position covers itself and every earlier one on
    the same history, never a later one, and never another engine's."""
    drv = pair.driver(pair.primary)
    p0 = drv.probe(5).position
    pair.write(pair.primary, secrets.token_hex(6))
    p1 = drv.probe(5).position
    pair.write(pair.primary, secrets.token_hex(6))
    p2 = drv.probe(5).position
    assert p0 is not None and p1 is not None and p2 is not None
    table = [
        (p0, p0, True),
        (p1, p0, True),
        (p2, p0, True),
        (p2, p1, True),
        (p0, p1, False),
        (p1, p2, False),
        (p2, Position(engine="another", timeline=1, lsn=0, gtid="0-1-1"), False),
    ]
    for cand, ref, want in table:
        assert drv.covers(cand, ref) is want, (cand, ref)


def test_set_synchronous_turns_waiting_for_the_replica_on_and_off(pair: Pair) -> None:
    """set_synchronous on the primary: once it returns, the probe says commits wait
    for the replica, which (following, so ready to acknowledge) is reported as the
    synchronous one, and a commit returns and reaches it; nothing waits. Setting it
    twice is a no-op; off makes the probe say commits do not wait; on is refused on
    the replica and changes nothing there."""
    pair.dirty = True
    drv, rep = pair.driver(pair.primary), pair.driver(pair.replica)
    assert not drv.probe(5).sync_replication  # the pair is built asynchronous
    rep.follow(pair.upstream(pair.primary), VERB_TIMEOUT)  # already follows: ready to ack
    for _ in range(2):
        drv.set_synchronous(True, VERB_TIMEOUT)
        st = drv.probe(5)
        assert st.sync_replication and st.sync_waiting == 0, st
    eventually(
        pair,
        lambda: [r.sync for r in drv.probe(5).replicas] == [True],
        "the replica acknowledges synchronously",
    )
    acked = tokens(1)
    pair.write(pair.primary, acked[0])  # bounded: a commit left waiting fails the write
    eventually(
        pair, lambda: pair.has(pair.replica, acked[0]), "the acknowledged row on the replica"
    )
    with pytest.raises(DbRefused):
        rep.set_synchronous(True, VERB_TIMEOUT)
    assert not rep.probe(5).sync_replication
    for _ in range(2):
        drv.set_synchronous(False, VERB_TIMEOUT)
        st = drv.probe(5)
        assert not st.sync_replication and st.sync_waiting == 0, st
        assert not any(r.sync for r in st.replicas), st
    pair.write(pair.primary, secrets.token_hex(6))
    pair.dirty = False


def test_prepare_replica_makes_a_replica_built_without_dbha_acknowledge(pair: Pair) -> None:
    """A replica its operator built does not acknowledge synchronous commits (a standby
    named otherwise, or the replica side of semi-sync off): its probe says so, and a
    synchronous primary then has no synchronous standby, so its commits are blocked.
    prepare_replica makes it acknowledge without a restart: the primary counts it as
    its synchronous standby, and a commit returns and reaches it. Idempotent; refused
    on the primary."""
    pair.dirty = True
    drv, rep = pair.driver(pair.primary), pair.driver(pair.replica)
    pair.unready(pair.replica)
    eventually(pair, lambda: rep.probe(5).sync_ready is False, "the replica not acknowledging")
    drv.set_synchronous(True, VERB_TIMEOUT)
    eventually(pair, lambda: drv.probe(5).commits_blocked, "the primary's commits blocked")
    for _ in range(2):
        rep.prepare_replica(VERB_TIMEOUT)
        st = rep.probe(5)
        assert st.sync_ready is True and st.role is Role.REPLICA, st
    eventually(
        pair,
        lambda: drv.probe(5).sync_standbys == 1 and not drv.probe(5).commits_blocked,
        "the replica counted as the synchronous standby",
    )
    acked = tokens(1)
    pair.write(pair.primary, acked[0])  # bounded: a commit left waiting fails the write
    eventually(
        pair, lambda: pair.has(pair.replica, acked[0]), "the acknowledged row on the replica"
    )
    with pytest.raises(DbRefused):
        drv.prepare_replica(VERB_TIMEOUT)
    drv.set_synchronous(False, VERB_TIMEOUT)


def _switch(pair: Pair) -> tuple[list[str], DatabaseDriver, DatabaseDriver]:
    """Planned switch: fence the primary, let the replica apply everything, promote."""
    rows = write_replicated(pair, 5)
    pair.dirty = True
    old, new = pair.driver(pair.primary), pair.driver(pair.replica)
    old.fence(VERB_TIMEOUT)
    new.wait_replayed(VERB_TIMEOUT)
    assert not new.promote(VERB_TIMEOUT).already_primary
    return rows, old, new


def test_rejoin_makes_the_old_primary_a_replica(pair: Pair) -> None:
    """After a switch, rejoin turns the old primary into a streaming replica of the
    new one: every acknowledged row, before and after the switch, is on both."""
    rows, old, _new = _switch(pair)
    rows += tokens(3)
    for t in rows[-3:]:
        pair.write(pair.replica, t)
    report = old.rejoin(pair.upstream(pair.replica), VERB_TIMEOUT * 2)
    assert report.method in ("follow", "pg_rewind", "pg_basebackup", "repoint", "reclone")
    rows += tokens(3)
    for t in rows[-3:]:
        pair.write(pair.replica, t)
    st = old.probe(5)
    assert st.role is Role.REPLICA and not st.writable, st
    eventually(pair, lambda: on_both(pair, rows), "every acknowledged row on both")
    eventually(pair, lambda: old.probe(5).streaming, "old primary streaming")
    assert write_fails(pair, pair.primary)


def test_follow_makes_the_old_primary_a_replica(pair: Pair) -> None:
    """After a switch with nothing written on the old primary since its fence,
    follow makes it a streaming replica of the new one; every acknowledged row is on
    both; following again is a no-op."""
    rows, old, _new = _switch(pair)
    up = pair.upstream(pair.replica)
    old.follow(up, VERB_TIMEOUT)
    rows += tokens(3)
    for t in rows[-3:]:
        pair.write(pair.replica, t)
    eventually(pair, lambda: on_both(pair, rows), "every acknowledged row on both")
    eventually(pair, lambda: old.probe(5).streaming, "old primary streaming")
    old.follow(up, VERB_TIMEOUT)  # idempotent
    st = old.probe(5)
    assert st.role is Role.REPLICA and st.streaming and not st.writable, st


def test_every_verb_is_bounded_on_a_hung_server(pair: Pair) -> None:
    """A frozen server: probe reports it unreachable, every other verb raises a
    DbError, each within its timeout (plus slack for a noisy machine)."""
    pair.dirty = True
    host = pair.replica
    drv = pair.driver(host)
    up = pair.upstream(pair.primary)
    verbs: list[tuple[str, Callable[[], Any]]] = [
        ("fence", lambda: drv.fence(HUNG_TIMEOUT)),
        ("unfence", lambda: drv.unfence(HUNG_TIMEOUT)),
        ("wait_replayed", lambda: drv.wait_replayed(HUNG_TIMEOUT)),
        ("promote", lambda: drv.promote(HUNG_TIMEOUT)),
        ("follow", lambda: drv.follow(up, HUNG_TIMEOUT)),
        ("rejoin", lambda: drv.rejoin(up, HUNG_TIMEOUT)),
        ("set_synchronous", lambda: drv.set_synchronous(False, HUNG_TIMEOUT)),
        ("prepare_replica", lambda: drv.prepare_replica(HUNG_TIMEOUT)),
    ]
    pair.hang(host)
    try:
        t0 = time.monotonic()
        st = drv.probe(HUNG_TIMEOUT)
        assert time.monotonic() - t0 <= HUNG_TIMEOUT + SLACK
        assert not st.reachable and st.error, st
        for name, call in verbs:
            t0 = time.monotonic()
            with pytest.raises(DbError):
                call()
            took = time.monotonic() - t0
            assert took <= HUNG_TIMEOUT + SLACK, f"{name} took {took:.1f} s"
    finally:
        pair.thaw()


# ------------------------------------------- the probe's kept session (close)


def test_probe_stays_true_to_the_server_across_fence_and_unfence(pair: Pair) -> None:
    """One driver probes before, during and after a fence: a driver may keep its
    probe's session between probes (a fence may end it, and one opened while the
    server was fenced must see the unfence), yet ``writable`` always says what the
    server does now, on every probe."""
    pair.dirty = True
    drv = pair.driver(pair.primary)
    assert drv.probe(5).writable
    assert drv.probe(5).writable  # a kept session, if the driver keeps one
    drv.fence(VERB_TIMEOUT)
    assert write_fails(pair, pair.primary)
    for _ in range(3):
        st = drv.probe(5)
        assert st.reachable and st.role is Role.PRIMARY and not st.writable, st
    drv.unfence(VERB_TIMEOUT)
    pair.write(pair.primary, secrets.token_hex(6))
    for _ in range(3):
        st = drv.probe(5)
        assert st.reachable and st.role is Role.PRIMARY and st.writable, st
    drv.close()
    drv.close()  # idempotent
    assert drv.probe(5).writable  # usable after close: it connects again
    drv.close()
    pair.dirty = False


def test_a_probe_on_a_kept_session_is_bounded_on_a_hung_server(pair: Pair) -> None:
    """The server freezes after the driver probed it (its session, if kept, still
    looks open): the next probe says unreachable within its timeout, and once the
    server runs again the driver sees it again without being rebuilt."""
    pair.dirty = True
    host = pair.replica
    drv = pair.driver(host)
    assert drv.probe(5).reachable
    pair.hang(host)
    try:
        for _ in range(2):  # on the kept session, then on a new connection
            t0 = time.monotonic()
            st = drv.probe(HUNG_TIMEOUT)
            took = time.monotonic() - t0
            assert not st.reachable and st.error, st
            assert took <= HUNG_TIMEOUT + SLACK, f"probe took {took:.1f} s"
    finally:
        pair.thaw()
    eventually(pair, lambda: drv.probe(5).reachable, "probe answers after the thaw")
    st = drv.probe(5)
    assert st.role is Role.REPLICA and not st.writable, st
    drv.close()
    pair.dirty = False
