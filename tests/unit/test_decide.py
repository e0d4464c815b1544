"""decide(): tables of situations and the decisions they must give.

Every case names the situation, the node's state, what it observes, and the
expected rule, next role and action kinds (in order). Every decision is also
checked against the transition table. No mocks, no clock, no sleeps.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from dbha.config import Config, from_dict
from dbha.config.params import params
from dbha.core.decide import announce, decide
from dbha.core.model import (
    Announce,
    ArbiterView,
    DbStatus,
    Decision,
    NodeRole,
    NodeState,
    Notify,
    Observation,
    PeerView,
    PersistState,
    Position,
    PrePromote,
    Rejoin,
    ReplicaInfo,
    Request,
    RequestKind,
    Role,
    SafetyView,
    SetSynchronous,
    Verdict,
)
from dbha.core.params import LEASE_FRACTION
from dbha.core.transitions import check
from dbha.db.fake import covers

R = NodeRole
NOW = 5000.0
D = 1.0  # the default self-fence deadline, seconds


def make_cfg(mode: str = "async", auto_rejoin: bool = False, **service: Any) -> Config:
    """Node a's config; ``mode`` is async, strict, fallback or arbiter; ``service``:
    more keys of its [service] table."""
    replication: dict[str, object] = {"mode": "async" if mode == "async" else "sync"}
    if mode != "async":
        replication["sync_fallback"] = mode
    data: dict[str, Any] = {
        "service": {
            "id": "pg",
            "state_dir": "/tmp/unused",
            "auto_rejoin": auto_rejoin,
            **service,
        },
        "node": {"name": "a"},
        "peer": {"name": "b"},
        "database": {
            "engine": "postgresql",
            "data_directory": "/var/lib/postgresql/15/main",
            "replication_passfile": "/etc/dbha/pgpass",
        },
        "heartbeat": {
            "key_file": "/etc/dbha/key",
            "path": [
                {
                    "name": "lan",
                    "local_address": "198.18.0.11",
                    "peer_address": "198.18.0.12",
                    "port": 5405,
                },
                {
                    "name": "hb",
                    "local_address": "198.18.1.1",
                    "peer_address": "198.18.1.2",
                    "port": 5405,
                },
            ],
        },
        "safety": {"target": [{"kind": "icmp", "host": "198.18.0.1"}]},
        "vip": {"address": "198.18.0.100/24", "interface": "eth0"},
        "replication": replication,
    }
    if mode == "arbiter":
        data["arbiter"] = {"endpoints": ["http://198.18.0.5:2379"]}
    return from_dict(data)


CFG = {
    "async": make_cfg(),
    "strict": make_cfg("strict"),
    "fallback": make_cfg("fallback"),
    "arbiter": make_cfg("arbiter"),
    "rejoin": make_cfg(auto_rejoin=True),
}


def pos(lsn: int, tl: int = 1) -> Position:
    return Position(engine="fake", timeline=tl, lsn=lsn)


def primary_db(
    writable: bool = True,
    lsn: int = 100,
    sync: bool = False,
    replicas: tuple[ReplicaInfo, ...] = (),
) -> DbStatus:
    return DbStatus(
        reachable=True,
        role=Role.PRIMARY,
        writable=writable,
        position=pos(lsn),
        replicas=replicas,
        sync_replication=sync,
    )


def replica_db(
    received: int = 100, streaming: bool = True, upstream: str = "b", lag_seconds: float = 0.0
) -> DbStatus:
    return DbStatus(
        reachable=True,
        role=Role.REPLICA,
        position=pos(received),
        received=pos(received),
        streaming=streaming,
        upstream=upstream,
        lag_seconds=lag_seconds,
        lag_bytes=0,
    )


DOWN = DbStatus.unreachable("connection refused")


def ann(role: NodeRole, epoch: int = 1, **kw: Any) -> Announce:
    defaults: dict[str, Any] = {
        "db_reachable": True,
        "db_writable": role is R.PRIMARY,
        "position": pos(100),
        "eligible": role is R.REPLICA,
    }
    defaults.update(kw)
    return Announce(epoch, role, **defaults)


def heard(
    last: Announce | None,
    ago: float = 0.05,
    echo_ago: float | None = 0.15,
    up: int = 2,
    eligible_ago: float | None = None,
) -> PeerView:
    """The peer as heard ``ago`` seconds before NOW; its newest beat echoes one of ours
    sent ``echo_ago`` seconds before NOW."""
    if eligible_ago is None and last is not None and last.eligible:
        eligible_ago = ago
    return PeerView(
        paths_up=up,
        last=last,
        heard_at=None if last is None else NOW - ago,
        echo_sent_at=None if echo_ago is None else NOW - echo_ago,
        eligible_at=None if eligible_ago is None else NOW - eligible_ago,
    )


def silent(
    last: Announce | None,
    ago: float = 1.6,
    echo_ago: float | None = 1.7,
    eligible_ago: float | None = None,
) -> PeerView:
    return heard(last, ago=ago, echo_ago=echo_ago, up=0, eligible_ago=eligible_ago)


def verdict(v: Verdict, ago: float = 0.1) -> SafetyView:
    return SafetyView(v, NOW - ago)


DEAD = verdict(Verdict.PEER_DEAD)


def obs(local: DbStatus, peer: PeerView, **kw: Any) -> Observation:
    kw.setdefault("covers", covers)
    kw.setdefault("wall", 1_700_000_000.0)
    return Observation(NOW, local, peer, **kw)


def st(role: NodeRole, epoch: int = 1, asked: bool = True, **kw: Any) -> NodeState:
    """A running node's state; ``asked``: a safety check was asked for just now."""
    kw.setdefault("started", True)
    kw.setdefault("safety_asked_at", NOW - 0.05 if asked else None)
    kw.setdefault("since", NOW - 100.0)
    if role is R.REPLICA and "eligible_since" not in kw and not kw.get("needs_resync"):
        kw["eligible_since"] = NOW - 50.0
    if role is R.REPLICA:
        # peer_dead verdicts since 1.4 s (a deadline plus the safety timeout ago)
        kw.setdefault("dead_since", NOW - 1.4)
    if role is R.FENCED:
        kw.setdefault("fenced_at", NOW - 1.0)
    return NodeState(role=role, epoch=epoch, **kw)


STREAMING = ReplicaInfo(name="b", state="streaming")
CATCHING_UP = ReplicaInfo(name="b", state="catchup")
PRIMARY_PEER = ann(R.PRIMARY)
REPLICA_PEER = ann(R.REPLICA)
PROMOTE_ALONE = [
    "PrePromote",
    "PersistState",
    "Notify",
    "FencePeer",
    "WaitReplayed",
    "Promote",
    "AcquireVip",
    "Notify",
]
PROMOTE_SYNC = [*PROMOTE_ALONE[:6], "SetSynchronous", *PROMOTE_ALONE[6:]]
ASK = ["RunSafetyCheck"]

