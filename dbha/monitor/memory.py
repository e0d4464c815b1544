"""What a cron round remembers between rounds, and the config it decides with.

A supervisor keeps in memory what the decision core needs from one tick to
the next: when the peer was last heard and what it said, when the current
role began, the run of failed probes and of ``peer_dead`` verdicts, the check
scripts' fall/rise counts. A cron round (``dbha check``) is a new process each
time, so it keeps them in ``cron-memory.json`` in ``service.state_dir``,
written atomically (a temporary file, fsync, rename, fsync of the directory).

Times are CLOCK_MONOTONIC seconds, the clock every process of a host shares
since boot, stamped with the kernel's boot id: after a reboot they mean
nothing and are dropped. The wall clock is recorded beside them for people
only; nothing decides on it, so a wall-clock step can never shorten a wait.
Forgetting is always the safe direction: a round that remembers nothing waits
longer before it promotes, hands over or counts a check as failed.

Pure except :func:`load`, :func:`save` and :func:`boot_id`; :func:`decode`
never raises (a damaged file reads as an empty memory, with the reason).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from dbha.config import CheckConfig, Config
from dbha.config.params import params
from dbha.core.model import Announce, NodeRole, NodeState
from dbha.core.params import Params
from dbha.errors import DbhaError
from dbha.node.checkscripts import CheckState
from dbha.node.statefile import announce_doc, announce_from_doc, write_atomically

MEMORY_FILE = "cron-memory.json"
FORMAT = 1
MAX_BYTES = 64 * 1024

# How long a cron round may take from its start to the end of its actions, beyond
# what its config bounds: cron's own start jitter and the interpreter's start.
START_ALLOWANCE_MS = 5000
# The shortest listening window: two hosts' cron rounds start up to about a
# second apart (cron's granularity plus interpreter start), and must overlap for
# long enough to hear each other (``rise`` beats) and exchange echoes.
LISTEN_FLOOR_MS = 2000
# VIP release bound (dbha.node.executor.Timeouts.vip), before a fence in _stop_serving.
VIP_ACTION_MS = 5000


class CronMemoryError(DbhaError):
    """The memory file could not be written."""


@dataclass(frozen=True, slots=True)
class PeerMemory:
    """The peer's newest beat as last heard: when (monotonic, this boot) and what."""

    heard_at: float | None  # None: heard in an earlier boot of this host
    heard_wall: float
    boot: str  # the peer's heartbeat boot id (a new one per process)
    announce: Announce


@dataclass(frozen=True, slots=True)
class Memory:
    boot_id: str = ""
    role: str = ""  # the node role the times below belong to
    role_since: float | None = None
    db_fails: int = 0
    dead_since: float | None = None
    peer: PeerMemory | None = None
    checks: tuple[CheckState, ...] = ()
    note: str = ""  # why the file was not used (empty: read fine or absent)


# ------------------------------------------------------------------ the file


