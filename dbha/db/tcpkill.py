"""End one process's TCP connections to one address and port (``ss -K``).

Used while a replica stops receiving from an upstream that is dead: the
server's own attempt to reach it would otherwise hold the stop for seconds.
Only sockets the given process owns are ended (found through /proc/PID/fd and
/proc/net/tcp*), never this supervisor's own probes of the same port (a safety
check cut short would count as no evidence). The kernel ends them
(SOCK_DESTROY: CONFIG_INET_DIAG_DESTROY and CAP_NET_ADMIN); where it cannot,
nothing happens and the caller simply waits longer. Bounded in time; never
raises.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from pathlib import Path

from dbha import proc
from dbha.errors import CommandFailed, CommandTimeout

log = logging.getLogger(__name__)

SS = "ss"
PROC = Path("/proc")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets ``pid`` holds open (empty when it cannot be read)."""
    out: set[int] = set()
    try:
        fds = os.listdir(PROC / str(pid) / "fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(PROC / str(pid) / "fd" / fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def _hex_address(text: str) -> Address:
    """A /proc/net/tcp* address: the kernel's 32-bit words in host byte order
    (4 bytes: IPv4, 16: IPv6)."""
    raw = bytes.fromhex(text)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(raw)


def connections(table: str, inodes: set[int], dst: Address, port: int) -> list[tuple[Address, int]]:
    """(local address, local port) of each socket in a /proc/net/tcp* ``table`` text
    whose peer is ``dst``:``port`` and whose inode is in ``inodes``."""
    found: list[tuple[Address, int]] = []
    for line in table.splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        try:
            loc, lport = f[1].split(":")
            rem, rport = f[2].split(":")
            if int(f[9]) in inodes and int(rport, 16) == port and _hex_address(rem) == dst:
                found.append((_hex_address(loc), int(lport, 16)))
        except ValueError:
            continue
    return found


def end_connections(pid: int, host: str, port: int, *, timeout: float) -> int:
    """End the TCP sockets of process ``pid`` whose peer is ``host``:``port`` (an IP
    address; a name is left alone). Returns how many ``ss`` was asked to end."""
    try:
        dst = ipaddress.ip_address(host)
    except ValueError:
        log.debug("not ending connections to %s: not an IP address", host)
        return 0
    if not 0 < port < 65536 or pid <= 0:
        return 0
    inodes = socket_inodes(pid)
    if not inodes:
        return 0
    name = "tcp" if dst.version == 4 else "tcp6"
    try:
        table = (PROC / "net" / name).read_text()
    except OSError:
        return 0
    ended = 0
    for src, sport in connections(table, inodes, dst, port):
        family = "-4" if dst.version == 4 else "-6"
        a, b = (str(src), str(dst)) if dst.version == 4 else (f"[{src}]", f"[{dst}]")
        argv = [SS, "-K", "-t", family, "src", a, "sport", "=", str(sport)]
        argv += ["dst", b, "dport", "=", str(port)]
        try:
            proc.run(argv, timeout=timeout)
        except (CommandFailed, CommandTimeout) as exc:
            log.debug("ss -K %s:%d -> %s:%d: %s", src, sport, host, port, exc)
            continue
        ended += 1
    return ended
