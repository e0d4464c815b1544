"""``dbha switchover``, run from either node: check, show the plan, hand over, and
report what happened, from what the two supervisors say.

The steps, each bounded:

1. ask both supervisors for their status (this node's over the control socket,
   the peer's over its door, signed with the pair's key);
2. find the primary and the target (``--to``, or the other node), and ask the
   primary's supervisor to run every check of a switchover without acting (the
   core's ``switchover-dry-run``: peer heard and eligible at the same epoch, its
   database answering, no resync or replica-not-in-sync mark, maintenance off on
   both and the peer within the lag bound unless ``--force``). A replica under
   load moves about its bound: refused for the lag alone, the check is asked again
   every ``LAG_RETRY_EVERY`` for up to ``--lag-wait`` seconds (default 10)
   before the command refuses; every other refusal is final;
3. (``--dry-run`` stops here: nothing changed, nothing recorded);
4. the real request to the primary, which turns read-only, releases the VIP and
   announces a planned handover; the target promotes once it has received
   everything, the old primary follows it;
5. watch both supervisors until the target serves at a newer epoch with the VIP
   (done), the old primary resumes at its epoch (rolled back: the target did
   not take over within the handover timeout, and the old primary was unfenced
   once the target confirmed it had not), or the timeout ends;
6. the write pause the supervisors measured: from the old primary's
   ``switchover_started`` (recorded before it fences) to the new primary's
   ``promoted`` (recorded once the VIP is up), from their histories. The two
   times come from two hosts' clocks: keep them synchronized (NTP).

Exit codes (``EXIT_CODES``; also in ``dbha switchover --help`` and
docs/operations.md): 0 done, 1 failed to start, 2 error, 3 refused (nothing
changed), 4 rolled back, 5 timed out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dbha.core.decide.requests import LAG_REFUSAL
from dbha.node.control import Doors

EXIT_DONE = 0
EXIT_FAILED = 1  # the primary could not start the handover (an action failed)
EXIT_ERROR = 2  # bad usage or config; a supervisor could not be asked
EXIT_REFUSED = 3  # a check said no, or the operator did: nothing changed
EXIT_ROLLED_BACK = 4  # the target did not take over; the old primary serves again
EXIT_TIMED_OUT = 5  # no outcome within --timeout: see dbha status

EXIT_CODES = {
    EXIT_DONE: "done: the target serves with the VIP",
    EXIT_FAILED: "failed: the primary could not start the handover",
    EXIT_ERROR: "error: bad usage, bad config, or a supervisor could not be asked",
    EXIT_REFUSED: "refused: a check (or the operator at the prompt) said no; nothing changed",
    EXIT_ROLLED_BACK: "rolled back: the target did not take over; the old primary serves again",
    EXIT_TIMED_OUT: "timed out: no outcome within --timeout (see dbha status)",
}

START_TIMEOUT = 30.0  # the request that fences and releases the VIP
POLL_EVERY = 0.1
LAG_RETRY_EVERY = 0.5

Answer = dict[str, Any] | str  # a supervisor's answer, or why it gave none


@dataclass
class Outcome:
    """What ``dbha switchover`` reports: its exit code, lines for a person, and the
    same as one JSON object (``--json``)."""

    code: int
    lines: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def say(self, line: str) -> None:
        self.lines.append(line)

    def as_dict(self) -> dict[str, Any]:
        word = EXIT_CODES[self.code].split(":")[0]
        return {"code": self.code, "result": word, **self.facts, "lines": self.lines}


@dataclass
class Plan:
    primary: str
    target: str
    epoch: int
    check: str  # the primary's answer to the dry run
    lines: list[str]


def lag_refused(got: Answer) -> bool:
    """A refusal for the lag bound alone (the core's words: LAG_REFUSAL)."""
    return isinstance(got, dict) and not got.get("ok") and LAG_REFUSAL in str(got.get("error"))


@dataclass
class Asked:
    """The last answer of :func:`ask_within_bound`, how long it waited for the lag
    bound, and the first lag refusal it saw (None: none)."""

    got: Answer
    waited: float = 0.0
    first_refusal: str | None = None


def ask_within_bound(
    ask: Callable[[], Answer],
    wait: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Asked:
    """``ask()``, and again every LAG_RETRY_EVERY while its answer is a refusal for
    the lag bound alone, until ``wait`` seconds have passed (0: once)."""
    began = clock()
    got = ask()
    out = Asked(got)
    while lag_refused(got):
        if out.first_refusal is None:
            out.first_refusal = str(got.get("error")) if isinstance(got, dict) else None
        if clock() - began + LAG_RETRY_EVERY > wait:
            break
        sleep(LAG_RETRY_EVERY)
        got = ask()
        out.got = got
    out.waited = clock() - began
    return out


def _lag_note(a: Asked, wait: float) -> str | None:
    """A line saying the lag bound was waited for (None: it was not)."""
    if a.first_refusal is None:
        return None
    first = a.first_refusal.removeprefix("refused: ").removesuffix(": --force")
    if lag_refused(a.got):
        return f"still past the lag bound after {a.waited:.1f} s (--lag-wait {wait:g})"
    return f"within the lag bound after {a.waited:.1f} s (first: {first})"


def plan(doors: Doors, to: str | None, force: bool, lag_wait: float = 0.0) -> Plan | Outcome:
    """Both statuses, the primary and the target, and the primary's own checks
    (asked again for up to ``lag_wait`` seconds while refused for the lag alone)."""
    names = (doors.me, doors.peer)
    if to is not None and to not in names:
        return _refused(f"no node named {to!r} in this pair ({', '.join(names)})")
    st = {n: doors.status(n) for n in names}
    for n in names:
        if isinstance(st[n], str):
            return _refused(f"{n}'s supervisor cannot be asked: {st[n]}")
    status: dict[str, dict[str, Any]] = {n: s for n, s in st.items() if isinstance(s, dict)}
    primaries = [n for n in names if status[n].get("role") == "primary"]
    if len(primaries) != 1:
        roles = ", ".join(f"{n} {status[n].get('role')}" for n in names)
        return _refused(f"no single primary to switch over from ({roles})")
    primary = primaries[0]
    target = doors.peer if primary == doors.me else doors.me
    if to is not None and to != target:
        return _refused(f"{to} is the primary already")
    asked = ask_within_bound(lambda: _dry_run(doors, primary, force), lag_wait)
    got, note = asked.got, _lag_note(asked, lag_wait)
    if isinstance(got, str):
        return _refused(f"{primary}'s supervisor cannot be asked: {got}")
    if not got.get("ok"):
        out = _refused(f"{primary}: {got.get('error')}")
        if note is not None:
            out.say(f"  {target}: {note}")
        return out
    epoch = int(status[primary].get("epoch", 0))
    lines = [
        f"switchover of {status[primary].get('service')}: {primary} -> {target}",
        f"  {primary}: {_node_line(status[primary])}",
        f"  {target}: {_node_line(status[target])}",
        f"  checks passed on {primary}: {got.get('answer')}",
        *([f"  {target}: {note}"] if note is not None else []),
        f"  then: {primary} turns read-only and releases the VIP; {target} promotes at epoch "
        f"{epoch + 1} once it has received everything and takes the VIP; {primary} follows "
        f"{target} as its replica",
    ]
    return Plan(primary, target, epoch, str(got.get("answer")), lines)


def _dry_run(doors: Doors, primary: str, force: bool) -> Answer:
    got: Answer = doors.ask(primary, {"cmd": "switchover", "dry_run": True, "force": force}, 15.0)
    return got


def _start(
    doors: Doors, p: Plan, force: bool, lag_wait: float, clock: Callable[[], float]
) -> Answer:
    """The real request; refused for the lag alone (the replica fell back past the
    bound since the plan), the dry run is asked again until it passes, then the
    request, all within ``lag_wait`` (a refused request changes nothing)."""
    until = clock() + lag_wait
    while True:
        got: Answer = doors.ask(p.primary, {"cmd": "switchover", "force": force}, START_TIMEOUT)
        left = until - clock()
        if not lag_refused(got) or left < LAG_RETRY_EVERY:
            return got
        asked = ask_within_bound(lambda: _dry_run(doors, p.primary, force), left, clock)
        if not (isinstance(asked.got, dict) and asked.got.get("ok")):
            return got if lag_refused(asked.got) else asked.got


def execute(
    doors: Doors,
    p: Plan,
    force: bool,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    lag_wait: float = 0.0,
) -> Outcome:
    """Start the handover on the primary and watch both nodes until an outcome."""
    wall = time.time()
    got = _start(doors, p, force, lag_wait, clock)
    began = clock()  # the handover starts once the request is answered
    facts: dict[str, Any] = {"from": p.primary, "to": p.target, "old_epoch": p.epoch}
    if isinstance(got, str):
        return Outcome(EXIT_TIMED_OUT, [f"the switchover request got no answer: {got}"], facts)
    if not got.get("ok"):
        error = str(got.get("error"))
        code = EXIT_REFUSED if error.startswith("refused") else EXIT_FAILED
        lines = [f"switchover not started: {p.primary}: {error}"]
        if lag_refused(got):
            lines.append(f"  {p.target}: still past the lag bound (--lag-wait {lag_wait:g})")
        return Outcome(code, lines, facts)
    deadline = began + timeout
    served_at: float | None = None
    seen: dict[str, dict[str, Any] | str] = {}
    while True:
        now = clock()
        for n in (p.primary, p.target):
            seen[n] = doors.status(n)
        new, old = seen[p.target], seen[p.primary]
        if served_at is None and isinstance(new, dict) and _serves(new, p.epoch):
            served_at = clock()
        if served_at is not None and isinstance(old, dict) and _follows(old, p):
            break  # the whole round trip: the old primary follows the new one
        if served_at is None and isinstance(old, dict) and _resumed(old, p.epoch):
            return _rolled_back(p, new, old, clock() - began, facts)
        if now >= deadline:
            if served_at is not None:
                break  # done; the old primary has not followed yet (said below)
            return _timed_out(p, new, old, timeout, facts)
        time.sleep(POLL_EVERY)
    out = Outcome(EXIT_DONE, facts=facts)
    new_st = seen[p.target]
    assert isinstance(new_st, dict) and served_at is not None
    facts.update(new_epoch=new_st.get("epoch"), took_s=round(served_at - began, 3))
    out.say(
        f"switchover done in {served_at - began:.2f} s: {p.target} is the primary at epoch "
        f"{new_st.get('epoch')}, with the VIP"
    )
    pause = _pause(doors, p, wall)
    facts["write_pause_s"] = pause
    if pause is not None:
        out.say(
            f"  write pause measured by the supervisors: {pause:.3f} s ({p.primary} "
            f"switchover_started to {p.target} promoted with the VIP)"
        )
    else:
        out.say("  write pause: not found in the supervisors' histories")
    old_st = seen[p.primary]
    facts["old_primary"] = old_st.get("role") if isinstance(old_st, dict) else None
    if isinstance(old_st, dict) and _follows(old_st, p):
        out.say(f"  {p.primary}: replica at epoch {old_st.get('epoch')}, following {p.target}")
    else:
        what = old_st.get("summary") if isinstance(old_st, dict) else f"unreachable: {old_st}"
        out.say(
            f"  {p.primary} has not followed {p.target} yet ({what}): see dbha status; "
            f"dbha resync on {p.primary} if it stays fenced"
        )
    facts["took_total_s"] = round(clock() - began, 3)
    return out


def _node_line(st: dict[str, Any]) -> str:
    db = st.get("database") or {}
    paths = st.get("paths") or {}
    up = sum(1 for v in paths.values() if isinstance(v, dict) and v.get("up"))
    parts = [f"{st.get('role')}, epoch {st.get('epoch')}"]
    if db:
        parts.append(
            "database "
            + ("unreachable" if not db.get("reachable") else str(db.get("role")))
            + (" writable" if db.get("writable") else "")
            + (f" at {db.get('position')}" if db.get("position") else "")
        )
    if (st.get("vip") or {}).get("held_here"):
        parts.append("VIP here")
    parts.append(f"paths {up}/{len(paths)} up")
    if st.get("maintenance"):
        parts.append("maintenance ON")
    return ", ".join(parts)


def _serves(st: dict[str, Any], old_epoch: int) -> bool:
    return (
        st.get("role") == "primary"
        and int(st.get("epoch", 0)) > old_epoch
        and bool((st.get("vip") or {}).get("held_here"))
    )


def _follows(st: dict[str, Any], p: Plan) -> bool:
    return st.get("role") == "replica" and int(st.get("epoch", 0)) > p.epoch


def _resumed(st: dict[str, Any], old_epoch: int) -> bool:
    return st.get("role") == "primary" and int(st.get("epoch", 0)) == old_epoch


def _why(st: dict[str, Any] | str) -> str:
    if isinstance(st, str):
        return f"unreachable: {st}"
    d = st.get("decision") or {}
    return f"{st.get('role')}, last decision {d.get('rule')}: {d.get('reason')}"


def _rolled_back(
    p: Plan, new: dict[str, Any] | str, old: dict[str, Any], took: float, facts: dict[str, Any]
) -> Outcome:
    out = Outcome(EXIT_ROLLED_BACK, facts=facts)
    out.say(
        f"rolled back after {took:.1f} s: {p.target} did not take over; {p.primary} was "
        f"unfenced and serves again at epoch {old.get('epoch')}"
    )
    out.say(f"  {p.target}: {_why(new)}")
    return out


def _timed_out(
    p: Plan,
    new: dict[str, Any] | str,
    old: dict[str, Any] | str,
    timeout: float,
    facts: dict[str, Any],
) -> Outcome:
    out = Outcome(EXIT_TIMED_OUT, facts=facts)
    out.say(f"no outcome within {timeout:g} s: see dbha status")
    out.say(f"  {p.primary}: {_why(old)}")
    out.say(f"  {p.target}: {_why(new)}")
    return out


def _pause(doors: Doors, p: Plan, since_wall: float) -> float | None:
    """The old primary's switchover_started to the new primary's promoted (the
    newest of each since the command began), or None when either is missing."""
    started = [
        e
        for e in doors.history(p.primary)
        if e.get("event") == "switchover_started" and _at(e) >= since_wall - 1.0
    ]
    promoted = [
        e
        for e in doors.history(p.target)
        if e.get("event") == "promoted" and _at(e) >= since_wall - 1.0
    ]
    if not started or not promoted:
        return None
    return round(_at(promoted[-1]) - _at(started[-1]), 3)


def _at(e: dict[str, Any]) -> float:
    at = e.get("at")
    return float(at) if isinstance(at, int | float) and not isinstance(at, bool) else 0.0


def _refused(why: str) -> Outcome:
    return Outcome(EXIT_REFUSED, [f"switchover refused: {why}"])


def maintenance(doors: Doors, on: bool) -> tuple[int, list[str]]:
    """Maintenance on (or off) for the pair: set on both nodes, each told over its
    door; the exit code is 0 only when both took it. While either node has it on,
    neither acts automatically (dbha.core.decide)."""
    word = "on" if on else "off"
    lines, code = [], 0
    for node in (doors.me, doors.peer):
        got = doors.ask(node, {"cmd": f"maintenance_{word}"}, 15.0)
        if isinstance(got, dict) and got.get("ok"):
            lines.append(f"{node}: maintenance {word}")
            continue
        why = got if isinstance(got, str) else got.get("error")
        lines.append(f"{node}: NOT set: {why}")
        code = 1
    if code and on:
        lines.append("the pair is in maintenance as long as either node is")
    elif code:
        lines.append(
            "maintenance stays on for the pair until it is off on both nodes: "
            "run dbha maintenance off again once both supervisors answer"
        )
    return code, lines
