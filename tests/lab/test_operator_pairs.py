"""Pairs built as an operator builds them (``dbha lab up --pairs operator``).

The operator lab (its own prefix, the session's plus "op"; no supervisors; torn
down at the end of the session) has a PostgreSQL pair made the way PostgreSQL
15's documentation shows and a MariaDB pair made the way MariaDB's shows, with
dbha's accounts holding only the grants of docs/grants.md. These tests check
that the shape really is the operator's, that the grants are enough for the
verbs the driver contract does not reach (rejoin by pg_rewind and by
pg_basebackup, a re-clone with force, the hard fences), and that a pair adopted
as it is (standby names that are not dbha's, semi-sync off on the replica) gets
synchronous commit without blocking.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbha.core.model import Role
from dbha.db.base import DbError, DbRefused
from dbha.errors import LabError
from dbha.lab import grants
from dbha.lab import operator as op
from dbha.lab import topology as topo
from dbha.lab.core import Lab
from dbha.lab.maria import MariaNode
from dbha.lab.pg import PgNode
from tests.lab.drivers import pg_driver, pg_upstream
from tests.lab.drivers_mysql import mariadb_driver, mariadb_upstream
from tests.lab.helpers import lab_json

T = 30.0  # verb timeout
NODE_NAMES = set(topo.DB_HOSTS)


def until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"{what}: not true within {timeout:g} s")
        time.sleep(0.05)


def pg(lab: Lab, host: str) -> PgNode:
    node = lab.node("pg", host)
    assert isinstance(node, PgNode)
    return node


def maria(lab: Lab, host: str) -> MariaNode:
    node = lab.node("mariadb", host)
    assert isinstance(node, MariaNode)
    return node


def pg_rows(node: PgNode, query: str, user: str = "postgres") -> list[dict[str, Any]]:
    with node.connect(user) as c:
        return c.execute(query).fetchall()


def pg_exec(node: PgNode, statement: str, user: str = "postgres") -> None:
    with node.connect(user) as c:
        c.execute(statement)


def maria_root(node: MariaNode, query: str) -> list[list[str]]:
    """Rows as the server's root account (unix_socket) sees them, tab-separated."""
    out = node._client(query).stdout  # the lab's own root client: SQL on stdin
    return [line.split("\t") for line in out.splitlines() if line]


def lab_secrets(lab: Lab) -> list[str]:
    names = ["pg-dbha", "pg-replicator", "pg-app", "pg-postgres"]
    names += ["mariadb-dbha", "mariadb-repl", "mariadb-app"]
    return [lab.layout.secret(n) for n in names]


@pytest.fixture
def oplab(operator_lab: Lab) -> Iterator[Lab]:
    """The operator lab, healthy before the test; healed and checked after it."""
    st = operator_lab.status()
    assert st["healthy"], st["problems"]
    yield operator_lab
    operator_lab.heal()
    st = operator_lab.status()
    assert st["healthy"], f"lab not healthy after heal: {st['problems']}"


@pytest.fixture
def rebuilt(operator_lab: Lab) -> Iterator[list[str]]:
    """The services a test changes are rebuilt (still the operator's way) after it."""
    services: list[str] = []
    yield services
    operator_lab.heal()
    for service in services:
        operator_lab.rebuild_service(service)


# ------------------------------------------------------------------------ shape


def test_status_says_operator_and_the_write_proof_works(oplab: Lab) -> None:
    st = lab_json(oplab.prefix)
    assert st["_exit"] == 0 and st["healthy"], st["problems"]
    assert st["pairs"] == "operator" and st["supervisors"] is None
    for service in topo.SERVICES:
        proof = st["services"][service]["write_proof"]
        assert proof["ok"], proof
        assert proof["written_on"] == topo.SERVICES[service].primary


