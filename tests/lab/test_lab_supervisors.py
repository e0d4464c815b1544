"""The lab's supervisor side: each node's dbha config, and the supervisor processes.

Every config ``lab up`` writes must load, name files that pass the config
layer's file checks, and work where the supervisor runs: inside the host's
namespace. The process plumbing (pid files, logs, kill-host, heal, rebuild,
down) is exercised with the lab's stand-in supervisor, which checks its config
as ``dbha run`` does and then only waits, so the pairs are left alone.
"""

from __future__ import annotations

import os
import pwd
import signal
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbha import config, proc
from dbha.db.postgres.conn import setpriv_prefix
from dbha.lab import net, procs
from dbha.lab import supervisors as sup
from dbha.lab import topology as topo
from dbha.lab.core import Lab
from dbha.lab.maria import MariaNode, wait_replicating
from dbha.lab.pg import PgNode, wait_streaming
from dbha.lab.wait import wait_until
from tests.lab.helpers import dbha, lab_json, ns_exec

PAIRS = [(s, h) for s in topo.SERVICES for h in topo.DB_HOSTS]


def _cfg(lab: Lab, service: str, host: str) -> config.Config:
    return config.load(lab.supervisors.paths(service, host).config)


@pytest.mark.parametrize(("service", "host"), PAIRS)
def test_each_nodes_config_loads_and_its_files_pass_the_checks(
    lab: Lab, service: str, host: str
) -> None:
    """The config lab up wrote for SERVICE on HOST loads, its secret files pass
    check_files (0600, long enough), none is missing, and it says what the lab is."""
    path = lab_json(lab.prefix)["services"][service]["nodes"][host]["config"]
    assert path == str(lab.supervisors.paths(service, host).config)
    cfg = config.load(path)
    assert config.check_files(cfg) == []
    assert config.missing_files(cfg) == []
    svc, peer = topo.SERVICES[service], next(h for h in topo.DB_HOSTS if h != host)
    assert (cfg.service.id, cfg.node.name, cfg.peer.name) == (service, host, peer)
    assert [str(a) for a in cfg.peer.addresses] == [topo.HOSTS[peer].lan, topo.HOSTS[peer].hb]
    assert [(p.name, str(p.local_address), str(p.peer_address), p.port) for p in
            cfg.heartbeat.paths] == [
        (p.name, topo.host_address(host, p.name), topo.host_address(peer, p.name),
         svc.heartbeat_port)
        for p in topo.host_paths(host)
    ]  # fmt: skip
    assert [(t.kind, str(t.host)) for t in cfg.safety.targets] == [("icmp", topo.GATEWAY)]
    assert (str(cfg.vip.address), cfg.vip.interface) == (f"{svc.vip}/24", "eth0")
    assert cfg.replication.mode == ("sync" if lab.meta().get("sync") else "async")
    assert cfg.service.state_dir.is_dir()
    assert cfg.service.control_socket.parent == cfg.service.state_dir.parent
    assert str(cfg.service.control_socket).startswith(str(lab.dir))
    db, node = cfg.database, lab.node(service, host)
    assert db.engine == svc.engine and db.user == "dbha" and db.socket is not None
    if isinstance(node, PgNode):
        assert db.socket == node.run and (node.run / f".s.PGSQL.{svc.port}").exists()
        assert db.data_directory == node.data
        assert db.replication_passfile == node.passfile
        assert node.passfile.stat().st_uid == pwd.getpwnam(db.os_user).pw_uid
    else:
        assert db.socket == node.socket and stat.S_ISSOCK(node.socket.stat().st_mode)
        assert db.replication_password_file == lab.layout.secret_path("mariadb-repl")
    for argv in (db.start_command, db.stop_command):
        assert argv is not None and os.access(argv[0], os.X_OK)
        assert "netns" not in argv  # the supervisor runs inside the namespace already


def test_the_configs_pass_dbha_config_check_inside_the_namespaces(lab: Lab) -> None:
    """Where the supervisor runs (root, inside the host namespace), `dbha config check`
    accepts every config without a warning."""
    for service, host in PAIRS:
        path = str(lab.supervisors.paths(service, host).config)
        res = ns_exec(lab, host, sys.executable, "-m", "dbha", "config", "check", "-c", path)
        assert res.returncode == 0, res.stderr
        assert res.stderr == "", res.stderr
        assert f"{path}: OK" in res.stdout


