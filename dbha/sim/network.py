"""The simulated network: heartbeat paths, TCP reachability, and each node's
heartbeat layer.

Time is counted in *steps* of the simulation (half a heartbeat interval).

- :class:`Network` holds, per heartbeat path and direction, whether the link
  is up, plus per-path UDP faults (heartbeats blocked, loss, jitter,
  duplication), the gateway, and which nodes are isolated. TCP between the
  nodes (replication, the safety check's direct database probe) works over a
  path only while both directions are up; replication uses the ``lan`` path.
- :class:`HbLayer` is one node's heartbeat layer: it numbers and stamps the
  beats it sends, admits the peer's beats (dropping duplicates and old
  boots), tracks each path up/down with the same rule as
  :class:`dbha.beat.paths.PathTracker` (a test checks they agree), and turns
  what it heard into a :class:`~dbha.core.model.PeerView`.

Mutable and allocation-light on purpose: it runs millions of times.
"""

from __future__ import annotations

import random

from dbha.core.model import Announce, PeerView, Position

PATHS = ("lan", "hb")
LAN = 0

# A beat in flight: (sender index, path index, boot, seq, echo_boot, echo_seq, announce)
Beat = tuple[int, int, int, int, int, int, Announce]


class Network:
    """Links between node 0 and node 1 over each path, and their faults."""

    __slots__ = (
        "beats_blocked",
        "client_cut",
        "dup",
        "gateway_up",
        "isolated",
        "jitter",
        "loss",
        "rng",
        "tcp_lan",
        "tcp_some",
        "up",
    )

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        # up[path][direction]: direction 0 is node 0 -> node 1, 1 is node 1 -> node 0.
        self.up = [[True, True] for _ in PATHS]
        self.beats_blocked = [False for _ in PATHS]
        self.loss = [0.0 for _ in PATHS]
        self.jitter = [0 for _ in PATHS]  # extra delay, in steps, drawn from 0..jitter
        self.dup = [0.0 for _ in PATHS]
        self.gateway_up = True
        self.isolated = [False, False]
        self.client_cut = [False, False]  # the LAN link between a node and the clients
        self.tcp_lan = True  # cached by refresh(): tcp(LAN), tcp_any()
        self.tcp_some = True

    def refresh(self) -> None:
        """Recompute the cached reachability; call after changing any fault."""
        self.tcp_lan = self.tcp(LAN)
        self.tcp_some = any(self.tcp(p) for p in range(len(PATHS)))

    def link(self, path: int, src: int) -> bool:
        """The link carries packets from ``src`` to the other node on ``path``."""
        return self.up[path][src] and not self.isolated[0] and not self.isolated[1]

    def tcp(self, path: int) -> bool:
        """TCP works between the two nodes over ``path``."""
        return self.link(path, 0) and self.link(path, 1)

    def tcp_any(self) -> bool:
        return self.tcp_some

    def gateway(self, node: int) -> bool:
        """``node`` reaches the gateway (and the arbiter behind it)."""
        return self.gateway_up and not self.isolated[node]

    def client(self, node: int) -> bool:
        """The clients reach ``node`` over the LAN."""
        return not self.isolated[node] and not self.client_cut[node]

    def deliveries(self, path: int, src: int) -> tuple[int, ...]:
        """Delays (in steps, >= 1) of the copies of one beat sent now; () if lost."""
        if self.beats_blocked[path] or not self.link(path, src):
            return ()
        rng = self.rng
        loss = self.loss[path]
        if loss and rng.random() < loss:
            return ()
        jitter = self.jitter[path]
        first = 1 + (rng.randint(0, jitter) if jitter else 0)
        dup = self.dup[path]
        if dup and rng.random() < dup:
            return (first, 1 + (rng.randint(0, jitter) if jitter else 0))
        return (first,)


class PathLink:
    """One path's up/down state on the receiving side (beatpaths.PathTracker's rule)."""

    __slots__ = ("last_heard", "last_seq", "streak", "up")

    def __init__(self) -> None:
        self.up = False
        self.last_heard: float | None = None
        self.streak = 0
        self.last_seq = 0

    def advance(self, now: float, timeout: float) -> bool:
        """Let time pass; True if the path just went down."""
        if self.up and self.last_heard is not None and now - self.last_heard > timeout:
            self.up = False
            self.streak = 0
            return True
        return False

    def on_beat(self, now: float, timeout: float, window: float, rise: int) -> bool:
        """An admitted beat at ``now``; True if the path changed (up or down)."""
        changed = self.advance(now, timeout)
        if self.up:
            self.last_heard = now
            self.streak += 1
            return changed
        gap_ok = self.last_heard is not None and now - self.last_heard <= window
        self.streak = self.streak + 1 if gap_ok else 1
        self.last_heard = now
        if self.streak >= rise:
            self.up = True
            return True
        return changed


class HbLayer:
    """One node's heartbeat layer (one boot of its supervisor)."""

    __slots__ = (
        "_view",
        "boot",
        "echo_sent_at",
        "eligible_at",
        "heard_at",
        "last",
        "last_position",
        "newest_seq",
        "paths",
        "peer_boot",
        "rise",
        "sent_at",
        "seq",
        "timeout",
        "window",
    )

    def __init__(self, boot: int, interval: float, misses: int, rise: int) -> None:
        self.boot = boot
        self.seq = 0
        self.sent_at: list[float] = [0.0]  # index = seq
        self.timeout = interval * misses
        self.window = 2 * interval
        self.rise = rise
        self.paths = [PathLink() for _ in PATHS]
        self.peer_boot = -1
        self.newest_seq = 0  # newest seq admitted from the peer's current boot
        self.last: Announce | None = None
        self.last_position: Position | None = None  # newest position the peer announced
        self.heard_at: float | None = None
        self.echo_sent_at: float | None = None
        self.eligible_at: float | None = None
        self._view: PeerView | None = None

    def send(self, now: float) -> tuple[int, int, int, int]:
        """Number one send round: (boot, seq, echo_boot, echo_seq)."""
        self.seq += 1
        self.sent_at.append(now)
        return self.boot, self.seq, self.peer_boot, self.newest_seq

    def receive(self, beat: Beat, now: float) -> None:
        _, path, boot, seq, echo_boot, echo_seq, announce = beat
        if boot < self.peer_boot:
            return  # a superseded boot
        if boot > self.peer_boot:
            self.peer_boot = boot
            self.newest_seq = 0
            self.echo_sent_at = None
            for p in self.paths:
                p.last_seq = 0
        link = self.paths[path]
        if seq <= link.last_seq:
            return  # duplicate or reordered behind a newer beat on this path
        link.last_seq = seq
        link.on_beat(now, self.timeout, self.window, self.rise)
        self.heard_at = now
        if seq > self.newest_seq:
            self.newest_seq = seq
            self.last = announce
            if announce.position is not None:
                self.last_position = announce.position
            if announce.eligible:
                self.eligible_at = now
        if echo_boot == self.boot and echo_seq > 0:
            sent = self.sent_at[echo_seq]
            if self.echo_sent_at is None or sent > self.echo_sent_at:
                self.echo_sent_at = sent
        self._view = None

    def view(self, now: float) -> PeerView:
        """The PeerView at ``now`` (reused while nothing changed)."""
        up = 0
        changed = False
        for p in self.paths:
            if p.advance(now, self.timeout):
                changed = True
            if p.up:
                up += 1
        v = self._view
        if v is None or changed or v.paths_up != up:
            v = self._view = PeerView(
                up, self.last, self.heard_at, self.echo_sent_at, self.eligible_at
            )
        return v