def test_postgresql_pair_is_built_as_its_documentation_shows(oplab: Lab) -> None:
    """The standby reports cluster_name '15/main' (no application_name), streams
    through the operator's slot 'standby1' (not named after a node), has a
    primary_conninfo with a passfile and no password, and both nodes run with data
    checksums, no wal_log_hints and no synchronous_standby_names."""
    a, b = pg(oplab, "a"), pg(oplab, "b")
    reps = pg_rows(a, "SELECT application_name, state FROM pg_stat_replication")
    assert reps == [{"application_name": op.PG_CLUSTER_NAME, "state": "streaming"}]
    slots = pg_rows(a, "SELECT slot_name, slot_type, active FROM pg_replication_slots")
    assert slots == [{"slot_name": op.PG_SLOT, "slot_type": "physical", "active": True}]
    assert not NODE_NAMES & {s["slot_name"] for s in slots}
    for node in (a, b):
        (s,) = pg_rows(
            node,
            "SELECT current_setting('cluster_name') AS cluster,"
            " current_setting('data_checksums') AS checksums,"
            " current_setting('wal_log_hints') AS hints,"
            " current_setting('synchronous_standby_names') AS sync_names",
        )
        assert s == {"cluster": "15/main", "checksums": "on", "hints": "off", "sync_names": ""}
    auto = (b.data / "postgresql.auto.conf").read_text()
    assert "password" not in auto and not [x for x in lab_secrets(oplab) if x in auto]
    (conninfo,) = [ln for ln in auto.splitlines() if ln.startswith("primary_conninfo")]
    assert f"passfile=''{b.passfile}''" in conninfo and "application_name" not in conninfo
    assert f"primary_slot_name = '{op.PG_SLOT}'" in auto
    # dbha reads it as the server has it (pg_monitor's pg_read_all_settings).
    (seen,) = pg_rows(b, "SELECT current_setting('primary_conninfo') AS c", user="dbha")
    assert "passfile=" in seen["c"] and "password" not in seen["c"]


def test_postgresql_roles_have_only_the_documented_grants(oplab: Lab) -> None:
    a = pg(oplab, "a")
    roles = {
        r["rolname"]: r
        for r in pg_rows(
            a,
            "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication,"
            " rolbypassrls FROM pg_roles WHERE rolname IN ('dbha', 'replicator', 'app')",
        )
    }
    attrs = ("rolsuper", "rolcreaterole", "rolcreatedb", "rolreplication", "rolbypassrls")
    assert [roles["dbha"][k] for k in attrs] == [False] * 5
    assert [roles["app"][k] for k in attrs] == [False] * 5
    assert [roles["replicator"][k] for k in attrs] == [False, False, False, True, False]
    member_of = {
        r["role"]
        for r in pg_rows(
            a,
            "SELECT g.rolname AS role FROM pg_auth_members m"
            " JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member"
            " WHERE u.rolname = 'dbha'",
        )
    }
    assert member_of == {"pg_monitor", "pg_signal_backend", "pg_checkpoint"}
    params = {
        r["parname"]
        for r in pg_rows(
            a,
            "SELECT parname FROM pg_parameter_acl"
            " WHERE has_parameter_privilege('dbha', parname, 'ALTER SYSTEM')",
        )
    }
    assert params == {
        "default_transaction_read_only",
        "synchronous_standby_names",
        "primary_conninfo",
        "primary_slot_name",
    }
    assert not pg_rows(
        a,
        "SELECT 1 FROM pg_auth_members m JOIN pg_roles u"
        " ON u.oid = m.member WHERE u.rolname = 'app'",
    )


def test_mariadb_pair_is_built_as_its_documentation_shows(oplab: Lab) -> None:
    """No semi-synchronous replication on either side (nothing in my.cnf, OFF in
    the servers), the replica on GTID with the server's default connect retry and
    heartbeat, read-only; dbha's account holds exactly the documented privileges
    (no SUPER, no ALL PRIVILEGES, no GRANT OPTION), the application's none on
    ``*.*`` and read_only stops it."""
    a, b = maria(oplab, "a"), maria(oplab, "b")
    for node in (a, b):
        assert "rpl_semi_sync" not in node.cnf.read_text()
        semi = maria_root(
            node,
            "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES"
            " WHERE VARIABLE_NAME LIKE 'RPL_SEMI_SYNC_%_ENABLED'"
            " UNION ALL SELECT VARIABLE_NAME, VARIABLE_VALUE"
            " FROM information_schema.GLOBAL_STATUS"
            " WHERE VARIABLE_NAME LIKE 'RPL_SEMI_SYNC_%_STATUS';",
        )
        assert len(semi) == 4 and all(v == "OFF" for _, v in semi), (node.host, semi)
    (rep,) = a.query("SHOW SLAVE STATUS", user="dbha")
    assert rep["Using_Gtid"] == "Slave_Pos" and rep["Connect_Retry"] == 60, rep
    ((_, period),) = maria_root(a, "SHOW GLOBAL STATUS LIKE 'Slave_heartbeat_period';")
    assert float(period) == 30.0  # the default: slave_net_timeout (60 s) / 2
    assert rep["Master_Host"] == topo.HOSTS["b"].lan and rep["Master_User"] == "repl"
    assert a.query("SELECT @@read_only AS ro")[0]["ro"] == 1
    assert b.query("SELECT @@read_only AS ro")[0]["ro"] == 0

    def privileges(grantee: str) -> set[tuple[str, str]]:
        rows = maria_root(
            b,
            "SELECT PRIVILEGE_TYPE, IS_GRANTABLE FROM information_schema.USER_PRIVILEGES"
            f' WHERE GRANTEE = "{grantee}";',
        )
        return {(p, g) for p, g in rows}

    documented = {
        p.strip()
        for g in grants.MARIA_GRANTS
        if g.sql.startswith("GRANT ")
        for p in g.sql.removeprefix("GRANT ").split(" ON ")[0].split(",")
    }
    assert privileges(grants.MARIA_USER) == {(p, "NO") for p in documented}
    assert not {"SUPER", "ALL PRIVILEGES", "CREATE USER", "FILE"} & documented
    assert privileges(grants.MARIA_REPLICATION_USER) == {("REPLICATION SLAVE", "NO")}
    assert privileges("'app'@'%'") == {("USAGE", "NO")}
    with pytest.raises(LabError, match=r"read-only|1290"):
        a.write_token("on the read-only replica")


