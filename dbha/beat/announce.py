"""Pure translations between the I/O layers and the decision core.

The heartbeat layer carries text; the core wants values. Nothing here does
I/O or reads a clock, and nothing raises on what arrives from the network:
a position that cannot be read is ``None`` (unknown), never an exception.
"""

from __future__ import annotations

from dbha.beat.service import HeartbeatSnapshot, LocalStatus
from dbha.beat.wire import Beat, DbSummary
from dbha.core.model import Announce, NodeRole, PeerView, Position

_MAX_FIELD = 1200  # a position longer than a datagram allows is not worth parsing


def position_text(pos: Position | None) -> str:
    """``engine|timeline|lsn|gtid`` (empty fields for what the engine lacks); "" for None."""
    if pos is None:
        return ""
    return "|".join(
        [
            pos.engine,
            "" if pos.timeline is None else str(pos.timeline),
            "" if pos.lsn is None else str(pos.lsn),
            pos.gtid or "",
        ]
    )


def parse_position(text: str) -> Position | None:
    """The inverse of :func:`position_text`; None for "" or anything malformed."""
    if not text or len(text) > _MAX_FIELD:
        return None
    parts = text.split("|")
    if len(parts) != 4 or not parts[0]:
        return None
    engine, tl, lsn, gset = parts
    try:
        timeline = int(tl) if tl else None
        lsn_value = int(lsn) if lsn else None
    except ValueError:
        return None
    if (timeline is not None and timeline < 0) or (lsn_value is not None and lsn_value < 0):
        return None
    return Position(engine, timeline, lsn_value, gset or None)


def announce_of(beat: Beat) -> Announce:
    """What the peer said about itself in ``beat``."""
    return Announce(
        epoch=beat.epoch,
        # A sender that does not know what it is cannot serve: treat it as fenced.
        role=NodeRole.FENCED if beat.role is None else beat.role,
        db_reachable=beat.db.reachable,
        db_writable=beat.db.writable,
        position=parse_position(beat.db.position),
        maintenance=beat.maintenance,
        needs_resync=beat.needs_resync,
        sync_mark=beat.sync_mark,
        eligible=beat.eligible,
        planned=beat.planned,
        behind=beat.behind,
    )


def local_status(a: Announce) -> LocalStatus:
    """What our beats say when this node announces ``a``."""
    return LocalStatus(
        epoch=a.epoch,
        role=a.role,
        db=DbSummary(a.db_reachable, a.db_writable, position_text(a.position)),
        maintenance=a.maintenance,
        needs_resync=a.needs_resync,
        sync_mark=a.sync_mark,
        eligible=a.eligible,
        planned=a.planned,
        behind=a.behind,
    )


def peer_view(snap: HeartbeatSnapshot) -> PeerView:
    """What the core sees of the peer in a heartbeat snapshot."""
    last = snap.last_beat
    return PeerView(
        paths_up=sum(1 for p in snap.paths if p.up),
        last=announce_of(last) if last is not None else None,
        heard_at=snap.last_beat_at,
        echo_sent_at=snap.echo_sent_at,
        eligible_at=snap.eligible_at,
    )