def test_both_nodes_share_one_heartbeat_key_per_service(lab: Lab) -> None:
    keys = {s: {_cfg(lab, s, h).heartbeat.key_file for h in topo.DB_HOSTS} for s in topo.SERVICES}
    assert all(len(k) == 1 for k in keys.values()), keys
    pg_key, maria_key = (next(iter(keys[s])) for s in ("pg", "mariadb"))
    assert pg_key != maria_key and pg_key.read_bytes() != maria_key.read_bytes()
    assert stat.S_IMODE(pg_key.stat().st_mode) == 0o600


@pytest.mark.parametrize("sync", [True, False])
def test_the_replication_mode_follows_the_labs(lab: Lab, sync: bool) -> None:
    for service, host in PAIRS:
        text = sup.render(lab.prefix, lab.layout, service, host, sync)
        cfg = config.loads(text, f"{service}-{host}")
        assert cfg.replication.mode == ("sync" if sync else "async")


def test_the_configs_stop_and_start_commands_work_inside_the_namespace(healthy_lab: Lab) -> None:
    """Each replica is stopped with its config's stop_command and started again with
    its start_command, run inside its namespace as the supervisor runs them
    (PostgreSQL's through setpriv as os_user); it comes back replicating."""
    lab = healthy_lab
    for service in topo.SERVICES:
        host = topo.SERVICES[service].replica
        db, node = _cfg(lab, service, host).database, lab.node(service, host)
        assert db.start_command is not None and db.stop_command is not None
        as_user = list(setpriv_prefix(db.os_user)) if service == "pg" else []
        stop = [a.replace("{mode}", "fast") for a in db.stop_command]
        old = node.pid()
        proc.run(net.nsexec(lab.prefix, host, as_user + stop), timeout=40)
        assert old is not None and not procs.alive(old)  # both wait until it is gone
        proc.run(net.nsexec(lab.prefix, host, as_user + list(db.start_command)), timeout=40)
        if isinstance(node, PgNode):
            primary = lab.node(service, topo.SERVICES[service].primary)
            assert isinstance(primary, PgNode)
            wait_streaming(primary, host)
        else:
            wait_replicating(node)  # start-stop-daemon returns at once: this waits
        pid = node.pid()
        assert pid is not None and pid != old and pid in net.ns_pids(lab.prefix, host)


@pytest.fixture
def hold_lab(healthy_lab: Lab) -> Iterator[Lab]:
    """The session lab with stand-in supervisors; back to none afterwards."""
    try:
        healthy_lab.start_supervisors("hold")
        yield healthy_lab
    finally:
        healthy_lab.stop_supervisors()


def _add_vip(lab: Lab, service: str, host: str) -> None:
    vip = f"{topo.SERVICES[service].vip}/{topo.LAN_PREFIXLEN}"
    net.ip(lab.prefix, host, "addr", "add", vip, "dev", "eth0")


def _sup_pids(lab: Lab) -> dict[tuple[str, str], int | None]:
    return {k: lab.supervisors.pid(*k) for k in PAIRS}


def test_stand_in_supervisors_run_in_their_namespaces_and_heal_restarts_them(
    hold_lab: Lab,
) -> None:
    """One supervisor per service per host, each inside its host's namespace with a
    pid file and a log; lab status requires them; heal restarts a dead one, and
    every one of a host that died."""
    lab = hold_lab
    pids = _sup_pids(lab)
    for (service, host), pid in pids.items():
        assert pid is not None and pid in net.ns_pids(lab.prefix, host)
        p = lab.supervisors.paths(service, host)
        assert p.pidfile.read_text().strip() == str(pid)
        assert sup.HOLD_READY in lab.supervisors.log_since_start(service, host)
        assert str(p.config).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    st = lab_json(lab.prefix)
    assert st["_exit"] == 0 and st["supervisors"] == "hold", st["problems"]
    for service, host in PAIRS:
        entry = st["services"][service]["nodes"][host]["supervisor"]
        assert entry["alive"] and entry["pid"] == pids[service, host]

    os.kill(pids["pg", "a"] or 0, signal.SIGKILL)
    wait_until(lambda: lab.supervisors.pid("pg", "a") is None, 10, "the supervisor to die")
    st = lab_json(lab.prefix)
    assert st["_exit"] == 1 and "pg: supervisor on a is not running" in st["problems"]
    assert "started supervisor pg on a" in lab.heal()
    assert lab.supervisors.pid("pg", "a") not in (None, pids["pg", "a"])

    _add_vip(lab, "mariadb", "b")  # as b's supervisor would hold it
    lab.kill_host("b")
    assert all(lab.supervisors.pid(s, "b") is None for s in topo.SERVICES)
    done = lab.heal()
    assert {f"started supervisor {s} on b" for s in topo.SERVICES} <= set(done)
    assert all(lab.supervisors.pid(*k) is not None for k in PAIRS)
    assert lab.vip_holders("mariadb") == []  # a rebooted host has no run-time address
    assert lab.status()["healthy"]


