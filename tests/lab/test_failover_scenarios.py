"""The supervisors against real faults: both engines, synchronous replication, a
client in host c writing through the VIP the whole time.

One lab with running supervisors serves the module (the session lab stays
without supervisors for the driver tests). Each scenario asserts that no
acknowledged write was lost, that the client never had two writable nodes
(it moved from the old primary to the new one at most once, and never two
reachable hosts held the VIP at once), and that the VIP ends on the one
writable node. Times are printed and recorded, never asserted.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dbha.errors import LabError
from dbha.lab import client as cl
from dbha.lab import haproxy as hx
from dbha.lab import net
from dbha.lab import scenario as scenarios
from dbha.lab import topology as topo
from dbha.lab.core import Lab
from dbha.lab.wait import wait_until
from tests.lab.helpers import as_built, ns_exec, supervised_lab, supervisor_status

SERVICES = list(topo.SERVICES)
RecordProperty = Callable[[str, object], None]


PAIRS = {"dbha": "f", "operator": "fo"}  # how the pairs are built -> lab prefix suffix
DEADLINE = 1.0  # the configs' fence.self_fence_deadline_ms, in seconds


@pytest.fixture(scope="module", params=list(PAIRS))
def slab(lab: Lab, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A second lab, synchronous, with dbha supervisors on both hosts: once with the
    pairs built by dbha's lab, once with pairs built as their operators would
    (docs/lab.md): every scenario runs on both."""
    with supervised_lab(lab, PAIRS[request.param], pairs=request.param, haproxy=True) as other:
        yield other


@pytest.fixture
def pair(slab: Lab) -> Iterator[Lab]:
    """The scenario lab with both pairs as built (rebuilt if a scenario moved them)."""
    slab.heal()
    for service in SERVICES:
        if not as_built(slab, service):
            slab.rebuild_service(service)
            continue
        try:  # a replica-not-in-sync mark left by the last scenario clears once it caught up
            wait_until(lambda s=service: _mark(slab, s) is None, 20.0, f"{service} in sync")
        except LabError:
            slab.rebuild_service(service)
    st = slab.status()
    assert st["healthy"], st["problems"]
    yield slab
    _print_logs(slab)  # shown by pytest when the test failed
    slab.heal()


def _mark(lab: Lab, service: str) -> int | None:
    mark = supervisor_status(lab, service, topo.SERVICES[service].primary)["local"]["sync_mark"]
    return None if mark is None else int(mark)


def _print_logs(lab: Lab, lines: int = 30) -> None:
    """The supervisors' latest decisions (repeated serving/following lines left out)."""
    quiet = ("primary-serving: primary: serving", "replica-follow: replica: following")
    for service in SERVICES:
        for host in topo.DB_HOSTS:
            text = lab.supervisors.log_since_start(service, host).splitlines()
            shown = [t for t in text if not t.endswith(quiet)][-lines:]
            print(f"--- {service} supervisor on {host}:", *shown, sep="\n")


def _common(o: scenarios.ScenarioOutcome, record_property: RecordProperty) -> None:
    """What every scenario must show, whatever the fault."""
    v = o.verdict
    print(f"\n{o.line()}")
    if o.recovery is not None:
        record_property(f"{o.service}_{o.fault}_fault_to_first_write_s", round(o.recovery, 3))
    assert v.missing == {h: [] for h in v.missing}, v.summary()
    assert not o.doubles, f"two reachable VIP holders at once: {o.doubles[:5]}"
    assert o.vip_after == [v.primary], (o.vip_after, v.primary)
    assert len(v.node_changes) <= 1, v.node_changes  # never back and forth
    assert o.log.unreadable == 0
    # The clients on each node's own address: nothing they were told was committed
    # is lost, and no node acknowledged writes while another had been serving for
    # longer than the fence deadline.
    for host, nv in o.node_verdicts.items():
        assert nv.missing == {h: [] for h in nv.missing}, (host, nv.summary())
    assert o.writers_overlap(DEADLINE) == [], o.writers_overlap(DEADLINE)[:5]


