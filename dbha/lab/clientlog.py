"""What the fault-test client recorded, and what it means.

:func:`parse_log` reads the client's JSON lines (:mod:`dbha.lab.client`)
into values and never raises on bad input. The pure helpers compute the
longest pause between acknowledged writes, the pause a fault caused, and the
time from a fault's injection to the first write acknowledged after it took
effect; :func:`missing_rows` compares acknowledged writes with the rows a node
holds. :func:`verify` reads those rows on the lab's nodes and puts it all
together.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbha.errors import LabError
from dbha.lab import topology as topo

if TYPE_CHECKING:
    from dbha.lab.core import Lab

TABLE = "dbha_lab_client"  # run, seq, token, written_at; primary key (run, seq)

# ------------------------------------------------------------------ records


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    token: str
    t: float  # time.monotonic() when the commit returned
    node: str  # the node that acknowledged it
    notice: str | None = None  # a server notice sent with the commit, if any


@dataclass(frozen=True, slots=True)
class Failure:
    seq: int | None  # None: a connect failed, no row was attempted
    t: float
    phase: str  # connect | write | commit (commit: outcome unknown)
    error: str


@dataclass(frozen=True, slots=True)
class ClientLog:
    """What one client run recorded. Parsing never raises: lines that cannot be
    read (a line cut short by a kill) are counted in ``unreadable``."""

    run: str = ""
    engine: str = ""
    address: str = ""
    port: int = 0
    started: float | None = None
    stopped: float | None = None
    stop_reason: str | None = None
    acks: tuple[Ack, ...] = ()
    failures: tuple[Failure, ...] = ()
    connects: tuple[tuple[float, str], ...] = ()
    unreadable: int = 0

    @property
    def ack_times(self) -> list[float]:
        return [a.t for a in self.acks]


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def parse_log(lines: Iterable[str]) -> ClientLog:
    """Read a client's JSON lines; never raises on bad input."""
    head: dict[str, Any] = {}
    acks: list[Ack] = []
    fails: list[Failure] = []
    connects: list[tuple[float, str]] = []
    stopped: float | None = None
    reason: str | None = None
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if not isinstance(rec, dict):
            bad += 1
            continue
        kind, t = rec.get("kind"), _num(rec.get("t"))
        seq, token = rec.get("seq"), rec.get("token")
        if t is None:
            bad += 1
        elif kind == "start" and not head:
            head = rec
        elif kind == "ack" and isinstance(seq, int) and isinstance(token, str):
            notice = rec.get("notice")
            acks.append(
                Ack(
                    seq,
                    token,
                    t,
                    str(rec.get("node", "")),
                    notice if isinstance(notice, str) else None,
                )
            )
        elif kind == "fail":
            fails.append(
                Failure(
                    seq if isinstance(seq, int) else None,
                    t,
                    str(rec.get("phase", "")),
                    str(rec.get("error", "")),
                )
            )
        elif kind == "connect":
            connects.append((t, str(rec.get("node", ""))))
        elif kind == "stop":
            stopped, reason = t, str(rec.get("reason", ""))
        else:
            bad += 1
    port = head.get("port")
    return ClientLog(
        run=str(head.get("run", "")),
        engine=str(head.get("engine", "")),
        address=str(head.get("address", "")),
        port=port if isinstance(port, int) else 0,
        started=_num(head.get("t")),
        stopped=stopped,
        stop_reason=reason,
        acks=tuple(acks),
        failures=tuple(fails),
        connects=tuple(connects),
        unreadable=bad,
    )


def read_log(path: str | os.PathLike[str]) -> ClientLog:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_log(f)
    except OSError as exc:
        raise LabError(f"cannot read the client log {path}: {exc.strerror or exc}") from exc


# ------------------------------------------------------------- pure figures


@dataclass(frozen=True, slots=True)
class Pause:
    """A stretch without acknowledged writes, between two consecutive acks."""

    start: float  # the ack before the pause
    end: float  # the ack after it

    @property
    def seconds(self) -> float:
        return self.end - self.start


def pauses(times: Sequence[float], at_least: float = 0.0) -> list[Pause]:
    """The gaps between consecutive acknowledged writes (in time order) that last at
    least ``at_least`` seconds, longest first."""
    ordered = sorted(times)
    gaps = [Pause(a, b) for a, b in pairwise(ordered) if b - a >= at_least]
    return sorted(gaps, key=lambda p: p.seconds, reverse=True)


def longest_pause(times: Sequence[float]) -> Pause | None:
    """The longest gap between consecutive acknowledged writes; None with < 2 acks."""
    gaps = pauses(times)
    return gaps[0] if gaps else None


def first_ack_after(times: Sequence[float], t: float) -> float | None:
    """When the first write after ``t`` was acknowledged; None if none was."""
    later = [x for x in times if x > t]
    return min(later) if later else None


def effect_at(fault_at: float, failure_times: Sequence[float]) -> float:
    """When a fault injected at ``fault_at`` took effect as the client saw it: its
    first failure at or after the injection (writes in flight while the fault
    lands still succeed); ``fault_at`` itself if it saw none."""
    after = [x for x in failure_times if x >= fault_at]
    return min(after) if after else fault_at


def recovery(
    times: Sequence[float], fault_at: float, failure_times: Sequence[float] = ()
) -> float | None:
    """Seconds from a fault's injection to the first write acknowledged after it
    took effect (see :func:`effect_at`); None if no write was acknowledged since."""
    first = first_ack_after(times, effect_at(fault_at, failure_times))
    return None if first is None else first - fault_at


