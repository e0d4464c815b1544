"""dbha on pairs it did not build: the recovery paths that failed on an adopted pair.

One lab for the module, its PostgreSQL and MariaDB pairs built as their
operators would (``--pairs operator``: the standby named after its cluster,
replication running before dbha starts, semi-sync off on the replica, dbha's
accounts with the grants of docs/grants.md only), synchronous, with dbha
supervisors (``sync_fallback = "fallback"``). Each scenario has a client in host
c writing through the VIP and one writing to each node's own address where the
fault allows, and asserts what the issue that found the defect asks: nothing
acknowledged lost, never two writable nodes, the pair converged, no failover
where none is due. Times are printed and recorded, never asserted.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import secrets
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pymysql
import pytest

from dbha.errors import LabError
from dbha.lab import client as cl
from dbha.lab import net
from dbha.lab import scenario as scenarios
from dbha.lab import topology as topo
from dbha.lab.core import Lab
from dbha.lab.maria import MariaNode
from dbha.lab.wait import wait_until
from tests.lab.helpers import as_built, ns_exec, strict_sync, supervised_lab, supervisor_status

SERVICES = list(topo.SERVICES)
DEADLINE = 1.0  # fence.self_fence_deadline_ms of the lab's configs, in seconds
RecordProperty = Callable[[str, object], None]


@pytest.fixture(scope="module")
def alab(lab: Lab) -> Iterator[Lab]:
    with supervised_lab(lab, "ad", pairs="operator") as other:
        yield other


def _mark(lab: Lab, service: str) -> int | None:
    mark = supervisor_status(lab, service, topo.SERVICES[service].primary)["local"]["sync_mark"]
    return None if mark is None else int(mark)


@pytest.fixture
def apair(alab: Lab) -> Iterator[Lab]:
    """The adopted pairs as built (rebuilt if a scenario moved them), both in sync."""
    alab.heal()
    for service in SERVICES:
        if not as_built(alab, service):
            alab.rebuild_service(service)
            continue
        try:
            wait_until(lambda s=service: _mark(alab, s) is None, 20.0, f"{service} in sync")
        except LabError:
            alab.rebuild_service(service)
    st = alab.status()
    assert st["healthy"], st["problems"]
    yield alab
    for service in SERVICES:
        for host in topo.DB_HOSTS:
            text = alab.supervisors.log_since_start(service, host).splitlines()
            shown = [t for t in text if not t.endswith(("primary: serving", "replica: following"))]
            print(f"--- {service} supervisor on {host}:", *shown[-30:], sep="\n")
    alab.heal()


def _config(lab: Lab, service: str, host: str) -> str:
    return str(lab.supervisors.paths(service, host).config)


def _dbha(
    lab: Lab, service: str, host: str, verb: str, *more: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``dbha VERB -c CONFIG MORE...`` inside ``host``, as an operator there would."""
    argv = [sys.executable, "-m", "dbha", *verb.split(), "-c", _config(lab, service, host)]
    return ns_exec(lab, host, *argv, *more, timeout=timeout)


def _check(lab: Lab, service: str, host: str) -> subprocess.CompletedProcess[str]:
    return _dbha(lab, service, host, "check")


def _common(o: scenarios.ScenarioOutcome) -> None:
    v = o.verdict
    print(f"\n{o.line()}")
    assert v.missing == {h: [] for h in v.missing}, v.summary()
    for host, nv in o.node_verdicts.items():
        assert nv.missing == {h: [] for h in nv.missing}, (host, nv.summary())
    assert not o.doubles, f"two reachable VIP holders at once: {o.doubles[:5]}"
    assert o.writers_overlap(DEADLINE) == [], o.writers_overlap(DEADLINE)[:5]
    assert o.vip_after == [v.primary], (o.vip_after, v.primary)
    assert len(v.node_changes) <= 1, v.node_changes


def _gap_after(o: scenarios.ScenarioOutcome, since: float) -> float:
    """The longest pause between writes acknowledged through the VIP after ``since``."""
    times = [a.t for a in o.log.acks if a.t >= since]
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


# -------------------------------------------- synchronous commit, adopted


def _silence_standby(lab: Lab, service: str) -> Callable[[], None]:
    """Make the replica unable to acknowledge while it stays an eligible replica
    (PostgreSQL: its WAL receiver stopped; MariaDB: its receiver thread stopped);
    returns the undo."""
    replica = topo.SERVICES[service].replica
    if service == "pg":
        pids = [
            p
            for p in net.ns_pids(lab.prefix, replica)
            if "walreceiver" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
        ]
        assert pids, "no WAL receiver on the standby"
        net.signal_pids(pids, signal.SIGSTOP)
        return lambda: net.signal_pids(pids, signal.SIGCONT)
    node = lab.node(service, replica)
    assert isinstance(node, MariaNode)
    node._client("STOP SLAVE IO_THREAD;")
    return lambda: node._client("START SLAVE IO_THREAD;") and None


