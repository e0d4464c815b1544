"""The pure translations between the heartbeat layer and the decision core."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbha.beat.announce import announce_of, local_status, parse_position, position_text
from dbha.beat.wire import Beat, DbSummary
from dbha.core.model import Announce, DbStatus, NodeRole, Position, Role
from dbha.node.observe import lag_units, peer_lag_units

PG = Position("postgresql", timeline=2, lsn=0x3000060)
MARIA = Position("mariadb", gtid="0-2-15,1-1-3")


@pytest.mark.parametrize("pos", [PG, MARIA, Position("fake", 1, 7), None])
def test_positions_round_trip(pos: Position | None) -> None:
    assert parse_position(position_text(pos)) == pos


@given(st.text(max_size=300))
def test_any_text_parses_to_a_position_or_none(text: str) -> None:
    result = parse_position(text)
    assert result is None or isinstance(result, Position)


@pytest.mark.parametrize(
    "text", ["", "postgresql", "postgresql|x|1|", "|1|2|", "postgresql|1|-5|", "a|b|c|d|e"]
)
def test_malformed_positions_are_unknown(text: str) -> None:
    assert parse_position(text) is None


def test_an_announce_survives_a_beat() -> None:
    a = Announce(
        epoch=5,
        role=NodeRole.HANDOVER,
        db_reachable=True,
        db_writable=False,
        position=PG,
        maintenance=True,
        needs_resync=False,
        sync_mark=4,
        eligible=False,
        planned=True,
        behind=17,
    )
    f = local_status(a)
    beat = Beat(
        "pg",
        "a",
        "lan",
        "a" * 32,
        1,
        f.epoch,
        f.role,
        DbSummary(True, False, f.db.position),
        maintenance=True,
        needs_resync=False,
        sync_mark=4,
        eligible=False,
        planned=f.planned,
        behind=f.behind,
    )
    assert announce_of(beat) == a


def test_an_unknown_role_is_read_as_fenced() -> None:
    beat = Beat("pg", "a", "lan", "a" * 32, 1, 0, "unknown")  # type: ignore[arg-type]
    assert announce_of(beat).role is NodeRole.FENCED


def _replica(received: Position) -> DbStatus:
    return DbStatus(True, Role.REPLICA, received=received, position=received)


@pytest.mark.parametrize(
    ("local", "peer", "lag"),
    [
        (Position("postgresql", 2, 100), Position("postgresql", 2, 160), 60),
        (Position("postgresql", 2, 200), Position("postgresql", 2, 160), 0),
        (Position("postgresql", 1, 100), Position("postgresql", 2, 160), None),
        (Position("mariadb", gtid="0-2-10"), Position("mariadb", gtid="0-2-15"), 5),
        (Position("mariadb", gtid="0-2-15"), Position("mariadb", gtid="0-2-15"), 0),
        (Position("mariadb", gtid="0-2-15"), Position("postgresql", 2, 1), None),
    ],
)
def test_lag_is_counted_in_the_engines_unit(
    local: Position, peer: Position, lag: int | None
) -> None:
    announce = Announce(epoch=1, role=NodeRole.PRIMARY, position=peer)
    assert lag_units(_replica(local), announce) == lag


def test_no_peer_position_means_unknown_lag() -> None:
    assert lag_units(_replica(PG), None) is None
    assert lag_units(_replica(PG), Announce(epoch=1, role=NodeRole.PRIMARY)) is None


def test_a_primary_reads_the_replicas_own_lag_first_and_else_compares_positions() -> None:
    primary = DbStatus(True, Role.PRIMARY, writable=True, position=Position("postgresql", 2, 500))
    told = Announce(
        epoch=1, role=NodeRole.REPLICA, position=Position("postgresql", 2, 100), behind=7
    )
    assert peer_lag_units(primary, told) == 7
    assert peer_lag_units(primary, told._replace(behind=None)) == 400  # an older sender
    assert peer_lag_units(primary, told._replace(behind=None, position=None)) is None
    assert peer_lag_units(_replica(PG), told) is None  # only a primary asks
