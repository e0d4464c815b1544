"""The fault-test client, run in host c against the lab without supervisors.

It points at the primary's own LAN address (there is no VIP holder without
supervisors). Times are measured and printed, never asserted.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dbha.lab import client as cl
from dbha.lab import topology as topo
from dbha.lab.core import Lab
from dbha.lab.maria import MariaNode

NOBODY = "198.18.0.99"  # a LAN address no host has


def _run_through(
    lab: Lab, service: str, out: Path, fault: Callable[[], object]
) -> tuple[cl.ClientLog, float, float]:
    """Client writing to the primary; inject ``fault`` once it writes, heal once it
    failed, stop it once it writes again. Returns the log, fault and heal times."""
    primary = topo.SERVICES[service].primary
    client = cl.start_client(lab, service, out, 120, address=topo.HOSTS[primary].lan)
    try:
        cl.wait_for(out, lambda log: len(log.acks) >= 50, 30, "50 acknowledged writes")
        time.sleep(random.uniform(0, 0.3))  # not always the same phase of the write loop
        fault_at = time.monotonic()
        fault()
        cl.wait_for(out, lambda log: any(f.t >= fault_at for f in log.failures), 30, "a failure")
        heal_at = time.monotonic()
        lab.heal()
        cl.wait_for(out, lambda log: sum(a.t > heal_at for a in log.acks) >= 50, 30, "new acks")
    finally:
        rc = cl.stop_client(client)
    assert rc == 0, (out.with_name(out.name + ".stdout")).read_text()
    return cl.read_log(out), fault_at, heal_at


@pytest.mark.parametrize("service", list(topo.SERVICES))
def test_the_client_records_a_kill_db_and_heal_and_every_acknowledged_row_is_there(
    healthy_lab: Lab, service: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """The primary's server is SIGKILLed under the client's writes, then healed: the
    client records failures, then acknowledged writes again, and the verifier finds
    every acknowledged row on the primary and on the replica."""
    lab = healthy_lab
    primary, replica = topo.SERVICES[service].primary, topo.SERVICES[service].replica
    log, fault_at, heal_at = _run_through(
        lab, service, tmp_path / "client.jsonl", lambda: lab.kill_db(primary, service)
    )
    assert log.stop_reason == "signal" and log.unreadable == 0
    assert [a.seq for a in log.acks] == sorted({a.seq for a in log.acks})  # increasing, unique
    assert not {a.seq for a in log.acks} & {f.seq for f in log.failures}
    assert any(a.t < fault_at for a in log.acks)
    failed = [f for f in log.failures if f.t >= fault_at]
    assert failed and {f.phase for f in failed} <= {"connect", "write", "commit"}
    assert any(a.t > heal_at for a in log.acks)

    verdict = cl.verify(lab, service, log, fault_at=fault_at)
    assert (verdict.primary, verdict.replicas) == (primary, (replica,))
    assert verdict.missing == {primary: [], replica: []}, verdict.summary()
    assert verdict.node_changes == []  # one server all along
    assert verdict.recovery is not None and verdict.outage is not None
    print(f"\n{service}: {verdict.summary()}")
    record_property(f"{service}_fault_to_first_write_s", round(verdict.recovery, 3))
    record_property(f"{service}_write_pause_s", round(verdict.outage.seconds, 3))
    record_property(f"{service}_acks_per_s", round(len(log.acks) / (log.stopped - log.started), 1))  # type: ignore[operator]


@pytest.mark.parametrize("service", list(topo.SERVICES))
def test_the_verifier_finds_an_acknowledged_row_that_is_gone_or_altered(
    healthy_lab: Lab, service: str, tmp_path: Path
) -> None:
    """After a short run, one acknowledged row is deleted and another altered on the
    primary (they replicate): the verifier names exactly those two, on both nodes."""
    lab = healthy_lab
    primary, replica = topo.SERVICES[service].primary, topo.SERVICES[service].replica
    out = tmp_path / "client.jsonl"
    client = cl.start_client(lab, service, out, 60, address=topo.HOSTS[primary].lan)
    try:
        cl.wait_for(out, lambda log: len(log.acks) >= 20, 30, "20 acknowledged writes")
    finally:
        cl.stop_client(client)
    log = cl.read_log(out)
    assert cl.verify(lab, service, log).missing == {primary: [], replica: []}
    gone, altered = log.acks[3].seq, log.acks[7].seq
    node = lab.node(service, primary)
    delete = f"DELETE FROM {cl.TABLE} WHERE run = %s AND seq = %s"
    update = f"UPDATE {cl.TABLE} SET token = 'x' WHERE run = %s AND seq = %s"
    if isinstance(node, MariaNode):
        node.query(delete, (log.run, gone), user="app", database="app")
        node.query(update, (log.run, altered), user="app", database="app")
    else:
        with node.connect("app", "app") as c:
            c.execute(delete, (log.run, gone))
            c.execute(update, (log.run, altered))
    verdict = cl.verify(lab, service, log, replica_timeout=3.0)
    assert verdict.missing == {primary: [gone, altered], replica: [gone, altered]}
    assert verdict.lost


@pytest.mark.parametrize("service", list(topo.SERVICES))
def test_with_nobody_at_the_address_the_client_only_fails_each_attempt_bounded(
    lab: Lab, service: str, tmp_path: Path
) -> None:
    """Nobody answers at the address: no ack, only connect failures, and several of
    them (each attempt is bounded, far below the ARP timeout of about 3 s), until its
    duration ends."""
    out = tmp_path / "client.jsonl"
    client = cl.start_client(lab, service, out, 3.0, address=NOBODY)
    assert client.wait(30) == 0
    log = cl.read_log(out)
    assert log.acks == () and log.stop_reason == "duration"
    assert len(log.failures) >= 2 and {f.phase for f in log.failures} == {"connect"}
    assert all(f.seq is None for f in log.failures)