@pytest.mark.parametrize("service", SERVICES)
def test_1_2_synchronous_commits_flow_and_a_standby_that_cannot_acknowledge_is_critical(
    apair: Lab, service: str, tmp_path: Path, record_property: RecordProperty
) -> None:
    """Defects 1 and 2. On the adopted pair in synchronous mode, writes flow from the
    start: the primary has one synchronous standby (PostgreSQL sync_state sync,
    MariaDB one semi-sync client), the replica having been made to acknowledge by
    its supervisor (a MariaDB receiver also made to reconnect every second, not
    the server's default minute that held commits after a restart of its primary).
    With the standby made unable to acknowledge (its receiver
    stopped, while it still announces itself an eligible replica), commits wait and
    dbha check on the primary says CRITICAL "commits are blocked" within seconds;
    once the standby answers again, check is OK and writes go on, nothing lost."""
    svc = topo.SERVICES[service]
    db = supervisor_status(apair, service, svc.primary)["local"]["database"]
    assert db["sync_replication"] is True and db["sync_standbys"] == 1, db
    rep = supervisor_status(apair, service, svc.replica)["local"]["database"]
    assert rep["sync_ready"] is True, rep
    if service == "mariadb":  # the operator's replica kept the server's 60 s
        node = apair.node(service, svc.replica)
        assert isinstance(node, MariaNode)
        assert node.query("SHOW SLAVE STATUS")[0]["Connect_Retry"] == 1
    out = tmp_path / "client.jsonl"
    client = cl.start_client(apair, service, out, 120)
    try:
        cl.wait_for(out, lambda log: len(log.acks) >= 40, 30, "writes from the start")
        assert _check(apair, service, svc.primary).returncode == 0
        undo = _silence_standby(apair, service)
        t0 = time.monotonic()
        try:
            seen = ""

            def critical() -> bool:
                nonlocal seen
                res = _check(apair, service, svc.primary)
                seen = res.stdout
                return res.returncode == 2 and "commits are blocked" in res.stdout

            wait_until(critical, 15.0, "dbha check to say the commits are blocked", 0.2)
            took = time.monotonic() - t0
            print(f"\n{service}: CRITICAL {took:.1f} s after the standby stopped answering:")
            print(seen)
            record_property(f"{service}_blocked_critical_after_s", round(took, 1))
        finally:
            undo()
        resumed = time.monotonic()
        cl.wait_for(
            out,
            lambda log: sum(a.t > resumed for a in log.acks) >= 40,
            30,
            "writes once the standby answers",
        )
        wait_until(lambda: _check(apair, service, svc.primary).returncode == 0, 20.0, "OK again")
    finally:
        cl.stop_client(client)
    verdict = cl.verify(apair, service, cl.read_log(out))
    assert verdict.missing == {h: [] for h in verdict.missing}, verdict.summary()


# ------------------------------------------- sessions end where clients hear it

SESSION_PROBE = textwrap.dedent(
    """
    import json, sys, time
    engine, host, port, user, pwfile, db = sys.argv[1:7]
    password = open(pwfile).read().strip()
    if engine == "postgresql":
        import psycopg
        conn = psycopg.connect(host=host, port=int(port), user=user, password=password,
                               dbname=db, connect_timeout=2, keepalives=0, autocommit=True)
        ask = lambda: conn.execute("SELECT 1").fetchone()
    else:
        import pymysql
        conn = pymysql.connect(host=host, port=int(port), user=user, password=password,
                               database=db, connect_timeout=2, autocommit=True)
        def ask():
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone()
    ask()
    print(json.dumps({"connected": time.monotonic()}), flush=True)
    while True:  # no keepalives, no read timeout: only the server can end this
        time.sleep(0.1)
        t0 = time.monotonic()
        try:
            ask()
        except Exception as exc:
            print(json.dumps({"error": str(exc)[:200], "at": t0, "took": time.monotonic() - t0}),
                  flush=True)
            break
    """
)