def encode(m: Memory) -> bytes:
    peer = None
    if m.peer is not None:
        peer = {
            "heard_at": m.peer.heard_at,
            "heard_wall": m.peer.heard_wall,
            "boot": m.peer.boot,
            "announce": announce_doc(m.peer.announce),
        }
    doc = {
        "format": FORMAT,
        "boot_id": m.boot_id,
        "role": m.role,
        "role_since": m.role_since,
        "db_fails": m.db_fails,
        "dead_since": m.dead_since,
        "peer": peer,
        "checks": {c.name: [c.fails_in_row, c.oks_in_row, c.passing] for c in m.checks},
    }
    return (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode("ascii")


def _time(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return min(max(value, 0), 10**6)


def decode(data: bytes, boot: str) -> Memory:
    """The memory in ``data``, with the monotonic times dropped unless it was written
    in boot ``boot``. Never raises: a damaged file is an empty memory with a note."""
    if len(data) > MAX_BYTES:
        return Memory(boot_id=boot, note="memory file too large: ignored")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return Memory(boot_id=boot, note="memory file is not JSON: ignored")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return Memory(boot_id=boot, note="memory file has an unknown format: ignored")
    same = bool(boot) and doc.get("boot_id") == boot
    checks = []
    raw_checks = doc.get("checks")
    for name, v in raw_checks.items() if isinstance(raw_checks, dict) else ():
        if isinstance(v, list) and len(v) == 3 and isinstance(v[2], bool):
            checks.append(CheckState(str(name)[:64], 1, 1, v[2], _count(v[0]), _count(v[1])))
    peer = None
    p = doc.get("peer")
    if isinstance(p, dict):
        ann = announce_from_doc(p.get("announce"))
        wall = _time(p.get("heard_wall"))
        boot_of_peer = p.get("boot")
        if ann is not None and wall is not None and isinstance(boot_of_peer, str):
            heard = _time(p.get("heard_at")) if same else None
            peer = PeerMemory(heard, wall, boot_of_peer[:64], ann)
    role = doc.get("role")
    return Memory(
        boot_id=boot,
        role=role if isinstance(role, str) and same else "",
        role_since=_time(doc.get("role_since")) if same else None,
        db_fails=_count(doc.get("db_fails")) if same else 0,
        dead_since=_time(doc.get("dead_since")) if same else None,
        peer=peer,
        checks=tuple(checks),
    )


def path_of(state_dir: Path) -> Path:
    return state_dir / MEMORY_FILE


def load(state_dir: Path, boot: str) -> Memory:
    """The memory of the last acting round; an empty one if there is none or it
    cannot be read (the note says why)."""
    try:
        with open(path_of(state_dir), "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return Memory(boot_id=boot)
    except OSError as exc:
        return Memory(boot_id=boot, note=f"memory file unreadable ({exc.strerror}): ignored")
    return decode(data, boot)


def save(state_dir: Path, m: Memory) -> None:
    """Write ``m`` atomically and durably. Raises CronMemoryError (nothing half-written)."""
    path = path_of(state_dir)
    try:
        write_atomically(state_dir, MEMORY_FILE, encode(m))
    except OSError as exc:
        raise CronMemoryError(
            f"{path}: cannot save the round's memory: {exc.strerror or exc}"
        ) from None


# ------------------------------------------------------------ pure helpers


def listen_window(cfg: Config) -> float:
    """Seconds a round listens at least before it judges the peer silent: long
    enough that a beating peer is heard (a path is up after ``rise`` beats, well
    within ``peer_silent_after + interval``), and never under LISTEN_FLOOR_MS."""
    hb = cfg.heartbeat
    return max(hb.peer_silent_after_ms + hb.interval_ms, LISTEN_FLOOR_MS) / 1000


def round_bound_ms(cfg: Config) -> int:
    """The longest a round takes from its start until a fence it decides is done:
    start allowance, the longest listening (twice the window), three probes, the
    safety check, then a VIP release and a fence (dbha.node.executor.Timeouts)."""
    db = cfg.database
    probe = db.connect_timeout_ms + db.statement_timeout_ms
    fence = max(500, int(0.6 * cfg.fence.self_fence_deadline_ms))
    listen = int(2 * listen_window(cfg) * 1000)
    return START_ALLOWANCE_MS + listen + 3 * probe + cfg.safety.timeout_ms + VIP_ACTION_MS + fence


def cron_deadline_ms(cfg: Config) -> int:
    """The self-fence deadline a cron round decides with. Between rounds nothing
    fences: an isolated primary stops serving only at its next round, up to
    ``cron_period_ms`` later, and that round needs up to :func:`round_bound_ms` to
    fence. The peer waits this long after the last beat before it promotes."""
    return cfg.fence.self_fence_deadline_ms + cfg.service.cron_period_ms + round_bound_ms(cfg)


def cron_params(cfg: Config) -> Params:
    """What decide() decides with in a cron round: ``cfg``'s numbers with the
    self-fence deadline raised to :func:`cron_deadline_ms` (the lease, the wait
    before a unilateral promotion, the fallback and handover windows all grow
    with it)."""
    return params(cfg, self_fence_deadline_ms=cron_deadline_ms(cfg))


def continuing(persisted: NodeState, mem: Memory, now: float, probe_failed: bool) -> NodeState:
    """The state a round decides from: the persisted one, carried on (no start-up
    rule: a round is one tick of a supervisor that runs once a period), with the
    in-memory fields the memory gives. A fenced node's "fenced since" is the round's
    start, so only a peer that hears this round can confirm it may resume."""
    same_role = mem.role == persisted.role.value and mem.role_since is not None
    return replace(
        persisted,
        started=True,
        since=mem.role_since if same_role else now,
        fenced_at=now if persisted.role is NodeRole.FENCED else None,
        db_fails=mem.db_fails + 1 if probe_failed else 0,
        dead_since=mem.dead_since,
    )


def checks_after(
    configured: tuple[CheckConfig, ...], mem: Memory, results: dict[str, tuple[bool, str]]
) -> tuple[CheckState, ...]:
    """Every configured check's fall/rise state after this round's results."""
    known = {c.name: c for c in mem.checks}
    out = []
    for c in configured:
        was = known.get(c.name)
        st = CheckState(c.name, c.fall, c.rise)
        if was is not None:
            st = replace(
                st, passing=was.passing, fails_in_row=was.fails_in_row, oks_in_row=was.oks_in_row
            )
        if c.name in results:
            ok, detail = results[c.name]
            st = st.record(ok, detail)
        out.append(st)
    return tuple(out)
