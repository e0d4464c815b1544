"""The lease keeper: a small process that fences this node when its lease runs out.

The supervisor grants the primary role a lease (``Decision.lease_until``: a
time on CLOCK_MONOTONIC, which every process of the host shares) and renews
it every tick. The keeper runs beside it as a separate process, reading
``LEASE <t>`` / ``NONE`` / ``QUIT`` lines on its standard input. If a lease
it was given ends without being renewed (the supervisor hung, was paused or
starved, or died), the keeper fences the node on its own (:func:`fence_now`:
the database read-only with its sessions ended, then the VIP released, then
the server stopped): the peer may promote itself once the lease is over, and
this node must not be writable then.

Guarantee and limits: while a lease runs, the keeper sleeps until its end and
then reads the renewals that came meanwhile (a renewal only moves the end
later, so nothing on the input needs it sooner: one wake-up per lease, not per
tick); without a lease it wakes for the first line. It reacts at the lease's
end, plus the time the read-only step takes (bounded from the config's
deadline); the stop that follows has its own bound (``fence.stop_timeout_ms``).
It cannot help if the whole host is frozen (then the host is not writable
either), if it is killed, or if the fence itself fails: a Linux watchdog
device covers those cases.

The watchdog (``[fence] watchdog_device``, optional; e.g. ``/dev/watchdog``):
the keeper opens the device, sets its timeout to ``watchdog_timeout(D)``
seconds (``max(1, floor((1 - LEASE_FRACTION) * D))`` for the self-fence
deadline ``D``: the share of ``D`` a lease leaves between its end and the
earliest moment the peer may promote, never under the 1 s the device counts
in) and pets it every quarter of that, but only while this node is not
primary or its lease is valid. When a lease ends, the keeper fences. It pets
again once the read-only step confirmed (also while the server stops, which
may take longer than the device's timeout), or once the server is stopped; if
neither confirms (writes could still be accepted), it never pets again, and
the device resets the host at most the timeout after the last pet, which was
at or before the lease's end. A keeper that hangs or is killed stops petting too (closing the device
without the magic character does not stop it). ``QUIT`` (the supervisor's
clean stop), or the supervisor's exit while no lease is running, closes the
device with the magic close ('V'), which disarms it (unless the driver was
built with nowayout); after a failed fence it is never disarmed.

What that guarantees: a node whose lease ended is not writable later than the
lease's end plus the timeout, even when its keeper or its fence fails. With a
deadline ``D`` of at least ``1 / (1 - LEASE_FRACTION)`` (6.7 s) the reset
comes before the peer may promote; with a shorter ``D`` (the default is 1 s)
the device cannot count fast enough and the reset may come up to
``timeout - (1 - LEASE_FRACTION) * D`` after it (0.85 s at the defaults): the
watchdog then bounds the overlap, it does not prevent it. A read-only step
slower than the timeout ends in a reset as well. A keeper starved of CPU for the timeout
resets a healthy host: that is the price of any watchdog.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import math
import os
import select
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Protocol

from dbha import config
from dbha.core.params import LEASE_FRACTION
from dbha.errors import DbhaError
from dbha.node import logs

IDLE_WAIT = 1.0  # seconds between looks at the clock when nothing is due
PETS_PER_TIMEOUT = 4
log = logging.getLogger("dbha.keeper")

# Linux watchdog ioctls (linux/watchdog.h): _IOR('W', 5, int), _IOWR('W', 6, int).
WDIOC_KEEPALIVE = 0x80045705
WDIOC_SETTIMEOUT = 0xC0045706


class WatchdogError(DbhaError):
    """The watchdog device could not be opened, set or petted."""


class WatchdogDevice(Protocol):
    """The three operations the keeper needs of a watchdog device."""

    def set_timeout(self, seconds: int) -> int:
        """Ask for ``seconds``; return the timeout the device took. Raises WatchdogError."""
        ...

    def keepalive(self) -> None:
        """Restart the device's countdown. Raises WatchdogError."""
        ...

    def close(self, disarm: bool) -> None:
        """Close it; ``disarm`` writes the magic 'V' first (stops the countdown).
        Never raises."""
        ...


