"""The virtual IP: add it, remove it, say who holds it.

:class:`Vip` is the driver: one netlink socket (pyroute2 ``IPRoute``) and one
:class:`~dbha.host.garp.Garp`, both opened when the supervisor starts, inside the
node's namespace (plus :class:`~dbha.host.ifaddr.AddrReader`, a plain netlink
socket that answers ``holds_vip`` cheaply every tick). Every verb is
idempotent, checks the result by reading the interface's addresses back, and
raises only :class:`VipError` (or its :class:`VipConflict`): pyroute2's
NetlinkError and OSError are mapped here.

Adding is: ARP probe for the address (duplicate address detection) and
refuse if another MAC answers; add; verify; announce with gratuitous ARP.
IPv4 only for now.
"""

from __future__ import annotations

import errno
import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from dbha.config import VipConfig
from dbha.errors import DbhaError
from dbha.host.garp import Announcement, ArpError, Garp
from dbha.host.ifaddr import AddrError, AddrReader

DEFAULT_PROBE_TIMEOUT = 0.2  # seconds a DAD probe listens; a LAN answers within a millisecond
AHEAD_FRESH = 1.0  # seconds a probe made ahead (see Vip.probe_ahead) still counts


class ProbeAhead:
    """An ARP probe started before ``acquire`` needs it (see :meth:`Vip.probe_ahead`)."""

    def __init__(self) -> None:
        self.finished = threading.Event()
        self.other: str | None = None
        self.error: ArpError | None = None
        self.done_at = 0.0


class VipError(DbhaError):
    """The VIP could not be added, removed or inspected."""


class VipConflict(VipError):
    """Another host answers for the address: adding it would make two holders."""

    def __init__(self, address: str, interface: str, mac: str) -> None:
        self.address, self.interface, self.mac = address, interface, mac
        super().__init__(
            f"VIP {address}: refusing to add it on {interface}: "
            f"another host (MAC {mac}) answers ARP for it"
        )


@dataclass(frozen=True)
class Acquired:
    """What :meth:`Vip.acquire` did."""

    address: str
    interface: str
    added: bool  # False: it was already here
    announcement: Announcement


@dataclass(frozen=True)
class VipHolder:
    """Who holds the VIP, as seen from this node."""

    address: str
    here: bool  # configured on our interface
    other_mac: str | None  # another host answering ARP for it (None: nobody else)

    def as_dict(self) -> dict[str, Any]:
        return {"address": self.address, "here": self.here, "other_mac": self.other_mac}


def _netlink_detail(exc: Exception) -> str:
    if isinstance(exc, NetlinkError):
        code = exc.code
        return f"{errno.errorcode.get(code, code)}: {exc}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"{type(exc).__name__}: {exc}"


