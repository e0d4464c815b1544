"""The lab as a whole: ``up``, ``down``, ``status`` and the faults.

``up`` is idempotent and repairs what is missing; ``down`` removes exactly what
``up`` made (the namespaces named PREFIX-{sw,a,b,c}, every process inside them,
by PID, and the lab directory), even after an ``up`` that failed half-way.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbha.errors import LabError
from dbha.lab import net, packages, procs
from dbha.lab import topology as topo
from dbha.lab.layout import DEFAULT_ROOT, Layout
from dbha.lab.maria import MariaNode, wait_replicating
from dbha.lab.pg import PgNode, wait_streaming
from dbha.lab.wait import wait_until

Node = PgNode | MariaNode
PROOF_TIMEOUT = 10.0


@dataclass
class Timings:
    steps: list[tuple[str, float]] = field(default_factory=list)
    _t: float = field(default_factory=time.monotonic)

    def mark(self, what: str) -> None:
        now = time.monotonic()
        self.steps.append((what, round(now - self._t, 3)))
        self._t = now

    @property
    def total(self) -> float:
        return round(sum(s for _, s in self.steps), 3)


class Lab:
    def __init__(self, prefix: str = topo.DEFAULT_PREFIX, base: Path = DEFAULT_ROOT) -> None:
        self.prefix = topo.check_prefix(prefix)
        self.layout = Layout.for_prefix(prefix, base)
        self.dir = self.layout.root
        self.meta_path = self.dir / "lab.json"

    # -- nodes ----------------------------------------------------------------

    def node(self, service: str, host: str) -> Node:
        if service not in topo.SERVICES:
            raise LabError(f"unknown service {service!r} (known: {', '.join(topo.SERVICES)})")
        if host not in topo.DB_HOSTS:
            raise LabError(f"host {host!r} runs no database (database hosts: a, b)")
        return (
            PgNode(self.prefix, self.layout, host)
            if service == "pg"
            else MariaNode(self.prefix, self.layout, host)
        )

    def meta(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.meta_path.read_text())
            return data
        except (OSError, ValueError):
            return {}

    def _save_meta(self, **changes: Any) -> None:
        meta = self.meta() | changes
        tmp = self.meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, self.meta_path)

    def exists(self) -> bool:
        return bool(net.lab_namespaces(self.prefix)) or self.dir.exists()

    # -- up / down ------------------------------------------------------------

    def up(self, sync: bool | None = None, install: bool = True) -> Timings:
        """Build or repair the whole lab; returns how long each step took."""
        t = Timings()
        if install:
            packages.ensure()
            t.mark("packages")
        self.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)  # the database users must traverse it
        if sync is None:
            sync = bool(self.meta().get("sync", False))
        self._save_meta(
            prefix=self.prefix, sync=sync, created=self.meta().get("created", time.time())
        )
        net.build(self.prefix)
        self._undo_faults()
        t.mark("network")
        self._up_service("pg", sync)
        t.mark("postgresql")
        self._up_service("mariadb", sync)
        t.mark("mariadb")
        self._save_meta(faults=[])
        return t

    def _up_service(self, service: str, sync: bool) -> None:
        svc = topo.SERVICES[service]
        primary, replica = self.node(service, svc.primary), self.node(service, svc.replica)
        if primary.ready_mark.exists():
            primary.start()
            primary.apply_sync(sync)
        else:
            # A node never finished: it holds nothing worth keeping. Rebuild the pair.
            replica.ready_mark.unlink(missing_ok=True)
            if isinstance(replica, PgNode):
                replica.stop("immediate")
            else:
                replica.stop()
            primary.create_primary(sync)
        if replica.ready_mark.exists():
            replica.start()
            replica.apply_sync(sync)
        elif isinstance(replica, PgNode) and isinstance(primary, PgNode):
            replica.create_replica(primary)
        elif isinstance(replica, MariaNode) and isinstance(primary, MariaNode):
            replica.create_replica(primary, sync)
        if isinstance(primary, PgNode):
            wait_streaming(primary, replica.host)
        else:
            wait_replicating(replica)  # type: ignore[arg-type]

    def rebuild_service(self, service: str) -> None:
        """Throw one pair away and build it again as at ``up`` (primary on its first host).

        For tests that change roles (promote, rejoin) and want the original pair back."""
        sync = bool(self.meta().get("sync", False))
        for host in topo.DB_HOSTS:
            node = self.node(service, host)
            node.ready_mark.unlink(missing_ok=True)
            if node.pid() is not None:
                node.signal(signal.SIGCONT)
                node.stop("immediate") if isinstance(node, PgNode) else node.stop()
        self._up_service(service, sync)

    def down(self) -> Timings:
        """Remove every process, namespace and file of this lab. Safe to repeat."""
        t = Timings()
        # Stop PostgreSQL quickly but cleanly first so no shared memory is left behind.
        for host in topo.DB_HOSTS:
            pg = PgNode(self.prefix, self.layout, host)
            if pg.pid() is not None:
                try:
                    pg.signal(signal.SIGCONT)
                    pg.stop("immediate")
                except LabError:
                    pass
        for name in net.lab_namespaces(self.prefix):
            host = name[len(self.prefix) + 1 :]
            net.kill_namespace_processes(self.prefix, host)
        t.mark("processes")
        net.destroy(self.prefix)
        t.mark("namespaces")
        if self.dir.exists():
            if self.dir.parent != self.layout.root.parent or self.dir.name != self.prefix:
                raise LabError(f"refusing to remove unexpected directory {self.dir}")
            shutil.rmtree(self.dir)
        t.mark("files")
        return t

    # -- faults ---------------------------------------------------------------

    def _require_up(self) -> None:
        missing = {net.ns_name(self.prefix, h) for h in net.all_hosts()} - set(
            net.lab_namespaces(self.prefix)
        )
        if missing:
            raise LabError(f"lab {self.prefix!r} is not up (missing {', '.join(sorted(missing))})")

    def _record_fault(self, fault: str) -> None:
        faults = list(self.meta().get("faults", []))
        faults.append({"fault": fault, "at": time.time()})
        self._save_meta(faults=faults)

    def _check_host(self, host: str, db: bool = False) -> None:
        if db and host in topo.HOSTS and host not in topo.DB_HOSTS:
            raise LabError(f"host {host!r} runs no database (database hosts: a, b)")
        allowed = topo.DB_HOSTS if db else tuple(topo.HOSTS)
        if host not in allowed:
            raise LabError(f"unknown host {host!r} (choose from {', '.join(allowed)})")

    def _check_path(self, host: str, path: str) -> None:
        if path not in topo.PATHS or topo.PATHS[path] not in topo.host_paths(host):
            names = ", ".join(p.name for p in topo.host_paths(host))
            raise LabError(f"host {host} has no path {path!r} (its paths: {names})")

    def kill_host(self, host: str) -> list[int]:
        """The host dies: every process in it is frozen then killed; its links go down."""
        self._require_up()
        self._check_host(host)
        pids = net.kill_namespace_processes(self.prefix, host)
        for p in topo.host_paths(host):
            net.set_link(self.prefix, host, p.name, up=False)
        self._record_fault(f"kill-host {host}")
        return pids

    def isolate(self, host: str) -> None:
        self._require_up()
        self._check_host(host)
        for p in topo.host_paths(host):
            net.set_link(self.prefix, host, p.name, up=False)
        self._record_fault(f"isolate {host}")

    def link(self, host: str, path: str, up: bool) -> None:
        self._require_up()
        self._check_host(host)
        self._check_path(host, path)
        net.set_link(self.prefix, host, path, up)
        if not up:
            self._record_fault(f"link-down {host} {path}")
        else:
            faults = [
                f for f in self.meta().get("faults", []) if f["fault"] != f"link-down {host} {path}"
            ]
            self._save_meta(faults=faults)

    def netem(self, host: str, path: str, spec: str) -> None:
        self._require_up()
        self._check_host(host)
        self._check_path(host, path)
        try:
            net.netem_start(self.prefix, self.dir, host, path, spec)
        except ValueError as exc:
            raise LabError(str(exc)) from exc
        self._record_fault(f"netem {host} {path} {spec}")

    def block(self, host: str, proto: str, port: int) -> None:
        """Drop ``proto`` traffic to ``port`` in and out of ``host`` (a packet filter)."""
        self._require_up()
        self._check_host(host)
        net.block(self.prefix, host, proto, port)
        self._record_fault(f"block {host} {proto} {port}")

    def kill_db(self, host: str, service: str) -> list[int]:
        self._require_up()
        self._check_host(host, db=True)
        pids = self.node(service, host).signal(signal.SIGKILL)
        self._record_fault(f"kill-db {host} {service}")
        wait_until(
            lambda: not [p for p in pids if procs.alive(p)], 10.0, f"{service} on {host} to die"
        )
        return pids

    def stop_db(self, host: str, service: str) -> list[int]:
        self._require_up()
        self._check_host(host, db=True)
        pids = self.node(service, host).signal(signal.SIGSTOP)
        self._record_fault(f"stop-db {host} {service}")
        return pids

    def heal(self) -> list[str]:
        """Undo every fault: impairments removed, links up, processes resumed,
        dead servers started again (as a rebooted host would start them)."""
        self._require_up()
        done = self._undo_faults()
        for service in topo.SERVICES:
            for host in topo.DB_HOSTS:
                node = self.node(service, host)
                if node.ready_mark.exists() and node.pid() is None:
                    self._wait_old_server_gone(node)
                    node.start()
                    done.append(f"started {service} on {host}")
        self._save_meta(faults=[])
        done += self._wait_replication()
        return done

    def _wait_replication(self, timeout: float = 20.0) -> list[str]:
        """Give replicas a bounded time to reconnect; say which did not."""
        late = []
        for service in topo.SERVICES:

            def replicating(service: str = service) -> bool:
                sts = [self.node(service, h).status() for h in topo.DB_HOSTS]
                reps = [s for s in sts if s["role"] == "replica"]
                return all(s.get("streaming") for s in reps)

            try:
                wait_until(replicating, timeout, f"{service} replication", interval=0.1)
            except LabError:
                late.append(f"{service} replication has not resumed within {timeout:g}s")
        return late

    def _undo_faults(self) -> list[str]:
        """Remove impairments, bring every link up, resume stopped processes."""
        done = []
        for host in topo.HOSTS:
            for p in topo.host_paths(host):
                if net.netem_stop(self.prefix, self.dir, host, p.name):
                    done.append(f"netem removed {host}/{p.name}")
        for host in topo.HOSTS:
            if net.unblock(self.prefix, host):
                done.append(f"packet filter removed on {host}")
        net.all_links_up(self.prefix)
        for host in net.all_hosts():
            net.signal_pids(net.ns_pids(self.prefix, host), signal.SIGCONT)
        return done

    def _wait_old_server_gone(self, node: Node) -> None:
        # Children of a SIGKILLed postmaster may still hold its shared memory for a
        # moment; a host runs one PostgreSQL, so any postgres process there is its.
        if isinstance(node, PgNode):
            wait_until(
                lambda: (
                    not [
                        p
                        for p in net.ns_pids(self.prefix, node.host)
                        if _exe(p).endswith("/postgres")
                    ]
                ),
                10.0,
                f"old PostgreSQL processes on {node.host} to exit",
            )

    # -- status ---------------------------------------------------------------

    def status(self, proof: bool = True) -> dict[str, Any]:
        problems: list[str] = []
        have = set(net.lab_namespaces(self.prefix))
        hosts: dict[str, Any] = {}
        for host in net.all_hosts():
            name = net.ns_name(self.prefix, host)
            entry: dict[str, Any] = {"namespace": name, "exists": name in have}
            if name in have:
                entry["links"] = net.links(self.prefix, host)
            else:
                problems.append(f"namespace {name} is missing")
            hosts[host] = entry
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
        meta = self.meta()
        faults = meta.get("faults", [])
        for f in faults:
            problems.append(f"fault active: {f['fault']}")
        services = (
            {
                name: self._service_status(name, proof and not faults, problems)
                for name in topo.SERVICES
            }
            if have
            else {}
        )
        return {
            "prefix": self.prefix,
            "directory": str(self.dir),
            "healthy": not problems,
            "problems": problems,
            "sync": bool(meta.get("sync", False)),
            "gateway": topo.GATEWAY,
            "hosts": hosts,
            "faults": faults,
            "netem": net.netem_active(self.dir),
            "services": services,
        }

    def _service_status(self, name: str, proof: bool, problems: list[str]) -> dict[str, Any]:
        svc = topo.SERVICES[name]
        nodes: dict[str, Any] = {}
        for host in topo.DB_HOSTS:
            st = self.node(name, host).status()
            st["address"] = topo.HOSTS[host].lan
            st["config"] = None  # a node's dbha config, once supervisors exist
            nodes[host] = st
        primaries = [h for h, st in nodes.items() if st["role"] == "primary"]
        replicas = [h for h, st in nodes.items() if st["role"] == "replica"]
        for h, st in nodes.items():
            if not st["running"]:
                problems.append(f"{name}: server on {h} is not running")
            elif st["role"] == "unknown":
                problems.append(f"{name}: server on {h} does not answer: {st.get('error')}")
        if len(primaries) != 1:
            problems.append(
                f"{name}: {len(primaries)} primaries ({', '.join(primaries) or 'none'})"
            )
        for h in replicas:
            if not nodes[h].get("streaming"):
                problems.append(f"{name}: replica on {h} is not replicating")
        result: dict[str, Any] = {
            "engine": svc.engine,
            "primary": primaries[0] if len(primaries) == 1 else None,
            "vip": svc.vip,
            "port": svc.port,
            "database": svc.database,
            "user": svc.app_user,
            "password_file": str(self.layout.secret_path(f"{name}-{svc.app_user}")),
            "heartbeat_port": svc.heartbeat_port,
            "nodes": nodes,
        }
        if proof and len(primaries) == 1 and replicas:
            result["write_proof"] = self.write_proof(name, primaries[0], replicas)
            if not result["write_proof"]["ok"]:
                problems.append(f"{name}: write proof failed: {result['write_proof']['error']}")
        return result

    def write_proof(self, service: str, primary: str, replicas: list[str]) -> dict[str, Any]:
        """Write a row on the primary; read it back on each replica within a bound."""
        token = secrets.token_hex(8)
        start = time.monotonic()
        try:
            self.node(service, primary).write_token(token)
            for r in replicas:
                node = self.node(service, r)

                def arrived(node: Node = node) -> bool:
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

    # -- exec -----------------------------------------------------------------

    def exec_argv(self, host: str, argv: list[str]) -> list[str]:
        if host not in net.all_hosts():
            raise LabError(f"unknown host {host!r} (choose from {', '.join(net.all_hosts())})")
        self._require_up()
        return net.nsexec(self.prefix, host, argv)


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""