def _took_over(o: scenarios.ScenarioOutcome) -> None:
    svc = topo.SERVICES[o.service]
    v = o.verdict
    assert v.primary == svc.replica
    assert [(a, b) for _, a, b in v.node_changes] == [(svc.primary, svc.replica)]
    # The old primary is out of the pair: fenced (read-only), already a replica, or
    # stopped by its lease keeper (a hung server whose lease ran out while its
    # supervisor handed over is stopped once it runs again).
    stopped = o.lab_down is not None and svc.primary in o.lab_down
    assert svc.primary in v.fenced or svc.primary in v.replicas or stopped, v.summary()


def _stayed(o: scenarios.ScenarioOutcome) -> None:
    svc = topo.SERVICES[o.service]
    assert o.verdict.primary == svc.primary
    assert o.verdict.node_changes == []
    assert o.served_by_after_fault == [svc.primary]


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("fault", scenarios.TAKEOVER_FAULTS)
def test_1_to_3_the_primary_host_dies_or_its_database_is_killed_or_hangs(
    pair: Lab, service: str, fault: str, tmp_path: Path, record_property: RecordProperty
) -> None:
    """1 kill-host, 2 kill-db (its supervisor alive), 3 stop-db: the replica takes over."""
    o = scenarios.run(
        pair,
        service,
        fault,
        scenarios.primary_fault(pair, service, fault),
        tmp_path / "client.jsonl",
        expect_takeover=True,
    )
    _common(o, record_property)
    _took_over(o)


@pytest.mark.parametrize("service", SERVICES)
def test_4_the_private_link_is_cut_and_nothing_fails_over(
    pair: Lab, service: str, tmp_path: Path, record_property: RecordProperty
) -> None:
    primary = topo.SERVICES[service].primary

    def path_reported_down() -> None:
        log = pair.supervisors.log_since_start(service, primary)
        assert "path_down" in log and "hb" in log, log[-2000:]

    o = scenarios.run(
        pair,
        service,
        "link-hb",
        lambda: pair.link(primary, "hb", up=False),
        tmp_path / "client.jsonl",
        expect_takeover=False,
        before_heal=path_reported_down,
    )
    _common(o, record_property)
    _stayed(o)
    longest = o.verdict.longest_pause
    print(f"longest write pause: {longest.seconds if longest else 0:.3f} s")


@pytest.mark.parametrize("service", SERVICES)
def test_5_every_heartbeat_path_is_cut_but_the_database_answers(
    pair: Lab, service: str, tmp_path: Path, record_property: RecordProperty
) -> None:
    """Heartbeats blocked on the primary (UDP on the service's heartbeat port, both
    paths) while the LAN still carries the database port: the replica's safety
    check finds the primary's database alive, so nobody fails over, and both
    supervisors say loudly that the heartbeats are broken."""
    svc = topo.SERVICES[service]

    def reported() -> None:
        def loud() -> bool:
            logs = [pair.supervisors.log_since_start(service, h) for h in topo.DB_HOSTS]
            return all("heartbeats are broken" in text for text in logs)

        wait_until(loud, 10.0, "both supervisors to report broken heartbeats")

    o = scenarios.run(
        pair,
        service,
        "block-heartbeats",
        lambda: pair.block(svc.primary, "udp", svc.heartbeat_port),
        tmp_path / "client.jsonl",
        expect_takeover=False,
        before_heal=reported,
    )
    _common(o, record_property)
    _stayed(o)


@pytest.mark.parametrize("service", SERVICES)
def test_6_the_isolated_primary_fences_itself_and_the_replica_takes_over(
    pair: Lab, service: str, tmp_path: Path, record_property: RecordProperty
) -> None:
    svc = topo.SERVICES[service]
    fenced: dict[str, object] = {}

    def isolated_state() -> None:
        # Seen from inside: the isolated primary's database refuses writes and it
        # holds no VIP (its links are down, so only its own view can tell).
        st = pair.node(service, svc.primary).status()
        fenced.update(st)
        assert not st.get("writable"), st

    o = scenarios.run(
        pair,
        service,
        "isolate",
        lambda: pair.isolate(svc.primary),
        tmp_path / "client.jsonl",
        expect_takeover=True,
        before_heal=isolated_state,
    )
    _common(o, record_property)
    _took_over(o)
    assert svc.primary in o.verdict.fenced  # the old one: fenced, out of the pair

    def resync_needed() -> bool:
        return bool(supervisor_status(pair, service, svc.primary)["local"]["needs_resync"])

    wait_until(resync_needed, 10.0, f"{svc.primary} to say it needs a resync")
    primaries = [
        h
        for h in topo.DB_HOSTS
        if pair.node(service, h).status()["role"] == "primary"
        and pair.node(service, h).status().get("writable")
    ]
    assert primaries == [svc.replica]


