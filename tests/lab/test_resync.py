"""``dbha resync`` run as an operator runs it, inside a database host, against real
supervisors and servers (the demo covers the plain rejoins: pg_rewind of a dead
PostgreSQL primary, GTID re-pointing of a killed MariaDB primary).

Here: a resync the supervisor must refuse (on the primary; while the peer is not
heard) changes nothing and says why; a former MariaDB primary holding a
transaction the new primary lacks stays fenced without ``--force``, and with it
keeps that transaction aside and is re-cloned.

A refused resync exits non-zero with the reason on stderr; the answer's first
word says what happened ("refused: resync: ...").
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from dbha.lab import topology as topo
from dbha.lab.core import Lab
from dbha.lab.maria import MariaNode
from dbha.lab.wait import wait_until
from tests.lab.helpers import as_built, ns_exec, supervised_lab, supervisor_status

SERVICES = list(topo.SERVICES)


@pytest.fixture(scope="module")
def rlab(lab: Lab) -> Iterator[Lab]:
    """A lab of this module's own, synchronous, with dbha supervisors."""
    with supervised_lab(lab, "r") as other:
        yield other


@pytest.fixture
def pair(rlab: Lab) -> Iterator[Lab]:
    """The module's lab with both pairs as built; the pairs rebuilt after the test
    if it moved them."""
    rlab.heal()
    for service in SERVICES:
        if not as_built(rlab, service):
            rlab.rebuild_service(service)
    yield rlab
    rlab.heal()


def _resync(lab: Lab, service: str, host: str, *extra: str) -> subprocess.CompletedProcess[str]:
    cfg = str(lab.supervisors.paths(service, host).config)
    return ns_exec(
        lab, host, sys.executable, "-m", "dbha", "resync", "-c", cfg, *extra, timeout=120
    )


def _unchanged(lab: Lab, service: str) -> None:
    """The pair is as built: primary writable with the VIP, replica streaming from it."""
    svc = topo.SERVICES[service]
    primary = lab.node(service, svc.primary).status()
    replica = lab.node(service, svc.replica).status()
    assert primary["role"] == "primary" and primary["writable"], primary
    assert replica["role"] == "replica" and replica["streaming"], replica
    assert replica["upstream"] == topo.HOSTS[svc.primary].lan, replica
    assert lab.vip_holders(service) == [svc.primary]


@pytest.mark.parametrize("service", SERVICES)
def test_resync_on_the_primary_is_refused_and_changes_nothing(pair: Lab, service: str) -> None:
    svc = topo.SERVICES[service]
    res = _resync(pair, service, svc.primary)
    assert "refused: resync: this node is primary" in res.stdout + res.stderr
    _unchanged(pair, service)
    st = supervisor_status(pair, service, svc.primary)["local"]
    assert (st["role"], st["epoch"], st["needs_resync"]) == ("primary", 0, False)


@pytest.mark.parametrize("service", SERVICES)
def test_resync_while_the_peer_is_not_heard_is_refused(pair: Lab, service: str) -> None:
    """The primary's supervisor is stopped (cleanly: its database keeps serving): the
    replica hears no primary to rejoin, refuses, and keeps streaming."""
    svc = topo.SERVICES[service]
    pair.supervisors.stop(service, svc.primary)

    def deaf() -> bool:
        paths = supervisor_status(pair, service, svc.replica)["local"]["paths"]
        return not any(p["up"] for p in paths.values())

    try:
        wait_until(
            deaf,
            10.0,
            f"{svc.replica} to hear its peer no more",
            0.2,
        )
        res = _resync(pair, service, svc.replica)
        assert "refused: resync: the peer is not a reachable primary" in res.stdout + res.stderr
        replica = pair.node(service, svc.replica).status()
        assert replica["role"] == "replica" and replica["streaming"], replica
        assert supervisor_status(pair, service, svc.replica)["local"]["role"] == "replica"
    finally:
        pair.supervisors.start(service, svc.primary, "run")
        pair.supervisors.wait_started(service, svc.primary, "run")
        wait_until(lambda: as_built(pair, service), 30.0, f"the {service} pair as built", 0.3)


def test_a_refused_resync_exits_non_zero_and_says_why_on_stderr(pair: Lab) -> None:
    res = _resync(pair, "pg", "a")
    assert res.returncode == 1, res.stdout
    assert "refused: resync: this node is primary" in res.stderr


# ----------------------------------------------------------------- history


@pytest.mark.parametrize("service", SERVICES)
def test_history_lists_the_events_of_both_nodes(pair: Lab, service: str) -> None:
    """``dbha history --json`` on the primary: its own history file (0600) and the
    replica's, asked of its supervisor; each supervisor's start is there, oldest
    first, with its epoch and role."""
    svc = topo.SERVICES[service]
    cfg = str(pair.supervisors.paths(service, svc.primary).config)
    res = ns_exec(
        pair, svc.primary, sys.executable, "-m", "dbha", "history", "-c", cfg, "--json",
        timeout=30,
    )  # fmt: skip
    assert res.returncode == 0 and "not shown" not in res.stderr, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    started = {e["node"] for e in events if e["event"] == "started"}
    assert started == {svc.primary, svc.replica}, events[-10:]
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    assert all(isinstance(e["epoch"], int) and e["role"] for e in events), events[-3:]
    own = pair.supervisors.paths(service, svc.primary).state_dir / "history.jsonl"
    assert own.stat().st_mode & 0o777 == 0o600


