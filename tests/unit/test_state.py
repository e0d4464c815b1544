"""Persisting the node state: atomic, durable, and never a silent start as primary."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbha.core.model import NodeRole, NodeState
from dbha.node.statefile import (
    STATE_FILE,
    StateError,
    decode,
    encode,
    initial,
    load,
    load_or_initial,
    path_of,
    save,
)

FULL = NodeState(
    role=NodeRole.PRIMARY,
    epoch=7,
    needs_resync=False,
    maintenance=True,
    last_failover=1_700_000_123.5,
    sync_mark=7,
)


def test_round_trip_keeps_every_persisted_field(tmp_path: Path) -> None:
    save(tmp_path, FULL)
    assert load(tmp_path) == FULL


def test_in_memory_fields_are_not_persisted(tmp_path: Path) -> None:
    busy = NodeState(
        role=NodeRole.FENCED,
        epoch=3,
        started=True,
        since=5.0,
        fenced_at=6.0,
        db_fails=2,
        eligible_since=1.0,
        switching=True,
        safety_asked_at=4.0,
    )
    save(tmp_path, busy)
    assert load(tmp_path) == NodeState(role=NodeRole.FENCED, epoch=3)


def test_file_is_private_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    save(tmp_path, FULL)
    save(tmp_path, FULL)
    assert os.listdir(tmp_path) == [STATE_FILE]
    assert stat.S_IMODE(path_of(tmp_path).stat().st_mode) == 0o600


def test_save_creates_a_private_state_directory(tmp_path: Path) -> None:
    where = tmp_path / "var" / "lib" / "dbha" / "pg"
    save(where, FULL)
    assert stat.S_IMODE(where.stat().st_mode) == 0o700
    assert load(where) == FULL


def test_save_replaces_the_previous_state(tmp_path: Path) -> None:
    save(tmp_path, FULL)
    save(tmp_path, NodeState(role=NodeRole.FENCED, epoch=8, needs_resync=True))
    assert load(tmp_path) == NodeState(role=NodeRole.FENCED, epoch=8, needs_resync=True)


def test_a_crash_before_the_rename_leaves_the_old_state(tmp_path: Path) -> None:
    """A stale temporary file (a crash after writing it, before the rename) is ignored
    by load and overwritten by the next save."""
    save(tmp_path, FULL)
    (tmp_path / f".{STATE_FILE}.{os.getpid()}.tmp").write_text("{half")
    assert load(tmp_path) == FULL
    save(tmp_path, NodeState(epoch=9))
    assert load(tmp_path) == NodeState(epoch=9)


def test_unwritable_location_is_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateError, match="cannot save"):
        save(blocker / "sub", FULL)


def test_missing_file_is_a_first_start_that_serves_nothing(tmp_path: Path) -> None:
    assert load(tmp_path) is None
    state, found = load_or_initial(tmp_path, db_is_primary=True)
    assert (state.role, state.epoch, found) == (NodeRole.FENCED, 0, False)
    state, _ = load_or_initial(tmp_path, db_is_primary=False)
    assert state.role is NodeRole.REPLICA
    assert initial(True).role is not NodeRole.PRIMARY


def _doc(**changes: Any) -> bytes:
    doc = json.loads(encode(FULL))
    for key, value in changes.items():
        if value is ...:
            del doc[key]
        else:
            doc[key] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        pytest.param(b"", "not JSON", id="empty"),
        pytest.param(b'{"role": ', "not JSON", id="truncated"),
        pytest.param(b"\xff\xfe", "not JSON", id="not-utf8"),
        pytest.param(b"[]", "not a JSON object", id="array"),
        pytest.param(_doc(format=2), "unsupported format", id="format"),
        pytest.param(_doc(role="leader"), "role must be", id="role"),
        pytest.param(_doc(epoch=-1), "epoch must be", id="negative-epoch"),
        pytest.param(_doc(epoch=True), "epoch must be", id="bool-epoch"),
        pytest.param(_doc(epoch="7"), "epoch must be", id="string-epoch"),
        pytest.param(_doc(epoch=2**63), "epoch must be", id="huge-epoch"),
        pytest.param(_doc(needs_resync=1), "needs_resync must be", id="int-bool"),
        pytest.param(_doc(last_failover="yesterday"), "last_failover", id="failover"),
        pytest.param(_doc(sync_mark=8), "newer than epoch", id="mark-ahead"),
        pytest.param(_doc(epoch=...), "missing keys ['epoch']", id="missing"),
        pytest.param(_doc(extra=1), "unknown keys ['extra']", id="unknown"),
        pytest.param(b"{" * 100_000, "larger than", id="huge"),
    ],
)
def test_corrupt_file_is_a_clear_error(tmp_path: Path, content: bytes, complaint: str) -> None:
    path_of(tmp_path).write_bytes(content)
    with pytest.raises(StateError, match="corrupt state file") as err:
        load(tmp_path)
    assert complaint in str(err.value)
    assert str(path_of(tmp_path)) in str(err.value)


def test_unreadable_file_is_a_state_error(tmp_path: Path) -> None:
    path_of(tmp_path).mkdir()  # a directory where the file should be
    with pytest.raises(StateError, match="cannot read"):
        load(tmp_path)


@given(st.binary(max_size=300))
def test_decode_raises_only_value_error_on_any_bytes(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        decode(data)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=8)
        ),
        max_leaves=20,
    )
)
def test_decode_raises_only_value_error_on_any_json(value: object) -> None:
    try:
        data = json.dumps(value).encode()
    except ValueError:
        return
    with contextlib.suppress(ValueError):
        decode(data)


@given(
    role=st.sampled_from(list(NodeRole)),
    epoch=st.integers(0, 2**63 - 1),
    flags=st.tuples(st.booleans(), st.booleans()),
    last=st.none() | st.floats(0, 4e9),
    marked=st.booleans(),
)
def test_encode_decode_round_trip(
    role: NodeRole, epoch: int, flags: tuple[bool, bool], last: float | None, marked: bool
) -> None:
    state = NodeState(role, epoch, flags[0], flags[1], last, epoch if marked else None)
    assert decode(encode(state)) == state
