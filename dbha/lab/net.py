"""Namespaces, bridges and veth links of the lab, and the network faults.

Every veth is created inside a lab namespace (``ip -n NS link add ... peer
... netns OTHER``) so nothing of the lab ever exists in the root namespace,
and deleting the lab's namespaces removes every link it made.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path as FsPath

from dbha import proc
from dbha.errors import CommandFailed, LabError
from dbha.lab import topology as topo
from dbha.lab.netem import parse_spec
from dbha.lab.wait import wait_until

IP_TIMEOUT = 10.0


def ns_name(prefix: str, host: str) -> str:
    return f"{prefix}-{host}"


def all_hosts() -> list[str]:
    return [topo.SWITCH, *topo.HOSTS]


def nsexec(prefix: str, host: str, argv: list[str]) -> list[str]:
    """The argv that runs ``argv`` inside ``host``'s namespace."""
    return ["ip", "netns", "exec", ns_name(prefix, host), *argv]


def ip(prefix: str, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return proc.run(["ip", "-n", ns_name(prefix, host), *args], timeout=IP_TIMEOUT, check=check)


def existing_namespaces() -> set[str]:
    out = proc.run(["ip", "-j", "netns", "list"], timeout=IP_TIMEOUT).stdout.strip()
    if not out:
        return set()
    return {entry["name"] for entry in json.loads(out)}


def lab_namespaces(prefix: str) -> list[str]:
    """The lab's namespaces that exist now (exact names, never a wildcard)."""
    have = existing_namespaces()
    return [ns_name(prefix, h) for h in all_hosts() if ns_name(prefix, h) in have]


def links(prefix: str, host: str) -> dict[str, dict[str, object]]:
    """Interfaces of a lab host: name -> {state, up, addresses, master}."""
    raw = ip(prefix, host, "-j", "addr", "show").stdout.strip()
    result: dict[str, dict[str, object]] = {}
    for dev in json.loads(raw or "[]"):
        addrs = [
            f"{a['local']}/{a['prefixlen']}"
            for a in dev.get("addr_info", [])
            if a.get("family") == "inet"
        ]
        result[dev["ifname"]] = {
            "state": dev.get("operstate", "UNKNOWN"),
            "up": "UP" in dev.get("flags", []),
            "addresses": addrs,
            "master": dev.get("master"),
        }
    return result


# --------------------------------------------------------------------- build

_SYSCTL_ALL = [
    "net.ipv6.conf.all.disable_ipv6=1",
    "net.ipv6.conf.default.disable_ipv6=1",
    "net.ipv4.ip_forward=0",
]
# Database hosts: listen on a VIP held elsewhere; answer ARP only for addresses
# of the receiving interface and announce with the best local source.
_SYSCTL_DB = [
    "net.ipv4.ip_nonlocal_bind=1",
    "net.ipv4.conf.all.arp_ignore=1",
    "net.ipv4.conf.all.arp_announce=2",
]
# The switch must not answer ARP for the gateway on a port taken out of the
# bridge by a netem splice.
_SYSCTL_SW = ["net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.default.arp_ignore=1"]


def _sysctl(prefix: str, host: str, settings: list[str]) -> None:
    proc.run(nsexec(prefix, host, ["sysctl", "-q", "-w", *settings]), timeout=IP_TIMEOUT)


def build(prefix: str) -> None:
    """Create (or repair) every namespace, bridge, link and address. Idempotent."""
    have = existing_namespaces()
    for host in all_hosts():
        name = ns_name(prefix, host)
        if name not in have:
            proc.run(["ip", "netns", "add", name], timeout=IP_TIMEOUT)
        extra = _SYSCTL_DB if host in topo.DB_HOSTS else _SYSCTL_SW if host == topo.SWITCH else []
        _sysctl(prefix, host, _SYSCTL_ALL + extra)
        ip(prefix, host, "link", "set", "lo", "up")

    sw = links(prefix, topo.SWITCH)
    for path in topo.PATHS.values():
        if path.bridge not in sw:
            ip(
                prefix,
                topo.SWITCH,
                "link",
                "add",
                path.bridge,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
            )
        ip(prefix, topo.SWITCH, "link", "set", path.bridge, "up")
    gw = f"{topo.GATEWAY}/{topo.LAN_PREFIXLEN}"
    if gw not in links(prefix, topo.SWITCH)["br0"]["addresses"]:  # type: ignore[operator]
        ip(prefix, topo.SWITCH, "addr", "add", gw, "dev", "br0")

    for host in topo.HOSTS:
        hostlinks = links(prefix, host)
        for path in topo.host_paths(host):
            port = path.port(host)
            sw = links(prefix, topo.SWITCH)
            if port not in sw or path.interface not in hostlinks:
                # A half-made pair cannot exist for veth; a stray end can only
                # remain if its peer namespace was deleted: remove and redo.
                ip(prefix, topo.SWITCH, "link", "del", port, check=False)
                ip(
                    prefix,
                    topo.SWITCH,
                    "link",
                    "add",
                    port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    path.interface,
                    "netns",
                    ns_name(prefix, host),
                )
            if not _spliced(prefix, host, path.name):
                ip(prefix, topo.SWITCH, "link", "set", port, "master", path.bridge)
            ip(prefix, topo.SWITCH, "link", "set", port, "up")
            addr = f"{topo.host_address(host, path.name)}/{topo.LAN_PREFIXLEN}"
            hostlinks = links(prefix, host)
            if addr not in hostlinks[path.interface]["addresses"]:  # type: ignore[operator]
                ip(prefix, host, "addr", "add", addr, "dev", path.interface)
            ip(prefix, host, "link", "set", path.interface, "up")


def destroy(prefix: str) -> list[str]:
    """Delete the lab's namespaces (and with them every link). Returns what was deleted."""
    gone = []
    for name in lab_namespaces(prefix):
        proc.run(["ip", "netns", "del", name], timeout=IP_TIMEOUT)
        gone.append(name)
    return gone


# ----------------------------------------------------------------- processes


def ns_pids(prefix: str, host: str) -> list[int]:
    """PIDs of every process inside a lab namespace (all of them the lab's)."""
    res = proc.run(["ip", "netns", "pids", ns_name(prefix, host)], timeout=IP_TIMEOUT, check=False)
    return [int(x) for x in res.stdout.split() if x.isdigit()]


def signal_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def kill_namespace_processes(prefix: str, host: str, timeout: float = 10.0) -> list[int]:
    """Freeze then SIGKILL every process in the namespace; wait (bounded) until gone."""
    pids = ns_pids(prefix, host)
    # Freeze first so that no process reacts to a sibling's death (that would be a
    # graceful shutdown, not a death).
    signal_pids(pids, signal.SIGSTOP)
    signal_pids(pids, signal.SIGKILL)
    wait_until(lambda: not ns_pids(prefix, host), timeout, f"processes of {host} to exit")
    return pids


# -------------------------------------------------------------------- faults


def set_link(prefix: str, host: str, path: str, up: bool) -> None:
    p = topo.PATHS[path]
    if p not in topo.host_paths(host):
        raise LabError(f"host {host} is not on path {path}")
    ip(prefix, host, "link", "set", p.interface, "up" if up else "down")


def all_links_up(prefix: str) -> None:
    for host in all_hosts():
        for name in links(prefix, host):
            ip(prefix, host, "link", "set", name, "up")


def _netem_dir(labdir: FsPath) -> FsPath:
    d = labdir / "netem"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def _spliced(prefix: str, host: str, path: str) -> bool:
    port = topo.PATHS[path].port(host)
    return f"{port}-i" in links(prefix, topo.SWITCH)


def netem_start(prefix: str, labdir: FsPath, host: str, path: str, spec: str) -> None:
    """Impair ``host``'s traffic on ``path`` in both directions.

    The switch port of the host is taken out of its bridge and a forwarder
    process (dbha.lab.netem) copies frames between it and a new port in the
    bridge, dropping and delaying them as ``spec`` says (netem syntax). This
    kernel has no sch_netem, and a userspace splice behaves the same on every
    kernel. Replaces an impairment already on that port.
    """
    parse_spec(spec)  # refuse a bad spec before touching anything
    p = topo.PATHS[path]
    if p not in topo.host_paths(host):
        raise LabError(f"host {host} is not on path {path}")
    netem_stop(prefix, labdir, host, path)
    port = p.port(host)
    ip(prefix, topo.SWITCH, "link", "set", port, "nomaster")
    ip(prefix, topo.SWITCH, "link", "add", f"{port}-i", "type", "veth", "peer", "name", f"{port}-f")
    ip(prefix, topo.SWITCH, "link", "set", f"{port}-i", "master", p.bridge)
    for dev in (f"{port}-i", f"{port}-f", port):
        ip(prefix, topo.SWITCH, "link", "set", dev, "promisc", "on", "up")
    d = _netem_dir(labdir)
    ready = d / f"{host}-{path}.ready"
    ready.unlink(missing_ok=True)
    log = open(d / f"{host}-{path}.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        child = subprocess.Popen(
            nsexec(
                prefix,
                topo.SWITCH,
                [
                    sys.executable,
                    "-m",
                    "dbha.lab.netem",
                    "--ready-file",
                    str(ready),
                    port,
                    f"{port}-f",
                    spec,
                ],
            ),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    finally:
        log.close()
    (d / f"{host}-{path}.pid").write_text(f"{child.pid}\n")
    try:
        wait_until(lambda: ready.exists() or child.poll() is not None, 10.0, "netem forwarder")
    except LabError:
        netem_stop(prefix, labdir, host, path)
        raise
    if child.poll() is not None:
        netem_stop(prefix, labdir, host, path)
        raise LabError(f"netem forwarder for {host}/{path} exited; see {d}/{host}-{path}.log")


def netem_stop(prefix: str, labdir: FsPath, host: str, path: str) -> bool:
    """Remove an impairment; returns whether there was one. Idempotent."""
    d = labdir / "netem"
    pidfile = d / f"{host}-{path}.pid"
    had = False
    if pidfile.exists():
        had = True
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
        except (ValueError, ProcessLookupError):
            pass
        pidfile.unlink(missing_ok=True)
    port = topo.PATHS[path].port(host)
    if ns_name(prefix, topo.SWITCH) in existing_namespaces() and _spliced(prefix, host, path):
        had = True
        ip(prefix, topo.SWITCH, "link", "del", f"{port}-i", check=False)
        ip(prefix, topo.SWITCH, "link", "set", port, "promisc", "off")
        ip(prefix, topo.SWITCH, "link", "set", port, "master", topo.PATHS[path].bridge)
    return had


def netem_active(labdir: FsPath) -> list[str]:
    d = labdir / "netem"
    return sorted(p.stem for p in d.glob("*.pid")) if d.exists() else []


def _reap(pid: int) -> None:
    """Wait (bounded) for a killed child to vanish; reap it if it is ours."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


# nftables table holding the lab's packet filter faults, in each host's namespace.
NFT_TABLE = "dbha_lab_block"
NFT = "/usr/sbin/nft"


def block(prefix: str, host: str, proto: str, port: int) -> None:
    """Drop ``proto`` traffic to ``port`` entering and leaving ``host`` (nftables, in
    the host's namespace). Adds to blocks already there."""
    if proto not in ("udp", "tcp") or not 1 <= port <= 65535:
        raise LabError(f"cannot block {proto} {port}: say udp or tcp and a port 1-65535")
    t = f"inet {NFT_TABLE}"
    script = (
        f"add table {t}\n"
        f"add chain {t} input {{ type filter hook input priority 0; policy accept; }}\n"
        f"add chain {t} output {{ type filter hook output priority 0; policy accept; }}\n"
        f"add rule {t} input {proto} dport {port} counter drop\n"
        f"add rule {t} output {proto} dport {port} counter drop\n"
    )
    proc.run(nsexec(prefix, host, [NFT, "-f", "-"]), input=script, timeout=IP_TIMEOUT)


def unblock(prefix: str, host: str) -> bool:
    """Remove every block on ``host``; returns whether there was one. Idempotent."""
    if not os.path.exists(NFT):
        return False  # without nft no block can have been made
    listed = proc.run(nsexec(prefix, host, [NFT, "list", "tables"]), timeout=IP_TIMEOUT)
    if f"table inet {NFT_TABLE}" not in listed.stdout.splitlines():
        return False
    proc.run(nsexec(prefix, host, [NFT, "delete", "table", "inet", NFT_TABLE]), timeout=IP_TIMEOUT)
    return True


def ping(prefix: str, host: str, address: str, timeout: float = 2.0) -> bool:
    """One ICMP echo from a lab host; True if answered."""
    try:
        res = proc.run(
            nsexec(
                prefix,
                host,
                ["ping", "-n", "-q", "-c", "1", "-W", str(max(1, int(timeout))), address],
            ),
            timeout=timeout + 3,
            check=False,
        )
    except CommandFailed:
        return False
    return res.returncode == 0
