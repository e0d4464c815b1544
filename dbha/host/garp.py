"""ARP on one interface: duplicate address probes and gratuitous announcements.

:class:`Garp` owns one AF_PACKET socket, opened once when the supervisor
starts (inside the node's network namespace), so announcing a VIP after a
failover costs a few system calls: no process to start, no socket to open
while memory or file descriptors may be short.

The socket is bound to the interface with protocol 0 (it receives nothing)
and is re-bound to ARP only while a probe listens for answers.

Frames (IPv4 over Ethernet only):

- probe (RFC 5227): ARP request, sender MAC ours, sender IP 0.0.0.0, target
  IP the address; any other host using the address answers it;
- announcement, both forms, since hosts differ in which they honour: an ARP
  request and an ARP reply, each with sender IP = target IP = the address,
  broadcast.

The frame helpers (:func:`arp_frame`, :func:`parse_arp`) are pure and never
raise on received bytes.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dbha.errors import DbhaError

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARP_REQUEST, ARP_REPLY = 1, 2
PACKET_OUTGOING = 4
BROADCAST = b"\xff" * 6
ZERO_MAC = b"\0" * 6
_ARP_HEAD = struct.Struct("!HHBBH")  # htype, ptype, hlen, plen, op


class ArpError(DbhaError):
    """The ARP socket could not be opened, or a frame could not be sent."""


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def mac_bytes(text: str) -> bytes:
    """Parse ``aa:bb:cc:dd:ee:ff``; raise ValueError otherwise."""
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)


@dataclass(frozen=True)
class ArpPacket:
    """The fields of one received ARP frame that matter here."""

    op: int
    sender_mac: str
    sender_ip: str
    target_mac: str
    target_ip: str


def arp_frame(
    *, op: int, src_mac: bytes, sender_ip: str, target_mac: bytes, target_ip: str, dst: bytes
) -> bytes:
    """An Ethernet frame carrying one IPv4 ARP packet (padded to the 60-byte minimum)."""
    body = (
        _ARP_HEAD.pack(1, ETH_P_IP, 6, 4, op)
        + src_mac
        + ipaddress.IPv4Address(sender_ip).packed
        + target_mac
        + ipaddress.IPv4Address(target_ip).packed
    )
    frame = dst + src_mac + struct.pack("!H", ETH_P_ARP) + body
    return frame.ljust(60, b"\0")


def parse_arp(frame: bytes) -> ArpPacket | None:
    """The ARP packet in an Ethernet frame, or None if it is not IPv4-over-Ethernet ARP."""
    if len(frame) < 42 or frame[12:14] != struct.pack("!H", ETH_P_ARP):
        return None
    htype, ptype, hlen, plen, op = _ARP_HEAD.unpack_from(frame, 14)
    if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4):
        return None
    a = frame[22:42]
    return ArpPacket(
        op,
        mac_text(a[0:6]),
        str(ipaddress.IPv4Address(a[6:10])),
        mac_text(a[10:16]),
        str(ipaddress.IPv4Address(a[16:20])),
    )


def claims(packet: ArpPacket, address: str, own_mac: str) -> bool:
    """True if ``packet`` shows another host using (or probing for) ``address``.

    Per RFC 5227: any ARP packet from another MAC whose sender IP is the
    address (a reply to our probe, or its own announcement), or a probe of
    its own for the address (sender IP 0.0.0.0, target the address).
    """
    if packet.sender_mac == own_mac:
        return False
    if packet.sender_ip == address:
        return True
    return (
        packet.op == ARP_REQUEST and packet.sender_ip == "0.0.0.0" and packet.target_ip == address
    )


@dataclass(frozen=True)
class Announcement:
    """What :meth:`Garp.announce` sent: monotonic send times of each round."""

    address: str
    mac: str
    sent_at: tuple[float, ...]  # one per round (request + reply)
    errors: tuple[str, ...]


class Garp:
    """One AF_PACKET socket on ``interface``; create it at start-up, inside the namespace.

    Contract: the constructor opens the socket or raises ArpError. ``probe``
    and ``announce`` are bounded in time (``timeout``; ``count × interval``)
    and serialised by a lock; they raise ArpError only when the socket
    itself fails (interface gone). ``close()`` is idempotent.
    """

    def __init__(self, interface: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interface = interface
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except OSError as exc:
            raise ArpError(f"cannot open an ARP socket: {exc.strerror or exc}") from exc
        try:
            self._sock.bind((interface, 0))
            self.mac = mac_text(self._sock.getsockname()[4][:6])
        except OSError as exc:
            self._sock.close()
            raise ArpError(f"interface {interface}: {exc.strerror or exc}") from exc
        self._mac = mac_bytes(self.mac)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Garp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, frame: bytes) -> None:
        try:
            self._sock.send(frame)
        except OSError as exc:
            raise ArpError(f"{self.interface}: cannot send ARP: {exc.strerror or exc}") from exc

    def probe(self, address: str, *, timeout: float, tries: int = 2) -> str | None:
        """Ask who has ``address``; the MAC of another host using it, or None after ``timeout``.

        ``tries`` probes are sent evenly within the timeout, so one lost frame
        does not hide a conflict. Our own frames are ignored.
        """
        ipaddress.IPv4Address(address)  # ValueError on anything else
        frame = arp_frame(
            op=ARP_REQUEST,
            src_mac=self._mac,
            sender_ip="0.0.0.0",
            target_mac=ZERO_MAC,
            target_ip=address,
            dst=BROADCAST,
        )
        with self._lock:
            try:
                self._sock.bind((self.interface, ETH_P_ARP))
            except OSError as exc:
                raise ArpError(f"{self.interface}: {exc.strerror or exc}") from exc
            try:
                self._drain()
                start = self._clock()
                deadline = start + timeout
                sends = [start + timeout * i / max(1, tries) for i in range(max(1, tries))]
                while True:
                    now = self._clock()
                    while sends and sends[0] <= now:
                        sends.pop(0)
                        self._send(frame)
                    if now >= deadline:
                        return None
                    wait = min(deadline, sends[0] if sends else deadline) - now
                    self._sock.settimeout(max(0.0005, wait))
                    try:
                        data, addr = self._sock.recvfrom(2048)
                    except TimeoutError:
                        continue
                    if addr[2] == PACKET_OUTGOING:
                        continue
                    packet = parse_arp(data)
                    if packet is not None and claims(packet, address, self.mac):
                        return packet.sender_mac
            except OSError as exc:
                raise ArpError(
                    f"{self.interface}: ARP probe failed: {exc.strerror or exc}"
                ) from exc
            finally:
                try:
                    self._sock.bind((self.interface, 0))  # stop receiving
                    self._sock.setblocking(True)
                except OSError:
                    pass

    def _drain(self) -> None:
        self._sock.setblocking(False)
        for _ in range(1000):
            try:
                self._sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                break

    def announce(self, address: str, *, count: int, interval: float) -> Announcement:
        """Send ``count`` rounds (ARP request + ARP reply) ``interval`` seconds apart.

        The first round goes out at once. A send that fails is recorded in
        ``errors`` and the rounds go on: a later one may get through.
        """
        ipaddress.IPv4Address(address)
        frames = [
            arp_frame(
                op=op,
                src_mac=self._mac,
                sender_ip=address,
                target_mac=target,
                target_ip=address,
                dst=BROADCAST,
            )
            for op, target in ((ARP_REQUEST, ZERO_MAC), (ARP_REPLY, self._mac))
        ]
        sent: list[float] = []
        errors: list[str] = []
        with self._lock:
            for i in range(count):
                if i:
                    time.sleep(interval)
                at = self._clock()
                for frame in frames:
                    try:
                        self._send(frame)
                    except ArpError as exc:
                        errors.append(str(exc))
                sent.append(at)
        return Announcement(address, self.mac, tuple(sent), tuple(errors))