# ------------------------------------------------- a former primary with errant data


@dataclass(frozen=True)
class Errant:
    """A former MariaDB primary (b) holding a transaction the new primary (a) lacks,
    after a plain ``dbha resync`` on it."""

    token: str  # the row only b has
    plain: subprocess.CompletedProcess[str]  # what `dbha resync` (no --force) answered
    log: str  # b's supervisor log from the resync on
    status: dict[str, Any]  # b's supervisor, after it
    db: dict[str, Any]  # b's server, after it


@pytest.fixture(scope="module")
def errant(rlab: Lab) -> Iterator[Errant]:
    """b's MariaDB server is killed: a takes over. Healed, b comes back fenced, needing
    a resync; a row written on it then (as the dbha account, which read_only does not
    stop) is a transaction a lacks. `dbha resync` is run on b without --force.
    The pair is rebuilt at the end."""
    rlab.heal()
    if not as_built(rlab, "mariadb"):
        rlab.rebuild_service("mariadb")
    try:
        rlab.kill_db("b", "mariadb")
        wait_until(lambda: rlab.vip_holders("mariadb") == ["a"], 30.0, "a to take over", 0.2)
        rlab.heal()
        wait_until(
            lambda: bool(supervisor_status(rlab, "mariadb", "b")["local"]["needs_resync"]),
            20.0,
            "b to say it needs a resync",
            0.3,
        )
        b = rlab.node("mariadb", "b")
        assert isinstance(b, MariaNode)
        token = secrets.token_hex(8)
        # Fenced, out of the pair: its commits must not wait for a replica it has not.
        b.query("SET GLOBAL rpl_semi_sync_master_enabled = OFF")
        b.query("INSERT INTO app.dbha_lab_proof (token) VALUES (%s)", (token,), user="dbha")
        mark = len(rlab.supervisors.log_since_start("mariadb", "b"))
        plain = _resync(rlab, "mariadb", "b")
        wait_until(
            lambda: "resync: " in rlab.supervisors.log_since_start("mariadb", "b")[mark:],
            5.0,
            "b's supervisor to log its decision",
            0.1,
        )
        yield Errant(
            token=token,
            plain=plain,
            log=rlab.supervisors.log_since_start("mariadb", "b")[mark:],
            status=supervisor_status(rlab, "mariadb", "b")["local"],
            db=b.status(),
        )
    finally:
        rlab.heal()
        rlab.rebuild_service("mariadb")


def test_a_former_primary_with_errant_transactions_stays_fenced_without_force(
    rlab: Lab, errant: Errant
) -> None:
    # refused as unsafe (dbha.errors.Refused), not failed: nothing was changed on b
    assert "Rejoin refused" in errant.log and "errant" in errant.log, errant.log
    assert errant.status["needs_resync"] and errant.status["epoch"] == 0, errant.status
    assert errant.db["role"] == "primary" and not errant.db["writable"], errant.db


def test_a_failed_resync_exits_non_zero_and_names_the_errant_transactions(
    errant: Errant,
) -> None:
    assert errant.plain.returncode == 1, errant.plain.stdout
    assert "errant" in errant.plain.stderr


def test_a_forced_resync_keeps_the_errant_transaction_aside_and_reclones(
    rlab: Lab, errant: Errant
) -> None:
    res = _resync(rlab, "mariadb", "b", "--force")
    assert res.returncode == 0, res.stdout + res.stderr
    a, b = rlab.node("mariadb", "a"), rlab.node("mariadb", "b")

    def following() -> bool:
        st = b.status()
        sup = supervisor_status(rlab, "mariadb", "b")["local"]
        return (
            st["role"] == "replica"
            and bool(st.get("streaming"))
            and st.get("upstream") == topo.HOSTS["a"].lan
            and (sup["role"], sup["epoch"], sup["needs_resync"]) == ("replica", 1, False)
        )

    wait_until(following, 60.0, "b to replicate from a, resynced", 0.3)
    assert not b.has_token(errant.token) and not a.has_token(errant.token)
    log = rlab.supervisors.log_since_start("mariadb", "b")
    kept = [ln for ln in log.splitlines() if "event rejoined: by reclone; set aside: " in ln]
    assert kept, log[-3000:]
    files = kept[-1].split("set aside: ", 1)[1].split(", ")
    errant_sql = next(f for f in files if f.endswith("errant-binlog.sql"))
    with open(errant_sql, encoding="utf-8", errors="replace") as f:
        assert errant.token in f.read()  # the row b alone had is kept, not lost