def outage(
    times: Sequence[float], fault_at: float, failure_times: Sequence[float] = ()
) -> Pause | None:
    """The pause the fault caused: from the last acknowledged write before it took
    effect to the first one after; None without acks on both sides."""
    at = effect_at(fault_at, failure_times)
    before = [x for x in times if x <= at]
    after = first_ack_after(times, at)
    return Pause(max(before), after) if before and after is not None else None


def missing_rows(acks: Iterable[Ack], found: Mapping[int, str]) -> list[int]:
    """Sequence numbers of acknowledged writes whose row is absent from ``found``
    (seq -> token, as read on a node) or holds another token."""
    return sorted(a.seq for a in acks if found.get(a.seq) != a.token)


def node_changes(acks: Sequence[Ack]) -> list[tuple[float, str, str]]:
    """(time, from, to) each time the acknowledging node changed, in time order.
    A pair that went back and forth would show here as more than one change."""
    ordered = sorted(acks, key=lambda a: a.t)
    return [(b.t, a.node, b.node) for a, b in pairwise(ordered) if a.node != b.node]


def wait_for(path: Path, cond: Callable[[ClientLog], bool], timeout: float, what: str) -> ClientLog:
    """Re-read the client's log until ``cond`` holds; LabError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        log = read_log(path) if path.exists() else ClientLog()
        if cond(log):
            return log
        if time.monotonic() >= deadline:
            raise LabError(f"gave up waiting for the client ({what}) after {timeout:g} s")
        time.sleep(0.05)


# ----------------------------------------------------------------- verifier


@dataclass(frozen=True, slots=True)
class ClientVerdict:
    """What the verifier found. ``missing`` maps each checked node to the
    sequence numbers of acknowledged writes it lacks."""

    run: str
    acked: int
    failures: int
    primary: str
    replicas: tuple[str, ...]
    fenced: tuple[str, ...]  # read-only primaries (out of the pair): not checked
    missing: dict[str, list[int]]
    longest_pause: Pause | None
    recovery: float | None  # fault -> first acknowledged write after it took effect, s
    outage: Pause | None  # the pause the fault caused
    node_changes: list[tuple[float, str, str]]

    @property
    def lost(self) -> bool:
        return any(self.missing.values())

    def summary(self) -> str:
        lp = f"{self.longest_pause.seconds:.3f} s" if self.longest_pause else "n/a"
        rec = f"{self.recovery:.3f} s" if self.recovery is not None else "n/a"
        if self.outage is not None:
            rec += f" (write pause {self.outage.seconds:.3f} s)"
        lost = {h: len(v) for h, v in self.missing.items()}
        return (
            f"run {self.run}: {self.acked} acknowledged, {self.failures} failures; "
            f"primary {self.primary}, missing per node {lost}; longest pause {lp}; "
            f"fault to first write {rec}; node changes {len(self.node_changes)}"
        )


def rows_on(lab: Lab, service: str, host: str, run: str) -> dict[int, str]:
    """seq -> token of a run's rows on one node (read over its unix socket)."""
    from dbha.lab.maria import MariaNode
    from dbha.lab.pg import PgNode

    node = lab.node(service, host)
    sql = f"SELECT seq, token FROM {TABLE} WHERE run = %s"
    if isinstance(node, PgNode):
        import psycopg

        try:
            with node.connect("app", "app") as c:
                return {int(r["seq"]): str(r["token"]) for r in c.execute(sql, (run,))}
        except psycopg.Error as exc:
            raise LabError(f"{service} on {host}: cannot read the client's rows: {exc}") from exc
    assert isinstance(node, MariaNode)
    rows = node.query(sql, (run,), user="app", database="app")
    return {int(r["seq"]): str(r["token"]) for r in rows}


def verify(
    lab: Lab,
    service: str,
    log: ClientLog,
    fault_at: float | None = None,
    replica_timeout: float = 20.0,
    settle_timeout: float = 10.0,
) -> ClientVerdict:
    """Check every acknowledged write of ``log`` on the current primary (exactly one
    writable primary is required, waited for up to ``settle_timeout`` seconds) and
    on every replica, giving replicas up to ``replica_timeout`` seconds to catch
    up; compute the pause and recovery figures.
    A read-only primary (fenced, needing a resync) is not checked: it is out of the
    pair and may rightly lack what was written after it stopped serving."""
    if not log.run:
        raise LabError("the client log has no start record")
    deadline = time.monotonic() + settle_timeout
    while True:
        sts = {h: lab.node(service, h).status() for h in topo.DB_HOSTS}
        primaries = [h for h, st in sts.items() if st["role"] == "primary" and st.get("writable")]
        if len(primaries) == 1:
            break
        if time.monotonic() >= deadline:
            raise LabError(
                f"{service}: {len(primaries)} writable primaries ({', '.join(primaries)}) "
                f"after {settle_timeout:g} s; cannot verify"
            )
        time.sleep(0.1)
    primary = primaries[0]
    replicas = tuple(h for h, st in sts.items() if st["role"] == "replica")
    fenced = tuple(h for h, st in sts.items() if st["role"] == "primary" and h != primary)
    missing = {primary: missing_rows(log.acks, rows_on(lab, service, primary, log.run))}
    for host in replicas:
        deadline = time.monotonic() + replica_timeout
        while True:
            missing[host] = missing_rows(log.acks, rows_on(lab, service, host, log.run))
            if not missing[host] or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    times, failed = log.ack_times, [f.t for f in log.failures]
    return ClientVerdict(
        run=log.run,
        acked=len(log.acks),
        failures=len(log.failures),
        primary=primary,
        replicas=replicas,
        fenced=fenced,
        missing=missing,
        longest_pause=longest_pause(times),
        recovery=recovery(times, fault_at, failed) if fault_at is not None else None,
        outage=outage(times, fault_at, failed) if fault_at is not None else None,
        node_changes=node_changes(log.acks),
    )