def _force_failover(lab: Lab, service: str, host: str) -> subprocess.CompletedProcess[str]:
    cfg = str(lab.supervisors.paths(service, host).config)
    argv = [sys.executable, "-m", "dbha", "failover", "-c", cfg, "--to", host, "--force"]
    return ns_exec(lab, host, *argv, timeout=60)


@pytest.mark.parametrize("service", SERVICES)
def test_7_a_replica_behind_the_primary_does_not_promote_until_an_operator_forces_it(
    pair: Lab, service: str, tmp_path: Path, record_property: RecordProperty
) -> None:
    """The replica's database hangs; the primary, after the replica has been gone long
    enough, stops waiting for it (asynchronous commits, a replica-not-in-sync mark in
    its beats) and writes go on. Then the primary host dies and the replica's database
    resumes, behind what was acknowledged: the replica does not promote, and says why
    loudly. An operator forces the failover: the replica takes over; every write
    acknowledged while the replica was in sync is there, and only writes acknowledged
    after the mark may be missing (the loss the operator accepted)."""
    svc = topo.SERVICES[service]
    out = tmp_path / "client.jsonl"
    client = cl.start_client(pair, service, out, 240)
    try:
        cl.wait_for(out, lambda log: len(log.acks) >= 40, 30, "acknowledged writes")
        hung_at = time.monotonic()
        replica_pids = pair.stop_db(svc.replica, service)
        # Commits wait for the hung replica, then the primary falls back: writes resume.
        cl.wait_for(
            out,
            lambda log: sum(a.t > hung_at + 0.5 for a in log.acks) >= 40,
            30,
            "writes to resume on the primary without the replica",
        )
        assert "sync_fallback" in pair.supervisors.log_since_start(service, svc.primary)
        time.sleep(0.5)  # a few beats: the replica's supervisor has heard the mark
        seen = len(pair.supervisors.log_since_start(service, svc.replica))
        killed_at = time.monotonic()
        pair.kill_host(svc.primary)
        dead_at = time.monotonic()  # before that, the primary may still acknowledge
        net.signal_pids(replica_pids, signal.SIGCONT)  # the replica's database is back

        def news() -> str:
            return pair.supervisors.log_since_start(service, svc.replica)[seen:]

        wait_until(lambda: "failover_refused" in news(), 20.0, f"{svc.replica} to refuse")
        log = news()
        assert "--force" in log, log[-3000:]
        # Why, in the replica's words: the mark it heard, or (had the primary died
        # before a beat carried it) that the primary never confirmed it eligible.
        assert "not in sync" in log or "has not confirmed hearing" in log, log[-3000:]
        assert not [a for a in cl.read_log(out).acks if a.t > dead_at]  # nobody serves
        assert pair.vip_holders(service) in ([], [svc.primary])  # a's links are down
        st = supervisor_status(pair, service, svc.replica)["local"]
        assert st["role"] == "replica" and "failover_refused" in st["alerts"], st

        res = _force_failover(pair, service, svc.replica)
        assert res.returncode == 0, res.stdout + res.stderr

        def taken(log: cl.ClientLog) -> bool:
            return sum(a.t > killed_at and a.node == svc.replica for a in log.acks) >= 20

        cl.wait_for(out, taken, 30, f"writes acknowledged by {svc.replica}")
        pair.heal()
    finally:
        cl.stop_client(client)
    log_ = cl.read_log(out)
    verdict = cl.verify(pair, service, log_, fault_at=killed_at)
    print(f"\n{service} forced failover: {verdict.summary()}")
    assert verdict.primary == svc.replica and pair.vip_holders(service) == [svc.replica]
    lost = set(verdict.missing[svc.replica])
    in_sync = {a.seq for a in log_.acks if a.t < hung_at}
    assert not lost & in_sync, sorted(lost & in_sync)
    record_property(f"{service}_forced_lost_writes", len(lost))