class LinuxWatchdog:
    """A ``/dev/watchdog``-style device: opening it arms it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise WatchdogError(f"cannot open {path}: {exc.strerror or exc}") from exc

    def set_timeout(self, seconds: int) -> int:
        try:
            got = fcntl.ioctl(self._fd, WDIOC_SETTIMEOUT, struct.pack("=i", seconds))
        except OSError as exc:
            raise WatchdogError(f"{self.path}: cannot set the timeout: {exc.strerror}") from exc
        return int(struct.unpack("=i", got)[0])

    def keepalive(self) -> None:
        try:
            fcntl.ioctl(self._fd, WDIOC_KEEPALIVE, struct.pack("=i", 0))
        except OSError as exc:
            raise WatchdogError(f"{self.path}: cannot pet: {exc.strerror}") from exc

    def close(self, disarm: bool) -> None:
        try:
            if disarm:
                os.write(self._fd, b"V")
        except OSError as exc:
            log.error("keeper: %s: magic close failed: %s", self.path, exc.strerror)
        finally:
            with contextlib.suppress(OSError):
                os.close(self._fd)


def watchdog_timeout(deadline_s: float) -> int:
    """The device timeout (whole seconds) for self-fence deadline ``deadline_s``."""
    return max(1, math.floor((1 - LEASE_FRACTION) * deadline_s))


class Watchdog:
    """When to pet a device. Pets at most every ``timeout / PETS_PER_TIMEOUT``;
    once ``stop`` was called it never pets again and is never disarmed."""

    def __init__(self, device: WatchdogDevice, timeout_s: int) -> None:
        self.device = device
        self.timeout = device.set_timeout(timeout_s)
        if self.timeout < 1:
            raise WatchdogError(f"the device took a timeout of {self.timeout} s")
        self.every = self.timeout / PETS_PER_TIMEOUT
        self.next_pet = -math.inf
        self.stopped = False

    def tend(self, now: float) -> float | None:
        """Pet if due; seconds until the next pet is due (None: stopped)."""
        if self.stopped:
            return None
        if now >= self.next_pet:
            self.device.keepalive()
            self.next_pet = now + self.every
        return self.next_pet - now

    def stop(self) -> None:
        self.stopped = True

    def close(self, disarm: bool) -> None:
        self.device.close(disarm=disarm and not self.stopped)


class FenceOutcome(NamedTuple):
    """What the keeper's fence did. ``failed``: each step that failed, with why
    (empty: all done). ``writable``: writes could still be accepted (neither the
    read-only step nor the stop confirmed): only then is the host reset."""

    failed: tuple[str, ...] = ()
    writable: bool = False


class Keeper:
    """The keeper's rules without its I/O: lease lines in; fence, watchdog and
    reports out. ``fence`` says what it did (:class:`FenceOutcome`)."""

    def __init__(
        self,
        fence: Callable[[Callable[[], None]], FenceOutcome],
        watchdog: Watchdog | None = None,
        report: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fence, self.watchdog, self.report, self.clock = fence, watchdog, report, clock
        self.lease: float | None = None
        self.expirations = 0  # leases that ended without renewal

    def line(self, raw: bytes) -> bool:
        """Take one input line; False on ``QUIT``."""
        words = raw.decode("ascii", "replace").split()
        if words == ["QUIT"]:
            return False
        if words == ["NONE"]:
            self.lease = None
        elif len(words) == 2 and words[0] == "LEASE":
            try:
                lease = float(words[1])
            except ValueError:
                lease = math.nan
            if math.isfinite(lease):
                self.lease = lease
            else:
                log.error("keeper: bad line %r", raw[:80])
        elif words:
            log.error("keeper: bad line %r", raw[:80])
        return True

    def step(self, now: float) -> float:
        """Act on the time ``now``: fence after an unrenewed lease, pet the watchdog
        while allowed. Returns how long the caller may wait before the next step."""
        lease = self.lease
        if lease is not None and now >= lease:
            self.lease = None
            self.expirations += 1
            out = self.fence(self._tend_while_stopping)
            msg = f"lease ended {(now - lease) * 1000:.0f} ms ago without renewal: fenced" + (
                f" with failures: {'; '.join(out.failed)}" if out.failed else ""
            )
            if out.failed and not out.writable:
                msg += " (read-only or stopped: it accepts no writes)"
            if out.writable and self.watchdog is not None:
                self.watchdog.stop()
                msg += (
                    "; the watchdog is no longer petted: the host resets within "
                    f"{self.watchdog.timeout} s"
                )
            self.report(f"EXPIRED {msg}")
            log.error("keeper: %s", msg)
            now = self.clock()  # the fence took time
        wait = IDLE_WAIT if self.lease is None else self.lease - now
        if self.watchdog is not None:
            try:
                pet = self.watchdog.tend(now)
            except WatchdogError as exc:
                # Left alone, the device resets the host: the safe way to fail.
                self.watchdog.stop()
                self.report(f"WATCHDOG {exc}: no longer petted")
                log.error("keeper: %s: the watchdog is no longer petted", exc)
                pet = None
            if pet is not None:
                wait = min(wait, pet)
        return max(0.0, min(wait, IDLE_WAIT))

    def _tend_while_stopping(self) -> None:
        """Pet while the fence stops a server that is already read-only (called by
        the fence, only then): a clean stop may outlast the device's timeout."""
        if self.watchdog is None:
            return
        try:
            self.watchdog.tend(self.clock())
        except WatchdogError as exc:
            self.watchdog.stop()
            self.report(f"WATCHDOG {exc}: no longer petted")
            log.error("keeper: %s: the watchdog is no longer petted", exc)

    def close(self, disarm: bool) -> None:
        """Leave; ``disarm`` the watchdog (never after a failed fence)."""
        if self.watchdog is not None:
            self.watchdog.close(disarm)