class SecretWatch:
    """While it runs: every process this test starts (argv, environment), and every
    command line on the machine, sampled; both looked through for the secrets."""

    def __init__(self, values: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.values = [v for v in values if v]
        self.started: list[str] = []
        self.leaks: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._scan, daemon=True)
        real = subprocess.Popen
        watch = self

        class Recording(real):  # type: ignore[valid-type,misc]
            def __init__(self, args: Any, *rest: Any, **kw: Any) -> None:
                text = " ".join(map(str, args)) + " " + str(kw.get("env") or "")
                watch.started.append(text)
                watch._check("started", text)
                super().__init__(args, *rest, **kw)

        monkeypatch.setattr(subprocess, "Popen", Recording)

    def _check(self, where: str, text: str) -> None:
        if "password=" in text or any(v in text for v in self.values):
            self.leaks.append(f"{where}: {text[:100]}")

    def _scan(self) -> None:
        while not self._stop.wait(0.005):
            self.samples += 1
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                    except OSError:
                        continue
                    self._check(f"pid {pid}", cmd)

    def __enter__(self) -> SecretWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_rebuild_keeps_the_operators_way_and_no_secret_on_a_command_line(
    oplab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rebuild_service builds each pair the operator's way again; meanwhile no
    password is in any process's argv (nor in the environment of those the lab
    starts): the set-up SQL goes over the server's socket or on stdin."""
    with SecretWatch(lab_secrets(oplab), monkeypatch) as watch:
        for service in topo.SERVICES:
            oplab.rebuild_service(service)
    monkeypatch.undo()
    assert not watch.leaks, watch.leaks
    assert watch.samples > 10 and any("pg_basebackup" in s for s in watch.started)
    assert any("mariadb-install-db" in s for s in watch.started)
    assert oplab.status()["pairs"] == "operator"
    reps = pg_rows(pg(oplab, "a"), "SELECT application_name FROM pg_stat_replication")
    assert reps == [{"application_name": op.PG_CLUSTER_NAME}]
    assert maria(oplab, "a").query("SHOW SLAVE STATUS")[0]["Connect_Retry"] == 60


# ------------------------------------------------- verbs the grants must cover