class SessionProbe:
    """A client in host c with one session through the VIP, no keepalives and no
    read timeout, asking SELECT 1 every 0.1 s until the server ends its session."""

    def __init__(self, lab: Lab, service: str) -> None:
        svc = topo.SERVICES[service]
        pw = lab.layout.secret_path(f"{service}-{svc.app_user}")
        argv = [sys.executable, "-c", SESSION_PROBE, svc.engine, svc.vip, str(svc.port)]
        argv += [svc.app_user, str(pw), svc.database]
        self.proc = subprocess.Popen(
            net.nsexec(lab.prefix, "c", argv), stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        first = json.loads(self.proc.stdout.readline() or "{}")
        assert "connected" in first, first

    def ended(self, timeout: float) -> dict[str, float | str]:
        """The probe's report once its session ended, within ``timeout`` seconds."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            pytest.fail(f"the client's session did not end within {timeout:g} s: it hangs")
        return dict(json.loads(out.strip().splitlines()[-1]))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.mark.parametrize("service", SERVICES)
def test_3_a_switchover_ends_the_old_primarys_sessions_where_their_clients_hear_it(
    apair: Lab, service: str, record_property: RecordProperty
) -> None:
    """Defect 3. A client holds a session through the VIP with no keepalives and no
    read timeout. A planned switchover fences the old primary before its VIP goes,
    so the end of the session (the server's error and FIN) reaches the client,
    whose next query fails at once instead of waiting on a dead path for minutes."""
    svc = topo.SERVICES[service]
    probe = SessionProbe(apair, service)
    try:
        res = _dbha(apair, service, svc.primary, "switchover", timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        asked = time.monotonic()
        report = probe.ended(20.0)
        took = float(report["took"])
        print(
            f"\n{service}: the session ended {float(report['at']) - asked:+.2f} s after the "
            f"request, its query failing in {took:.3f} s: {report['error']}"
        )
        assert took < 5.0, report  # a lost FIN leaves the query waiting for minutes
        record_property(f"{service}_session_end_query_s", round(took, 3))
    finally:
        probe.close()
    wait_until(
        lambda: apair.vip_holders(service) == [svc.replica], 30.0, f"the VIP on {svc.replica}"
    )
    # The switchover is done once the old primary streams from the new one (its
    # rejoin may copy the whole database: this pair keeps no WAL for pg_rewind).
    wait_until(
        lambda: apair.node(service, svc.primary).status().get("streaming") is True,
        60.0,
        f"{svc.primary} to stream from {svc.replica}",
    )


@pytest.mark.parametrize("service", SERVICES)
def test_10_the_keepers_fence_is_read_only_first_then_a_stop_with_its_own_bound(
    apair: Lab, service: str, tmp_path: Path, record_property: RecordProperty
) -> None:
    """Defects 10 and 3 for the lease keeper. The primary's supervisor hangs
    (SIGSTOP): its lease ends, and its keeper fences on its own: read-only with the
    sessions ended (a client's idle session ends where it hears it), the VIP
    released, the server stopped within its own bound. It reports no failure (a
    clean stop takes longer than the old 0.6 s budget, which meant a watchdog reset
    on every fence). Whether the replica then takes over depends on when the stop
    ends: in fallback mode it may promote only within the fallback window after
    the primary's last echo, and otherwise refuses loudly (the primary's own
    supervisor is back after the heal and resumes). Either way nothing
    acknowledged is lost and never two nodes write."""
    svc = topo.SERVICES[service]
    pid = apair.supervisors.pid(service, svc.primary)
    assert pid is not None
    probe = SessionProbe(apair, service)
    stopped = False

    def hang_supervisor() -> None:
        nonlocal stopped
        net.signal_pids([pid], signal.SIGSTOP)
        stopped = True

    try:

        def keeper_done() -> None:
            wait_until(
                lambda: (
                    "keeper: lease ended" in apair.supervisors.log_since_start(service, svc.primary)
                ),
                20.0,
                "the keeper to fence",
            )
            text = apair.supervisors.log_since_start(service, svc.primary)
            line = [ln for ln in text.splitlines() if "keeper: lease ended" in ln][-1]
            print(f"\n{service}: {line}")
            assert "with failures" not in line, line
            assert apair.node(service, svc.primary).pid() is None  # stopped
            report = probe.ended(10.0)
            assert float(report["took"]) < 5.0, report

        o = scenarios.run(
            apair,
            service,
            "hang-supervisor",
            hang_supervisor,
            tmp_path / "client.jsonl",
            expect_takeover=False,
            observe=6.0,
            before_heal=keeper_done,
        )
    finally:
        probe.close()
        if stopped:
            net.signal_pids([pid], signal.SIGCONT)
    _common(o)
    assert o.verdict.primary in (svc.primary, svc.replica)
    if o.verdict.primary == svc.primary:
        log = apair.supervisors.log_since_start(service, svc.replica)
        assert "failover_refused" in log, log[-2000:]
    if o.recovery is not None:
        record_property(f"{service}_hung_supervisor_fault_to_first_write_s", round(o.recovery, 3))


# --------------------------------------- a replica restarted during a failover


@pytest.mark.parametrize("service", SERVICES)
def test_4_a_replica_restarted_while_its_primary_is_dead_still_takes_over(
    apair: Lab, service: str, tmp_path: Path, record_property: RecordProperty
) -> None:
    """Defect 4. The primary's host dies; 0.1 s later the replica's supervisor is
    killed and started again (a crash with Restart=on-failure, whose RestartSec is
    0.1 s). It remembers, in the same boot, what made the promotion safe, and takes
    over while the primary is still dead; nothing acknowledged is lost.

    The restart must fit in the fallback window: the replica may promote only
    within 2.7 s of the primary's last echo, and needs a deadline and a safety
    check (1.2 s) of its own checks after it starts. CI once saw the restarted
    supervisor start 1.5 s after the primary's last beat (0.3 s of sleep here, the
    kill and the start of a Python process on a loaded machine): it refused, as it
    must then ("the primary may have fallen back"). Killing it 0.1 s after the
    death, as systemd would restart it, and starting `dbha run` without loading
    the lab's modules leave it the margin this scenario is about."""
    svc = topo.SERVICES[service]

    def fault() -> None:
        apair.kill_host(svc.primary)
        time.sleep(0.1)
        pid = apair.supervisors.pid(service, svc.replica)
        assert pid is not None
        net.signal_pids([pid], signal.SIGKILL)
        gone = lambda: apair.supervisors.pid(service, svc.replica) is None  # noqa: E731
        wait_until(gone, 5.0, "gone", interval=0.01)
        apair.supervisors.start(service, svc.replica, "run")

    o = scenarios.run(
        apair, service, "kill-host+restart", fault, tmp_path / "client.jsonl", expect_takeover=True
    )
    _common(o)
    assert o.verdict.primary == svc.replica
    log = apair.supervisors.log_since_start(service, svc.replica)
    assert "restarted in the same boot" in log, log[-2000:]
    if o.recovery is not None:
        print(f"{service}: first write {o.recovery:.3f} s after the death")
        record_property(f"{service}_restart_during_failover_first_write_s", round(o.recovery, 3))


# ---------------------------------------------- a replica comes back


@pytest.mark.parametrize("service", SERVICES)
def test_5_6_a_returning_replica_costs_no_write_stall_and_no_handover(
    apair: Lab, service: str, tmp_path: Path, record_property: RecordProperty
) -> None:
    """Defects 5 and 6. The replica's host is isolated for about 12 s: the primary
    falls back to asynchronous commits under a replica-not-in-sync mark and writes
    go on. When the replica comes back, the primary turns synchronous commit on only
    once the replica streams again, so no commit waits for its catch-up (the
    longest pause is printed and recorded), and the primary keeps its role (it
    never hands over to the replica it marked)."""
    svc = topo.SERVICES[service]

    def isolate() -> None:
        apair.isolate(svc.replica)

    def fell_back() -> None:
        wait_until(
            lambda: "sync_fallback" in apair.supervisors.log_since_start(service, svc.primary),
            15.0,
            "the primary to fall back",
        )

    o = scenarios.run(
        apair,
        service,
        "isolate-replica",
        isolate,
        tmp_path / "client.jsonl",
        expect_takeover=False,
        observe=12.0,
        before_heal=fell_back,
    )
    _common(o)
    assert o.verdict.primary == svc.primary and o.verdict.node_changes == []
    log = apair.supervisors.log_since_start(service, svc.primary)
    assert "primary-db-failed" not in log and "handover" not in log.split("sync_fallback")[-1]
    # Synchronous commit came back on because the replica streamed again (not
    # because the catch-up wait ran out): no commit waited for its catch-up. The
    # pause itself is a figure for the report, not an assertion on a shared machine.
    assert "is back and streams: synchronous commit on" in log, log[-3000:]
    gap = _gap_after(o, o.heal_at)
    print(f"{service}: longest write pause after the replica came back: {gap:.3f} s")
    record_property(f"{service}_return_longest_pause_s", round(gap, 3))


# ------------------------------------------------- a paused replay (PostgreSQL)


def test_7_a_paused_replay_is_refused_up_front_and_a_forced_failover_finishes(
    apair: Lab, tmp_path: Path, record_property: RecordProperty
) -> None:
    """Defect 7. The standby's replay is paused by its operator while it keeps
    receiving (synchronous commits go on). The primary's host dies: the replica
    does not start a promotion it could not finish (it never stays 'promoting'); it
    refuses, says why and how to force it. Forced, it resumes the replay, promotes
    and takes over with every acknowledged write."""
    service = "pg"
    svc = topo.SERVICES[service]
    node = apair.node(service, svc.replica)
    out = tmp_path / "client.jsonl"
    client = cl.start_client(apair, service, out, 240)
    try:
        cl.wait_for(out, lambda log: len(log.acks) >= 40, 30, "writes")
        with node.connect("postgres") as conn:  # type: ignore[union-attr]
            conn.execute("SELECT pg_wal_replay_pause()")
        paused = time.monotonic()
        cl.wait_for(out, lambda log: sum(a.t > paused for a in log.acks) >= 400, 30, "backlog")
        seen = len(apair.supervisors.log_since_start(service, svc.replica))
        killed_at = time.monotonic()
        apair.kill_host(svc.primary)

        def news() -> str:
            return apair.supervisors.log_since_start(service, svc.replica)[seen:]

        wait_until(lambda: "replay is paused" in news(), 20.0, "the replica to refuse")
        wait_until(lambda: "failover_refused" in news(), 20.0, "a loud refusal")
        log = news()
        assert "--force" in log, log[-2000:]
        st = supervisor_status(apair, service, svc.replica)["local"]
        assert st["role"] == "replica" and st["database"]["replay_paused"], st
        assert "PersistState" not in log  # no epoch persisted, no promotion started
        res = _dbha(
            apair, service, svc.replica, "failover", "--to", svc.replica, "--force", timeout=60
        )
        assert res.returncode == 0, res.stdout + res.stderr
        cl.wait_for(
            out,
            lambda log: sum(a.t > killed_at and a.node == svc.replica for a in log.acks) >= 20,
            30,
            "writes on the new primary",
        )
        apair.heal()
    finally:
        cl.stop_client(client)
    verdict = cl.verify(apair, service, cl.read_log(out), fault_at=killed_at)
    print(f"\npaused replay, forced failover: {verdict.summary()}")
    assert verdict.primary == svc.replica
    assert verdict.missing == {h: [] for h in verdict.missing}, verdict.summary()


# ------------------------------------- an isolated primary's errant commits


def test_8_an_isolated_primarys_unacknowledged_commits_rejoin_without_force(
    apair: Lab, tmp_path: Path, record_property: RecordProperty
) -> None:
    """Defect 8. The MariaDB primary is isolated under a writing client: it fences
    itself, the replica takes over. The commit that was in flight (in the old
    primary's binlog, never acknowledged: lossless semi-sync) is errant there.
    dbha resync without --force sets it aside and rejoins, saying that it was never
    acknowledged; every acknowledged write is on both afterwards."""
    service = "mariadb"
    svc = topo.SERVICES[service]
    o = scenarios.run(
        apair,
        service,
        "isolate",
        lambda: apair.isolate(svc.primary),
        tmp_path / "client.jsonl",
        expect_takeover=True,
    )
    _common(o)
    wait_until(
        lambda: bool(supervisor_status(apair, service, svc.primary)["local"]["needs_resync"]),
        15.0,
        "the old primary to need a resync",
    )
    started = time.monotonic()
    res = _dbha(apair, service, svc.primary, "resync", timeout=300)
    took = time.monotonic() - started
    print(f"\nresync without --force: exit {res.returncode} in {took:.1f} s: {res.stdout.strip()}")
    record_property("mariadb_resync_after_isolation_s", round(took, 1))
    assert res.returncode == 0, res.stdout + res.stderr
    log = apair.supervisors.log_since_start(service, svc.primary)
    assert "refused" not in res.stdout, res.stdout
    wait_until(
        lambda: apair.node(service, svc.primary).status().get("streaming") is True,
        30.0,
        "the old primary to stream from the new one",
    )
    verdict = cl.verify(apair, service, o.log)
    assert verdict.missing == {h: [] for h in verdict.missing}, verdict.summary()
    assert "never acknowledged" in log or "repoint" in log or "follow" in log, log[-3000:]


# ------------------------- a forced resync while the new primary is saturated


class _Waiters:
    """Application commits on a node's own socket, each on a connection of its own
    (read timeout far past the test), opened until the server refuses one because
    its connection slots are full. ``acked``: the tokens whose commit returned."""

    def __init__(self, node: MariaNode) -> None:
        self.node = node
        self.acked: list[str] = []
        self.tokens: list[str] = []
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()

    def fill(self, most: int) -> str:
        """Open commits until one connection is refused; that refusal's text."""
        password = self.node.layout.secret("mariadb-app")
        for i in range(most):
            try:
                conn = pymysql.connect(
                    unix_socket=str(self.node.socket),
                    user="app",
                    password=password,
                    database="app",
                    connect_timeout=3,
                    read_timeout=280,
                    autocommit=True,
                )
            except pymysql.MySQLError as exc:
                return str(exc)
            token = f"d9-wait-{i}-{secrets.token_hex(4)}"
            self.tokens.append(token)
            t = threading.Thread(target=self._commit, args=(conn, token), daemon=True)
            t.start()
            self.threads.append(t)
        raise AssertionError(f"{most} connections opened and none refused")

    def _commit(self, conn: pymysql.connections.Connection, token: str) -> None:
        try:
            with conn.cursor() as cur:
                cur.execute("INSERT INTO dbha_lab_proof (token) VALUES (%s)", (token,))
            with self.lock:
                self.acked.append(token)
        except pymysql.MySQLError:
            pass
        finally:
            with contextlib.suppress(pymysql.MySQLError):
                conn.close()

    def join(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))