# The VIP goes once the read-only step is done, or this share of the time between
# the lease's end and the earliest moment the peer may promote ((1 - LEASE_FRACTION)
# of the deadline), whichever comes first: the sessions the fence ends tell their
# clients so from an address the host still has, and the VIP is gone before the
# peer may take it even when the database does not answer.
VIP_GRACE_SHARE = 0.5
# How often the keeper pets its watchdog while a read-only server stops (seconds).
TEND_EVERY = 0.1


def read_only_budget(deadline_s: float) -> float:
    """Seconds the read-only step of a keeper's fence may take: the step the
    self-fence deadline rests on (writes stop when it is done)."""
    return max(0.5, 0.6 * deadline_s)


def vip_grace(deadline_s: float) -> float:
    """Seconds the keeper waits for the read-only step before it drops the VIP anyway."""
    return VIP_GRACE_SHARE * (1 - LEASE_FRACTION) * deadline_s


def fence_now(cfg: config.Config, tend: Callable[[], None] = lambda: None) -> FenceOutcome:
    """The keeper's fence after a lease ended without renewal, in three bounded steps:

    1. read-only (the driver's soft fence: writes refused, client sessions ended),
       within :func:`read_only_budget`: the step the self-fence deadline rests on;
    2. the VIP released, as soon as step 1 is done or after :func:`vip_grace`;
    3. the server stopped (hard fence), within ``fence.stop_timeout_ms``: a clean
       stop may take longer than the deadline (a checkpoint), and once step 1
       holds nothing is written meanwhile. A stopped server is one the peer's
       safety check finds dead, so the peer can take over.

    ``tend`` is called every TEND_EVERY seconds while step 3 runs after step 1
    confirmed (the keeper pets its watchdog then). Never raises. ``writable`` is
    True only when neither step 1 nor step 3 confirmed: then the host may still
    accept writes."""
    from dbha.db.factory import local_driver
    from dbha.host.vip import Vip

    deadline_s = cfg.fence.self_fence_deadline_ms / 1000
    failed: list[str] = []
    driver = local_driver(cfg)
    soft: list[str] = []  # empty once the read-only step confirmed; else why not

    def read_only() -> None:
        try:
            driver.fence(read_only_budget(deadline_s))
        except DbhaError as exc:
            soft.append(str(exc))
        except Exception as exc:  # a keeper thread must never die silently
            soft.append(f"{type(exc).__name__}: {exc}")
        else:
            soft.append("")

    step = threading.Thread(target=read_only, name="dbha-keeper-fence", daemon=True)
    started = time.monotonic()
    step.start()
    step.join(vip_grace(deadline_s))
    try:
        Vip.from_config(cfg.vip).release()
    except DbhaError as exc:
        failed.append(f"VIP: {exc}")
    step.join(max(0.0, read_only_budget(deadline_s) + 0.5 - (time.monotonic() - started)))
    confirmed = soft == [""]
    if not confirmed:
        failed.append(f"read-only: {soft[0] if soft else 'no answer in time'}")
    stop: list[str] = []  # as ``soft``, for step 3

    def stop_server() -> None:
        try:
            driver.fence(cfg.fence.stop_timeout_ms / 1000, hard=True)
        except DbhaError as exc:
            stop.append(str(exc))
        except Exception as exc:
            stop.append(f"{type(exc).__name__}: {exc}")
        else:
            stop.append("")

    stopping = threading.Thread(target=stop_server, name="dbha-keeper-stop", daemon=True)
    stopping.start()
    until = time.monotonic() + cfg.fence.stop_timeout_ms / 1000 + 1.0
    while stopping.is_alive() and time.monotonic() < until:
        if confirmed:
            tend()
        stopping.join(min(TEND_EVERY, max(0.0, until - time.monotonic())))
    stopped = stop == [""]
    if not stopped:
        failed.append(f"stop: {stop[0] if stop else 'not done in time'}")
    return FenceOutcome(tuple(failed), writable=not (confirmed or stopped))