class Vip:
    """Add, remove and query one IPv4 VIP on one interface.

    Contract:

    - The constructor validates (ValueError), then opens the netlink socket
      and, unless one is given, the Garp socket; VipError if either fails or
      the interface does not exist.
    - ``acquire()`` is idempotent: if the address is already here it is only
      announced again. Otherwise it raises VipConflict (and adds nothing)
      when another MAC answers the ARP probe, VipError when the add fails or
      cannot be seen afterwards. Bounded by ``probe_timeout`` plus
      ``arp_count × arp_interval``.
    - ``release()`` is idempotent; returns whether the address was there;
      VipError if it is still there afterwards.
    - ``holds_vip()`` reads the interface; ``holder()`` also probes ARP.
    - All verbs are serialised by a lock; ``close()`` is idempotent.
    """

    def __init__(
        self,
        address: str | ipaddress.IPv4Interface,
        interface: str,
        *,
        arp_count: int,
        arp_interval_ms: int,
        garp: Garp | None = None,
        probe_timeout: float = DEFAULT_PROBE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        iface = ipaddress.ip_interface(address)
        if not isinstance(iface, ipaddress.IPv4Interface):
            raise ValueError(f"VIP {address}: only IPv4 VIPs are supported")
        if arp_count < 1 or arp_interval_ms < 1 or probe_timeout <= 0:
            raise ValueError("arp_count, arp_interval_ms and probe_timeout must be positive")
        self.address = iface
        self.ip = str(iface.ip)
        self.interface = interface
        self.arp_count, self.arp_interval = arp_count, arp_interval_ms / 1000.0
        self.probe_timeout = probe_timeout
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._ipr = IPRoute()
        except (NetlinkError, OSError) as exc:
            raise VipError(f"cannot open netlink: {_netlink_detail(exc)}") from exc
        try:
            self._index = self._lookup()
            # holds_vip() runs every tick: a plain netlink dump, not pyroute2's.
            self._addrs = AddrReader(self._index)
        except (VipError, AddrError) as exc:
            self._ipr.close()
            raise VipError(str(exc)) from exc
        try:
            self._own_garp = garp is None
            self.garp = garp if garp is not None else Garp(interface)
        except ArpError as exc:
            self._addrs.close()
            self._ipr.close()
            raise VipError(str(exc)) from exc

    @classmethod
    def from_config(cls, cfg: VipConfig, garp: Garp | None = None) -> Vip:
        return cls(
            cfg.address,  # type: ignore[arg-type]  # IPv6 is refused by the constructor
            cfg.interface,
            arp_count=cfg.arp_count,
            arp_interval_ms=cfg.arp_interval_ms,
            garp=garp,
            probe_timeout=cfg.arp_probe_ms / 1000.0,
        )

    def close(self) -> None:
        with self._lock:
            self._ipr.close()
            self._addrs.close()
            if self._own_garp:
                self.garp.close()

    def __enter__(self) -> Vip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- netlink, mapped

    def _lookup(self) -> int:
        try:
            found = self._ipr.link_lookup(ifname=self.interface)
        except (NetlinkError, OSError) as exc:
            raise VipError(f"interface {self.interface}: {_netlink_detail(exc)}") from exc
        if not found:
            raise VipError(f"interface {self.interface} does not exist")
        return int(found[0])

    def _present(self) -> bool:
        try:
            return self.ip in self._addrs.addresses()
        except AddrError as exc:
            raise VipError(f"cannot read the addresses of {self.interface}: {exc}") from exc

    def _change(self, verb: str) -> None:
        try:
            self._ipr.addr(
                verb, index=self._index, address=self.ip, prefixlen=self.address.network.prefixlen
            )
        except NetlinkError as exc:
            # Idempotence: adding what is there, removing what is not.
            if (verb, exc.code) in (("add", errno.EEXIST), ("del", errno.EADDRNOTAVAIL)):
                return
            raise VipError(
                f"VIP {self.address}: cannot {verb} on {self.interface}: {_netlink_detail(exc)}"
            ) from exc
        except OSError as exc:
            raise VipError(
                f"VIP {self.address}: cannot {verb} on {self.interface}: {_netlink_detail(exc)}"
            ) from exc

    # -- verbs

    def holds_vip(self) -> bool:
        """True if the address is configured on our interface. Raises VipError."""
        with self._lock:
            return self._present()

    def holder(self, timeout: float | None = None) -> VipHolder:
        """Whether we hold it, and which other MAC (if any) answers ARP for it."""
        with self._lock:
            here = self._present()
        try:
            other = self.garp.probe(self.ip, timeout=timeout or self.probe_timeout)
        except ArpError as exc:
            raise VipError(str(exc)) from exc
        return VipHolder(self.ip, here, other)

    def probe_ahead(self) -> ProbeAhead | None:
        """Start the ARP probe that ``acquire`` will need, on a thread, so that it
        overlaps the steps before it (a promotion's wait_replayed and promote) instead
        of adding its whole listening time after them. None when we hold the VIP."""
        with self._lock:
            if self._present():
                return None
        ahead = ProbeAhead()

        def work() -> None:
            try:
                ahead.other = self.garp.probe(self.ip, timeout=self.probe_timeout)
            except ArpError as exc:
                ahead.error = exc
            finally:
                ahead.done_at = time.monotonic()
                ahead.finished.set()

        threading.Thread(target=work, name="dbha-arp-probe", daemon=True).start()
        return ahead

    def _probe(self, ahead: ProbeAhead | None) -> str | None:
        """The other MAC answering for the VIP: from ``ahead`` when it finished less
        than AHEAD_FRESH ago (waiting for it if it still listens), else probed now."""
        if (
            ahead is not None
            and ahead.finished.wait(self.probe_timeout + AHEAD_FRESH)
            and time.monotonic() - ahead.done_at < AHEAD_FRESH
        ):
            if ahead.error is not None:
                raise VipError(str(ahead.error)) from ahead.error
            return ahead.other
        try:
            return self.garp.probe(self.ip, timeout=self.probe_timeout)
        except ArpError as exc:
            raise VipError(str(exc)) from exc

    def acquire(self, ahead: ProbeAhead | None = None) -> Acquired:
        """Probe (or take the result of ``ahead``), add, verify, announce. See the
        class contract."""
        with self._lock:
            added = False
            if not self._present():
                other = self._probe(ahead)
                if other is not None:
                    raise VipConflict(str(self.address), self.interface, other)
                self._change("add")
                if not self._present():
                    raise VipError(f"VIP {self.address}: added but not on {self.interface}")
                added = True
            # announce() records failed sends instead of raising: the address is
            # ours either way, and clients learn it at their next ARP at the latest.
            # The first round goes out now; the repeats (for a lost frame) go out on
            # a thread, so a promotion is not held up by the spacing between them.
            announcement = self.garp.announce(self.ip, count=1, interval=self.arp_interval)
            if self.arp_count > 1:
                threading.Thread(
                    target=self._repeat_announce, name="dbha-garp", daemon=True
                ).start()
            return Acquired(self.ip, self.interface, added, announcement)

    def _repeat_announce(self) -> None:
        time.sleep(self.arp_interval)
        with self._lock:  # the netlink socket is not shared between threads unguarded
            still_ours = self._present()
        if still_ours:
            self.garp.announce(self.ip, count=self.arp_count - 1, interval=self.arp_interval)

    def release(self) -> bool:
        """Remove the address if present; return whether it was. Raises VipError."""
        with self._lock:
            was = self._present()
            if was:
                self._change("del")
            if self._present():
                raise VipError(f"VIP {self.address}: still on {self.interface} after removal")
            return was