def test_postgresql_rejoins_by_pg_rewind_and_by_pg_basebackup(
    oplab: Lab, rebuilt: list[str]
) -> None:
    """With dbha's documented grants: a diverged old primary rejoins by pg_rewind
    (dbha's account reads the source through pg_rewind's non-superuser grants); a
    hard-fenced one whose WAL is gone rejoins by pg_basebackup. Every acknowledged
    row on both each time.

    The CHECKPOINT first is the operator's (a timed checkpoint would do the same):
    pg_rewind reads the target's WAL back to the last checkpoint before the fork,
    and this pair keeps none older than its last checkpoint (no wal_keep_size)."""
    rebuilt.append("pg")
    a, b = pg_driver(oplab, "a"), pg_driver(oplab, "b")
    na, nb = pg(oplab, "a"), pg(oplab, "b")
    acked = [secrets.token_hex(6) for _ in range(3)]
    for t in acked:
        na.write_token(t)
    until(lambda: all(nb.has_token(t) for t in acked), "rows on b")
    pg_exec(na, "CHECKPOINT")
    b.promote(T)  # split brain: a still writes
    lost = secrets.token_hex(6)
    na.write_token(lost)
    acked.append(secrets.token_hex(6))
    nb.write_token(acked[-1])
    report = a.rejoin(pg_upstream("b"), T * 2)
    assert report.method == "pg_rewind", report
    until(lambda: all(na.has_token(t) for t in acked), "acked rows on a")
    assert not na.has_token(lost) and not nb.has_token(lost)
    st = a.probe(5)
    assert st.role is Role.REPLICA and st.streaming, st
    # Now the other way: a is promoted while b writes; b is hard-fenced, loses its WAL.
    a.promote(T)
    nb.write_token(secrets.token_hex(6))
    acked.append(secrets.token_hex(6))
    na.write_token(acked[-1])
    b.fence(T, hard=True)
    assert nb.pid() is None
    for f in (nb.data / "pg_wal").iterdir():
        if len(f.name) == 24:
            f.unlink()
    report = b.rejoin(pg_upstream("a"), T * 2)
    assert report.method == "pg_basebackup", report
    until(lambda: all(nb.has_token(t) for t in acked), "acked rows on b")
    st = b.probe(5)
    assert st.role is Role.REPLICA and st.streaming, st


def test_mariadb_reclones_with_force_and_fences_hard(oplab: Lab, rebuilt: list[str]) -> None:
    """With dbha's documented grants: a is promoted while b still takes writes; a
    plain rejoin of b refuses (errant transactions), a forced one keeps them aside
    (the binlog tool reading b, a dump of b), re-clones b from a (a dump of a loaded
    unlogged) and replicates. Then a hard fence with SQL SHUTDOWN stops a."""
    rebuilt.append("mariadb")
    a, b = mariadb_driver(oplab, "a"), mariadb_driver(oplab, "b")
    na, nb = maria(oplab, "a"), maria(oplab, "b")
    acked = secrets.token_hex(6)
    nb.write_token(acked)
    a.wait_replayed(T)
    a.promote(T)
    errant = secrets.token_hex(6)
    nb.write_token(errant)
    on_a = secrets.token_hex(6)
    na.write_token(on_a)
    with pytest.raises(DbRefused, match="errant"):
        b.rejoin(mariadb_upstream("a"), T)
    report = b.rejoin(mariadb_upstream("a"), T * 2, force=True)
    assert report.method == "reclone" and report.errant, report
    assert any(errant in Path(p).read_text() for p in report.set_aside)
    b.wait_replayed(T)
    assert nb.has_token(acked) and nb.has_token(on_a) and not nb.has_token(errant)
    st = b.probe(5)
    assert st.role is Role.REPLICA and st.streaming and not st.writable, st
    a.fence(T, hard=True)  # the contract's drivers have no stop command: SQL SHUTDOWN
    until(lambda: na.pid() is None, "a's server to exit")


# ------------------------------------------------------- adopting the pair


def test_postgresql_set_synchronous_on_the_pair_as_adopted(oplab: Lab, rebuilt: list[str]) -> None:
    """Synchronous commit switched on for the pair as the operator built it: the
    standby connects as its cluster_name '15/main', which the primary does not wait
    for, so the probe reports its commits blocked (the supervisor's check says
    CRITICAL). prepare_replica (what the replica's supervisor does, rule
    replica-prepare) makes it the synchronous standby without a restart, keeping
    the operator's slot; a commit then returns."""
    rebuilt.append("pg")
    drv, rep = pg_driver(oplab, "a"), pg_driver(oplab, "b")
    assert rep.probe(5).sync_ready is False
    try:
        drv.set_synchronous(True, T)
        until(lambda: drv.probe(5).commits_blocked, "the primary's commits reported blocked")
        rep.prepare_replica(T)
        assert rep.probe(5).sync_ready is True
        until(
            lambda: [r.sync for r in drv.probe(5).replicas] == [True],
            "the standby reported synchronous",
            timeout=10,
        )
        pg(oplab, "a").write_token("sync")  # fails unless acknowledged within 5 s
        slots = pg_rows(pg(oplab, "a"), "SELECT slot_name, active FROM pg_replication_slots")
        assert [(x["slot_name"], x["active"]) for x in slots] == [("standby1", True)], slots
    finally:
        drv.set_synchronous(False, T)


