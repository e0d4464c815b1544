"""The lab's status: what counts as a problem in what was gathered, and the
status as a person reads it (``dbha lab status``, and the demo)."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any, Protocol

from dbha.errors import LabError
from dbha.lab import net
from dbha.lab import supervisors as sup
from dbha.lab import topology as topo
from dbha.lab.haproxy import HAProxy, backend
from dbha.lab.layout import Layout
from dbha.lab.maria import MariaNode
from dbha.lab.pg import PgNode
from dbha.lab.wait import wait_until

PROOF_TIMEOUT = 10.0


class LabView(Protocol):
    """What the status reads of a lab (:class:`dbha.lab.core.Lab` is one)."""

    prefix: str
    dir: Path
    layout: Layout
    supervisors: sup.Supervisors

    def meta(self) -> dict[str, Any]: ...

    def supervisor_mode(self) -> sup.Command | None: ...

    def node(self, service: str, host: str) -> PgNode | MariaNode: ...

    def vip_holders(self, service: str) -> list[str]: ...

    @property
    def haproxy(self) -> HAProxy: ...


def gather(lab: LabView, proof: bool = True) -> dict[str, Any]:
    """The lab's status (see :meth:`dbha.lab.core.Lab.status`)."""
    problems: list[str] = []
    have = set(net.lab_namespaces(lab.prefix))
    hosts: dict[str, Any] = {}
    for host in net.all_hosts():
        name = net.ns_name(lab.prefix, host)
        entry: dict[str, Any] = {"namespace": name, "exists": name in have}
        if name in have:
            entry["links"] = net.links(lab.prefix, host)
        else:
            problems.append(f"namespace {name} is missing")
        hosts[host] = entry
    problems += link_problems(hosts)
    meta = lab.meta()
    faults = meta.get("faults", [])
    for f in faults:
        problems.append(f"fault active: {f['fault']}")
    mode = lab.supervisor_mode()
    sups = lab.supervisors.statuses(query=mode == "run")
    services = (
        {
            name: _service_status(lab, name, proof and not faults, problems, mode, sups)
            for name in topo.SERVICES
        }
        if have
        else {}
    )
    haproxy: dict[str, Any] | None = None
    if meta.get("haproxy"):
        haproxy = lab.haproxy.status()
        haproxy_problems(haproxy, problems)
    return {
        "prefix": lab.prefix,
        "directory": str(lab.dir),
        "healthy": not problems,
        "problems": problems,
        "sync": bool(meta.get("sync", False)),
        "profile": str(meta.get("profile", "default")),
        "pairs": lab.layout.pairs(),
        "supervisors": mode,
        "gateway": topo.GATEWAY,
        "hosts": hosts,
        "faults": faults,
        "netem": net.netem_active(lab.dir),
        "services": services,
        "haproxy": haproxy,
    }


def haproxy_problems(h: dict[str, Any], problems: list[str]) -> None:
    """HAProxy down, or a write backend routing to other than exactly one node."""
    if not h.get("alive"):
        problems.append("haproxy is not running")
        return
    if "error" in h:
        problems.append(f"haproxy does not answer: {h['error']}")
        return
    for service in topo.SERVICES:
        servers = h.get("servers", {}).get(backend(service, "write"), {})
        up = [name for name, state in servers.items() if state == "UP"]
        if len(up) != 1:
            problems.append(
                f"haproxy routes {service} writes to {len(up)} nodes ({', '.join(up) or 'none'})"
            )


