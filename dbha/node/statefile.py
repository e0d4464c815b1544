"""Persisting a node's state: atomically, in ``service.state_dir``.

The file ``node-state.json`` holds the persisted fields of
:class:`~dbha.core.model.NodeState` (role, epoch, needs_resync, maintenance,
last_failover, sync_mark) as one JSON object. :func:`save` never leaves a
half-written file behind: it writes a temporary file in the same directory,
fsyncs it, renames it over the old one and fsyncs the directory, so after a
crash at any instant the file holds either the old state or the new one.

Loading never guesses:

- a missing file is a first start: :func:`initial` gives a node that serves
  nothing until its peer confirms it (``fenced`` if the local database is a
  primary, ``replica`` otherwise, epoch 0);
- an unreadable or corrupt file is a :class:`StateError` naming the file and
  the defect; the supervisor refuses to start until an operator looks (never
  a silent start as primary).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

from dbha.beat import announce as adapt
from dbha.core.model import PERSISTED, Announce, NodeRole, NodeState
from dbha.errors import DbhaError

STATE_FILE = "node-state.json"
FORMAT = 1
MAX_STATE_BYTES = 64 * 1024
MAX_EPOCH = 2**63 - 1


class StateError(DbhaError):
    """The state file could not be read, parsed, validated or written."""


def path_of(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def encode(state: NodeState) -> bytes:
    """The file's content for ``state`` (its persisted fields only)."""
    doc = {
        "format": FORMAT,
        "role": state.role.value,
        "epoch": state.epoch,
        "needs_resync": state.needs_resync,
        "maintenance": state.maintenance,
        "last_failover": state.last_failover,
        "sync_mark": state.sync_mark,
    }
    return (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode("ascii")


def _int(doc: dict[str, object], key: str, nullable: bool = False) -> int | None:
    value = doc[key]
    if value is None and nullable:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_EPOCH:
        raise ValueError(f"{key} must be an integer between 0 and 2^63-1, not {value!r}")
    return value


def _bool(doc: dict[str, object], key: str) -> bool:
    value = doc[key]
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, not {value!r}")
    return value


def decode(data: bytes) -> NodeState:
    """Parse a state file's content. Raises ValueError saying what is wrong (only)."""
    if len(data) > MAX_STATE_BYTES:
        raise ValueError(f"larger than {MAX_STATE_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    if doc.get("format") != FORMAT:
        raise ValueError(f"unsupported format {doc.get('format')!r} (this dbha reads {FORMAT})")
    expected = {"format", *PERSISTED}
    missing = sorted(expected - doc.keys())
    unknown = sorted(doc.keys() - expected)
    if missing or unknown:
        raise ValueError(f"missing keys {missing}, unknown keys {unknown}")
    role = doc["role"]
    if not isinstance(role, str) or role not in {r.value for r in NodeRole}:
        raise ValueError(f"role must be one of {[r.value for r in NodeRole]}, not {role!r}")
    last = doc["last_failover"]
    if last is not None and (
        not isinstance(last, int | float) or isinstance(last, bool) or not math.isfinite(last)
    ):
        raise ValueError(f"last_failover must be a number or null, not {last!r}")
    epoch = _int(doc, "epoch")
    assert epoch is not None
    mark = _int(doc, "sync_mark", nullable=True)
    if mark is not None and mark > epoch:
        raise ValueError(f"sync_mark {mark} is newer than epoch {epoch}")
    return NodeState(
        role=NodeRole(role),
        epoch=epoch,
        needs_resync=_bool(doc, "needs_resync"),
        maintenance=_bool(doc, "maintenance"),
        last_failover=None if last is None else float(last),
        sync_mark=mark,
    )


def initial(db_is_primary: bool) -> NodeState:
    """The state of a node that has never saved one: it serves nothing until its peer
    confirms it (a fresh pair: the primary resumes once its replica hears it)."""
    return NodeState(role=NodeRole.FENCED if db_is_primary else NodeRole.REPLICA, epoch=0)


def load(state_dir: Path) -> NodeState | None:
    """The saved state, or None when there is none yet. Raises StateError when the file
    exists but cannot be read or is not a valid state."""
    path = path_of(state_dir)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return decode(data)
    except ValueError as exc:
        raise StateError(
            f"{path}: corrupt state file ({exc}); refusing to guess this node's role. "
            "Inspect it; remove it only if this node must start as a non-serving node "
            "(it then waits for its peer, or for dbha resync / failover --force)"
        ) from None


def load_or_initial(state_dir: Path, db_is_primary: bool) -> tuple[NodeState, bool]:
    """(state, True) from the file, or (initial(db_is_primary), False) when there is none."""
    state = load(state_dir)
    if state is None:
        return initial(db_is_primary), False
    return state, True


def write_atomically(state_dir: Path, name: str, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``state_dir/name`` atomically and durably (a temporary file,
    fsync, rename, fsync of the directory; 0600). ``durable=False`` leaves out the
    fsyncs: the rename is still atomic and the content outlives the process, not a
    crash of the host (for what only this boot may use). Raises OSError, and then
    leaves no temporary file and the old content in place."""
    tmp = state_dir / f".{name}.{os.getpid()}.tmp"
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, state_dir / name)
        if not durable:
            return
        dfd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def save(state_dir: Path, state: NodeState) -> None:
    """Write ``state`` atomically and durably. Raises StateError (nothing half-written)."""
    path = path_of(state_dir)
    try:
        write_atomically(state_dir, STATE_FILE, encode(state))
    except OSError as exc:
        raise StateError(f"{path}: cannot save the node state: {exc.strerror or exc}") from None


# ------------------------------------------------- what the memory files share
# The supervisor's memory (dbha.node.restartmem) and the cron round's
# (dbha.monitor.memory) stamp their monotonic times with the boot id and keep
# the peer's last announce in the same form.

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    """The kernel's boot id ("" if it cannot be read: then nothing is carried over)."""
    try:
        return BOOT_ID_PATH.read_text(encoding="ascii").strip()[:64]
    except (OSError, UnicodeDecodeError):
        return ""


def announce_doc(a: Announce) -> dict[str, object]:
    return {
        "epoch": a.epoch,
        "role": a.role.value,
        "db_reachable": a.db_reachable,
        "db_writable": a.db_writable,
        "position": adapt.position_text(a.position),
        "maintenance": a.maintenance,
        "needs_resync": a.needs_resync,
        "sync_mark": a.sync_mark,
        "eligible": a.eligible,
    }


def announce_from_doc(doc: object) -> Announce | None:
    if not isinstance(doc, dict):
        return None
    role, epoch, mark = doc.get("role"), doc.get("epoch"), doc.get("sync_mark")
    if role not in {r.value for r in NodeRole} or not isinstance(epoch, int):
        return None
    if isinstance(epoch, bool) or not 0 <= epoch < 2**63:
        return None
    if mark is not None and (not isinstance(mark, int) or isinstance(mark, bool) or mark < 0):
        return None
    flags = {k: doc.get(k) is True for k in ("db_reachable", "db_writable", "maintenance")}
    position = doc.get("position")
    return Announce(
        epoch=epoch,
        role=NodeRole(str(role)),
        position=adapt.parse_position(position) if isinstance(position, str) else None,
        needs_resync=doc.get("needs_resync") is True,
        sync_mark=mark,
        eligible=doc.get("eligible") is True,
        **flags,
    )