def test_mariadb_set_synchronous_on_the_pair_as_adopted(oplab: Lab, rebuilt: list[str]) -> None:
    """Semi-sync switched on for the pair as the operator built it: the replica's
    side is off, nothing acknowledges, the probe reports commits blocked.
    prepare_replica turns the replica side on and reconnects its receiver, set to
    reconnect every second (the operator's server kept the default minute, which
    a restart of the primary would make every commit wait); the replica is then
    reported synchronous and a commit returns."""
    rebuilt.append("mariadb")
    drv, rep = mariadb_driver(oplab, "b"), mariadb_driver(oplab, "a")
    replica = maria(oplab, "a")
    assert replica.query("SHOW SLAVE STATUS")[0]["Connect_Retry"] == 60
    assert rep.probe(5).sync_ready is False
    try:
        drv.set_synchronous(True, T)
        until(lambda: drv.probe(5).commits_blocked, "the primary's commits reported blocked")
        rep.prepare_replica(T)
        assert rep.probe(5).sync_ready is True
        assert replica.query("SHOW SLAVE STATUS")[0]["Connect_Retry"] == 1
        until(
            lambda: [r.sync for r in drv.probe(5).replicas] == [True],
            "the replica reported synchronous",
            timeout=10,
        )
        maria(oplab, "b").write_token("sync")  # the lab's client gives up after 5 s
    finally:
        drv.set_synchronous(False, T)


def test_postgresql_follow_of_the_adopted_standby_leaves_no_slot_behind(
    oplab: Lab, rebuilt: list[str]
) -> None:
    """follow re-points the adopted standby to a slot named after the node, and drops
    the operator's slot it used before (left there, inactive, it would hold WAL on
    the primary for ever)."""
    rebuilt.append("pg")
    pg_driver(oplab, "b").follow(pg_upstream("a"), T)
    slots = pg_rows(pg(oplab, "a"), "SELECT slot_name, active FROM pg_replication_slots")
    assert [s for s in slots if not s["active"]] == [], slots
    assert [s["slot_name"] for s in slots] == ["b"], slots


def test_postgresql_fence_with_a_superuser_session_open(oplab: Lab, rebuilt: list[str]) -> None:
    """An operator's psql (as postgres) is open on the primary: dbha's account (no
    SUPERUSER) cannot end it, so the fence ends every other session, leaves that one
    (logged), and succeeds; the application cannot write."""
    rebuilt.append("pg")
    drv = pg_driver(oplab, "a")
    with pg(oplab, "a").connect("postgres") as admin:
        admin.execute("SELECT 1")
        try:
            drv.fence(T)
        except DbError as exc:
            pytest.fail(f"fence failed: {exc}")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            pg(oplab, "a").write_token("fenced")
        admin.execute("SELECT 1")  # still open


def test_postgresql_follow_of_an_old_primary_refuses_when_it_cannot_tell(
    oplab: Lab, rebuilt: list[str]
) -> None:
    """A planned switch on the operator's pair (no WAL kept past the last
    checkpoint): follow of the old primary either follows (its WAL was still there)
    or cannot tell whether it wrote past the fork and refuses, leaving it stopped
    with nothing changed; rejoin then makes it a replica with every row."""
    rebuilt.append("pg")
    a, b = pg_driver(oplab, "a"), pg_driver(oplab, "b")
    na, nb = pg(oplab, "a"), pg(oplab, "b")
    acked = [secrets.token_hex(6) for _ in range(3)]
    for t in acked:
        na.write_token(t)
    until(lambda: all(nb.has_token(t) for t in acked), "rows on b")
    a.fence(T)
    b.wait_replayed(T)
    b.promote(T)
    acked.append(secrets.token_hex(6))
    nb.write_token(acked[-1])
    try:
        a.follow(pg_upstream("b"), T)
    except DbRefused as exc:
        assert "cannot tell" in str(exc), exc
        assert na.pid() is None  # left stopped
        report = a.rejoin(pg_upstream("b"), T * 2)
        assert report.method in ("pg_rewind", "pg_basebackup"), report
    until(lambda: all(na.has_token(t) for t in acked), "acked rows on a")
    st = a.probe(5)
    assert st.role is Role.REPLICA and st.streaming, st
