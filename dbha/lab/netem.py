"""A userspace network emulator spliced into one lab switch port.

Run inside the switch namespace as ``python -m dbha.lab.netem PORT PEER SPEC``:
copies every Ethernet frame between the two interfaces, dropping, delaying
(with uniform jitter, like netem's default) and duplicating them as SPEC says.
SPEC uses netem's words: ``loss 30% delay 100ms 100ms duplicate 1%``.

The sockets use PACKET_VNET_HDR so that offloaded frames (GSO super-frames,
checksums left to the hardware) are forwarded with their offload metadata
and the kernel finishes them on the way out, as a real switch would see them.
"""

from __future__ import annotations

import argparse
import heapq
import random
import re
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_OUTGOING = 4
MAX_FRAME = 65536 + 64
# Frames waiting in the delay line at most; beyond it new frames are dropped
# (a bounded queue, like netem's limit of 1000 packets).
QUEUE_LIMIT = 10000


@dataclass(frozen=True, slots=True)
class Spec:
    loss: float = 0.0  # probability 0..1
    delay: float = 0.0  # seconds
    jitter: float = 0.0  # seconds, uniform +/- around delay
    duplicate: float = 0.0  # probability 0..1


_TIME_RE = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s)$")
_PCT_RE = re.compile(r"^(\d+(?:\.\d+)?)%$")


def _time(word: str, key: str = "delay") -> float:
    m = _TIME_RE.match(word)
    if not m:
        raise ValueError(f"netem {key} {word!r}: expected a time such as 100ms, 250us or 1s")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]
    return float(m.group(1)) * scale


def _pct(word: str, key: str) -> float:
    m = _PCT_RE.match(word)
    if not m or float(m.group(1)) > 100:
        raise ValueError(f"netem {key} {word!r}: expected a percentage such as 30%")
    return float(m.group(1)) / 100


def parse_spec(text: str) -> Spec:
    """Parse a netem-style spec; raise ValueError naming the bad word."""
    words = text.split()
    if not words:
        raise ValueError("empty netem spec: say e.g. 'loss 30% delay 100ms 100ms'")
    loss = delay = jitter = dup = 0.0
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("loss", "duplicate") and i + 1 < len(words):
            value = _pct(words[i + 1], w)
            if w == "loss":
                loss = value
            else:
                dup = value
            i += 2
        elif w == "delay" and i + 1 < len(words):
            delay = _time(words[i + 1])
            i += 2
            if i < len(words) and _TIME_RE.match(words[i]):
                jitter = _time(words[i], "jitter")
                i += 1
        else:
            raise ValueError(
                f"netem spec {text!r}: cannot read {w!r} "
                "(known: loss P%, delay T [JITTER], duplicate P%)"
            )
    if delay > 10 or jitter > 10:
        raise ValueError("netem spec: delay and jitter must be at most 10s")
    return Spec(loss, delay, jitter, dup)


def _open(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.bind((ifname, ETH_P_ALL))
    s.setblocking(False)
    return s


def forward(a: str, b: str, spec: Spec, ready_file: Path | None, rng: random.Random) -> None:
    sa, sb = _open(a), _open(b)
    other = {sa.fileno(): sb, sb.fileno(): sa}
    queue: list[tuple[float, int, socket.socket, bytes]] = []
    seq = 0
    stats = {"forwarded": 0, "dropped": 0, "duplicated": 0, "overflow": 0, "send_errors": 0}
    stop = False

    def _stop(_sig: int, _frm: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if ready_file is not None:
        ready_file.write_text("ready\n")
    print(f"netem {a}<->{b}: {spec}", flush=True)
    while not stop:
        now = time.monotonic()
        timeout = max(0.0, queue[0][0] - now) if queue else 0.5
        try:
            readable, _, _ = select.select([sa, sb], [], [], min(timeout, 0.5))
        except InterruptedError:
            continue
        for s in readable:
            out = other[s.fileno()]
            while True:
                try:
                    data, addr = s.recvfrom(MAX_FRAME)
                except (BlockingIOError, InterruptedError):
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue  # our own transmission seen on the way out
                if rng.random() < spec.loss:
                    stats["dropped"] += 1
                    continue
                copies = 2 if rng.random() < spec.duplicate else 1
                stats["duplicated"] += copies - 1
                for _ in range(copies):
                    if len(queue) >= QUEUE_LIMIT:
                        stats["overflow"] += 1
                        continue
                    d = (
                        spec.delay + rng.uniform(-spec.jitter, spec.jitter)
                        if spec.jitter
                        else spec.delay
                    )
                    seq += 1
                    heapq.heappush(queue, (time.monotonic() + max(0.0, d), seq, out, data))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, data = heapq.heappop(queue)
            try:
                out.send(data)
                stats["forwarded"] += 1
            except OSError:
                stats["send_errors"] += 1
    print(f"netem {a}<->{b} stopped: {stats}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dbha.lab.netem", description=__doc__)
    ap.add_argument("--ready-file", type=Path)
    ap.add_argument("--seed", type=int)
    ap.add_argument("port")
    ap.add_argument("peer")
    ap.add_argument("spec", nargs="+")
    args = ap.parse_args(argv)
    try:
        spec = parse_spec(" ".join(args.spec))
    except ValueError as exc:
        print(f"netem: {exc}", file=sys.stderr)
        return 2
    forward(args.port, args.peer, spec, args.ready_file, random.Random(args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
