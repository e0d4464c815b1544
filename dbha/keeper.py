"""The lease keeper: a small process that fences this node when its lease runs out.

The supervisor grants the primary role a lease (``Decision.lease_until``: a
time on CLOCK_MONOTONIC, which every process of the host shares) and renews
it every tick. The keeper runs beside it as a separate process, reading
``LEASE <t>`` / ``NONE`` / ``QUIT`` lines on its standard input. If a lease
it was given ends without being renewed (the supervisor hung, was paused or
starved, or died), the keeper removes the VIP and hard-fences the database
on its own: the peer may promote itself once the lease is over, and this
node must not be writable then.

Guarantee and limits: the keeper reacts within ``TICK`` of the lease's end
plus the time the fence takes (bounded by the config's deadline). It cannot
help if the whole host is frozen (then the host is not writable either) or
if the keeper itself is killed; a Linux watchdog device, where one exists,
would cover the second case (not used yet: the machines this is tested on
have none).
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
import time

from dbha import config
from dbha.errors import DbhaError

TICK = 0.02
log = logging.getLogger("dbha.keeper")


def fence_now(cfg: config.Config) -> list[str]:
    """Drop the VIP and hard-fence the database; return what failed (empty: all done)."""
    from dbha.drivers import local_driver
    from dbha.vip import Vip

    failed = []
    try:
        Vip.from_config(cfg.vip).release()
    except DbhaError as exc:
        failed.append(f"VIP: {exc}")
    try:
        local_driver(cfg).fence(max(0.5, 0.6 * cfg.fence.self_fence_deadline_ms / 1000), hard=True)
    except DbhaError as exc:
        failed.append(f"database: {exc}")
    return failed


def serve(cfg: config.Config, stdin: int, out: object = sys.stdout) -> int:
    lease: float | None = None
    eof = False
    buf = b""
    while True:
        now = time.monotonic()
        if lease is not None and now >= lease:
            late = now - lease
            failed = fence_now(cfg)
            msg = f"lease ended {late * 1000:.0f} ms ago without renewal: fenced" + (
                f" with failures: {'; '.join(failed)}" if failed else ""
            )
            print(f"EXPIRED {msg}", file=out, flush=True)  # type: ignore[call-overload]
            log.error("keeper: %s", msg)
            lease = None
            if eof:
                return 1
        if eof and lease is None:
            return 0
        wait = TICK if lease is None else max(0.0, min(TICK, lease - now))
        if eof:
            time.sleep(wait)
            continue
        ready, _, _ = select.select([stdin], [], [], wait)
        if not ready:
            continue
        chunk = _read(stdin)
        if not chunk:
            eof = True  # the supervisor is gone: keep enforcing the lease it gave
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            words = line.decode("ascii", "replace").split()
            if words == ["QUIT"]:
                return 0
            if words == ["NONE"]:
                lease = None
            elif len(words) == 2 and words[0] == "LEASE":
                try:
                    lease = float(words[1])
                except ValueError:
                    log.error("keeper: bad line %r", line[:80])


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dbha.keeper")
    ap.add_argument("-c", "--config", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        cfg = config.load(args.config)
    except DbhaError as exc:
        print(f"keeper: {exc}", file=sys.stderr)
        return 2
    print("READY", flush=True)
    return serve(cfg, sys.stdin.fileno())


if __name__ == "__main__":
    sys.exit(main())