def test_rebuild_restarts_the_services_supervisors_with_fresh_state(hold_lab: Lab) -> None:
    lab = hold_lab
    before = _sup_pids(lab)
    marker = lab.supervisors.paths("pg", "a").state_dir / "left-over"
    marker.write_text("old\n")
    lab.rebuild_service("pg")
    after = _sup_pids(lab)
    assert not marker.exists()
    for host in topo.DB_HOSTS:
        assert after["pg", host] not in (None, before["pg", host])
        assert after["mariadb", host] == before["mariadb", host]  # untouched
    assert lab.status()["healthy"]


def test_up_without_supervisors_stops_them_and_takes_the_vips_away(hold_lab: Lab) -> None:
    lab = hold_lab
    pids = [p for p in _sup_pids(lab).values() if p is not None]
    assert len(pids) == 4
    _add_vip(lab, "pg", "a")
    assert lab.vip_holders("pg") == ["a"]
    dbha("lab", "up", "--no-supervisors", "--prefix", lab.prefix)
    assert not [p for p in pids if procs.alive(p)]
    st = lab_json(lab.prefix)
    assert st["_exit"] == 0 and st["supervisors"] is None, st["problems"]
    assert lab.vip_holders("pg") == [] and lab.vip_holders("mariadb") == []


def test_a_synchronous_lab_builds_from_scratch_and_goes_down_with_its_supervisors(
    lab: Lab,
) -> None:
    """A second lab, synchronous from the start: both pairs replicate synchronously
    (the set-up commits did not wait for a replica that did not exist yet), its
    configs say sync, and down leaves no supervisor, namespace or file behind."""
    other = Lab(lab.prefix + "s")
    try:
        other.up(sync=True, install=False, supervisors=False)
        st = other.status()
        assert st["healthy"], st["problems"]
        pg_primary = st["services"]["pg"]["nodes"]["a"]
        assert [r["sync_state"] for r in pg_primary["replicas"]] == ["sync"]
        maria = other.node("mariadb", "b")
        assert isinstance(maria, MariaNode)
        semi = maria.query("SHOW STATUS LIKE 'Rpl_semi_sync_master_clients'")
        assert semi[0]["Value"] == "1"
        assert all(_cfg(other, *k).replication.mode == "sync" for k in PAIRS)
        other.start_supervisors("hold")
        pids = [p for p in _sup_pids(other).values() if p is not None]
        assert len(pids) == 4
    finally:
        t0 = time.monotonic()
        res = dbha("lab", "down", "--prefix", other.prefix, check=False)
        print(f"down with supervisors: {time.monotonic() - t0:.2f} s ({res.stdout.strip()})")
    assert res.returncode == 0, res.stderr
    assert not [p for p in pids if procs.alive(p)]
    assert net.lab_namespaces(other.prefix) == []
    assert not other.dir.exists()


def test_a_read_only_primary_counts_as_fenced_not_as_the_primary(healthy_lab: Lab) -> None:
    """A primary made read-only (as a supervisor fences it) is reported as fenced and
    out of the pair: no writable primary, the lab is not healthy."""
    node = healthy_lab.node("pg", "a")
    assert isinstance(node, PgNode)
    with node.connect() as c:
        c.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        c.execute("SELECT pg_reload_conf()")
    try:
        wait_until(lambda: node.status().get("writable") is False, 10, "a to be read-only")
        st = lab_json(healthy_lab.prefix)
        assert st["services"]["pg"]["primary"] is None
        assert st["services"]["pg"]["fenced"] == ["a"]
        assert "pg: a is a read-only primary (fenced, out of the pair)" in st["problems"]
    finally:
        with node.connect() as c:
            c.execute("ALTER SYSTEM RESET default_transaction_read_only")
            c.execute("SELECT pg_reload_conf()")
        wait_until(lambda: node.status().get("writable") is True, 10, "a to be writable")
