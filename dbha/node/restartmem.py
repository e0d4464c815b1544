"""The file a supervisor keeps its :class:`~dbha.core.decide.restart.Remembered` in.

``supervisor-memory.json`` in ``service.state_dir`` (0600), rewritten
atomically (a temporary file and a rename) but not fsynced: it only matters
to a restart of the supervisor within the same boot, and the page cache
outlives the process. Times are CLOCK_MONOTONIC seconds stamped with the
kernel's boot id; after a reboot they mean nothing and the file is ignored.
:func:`decode` never raises: a damaged file is no memory, which only makes a
restarted replica wait longer (the behaviour before there was a memory).
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

from dbha.core.decide.restart import Remembered
from dbha.core.model import NodeRole, PeerView
from dbha.node.statefile import (
    BOOT_ID_PATH,
    announce_doc,
    announce_from_doc,
    boot_id,
    write_atomically,
)

MEMORY_FILE = "supervisor-memory.json"
FORMAT = 1
MAX_BYTES = 16 * 1024

__all__ = ["BOOT_ID_PATH", "MEMORY_FILE", "boot_id", "decode", "encode", "load", "save"]


def encode(m: Remembered, boot: str) -> bytes:
    p = m.peer
    doc = {
        "format": FORMAT,
        "boot_id": boot,
        "role": m.role.value,
        "eligible_since": m.eligible_since,
        "peer": {
            "heard_at": p.heard_at,
            "echo_sent_at": p.echo_sent_at,
            "eligible_at": p.eligible_at,
            "announce": None if p.last is None else announce_doc(p.last),
        },
    }
    return (json.dumps(doc, allow_nan=False) + "\n").encode("ascii")


def _time(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def decode(data: bytes, boot: str) -> Remembered | None:
    """The memory in ``data`` if it was written in boot ``boot``; None otherwise or
    when it cannot be read. Never raises."""
    if not boot or len(data) > MAX_BYTES:
        return None
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("boot_id") != boot:
        return None
    role = doc.get("role")
    peer = doc.get("peer")
    if role not in {r.value for r in NodeRole} or not isinstance(peer, dict):
        return None
    last = announce_from_doc(peer.get("announce"))
    heard = _time(peer.get("heard_at"))
    if last is None or heard is None:
        return None
    return Remembered(
        role=NodeRole(str(role)),
        eligible_since=_time(doc.get("eligible_since")),
        peer=PeerView(
            paths_up=0,
            last=last,
            heard_at=heard,
            echo_sent_at=_time(peer.get("echo_sent_at")),
            eligible_at=_time(peer.get("eligible_at")),
        ),
    )


def load(state_dir: Path, boot: str) -> Remembered | None:
    """The memory a supervisor left in ``state_dir`` in this boot (None: none usable)."""
    try:
        with open(state_dir / MEMORY_FILE, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError:
        return None
    return decode(data, boot)


def save(state_dir: Path, m: Remembered, boot: str) -> None:
    """Rewrite the memory (atomic rename, no fsync). Raises OSError."""
    write_atomically(state_dir, MEMORY_FILE, encode(m, boot), durable=False)


def forget(state_dir: Path) -> None:
    """Remove the memory (a node that is no longer a replica). Never raises."""
    with contextlib.suppress(OSError):
        (state_dir / MEMORY_FILE).unlink(missing_ok=True)