def _service_status(
    lab: LabView,
    name: str,
    proof: bool,
    problems: list[str],
    mode: sup.Command | None,
    sups: dict[tuple[str, str], dict[str, Any]],
) -> dict[str, Any]:
    svc = topo.SERVICES[name]
    nodes: dict[str, Any] = {}
    for host in topo.DB_HOSTS:
        st = lab.node(name, host).status()
        st["address"] = topo.HOSTS[host].lan
        st["config"] = sups[name, host]["config"]
        st["supervisor"] = sups[name, host]
        nodes[host] = st
    holders = lab.vip_holders(name)
    primaries, fenced, replicas = judge_service(name, nodes, holders, mode, problems)
    result: dict[str, Any] = {
        "engine": svc.engine,
        "primary": primaries[0] if len(primaries) == 1 else None,
        "fenced": fenced,
        "vip": svc.vip,
        "vip_holders": holders,
        "port": svc.port,
        "database": svc.database,
        "user": svc.app_user,
        "password_file": str(lab.layout.secret_path(f"{name}-{svc.app_user}")),
        "heartbeat_port": svc.heartbeat_port,
        "nodes": nodes,
    }
    if proof and len(primaries) == 1 and replicas:
        result["write_proof"] = write_proof(lab, name, primaries[0], replicas)
        if not result["write_proof"]["ok"]:
            problems.append(f"{name}: write proof failed: {result['write_proof']['error']}")
    return result


def write_proof(lab: LabView, service: str, primary: str, replicas: list[str]) -> dict[str, Any]:
    """Write a row on the primary; read it back on each replica within a bound."""
    token = secrets.token_hex(8)
    start = time.monotonic()
    try:
        lab.node(service, primary).write_token(token)
        for r in replicas:
            node = lab.node(service, r)

            def arrived(node: PgNode | MariaNode = node) -> bool:
                return node.has_token(token)

            wait_until(arrived, PROOF_TIMEOUT, f"{service} row {token} on {r}", interval=0.02)
    except LabError as exc:
        return {"ok": False, "token": token, "error": str(exc)}
    return {
        "ok": True,
        "token": token,
        "seconds": round(time.monotonic() - start, 3),
        "written_on": primary,
        "read_on": replicas,
    }


def link_problems(hosts: dict[str, Any]) -> list[str]:
    """The lab hosts' interfaces that are missing, down or without their address."""
    problems = []
    for host in topo.HOSTS:
        if not hosts[host]["exists"]:
            continue
        for p in topo.host_paths(host):
            link = hosts[host]["links"].get(p.interface)
            want = f"{topo.host_address(host, p.name)}/{topo.LAN_PREFIXLEN}"
            if link is None:
                problems.append(f"{host}: interface {p.interface} is missing")
            elif not link["up"]:
                problems.append(f"{host}: {p.interface} ({p.name}) is down")
            elif want not in link["addresses"]:
                problems.append(f"{host}: {p.interface} lacks {want}")
    return problems


def judge_service(
    name: str,
    nodes: dict[str, Any],
    holders: list[str],
    mode: str | None,
    problems: list[str],
) -> tuple[list[str], list[str], list[str]]:
    """The writable primaries, fenced (read-only) primaries and replicas of service
    ``name`` among its ``nodes``; what is wrong with them (and with their
    supervisors, run as ``mode``, and the VIP's ``holders``) is added to
    ``problems``."""
    svc = topo.SERVICES[name]
    # A read-only primary is a fenced one (a supervisor stopped it serving): it
    # is out of the pair until it is resynced, not a second primary.
    heads = [h for h, st in nodes.items() if st["role"] == "primary"]
    primaries = [h for h in heads if nodes[h].get("writable")]
    fenced = [h for h in heads if not nodes[h].get("writable")]
    replicas = [h for h, st in nodes.items() if st["role"] == "replica"]
    for h, st in nodes.items():
        if not st["running"]:
            problems.append(f"{name}: server on {h} is not running")
        elif st["role"] == "unknown":
            problems.append(f"{name}: server on {h} does not answer: {st.get('error')}")
    if len(primaries) != 1:
        problems.append(
            f"{name}: {len(primaries)} writable primaries ({', '.join(primaries) or 'none'})"
        )
    for h in fenced:
        problems.append(f"{name}: {h} is a read-only primary (fenced, out of the pair)")
    for h in replicas:
        if not nodes[h].get("streaming"):
            problems.append(f"{name}: replica on {h} is not replicating")
    for h, st in nodes.items():
        s = st["supervisor"]
        if mode is not None and not s["alive"]:
            problems.append(f"{name}: supervisor on {h} is not running")
        elif mode == "run" and s["alive"] and s.get("status") is None:
            problems.append(f"{name}: supervisor on {h} does not answer: {s['status_error']}")
    if mode == "run" and len(primaries) == 1 and holders != primaries:
        problems.append(
            f"{name}: VIP {svc.vip} is held by {', '.join(holders) or 'nobody'}, "
            f"not by the primary {primaries[0]}"
        )
    return primaries, fenced, replicas