def serve(
    cfg: config.Config, stdin: int, out: object = sys.stdout, watchdog: Watchdog | None = None
) -> int:
    """Run the keeper on ``stdin`` until QUIT (0), or until the supervisor is gone
    (end of input, or SIGTERM) and no lease runs any more (0; 1 if a lease ran out
    after that). The watchdog is disarmed on the way out unless a fence failed or
    the keeper itself failed."""

    def report(text: str) -> None:
        print(text, file=out, flush=True)  # type: ignore[call-overload]

    keeper = Keeper(lambda tend: fence_now(cfg, tend), watchdog, report)
    try:
        code = _loop(keeper, stdin)
    except BaseException:
        keeper.close(disarm=False)  # a broken keeper must not switch the watchdog off
        raise
    keeper.close(disarm=True)
    return code


# Set by SIGTERM: stop reading, enforce the lease that runs, then leave.
_terminated = False


def _on_term(_sig: int, _frame: object) -> None:
    global _terminated
    _terminated = True


def _loop(keeper: Keeper, stdin: int) -> int:
    eof = False
    expired_before_eof = 0
    buf = b""
    while True:
        if not eof:
            got, buf = _drain(keeper, stdin, buf)
            if got == "quit":
                return 0
            if got == "eof":
                eof = True  # the supervisor is gone: keep enforcing the lease it gave
                expired_before_eof = keeper.expirations
        wait = keeper.step(time.monotonic())
        if not eof and _terminated:
            eof, expired_before_eof = True, keeper.expirations
        if eof and keeper.lease is None:
            return 1 if keeper.expirations > expired_before_eof else 0
        if eof or keeper.lease is not None:
            # A running lease needs no prompt reading: a renewal only moves its end
            # later (the evidence behind the current end stays true), and NONE or
            # QUIT can wait. Sleep until the step is due, then read what came
            # meanwhile before judging the lease: one wake-up per lease, not one
            # per line the supervisor writes.
            time.sleep(wait)
        else:
            select.select([stdin], [], [], wait)  # no lease: wake for the first line


def _drain(keeper: Keeper, stdin: int, buf: bytes) -> tuple[str, bytes]:
    """Read every line waiting on ``stdin`` without blocking: "quit", "eof" or "ok"."""
    for _ in range(256):  # bounded: a flood must not keep the keeper from its lease
        ready, _, _ = select.select([stdin], [], [], 0)
        if not ready:
            break
        chunk = _read(stdin)
        if not chunk:
            return "eof", buf
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not keeper.line(line):
                return "quit", buf
    return "ok", buf[-4096:]  # a line longer than this is junk anyway


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""


def open_watchdog(cfg: config.Config) -> Watchdog | None:
    """The configured watchdog, armed with its timeout (None: none configured)."""
    path = cfg.fence.watchdog_device
    if path is None:
        return None
    device = LinuxWatchdog(path)
    want = watchdog_timeout(cfg.fence.self_fence_deadline_ms / 1000)
    try:
        dog = Watchdog(device, want)
    except WatchdogError:
        device.close(disarm=True)
        raise
    if dog.timeout != want:
        log.warning("keeper: %s took a timeout of %d s (asked for %d s)", path, dog.timeout, want)
    return dog


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dbha.node.keeper")
    ap.add_argument("-c", "--config", required=True)
    ap.add_argument("--json-log", action="store_true", help="one JSON object per log line")
    args = ap.parse_args(argv)
    # The supervisor's stream is ours too: the same format (dbha.node.logs).
    logs.setup("info", json_lines=args.json_log)
    try:
        cfg = config.load(args.config)
        logs.setup(
            "info",
            json_lines=args.json_log or cfg.log.format == "json",
            static={"service": cfg.service.id, "node": cfg.node.name},
        )
        watchdog = open_watchdog(cfg)
    except DbhaError as exc:
        log.error("keeper: %s", exc)
        return 2
    signal.signal(signal.SIGTERM, _on_term)
    print("READY", flush=True)
    return serve(cfg, sys.stdin.fileno(), watchdog=watchdog)


if __name__ == "__main__":
    sys.exit(main())
