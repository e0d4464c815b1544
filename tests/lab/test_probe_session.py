"""The probe keeps one session on the real servers, and ``close`` ends it.

An idle supervisor probes its database every probe interval: a login per probe
was most of its CPU. These cases watch the server's own list of sessions while
one driver probes many times: one session serves every probe, it is replaced
after the server ended it, and the driver's ``close`` ends it. Timings of a
probe on the kept session are printed (reported, not asserted).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest

from dbha.db.base import DatabaseDriver
from dbha.lab.core import Lab
from dbha.lab.maria import MariaNode
from dbha.lab.pg import PgNode
from tests.lab.drivers import pg_driver
from tests.lab.drivers_mysql import mariadb_driver

PROBES = 20
T = 5.0


def pg_probe_sessions(lab: Lab) -> set[int]:
    """Backend PIDs of the probe sessions on a's PostgreSQL."""
    with PgNode(lab.prefix, lab.layout, "a").connect() as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'dbha-probe'"
        ).fetchall()
    return {int(r["pid"]) for r in rows}


def maria_dbha_sessions(lab: Lab) -> set[int]:
    """Connection ids of user dbha on b's MariaDB, but the one asking."""
    rows = MariaNode(lab.prefix, lab.layout, "b").query(
        "SELECT ID AS id FROM information_schema.PROCESSLIST"
        " WHERE USER = 'dbha' AND ID <> CONNECTION_ID()"
    )
    return {int(r["id"]) for r in rows}


def end_session(lab: Lab, engine: str, ident: int) -> None:
    if engine == "postgresql":
        with PgNode(lab.prefix, lab.layout, "a").connect() as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (ident,))
    else:
        MariaNode(lab.prefix, lab.layout, "b").query("KILL CONNECTION %s", (ident,))


CASES: dict[str, tuple[Callable[[Lab], DatabaseDriver], Callable[[Lab], set[int]]]] = {
    "postgresql": (lambda lab: pg_driver(lab, "a"), pg_probe_sessions),
    "mariadb": (lambda lab: mariadb_driver(lab, "b"), maria_dbha_sessions),
}


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"{what}: not true within {timeout:g} s")
        time.sleep(0.05)


@pytest.mark.parametrize("engine", list(CASES))
def test_one_session_serves_every_probe_and_close_ends_it(healthy_lab: Lab, engine: str) -> None:
    """PROBES probes from one driver open one session on the primary; after the
    server ends it, the next probe still answers (on a new session); close() ends
    the session the driver kept."""
    make, sessions = CASES[engine]
    before = sessions(healthy_lab)
    drv = make(healthy_lab)
    try:
        took = []
        for _ in range(PROBES):
            t0 = time.monotonic()
            st = drv.probe(T)
            took.append(time.monotonic() - t0)
            assert st.reachable and st.writable, st
        new = sessions(healthy_lab) - before
        assert len(new) == 1, f"{len(new)} new sessions for {PROBES} probes"
        print(
            f"\n{engine}: probe on the kept session: median "
            f"{statistics.median(took[1:]) * 1000:.2f} ms (first, connecting: "
            f"{took[0] * 1000:.1f} ms)"
        )
        (kept,) = new
        end_session(healthy_lab, engine, kept)
        wait_for(lambda: kept not in sessions(healthy_lab), "the ended session gone")
        st = drv.probe(T)  # the kept session is gone: this probe connects anew
        assert st.reachable and st.writable, st
        again = sessions(healthy_lab) - before
        assert len(again) == 1 and kept not in again
    finally:
        drv.close()
    wait_for(lambda: not (sessions(healthy_lab) - before), "close() to end the session")
