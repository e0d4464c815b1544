"""Heartbeat core: the wire format, verification, replay defence and path tracking.

Pure tables: no sockets, no clock, no sleeps. Times are plain floats (seconds).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbha.beat.paths import DropCounters, EventKind, PathEvent, PathSet, PathTracker
from dbha.beat.wire import (
    HEADER_LEN,
    MAC_LEN,
    MAGIC,
    MAX_DATAGRAM,
    VERSION,
    Beat,
    BeatEncodeError,
    DbSummary,
    Drop,
    DropReason,
    ReplayGuard,
    decode,
    encode,
    encode_paths,
    verify,
)
from dbha.core.model import NodeRole
from dbha.core.timing import round_due

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
ME_BOOT = "a" * 32  # the receiver's own boot id
OLD_ME_BOOT = "9" * 32  # a previous boot of the receiver
B0, B1, B2, B3 = "b0" * 16, "b1" * 16, "b2" * 16, "b3" * 16


def beat(**over: object) -> Beat:
    """A valid beat from peer "b" on path "lan"; fields overridable."""
    base = Beat(
        service="pg-main",
        node="b",
        path="lan",
        boot_id=B0,
        seq=1,
        epoch=3,
        role=NodeRole.REPLICA,
        db=DbSummary(reachable=True, writable=False, position="0/3000060@tl1"),
        maintenance=False,
        sent_at=1700000000.25,
    )
    return replace(base, **over)  # type: ignore[arg-type]


def signed(body: bytes, key: bytes = KEY, version: int = VERSION) -> bytes:
    """A datagram with any payload, framed and signed as the format says (written from the spec)."""
    head = MAGIC + bytes([version]) + body
    return head + hmac.new(key, head, hashlib.sha256).digest()


def payload(**over: object) -> bytes:
    """The JSON payload of the default beat, with some keys replaced or added."""
    obj: dict[str, Any] = json.loads(encode(beat(), KEY)[HEADER_LEN:-MAC_LEN])
    obj.update(over)
    return json.dumps(obj).encode()


def test_signed_helper_matches_the_encoder() -> None:
    assert signed(encode(beat(), KEY)[HEADER_LEN:-MAC_LEN]) == encode(beat(), KEY)


# ------------------------------------------------------------------ encoding


def test_encode_decode_round_trip() -> None:
    b = beat(echo_boot=ME_BOOT, echo_seq=41, maintenance=True, role=NodeRole.PRIMARY)
    assert decode(encode(b, KEY), KEY) == b


def test_encode_refuses_beyond_the_size_bound() -> None:
    overhead = len(encode(beat(db=DbSummary(True, True, "")), KEY))
    fits = beat(db=DbSummary(True, True, "x" * (MAX_DATAGRAM - overhead)))
    assert len(encode(fits, KEY)) == MAX_DATAGRAM
    with pytest.raises(BeatEncodeError):
        encode(beat(db=DbSummary(True, True, "x" * (MAX_DATAGRAM - overhead + 1))), KEY)


def test_encode_paths_is_encode_with_each_path() -> None:
    b = beat(echo_boot=ME_BOOT, echo_seq=7, role=NodeRole.PRIMARY)
    got = encode_paths(b, KEY, ["lan", "hb", "lan2"])
    assert got == [encode(replace(b, path=p), KEY) for p in ("lan", "hb", "lan2")]
    assert [decode(d, KEY).path for d in got] == ["lan", "hb", "lan2"]  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", ["", "a\nb", "x" * 201])
def test_encode_paths_refuses_a_bad_path_name(bad: str) -> None:
    with pytest.raises(ValueError, match="path"):
        encode_paths(beat(), KEY, ["lan", bad])


def test_encode_paths_refuses_beyond_the_size_bound() -> None:
    overhead = len(encode(beat(db=DbSummary(True, True, "")), KEY))
    long = beat(db=DbSummary(True, True, "x" * (MAX_DATAGRAM - overhead + 1)))
    with pytest.raises(BeatEncodeError):
        encode_paths(long, KEY, ["lan"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq", 0),
        ("seq", True),
        ("seq", 2**63),
        ("epoch", -1),
        ("boot_id", "B0" * 16),
        ("boot_id", "b0"),
        ("node", ""),
        ("role", "leader"),
        ("sent_at", float("nan")),
        ("echo_boot", ME_BOOT),  # echo_boot without echo_seq
        ("echo_seq", 5),  # echo_seq without echo_boot
    ],
)
def test_beat_constructor_validates(field: str, value: object) -> None:
    with pytest.raises(ValueError):
        beat(**{field: value})


# ------------------------------------------------------------------ decoding

GOOD = encode(beat(), KEY)

DECODE_TABLE: list[tuple[str, bytes, DropReason]] = [
    ("empty", b"", DropReason.MALFORMED),
    ("short", GOOD[:10], DropReason.MALFORMED),
    ("bad magic", b"XBHA" + GOOD[4:], DropReason.MALFORMED),
    ("unknown version", signed(payload(), version=2), DropReason.MALFORMED),
    ("oversize", GOOD + b"\0" * (MAX_DATAGRAM + 1 - len(GOOD)), DropReason.OVERSIZE),
    ("signed with another key", encode(beat(), OTHER_KEY), DropReason.BAD_SIGNATURE),
    ("truncated MAC", GOOD[:-1], DropReason.BAD_SIGNATURE),
    ("MAC cut in half", GOOD[: -MAC_LEN // 2], DropReason.BAD_SIGNATURE),
    ("unsigned", GOOD[:-MAC_LEN], DropReason.BAD_SIGNATURE),
    (
        "flipped payload byte",
        GOOD[:20] + bytes([GOOD[20] ^ 1]) + GOOD[21:],
        DropReason.BAD_SIGNATURE,
    ),
    ("signed non-JSON", signed(b"\xff\xfe not json"), DropReason.MALFORMED),
    ("signed JSON list", signed(b"[1, 2, 3]"), DropReason.MALFORMED),
    ("signed deep nesting", signed(b"[" * 1300), DropReason.MALFORMED),
    ("missing key", signed(json.dumps({"svc": "pg-main"}).encode()), DropReason.MALFORMED),
    ("seq as string", signed(payload(seq="7")), DropReason.MALFORMED),
    ("seq as bool", signed(payload(seq=True)), DropReason.MALFORMED),
    ("seq as float", signed(payload(seq=7.0)), DropReason.MALFORMED),
    ("unknown role", signed(payload(role="leader")), DropReason.MALFORMED),
    ("db not an object", signed(payload(db=[True, False, ""])), DropReason.MALFORMED),
    ("NaN send time", signed(payload(sent=float("nan"))), DropReason.MALFORMED),
    ("huge integer", signed(payload(epoch=10**30)), DropReason.MALFORMED),
]


@pytest.mark.parametrize(
    ("data", "reason"), [r[1:] for r in DECODE_TABLE], ids=[r[0] for r in DECODE_TABLE]
)
def test_decode_drops_with_reason(data: bytes, reason: DropReason) -> None:
    result = decode(data, KEY)
    assert isinstance(result, Drop)
    assert result.reason is reason


def test_unknown_payload_keys_are_ignored_within_a_version() -> None:
    result = decode(signed(payload(future_field={"x": 1})), KEY)
    assert result == beat()


@settings(max_examples=500)
@given(st.binary(max_size=2 * MAX_DATAGRAM))
def test_random_bytes_never_raise(data: bytes) -> None:
    assert isinstance(decode(data, KEY), Drop)
    guard = ReplayGuard(ME_BOOT)
    out_guard, result = verify(
        data, key=KEY, service="pg-main", me="a", peer="b", path="lan", guard=guard
    )
    assert isinstance(result, Drop)
    assert out_guard is guard


@settings(max_examples=300)
@given(st.binary(max_size=MAX_DATAGRAM - HEADER_LEN - MAC_LEN))
def test_random_signed_payloads_never_raise(body: bytes) -> None:
    # Only a key holder can get this far; a buggy one must still not crash us.
    assert isinstance(decode(signed(body), KEY), (Beat, Drop))


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=len(GOOD) - 1), st.integers(min_value=1, max_value=255))
def test_any_corrupted_byte_is_dropped(pos: int, flip: int) -> None:
    data = bytearray(GOOD)
    data[pos] ^= flip
    assert isinstance(decode(bytes(data), KEY), Drop)


@settings(max_examples=200)
@given(
    seq=st.integers(1, 2**63 - 1),
    epoch=st.integers(0, 2**63 - 1),
    role=st.sampled_from(NodeRole),
    db=st.builds(DbSummary, st.booleans(), st.booleans(), st.text(max_size=300)),
    maintenance=st.booleans(),
    sent_at=st.floats(allow_nan=False, allow_infinity=False),
)
def test_any_valid_beat_round_trips(
    seq: int, epoch: int, role: NodeRole, db: DbSummary, maintenance: bool, sent_at: float
) -> None:
    b = beat(seq=seq, epoch=epoch, role=role, db=db, maintenance=maintenance, sent_at=sent_at)
    try:
        data = encode(b, KEY)
    except BeatEncodeError:
        return  # a long non-ASCII position can exceed the bound; refusing is the contract
    assert len(data) <= MAX_DATAGRAM
    assert decode(data, KEY) == b


# ------------------------------------------------------------------ identity

IDENTITY_TABLE: list[tuple[str, Beat, DropReason | None]] = [
    ("our peer", beat(), None),
    ("another service", beat(service="pg-other"), DropReason.UNKNOWN_SERVICE),
    ("a stranger", beat(node="mallory"), DropReason.UNKNOWN_NODE),
    ("ourselves, reflected", beat(node="a"), DropReason.UNKNOWN_NODE),
    ("sent for another path", beat(path="link"), DropReason.WRONG_PATH),
]


@pytest.mark.parametrize(
    ("b", "reason"), [r[1:] for r in IDENTITY_TABLE], ids=[r[0] for r in IDENTITY_TABLE]
)
def test_verify_checks_identity(b: Beat, reason: DropReason | None) -> None:
    _, result = verify(
        encode(b, KEY),
        key=KEY,
        service="pg-main",
        me="a",
        peer="b",
        path="lan",
        guard=ReplayGuard(ME_BOOT),
    )
    if reason is None:
        assert result == b
    else:
        assert isinstance(result, Drop) and result.reason is reason


# ------------------------------------------------------------------ replay guard


def run_guard(
    steps: list[tuple[Beat, DropReason | None]], guard: ReplayGuard | None = None
) -> ReplayGuard:
    """Feed beats in order; each must be admitted (None) or dropped for the given reason."""
    g = guard or ReplayGuard(ME_BOOT)
    for i, (b, expected) in enumerate(steps):
        after, reason = g.admit(b)
        assert reason is expected, (
            f"step {i}: boot {b.boot_id[:2]} seq {b.seq}: {reason} != {expected}"
        )
        if reason is not None:
            assert after is g  # a drop never changes the guard
        g = after
    return g


def echoing(boot: str, seq: int, echo: int, path: str = "lan", own: str = ME_BOOT) -> Beat:
    return beat(boot_id=boot, seq=seq, path=path, echo_boot=own, echo_seq=echo)


REPLAY_TABLE: list[tuple[str, list[tuple[Beat, DropReason | None]]]] = [
    (
        "sequence must grow within a boot",
        [
            (beat(seq=1), None),
            (beat(seq=2), None),
            (beat(seq=2), DropReason.REPLAYED),
            (beat(seq=1), DropReason.REPLAYED),
            (beat(seq=10), None),  # gaps are losses, not attacks
            (beat(seq=9), DropReason.REPLAYED),
        ],
    ),
    (
        "each path has its own counter (paths reorder)",
        [
            (beat(seq=5, path="link"), None),
            (beat(seq=4, path="lan"), None),  # the LAN copy of an older round, late
            (beat(seq=5, path="lan"), None),
            (beat(seq=4, path="link"), DropReason.REPLAYED),
        ],
    ),
    (
        "peer restart: the new boot is admitted once it echoes us",
        [
            (echoing(B0, 100, echo=50), None),
            (beat(boot_id=B1, seq=1), DropReason.UNPROVEN_BOOT),  # has not heard us yet
            (echoing(B1, 2, echo=50), DropReason.UNPROVEN_BOOT),  # nothing newer than B0 saw
            (echoing(B1, 3, echo=51), None),
            (echoing(B0, 101, echo=51), DropReason.STALE_BOOT),  # the old process, or a capture
            (echoing(B1, 4, echo=52), None),
        ],
    ),
    (
        "an echo of our previous boot proves nothing",
        [
            (echoing(B0, 1, echo=7), None),
            (echoing(B1, 1, echo=900, own=OLD_ME_BOOT), DropReason.UNPROVEN_BOOT),
        ],
    ),
    (
        "after our restart, a replayed old boot holds only until the live peer proves itself",
        [
            (echoing(B0, 500, echo=80, own=OLD_ME_BOOT), None),  # replay: nothing to judge it by
            (echoing(B1, 9, echo=80, own=OLD_ME_BOOT), DropReason.UNPROVEN_BOOT),  # live, unheard
            (echoing(B1, 10, echo=1), None),  # live, has heard us: displaces the replay
            (echoing(B0, 501, echo=80, own=OLD_ME_BOOT), DropReason.STALE_BOOT),
            (echoing(B1, 11, echo=2), None),
        ],
    ),
    (
        "a captured beat of a boot we never saw cannot displace the live boot",
        [
            (echoing(B1, 1, echo=300), None),
            # B0 ran before B1 and heard our seq 200; its beats never reached us then.
            (echoing(B0, 77, echo=200), DropReason.UNPROVEN_BOOT),
        ],
    ),
]


@pytest.mark.parametrize("steps", [r[1] for r in REPLAY_TABLE], ids=[r[0] for r in REPLAY_TABLE])
def test_replay_guard(steps: list[tuple[Beat, DropReason | None]]) -> None:
    run_guard(steps)


def test_superseded_boots_are_bounded_and_still_dropped_once_forgotten() -> None:
    g = run_guard(
        [
            (echoing(B0, 1, echo=1), None),
            (echoing(B1, 1, echo=2), None),
            (echoing(B2, 1, echo=3), None),
            (echoing(B3, 1, echo=4), None),
        ],
        ReplayGuard(ME_BOOT, keep=2),
    )
    assert g.superseded == (B1, B2)
    run_guard(
        [
            (echoing(B2, 2, echo=3), DropReason.STALE_BOOT),
            (echoing(B0, 2, echo=1), DropReason.UNPROVEN_BOOT),  # forgotten, still not fresh
        ],
        g,
    )


def test_last_seq_is_the_newest_on_any_path() -> None:
    g = run_guard([(beat(seq=3, path="lan"), None), (beat(seq=5, path="link"), None)])
    assert g.last_seq() == 5
    assert ReplayGuard(ME_BOOT).last_seq() == 0


# ------------------------------------------------------------------ path tracking

# interval 100 ms, misses 3 (down after 0.3 s of silence), rise 3 (window 0.2 s)


def feed(t: PathTracker, times: list[float]) -> tuple[PathTracker, list[PathEvent]]:
    events: list[PathEvent] = []
    for now in times:
        t, ev = t.on_beat(now)
        events.extend(ev)
    return t, events


def test_path_starts_down_and_rises_after_rise_beats() -> None:
    t = PathTracker("lan", interval_ms=100, misses=3, rise=3)
    assert not t.state(0.0).up and t.state(0.0).last_heard is None
    t, events = feed(t, [1.0, 1.1])
    assert not t.state(1.1).up and events == []
    t, events = feed(t, [1.2])
    assert t.state(1.2).up
    assert events == [PathEvent(EventKind.PATH_UP, 1.2, "lan")]


@pytest.mark.parametrize(
    ("now", "up"),
    [(2.0, True), (2.29, True), (2.3, True), (2.3001, False), (9.0, False)],
)
def test_path_goes_down_after_interval_times_misses(now: float, up: bool) -> None:
    t, _ = feed(PathTracker("lan", 100, 3, 3), [1.8, 1.9, 2.0])
    assert t.state(now).up is up


def test_down_event_is_stamped_when_the_silence_crossed_the_bound() -> None:
    t, _ = feed(PathTracker("lan", 100, 3, 3), [1.8, 1.9, 2.0])
    t, events = t.advance(5.0)
    assert [(e.kind, e.path) for e in events] == [(EventKind.PATH_DOWN, "lan")]
    assert events[0].at == pytest.approx(2.3)
    assert t.advance(6.0)[1] == ()  # reported once


FLAP_TABLE: list[tuple[str, list[float], bool]] = [
    ("three beats in rhythm", [0.0, 0.1, 0.2], True),
    ("two beats are not enough", [0.0, 0.1], False),
    ("a gap over 2 intervals restarts the count", [0.0, 0.1, 0.35, 0.45], False),
    ("...and then three in rhythm lift it", [0.0, 0.1, 0.35, 0.45, 0.55], True),
    ("jitter within the window is fine", [0.0, 0.19, 0.38], True),
    ("flapping every other beat never rises", [0.0, 0.25, 0.5, 0.75, 1.0, 1.25], False),
]


@pytest.mark.parametrize(
    ("times", "up"), [r[1:] for r in FLAP_TABLE], ids=[r[0] for r in FLAP_TABLE]
)
def test_flap_damping_needs_rise_consecutive_beats(times: list[float], up: bool) -> None:
    t, _ = feed(PathTracker("lan", 100, 3, 3), times)
    assert t.state(times[-1]).up is up


def test_a_path_that_went_down_must_rise_again_and_changes_are_counted() -> None:
    t, _ = feed(PathTracker("lan", 100, 3, 3), [0.0, 0.1, 0.2])
    t, events = feed(t, [1.0, 1.1])  # came back after a silence: not up yet
    assert [e.kind for e in events] == [EventKind.PATH_DOWN]
    assert not t.state(1.1).up
    t, events = feed(t, [1.2])
    assert [e.kind for e in events] == [EventKind.PATH_UP]
    assert t.state(1.2).changes == 3 and t.state(1.2).since == 1.2


def test_rise_one_means_up_on_first_beat() -> None:
    t, events = feed(PathTracker("lan", 100, 3, rise=1), [0.0])
    assert t.state(0.0).up and [e.kind for e in events] == [EventKind.PATH_UP]


@pytest.mark.parametrize("bad", [{"interval_ms": 0}, {"misses": 0}, {"rise": -1}, {"rise": True}])
def test_tracker_validates(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        PathTracker(**{"name": "lan", "interval_ms": 100, **bad})  # type: ignore[arg-type]


def two_paths_up() -> PathSet:
    ps = PathSet.create(["lan", "link"], interval_ms=100, misses=3, rise=3)
    for now in (0.0, 0.1, 0.2):
        ps, _ = ps.on_beat("lan", now)
        ps, _ = ps.on_beat("link", now)
    return ps


def test_peer_is_silent_before_it_was_ever_heard() -> None:
    ps = PathSet.create(["lan", "link"], interval_ms=100)
    assert ps.silent(0.0)


def test_one_path_down_is_not_a_silent_peer() -> None:
    ps = two_paths_up()
    for now in (0.3, 0.4, 0.5, 0.6):
        ps, _ = ps.on_beat("lan", now)
    ps, _ = ps.advance(0.6)
    states = {s.name: s.up for s in ps.states(0.6)}
    assert states == {"lan": True, "link": False}
    assert not ps.silent(0.6)


def test_peer_silent_only_when_every_path_is_down() -> None:
    ps = two_paths_up()
    ps, _ = ps.on_beat("lan", 0.4)  # lan lasts 0.2 s longer than link
    ps, events = ps.advance(0.55)
    assert [(e.kind, e.path) for e in events] == [(EventKind.PATH_DOWN, "link")]
    assert not ps.silent(0.55)
    ps, events = ps.advance(1.0)
    assert [(e.kind, e.path) for e in events] == [
        (EventKind.PATH_DOWN, "lan"),
        (EventKind.PEER_SILENT, None),
    ]
    assert events[-1].at == pytest.approx(0.7)
    assert ps.silent(1.0)


def test_peer_heard_again_when_the_first_path_rises() -> None:
    ps, _ = two_paths_up().advance(5.0)
    events: list[PathEvent] = []
    for now in (6.0, 6.1, 6.2):
        ps, ev = ps.on_beat("link", now)
        events.extend(ev)
    assert [(e.kind, e.path, e.at) for e in events] == [
        (EventKind.PATH_UP, "link", 6.2),
        (EventKind.PEER_HEARD, None, 6.2),
    ]


def test_path_set_rejects_unknown_and_duplicate_paths() -> None:
    ps = PathSet.create(["lan"], interval_ms=100)
    with pytest.raises(KeyError):
        ps.on_beat("wan", 0.0)
    with pytest.raises(ValueError):
        PathSet.create(["lan", "lan"], interval_ms=100)
    with pytest.raises(ValueError):
        PathSet.create([], interval_ms=100)


@settings(max_examples=300)
@given(
    st.integers(1, 3),
    st.lists(st.tuples(st.sampled_from(["lan", "link"]), st.floats(0.0, 0.5)), max_size=60),
)
def test_events_alternate_and_silence_matches_the_paths(
    rise: int, schedule: list[tuple[str, float]]
) -> None:
    ps = PathSet.create(["lan", "link"], interval_ms=100, misses=3, rise=rise)
    now = 0.0
    last_kind: dict[str | None, EventKind] = {}
    for path, gap in schedule:
        now += gap
        ps, events = ps.on_beat(path, now)
        assert [e.at for e in events] == sorted(e.at for e in events)
        for e in events:
            prev = last_kind.get(e.path)
            if e.path is None:
                assert e.kind is (
                    EventKind.PEER_SILENT if prev is EventKind.PEER_HEARD else EventKind.PEER_HEARD
                )
            else:
                assert e.kind is (
                    EventKind.PATH_DOWN if prev is EventKind.PATH_UP else EventKind.PATH_UP
                )
            last_kind[e.path] = e.kind
        assert ps.silent(now) == (not any(s.up for s in ps.states(now)))
        assert ps.silent(now) == (last_kind.get(None) is not EventKind.PEER_HEARD)


# ------------------------------------------------------------------ counters


def test_drop_counters_list_every_reason_for_every_path() -> None:
    c = DropCounters.of(
        ["lan", "link"],
        {("lan", DropReason.REPLAYED): 2, ("link", DropReason.BAD_SIGNATURE): 1},
        accepted={"lan": 10},
        sent={"lan": 11, "link": 11},
        send_errors={"link": 3},
    )
    d = c.as_dict()
    assert set(d) == {"lan", "link"}
    assert d["lan"]["drops"] == {r.value: 2 * (r is DropReason.REPLAYED) for r in DropReason}
    assert c.drops["lan"]["replayed"] == 2
    assert d["link"] == {
        "accepted": 0,
        "sent": 11,
        "send_errors": 3,
        "drops": {r.value: int(r is DropReason.BAD_SIGNATURE) for r in DropReason},
    }
    assert c.total(DropReason.REPLAYED) == 2
    json.dumps(d)  # status can print it as is


def test_every_field_survives_encode_and_decode() -> None:
    beat = Beat(
        service="pg",
        node="a",
        path="lan",
        boot_id="a" * 32,
        seq=9,
        epoch=4,
        role=NodeRole.HANDOVER,
        db=DbSummary(True, False, "postgresql|2|123|"),
        maintenance=True,
        sent_at=12.5,
        echo_boot="b" * 32,
        echo_seq=3,
        needs_resync=True,
        sync_mark=4,
        eligible=False,
    )
    assert decode(encode(beat, b"k" * 32), b"k" * 32) == beat


def test_a_round_due_soon_goes_out_with_the_peers_round() -> None:
    """round_due: a node awake for a newer round of its peer's sends its own at
    once if it is due within half an interval; otherwise (or for any other
    wake-up) at its time, and never later."""
    assert round_due(0.4, 0.0, 1.0, True) == 0.0  # due in 0.4 interval: now
    assert round_due(0.5, 0.0, 1.0, True) == 0.0  # due in exactly half an interval
    assert round_due(0.6, 0.0, 1.0, True) == 0.6  # 0.6 interval: at its time
    assert round_due(0.4, 0.0, 1.0, False) == 0.4  # no new round of the peer's
    assert round_due(-0.1, 0.0, 1.0, True) == -0.1  # already due: not pushed later


def test_a_planned_handover_round_trips_and_an_older_beat_without_it_is_not_planned() -> None:
    b = beat(role=NodeRole.HANDOVER, planned=True)
    assert decode(encode(b, KEY), KEY) == b
    obj = json.loads(payload())
    del obj["plan"]  # a sender from before the flag
    old = decode(signed(json.dumps(obj).encode()), KEY)
    assert isinstance(old, Beat) and old.planned is False


def test_a_planned_flag_that_is_not_a_bool_is_dropped() -> None:
    assert isinstance(decode(signed(payload(plan=1)), KEY), Drop)


def test_a_replicas_own_lag_round_trips_and_is_optional() -> None:
    b = beat(role=NodeRole.REPLICA, behind=1234)
    assert decode(encode(b, KEY), KEY) == b
    obj = json.loads(payload())
    del obj["lag"]
    old = decode(signed(json.dumps(obj).encode()), KEY)
    assert isinstance(old, Beat) and old.behind is None
    assert isinstance(decode(signed(payload(lag=-1)), KEY), Drop)
    assert isinstance(decode(signed(payload(lag="12")), KEY), Drop)
