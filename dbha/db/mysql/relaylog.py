"""How old is the oldest transaction a replica received but has not applied?

``Seconds_Behind_Master`` is NULL whenever the SQL thread is stopped, and that is
exactly when a lag matters (a paused or broken applier). The relay log holds the
answer: the first event at the SQL thread's position (``Relay_Log_File`` /
``Relay_Log_Pos``) that starts a transaction is a GTID event, and every binlog
event header (format v4, the same in MariaDB and MySQL) starts with the
timestamp the primary gave it. Reading a few headers is cheap and needs no SQL.

The timestamp is the primary's clock; the lab's hosts share one clock, and in
production the hosts are expected to run NTP (as ``Seconds_Behind_Master``'s
own clock-skew correction is only taken at connect time anyway).
Never raises: an unreadable or unexpected file gives None.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import BinaryIO

HEADER = struct.Struct("<IBIIIH")  # timestamp, type, server id, event size, next pos, flags
MAGIC = b"\xfebin"
MAX_EVENTS = 512  # headers read at most per call, over every file
MAX_FILES = 4
_NUMBERED = re.compile(r"^(.*\.)(\d+)$")


def scan(f: BinaryIO, pos: int, gtid_types: frozenset[int], budget: int) -> tuple[int | None, int]:
    """From offset ``pos`` of an open log, the timestamp of the first event whose
    type is in ``gtid_types`` (None if the file ends first), and how many headers
    of ``budget`` are left. Never raises on a short or corrupt file."""
    try:
        f.seek(pos)
        while budget > 0:
            head = f.read(HEADER.size)
            if len(head) < HEADER.size:
                return None, budget
            budget -= 1
            timestamp, kind, _server, size, _next, _flags = HEADER.unpack(head)
            if kind in gtid_types:
                return timestamp, budget
            if size < HEADER.size:
                return None, 0  # corrupt: stop looking
            pos += size
            f.seek(pos)
    except (OSError, ValueError, struct.error):
        return None, 0
    return None, budget


def next_file(path: Path) -> Path | None:
    """``relay-bin.000007`` -> ``relay-bin.000008`` (same width), None if not numbered."""
    m = _NUMBERED.match(path.name)
    if not m:
        return None
    number = int(m.group(2)) + 1
    return path.with_name(f"{m.group(1)}{number:0{len(m.group(2))}d}")


def pending_timestamp(
    datadir: str | None, relay_file: str, relay_pos: int, gtid_types: frozenset[int]
) -> int | None:
    """The primary's timestamp of the first transaction the applier has not applied,
    following the relay log into its next files; None if it cannot be read."""
    if not relay_file or relay_pos < len(MAGIC):
        return None
    path = Path(relay_file)
    if not path.is_absolute():
        if not datadir:
            return None
        path = Path(datadir) / path
    budget, pos = MAX_EVENTS, relay_pos
    for _ in range(MAX_FILES):
        try:
            with open(path, "rb") as f:
                if f.read(len(MAGIC)) != MAGIC:
                    return None
                found, budget = scan(f, pos, gtid_types, budget)
        except OSError:
            return None
        if found is not None or budget <= 0:
            return found
        following = next_file(path)
        if following is None or not following.exists():
            return None
        path, pos = following, len(MAGIC)
    return None