# ------------------------------------------------- behind HAProxy (the HTTP door)


def _through_haproxy(service: str) -> list[str]:
    """The client's arguments to write through HAProxy's write frontend in host c."""
    return ["--address", topo.HOSTS[hx.HOST].lan, "--port", str(hx.FRONTENDS[service][0])]


def _routed(lab: Lab, service: str) -> list[str]:
    servers = lab.haproxy.servers()[hx.backend(service, "write")]
    return sorted(name for name, state in servers.items() if state == "UP")


def _wait_routed(lab: Lab, service: str, host: str) -> None:
    wait_until(
        lambda: _routed(lab, service) == [host],
        20.0,
        f"HAProxy to route {service} writes to {host}",
    )


def _one_writer(lab: Lab, service: str, seen: int, start: str) -> list[tuple[str, str]]:
    """HAProxy's write backend since log offset ``seen``, replayed from ``start`` the
    only server UP: it never held two UP at once. The timeline, for the message."""
    timeline = hx.write_timeline(lab.haproxy.log_text()[seen:], service)
    starts = {h: h == start for h in topo.DB_HOSTS}
    assert hx.most_up_at_once(timeline, starts) == 1, timeline
    return timeline


def _primary_host_dies(lab: Lab, service: str, out: Path) -> scenarios.ScenarioOutcome:
    """The kill-host scenario with the client writing through HAProxy."""
    fault = scenarios.primary_fault(lab, service, "kill-host")
    args = _through_haproxy(service)
    return scenarios.run(
        lab, service, "kill-host", fault, out, expect_takeover=True, client_args=args
    )


@pytest.mark.parametrize("service", SERVICES)
def test_8_writes_through_haproxy_follow_the_primary_host_death(
    pair: Lab, service: str, tmp_path: Path, record_property: RecordProperty
) -> None:
    """The client writes through HAProxy, which routes by the doors' /primary. The
    primary host dies: nothing acknowledged is lost, HAProxy routed writes to one
    node at a time (its log's server state changes say so), and ends on the new
    primary. Fault to first write through HAProxy is printed and recorded."""
    svc = topo.SERVICES[service]
    _wait_routed(pair, service, svc.primary)
    seen = len(pair.haproxy.log_text())
    o = _primary_host_dies(pair, service, tmp_path / "client.jsonl")
    _common(o, record_property)
    _took_over(o)
    timeline = _one_writer(pair, service, seen, svc.primary)
    assert (svc.replica, "UP") in timeline, timeline
    assert _routed(pair, service) == [svc.replica]
    print(f"haproxy write backend: {timeline}")
    if o.recovery is not None:
        record_property(f"{service}_haproxy_kill_host_to_first_write_s", round(o.recovery, 3))


def _switchover(lab: Lab, service: str, host: str, to: str) -> dict[str, object]:
    cfg = str(lab.supervisors.paths(service, host).config)
    argv = [sys.executable, "-m", "dbha", "switchover", "-c", cfg, "--yes", "--json", "--to", to]
    res = ns_exec(lab, host, *argv, timeout=150)
    lines = res.stdout.strip().splitlines()
    assert res.returncode == 0 and lines, (res.returncode, res.stdout, res.stderr)
    return dict(json.loads(lines[-1]))


