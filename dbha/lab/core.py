"""The lab as a whole: ``up``, ``down``, ``status`` and the faults.

``up`` is idempotent and repairs what is missing; ``down`` removes exactly what
``up`` made (the namespaces named PREFIX-{sw,a,b,c}, every process inside them,
by PID, and the lab directory), even after an ``up`` that failed half-way.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbha.errors import LabError
from dbha.lab import net, packages, procs
from dbha.lab import operator as op
from dbha.lab import status as labstatus
from dbha.lab import supervisors as sup
from dbha.lab import topology as topo
from dbha.lab.haproxy import HAProxy
from dbha.lab.layout import DEFAULT_ROOT, Layout
from dbha.lab.maria import MariaNode, wait_replicating
from dbha.lab.pg import PgNode, wait_streaming
from dbha.lab.wait import wait_until

Node = PgNode | MariaNode
VIP_TIMEOUT = 30.0  # supervisors just started: bound on the VIPs reaching the primaries


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
        self.meta_path = self.layout.meta_path
        self.supervisors = sup.Supervisors(self.prefix, self.layout)
        self.haproxy = HAProxy(self.prefix, self.layout)

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

    def supervisor_mode(self) -> sup.Command | None:
        """What runs as the lab's supervisors: "run" (dbha run), "hold" (the stand-in)
        or None (no supervisors: the pairs are left alone)."""
        mode = self.meta().get("supervisors")
        return mode if mode in sup.COMMANDS else None

    def up(
        self,
        sync: bool | None = None,
        install: bool = True,
        supervisors: bool | None = None,
        profile: str | None = None,
        pairs: str | None = None,
        haproxy: bool | None = None,
    ) -> Timings:
        """Build or repair the whole lab; returns how long each step took.

        Every node's dbha config is (re)written. ``supervisors``: start one
        supervisor per service on each database host (True), none (False: the
        pairs are left to the tests), or keep the lab's earlier choice (None; a new
        lab follows ``supervisors.START_BY_DEFAULT``). ``pairs``: build the pairs as
        dbha wants them ("dbha") or as an operator following each engine's own
        documentation would ("operator", see ``dbha.lab.operator``), or keep the
        lab's choice (None; a new lab: "dbha"). Changing it rebuilds both pairs.
        ``haproxy``: run HAProxy in host c, routing by the supervisors' HTTP doors
        (dbha.lab.haproxy; it needs the supervisors), or not, or keep (None)."""
        mode: sup.Command | None
        if supervisors is None:
            meta = self.meta()
            mode = self.supervisor_mode() if "supervisors" in meta else None
            if "supervisors" not in meta and sup.START_BY_DEFAULT:
                mode = "run"
        else:
            mode = "run" if supervisors else None
        if mode == "run":
            sup.require_run()  # before anything is built
        t = Timings()
        if install:
            packages.ensure()
            t.mark("packages")
        self.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)  # the database users must traverse it
        if sync is None:
            sync = bool(self.meta().get("sync", False))
        if profile is None:
            profile = str(self.meta().get("profile", "default"))
        if profile not in topo.PROFILES:
            raise LabError(f"no profile {profile!r} (one of {', '.join(topo.PROFILES)})")
        if haproxy is None:
            haproxy = bool(self.meta().get("haproxy", False))
        if haproxy and mode != "run":
            raise LabError("--haproxy routes by the supervisors' HTTP doors: start supervisors")
        built = self.layout.pairs()
        if pairs is None:
            pairs = built
        try:
            op.check_pairs(pairs)
        except ValueError as exc:
            raise LabError(str(exc)) from exc
        if pairs != built and self.meta_path.exists():
            # The pairs were built the other way: nothing of them is worth keeping.
            for service in topo.SERVICES:
                self._discard_pair(service)
        self._save_meta(
            prefix=self.prefix,
            sync=sync,
            profile=profile,
            pairs=pairs,
            haproxy=haproxy,
            created=self.meta().get("created", time.time()),
        )
        net.build(self.prefix)
        self._undo_faults()
        t.mark("network")
        self._up_service("pg", sync, supervised=mode == "run")
        t.mark("postgresql")
        self._up_service("mariadb", sync, supervised=mode == "run")
        t.mark("mariadb")
        changed = self.supervisors.write_configs(sync, profile)
        t.mark("configs")
        self._save_meta(faults=[])
        if mode is not None:
            self._start_supervisors(mode, restart=changed)
            t.mark("supervisors")
        else:
            self.stop_supervisors()
        if haproxy:
            self.haproxy.start()
            self._wait_routed()
            t.mark("haproxy")
        else:
            self.haproxy.stop()
        return t

    def _wait_routed(self) -> None:
        """With HAProxy on: wait (bounded) until its write backend of each service
        routes to exactly one node (it marks a primary up after its rise checks)."""
        if not self.meta().get("haproxy"):
            return
        for service in topo.SERVICES:
            name = f"{service}_write"

            def one(name: str = name) -> bool:
                servers = self.haproxy.servers().get(name, {})
                return sum(state == "UP" for state in servers.values()) == 1

            wait_until(one, VIP_TIMEOUT, f"HAProxy to route {service} writes to one node", 0.2)

    # -- supervisors ----------------------------------------------------------

    def start_supervisors(self, command: sup.Command = "run") -> list[str]:
        """Start a supervisor (``command``: "run", or the "hold" stand-in) for each
        service on each database host, if not running; with "run", wait (bounded)
        until each VIP is on its primary. Returns what was started."""
        self._require_up()
        if command == "run":
            sup.require_run()
        meta = self.meta()
        self.supervisors.write_configs(
            bool(meta.get("sync", False)), str(meta.get("profile", "default"))
        )
        return self._start_supervisors(command)

    def _start_supervisors(
        self, command: sup.Command, restart: list[tuple[str, str]] | None = None
    ) -> list[str]:
        started = []
        for service, host in self.supervisors.all():
            if (service, host) in (restart or []):
                self.supervisors.stop(service, host)  # its config changed
            if self.supervisors.command(service, host) != command:
                self.supervisors.start(service, host, command)
                started.append(f"supervisor {service} on {host}")
        self._save_meta(supervisors=command)
        if command == "hold":
            for service, host in self.supervisors.all():
                self.supervisors.wait_held(service, host)
        else:
            for service in topo.SERVICES:
                self._wait_vip(service)
        return started

    def stop_supervisors(self) -> list[str]:
        """Stop every supervisor (SIGTERM, bounded) and take the VIPs away: the lab is
        back to its shape without supervisors."""
        stopped = [
            f"supervisor {s} on {h}"
            for s, h in self.supervisors.all()
            if self.supervisors.stop(s, h)
        ]
        self._save_meta(supervisors=None)
        if net.lab_namespaces(self.prefix):
            for service in topo.SERVICES:
                self._drop_vip(service)
        return stopped

    def vip_holders(self, service: str) -> list[str]:
        """The database hosts that have ``service``'s VIP on their LAN interface."""
        want = f"{topo.SERVICES[service].vip}/{topo.LAN_PREFIXLEN}"
        lan = topo.PATHS["lan"].interface
        have = set(net.lab_namespaces(self.prefix))
        holders = []
        for h in topo.DB_HOSTS:
            if net.ns_name(self.prefix, h) not in have:
                continue
            addresses = net.links(self.prefix, h).get(lan, {}).get("addresses")
            if isinstance(addresses, list) and want in addresses:
                holders.append(h)
        return holders

    def _drop_vip(self, service: str, hosts: list[str] | None = None) -> None:
        """Take ``service``'s VIP off ``hosts`` (default: every database host)."""
        vip = f"{topo.SERVICES[service].vip}/{topo.LAN_PREFIXLEN}"
        for host in self.vip_holders(service):
            if hosts is not None and host not in hosts:
                continue
            net.ip(self.prefix, host, "addr", "del", vip, "dev", topo.PATHS["lan"].interface)

    def _wait_vip(self, service: str) -> None:
        def on_primary() -> bool:
            sts = {h: self.node(service, h).status() for h in topo.DB_HOSTS}
            primaries = [
                h for h, st in sts.items() if st["role"] == "primary" and st.get("writable")
            ]
            return len(primaries) == 1 and self.vip_holders(service) == primaries

        try:
            wait_until(on_primary, VIP_TIMEOUT, f"the {service} VIP on its primary", 0.2)
        except LabError as exc:
            logs = ", ".join(str(self.supervisors.paths(service, h).log) for h in topo.DB_HOSTS)
            raise LabError(f"{exc}; see the supervisor logs: {logs}") from exc

    def _up_service(self, service: str, sync: bool, supervised: bool = False) -> None:
        svc = topo.SERVICES[service]
        primary, replica = self.node(service, svc.primary), self.node(service, svc.replica)
        if not (primary.ready_mark.exists() and replica.ready_mark.exists()):
            # A node is (re)built: no supervisor may act on the pair meanwhile, and
            # what they persisted describes a pair that no longer exists.
            self._halt_supervisors(service)
        if primary.ready_mark.exists():
            if primary.start() and isinstance(primary, MariaNode) and not supervised:
                primary.open()  # an operator's server starts read-only: its operator opens it
            primary.apply_sync(sync)
        else:
            # A node never finished: it holds nothing worth keeping. Rebuild the pair.
            replica.ready_mark.unlink(missing_ok=True)
            for node in (replica, primary):  # a half-made primary may run: its files go
                if isinstance(node, PgNode):
                    node.stop("immediate")
                else:
                    node.stop()
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

        For tests that change roles (promote, rejoin) and want the original pair back.
        The pair is built as the lab builds its pairs (``pairs`` in its meta)."""
        sync = bool(self.meta().get("sync", False))
        mode = self.supervisor_mode()
        self._discard_pair(service)
        self._up_service(service, sync, supervised=mode == "run")
        if mode is not None:
            for host in topo.DB_HOSTS:
                self.supervisors.start(service, host, mode)
            if mode == "run":
                self._wait_vip(service)
                self._wait_routed()
            else:
                for host in topo.DB_HOSTS:
                    self.supervisors.wait_held(service, host)

    def _discard_pair(self, service: str) -> None:
        """Stop ``service``'s supervisors and servers and unmark its nodes, so that
        the next ``_up_service`` builds the pair from nothing."""
        self._halt_supervisors(service)
        for host in topo.DB_HOSTS:
            node = self.node(service, host)
            node.ready_mark.unlink(missing_ok=True)
            if node.pid() is not None:
                node.signal(signal.SIGCONT)
                if isinstance(node, PgNode):
                    node.stop("immediate")
                else:
                    node.stop()

    def _halt_supervisors(self, service: str) -> None:
        """Stop ``service``'s supervisors, forget their state, take its VIP away."""
        for host in topo.DB_HOSTS:
            self.supervisors.stop(service, host)
            self.supervisors.reset_state(service, host)
        if net.lab_namespaces(self.prefix):
            self._drop_vip(service)

    def down(self) -> Timings:
        """Remove every process, namespace and file of this lab. Safe to repeat."""
        t = Timings()
        # Supervisors first: nothing may restart, promote or fence while the lab goes.
        self.supervisors.kill_all()
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
        dead servers and supervisors started again (as a rebooted host would start
        them). A killed host loses its VIPs before its links come up, as a reboot
        loses addresses added at run time."""
        self._require_up()
        killed = [
            f["fault"].split()[1]
            for f in self.meta().get("faults", [])
            if f["fault"].startswith("kill-host ")
        ]
        for service in topo.SERVICES:
            self._drop_vip(service, killed)
        done = self._undo_faults()
        # dbha supervisors before servers: a revived old primary's server comes back
        # as it was (writable), and its supervisor, already watching, fences it at its
        # first probe instead of after its own start-up. The stand-in checks its
        # config's files, the database's socket among them: it comes after.
        mode = self.supervisor_mode()
        if mode == "run":
            done += self._start_dead_supervisors(mode)
        for service in topo.SERVICES:
            for host in topo.DB_HOSTS:
                node = self.node(service, host)
                if node.ready_mark.exists() and node.pid() is None:
                    self._wait_old_server_gone(node)
                    node.start()
                    if isinstance(node, MariaNode) and mode != "run":
                        node.open()  # nobody else would: an operator's server starts read-only
                    done.append(f"started {service} on {host}")
        if mode == "hold":
            done += self._start_dead_supervisors(mode)
        self._save_meta(faults=[])
        done += self._wait_replication()
        if self.meta().get("haproxy") and mode == "run":
            if self.haproxy.pid() is None:
                self.haproxy.start()
                done.append("started haproxy")
            self._wait_routed()
        return done

    def _start_dead_supervisors(self, mode: sup.Command) -> list[str]:
        started = []
        for service, host in self.supervisors.all():
            if self.supervisors.pid(service, host) is None:
                self.supervisors.start(service, host, mode)
                started.append((service, host))
        for service, host in started:
            self.supervisors.wait_started(service, host, mode)
        return [f"started supervisor {s} on {h}" for s, h in started]

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
        """Hosts, links, servers, supervisors, VIPs and (with ``proof``) a row
        written on each primary and read back on its replica; every problem named."""
        return labstatus.gather(self, proof)

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
