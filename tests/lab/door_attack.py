"""Idle connections and a slowloris client against a supervisor's HTTP door.

Run inside a lab namespace by tests/lab/test_failover_scenarios.py as
``ip netns exec NS python -m tests.lab.door_attack ADDR PORT SECONDS [IDLE] [SLOW]``:
keeps IDLE connections open that never send a byte (reopening each one the
door closes), and SLOW connections that send a request head one byte every
0.2 s, never finishing it, for SECONDS. Ends with one JSON line on stdout:
how many connections it opened, how many the door closed, and how many were
refused at connect. Every wait is bounded by SECONDS; SIGTERM ends it early.
"""

from __future__ import annotations

import json
import selectors
import signal
import socket
import sys
import time

HEAD = b"GET /primary HTTP/1.1\r\nHost: dbha\r\nX-Slow: "
SLOW_EVERY = 0.2


def main(argv: list[str]) -> int:
    addr, port, seconds = argv[0], int(argv[1]), float(argv[2])
    idle_n = int(argv[3]) if len(argv) > 3 else 200
    slow_n = int(argv[4]) if len(argv) > 4 else 5
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    sel = selectors.DefaultSelector()
    counts = {"opened": 0, "closed_by_door": 0, "connect_failed": 0, "slow_bytes": 0}
    slow: dict[socket.socket, int] = {}

    def open_one(kind: str) -> None:
        try:
            s = socket.create_connection((addr, port), timeout=1.0)
        except OSError:
            counts["connect_failed"] += 1
            return
        s.setblocking(False)
        counts["opened"] += 1
        sel.register(s, selectors.EVENT_READ, kind)
        if kind == "slow":
            slow[s] = 0

    for _ in range(idle_n):
        open_one("idle")
    for _ in range(slow_n):
        open_one("slow")
    end = time.monotonic() + seconds
    next_slow = time.monotonic()
    while not stop[0] and time.monotonic() < end:
        for key, _ in sel.select(timeout=0.05):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:  # the door closed it: open another in its place
                sel.unregister(s)
                slow.pop(s, None)
                s.close()
                counts["closed_by_door"] += 1
                open_one(key.data)
        if time.monotonic() >= next_slow:
            next_slow += SLOW_EVERY
            for s, sent in list(slow.items()):
                byte = HEAD[sent : sent + 1] or b"a"
                try:
                    s.send(byte)
                    slow[s] = sent + 1
                    counts["slow_bytes"] += 1
                except OSError:
                    pass
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
