"""GTID arithmetic for MariaDB and MySQL: parse, merge, compare, subtract. Pure.

Two different models live here, because the two servers count differently:

* **MariaDB** numbers transactions per *replication domain* (``D-S-N``: domain,
  server id, sequence number). A position as the server reports it
  (``gtid_binlog_pos``, ``gtid_slave_pos``, ``Gtid_IO_Pos``) gives the last GTID
  per domain; ``gtid_binlog_state`` gives the last GTID per (domain, server id).
  dbha keeps the richer form, a :data:`MariaState` mapping ``(domain, server)``
  to the last sequence number, because only it tells two histories apart: with
  ``gtid_strict_mode`` sequence numbers grow within a domain, so two servers that
  both wrote after a split share sequence numbers but not server ids.
* **MySQL** keeps true sets (``uuid:1-5:7-9``, optionally tagged since 8.3):
  :data:`MysqlSet` maps ``(uuid, tag)`` to sorted disjoint closed intervals.

Parsers never raise: malformed text gives ``None`` and the callers turn that
into "cannot be sure" (``covers`` is False, a lag is unknown).
"""

from __future__ import annotations

import re

MariaState = dict[tuple[int, int], int]  # (domain, server id) -> last sequence number
Interval = tuple[int, int]  # closed: (first, last), first >= 1
MysqlSet = dict[tuple[str, str], tuple[Interval, ...]]  # (uuid, tag) -> sorted, disjoint

MAX_U32 = 2**32 - 1
MAX_U64 = 2**64 - 1
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_TAG = re.compile(r"^[a-z_][a-z0-9_]{0,31}$")
_NUMBER = re.compile(r"^[0-9]{1,20}$")

# ---------------------------------------------------------------------- MariaDB


def _number(text: str, limit: int) -> int | None:
    text = text.strip()
    if not _NUMBER.match(text):
        return None
    value = int(text)
    return value if value <= limit else None


def parse_maria(text: str | None) -> MariaState | None:
    """``"0-1-5,0-2-9,1-1-3"`` -> ``{(0, 1): 5, (0, 2): 9, (1, 1): 3}``; None if malformed.

    Accepts both the per-domain and the per-server forms, with spaces and
    newlines; a repeated (domain, server) keeps its highest sequence number.
    """
    if text is None:
        return None
    state: MariaState = {}
    for item in text.replace("\n", "").split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.split("-")
        if len(parts) != 3:
            return None
        domain, server, seq = (
            _number(parts[0], MAX_U32),
            _number(parts[1], MAX_U32),
            _number(parts[2], MAX_U64),
        )
        if domain is None or server is None or seq is None:
            return None
        state[(domain, server)] = max(seq, state.get((domain, server), 0))
    return state


def format_maria(state: MariaState) -> str:
    """The normalized text: entries sorted by domain then server id."""
    return ",".join(f"{d}-{s}-{n}" for (d, s), n in sorted(state.items()))


def merge_maria(*states: MariaState) -> MariaState:
    """Everything any of ``states`` has: per (domain, server), the highest sequence."""
    out: MariaState = {}
    for state in states:
        for key, seq in state.items():
            out[key] = max(seq, out.get(key, 0))
    return out


def domain_heads(state: MariaState) -> dict[int, tuple[int, int]]:
    """Per domain, the last GTID as ``(server, seq)``: the server's ``*_pos`` form."""
    heads: dict[int, tuple[int, int]] = {}
    for (domain, server), seq in state.items():
        if domain not in heads or seq > heads[domain][1]:
            heads[domain] = (server, seq)
    return heads


def maria_missing(have: MariaState, other: MariaState) -> MariaState:
    """The entries of ``have`` that ``other`` does not cover: what ``other`` lacks.

    An entry (domain, server) -> seq is covered when ``other`` knows the same
    server in the same domain up to at least ``seq``. Knowing a higher sequence
    number from a *different* server proves nothing (the two may have diverged),
    so it does not count.
    """
    return {key: seq for key, seq in have.items() if other.get(key, -1) < seq}


def maria_covers(candidate: MariaState, reference: MariaState) -> bool:
    return not maria_missing(reference, candidate)


def maria_behind(received: MariaState, executed: MariaState) -> int:
    """Transactions received but not applied: per domain, the distance between the
    last received and the last applied sequence number (they grow by one per
    transaction within a domain)."""
    got, done = domain_heads(received), domain_heads(executed)
    total = 0
    for domain, (_, seq) in got.items():
        applied = done.get(domain, (0, 0))[1]
        total += max(0, seq - applied)
    return total


# ------------------------------------------------------------------------ MySQL


def _normalize(intervals: list[Interval]) -> tuple[Interval, ...]:
    out: list[Interval] = []
    for first, last in sorted(intervals):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return tuple(out)