def _set_max_connections(node: MariaNode, n: int) -> None:
    """As root on the socket; retried while the one connection past the limit that
    MariaDB keeps for an administrator is in use (dbha's probe uses it too)."""

    def done() -> bool:
        res = node._client(f"SET GLOBAL max_connections = {n};", check=False)
        return res.returncode == 0

    wait_until(done, 20.0, f"max_connections = {n} on {node.host}", 0.2)


def test_9_a_forced_resync_while_the_new_primary_is_saturated_is_bounded(
    apair: Lab, record_property: RecordProperty
) -> None:
    """Defect 9. MariaDB, strict synchronous commit (the default). The primary is
    isolated, the replica takes over, and every commit on it waits for a replica
    that is not there, each holding a connection slot, until the server refuses
    more. ``dbha resync --force`` on the old primary, whose receiver is refused
    by the saturated server, fails within its bound and names the refusal (it used
    to wait on "still connecting" for over 180 s). Once the slots are freed a
    second forced resync rejoins; the waiting commits return, and every one that
    returned is on both nodes."""
    service = "mariadb"
    svc = topo.SERVICES[service]
    old, new = svc.primary, svc.replica
    with strict_sync(apair, service):
        wait_until(lambda: _mark(apair, service) is None, 20.0, "the strict pair in sync")
        apair.isolate(old)
        wait_until(
            lambda: supervisor_status(apair, service, new)["local"]["role"] == "primary",
            30.0,
            f"{new} to take over",
            0.3,
        )
        apair.heal()
        wait_until(
            lambda: supervisor_status(apair, service, old)["local"]["role"] == "fenced",
            30.0,
            f"{old} to stay fenced",
            0.3,
        )
        node = apair.node(service, new)
        assert isinstance(node, MariaNode)
        waiters = _Waiters(node)
        _set_max_connections(node, 12)
        try:
            refusal = waiters.fill(40)
            print(f"\n{len(waiters.tokens)} commits waiting; the next connection: {refusal}")
            assert "1040" in refusal or "Too many connections" in refusal, refusal
            check = _check(apair, service, new)
            assert check.returncode == 2 and "blocked" in check.stdout, check.stdout
            started = time.monotonic()
            res = _dbha(apair, service, old, "resync", "--force", timeout=300)
            took = time.monotonic() - started
            said = (res.stdout + res.stderr).strip()
            print(f"forced resync, slots full: exit {res.returncode} in {took:.1f} s: {said}")
            record_property("mariadb_forced_resync_saturated_s", round(took, 1))
            assert res.returncode != 0, said
            assert said.startswith(("dbha: failed:", "failed:")), said
        finally:
            _set_max_connections(node, 151)
        started = time.monotonic()
        res = _dbha(apair, service, old, "resync", "--force", timeout=300)
        took = time.monotonic() - started
        print(f"forced resync, slots free: exit {res.returncode} in {took:.1f} s")
        record_property("mariadb_forced_resync_free_s", round(took, 1))
        assert res.returncode == 0, res.stdout + res.stderr
        waiters.join(60.0)
        print(f"{len(waiters.acked)} of {len(waiters.tokens)} waiting commits returned")
        assert waiters.acked, "no waiting commit returned once the replica was back"
        other = apair.node(service, old)
        wait_until(
            lambda: all(other.has_token(t) for t in waiters.acked),
            30.0,
            "every returned commit on the rejoined node",
        )
        assert all(node.has_token(t) for t in waiters.acked)


