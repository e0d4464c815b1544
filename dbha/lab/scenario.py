"""Fault scenarios against a lab with supervisors: used by the lab tests, the
failover benchmark and the demo.

A scenario starts the client in host c writing through the service's VIP,
injects one fault at a random phase of the write loop, waits (bounded) for
what the supervisors should do, heals, and hands back what was seen: the
client's log, the verifier's verdict (every acknowledged write on the
serving nodes), the VIP holders sampled the whole time, and the times.
It asserts nothing itself; the tests do.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dbha.errors import LabError
from dbha.lab import client as cl
from dbha.lab import net
from dbha.lab import topology as topo
from dbha.lab.core import Lab

# Bounds of the waits (not expectations of speed: a failover takes ~2 s).
FAILOVER_WAIT = 30.0
ACKS_BEFORE = 40
ACKS_AFTER = 20
NODE_CLIENT_PAUSE = 0.02  # the clients on each node's own address write ~50 times a second


class VipWatch:
    """Samples which database hosts hold the VIP on a LAN link that is up (a host
    whose links are down holds the address but nobody can reach it), every
    ``every`` seconds on its own thread, until stopped."""

    def __init__(self, lab: Lab, service: str, every: float = 0.05) -> None:
        self.lab, self.service, self.every = lab, service, every
        self.samples: list[tuple[float, tuple[str, ...]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _holders(self) -> tuple[str, ...]:
        want = f"{topo.SERVICES[self.service].vip}/{topo.LAN_PREFIXLEN}"
        lan = topo.PATHS["lan"].interface
        out = []
        for host in topo.DB_HOSTS:
            try:
                dev = net.links(self.lab.prefix, host).get(lan, {})
            except LabError:
                continue  # a namespace between states: counted at the next sample
            addresses = dev.get("addresses")
            if dev.get("up") and isinstance(addresses, list) and want in addresses:
                out.append(host)
        return tuple(out)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self._holders()))
            self._stop.wait(self.every)

    def __enter__(self) -> VipWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def doubles(self) -> list[tuple[float, tuple[str, ...]]]:
        """Samples that saw two reachable holders at once."""
        return [s for s in self.samples if len(s[1]) > 1]

    def last(self) -> tuple[str, ...]:
        return self.samples[-1][1] if self.samples else ()


# Faults that hit a service's primary and should make its replica take over.
TAKEOVER_FAULTS = ("kill-host", "kill-db", "stop-db")


def primary_fault(lab: Lab, service: str, name: str) -> Callable[[], object]:
    """The fault ``name`` (one of TAKEOVER_FAULTS) on ``service``'s primary as built:
    its host dies, its server is SIGKILLed, or its server is SIGSTOPped (hangs)."""
    primary = topo.SERVICES[service].primary
    faults: dict[str, Callable[[], object]] = {
        "kill-host": lambda: lab.kill_host(primary),
        "kill-db": lambda: lab.kill_db(primary, service),
        "stop-db": lambda: lab.stop_db(primary, service),
    }
    if name not in faults:
        raise LabError(f"no fault {name!r} (one of {', '.join(TAKEOVER_FAULTS)})")
    return faults[name]


@dataclass
class ScenarioOutcome:
    service: str
    fault: str
    log: cl.ClientLog
    verdict: cl.ClientVerdict
    fault_at: float
    heal_at: float
    doubles: list[tuple[float, tuple[str, ...]]]
    vip_after: list[str]
    served_by_after_fault: list[str] = field(default_factory=list)
    # The clients writing to each database host's own address (not the VIP), by host:
    # what a client that bypasses the VIP could write, and where.
    node_logs: dict[str, cl.ClientLog] = field(default_factory=dict)
    node_verdicts: dict[str, cl.ClientVerdict] = field(default_factory=dict)
    lab_down: tuple[str, ...] | None = None  # database hosts whose server is not running

    def writers_overlap(self, deadline: float) -> list[tuple[str, float]]:
        """Writes acknowledged by a node, through any client, later than ``deadline``
        seconds after another node's first write acknowledged after the fault: two
        writable nodes at once beyond the fence deadline. (host, time) of each."""
        acks = [a for a in self.log.acks if a.t > self.fault_at]
        for log in self.node_logs.values():
            acks += [a for a in log.acks if a.t > self.fault_at]
        first: dict[str, float] = {}
        last: dict[str, float] = {}
        for a in acks:
            first[a.node] = min(first.get(a.node, a.t), a.t)
            last[a.node] = max(last.get(a.node, a.t), a.t)
        out = []
        for node, t in last.items():
            for other, t0 in first.items():
                if other != node and t0 < t - deadline and first[node] < t0:
                    out.append((node, t))
        return out

    @property
    def recovery(self) -> float | None:
        return self.verdict.recovery

    def line(self) -> str:
        rec = f"{self.recovery:.3f} s" if self.recovery is not None else "n/a"
        return f"{self.service} {self.fault}: fault to first write {rec}; {self.verdict.summary()}"


def run(
    lab: Lab,
    service: str,
    fault_name: str,
    fault: Callable[[], object],
    out: Path,
    *,
    expect_takeover: bool,
    observe: float = 6.0,
    before_heal: Callable[[], object] | None = None,
    client_args: Sequence[str] = (),
) -> ScenarioOutcome:
    """Run one scenario. With ``expect_takeover``, wait (bounded) until the replica
    acknowledges writes; otherwise watch the client for ``observe`` seconds. Then
    call ``before_heal`` (checks of the faulted state), heal, wait for writes.
    ``client_args`` go to the client (e.g. its timeouts)."""
    svc = topo.SERVICES[service]
    client = cl.start_client(lab, service, out, 240, extra=client_args)
    node_outs = {h: out.with_name(f"{out.stem}-{h}{out.suffix}") for h in topo.DB_HOSTS}
    node_clients = {
        h: cl.start_client(
            lab,
            service,
            node_outs[h],
            240,
            address=topo.HOSTS[h].lan,
            extra=["--pause", str(NODE_CLIENT_PAUSE)],
        )
        for h in topo.DB_HOSTS
    }
    heal_at = fault_at = 0.0
    with VipWatch(lab, service) as watch:
        try:
            cl.wait_for(out, lambda log: len(log.acks) >= ACKS_BEFORE, 30, "acknowledged writes")
            time.sleep(random.uniform(0, 0.3))  # not always the same phase of the write loop
            fault_at = time.monotonic()
            fault()
            if expect_takeover:

                def taken(log: cl.ClientLog) -> bool:
                    after = [a for a in log.acks if a.t > fault_at and a.node == svc.replica]
                    return len(after) >= ACKS_AFTER

                cl.wait_for(out, taken, FAILOVER_WAIT, f"writes acknowledged by {svc.replica}")
            else:
                time.sleep(observe)
            if before_heal is not None:
                before_heal()
            heal_at = time.monotonic()
            lab.heal()
            cl.wait_for(
                out,
                lambda log: sum(a.t > heal_at for a in log.acks) >= ACKS_AFTER,
                FAILOVER_WAIT,
                "writes after heal",
            )
            time.sleep(1.0)  # the pair settles under the watch: no VIP flapping after heal
        finally:
            rc = cl.stop_client(client)
            for c in node_clients.values():
                cl.stop_client(c)
    if rc != 0:
        raise LabError(f"client exited {rc}: {out.with_name(out.name + '.stdout').read_text()}")
    log = cl.read_log(out)
    verdict = cl.verify(lab, service, log, fault_at=fault_at)
    node_logs = {h: cl.read_log(p) for h, p in node_outs.items()}
    node_verdicts = {
        h: cl.verify(lab, service, lg, fault_at=fault_at) for h, lg in node_logs.items()
    }
    return ScenarioOutcome(
        service=service,
        fault=fault_name,
        log=log,
        verdict=verdict,
        fault_at=fault_at,
        heal_at=heal_at,
        doubles=watch.doubles(),
        vip_after=lab.vip_holders(service),
        served_by_after_fault=sorted({a.node for a in log.acks if a.t > fault_at}),
        node_logs=node_logs,
        node_verdicts=node_verdicts,
        lab_down=tuple(h for h in topo.DB_HOSTS if lab.node(service, h).pid() is None),
    )