def parse_mysql(text: str | None) -> MysqlSet | None:
    """``"uuid:1-5:7,uuid2:tag:1-3"`` -> a normalized set; None if malformed.

    Follows the server's syntax: after the uuid, colon-separated intervals, and
    (MySQL 8.3+) tags that apply to the intervals after them.
    """
    if text is None:
        return None
    raw: dict[tuple[str, str], list[Interval]] = {}
    for item in text.replace("\n", "").split(","):
        item = item.strip()
        if not item:
            continue
        parts = [p.strip() for p in item.split(":")]
        uuid = parts[0].lower()
        if not _UUID.match(uuid) or len(parts) < 2:
            return None
        tag = ""
        seen_interval = False
        for part in parts[1:]:
            if _TAG.match(part.lower()):
                tag = part.lower()
                raw.setdefault((uuid, tag), [])
                continue
            bounds = part.split("-")
            if len(bounds) not in (1, 2):
                return None
            first = _number(bounds[0], MAX_U64 >> 1)
            last = _number(bounds[-1], MAX_U64 >> 1)
            if first is None or last is None or first < 1 or last < first:
                return None
            raw.setdefault((uuid, tag), []).append((first, last))
            seen_interval = True
        if not seen_interval:
            return None
    return {key: _normalize(ivs) for key, ivs in raw.items() if ivs}


def format_mysql(gset: MysqlSet) -> str:
    """The normalized text: uuids sorted, untagged intervals first, then each tag."""
    by_uuid: dict[str, list[str]] = {}
    for (uuid, tag), ivs in sorted(gset.items()):
        if not ivs:
            continue
        text = ":".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ivs)
        by_uuid.setdefault(uuid, []).append(f"{tag}:{text}" if tag else text)
    return ",".join(f"{uuid}:{':'.join(items)}" for uuid, items in by_uuid.items())


def union_mysql(*sets: MysqlSet) -> MysqlSet:
    raw: dict[tuple[str, str], list[Interval]] = {}
    for gset in sets:
        for key, ivs in gset.items():
            raw.setdefault(key, []).extend(ivs)
    return {key: _normalize(ivs) for key, ivs in raw.items() if ivs}


def _subtract(ivs: tuple[Interval, ...], minus: tuple[Interval, ...]) -> tuple[Interval, ...]:
    out: list[Interval] = []
    for first, last in ivs:
        cur = first
        for m_first, m_last in minus:
            if m_last < cur or m_first > last:
                continue
            if m_first > cur:
                out.append((cur, m_first - 1))
            cur = max(cur, m_last + 1)
            if cur > last:
                break
        if cur <= last:
            out.append((cur, last))
    return tuple(out)


def subtract_mysql(have: MysqlSet, other: MysqlSet) -> MysqlSet:
    """``have - other``: the transactions of ``have`` that ``other`` lacks."""
    out: MysqlSet = {}
    for key, ivs in have.items():
        rest = _subtract(ivs, other.get(key, ()))
        if rest:
            out[key] = rest
    return out


def count_mysql(gset: MysqlSet) -> int:
    return sum(last - first + 1 for ivs in gset.values() for first, last in ivs)


def mysql_covers(candidate: MysqlSet, reference: MysqlSet) -> bool:
    return not subtract_mysql(reference, candidate)


# --------------------------------------------------------------- engine-neutral


def covers(engine: str, candidate: str | None, reference: str | None) -> bool:
    """True only if ``candidate`` holds every transaction of ``reference``.

    ``engine`` is "mariadb" or "mysql". False when either text is missing or
    malformed, or the engine is unknown: never True unless sure.
    """
    if engine == "mariadb":
        c, r = parse_maria(candidate), parse_maria(reference)
        return c is not None and r is not None and maria_covers(c, r)
    if engine == "mysql":
        cs, rs = parse_mysql(candidate), parse_mysql(reference)
        return cs is not None and rs is not None and mysql_covers(cs, rs)
    return False


def missing(engine: str, have: str | None, other: str | None) -> str | None:
    """The transactions of ``have`` that ``other`` lacks, as normalized text
    (``""`` when none); None when either text is malformed or the engine unknown."""
    if engine == "mariadb":
        h, o = parse_maria(have), parse_maria(other)
        return None if h is None or o is None else format_maria(maria_missing(h, o))
    if engine == "mysql":
        hs, os_ = parse_mysql(have), parse_mysql(other)
        return None if hs is None or os_ is None else format_mysql(subtract_mysql(hs, os_))
    return None


def behind(engine: str, received: str | None, executed: str | None) -> int | None:
    """How many transactions were received but not applied; None when unsure."""
    if engine == "mariadb":
        r, e = parse_maria(received), parse_maria(executed)
        return None if r is None or e is None else maria_behind(r, e)
    if engine == "mysql":
        rs, es = parse_mysql(received), parse_mysql(executed)
        return None if rs is None or es is None else count_mysql(subtract_mysql(rs, es))
    return None


def merge(engine: str, *texts: str | None) -> str | None:
    """Everything any of ``texts`` holds, normalized; None texts are skipped,
    a malformed one makes the result None."""
    if engine == "mariadb":
        states = [parse_maria(t) for t in texts if t is not None]
        if any(s is None for s in states):
            return None
        return format_maria(merge_maria(*[s for s in states if s is not None]))
    if engine == "mysql":
        sets = [parse_mysql(t) for t in texts if t is not None]
        if any(s is None for s in sets):
            return None
        return format_mysql(union_mysql(*[s for s in sets if s is not None]))
    return None