@pytest.mark.parametrize("service", SERVICES)
def test_preflight_checks_both_servers_and_the_host_with_the_documented_grants(
    apair: Lab, service: str
) -> None:
    """dbha preflight on the primary, run as an operator would: it reaches both
    servers (dbha's account with only the grants of docs/grants.md) and the host,
    finds nothing failing on a pair its supervisors run, and says the grants are
    there on both servers."""
    svc = topo.SERVICES[service]
    res = _dbha(apair, service, svc.primary, "preflight", "--json", timeout=60)
    got = json.loads(res.stdout)
    print("\n" + "\n".join(f"{i['level']:4} {i['where']}: {i['what']}" for i in got["items"]))
    assert res.returncode in (0, 1) and got["code"] == res.returncode, res.stderr
    assert [i for i in got["items"] if i["level"] == "fail"] == []
    where = {i["where"].split()[0] for i in got["items"]}
    assert where == {"a", "b", "host"}, where
    grants = [i for i in got["items"] if "grants" in i["what"] and i["level"] == "ok"]
    assert len(grants) == 2, got["items"]


# ------------------------------------------------- the operator's switchover


def _switchover(
    lab: Lab, service: str, host: str, *more: str, timeout: float = 150
) -> tuple[int, dict[str, object]]:
    """``dbha switchover --json MORE`` run inside ``host``: its exit code and outcome."""
    res = _dbha(lab, service, host, "switchover", "--json", *more, timeout=timeout)
    lines = res.stdout.strip().splitlines()
    assert lines, f"no outcome (exit {res.returncode}): {res.stderr}"
    return res.returncode, dict(json.loads(lines[-1]))


