"""End this host's TCP connections to one address and port (``ss -K``).

Used while a replica stops receiving from an upstream that is dead: the server's
own attempt to reach it would otherwise hold the stop for seconds. The kernel
ends the sockets (SOCK_DESTROY: CONFIG_INET_DIAG_DESTROY, and CAP_NET_ADMIN);
where it cannot, nothing happens and the caller simply waits longer. Bounded
in time; never raises.
"""

from __future__ import annotations

import ipaddress
import logging

from dbha import proc
from dbha.errors import CommandFailed, CommandTimeout

log = logging.getLogger(__name__)

SS = "ss"


def end_connections(host: str, port: int, *, timeout: float) -> bool:
    """End every TCP socket of this host whose peer is ``host``:``port`` (an IP
    address; a name is left alone). True when ``ss`` ran and succeeded."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        log.debug("not ending connections to %s: not an IP address", host)
        return False
    if not 0 < port < 65536:
        return False
    family = "-4" if address.version == 4 else "-6"
    dst = str(address) if address.version == 4 else f"[{address}]"
    try:
        proc.run([SS, "-K", "-t", family, "dst", dst, "dport", "=", str(port)], timeout=timeout)
    except (CommandFailed, CommandTimeout) as exc:
        log.debug("ss -K to %s:%d: %s", host, port, exc)
        return False
    return True