# (id, config, state, observation, rule, next role, action kinds)
CASES: list[tuple[str, str, NodeState, Observation, str, NodeRole, list[str]]] = [
    # ---- start-up: nothing serves until the peer confirms it
    (
        "restarted primary drops VIP and fences",
        "async",
        st(R.PRIMARY, started=False),
        obs(primary_db(), PeerView(), vip_held=True),
        "start-primary",
        R.FENCED,
        ["Fence", "ReleaseVip"],
    ),
    (
        "restarted replica drops a VIP it still carries",
        "async",
        st(R.REPLICA, started=False),
        obs(replica_db(), PeerView(), vip_held=True),
        "start-replica",
        R.REPLICA,
        ["ReleaseVip"],
    ),
    (
        "restarted fenced node fences a writable database",
        "async",
        st(R.FENCED, started=False),
        obs(primary_db(), PeerView()),
        "start-fenced",
        R.FENCED,
        ["Fence"],
    ),
    (
        "restarted handover node is fenced",
        "async",
        st(R.HANDOVER, started=False),
        obs(primary_db(writable=False), PeerView()),
        "start-handover",
        R.FENCED,
        [],
    ),
    (
        "restart while promoting keeps the bumped epoch",
        "async",
        st(R.PROMOTING, epoch=2, started=False),
        obs(replica_db(), PeerView()),
        "start-promoting",
        R.PROMOTING,
        [],
    ),
    # ---- replica of a pair built without dbha
    (
        "sync: a replica that does not acknowledge synchronous commits is made to",
        "strict",
        st(R.REPLICA),
        obs(replace(replica_db(), sync_ready=False), heard(PRIMARY_PEER)),
        "replica-prepare",
        R.REPLICA,
        ["PrepareReplica", "Notify"],
    ),
    (
        "sync: ... but not again within 5 s of asking",
        "strict",
        st(R.REPLICA, prepare_asked_at=NOW - 4.0),
        obs(replace(replica_db(), sync_ready=False), heard(PRIMARY_PEER)),
        "replica-follow",
        R.REPLICA,
        [],
    ),
    (
        "async: nothing waits for the replica, nothing to prepare",
        "async",
        st(R.REPLICA),
        obs(replace(replica_db(), sync_ready=False), heard(PRIMARY_PEER)),
        "replica-follow",
        R.REPLICA,
        [],
    ),
    # ---- replica: a replay that cannot finish is refused up front, in both modes
    (
        "sync: the primary dies while the replay is paused: refused, with the way out",
        "strict",
        st(R.REPLICA),
        obs(
            replace(replica_db(), replay_paused=True, lag_bytes=4_500_000),
            silent(PRIMARY_PEER),
            safety=DEAD,
        ),
        "failover-blocked",
        R.REPLICA,
        [],
    ),
    (
        "sync: a paused replay with nothing left to apply promotes",
        "strict",
        st(R.REPLICA),
        obs(replace(replica_db(), replay_paused=True), silent(PRIMARY_PEER), safety=DEAD),
        "failover-promote",
        R.PRIMARY,
        PROMOTE_SYNC,
    ),
    (
        "sync: a replay more than max_lag_seconds behind: refused",
        "strict",
        st(R.REPLICA),
        obs(replica_db(lag_seconds=11.8), silent(PRIMARY_PEER), safety=DEAD),
        "failover-blocked",
        R.REPLICA,
        [],
    ),
    (
        "async: the replay paused with a backlog: refused",
        "async",
        st(R.REPLICA),
        obs(
            replace(replica_db(), replay_paused=True, lag_bytes=10),
            silent(PRIMARY_PEER),
            safety=DEAD,
            lag_units=0,
        ),
        "failover-blocked",
        R.REPLICA,
        [],
    ),
    (
        "handover to a replica whose replay is paused: not yet",
        "strict",
        st(R.REPLICA),
        obs(
            replace(replica_db(), replay_paused=True, lag_bytes=10),
            heard(ann(R.HANDOVER, db_writable=False)),
        ),
        "handover-not-ready",
        R.REPLICA,
        [],
    ),
    # ---- replica: the five conditions of a unilateral promotion
    (
        "replica hears its primary: nothing",
        "async",
        st(R.REPLICA),
        obs(replica_db(), heard(PRIMARY_PEER)),
        "replica-follow",
        R.REPLICA,
        [],
    ),
    (
        "(a)-(e) hold: promote, epoch persisted first",
        "async",
        st(R.REPLICA),
        obs(replica_db(), silent(PRIMARY_PEER), safety=DEAD, lag_units=0),
        "failover-promote",
        R.PRIMARY,
        PROMOTE_ALONE,
    ),
    (
        "(a) one path still up: no failover",
        "async",
        st(R.REPLICA),
        obs(replica_db(), heard(PRIMARY_PEER, ago=0.4, up=1), safety=DEAD, lag_units=0),
        "replica-follow",
        R.REPLICA,
        [],
    ),
    (
        "(b) no safety verdict yet: ask for one",
        "async",
        st(R.REPLICA, asked=False),
        obs(replica_db(), silent(PRIMARY_PEER), lag_units=0),
        "failover-blocked",
        R.REPLICA,
        ASK,
    ),
    (
        "(b) I am the isolated one: no failover",
        "async",
        st(R.REPLICA),
        obs(replica_db(), silent(PRIMARY_PEER), safety=verdict(Verdict.I_AM_ISOLATED), lag_units=0),
        "failover-blocked",
        R.REPLICA,
        [],
    ),
    (
        "(b) peer database answers: heartbeats broken, no failover",
        "async",
        st(R.REPLICA),
        obs(
            replica_db(),
            silent(PRIMARY_PEER),
            safety=verdict(Verdict.PEER_ALIVE_HEARTBEAT_BROKEN),
            lag_units=0,
        ),
        "failover-blocked",
        R.REPLICA,
        [],
    ),
    (
        "(b) verdict older than the last beat does not count",
        "async",
        st(R.REPLICA, asked=False),
        obs(
            replica_db(),
            silent(PRIMARY_PEER),
            safety=verdict(Verdict.PEER_DEAD, ago=1.5),
            lag_units=0,
        ),
        "failover-blocked",
        R.REPLICA,
        ASK,
    ),
    (
        "(c) self-fence deadline not yet passed",
        "async",
        st(R.REPLICA),
        obs(replica_db(), silent(PRIMARY_PEER, ago=0.7), safety=DEAD, lag_units=0),
        "failover-blocked",
        R.REPLICA,
        [],
    ),
    (
        "(c) the peer's database unreachable for less than a deadline",
        "async",
        st(R.REPLICA, dead_since=NOW - 0.9),
        obs(replica_db(), silent(PRIMARY_PEER), safety=DEAD, lag_units=0),
        "failover-blocked",
        R.REPLICA,
        [],
    ),
    (
        "(c) a verdict found the peer's database alive: the run restarts",
        "async",
        st(R.REPLICA, dead_since=None),
        obs(replica_db(), silent(PRIMARY_PEER), safety=DEAD, lag_units=0),
        "failover-blocked",
        R.REPLICA,
        [],
    ),
    (
        "(d) beyond the lag bound (async)",
        "async",
        st(R.REPLICA),
        obs(replica_db(), silent(PRIMARY_PEER), safety=DEAD, lag_units=2 * 1024 * 1024),
        "failover-blocked",
        R.REPLICA,
        [],
    ),
    (
        "(d) lag unknown (async)",
        "async",
        st(R.REPLICA),
        obs(replica_db(), silent(PRIMARY_PEER), safety=DEAD),
        "failover-blocked",
        R.REPLICA,
        [],
    ),
    (
        "(d) lagging in seconds (async)",
        "async",
        st(R.REPLICA),
        obs(replica_db(lag_seconds=30.0), silent(PRIMARY_PEER), safety=DEAD, lag_units=0),
        "failover-blocked",
        R.REPLICA,
        [],
    ),
    (
        "(e) maintenance on",
        "async",
        st(R.REPLICA, maintenance=True),
        obs(replica_db(), silent(PRIMARY_PEER), safety=DEAD, lag_units=0),
        "failover-blocked",
        R.REPLICA,
        [],
    ),
    (
        "(e) the primary announced maintenance",
        "async",
        st(R.REPLICA),
        obs(replica_db(), silent(ann(R.PRIMARY, maintenance=True)), safety=DEAD, lag_units=0),
        "failover-blocked",
        R.REPLICA,
        [],
    ),
    (
        "lease keeper down: never promote",
        "async",
        st(R.REPLICA),
        obs(replica_db(), silent(PRIMARY_PEER), safety=DEAD, lag_units=0, keeper_ok=False),
        "failover-blocked",
        R.REPLICA,
        [],
    ),
    (
        "strict sync: lag does not matter, sync on before the VIP",
        "strict",
        st(R.REPLICA),
        obs(replica_db(), silent(PRIMARY_PEER), safety=DEAD),
        "failover-promote",
        R.PRIMARY,
        PROMOTE_SYNC,
    ),
    (
        "sync: primary announced replica-not-in-sync",
        "strict",
        st(R.REPLICA),
        obs(replica_db(), silent(ann(R.PRIMARY, sync_mark=1)), safety=DEAD),
        "failover-blocked",
        R.REPLICA,
        [],
    ),
    (
        "fallback: inside the window: promote, alone under a mark",
        "fallback",
        st(R.REPLICA),
        obs(replica_db(), silent(PRIMARY_PEER), safety=DEAD),
        "failover-promote",
        R.PRIMARY,
        PROMOTE_SYNC,
    ),
    (
        "fallback: the primary never confirmed us eligible",
        "fallback",
        st(R.REPLICA, eligible_since=NOW - 1.25),
        obs(replica_db(), silent(PRIMARY_PEER), safety=DEAD),
        "failover-blocked",
        R.REPLICA,
        [],
    ),
    (
        "fallback: past the window the primary may have fallen back",
        "fallback",
        st(R.REPLICA),
        obs(replica_db(), silent(PRIMARY_PEER, ago=2.6, echo_ago=2.75), safety=DEAD),
        "failover-blocked",
        R.REPLICA,
        [],
    ),
    (
        "arbiter: the record allows it",
        "arbiter",
        st(R.REPLICA),
        obs(replica_db(), silent(PRIMARY_PEER), safety=DEAD, arbiter=ArbiterView(1, False)),
        "failover-promote",
        R.PRIMARY,
        ["PrePromote", "ArbiterPromote", *PROMOTE_SYNC[1:]],
    ),
    (
        "arbiter: the primary holds the mark",
        "arbiter",
        st(R.REPLICA),
        obs(replica_db(), silent(PRIMARY_PEER), safety=DEAD, arbiter=ArbiterView(1, True)),
        "failover-blocked",
        R.REPLICA,
        [],
    ),
    (
        "arbiter: unreadable",
        "arbiter",
        st(R.REPLICA),
        obs(replica_db(), silent(PRIMARY_PEER), safety=DEAD),
        "failover-blocked",
        R.REPLICA,
        [],
    ),
    (
        "a replica needing a resync never promotes",
        "async",
        st(R.REPLICA, needs_resync=True),
        obs(replica_db(), silent(PRIMARY_PEER), safety=DEAD, lag_units=0),
        "replica-resync-wait",
        R.REPLICA,
        [],
    ),
    (
        "replica's database writable: fence it",
        "async",
        st(R.REPLICA),
        obs(primary_db(), heard(PRIMARY_PEER)),
        "replica-writable-db",
        R.REPLICA,
        ["Fence", "Notify"],
    ),
    # ---- handover and switchover, seen from the replica
    (
        "peer hands over, we have its last position",
        "async",
        st(R.REPLICA),
        obs(replica_db(received=100), heard(ann(R.HANDOVER, db_writable=False))),
        "handover-promote",
        R.PRIMARY,
        ["PrePromote", "PersistState", "Notify", "WaitReplayed", "Promote", "AcquireVip", "Notify"],
    ),
    (
        "peer hands over, we lack its last commits: wait",
        "async",
        st(R.REPLICA),
        obs(replica_db(received=90), heard(ann(R.HANDOVER, db_writable=False))),
        "handover-not-ready",
        R.REPLICA,
        [],
    ),
    (
        "peer's database died: it hands over, lag checked",
        "async",
        st(R.REPLICA),
        obs(
            replica_db(),
            heard(ann(R.HANDOVER, db_reachable=False, db_writable=False, position=None)),
            lag_units=10,
        ),
        "handover-promote",
        R.PRIMARY,
        ["PrePromote", "PersistState", "Notify", "WaitReplayed", "Promote", "AcquireVip", "Notify"],
    ),
    # ---- epochs
    (
        "replica streams from a newer primary: adopt",
        "async",
        st(R.REPLICA),
        obs(replica_db(), heard(ann(R.PRIMARY, epoch=3))),
        "newer-epoch-adopt",
        R.REPLICA,
        [],
    ),
    (
        "replica does not stream from the newer primary: resync",
        "async",
        st(R.REPLICA),
        obs(replica_db(streaming=False), heard(ann(R.PRIMARY, epoch=3))),
        "newer-epoch-replica",
        R.REPLICA,
        ["Notify"],
    ),
    (
        "primary sees a newer epoch: stop serving for good",
        "async",
        st(R.PRIMARY),
        obs(primary_db(), heard(ann(R.PRIMARY, epoch=2)), vip_held=True),
        "newer-epoch",
        R.FENCED,
        ["Fence", "ReleaseVip", "Notify"],
    ),
    (
        "two primaries at one epoch: the later name yields",
        "async",
        st(R.PRIMARY),
        obs(primary_db(), heard(PRIMARY_PEER), vip_held=True),
        "primary-serving",
        R.PRIMARY,
        [],
    ),
    # ---- primary
    (
        "primary hears its replica: serve",
        "async",
        st(R.PRIMARY),
        obs(primary_db(), heard(REPLICA_PEER), vip_held=True),
        "primary-serving",
        R.PRIMARY,
        [],
    ),
    (
        "primary without the VIP takes it",
        "async",
        st(R.PRIMARY),
        obs(primary_db(), heard(REPLICA_PEER)),
        "primary-take-vip",
        R.PRIMARY,
        ["AcquireVip"],
    ),
    (
        "isolated primary fences and drops the VIP",
        "async",
        st(R.PRIMARY),
        obs(
            primary_db(),
            silent(REPLICA_PEER, ago=0.6, echo_ago=0.7),
            safety=verdict(Verdict.I_AM_ISOLATED),
            vip_held=True,
        ),
        "primary-isolated",
        R.FENCED,
        ["Fence", "ReleaseVip", "Notify"],
    ),
    (
        "no echo and no verdict: lease expired",
        "async",
        st(R.PRIMARY),
        obs(primary_db(), heard(REPLICA_PEER, ago=0.05, echo_ago=0.9), vip_held=True),
        "primary-lease-lost",
        R.FENCED,
        ["Fence", "ReleaseVip", "Notify"],
    ),
    (
        "replica dead: peer_dead verdict keeps the primary serving",
        "async",
        st(R.PRIMARY),
        obs(primary_db(), silent(REPLICA_PEER, ago=3.0, echo_ago=3.1), safety=DEAD, vip_held=True),
        "primary-serving",
        R.PRIMARY,
        [],
    ),
    (
        "heartbeats blocked, peer DB answers: keep serving",
        "async",
        st(R.PRIMARY),
        obs(
            primary_db(),
            silent(REPLICA_PEER, ago=3.0, echo_ago=3.1),
            safety=verdict(Verdict.PEER_ALIVE_HEARTBEAT_BROKEN),
            vip_held=True,
        ),
        "primary-serving",
        R.PRIMARY,
        [],
    ),
    (
        "peer quiet: keep asking for safety checks",
        "async",
        st(R.PRIMARY, asked=False),
        obs(primary_db(), heard(REPLICA_PEER, ago=0.3, echo_ago=0.4), vip_held=True),
        "primary-serving",
        R.PRIMARY,
        ASK,
    ),
    (
        "database failed three probes: hand over",
        "async",
        st(R.PRIMARY, db_fails=2),
        obs(DOWN, heard(REPLICA_PEER), vip_held=True),
        "primary-db-failed",
        R.HANDOVER,
        ["ReleaseVip", "Fence", "Notify"],
    ),
    (
        "a check script failed: hand over",
        "async",
        st(R.PRIMARY),
        obs(primary_db(), heard(REPLICA_PEER), vip_held=True, checks_ok=False),
        "primary-db-failed",
        R.HANDOVER,
        ["Fence", "ReleaseVip", "Notify"],
    ),
    (
        "database failed, replica not eligible: keep the role",
        "async",
        st(R.PRIMARY, db_fails=2),
        obs(DOWN, heard(ann(R.REPLICA, eligible=False, needs_resync=True)), vip_held=True),
        "primary-db-failing",
        R.PRIMARY,
        [],
    ),
    (
        "database lost while the peer is quiet: stop serving",
        "async",
        st(R.PRIMARY, asked=False),
        obs(DOWN, silent(REPLICA_PEER, ago=0.3, echo_ago=0.4), safety=DEAD, vip_held=True),
        "primary-db-lost",
        R.FENCED,
        ["RunSafetyCheck", "ReleaseVip", "Fence", "Notify"],
    ),
    (
        "database found fenced (keeper): resume only via the peer",
        "async",
        st(R.PRIMARY),
        obs(primary_db(writable=False), heard(REPLICA_PEER), vip_held=True),
        "primary-db-fenced",
        R.FENCED,
        ["ReleaseVip", "Notify"],
    ),
    (
        "strict: commits must wait for the replica",
        "strict",
        st(R.PRIMARY),
        obs(primary_db(sync=False), heard(REPLICA_PEER), vip_held=True),
        "primary-sync-on",
        R.PRIMARY,
        ["SetSynchronous"],
    ),
    (
        "strict: replica gone for long: keep waiting",
        "strict",
        st(R.PRIMARY),
        obs(
            primary_db(sync=True),
            silent(REPLICA_PEER, ago=5.0, echo_ago=5.1),
            safety=DEAD,
            vip_held=True,
        ),
        "primary-serving",
        R.PRIMARY,
        [],
    ),
    (
        "fallback: replica gone for 3 deadlines: mark, then async",
        "fallback",
        st(R.PRIMARY),
        obs(
            primary_db(sync=True),
            silent(REPLICA_PEER, ago=3.5, echo_ago=3.6),
            safety=DEAD,
            vip_held=True,
        ),
        "primary-sync-fallback",
        R.PRIMARY,
        ["PersistState", "SetSynchronous", "Notify"],
    ),
    (
        "fallback: replica gone for 1 deadline: keep waiting",
        "fallback",
        st(R.PRIMARY),
        obs(
            primary_db(sync=True),
            silent(REPLICA_PEER, ago=1.5, echo_ago=1.6),
            safety=DEAD,
            vip_held=True,
        ),
        "primary-serving",
        R.PRIMARY,
        [],
    ),
    (
        "fallback: isolated primary never falls back",
        "fallback",
        st(R.PRIMARY),
        obs(
            primary_db(sync=True),
            silent(REPLICA_PEER, ago=2.5, echo_ago=2.6),
            safety=verdict(Verdict.I_AM_ISOLATED),
            vip_held=True,
        ),
        "primary-isolated",
        R.FENCED,
        ["Fence", "ReleaseVip", "Notify"],
    ),
    (
        "arbiter: fall back only through the arbiter's mark",
        "arbiter",
        st(R.PRIMARY),
        obs(
            primary_db(sync=True),
            silent(REPLICA_PEER, ago=3.5, echo_ago=3.6),
            safety=DEAD,
            vip_held=True,
        ),
        "primary-sync-fallback",
        R.PRIMARY,
        ["ArbiterMark", "PersistState", "SetSynchronous", "Notify"],
    ),
    (
        "marked: the replica is back and streams: sync on, mark kept",
        "fallback",
        st(R.PRIMARY, sync_mark=1),
        obs(primary_db(sync=False, replicas=(STREAMING,)), heard(REPLICA_PEER), vip_held=True),
        "primary-sync-on",
        R.PRIMARY,
        ["SetSynchronous"],
    ),
    (
        "marked: the replica is back but catching up: commits do not wait for it yet",
        "fallback",
        st(R.PRIMARY, sync_mark=1),
        obs(primary_db(sync=False, replicas=(CATCHING_UP,)), heard(REPLICA_PEER), vip_held=True),
        "primary-sync-catchup",
        R.PRIMARY,
        [],
    ),
    (
        "marked: ... not for more than 30 s",
        "fallback",
        st(R.PRIMARY, sync_mark=1, back_since=NOW - 30.5),
        obs(primary_db(sync=False, replicas=(CATCHING_UP,)), heard(REPLICA_PEER), vip_held=True),
        "primary-sync-on",
        R.PRIMARY,
        ["SetSynchronous"],
    ),
    (
        "strict, after sync relax: the replica is back and streams: sync on",
        "strict",
        st(R.PRIMARY, sync_mark=1),
        obs(primary_db(sync=False, replicas=(STREAMING,)), heard(REPLICA_PEER), vip_held=True),
        "primary-sync-on",
        R.PRIMARY,
        ["SetSynchronous"],
    ),
    (
        "marked: the replica gone again: async again",
        "fallback",
        st(R.PRIMARY, sync_mark=1),
        obs(
            primary_db(sync=True),
            silent(REPLICA_PEER, ago=2.0, echo_ago=2.1),
            safety=DEAD,
            vip_held=True,
        ),
        "primary-sync-off",
        R.PRIMARY,
        ["SetSynchronous"],
    ),
    (
        "marked, sync on: remember the position to reach",
        "fallback",
        st(R.PRIMARY, sync_mark=1),
        obs(primary_db(sync=True), heard(REPLICA_PEER), vip_held=True),
        "primary-sync-armed",
        R.PRIMARY,
        [],
    ),
    (
        "marked: the replica reached it: clear the mark",
        "arbiter",
        st(R.PRIMARY, sync_mark=1, clear_pos=pos(100)),
        obs(
            primary_db(
                sync=True, lsn=105, replicas=(ReplicaInfo("b", sync=True, flushed=pos(101)),)
            ),
            heard(REPLICA_PEER),
            vip_held=True,
        ),
        "primary-sync-restored",
        R.PRIMARY,
        ["ArbiterUnmark", "Notify"],
    ),
    # ---- promoting
    (
        "promoted database: take the VIP",
        "async",
        st(R.PROMOTING, epoch=2),
        obs(primary_db(), silent(PRIMARY_PEER), safety=DEAD),
        "promoting-done",
        R.PRIMARY,
        ["AcquireVip", "Notify"],
    ),
    (
        "promotion not done yet: retry",
        "async",
        st(R.PROMOTING, epoch=2),
        obs(replica_db(), silent(PRIMARY_PEER), safety=DEAD),
        "promoting-retry",
        R.PRIMARY,
        ["WaitReplayed", "Promote", "AcquireVip", "Notify"],
    ),
    (
        "promoting without a lease: wait",
        "async",
        st(R.PROMOTING, epoch=2, asked=False),
        obs(replica_db(), silent(PRIMARY_PEER)),
        "promoting-wait",
        R.PROMOTING,
        ASK,
    ),
    # ---- handover
    (
        "switchover done: the old primary follows",
        "async",
        st(R.HANDOVER, switching=True),
        obs(primary_db(writable=False), heard(ann(R.PRIMARY, epoch=2))),
        "switchover-follow",
        R.REPLICA,
        ["Rejoin", "Notify"],
    ),
    (
        "handover: waiting",
        "async",
        st(R.HANDOVER, since=NOW - 1.0),
        obs(primary_db(writable=False), heard(REPLICA_PEER)),
        "handover-wait",
        R.HANDOVER,
        [],
    ),
    (
        "handover: the peer never took over",
        "async",
        st(R.HANDOVER, since=NOW - 10.0),
        obs(primary_db(writable=False), heard(REPLICA_PEER)),
        "handover-timeout",
        R.FENCED,
        ["Notify"],
    ),
    # ---- fenced
    (
        "fenced: the replica heard us since and did not take over: resume",
        "async",
        st(R.FENCED, fenced_at=NOW - 1.0),
        obs(primary_db(writable=False), heard(REPLICA_PEER, echo_ago=0.15)),
        "fenced-resume",
        R.PRIMARY,
        ["Unfence", "AcquireVip", "Notify"],
    ),
    (
        "fenced: the replica has not heard us since we fenced",
        "async",
        st(R.FENCED, fenced_at=NOW - 0.1),
        obs(primary_db(writable=False), heard(REPLICA_PEER, echo_ago=0.15)),
        "fenced-wait",
        R.FENCED,
        [],
    ),
    (
        "fenced: the peer is silent: never resume on a verdict",
        "async",
        st(R.FENCED),
        obs(primary_db(writable=False), silent(REPLICA_PEER, ago=5.0), safety=DEAD),
        "fenced-wait",
        R.FENCED,
        [],
    ),
    (
        "fenced: the peer took over: resync needed",
        "async",
        st(R.FENCED),
        obs(primary_db(writable=False), heard(ann(R.PRIMARY, epoch=2))),
        "newer-epoch",
        R.FENCED,
        ["Notify"],
    ),
    (
        "fenced, needs resync, auto_rejoin: rejoin",
        "rejoin",
        st(R.FENCED, needs_resync=True),
        obs(primary_db(writable=False), heard(ann(R.PRIMARY, epoch=2))),
        "rejoin-auto",
        R.REPLICA,
        ["Rejoin", "Notify"],
    ),
    (
        "fenced, needs resync, no auto_rejoin: stay fenced",
        "async",
        st(R.FENCED, needs_resync=True),
        obs(primary_db(), heard(ann(R.PRIMARY, epoch=2))),
        "fenced-wait",
        R.FENCED,
        ["Fence"],
    ),
    (
        "fenced, database dead: hand over",
        "async",
        st(R.FENCED, db_fails=3),
        obs(DOWN, heard(REPLICA_PEER)),
        "fenced-db-failed",
        R.HANDOVER,
        ["Notify"],
    ),
    (
        "fallback: a marked primary's database fails: it keeps the role (no handover "
        "to a replica that is not in sync)",
        "fallback",
        st(R.PRIMARY, sync_mark=1, db_fails=3),
        obs(DOWN, heard(REPLICA_PEER), vip_held=True),
        "primary-db-failing",
        R.PRIMARY,
        [],
    ),
    # ---- operator requests
    (
        "strict: sync relax while the old primary needs a resync",
        "strict",
        st(R.PRIMARY),
        obs(
            primary_db(sync=True),
            heard(ann(R.FENCED, needs_resync=True, eligible=False)),
            vip_held=True,
            request=Request(RequestKind.SYNC_RELAX),
        ),
        "sync-relax",
        R.PRIMARY,
        ["PersistState", "SetSynchronous", "Notify"],
    ),
    (
        "strict: sync relax refused while the replica is heard eligible",
        "strict",
        st(R.PRIMARY),
        obs(
            primary_db(sync=True),
            heard(REPLICA_PEER),
            vip_held=True,
            request=Request(RequestKind.SYNC_RELAX),
        ),
        "request-refused",
        R.PRIMARY,
        ["Notify"],
    ),
    (
        "strict: ... granted with --force",
        "strict",
        st(R.PRIMARY),
        obs(
            primary_db(sync=True),
            heard(REPLICA_PEER),
            vip_held=True,
            request=Request(RequestKind.SYNC_RELAX, force=True),
        ),
        "sync-relax",
        R.PRIMARY,
        ["PersistState", "SetSynchronous", "Notify"],
    ),
    (
        "async: sync relax refused (nothing waits)",
        "async",
        st(R.PRIMARY),
        obs(
            primary_db(),
            heard(REPLICA_PEER),
            vip_held=True,
            request=Request(RequestKind.SYNC_RELAX),
        ),
        "request-refused",
        R.PRIMARY,
        ["Notify"],
    ),
    (
        "switchover on the primary",
        "async",
        st(R.PRIMARY),
        obs(
            primary_db(),
            heard(REPLICA_PEER),
            vip_held=True,
            request=Request(RequestKind.SWITCHOVER),
        ),
        "switchover-start",
        R.HANDOVER,
        ["Notify", "Fence", "ReleaseVip"],
    ),
    (
        "switchover --dry-run on the primary: nothing changes, nothing is recorded",
        "async",
        st(R.PRIMARY),
        obs(
            primary_db(),
            heard(REPLICA_PEER),
            vip_held=True,
            request=Request(RequestKind.SWITCHOVER, dry_run=True),
            peer_lag_units=0,
        ),
        "switchover-dry-run",
        R.PRIMARY,
        [],
    ),
    (
        "switchover --dry-run to a replica needing a resync: refused, nothing recorded",
        "async",
        st(R.PRIMARY),
        obs(
            primary_db(),
            heard(ann(R.REPLICA, eligible=False, needs_resync=True)),
            vip_held=True,
            request=Request(RequestKind.SWITCHOVER, dry_run=True),
        ),
        "request-refused",
        R.PRIMARY,
        [],
    ),
    (
        "switchover with maintenance on the peer: refused",
        "async",
        st(R.PRIMARY),
        obs(
            primary_db(),
            heard(ann(R.REPLICA, maintenance=True)),
            vip_held=True,
            request=Request(RequestKind.SWITCHOVER),
        ),
        "request-refused",
        R.PRIMARY,
        ["Notify"],
    ),
    (
        "switchover with maintenance on here, forced: starts",
        "async",
        st(R.PRIMARY, maintenance=True),
        obs(
            primary_db(),
            heard(REPLICA_PEER),
            vip_held=True,
            request=Request(RequestKind.SWITCHOVER, force=True),
        ),
        "switchover-start",
        R.HANDOVER,
        ["Notify", "Fence", "ReleaseVip"],
    ),
    (
        "switchover to a replica past the lag bound: refused",
        "async",
        st(R.PRIMARY),
        obs(
            primary_db(),
            heard(REPLICA_PEER),
            vip_held=True,
            request=Request(RequestKind.SWITCHOVER),
            peer_lag_units=10**12,
        ),
        "request-refused",
        R.PRIMARY,
        ["Notify"],
    ),
    (
        "switchover to a replica past the lag bound, forced: starts",
        "async",
        st(R.PRIMARY),
        obs(
            primary_db(),
            heard(REPLICA_PEER),
            vip_held=True,
            request=Request(RequestKind.SWITCHOVER, force=True),
            peer_lag_units=10**12,
        ),
        "switchover-start",
        R.HANDOVER,
        ["Notify", "Fence", "ReleaseVip"],
    ),
    (
        "switchover to a replica whose database does not answer: refused even forced",
        "async",
        st(R.PRIMARY),
        obs(
            primary_db(),
            heard(ann(R.REPLICA, db_reachable=False)),
            vip_held=True,
            request=Request(RequestKind.SWITCHOVER, force=True),
        ),
        "request-refused",
        R.PRIMARY,
        ["Notify"],
    ),
    (
        "switchover with no eligible replica: refused",
        "async",
        st(R.PRIMARY),
        obs(
            primary_db(),
            heard(ann(R.REPLICA, eligible=False)),
            vip_held=True,
            request=Request(RequestKind.SWITCHOVER),
        ),
        "request-refused",
        R.PRIMARY,
        ["Notify"],
    ),
    (
        "maintenance on",
        "async",
        st(R.REPLICA),
        obs(replica_db(), heard(PRIMARY_PEER), request=Request(RequestKind.MAINTENANCE_ON)),
        "maintenance",
        R.REPLICA,
        [],
    ),
    (
        "failover while the primary is heard serving: refused",
        "async",
        st(R.REPLICA),
        obs(replica_db(), heard(PRIMARY_PEER), request=Request(RequestKind.FAILOVER, force=True)),
        "request-refused",
        R.REPLICA,
        ["Notify"],
    ),
    (
        "failover beyond the lag bound: refused without --force",
        "async",
        st(R.REPLICA),
        obs(
            replica_db(),
            silent(PRIMARY_PEER),
            safety=DEAD,
            lag_units=10**9,
            request=Request(RequestKind.FAILOVER),
        ),
        "request-refused",
        R.REPLICA,
        ["Notify"],
    ),
    (
        "failover --force beyond the lag bound",
        "async",
        st(R.REPLICA),
        obs(
            replica_db(),
            silent(PRIMARY_PEER),
            safety=DEAD,
            lag_units=10**9,
            request=Request(RequestKind.FAILOVER, force=True),
        ),
        "failover-forced",
        R.PRIMARY,
        PROMOTE_ALONE,
    ),
    (
        "failover --force never while the peer's database answers",
        "async",
        st(R.REPLICA),
        obs(
            replica_db(),
            silent(PRIMARY_PEER),
            safety=verdict(Verdict.PEER_ALIVE_HEARTBEAT_BROKEN),
            request=Request(RequestKind.FAILOVER, force=True),
        ),
        "request-refused",
        R.REPLICA,
        ["Notify"],
    ),
    (
        "resync requested on a fenced node",
        "async",
        st(R.FENCED, needs_resync=True),
        obs(
            primary_db(writable=False),
            heard(ann(R.PRIMARY, epoch=2)),
            request=Request(RequestKind.RESYNC),
        ),
        "resync",
        R.REPLICA,
        ["Rejoin", "Notify"],
    ),
]