def _events(lab: Lab, service: str, host: str) -> list[dict[str, object]]:
    res = _dbha(lab, service, host, "history", "--json", "-n", "1000")
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def _roles(lab: Lab, service: str) -> dict[str, tuple[object, object]]:
    out = {}
    for host in topo.DB_HOSTS:
        st = supervisor_status(lab, service, host)["local"]
        out[host] = (st["role"], st["epoch"])
    return out


@contextlib.contextmanager
def _lagging(lab: Lab, service: str) -> Iterator[None]:
    """The replica stays an eligible, receiving replica but applies nothing while
    more than the lag bound is written on the primary (PostgreSQL: replay paused
    and about 4 MB of WAL, bound 1 MiB; MariaDB: the SQL thread stopped and 150
    transactions, bound 100)."""
    svc = topo.SERVICES[service]
    primary, replica = lab.node(service, svc.primary), lab.node(service, svc.replica)
    if service == "pg":
        with replica.connect("postgres") as conn:  # type: ignore[union-attr]
            conn.execute("SELECT pg_wal_replay_pause()")
        try:
            with primary.connect("postgres") as conn:  # type: ignore[union-attr]
                conn.execute("CREATE TABLE IF NOT EXISTS dbha_lag (x text)")
                conn.execute(
                    "INSERT INTO dbha_lag SELECT repeat('x', 1000) FROM generate_series(1, 4000)"
                )
            yield
        finally:
            with replica.connect("postgres") as conn:  # type: ignore[union-attr]
                conn.execute("SELECT pg_wal_replay_resume()")
            with primary.connect("postgres") as conn:  # type: ignore[union-attr]
                conn.execute("DROP TABLE IF EXISTS dbha_lag")
        return
    assert isinstance(replica, MariaNode) and isinstance(primary, MariaNode)
    replica._client("STOP SLAVE SQL_THREAD;")
    try:
        statements = "".join(f"INSERT INTO dbha_lag VALUES ({i});" for i in range(150))
        primary._client(f"CREATE DATABASE IF NOT EXISTS dbha_lag; USE dbha_lag; "
                        f"CREATE TABLE IF NOT EXISTS dbha_lag (x int); {statements}")  # fmt: skip
        yield
    finally:
        replica._client("START SLAVE SQL_THREAD;")
        primary._client("DROP DATABASE IF EXISTS dbha_lag;")