def render_status(st: dict[str, Any]) -> str:
    sups = {"run": "dbha supervisors", "hold": "stand-in supervisors"}.get(
        st.get("supervisors") or "", "no supervisors"
    )
    out = [
        f"lab {st['prefix']}: {'healthy' if st['healthy'] else 'NOT healthy'}"
        f"  ({'sync' if st['sync'] else 'async'} replication, {sups}, "
        f"{st.get('pairs', 'dbha')}-built pairs, gateway {st['gateway']})"
    ]
    out.append("hosts:")
    for host, h in st["hosts"].items():
        if not h["exists"]:
            out.append(f"  {host:3} {h['namespace']:12} MISSING")
            continue
        links = "  ".join(
            f"{n} {','.join(v['addresses']) or '-'} {'up' if v['up'] else 'DOWN'}"
            for n, v in h["links"].items()
            if n != "lo"
        )
        out.append(f"  {host:3} {h['namespace']:12} {links}")
    for name, s in st["services"].items():
        out.append(
            f"{name} ({s['engine']}): primary {s['primary'] or '?'}, "
            f"vip {s['vip']}:{s['port']} on {', '.join(s.get('vip_holders', [])) or 'no host'}, "
            f"database {s['database']}, user {s['user']}"
        )
        for host, n in s["nodes"].items():
            if n["role"] == "primary":
                reps = (
                    ", ".join(
                        f"{r.get('name')}"
                        + (
                            f" {r['state']} {r['sync_state']} lag {r['lag_bytes']} B"
                            if "state" in r
                            else ""
                        )
                        for r in n.get("replicas", [])
                    )
                    or "none"
                )
                mode = "writable" if n.get("writable") else "READ-ONLY"
                extra = f"{mode}, at {n.get('position')}, replicas: {reps}"
            elif n["role"] == "replica":
                lag = (
                    f"lag {n['lag_bytes']} B"
                    if n.get("lag_bytes") is not None
                    else f"lag {n.get('lag_seconds')} s"
                )
                extra = (
                    f"{'streaming' if n.get('streaming') else 'NOT streaming'} from "
                    f"{n.get('upstream')}, at {n.get('position')}, {lag}"
                )
            else:
                extra = n.get("error", "")
            out.append(f"  {host}  {n['role']:8} pid {n.get('pid')}  {extra}")
            sv = n.get("supervisor") or {}
            if st.get("supervisors") or sv.get("alive"):
                state = f"pid {sv.get('pid')}" if sv.get("alive") else "NOT running"
                said = sv.get("status")
                if said is not None:
                    local = said.get("local") or {}
                    state += f", says: {local.get('summary', json.dumps(local)[:80])}"
                elif sv.get("status_error"):
                    state += f", does not answer: {sv['status_error']}"
                out.append(f"     supervisor {state}  ({sv.get('config')})")
        proof = s.get("write_proof")
        if proof:
            res = f"ok in {proof['seconds']}s" if proof["ok"] else f"FAILED: {proof['error']}"
            out.append(f"  write proof: {res}")
    h = st.get("haproxy")
    if h is not None:
        if not h.get("alive"):
            out.append("haproxy: NOT running")
        else:
            routes = "; ".join(
                f"{name} -> {', '.join(n for n, v in servers.items() if v == 'UP') or 'none'}"
                for name, servers in h.get("servers", {}).items()
            )
            out.append(f"haproxy: pid {h['pid']} in host c: {routes or h.get('error')}")
    if st["netem"]:
        out.append("netem: " + ", ".join(st["netem"]))
    for p in st["problems"]:
        out.append(f"problem: {p}")
    return "\n".join(out)