def _kinds(d: Decision) -> list[str]:
    return [type(a).__name__ for a in d.actions]


@pytest.mark.parametrize(
    ("cfg", "state", "observation", "rule", "role", "kinds"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_situation(
    cfg: str,
    state: NodeState,
    observation: Observation,
    rule: str,
    role: NodeRole,
    kinds: list[str],
) -> None:
    d = decide(state, observation, params(CFG[cfg]))
    assert (d.rule, d.next_state.role, _kinds(d)) == (rule, role, kinds), d.reason
    assert check(state, d) is None
    assert d.reason


def test_tie_break_by_name() -> None:
    """Two primaries at one epoch (two forced failovers): the later name yields."""
    b_cfg = replace(
        CFG["async"],
        node=replace(CFG["async"].node, name="b"),
        peer=replace(CFG["async"].peer, name="a"),
    )
    d = decide(st(R.PRIMARY), obs(primary_db(), heard(PRIMARY_PEER)), params(b_cfg))
    assert (d.rule, d.next_state.role, d.next_state.needs_resync) == ("epoch-tie", R.FENCED, True)


def test_promotion_persists_the_new_epoch_before_promoting() -> None:
    d = decide(
        st(R.REPLICA, epoch=4),
        obs(replica_db(), silent(ann(R.PRIMARY, epoch=4)), safety=DEAD, lag_units=0),
        params(CFG["async"]),
    )
    kinds = _kinds(d)
    persist = d.actions[kinds.index("PersistState")]
    assert isinstance(persist, PersistState)
    assert (persist.state.role, persist.state.epoch) == (R.PROMOTING, 5)
    assert kinds.index("PersistState") < kinds.index("Promote") < kinds.index("AcquireVip")
    assert (d.next_state.role, d.next_state.epoch) == (R.PRIMARY, 5)
    assert d.next_state.last_failover == 1_700_000_000.0


PROMOTIONS = [
    c for c in CASES if c[4] in ("failover-promote", "handover-promote", "failover-forced")
]


@pytest.mark.parametrize(
    ("cfg", "state", "observation", "rule"),
    [pytest.param(*c[1:5], id=c[0]) for c in PROMOTIONS],
)
def test_every_promotion_asks_the_pre_promote_hook_before_it_changes_anything(
    cfg: str, state: NodeState, observation: Observation, rule: str
) -> None:
    """A veto must leave the node as it was: PrePromote comes before the arbiter's
    compare-and-set and before the new epoch is persisted, and says which kind of
    promotion it is and at which epoch."""
    d = decide(state, observation, params(CFG[cfg]))
    first = d.actions[0]
    assert isinstance(first, PrePromote)
    kind = {"failover-promote": "failover", "handover-promote": "switchover"}.get(rule, "forced")
    assert (first.kind, first.epoch) == (kind, d.next_state.epoch)
    assert first.epoch > state.epoch
    assert first.reason and d.reason.startswith(first.reason)
    assert not any(isinstance(a, PrePromote) for a in d.actions[1:])


def test_the_promotion_cases_cover_every_kind() -> None:
    assert {c[4] for c in PROMOTIONS} == {"failover-promote", "handover-promote", "failover-forced"}


def test_fallback_promotion_takes_the_mark_and_goes_async() -> None:
    d = decide(
        st(R.REPLICA), obs(replica_db(), silent(PRIMARY_PEER), safety=DEAD), params(CFG["fallback"])
    )
    assert d.next_state.sync_mark == 2
    assert SetSynchronous(False) in d.actions


def test_fallback_marks_before_going_async() -> None:
    d = decide(
        st(R.PRIMARY),
        obs(
            primary_db(sync=True),
            silent(REPLICA_PEER, ago=3.5, echo_ago=3.6),
            safety=DEAD,
            vip_held=True,
        ),
        params(CFG["fallback"]),
    )
    kinds = _kinds(d)
    persist = d.actions[0]
    assert isinstance(persist, PersistState) and persist.state.sync_mark == 1
    assert kinds.index("PersistState") < kinds.index("SetSynchronous")


@pytest.mark.parametrize(
    ("peer", "safety", "expected"),
    [
        pytest.param(
            heard(REPLICA_PEER, echo_ago=0.15), None, NOW - 0.15 + LEASE_FRACTION * D, id="echo"
        ),
        pytest.param(
            silent(REPLICA_PEER, ago=3, echo_ago=3.1),
            DEAD,
            NOW - 0.1 + LEASE_FRACTION * D,
            id="verdict",
        ),
        pytest.param(
            silent(REPLICA_PEER, ago=3, echo_ago=0.5),
            DEAD,
            NOW - 0.1 + LEASE_FRACTION * D,
            id="newest-evidence-wins",
        ),
    ],
)
def test_lease_runs_from_the_evidence(
    peer: PeerView, safety: SafetyView | None, expected: float
) -> None:
    """The lease lasts LEASE_FRACTION of the deadline from its newest evidence: a peer
    that echoed our beat sent at s waits D after hearing it before it promotes."""
    d = decide(
        st(R.PRIMARY), obs(primary_db(), peer, safety=safety, vip_held=True), params(CFG["async"])
    )
    assert d.lease_until == pytest.approx(expected)


def test_non_serving_decisions_carry_no_lease() -> None:
    d = decide(st(R.REPLICA), obs(replica_db(), heard(PRIMARY_PEER)), params(CFG["async"]))
    assert d.lease_until is None


def test_request_keeps_the_lease_of_a_primary() -> None:
    d = decide(
        st(R.PRIMARY),
        obs(
            primary_db(),
            heard(REPLICA_PEER),
            vip_held=True,
            request=Request(RequestKind.MAINTENANCE_ON),
        ),
        params(CFG["async"]),
    )
    assert d.next_state.maintenance and d.lease_until is not None and d.answer


def test_rejoin_adopts_the_primary_epoch_and_clears_resync() -> None:
    d = decide(
        st(R.FENCED, needs_resync=True, epoch=1),
        obs(primary_db(writable=False), heard(ann(R.PRIMARY, epoch=3))),
        params(CFG["rejoin"]),
    )
    assert (d.next_state.epoch, d.next_state.needs_resync) == (3, False)


def test_every_table_row_has_a_case() -> None:
    """The cases above exercise every row of the transition table at least once."""
    from dbha.core.transitions import TABLE

    seen = {c[4] for c in CASES} | {"epoch-tie"}
    assert {r.rule for r in TABLE} - seen == set()


def test_a_replica_waiting_out_the_deadlines_says_when_they_end() -> None:
    """wake_at is the later end of the two waits (the deadline after the last beat,
    a deadline plus the safety timeout of peer_dead verdicts); a decision at that
    moment promotes. Before a run of verdicts begins, there is no such time."""
    timeout = CFG["async"].safety.timeout_ms / 1000
    state = st(R.REPLICA, dead_since=NOW - 0.2)
    peer = silent(PRIMARY_PEER, ago=0.4, echo_ago=0.5)
    d = decide(state, obs(replica_db(), peer, safety=DEAD, lag_units=0), params(CFG["async"]))
    assert d.rule == "failover-blocked"
    assert d.wake_at == pytest.approx(NOW - 0.2 + D + timeout)
    later = obs(replica_db(), peer, safety=DEAD, lag_units=0)._replace(
        now=d.wake_at + 0.001,
        safety=SafetyView(Verdict.PEER_DEAD, d.wake_at - 0.05),
    )
    assert decide(d.next_state, later, params(CFG["async"])).rule == "failover-promote"
    none_yet = decide(
        st(R.REPLICA, dead_since=None), obs(replica_db(), peer, lag_units=0), params(CFG["async"])
    )
    assert none_yet.rule == "failover-blocked" and none_yet.wake_at is None
    following = decide(st(R.REPLICA), obs(replica_db(), heard(PRIMARY_PEER)), params(CFG["async"]))
    assert following.rule == "replica-follow" and following.wake_at is None


def test_fallback_at_once_when_the_replica_is_heard_needing_a_resync() -> None:
    """A primary just promoted (since 0.2 s) whose old primary is heard as fenced and
    needing a resync falls back without waiting three deadlines: that node cannot
    become eligible without a rejoin. The same peer, not needing a resync (merely
    not eligible yet), is waited for; in strict mode nothing falls back."""
    resyncing = ann(R.FENCED, epoch=0, needs_resync=True, db_reachable=False, position=None)
    db = primary_db(sync=True)
    d = decide(
        st(R.PRIMARY, since=NOW - 0.2),
        obs(db, heard(resyncing), vip_held=True),
        params(CFG["fallback"]),
    )
    assert d.rule == "primary-sync-fallback" and "needs a resync" in d.reason
    assert d.next_state.sync_mark == 1 and SetSynchronous(False) in d.actions
    waiting = ann(R.FENCED, epoch=0, needs_resync=False, db_reachable=False, position=None)
    d = decide(
        st(R.PRIMARY, since=NOW - 0.2),
        obs(db, heard(waiting), vip_held=True),
        params(CFG["fallback"]),
    )
    assert d.rule != "primary-sync-fallback" and d.next_state.sync_mark is None
    d = decide(
        st(R.PRIMARY, since=NOW - 0.2),
        obs(db, heard(resyncing), vip_held=True),
        params(CFG["strict"]),
    )
    assert d.rule != "primary-sync-fallback" and d.next_state.sync_mark is None


def test_sync_relax_persists_the_mark_before_it_stops_waiting() -> None:
    """The operator's sync relax is the fallback taken by hand: the mark is persisted
    (and so announced) before commits stop waiting, and the answer says how it ends."""
    d = decide(
        st(R.PRIMARY, epoch=3),
        obs(
            primary_db(sync=True),
            heard(ann(R.FENCED, epoch=3, needs_resync=True, eligible=False)),
            vip_held=True,
            request=Request(RequestKind.SYNC_RELAX),
        ),
        params(CFG["strict"]),
    )
    persist, sync_off = d.actions[0], d.actions[1]
    assert isinstance(persist, PersistState) and persist.state.sync_mark == 3
    assert isinstance(sync_off, SetSynchronous) and not sync_off.on
    assert d.next_state.sync_mark == 3 and d.answer is not None and "caught up" in d.answer


@pytest.mark.parametrize(
    ("mode", "role", "mark", "want"),
    [
        ("strict", R.FENCED, None, True),  # never acknowledged alone: provable
        ("fallback", R.FENCED, None, True),
        ("fallback", R.FENCED, 1, False),  # it fell back: it acknowledged alone
        ("async", R.FENCED, None, False),  # every commit was acknowledged alone
        ("strict", R.REPLICA, None, False),  # a replica that took writes: acknowledged
    ],
)
def test_a_resync_says_whether_what_the_node_holds_alone_was_never_acknowledged(
    mode: str, role: NodeRole, mark: int | None, want: bool
) -> None:
    d = decide(
        st(role, needs_resync=True, sync_mark=mark),
        obs(
            primary_db(writable=False),
            heard(ann(R.PRIMARY, epoch=2)),
            request=Request(RequestKind.RESYNC),
        ),
        params(CFG[mode]),
    )
    rejoin = [a for a in d.actions if isinstance(a, Rejoin)]
    assert d.rule == "resync" and len(rejoin) == 1
    assert rejoin[0].unacknowledged is want


def test_a_refused_request_says_so_in_its_first_word() -> None:
    d = decide(
        st(R.FENCED, needs_resync=True),
        obs(
            primary_db(writable=False),
            silent(ann(R.PRIMARY, epoch=2)),
            request=Request(RequestKind.RESYNC),
        ),
        params(CFG["async"]),
    )
    assert d.rule == "request-refused"
    assert d.answer is not None and d.answer.startswith("refused: resync: ")


@pytest.mark.parametrize(
    ("planned", "event"), [(True, "switchover_promoting"), (False, "failover_started")]
)
def test_a_replica_names_the_promotion_after_why_the_peer_handed_over(
    planned: bool, event: str
) -> None:
    """The history tells a planned switchover from a failover: the replica's start
    event follows the handing-over peer's ``planned`` flag."""
    peer = ann(R.HANDOVER, db_writable=False, planned=planned)
    d = decide(st(R.REPLICA), obs(replica_db(received=100), heard(peer)), params(CFG["async"]))
    assert d.rule == "handover-promote", d.reason
    events = [a.event for a in d.actions if isinstance(a, Notify)]
    assert events == [event, "promoted"]


def test_a_node_handing_over_for_a_switchover_announces_it_planned() -> None:
    """The flag the replica reads is what the switching primary announces."""
    o = obs(
        primary_db(), heard(REPLICA_PEER), vip_held=True, request=Request(RequestKind.SWITCHOVER)
    )
    d = decide(st(R.PRIMARY), o, params(CFG["async"]))
    assert d.rule == "switchover-start"
    assert announce(d.next_state, o).planned is True
    assert announce(st(R.PRIMARY), o).planned is False


def test_a_replica_announces_how_far_it_is_behind_by_its_own_account() -> None:
    """What it has not received of the primary's announced position plus what it has
    received and not applied: the primary's switchover check reads this, fresh on
    the replica's side, rather than comparing a probe-old position with its own."""
    local = replace(replica_db(received=100), lag_bytes=30)
    o = obs(local, heard(PRIMARY_PEER), lag_units=5)
    assert announce(st(R.REPLICA), o).behind == 35
    assert (
        announce(st(R.REPLICA), obs(replace(local, lag_bytes=None), heard(PRIMARY_PEER))).behind
        is None
    )
    assert announce(st(R.PRIMARY), o).behind is None
