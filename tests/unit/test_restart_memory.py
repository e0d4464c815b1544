"""What a supervisor carries over a restart of its own process: the pure rules
(dbha.core.decide.restart) and the file (dbha.node.restartmem)."""

from __future__ import annotations

from pathlib import Path

from dbha.config.params import params
from dbha.core.decide import decide
from dbha.core.decide.restart import Remembered, peer_view, remember, resume
from dbha.core.model import NodeRole, NodeState, PeerView
from dbha.node import restartmem
from tests.unit.test_decide import CFG, DEAD, NOW, ann, heard, obs, pos, replica_db, silent, st

R = NodeRole
PRIMARY_SAID = ann(R.PRIMARY, epoch=2, position=pos(120))
MEM = Remembered(
    R.REPLICA,
    NOW - 30.0,
    PeerView(2, PRIMARY_SAID, NOW - 0.4, NOW - 0.5, NOW - 0.4),
)


def test_only_a_replica_that_heard_its_peer_remembers() -> None:
    o = obs(replica_db(), heard(PRIMARY_SAID))
    assert remember(st(R.REPLICA), o) == Remembered(R.REPLICA, NOW - 50.0, o.peer)
    assert remember(st(R.PRIMARY), o) is None
    assert remember(st(R.REPLICA), obs(replica_db(), PeerView())) is None


def test_a_restarted_replica_gets_its_eligibility_back_and_nothing_else() -> None:
    loaded = NodeState(role=R.REPLICA, epoch=2)
    back = resume(loaded, MEM)
    assert back == NodeState(role=R.REPLICA, epoch=2, eligible_since=NOW - 30.0)
    assert back.dead_since is None  # the peer_dead run starts afresh
    assert resume(NodeState(role=R.FENCED, epoch=2), MEM).eligible_since is None
    assert resume(NodeState(role=R.REPLICA, needs_resync=True), MEM).eligible_since is None
    assert resume(loaded, None) == loaded


def test_the_remembered_peer_stands_in_until_the_heartbeats_hear_it() -> None:
    stand_in = peer_view(PeerView(), MEM)
    assert stand_in == MEM.peer._replace(paths_up=0)  # silent on every path
    live = heard(PRIMARY_SAID)
    assert peer_view(live, MEM) is live
    assert peer_view(PeerView(), None) == PeerView()


def test_with_its_memory_a_restarted_fallback_replica_can_promote() -> None:
    """Restarted 0.3 s after its primary died: it has never heard the primary since,
    yet with the memory the fallback window rule holds and it takes over; without
    it, it refuses (the primary's confirmation is unknown)."""
    started = NOW - 1.5  # this process started 1.5 s ago; the peer's database dead since
    mem = Remembered(R.REPLICA, NOW - 60.0, silent(PRIMARY_SAID, ago=1.8, echo_ago=1.9))
    state = resume(
        NodeState(role=R.REPLICA, epoch=2, started=True, since=started, dead_since=NOW - 1.4),
        mem,
    )
    o = obs(replica_db(), peer_view(PeerView(), mem), safety=DEAD, lag_units=0)
    assert decide(state, o, params(CFG["fallback"])).rule == "failover-promote"
    blank = NodeState(role=R.REPLICA, epoch=2, started=True, since=started, dead_since=NOW - 1.4)
    d = decide(
        blank, obs(replica_db(), PeerView(), safety=DEAD, lag_units=0), params(CFG["fallback"])
    )
    assert d.rule == "failover-blocked" and "has not confirmed" in d.reason


def test_the_file_round_trips_in_the_same_boot_only(tmp_path: Path) -> None:
    restartmem.save(tmp_path, MEM, "boot-1")
    assert (tmp_path / restartmem.MEMORY_FILE).stat().st_mode & 0o777 == 0o600
    assert restartmem.load(tmp_path, "boot-1") == MEM._replace(peer=MEM.peer._replace(paths_up=0))
    assert restartmem.load(tmp_path, "boot-2") is None  # rebooted: the times mean nothing
    assert restartmem.load(tmp_path, "") is None
    restartmem.forget(tmp_path)
    assert restartmem.load(tmp_path, "boot-1") is None


def test_a_damaged_file_is_no_memory(tmp_path: Path) -> None:
    good = restartmem.encode(MEM, "b")
    for data in (b"", b"{", b"[]", b"\xff", good.replace(b'"replica"', b'"boss"', 1), b"x" * 20000):
        assert restartmem.decode(data, "b") is None, data[:40]
    assert restartmem.decode(good, "b") is not None
