"""Read an interface's IPv4 addresses over a plain netlink socket.

The supervisor asks "is the VIP on my interface?" every tick. Through
pyroute2 that question costs about 0.4 ms of CPU (an event loop and a generic
message decoder per call), the largest part of an idle supervisor's tick; one
RTM_GETADDR dump over a raw NETLINK_ROUTE socket, parsed with ``struct``,
answers the same question from the same kernel table for a few microseconds.
:class:`AddrReader` is that reader (it also listens to the kernel's address
change announcements, and dumps again only after one, or every REFRESH
seconds); :func:`parse_dump` is its pure parser.

Bounds and errors: the socket has a receive timeout, a dump is read in a
bounded number of datagrams, and a dump the kernel marks as interrupted (the
table changed while it was being read) is read again, a bounded number of
times. Everything that goes wrong comes out as :class:`AddrError`; the parser
never raises anything else, whatever the bytes.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass

from dbha.errors import DbhaError

NLMSG = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
IFADDRMSG = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
RTA = struct.Struct("=HH")  # rtattr: length, type
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWADDR, RTM_GETADDR = 20, 22
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_DUMP_INTR, NLM_F_DUMP = 0x1, 0x2, 0x10, 0x300
IFA_ADDRESS = 1
AF_INET = 2

RTMGRP_IPV4_IFADDR = 0x10  # the multicast group told of every IPv4 address change

TIMEOUT = 1.0  # seconds one receive may wait for the kernel
REFRESH = 2.0  # seconds a cached answer is kept even when no change was announced
MAX_DATAGRAMS = 256  # datagrams one dump may take (a host with thousands of addresses)
TRIES = 3  # dumps read again when the kernel says one was interrupted


class AddrError(DbhaError):
    """The interface's addresses could not be read."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """What one datagram of a dump said: IPv4 addresses (``IFA_ADDRESS``) on the
    interface asked about, whether the dump ended, whether it was interrupted."""

    addresses: tuple[str, ...] = ()
    done: bool = False
    interrupted: bool = False


def _align(n: int) -> int:
    return (n + 3) & ~3


def request(seq: int) -> bytes:
    """An RTM_GETADDR dump request for every IPv4 address (the kernel filters by
    interface only with strict checking on; the parser filters instead)."""
    body = IFADDRMSG.pack(AF_INET, 0, 0, 0, 0)
    return (
        NLMSG.pack(NLMSG.size + len(body), RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body
    )


def _address(msg: bytes, index: int) -> str | None:
    family, _prefixlen, _flags, _scope, ifindex = IFADDRMSG.unpack_from(msg, NLMSG.size)
    if family != AF_INET or ifindex != index:
        return None
    off = NLMSG.size + IFADDRMSG.size
    while off + RTA.size <= len(msg):
        length, kind = RTA.unpack_from(msg, off)
        if length < RTA.size or off + length > len(msg):
            raise ValueError("attribute overruns its message")
        if kind == IFA_ADDRESS:
            if length - RTA.size != 4:
                raise ValueError("IFA_ADDRESS of an IPv4 address is not 4 bytes")
            return str(ipaddress.IPv4Address(msg[off + RTA.size : off + length]))
        off += _align(length)
    return None


def parse_dump(data: bytes, seq: int, index: int) -> Chunk:
    """Parse one datagram of the answer to ``request(seq)``: the IPv4 addresses on
    interface ``index`` it lists. Messages of another sequence number (a reply to
    an earlier request that was given up) are skipped. Raises AddrError on an
    error message or malformed bytes, nothing else."""
    found: list[str] = []
    done = interrupted = False
    off = 0
    try:
        while off + NLMSG.size <= len(data):
            length, kind, flags, mseq, _pid = NLMSG.unpack_from(data, off)
            if length < NLMSG.size or off + length > len(data):
                raise ValueError("message overruns the datagram")
            if mseq == seq:
                msg = data[off : off + length]
                interrupted = interrupted or bool(flags & NLM_F_DUMP_INTR)
                if kind == NLMSG_DONE:
                    done = True
                elif kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", msg, NLMSG.size)
                    if code != 0:
                        raise AddrError(f"netlink: {os.strerror(-code)}")
                    done = True  # an acknowledgement: nothing more comes
                elif kind == RTM_NEWADDR:
                    addr = _address(msg, index)
                    if addr is not None:
                        found.append(addr)
            off += _align(length)
    except (struct.error, ValueError) as exc:
        raise AddrError(f"netlink: malformed address dump ({exc})") from exc
    return Chunk(tuple(found), done, interrupted)


class AddrReader:
    """NETLINK_ROUTE sockets, opened in the caller's network namespace, that list
    the IPv4 addresses of one interface: one dumps the table, one listens to the
    kernel's announcements of address changes. A dump's answer is kept until a
    change is announced (or the announcements overflowed), and at most REFRESH
    seconds, so that the question asked every tick usually costs one receive
    that finds nothing. Thread-safe; ``close`` is idempotent."""

    def __init__(self, index: int, timeout: float = TIMEOUT) -> None:
        self.index = index
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._cached: tuple[str, ...] | None = None
        self._cached_at = 0.0
        self._sock = _netlink(0, timeout)
        try:
            # Listening starts before the first dump: no change can fall between.
            self._watch = _netlink(RTMGRP_IPV4_IFADDR, None)
        except AddrError:
            self._sock.close()
            raise

    def addresses(self) -> tuple[str, ...]:
        """The interface's IPv4 addresses now. Raises AddrError."""
        with self._lock:
            changed = self._changed()
            now = time.monotonic()
            if self._cached is not None and not changed and now - self._cached_at < REFRESH:
                return self._cached
            self._cached = None
            for _ in range(TRIES):
                got = self._dump()
                if got is not None:
                    self._cached, self._cached_at = got, now
                    return got
        raise AddrError(f"netlink: the address dump was interrupted {TRIES} times")

    def _changed(self) -> bool:
        """Drain the announcements; True when any came (or some were lost)."""
        got = False
        for _ in range(MAX_DATAGRAMS):
            try:
                self._watch.recv(1 << 16)
            except BlockingIOError:
                return got
            except OSError:  # ENOBUFS: announcements overflowed and were lost
                return True
            got = True
        return True  # still more: treat as changed

    def _dump(self) -> tuple[str, ...] | None:
        seq = next(self._seq) & 0xFFFFFFFF
        found: list[str] = []
        interrupted = False
        try:
            self._sock.send(request(seq))
            for _ in range(MAX_DATAGRAMS):
                chunk = parse_dump(self._sock.recv(1 << 16), seq, self.index)
                found += chunk.addresses
                interrupted = interrupted or chunk.interrupted
                if chunk.done:
                    return None if interrupted else tuple(found)
        except OSError as exc:  # includes the receive timeout
            raise AddrError(f"netlink: {exc.strerror or exc}") from exc
        raise AddrError(f"netlink: the address dump did not end within {MAX_DATAGRAMS} datagrams")

    def close(self) -> None:
        self._sock.close()
        self._watch.close()


def _netlink(groups: int, timeout: float | None) -> socket.socket:
    """A NETLINK_ROUTE socket bound to ``groups``; blocking with ``timeout``, or
    non-blocking when it is None."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    except OSError as exc:
        raise AddrError(f"cannot open netlink: {exc.strerror or exc}") from exc
    try:
        sock.bind((0, groups))
        if timeout is None:
            sock.setblocking(False)
        else:
            sock.settimeout(timeout)
    except OSError as exc:
        sock.close()
        raise AddrError(f"cannot open netlink: {exc.strerror or exc}") from exc
    return sock
