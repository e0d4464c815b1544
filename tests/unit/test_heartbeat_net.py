"""Two heartbeat services talking over real UDP sockets on loopback.

Node "a" and node "b" share two paths:

- ``lan``: a (127.0.0.2) <-> b (127.0.0.3), direct;
- ``link``: a (127.0.0.4) <-> relay (127.0.0.6) <-> b (127.0.0.5). The relay is
  a cable the test can cut, and a tap that records what a sent.

Intervals are 20 ms. Every wait polls with a deadline; nothing asserts how long
anything took.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from dbha.beat.paths import EventKind
from dbha.beat.service import (
    HeartbeatError,
    HeartbeatService,
    HeartbeatSnapshot,
    PathConfig,
)
from dbha.beat.wire import Beat, DbSummary, DropReason, encode
from dbha.core.model import NodeRole

KEY = b"test-key-not-secret-0123456789ab"
SERVICE = "pg-main"
A_LAN, B_LAN = "127.0.0.2", "127.0.0.3"
A_LINK, B_LINK, RELAY = "127.0.0.4", "127.0.0.5", "127.0.0.6"
ADDRS = [A_LAN, B_LAN, A_LINK, B_LINK, RELAY]
INTERVAL_MS = 20
MISSES = 10  # 200 ms of silence: short, yet far above a busy test machine's hiccups
DEADLINE = 10.0  # seconds; a bound on every wait, not an expectation


def wait_until(what: str, cond: Callable[[], bool], timeout: float = DEADLINE) -> None:
    """Poll ``cond`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.005)


def free_port(addrs: list[str]) -> int:
    """A UDP port free on every address in ``addrs`` right now."""
    for _ in range(20):
        socks: list[socket.socket] = []
        try:
            first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(first)
            first.bind((addrs[0], 0))
            port = int(first.getsockname()[1])
            for addr in addrs[1:]:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((addr, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no UDP port free on all test addresses")


class Relay:
    """Forwards datagrams between a and b on one port; can be cut; records a's datagrams."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cut = threading.Event()
        self.from_a: deque[bytes] = deque(maxlen=200)
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((RELAY, port))
        self._sock.settimeout(0.02)
        self._thread = threading.Thread(target=self._run, name="test-relay", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, (src, _) = self._sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if self.cut.is_set():
                continue
            if src == A_LINK:
                self.from_a.append(data)
                self._sock.sendto(data, (B_LINK, self.port))
            elif src == B_LINK:
                self._sock.sendto(data, (A_LINK, self.port))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._sock.close()


@dataclass
class Pair:
    a: HeartbeatService
    b: HeartbeatService
    relay: Relay
    lan_port: int
    link_port: int

    def make_a(self) -> HeartbeatService:
        """A fresh node "a" (a new boot), same addresses."""
        return service("a", "b", A_LAN, B_LAN, A_LINK, self.lan_port, self.link_port)


def service(
    node: str, peer: str, lan: str, lan_peer: str, link: str, lan_port: int, link_port: int
) -> HeartbeatService:
    return HeartbeatService(
        paths=[
            PathConfig("lan", lan, lan_peer, lan_port),
            PathConfig("link", link, RELAY, link_port),
        ],
        key=KEY,
        service=SERVICE,
        node=node,
        peer=peer,
        interval_ms=INTERVAL_MS,
        misses=MISSES,
        rise=3,
    )


@pytest.fixture
def pair() -> Iterator[Pair]:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((RELAY, 0))
    except OSError:
        pytest.skip("127.0.0.0/8 beyond 127.0.0.1 is not routed to loopback here")
    finally:
        probe.close()
    lan_port, link_port = free_port(ADDRS), free_port(ADDRS)
    relay = Relay(link_port)
    a = service("a", "b", A_LAN, B_LAN, A_LINK, lan_port, link_port)
    b = service("b", "a", B_LAN, A_LAN, B_LINK, lan_port, link_port)
    p = Pair(a, b, relay, lan_port, link_port)
    a.start()
    b.start()
    try:
        yield p
    finally:
        assert p.a.stop(timeout=2.0)
        assert p.b.stop(timeout=2.0)
        relay.close()


def ups(snap: HeartbeatSnapshot) -> dict[str, bool]:
    return {s.name: s.up for s in snap.paths}


def all_up(svc: HeartbeatService) -> bool:
    snap = svc.snapshot()
    return all(ups(snap).values()) and not snap.peer_silent


def send_raw(data: bytes, addr: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.sendto(data, (addr, port))


def drops(svc: HeartbeatService, path: str, reason: DropReason) -> int:
    return svc.snapshot().counters.drops[path][reason.value]


def wait_drops(svc: HeartbeatService, path: str, reason: DropReason, n: int = 1) -> None:
    wait_until(f"{n} x {reason.value} on {path}", lambda: drops(svc, path, reason) >= n)


# ------------------------------------------------------------------ stories


def test_both_nodes_see_each_other_on_every_path(pair: Pair) -> None:
    """Two healthy nodes: every path comes up on both sides, and status travels."""
    wait_until("a sees b on both paths", lambda: all_up(pair.a))
    wait_until("b sees a on both paths", lambda: all_up(pair.b))
    pair.a.update_status(
        epoch=7,
        role="primary",
        reachable=True,
        writable=True,
        position="0/3000060@tl1",
        maintenance=False,
    )

    def b_has_a_status() -> bool:
        last = pair.b.snapshot().last_beat
        return last is not None and last.epoch == 7

    wait_until("b hears a's new status", b_has_a_status)
    snap = pair.b.snapshot()
    assert snap.last_beat is not None
    assert snap.last_beat.node == "a"
    assert snap.last_beat.role is NodeRole.PRIMARY
    assert snap.last_beat.db == DbSummary(True, True, "0/3000060@tl1")
    assert snap.last_beat.boot_id == pair.a.boot_id
    wait_until("a knows b hears it", lambda: pair.b.snapshot().peer_hears_us)
    counters = snap.counters.as_dict()
    assert all(counters[p]["accepted"] for p in ("lan", "link"))
    assert all(counters[p]["sent"] for p in ("lan", "link"))
    assert all(n == 0 for d in snap.counters.drops.values() for n in d.values())
    events = pair.b.drain_events()
    assert {(e.kind, e.path) for e in events} == {
        (EventKind.PATH_UP, "lan"),
        (EventKind.PATH_UP, "link"),
        (EventKind.PEER_HEARD, None),
    }


def test_cutting_one_link_downs_that_path_only(pair: Pair) -> None:
    """The private link is cut: both nodes report it down, the LAN stays up, the
    peer is never silent. Healing the link brings the path back."""
    wait_until("b sees a on both paths", lambda: all_up(pair.b))
    wait_until("a sees b on both paths", lambda: all_up(pair.a))
    pair.a.drain_events()
    pair.b.drain_events()

    pair.relay.cut.set()
    for svc in (pair.a, pair.b):
        wait_until("link down", lambda: not ups(svc.snapshot())["link"])  # noqa: B023
        snap = svc.snapshot()
        assert ups(snap)["lan"]
        assert not snap.peer_silent
    events = pair.b.drain_events()
    assert (EventKind.PATH_DOWN, "link") in {(e.kind, e.path) for e in events}
    assert EventKind.PEER_SILENT not in {e.kind for e in events}

    pair.relay.cut.clear()
    wait_until("link up again on b", lambda: all_up(pair.b))
    assert (EventKind.PATH_UP, "link") in {(e.kind, e.path) for e in pair.b.drain_events()}


def test_garbage_forgeries_and_strangers_are_counted_by_reason(pair: Pair) -> None:
    """Datagrams from someone without the key (or with the key but the wrong
    identity) are dropped and counted by reason; the path stays up."""
    wait_until("b sees a on both paths", lambda: all_up(pair.b))
    good = Beat(SERVICE, "a", "lan", "f" * 32, 2**62, 99, NodeRole.PRIMARY)
    cases = [
        (b"hello", DropReason.MALFORMED),
        (b"DBHA\x01" + b"\0" * 60, DropReason.BAD_SIGNATURE),
        (encode(good, b"wrong-key-wrong-key-wrong-key-00"), DropReason.BAD_SIGNATURE),
        (b"DBHA\x01" + b"x" * 2000, DropReason.OVERSIZE),
        (
            encode(Beat(SERVICE, "mallory", "lan", "f" * 32, 1, 0, NodeRole.PRIMARY), KEY),
            DropReason.UNKNOWN_NODE,
        ),
        (
            encode(Beat(SERVICE, "b", "lan", "f" * 32, 1, 0, NodeRole.PRIMARY), KEY),
            DropReason.UNKNOWN_NODE,
        ),
        (
            encode(Beat("pg-other", "a", "lan", "f" * 32, 1, 0, NodeRole.PRIMARY), KEY),
            DropReason.UNKNOWN_SERVICE,
        ),
        (
            encode(Beat(SERVICE, "a", "link", "f" * 32, 1, 0, NodeRole.PRIMARY), KEY),
            DropReason.WRONG_PATH,
        ),
    ]
    expected: dict[DropReason, int] = {}
    for data, reason in cases:
        send_raw(data, B_LAN, pair.lan_port)
        expected[reason] = expected.get(reason, 0) + 1
    for reason, n in expected.items():
        wait_drops(pair.b, "lan", reason, n)
    snap = pair.b.snapshot()
    assert snap.counters.drops["lan"] == {r.value: expected.get(r, 0) for r in DropReason}
    assert snap.counters.total(DropReason.BAD_SIGNATURE) == 2
    assert all(ups(snap).values())
    assert snap.last_beat is not None and snap.last_beat.boot_id == pair.a.boot_id


def test_a_captured_beat_resent_is_counted_as_replayed(pair: Pair) -> None:
    """An attacker on the link records one of a's beats and sends it again: b drops it."""
    wait_until("b sees a on both paths", lambda: all_up(pair.b))
    captured = pair.relay.from_a[-1]
    # Whichever copy reaches b second (the relay's or ours) is the replay: one is counted.
    send_raw(captured, B_LINK, pair.link_port)
    wait_drops(pair.b, "link", DropReason.REPLAYED)
    send_raw(captured, B_LAN, pair.lan_port)  # the same beat pushed onto the other path
    wait_until(
        "cross-path replay counted", lambda: drops(pair.b, "lan", DropReason.WRONG_PATH) >= 1
    )
    assert drops(pair.b, "link", DropReason.REPLAYED) == 1
    assert all_up(pair.b)


def test_a_beat_from_an_old_boot_is_dropped_after_the_peer_restarts(pair: Pair) -> None:
    """a restarts (new boot id). b accepts the new boot once a has heard b, and a
    captured beat of a's previous boot, re-sent, is counted as stale_boot."""
    wait_until("b sees a on both paths", lambda: all_up(pair.b))
    old_beat = pair.relay.from_a[-1]
    old_boot = pair.a.boot_id
    assert pair.a.stop(timeout=2.0)
    pair.a = pair.make_a()  # rebinding the same addresses right away works without SO_REUSEADDR
    pair.a.start()
    assert pair.a.boot_id != old_boot

    def b_follows_new_boot() -> bool:
        last = pair.b.snapshot().last_beat
        return last is not None and last.boot_id == pair.a.boot_id

    wait_until("b admits a's new boot", b_follows_new_boot)
    send_raw(old_beat, B_LINK, pair.link_port)
    wait_drops(pair.b, "link", DropReason.STALE_BOOT)
    wait_until("both paths up on b with the new boot", lambda: all_up(pair.b))
    last = pair.b.snapshot().last_beat
    assert last is not None and last.boot_id == pair.a.boot_id


def test_a_second_service_cannot_steal_a_bound_path(pair: Pair) -> None:
    """A second supervisor started by mistake on the same addresses fails loudly
    instead of silently taking the beats (no SO_REUSEADDR)."""
    intruder = pair.make_a()
    with pytest.raises(HeartbeatError, match="cannot bind"):
        intruder.start()
    assert intruder.stop(timeout=1.0)
    wait_until("a still sees b", lambda: all_up(pair.a))


def test_send_errors_are_counted_and_never_kill_the_sender() -> None:
    """A path whose sends fail (here: broadcast without permission, refused by the
    kernel before anything leaves the host) counts errors and keeps going."""
    port = free_port(["127.0.0.7"])
    svc = HeartbeatService(
        paths=[PathConfig("lan", "127.0.0.7", "255.255.255.255", port)],
        key=KEY,
        service=SERVICE,
        node="a",
        peer="b",
        interval_ms=INTERVAL_MS,
    )
    svc.start()
    try:
        wait_until("send errors counted", lambda: svc.snapshot().counters.send_errors["lan"] >= 3)
        snap = svc.snapshot()
        assert snap.counters.sent["lan"] == 0
        assert snap.peer_silent
    finally:
        assert svc.stop(timeout=2.0)
    assert svc.stop(timeout=0.5)  # idempotent


def test_constructor_rejects_bad_arguments() -> None:
    def make(key: bytes, node: str, peer: str) -> HeartbeatService:
        path = PathConfig("lan", "127.0.0.2", "127.0.0.3", 9)
        return HeartbeatService(
            paths=[path], key=key, service=SERVICE, node=node, peer=peer, interval_ms=20
        )

    with pytest.raises(ValueError, match="key"):
        make(b"short", "a", "b")
    with pytest.raises(ValueError, match="differ"):
        make(KEY, "a", "a")
    with pytest.raises(ValueError):
        PathConfig("lan", "127.0.0.2", "::1", 9)
    with pytest.raises(ValueError):
        PathConfig("lan", "127.0.0.2", "127.0.0.3", 0)


def test_the_core_fields_travel_and_the_echo_dates_what_the_peer_heard(pair: Pair) -> None:
    """needs_resync, sync_mark and eligible reach the peer; the peer's echo of our round
    maps back to when we sent it (never in the future), and eligibility is time-stamped."""
    wait_until("b sees a", lambda: all_up(pair.b))
    pair.a.update_status(
        epoch=3,
        role="replica",
        reachable=True,
        writable=False,
        position="0/5@tl1",
        maintenance=False,
        needs_resync=False,
        sync_mark=2,
        eligible=True,
    )

    def heard() -> bool:
        last = pair.b.snapshot().last_beat
        return last is not None and last.eligible and last.sync_mark == 2

    wait_until("b hears a's new fields", heard)
    snap_b = pair.b.snapshot()
    assert snap_b.eligible_at is not None and snap_b.eligible_at <= snap_b.at
    wait_until("a gets an echo", lambda: pair.a.snapshot().echo_sent_at is not None)
    snap_a = pair.a.snapshot()
    assert snap_a.echo_sent_at is not None and snap_a.echo_sent_at <= snap_a.at
    # The echo keeps moving forward while the peer keeps hearing us.
    first = snap_a.echo_sent_at
    wait_until("the echo advances", lambda: (pair.a.snapshot().echo_sent_at or 0) > first)
    pair.a.update_status(
        epoch=3,
        role="fenced",
        reachable=True,
        writable=False,
        position="0/5@tl1",
        maintenance=False,
        needs_resync=True,
    )

    def resync_seen() -> bool:
        last = pair.b.snapshot().last_beat
        return last is not None and last.needs_resync and not last.eligible

    wait_until("b hears a needs a resync", resync_seen)


def test_news_is_told_on_new_content_and_path_changes_not_on_every_beat(pair: Pair) -> None:
    """``on_news`` wakes the supervisor's loop: for a beat that says something new
    (here a's role and epoch, then a's position only: not news) and for a path going
    down, never for a beat that only repeats what was heard."""
    wait_until("both see each other", lambda: all_up(pair.a) and all_up(pair.b))
    wait_until("a hears b's echo", lambda: pair.b.snapshot().peer_hears_us)
    news: list[float] = []
    pair.b.on_news = lambda: news.append(time.monotonic())

    def admitted() -> int:
        return sum(pair.b.snapshot().counters.accepted.values())

    first = admitted()
    wait_until("b admits 20 more beats", lambda: admitted() - first >= 20)
    assert news == [], "beats that repeat what was heard are not news"

    def status(epoch: int, position: str) -> None:
        pair.a.update_status(
            epoch=epoch,
            role="primary",
            reachable=True,
            writable=True,
            position=position,
            maintenance=False,
        )

    status(4, "0/10@tl1")
    wait_until("b is told of a's new role", lambda: len(news) >= 1)
    last = pair.b.snapshot().last_beat
    assert last is not None and last.epoch == 4
    told = len(news)
    status(4, "0/99@tl1")
    wait_until(
        "b hears a's new position",
        lambda: (lb := pair.b.snapshot().last_beat) is not None and lb.db.position == "0/99@tl1",
    )
    first = admitted()
    wait_until("b admits 10 more beats", lambda: admitted() - first >= 10)
    assert len(news) == told, "a new position alone is not news"
    pair.relay.cut.set()
    wait_until("b is told the link went down", lambda: len(news) > told)
    assert not ups(pair.b.snapshot())["link"]
