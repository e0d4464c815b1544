"""The lab's fixed shape: hosts, links, addresses and services.

Every address is inside 198.18.0.0/15 (reserved for benchmarking) and lives
only inside the lab's own network namespaces, so two labs with different
prefixes can use the same addresses without seeing each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LAB_NET = "198.18.0.0/15"
LAN_PREFIXLEN = 24
GATEWAY = "198.18.0.1"
SWITCH = "sw"


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    lan: str  # address on the LAN (eth0)
    hb: str | None  # address on the private heartbeat link (hb0), if any


@dataclass(frozen=True, slots=True)
class Path:
    """A network path a host is attached to: its interface, and the switch port."""

    name: str
    interface: str  # inside the host namespace
    bridge: str  # inside the switch namespace
    subnet_prefix: str  # first three octets

    def port(self, host: str) -> str:
        """Name of the switch-side port of ``host`` on this path (<= 15 chars)."""
        return f"{self.name}-{host}"


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    engine: str  # "postgresql" | "mariadb"
    port: int
    vip: str
    heartbeat_port: int
    primary: str  # host that is primary when the lab is built
    replica: str
    http_port: int = 8008  # each supervisor's HTTP door, on its LAN address
    database: str = "app"
    app_user: str = "app"


HOSTS: dict[str, Host] = {
    "a": Host("a", "198.18.0.11", "198.18.1.1"),
    "b": Host("b", "198.18.0.12", "198.18.1.2"),
    "c": Host("c", "198.18.0.20", None),
}
DB_HOSTS = ("a", "b")

PATHS: dict[str, Path] = {
    "lan": Path("lan", "eth0", "br0", "198.18.0"),
    "hb": Path("hb", "hb0", "brhb", "198.18.1"),
}

SERVICES: dict[str, Service] = {
    "pg": Service("pg", "postgresql", 5432, "198.18.0.100", 5405, primary="a", replica="b"),
    "mariadb": Service(
        "mariadb", "mariadb", 3306, "198.18.0.101", 5406, primary="b", replica="a", http_port=8009
    ),
}

PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
DEFAULT_PREFIX = "dbha"


def host_paths(host: str) -> list[Path]:
    """The paths ``host`` is attached to (the client has only the LAN)."""
    return [p for p in PATHS.values() if p.name == "lan" or HOSTS[host].hb is not None]


def host_address(host: str, path: str) -> str:
    h = HOSTS[host]
    addr = h.lan if path == "lan" else h.hb
    if addr is None:
        raise KeyError(f"host {host} is not on path {path}")
    return addr


def check_prefix(prefix: str) -> str:
    if not PREFIX_RE.match(prefix):
        raise ValueError(
            f"lab prefix {prefix!r}: must be 1-10 lowercase letters or digits, "
            "starting with a letter"
        )
    return prefix


# Timing profiles of the supervisors' configs (``dbha lab up --profile``): table ->
# keys that differ from dbha's defaults. "fast" is the documented fast profile
# (docs/config.md): detection in 0.2 s, a 0.4 s self-fence deadline; it asks for a
# quiet LAN and hosts that are never starved for a few hundred milliseconds.
PROFILES: dict[str, dict[str, dict[str, int]]] = {
    "default": {},
    "fast": {
        "heartbeat": {"interval_ms": 50, "misses": 4},
        "safety": {"timeout_ms": 150},
        "fence": {"self_fence_deadline_ms": 400},
        "vip": {"arp_probe_ms": 50},
    },
}
