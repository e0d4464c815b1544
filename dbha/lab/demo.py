"""``dbha lab demo``: a real failover of each pair, watched by a client, and the
old primary brought back with ``dbha resync``, as an operator would do it.

The steps, each bounded in time and printed as it goes:

1. ``lab up`` (synchronous replication, a ``dbha run`` supervisor per service
   on each database host), the lab's status, and ``dbha status`` on host b;
2. PostgreSQL: a client in host c writes through the VIP; host a (the
   primary) dies; the figures of the takeover, the verifier's result, and
   ``dbha status`` on b;
3. heal: a comes back fenced, needing a resync (``dbha status`` on a);
   ``dbha resync`` on a; a streams from b and both supervisors agree; every
   acknowledged write is on both nodes;
4. MariaDB: the same with its primary's server SIGKILLed on b (its supervisor
   alive): a takes over; heal; ``dbha resync`` on b;
5. a summary table; the lab is always torn down.

:meth:`Demo.run` is True only when every check passed. Nothing is asserted on
timings: they are measured and printed.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbha import proc
from dbha.errors import CommandFailed, CommandTimeout, DbhaError, LabError
from dbha.lab import client as cl
from dbha.lab import topology as topo
from dbha.lab.core import Lab
from dbha.lab.scenario import VipWatch
from dbha.lab.status import render_status
from dbha.lab.wait import wait_until

# Bounds of the waits (not expectations of speed).
ACKS_BEFORE = 40  # acknowledged writes before the fault
ACKS_AFTER = 20  # ... by the new primary before the takeover counts as done
CLIENT_START_WAIT = 30.0
TAKEOVER_WAIT = 30.0
AFTER_HEAL_WAIT = 30.0
FENCED_WAIT = 20.0  # the healed old primary says it needs a resync
RESYNC_TIMEOUT = 120.0  # `dbha resync` itself
AGREE_WAIT = 60.0  # after the resync: streaming, and both supervisors agree
MARK_WAIT = 10.0  # a primary's replica-not-in-sync mark to clear
STATUS_TIMEOUT = 20.0  # one `dbha status` (the peer query alone may take 2 s)
CLIENT_DURATION = 600.0  # the client stops itself after this long at the latest

# What a supervisor logs when its primary sets and clears the replica-not-in-sync mark.
MARK_SET = "primary-sync-fallback:"
MARK_CLEARED = "primary-sync-restored:"
REJOINED = "event rejoined: by "
# The supervisor's decision line for a resync request (done, failed or refused).
RESYNC_DECIDED = re.compile(r" dbha: (resync|request-refused): ")


@dataclass(frozen=True, slots=True)
class Act:
    """One failover of the demo: which service, what fault, who takes over."""

    service: str
    fault: str  # shown to the operator, e.g. "host a dies (kill-host)"
    short: str  # for the summary table
    inject: Callable[[Lab], object]

    @property
    def old(self) -> str:
        return topo.SERVICES[self.service].primary

    @property
    def new(self) -> str:
        return topo.SERVICES[self.service].replica


ACTS = (
    Act("pg", "host a dies (kill-host: every process frozen and killed, links down)",
        "kill-host a", lambda lab: lab.kill_host("a")),
    Act("mariadb", "the primary's server on b is SIGKILLed (kill-db; its supervisor lives)",
        "kill-db b", lambda lab: lab.kill_db("b", "mariadb")),
)  # fmt: skip


@dataclass
class Row:
    """What one act showed, for the summary table."""

    service: str
    fault: str
    first_write: float | None = None  # fault -> first acknowledged write, s
    writes_down: float | None = None  # the write pause the fault caused, s
    acked: int | None = None
    lost: int | None = None
    resync: str = "-"


class Demo:
    """The demo on ``lab``; ``echo`` prints one line (click.echo, print, a list's append)."""

    def __init__(self, lab: Lab, echo: Callable[[str], None]) -> None:
        self.lab, self.echo = lab, echo
        self.failed: list[str] = []
        self.warnings: list[str] = []
        self.rows: list[Row] = []

    # -- output and checks ----------------------------------------------------

    def head(self, text: str) -> None:
        self.echo(f"== {text}")

    def say(self, text: str) -> None:
        self.echo(f"   {text}")

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        """Print one check; remember it if it failed."""
        if ok:
            self.say(f"ok: {what}")
        else:
            self.failed.append(what)
            self.say(f"FAILED: {what}" + (f" ({detail})" if detail else ""))
        return ok

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.say(f"WARNING: {text}")

    # -- the whole demo -------------------------------------------------------

    def run(self) -> bool:
        """Every step, then the summary; the lab is torn down whatever happens.
        True only when every check passed."""
        started = time.monotonic()
        try:
            self.up()
            for act in ACTS:
                try:
                    self.failover(act)
                except DbhaError as exc:
                    self.check(False, f"{act.service}: the demo could not go on", str(exc))
            self.summary()
        except DbhaError as exc:
            self.check(False, "the demo could not go on", str(exc))
        finally:
            self.head(f"dbha lab down (prefix {self.lab.prefix})")
            try:
                t = self.lab.down()
                self.say(f"lab {self.lab.prefix} is down in {t.total:.1f}s")
            except DbhaError as exc:
                self.check(False, "lab down", str(exc))
        total = time.monotonic() - started
        verdict = "every check passed" if not self.failed else f"{len(self.failed)} check(s) FAILED"
        warned = f", {len(self.warnings)} warning(s)" if self.warnings else ""
        self.head(f"demo done in {total:.1f}s: {verdict}{warned}")
        for what in self.failed:
            self.say(f"failed: {what}")
        return not self.failed

    def up(self) -> None:
        if self.lab.exists():
            self.head(f"a lab {self.lab.prefix} exists: tearing it down first")
            self.lab.down()
        self.head(f"dbha lab up --sync --supervisors (prefix {self.lab.prefix})")
        t = self.lab.up(sync=True, supervisors=True)
        self.say(f"up in {t.total:.1f}s: " + ", ".join(f"{k} {v:.1f}s" for k, v in t.steps))
        self.head("dbha lab status")
        st = self.lab.status()
        self.echo(render_status(st))
        self.check(st["healthy"], "the lab is healthy", "; ".join(st["problems"]))
        self.head("dbha status on b (pg), as an operator there sees it")
        self.show_status("pg", "b")

    # -- one failover, heal and resync -----------------------------------------

    def failover(self, act: Act) -> None:
        svc = topo.SERVICES[act.service]
        row = Row(act.service, act.short)
        self.rows.append(row)
        self.head(f"{act.service} ({svc.engine}): primary {act.old}, replica {act.new}")
        self.ready_for_failover(act)
        out = self.lab.dir / f"demo-{act.service}.jsonl"
        out.unlink(missing_ok=True)
        client = cl.start_client(self.lab, act.service, out, CLIENT_DURATION)
        self.say(f"a client in host c writes through the VIP {svc.vip}:{svc.port}")
        fault_at = 0.0
        with VipWatch(self.lab, act.service) as watch:
            try:
                cl.wait_for(
                    out, lambda log: len(log.acks) >= ACKS_BEFORE, CLIENT_START_WAIT, "writes"
                )
                time.sleep(random.uniform(0, 0.3))  # not always the same phase of the loop
                self.head(f"{act.service}: fault: {act.fault}")
                fault_at = time.monotonic()
                act.inject(self.lab)
                self.took_over(act, out, fault_at, row)
                self.heal(act, out)
                self.resync(act, row)
            finally:
                rc = cl.stop_client(client)
        self.check(rc == 0, "the client ran to the end", f"exit {rc}")
        self.verify(act, out, fault_at, watch, row)

    def took_over(self, act: Act, out: Path, fault_at: float, row: Row) -> None:
        def taken(log: cl.ClientLog) -> bool:
            return sum(a.t > fault_at and a.node == act.new for a in log.acks) >= ACKS_AFTER

        log = cl.wait_for(out, taken, TAKEOVER_WAIT, f"writes acknowledged by {act.new}")
        failed = [f.t for f in log.failures]
        row.first_write = cl.recovery(log.ack_times, fault_at, failed)
        pause = cl.outage(log.ack_times, fault_at, failed)
        row.writes_down = None if pause is None else pause.seconds
        before = [a for a in log.acks if a.t <= fault_at]
        after = [a for a in log.acks if a.t > fault_at]
        first = f"{row.first_write:.3f} s" if row.first_write is not None else "n/a"
        down = f"{row.writes_down:.3f} s" if row.writes_down is not None else "n/a"
        self.say(
            f"{act.service} failover: {act.old} -> {act.new} in {first} "
            f"(fault to first acknowledged write through the VIP; writes down {down})"
        )
        self.say(
            f"acknowledged writes: {len(before)} before the fault (served by "
            f"{_nodes(before)}), {len(after)} since (served by {_nodes(after)})"
        )
        self.check(
            {a.node for a in before} == {act.old} and {a.node for a in after} <= {act.old, act.new},
            f"{act.old} served before, {act.new} after",
        )
        verdict = cl.verify(self.lab, act.service, log, fault_at=fault_at)
        lost = sum(len(v) for v in verdict.missing.values())
        self.check(
            verdict.primary == act.new and lost == 0,
            f"verifier: all {verdict.acked} acknowledged writes are on the new primary "
            f"{verdict.primary}, {lost} lost",
            verdict.summary(),
        )
        self.head(f"dbha status on {act.new} ({act.service})")
        st = self.show_status(act.service, act.new)
        local = st.get("local") or {}
        ok = local.get("role") == "primary" and local.get("epoch") == 1
        what = f"{act.new}'s supervisor: primary at epoch 1"
        if act.short.startswith("kill-host"):
            paths = local.get("paths") or {}
            ok = ok and bool(paths) and not any(p.get("up") for p in paths.values())
            what += ", its peer silent on every path"
        self.check(ok, what, str(local.get("summary")))

    def heal(self, act: Act, out: Path) -> None:
        self.head(f"dbha lab heal: {act.old} comes back")
        heal_at = time.monotonic()
        done = self.lab.heal()
        self.say("healed: " + ("; ".join(done) if done else "nothing to undo"))
        cl.wait_for(
            out,
            lambda log: sum(a.t > heal_at for a in log.acks) >= ACKS_AFTER,
            AFTER_HEAL_WAIT,
            "writes after heal",
        )

        def fenced() -> bool:
            st = self.status_json(act.service, act.old).get("local") or {}
            db = self.lab.node(act.service, act.old).status()
            return bool(st.get("needs_resync")) and not db.get("writable")

        with contextlib.suppress(LabError):  # the check below says what was seen
            wait_until(fenced, FENCED_WAIT, f"{act.old} to say it needs a resync", 0.3)
        self.head(f"dbha status on {act.old} ({act.service})")
        st = self.show_status(act.service, act.old).get("local") or {}
        db = self.lab.node(act.service, act.old).status()
        self.check(
            bool(st.get("needs_resync")) and not db.get("writable"),
            f"{act.old} is fenced (its database refuses writes) and says it needs a resync",
            f"needs_resync {st.get('needs_resync')}, database {db.get('role')} "
            f"writable {db.get('writable')}",
        )

    def resync(self, act: Act, row: Row) -> None:
        cfg = str(self.lab.supervisors.paths(act.service, act.old).config)
        sups = self.lab.supervisors
        mark = len(sups.log_since_start(act.service, act.old))
        started = time.monotonic()
        ok, why = self.ask_resync(act, cfg, force=False)
        forced = False
        if not ok and "errant" in why:
            self.say(
                f"{act.old} holds transactions {act.new} lacks: what it committed as the fault "
                "hit, never acknowledged to the client (the verifier below checks that). An "
                "operator keeps them aside and re-clones the node:"
            )
            ok, why = self.ask_resync(act, cfg, force=True)
            forced = True
        if not self.check(ok, f"dbha resync of {act.old}", why):
            row.resync = "FAILED"
            return
        log = sups.log_since_start(act.service, act.old)[mark:]
        at = log.rfind(REJOINED)
        method = log[at + len(REJOINED) :].splitlines()[0] if at >= 0 else "? (not logged)"
        row.resync = method.split(";")[0] + (" (--force)" if forced else "")
        self.say(f"{act.service} resync: {act.old} rejoined by {method}")
        up = topo.HOSTS[act.new].lan
        seen: dict[str, Any] = {}

        def agree() -> bool:
            db = self.lab.node(act.service, act.old).status()
            mine = self.status_json(act.service, act.old)
            theirs = self.status_json(act.service, act.new)
            seen.update(db=db, mine=mine.get("local"), theirs=theirs.get("local"))
            local, peer = mine.get("local") or {}, theirs.get("local") or {}
            return (
                db.get("role") == "replica"
                and bool(db.get("streaming"))
                and db.get("upstream") == up
                and local.get("role") == "replica"
                and local.get("needs_resync") is False
                and local.get("epoch") == peer.get("epoch") == 1
                and peer.get("role") == "primary"
            )

        try:
            wait_until(agree, AGREE_WAIT, f"{act.old} to stream from {act.new}", 0.3)
            ok = True
        except LabError:
            ok = False
        waited = time.monotonic() - started
        self.check(
            ok,
            f"{act.old} streams from {act.new} and both supervisors agree "
            f"({act.old} replica, {act.new} primary, epoch 1, no resync needed) "
            f"{waited:.1f}s after the resync began",
            json.dumps(seen, default=str)[:600],
        )
        self.head(f"dbha status on {act.old} ({act.service})")
        self.show_status(act.service, act.old)

    def ask_resync(self, act: Act, cfg: str, force: bool) -> tuple[bool, str]:
        """Run ``dbha resync`` on the old primary; (done, why not). Whether it was done
        is read from the supervisor's decision line as well as from the answer."""
        args = ["resync", "-c", cfg, *(["--force"] if force else [])]
        self.head(f"on {act.old}: dbha {' '.join(args)}")
        sups = self.lab.supervisors
        mark = len(sups.log_since_start(act.service, act.old))
        started = time.monotonic()
        res = self.dbha(act.old, args, RESYNC_TIMEOUT)
        took = time.monotonic() - started
        for line in (res.stdout + res.stderr).strip().splitlines():
            self.say(f"> {line}")

        def said() -> list[str]:
            new = sups.log_since_start(act.service, act.old)[mark:]
            return [ln for ln in new.splitlines() if RESYNC_DECIDED.search(ln)]

        with contextlib.suppress(LabError):  # the answer may come before the log line
            wait_until(lambda: bool(said()), 5.0, "the supervisor's decision line", 0.1)
        whys = [why for line in said() if (why := _not_done(line)) is not None]
        if res.returncode == 0 and whys:
            self.warn(
                f"dbha resync answered {res.stdout.strip()!r} with exit 0, yet its "
                "supervisor did not resync (its log says why)"
            )
        if res.returncode != 0 or whys:
            why = whys[-1] if whys else (res.stderr or res.stdout).strip()
            self.say(f"the resync was not done ({took:.1f}s): {why}")
            return False, why
        self.say(f"dbha resync exit 0 in {took:.1f}s")
        return True, ""

    def verify(self, act: Act, out: Path, fault_at: float, watch: VipWatch, row: Row) -> None:
        log = cl.read_log(out)
        verdict = cl.verify(self.lab, act.service, log, fault_at=fault_at)
        lost = sorted({seq for seqs in verdict.missing.values() for seq in seqs})
        row.acked, row.lost = verdict.acked, len(lost)
        nodes = ", ".join(sorted(verdict.missing))
        self.head(f"{act.service}: the client's whole run, verified")
        self.check(
            not lost and set(verdict.missing) == {act.old, act.new},
            f"{act.service} verified: {verdict.acked} acknowledged writes, {len(lost)} lost "
            f"(each checked on {nodes})",
            verdict.summary(),
        )
        self.check(
            not watch.doubles(),
            "never two reachable hosts with the VIP at once "
            f"({len(watch.samples)} samples every {watch.every:g}s)",
            str(watch.doubles()[:3]),
        )
        holders = self.lab.vip_holders(act.service)
        self.check(holders == [act.new], f"the VIP is on {act.new}", f"held by {holders}")

    # -- before a failover ------------------------------------------------------

    def ready_for_failover(self, act: Act) -> None:
        """The pair as built (rebuilt, with a warning, if an earlier act moved it), and
        its primary without a replica-not-in-sync mark: a replica does not take over
        from a primary that announces one. The mark is read from the primary
        supervisor's log (set by a fallback to asynchronous commits while the replica
        was gone, cleared once it caught up). Raises LabError if it does not clear."""
        svc = topo.SERVICES[act.service]
        st = self.lab.status(proof=False)["services"][act.service]
        if st["primary"] != svc.primary or self.lab.vip_holders(act.service) != [svc.primary]:
            self.warn(f"the {act.service} pair is not as built: rebuilding it")
            self.lab.rebuild_service(act.service)
            return

        def marked() -> bool:
            log = self.lab.supervisors.log_since_start(act.service, svc.primary)
            return log.rfind(MARK_SET) > log.rfind(MARK_CLEARED)

        if marked():
            self.say(
                f"{svc.primary} fell back to asynchronous commits while {svc.replica} was "
                "gone (a replica-not-in-sync mark): waiting for it to be in sync again"
            )
            wait_until(lambda: not marked(), MARK_WAIT, f"{svc.primary} to clear its mark", 0.2)
            self.check(True, f"{svc.replica} is in sync again: the mark is cleared")

    # -- the closing table ------------------------------------------------------

    def summary(self) -> None:
        self.head("summary")
        head = ("service", "fault", "first write", "writes down", "acknowledged", "lost", "resync")
        lines = [head] + [
            (
                r.service,
                r.fault,
                _secs(r.first_write),
                _secs(r.writes_down),
                "-" if r.acked is None else str(r.acked),
                "-" if r.lost is None else f"{r.lost} lost",
                r.resync,
            )
            for r in self.rows
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        for line in lines:
            self.say("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        for w in self.warnings:
            self.say(f"warning: {w}")

    # -- dbha on the lab's hosts --------------------------------------------------

    def dbha(self, host: str, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """``python -m dbha ARGS`` inside ``host``, as an operator there would run it."""
        argv = self.lab.exec_argv(host, [sys.executable, "-m", "dbha", *args])
        try:
            return proc.run(argv, timeout=timeout, check=False)
        except (CommandFailed, CommandTimeout) as exc:
            return subprocess.CompletedProcess(argv, 124, "", str(exc))

    def status_json(self, service: str, host: str) -> dict[str, Any]:
        """``dbha status --json`` of ``service`` on ``host``; {} when it does not answer."""
        cfg = str(self.lab.supervisors.paths(service, host).config)
        res = self.dbha(host, ["status", "-c", cfg, "--json"], STATUS_TIMEOUT)
        try:
            got = json.loads(res.stdout)
        except ValueError:
            return {}
        return got if isinstance(got, dict) else {}

    def show_status(self, service: str, host: str) -> dict[str, Any]:
        """Print ``dbha status`` (its human output) of ``service`` on ``host``; return
        what ``--json`` says right after."""
        cfg = str(self.lab.supervisors.paths(service, host).config)
        res = self.dbha(host, ["status", "-c", cfg], STATUS_TIMEOUT)
        self.say(f"$ dbha status -c {cfg}")
        for line in (res.stdout + res.stderr).rstrip().splitlines():
            self.say(f"  {line}")
        return self.status_json(service, host)


def _not_done(decision_line: str) -> str | None:
    """Why a supervisor's resync decision line says it did not resync (None: it did)."""
    if " FAILED: " in decision_line:
        return decision_line.split(" FAILED: ", 1)[1]
    refused = decision_line.split(" dbha: request-refused: ", 1)
    return refused[1] if len(refused) == 2 else None


def _nodes(acks: list[cl.Ack]) -> str:
    names = sorted({a.node for a in acks})
    return ", ".join(names) if names else "nobody"


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f} s"