@pytest.mark.parametrize("service", SERVICES)
def test_9_switchovers_through_haproxy_lose_nothing_and_route_to_one_node(
    pair: Lab, service: str, tmp_path: Path, record_property: RecordProperty
) -> None:
    """A planned switchover and back, the client writing through HAProxy: every
    acknowledged write is on the pair, HAProxy never routed writes to two nodes,
    and the longest pause the client saw is printed and recorded."""
    svc = topo.SERVICES[service]
    _wait_routed(pair, service, svc.primary)
    seen = len(pair.haproxy.log_text())
    out = tmp_path / "client.jsonl"
    client = cl.start_client(pair, service, out, 240, extra=_through_haproxy(service))
    pauses = []
    try:
        cl.wait_for(out, lambda log: len(log.acks) >= 40, 30, "acknowledged writes")
        begun = time.monotonic()
        for old, new in ((svc.primary, svc.replica), (svc.replica, svc.primary)):
            t0 = time.monotonic()
            got = _switchover(pair, service, old, new)
            assert got["result"] == "done", got

            def moved(log: cl.ClientLog, t0: float = t0, new: str = new) -> bool:
                return sum(a.t > t0 and a.node == new for a in log.acks) >= 20

            cl.wait_for(out, moved, 30, f"writes acknowledged by {new} through HAProxy")
            _wait_routed(pair, service, new)
            acks = [a.t for a in cl.read_log(out).acks if a.t > t0 - 1]
            pauses.append(max(b - a for a, b in itertools.pairwise(acks)))
    finally:
        cl.stop_client(client)
    log = cl.read_log(out)
    verdict = cl.verify(pair, service, log, fault_at=begun)
    print(f"\n{service} switchovers through HAProxy: {verdict.summary()}")
    print(f"  longest client pause per switchover: {', '.join(f'{p:.3f} s' for p in pauses)}")
    assert verdict.missing == {h: [] for h in verdict.missing}, verdict.summary()
    assert verdict.primary == svc.primary
    timeline = _one_writer(pair, service, seen, svc.primary)
    assert timeline.count((svc.replica, "UP")) == 1, timeline
    record_property(f"{service}_haproxy_switchover_pause_max_s", round(max(pauses), 3))


@pytest.mark.parametrize("service", SERVICES)
def test_10_idle_and_slow_clients_on_the_door_do_not_stop_a_failover(
    pair: Lab, service: str, tmp_path: Path, record_property: RecordProperty
) -> None:
    """200 idle connections and 5 slowloris clients on the replica's HTTP door, kept
    up (each one the door closes at its request timeout is opened again) while the
    primary host dies: the replica's heartbeat paths stay up under the attack, it
    takes over as without it, HAProxy still finds it by its door and routes writes
    to it, and nothing acknowledged is lost. The door counted what it cut off."""
    svc = topo.SERVICES[service]
    _wait_routed(pair, service, svc.primary)
    door = (topo.HOSTS[svc.replica].lan, svc.http_port)
    attack = subprocess.Popen(
        pair.exec_argv(
            "c",
            [sys.executable, "-m", "tests.lab.door_attack", door[0], str(door[1]), "60"],
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        before = supervisor_status(pair, service, svc.replica)["local"]["paths"]
        time.sleep(4.0)  # twice the door's request timeout: the attack is in full swing
        during = supervisor_status(pair, service, svc.replica)["local"]["paths"]
        assert {p: v["changes"] for p, v in during.items()} == {
            p: v["changes"] for p, v in before.items()
        }, (before, during)
        assert all(v["up"] for v in during.values()), during
        o = _primary_host_dies(pair, service, tmp_path / "client.jsonl")
        metrics = ns_exec(
            pair,
            "c",
            sys.executable,
            "-c",
            "import urllib.request as u, sys; "
            f"sys.stdout.write(u.urlopen('http://{door[0]}:{door[1]}/metrics', timeout=5)"
            ".read().decode())",
        )
    finally:
        attack.terminate()
        out, err = attack.communicate(timeout=30)
    assert out.strip(), f"the attack said nothing: {err[-2000:]}"
    counts = json.loads(out.strip().splitlines()[-1])
    print(f"\n{o.line()}\n  attack on {svc.replica}'s door: {counts}")
    _common(o, record_property)
    _took_over(o)
    assert _routed(pair, service) == [svc.replica]
    assert counts["opened"] >= 205 and counts["closed_by_door"] >= 200, counts
    assert metrics.returncode == 0, metrics.stderr
    timeouts = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.stdout.splitlines()
        if line.startswith('dbha_http_refused_total{reason="timeout"}')
    ]
    assert timeouts and timeouts[0] >= 200, metrics.stdout[-2000:]
    if o.recovery is not None:
        record_property(f"{service}_haproxy_under_attack_to_first_write_s", round(o.recovery, 3))