@pytest.mark.parametrize("service", SERVICES)
def test_14_switchover_checks_first_and_ten_under_load_report_what_the_client_saw(
    apair: Lab, service: str, tmp_path: Path, record_property: RecordProperty
) -> None:
    """Issue 14. ``dbha switchover`` run on either node of the adopted pair:

    - ``--dry-run`` runs every check and changes nothing (same roles, same epochs,
      no event in either history);
    - with maintenance on (set for the pair from one node, shown on both) it is
      refused, saying so; to a replica past the lag bound (for all of
      ``--lag-wait``) it is refused with the lag; each refusal exits 3 and changes
      nothing;
    - ten switchovers back and forth under a client writing through the VIP (and
      one on each node's own address; a replica under that load moves about a
      bound of 100 MariaDB transactions, which ``--lag-wait`` rides out): each
      exits 0 reporting the new primary, its
      epoch and the write pause the supervisors measured; the client's writes
      after each go to the node it reported; nothing acknowledged is lost; the
      two nodes never both acknowledge in one switchover's window; the VIP is never
      on two hosts; both histories list the ten with their durations.
    """
    svc = topo.SERVICES[service]
    started_wall = time.time()
    before, before_events = (
        _roles(apair, service),
        {h: len(_events(apair, service, h)) for h in topo.DB_HOSTS},
    )
    code, out = _switchover(apair, service, svc.replica, "--dry-run")
    assert code == 0 and out["result"] == "done", out
    assert any("nothing was changed" in str(line) for line in out["lines"]), out  # type: ignore[attr-defined]
    assert _roles(apair, service) == before
    assert {h: len(_events(apair, service, h)) for h in topo.DB_HOSTS} == before_events

    res = _dbha(apair, service, svc.replica, "maintenance on")
    assert res.returncode == 0, res.stdout + res.stderr
    try:
        for host in topo.DB_HOSTS:
            wait_until(
                lambda h=host: supervisor_status(apair, service, h)["local"]["maintenance"],
                10.0,
                f"maintenance on {host}",
            )
        for host in topo.DB_HOSTS:  # WARNING on both nodes, whichever set it
            res = _check(apair, service, host)
            assert res.returncode == 1 and "maintenance on" in res.stdout, res.stdout
        code, out = _switchover(apair, service, svc.primary)
        assert code == 3 and "maintenance is on" in str(out["lines"]), out
    finally:
        res = _dbha(apair, service, svc.primary, "maintenance off")
        assert res.returncode == 0, res.stdout + res.stderr
    assert _roles(apair, service) == before

    with _lagging(apair, service):

        def lag_seen() -> bool:
            code, out = _switchover(apair, service, svc.primary, "--dry-run")
            return code == 3 and "behind, more than the bound" in str(out["lines"])

        # the primary sees the lag once the replica has announced its replay position
        wait_until(lag_seen, 20.0, "the replica's lag seen by the primary's checks")
        code, out = _switchover(apair, service, svc.replica, "--yes", "--lag-wait", "2")
        assert code == 3 and "behind, more than the bound" in str(out["lines"]), out
        assert "still past the lag bound after" in str(out["lines"]), out
        print(f"\n{service}: {out['lines']}")
        if service == "pg":
            # Forced past the bound, the replica cannot replay what it lacks while its
            # replay stays paused: it does not take over, and the old primary resumes.
            code, out = _switchover(apair, service, svc.replica, "--yes", "--force")
            assert code == 4 and out["result"] == "rolled back", out
            print(f"pg forced: {out['lines']}")
            wait_until(lambda: _roles(apair, service) == before, 30.0, "the pair as before")
    assert _roles(apair, service) == before

    log_path = tmp_path / "client.jsonl"
    client = cl.start_client(apair, service, log_path, 900)
    node_paths = {h: tmp_path / f"client-{h}.jsonl" for h in topo.DB_HOSTS}
    node_clients = {
        h: cl.start_client(
            apair, service, p, 900, address=topo.HOSTS[h].lan, extra=["--pause", "0.02"]
        )
        for h, p in node_paths.items()
    }
    runs: list[tuple[float, float, dict[str, object]]] = []
    try:
        with scenarios.VipWatch(apair, service) as watch:
            cl.wait_for(log_path, lambda log: len(log.acks) >= 40, 30, "acknowledged writes")
            primary = svc.primary
            for i in range(10):
                other = svc.replica if primary == svc.primary else svc.primary
                host = primary if i % 2 == 0 else other  # run on either node

                def ready(h: str = host) -> bool:
                    return _switchover(apair, service, h, "--dry-run")[0] == 0

                wait_until(ready, 90.0, f"switchover {i + 1} possible")
                t0 = time.monotonic()
                code, out = _switchover(apair, service, host, "--yes", "--to", other)
                t1 = time.monotonic()
                assert code == 0 and out["result"] == "done", out
                assert out["to"] == other and out["old_primary"] == "replica", out
                runs.append((t0, t1, out))
                primary = other
                time.sleep(0.5)
            doubles = watch.doubles()
    finally:
        rc = cl.stop_client(client)
        for c in node_clients.values():
            cl.stop_client(c)
    assert rc == 0, log_path.with_name(log_path.name + ".stdout").read_text()
    log = cl.read_log(log_path)
    verdict = cl.verify(apair, service, log, fault_at=runs[0][0])
    assert verdict.missing == {h: [] for h in verdict.missing}, verdict.summary()
    nodes = {h: cl.read_log(p) for h, p in node_paths.items()}
    for h, nlog in nodes.items():
        nv = cl.verify(apair, service, nlog, fault_at=runs[0][0])
        assert nv.missing == {x: [] for x in nv.missing}, (h, nv.summary())
    assert not doubles, f"the VIP on two hosts: {doubles[:5]}"
    every = sorted(
        [a for a in log.acks] + [a for nl in nodes.values() for a in nl.acks], key=lambda a: a.t
    )
    pauses, reported, took = [], [], []
    for k, (t0, t1, out) in enumerate(runs):
        new, old = str(out["to"]), str(out["from"])
        end = runs[k + 1][0] if k + 1 < len(runs) else log.acks[-1].t
        # never two writers: the old primary's last write before the new one's first
        window = [a for a in every if t0 <= a.t <= end]
        first_new = min((a.t for a in window if a.node == new), default=None)
        last_old = max((a.t for a in window if a.node == old), default=None)
        assert first_new is not None, f"switchover {k + 1}: no write on {new}"
        assert last_old is None or last_old < first_new, (k + 1, last_old, first_new)
        # the client through the VIP saw what the command reported
        after = [a.node for a in log.acks if t1 < a.t <= end]
        assert after and set(after) == {new}, (k + 1, sorted(set(after)), out)
        times = [a.t for a in log.acks if t0 - 1.0 <= a.t <= t1 + 1.0]
        gap = cl.longest_pause(times)
        pauses.append(gap.seconds if gap is not None else 0.0)
        reported.append(out.get("write_pause_s"))
        took.append(t1 - t0)
    assert all(isinstance(r, float) for r in reported), reported
    for host in topo.DB_HOSTS:
        events = [
            e
            for e in _events(apair, service, host)
            if e["node"] == host and float(e["at"]) >= started_wall  # type: ignore[arg-type]
        ]
        done = [e for e in events if e["event"] == "switchover_done"]
        promoted = [e for e in events if e["event"] == "promoted"]
        assert len(done) == 5 and len(promoted) == 5, (host, [e["event"] for e in events])
        assert all(isinstance(e.get("duration_s"), float) for e in done + promoted), events
        assert not [e for e in events if e["event"] == "failover_started"], events
    med = statistics.median
    print(
        f"\n{service}: 10 switchovers; client-visible longest pause median {med(pauses):.3f} s "
        f"max {max(pauses):.3f} s; reported by the supervisors median "
        f"{med(reported):.3f} s max {max(reported):.3f} s; command end to end median "  # type: ignore[type-var, arg-type]
        f"{med(took):.2f} s max {max(took):.2f} s"
    )
    for k, (p, r, t) in enumerate(zip(pauses, reported, took, strict=True)):
        print(f"  {k + 1}: client {p:.3f} s, supervisors {r:.3f} s, command {t:.2f} s")
    record_property(f"{service}_switchover_client_pause_s", [round(p, 3) for p in pauses])
    record_property(f"{service}_switchover_reported_pause_s", reported)
    record_property(f"{service}_switchover_command_s", [round(t, 2) for t in took])
