"""The safety check: run when every heartbeat path is silent, before any failover.

Two questions, asked in parallel and bounded by one deadline:

- *Am I the isolated one?* Reach the configured gateway/witness targets (ICMP
  echo or TCP connect); any one target answering is enough.
- *Is the peer really down?* Probe the peer's database directly at every
  address of the peer, with no credentials: PostgreSQL must answer an
  SSLRequest, MySQL/MariaDB must send its greeting packet.

Each probe yields one :class:`Probe` (what was tried, the :class:`ProbeOutcome`, a
detail, how long it took). :func:`judge` is the pure rule that turns the
evidence into a :class:`Verdict`; :class:`SafetyCheck` is the thin shell that
gathers the evidence. The truth table, in order:

=================================================  ==============================
evidence                                           verdict
=================================================  ==============================
the peer's database answered at any address        ``peer_alive_heartbeat_broken``
a target answered, and at every peer address the   ``peer_dead``
database does not serve (timeout, unreachable,
refused, or connected but no greeting)
no target answered (timeout or unreachable, no     ``i_am_isolated``
local error), and nothing at all answered at any
peer address (timeout or unreachable)
anything else (local probe errors, an answer that  ``unknown``
is not the database protocol, a silent gateway
while the peer's host still answers)
=================================================  ==============================

``peer_dead`` means the peer's *database* serves nowhere; its host may still
be up (``refused`` or ``no_greeting`` in the evidence, e.g. a hung server),
which is why the decision core fences the peer before it promotes. A TCP
target that refuses the connection has answered: the witness host is up.

Side effects on the peer's server, said plainly: PostgreSQL logs nothing for
an SSLRequest answered ``N`` and then closed; with ``ssl = on`` the probe
completes the TLS handshake before closing, so the server logs nothing
either. MySQL/MariaDB count a connection closed after the greeting as an
aborted connect (``Aborted_connects``) and, per source host, towards
``max_connect_errors``: the probe runs only when every path is silent, but
sites with a low ``max_connect_errors`` should raise it.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from dbha.config import Config, SafetyTarget
from dbha.core.model import Verdict

Engine = Literal["postgresql", "mariadb", "mysql"]

# PostgreSQL's SSLRequest: length 8, then the magic request code 1234.5679.
PG_SSL_REQUEST = struct.pack("!ii", 8, 80877103)
# A MySQL/MariaDB greeting is a few hundred bytes; refuse to read more.
MAX_GREETING = 4096
_UNREACHABLE = {
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.EHOSTDOWN,
    errno.EADDRNOTAVAIL,
}


class ProbeOutcome(StrEnum):
    """How one probe ended."""

    ANSWERED = "answered"  # echo reply, TCP connect, or a database protocol answer
    REFUSED = "refused"  # the host answered but nothing serves there (RST, closed at once)
    NO_GREETING = "no_greeting"  # TCP connected, the database said nothing in time (hung)
    BAD_ANSWER = "bad_answer"  # something answered, not in the expected protocol
    TIMEOUT = "timeout"  # nothing came back in time
    UNREACHABLE = "unreachable"  # no route, host unreachable, link down
    ERROR = "error"  # we could not probe (a local failure: permission, resources)


@dataclass(frozen=True)
class Probe:
    """The evidence of one probe: what was tried and how it ended."""

    kind: str  # "icmp", "tcp", "postgresql", "mysql"
    address: str
    port: int | None
    outcome: ProbeOutcome
    detail: str
    seconds: float

    @property
    def target(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return (
            f"{self.kind} {self.address}"
            if self.port is None
            else f"{self.kind} {host}:{self.port}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "kind": self.kind,
            "address": self.address,
            "port": self.port,
            "outcome": self.outcome.value,
            "detail": self.detail,
            "seconds": round(self.seconds, 6),
        }


@dataclass(frozen=True)
class SafetyResult:
    """The verdict, the one-line reason for it, and every piece of evidence."""

    verdict: Verdict
    reason: str
    targets: tuple[Probe, ...]
    peer: tuple[Probe, ...]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "reason": self.reason,
            "targets": [p.as_dict() for p in self.targets],
            "peer": [p.as_dict() for p in self.peer],
            "seconds": round(self.seconds, 6),
        }


# ------------------------------------------------------------------ the rule

_HOST_ANSWERED = {
    ProbeOutcome.ANSWERED,
    ProbeOutcome.REFUSED,
}  # a target that did this is reachable
_SILENT = {ProbeOutcome.TIMEOUT, ProbeOutcome.UNREACHABLE}
_NOT_SERVING = _SILENT | {ProbeOutcome.REFUSED, ProbeOutcome.NO_GREETING}


def _list(probes: Sequence[Probe]) -> str:
    return ", ".join(f"{p.target} {p.outcome.value}" for p in probes) or "none configured"


def judge(targets: Sequence[Probe], peer: Sequence[Probe]) -> tuple[Verdict, str]:
    """The verdict for this evidence, and why (the truth table in the module docstring).

    Pure; never raises. No evidence at all (no targets or no peer address
    probed) is never enough for anything but ``unknown`` or, when the peer's
    database answered, ``peer_alive_heartbeat_broken``.
    """
    alive = [p for p in peer if p.outcome is ProbeOutcome.ANSWERED]
    if alive:
        return (
            Verdict.PEER_ALIVE_HEARTBEAT_BROKEN,
            f"every heartbeat path is silent but the peer's database answers at "
            f"{', '.join(p.target for p in alive)}",
        )
    reached = [p for p in targets if p.outcome in _HOST_ANSWERED]
    targets_silent = bool(targets) and all(p.outcome in _SILENT for p in targets)
    if reached and peer and all(p.outcome in _NOT_SERVING for p in peer):
        return (
            Verdict.PEER_DEAD,
            f"{reached[0].target} answers, and the peer's database serves at no address "
            f"({_list(peer)})",
        )
    if targets_silent and peer and all(p.outcome in _SILENT for p in peer):
        return (
            Verdict.I_AM_ISOLATED,
            f"no gateway or witness answers ({_list(targets)}) and neither does the peer "
            f"({_list(peer)})",
        )
    return (
        Verdict.UNKNOWN,
        f"evidence does not decide: targets {_list(targets)}; peer {_list(peer)}",
    )


# ------------------------------------------------------------------ the probes


class _Failed(Exception):
    """Internal: a probe ended before its answer; carries the outcome."""

    def __init__(self, outcome: ProbeOutcome, detail: str) -> None:
        super().__init__(detail)
        self.outcome, self.detail = outcome, detail


def _classify(exc: OSError, connected: bool) -> _Failed:
    """Map a socket error to an outcome; ``connected`` says whether TCP was up already."""
    what = exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        if connected:
            return _Failed(ProbeOutcome.NO_GREETING, "connected, no answer in time")
        return _Failed(ProbeOutcome.TIMEOUT, "no answer in time")
    if isinstance(exc, ConnectionRefusedError):
        return _Failed(ProbeOutcome.REFUSED, "connection refused")
    if isinstance(exc, ConnectionResetError | BrokenPipeError) and connected:
        return _Failed(ProbeOutcome.REFUSED, "connection reset before an answer")
    if exc.errno in _UNREACHABLE:
        return _Failed(ProbeOutcome.UNREACHABLE, what)
    return _Failed(ProbeOutcome.ERROR, what)


def _remaining(deadline: float, clock: Callable[[], float]) -> float:
    left = deadline - clock()
    if left <= 0:
        raise _Failed(ProbeOutcome.TIMEOUT, "no time left")
    return left


def _connect(address: str, port: int, deadline: float, clock: Callable[[], float]) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(_remaining(deadline, clock))
        sock.connect((address, port))
    except OSError as exc:
        sock.close()
        raise _classify(exc, connected=False) from None
    except BaseException:
        sock.close()
        raise
    return sock


def _recv_exact(sock: socket.socket, n: int, deadline: float, clock: Callable[[], float]) -> bytes:
    """Up to ``n`` bytes; fewer only when the server closed the connection."""
    data = b""
    while len(data) < n:
        sock.settimeout(_remaining(deadline, clock))
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _probe_tcp(address: str, port: int, deadline: float, clock: Callable[[], float]) -> str:
    _connect(address, port, deadline, clock).close()
    return "connected"


def _probe_postgresql(address: str, port: int, deadline: float, clock: Callable[[], float]) -> str:
    sock = _connect(address, port, deadline, clock)
    try:
        try:
            sock.settimeout(_remaining(deadline, clock))
            sock.sendall(PG_SSL_REQUEST)
            answer = _recv_exact(sock, 1, deadline, clock)
        except _Failed as failed:
            if failed.outcome is ProbeOutcome.TIMEOUT:
                raise _Failed(ProbeOutcome.NO_GREETING, "connected, no answer in time") from None
            raise
        except OSError as exc:
            raise _classify(exc, connected=True) from None
        if answer == b"":
            raise _Failed(ProbeOutcome.REFUSED, "connection closed without an answer")
        if answer == b"N":
            return "SSLRequest answered N (PostgreSQL, no TLS)"
        if answer == b"E":
            return "SSLRequest answered with an error message (PostgreSQL)"
        if answer == b"S":
            return "SSLRequest answered S (PostgreSQL, TLS)" + _finish_tls(sock, deadline, clock)
        raise _Failed(ProbeOutcome.BAD_ANSWER, f"SSLRequest answered {answer!r}: not PostgreSQL")
    finally:
        sock.close()


def _finish_tls(sock: socket.socket, deadline: float, clock: Callable[[], float]) -> str:
    # Completing the handshake lets the server see a clean close instead of a
    # broken handshake it would log. Its certificate is irrelevant: we only
    # learn that a PostgreSQL server answers, and send nothing through it.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        sock.settimeout(max(0.001, deadline - clock()))
        with ctx.wrap_socket(sock, do_handshake_on_connect=True):
            return ""
    except (OSError, ValueError) as exc:
        return f"; TLS handshake not completed: {exc}"[:200]


def _probe_mysql(address: str, port: int, deadline: float, clock: Callable[[], float]) -> str:
    sock = _connect(address, port, deadline, clock)
    try:
        try:
            header = _recv_exact(sock, 4, deadline, clock)
            if len(header) < 4:
                raise _Failed(ProbeOutcome.REFUSED, "connection closed without a greeting")
            length = int.from_bytes(header[:3], "little")
            payload = _recv_exact(sock, min(length, MAX_GREETING), deadline, clock)
        except _Failed as failed:
            if failed.outcome is ProbeOutcome.TIMEOUT:
                raise _Failed(ProbeOutcome.NO_GREETING, "connected, no greeting in time") from None
            raise
        except OSError as exc:
            raise _classify(exc, connected=True) from None
        outcome, detail = describe_greeting(header, payload)
        if outcome is not ProbeOutcome.ANSWERED:
            raise _Failed(outcome, detail)
        return detail
    finally:
        sock.close()


def describe_greeting(header: bytes, payload: bytes) -> tuple[ProbeOutcome, str]:
    """Judge a MySQL/MariaDB first packet: ANSWERED or BAD_ANSWER, with a detail. Pure.

    Protocol 10 (a greeting, with the server version) and an error packet
    (0xff: the server is up but refuses this client, e.g. too many
    connections or a blocked host) both prove a live server.
    """
    if len(header) != 4 or header[3] != 0 or not payload:
        return ProbeOutcome.BAD_ANSWER, "not a MySQL/MariaDB first packet"
    if payload[0] == 10:
        version = payload[1:].split(b"\0", 1)[0][:64]
        return (
            ProbeOutcome.ANSWERED,
            f"greeting, protocol 10, server {version.decode('ascii', 'replace')}",
        )
    if payload[0] == 0xFF and len(payload) >= 3:
        code = int.from_bytes(payload[1:3], "little")
        message = payload[3:].decode("utf-8", "replace")[:120]
        return ProbeOutcome.ANSWERED, f"error packet {code}: {message}"
    return ProbeOutcome.BAD_ANSWER, f"first packet starts with 0x{payload[0]:02x}"


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _icmp_socket(v6: bool) -> tuple[socket.socket, bool]:
    """An ICMP socket: an unprivileged "ping" socket if allowed, else a raw one."""
    family = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    try:
        return socket.socket(family, socket.SOCK_DGRAM, proto), False
    except PermissionError:  # net.ipv4.ping_group_range excludes us: needs CAP_NET_RAW
        return socket.socket(family, socket.SOCK_RAW, proto), True


def _probe_icmp(address: str, _port: int, deadline: float, clock: Callable[[], float]) -> str:
    v6 = ipaddress.ip_address(address).version == 6
    request, reply = (128, 129) if v6 else (8, 0)
    token = os.urandom(16)
    ident = int.from_bytes(os.urandom(2), "big")
    body = struct.pack("!BBHHH", request, 0, 0, ident, 1) + token
    packet = body[:2] + struct.pack("!H", _checksum(body)) + body[4:]
    try:
        sock, raw = _icmp_socket(v6)
    except OSError as exc:
        raise _classify(exc, connected=False) from None
    with sock:
        try:
            sock.settimeout(_remaining(deadline, clock))
            sock.sendto(packet, (address, 0))
            while True:
                sock.settimeout(_remaining(deadline, clock))
                data = sock.recv(2048)
                if raw and not v6 and data and data[0] >> 4 == 4:
                    data = data[(data[0] & 0x0F) * 4 :]  # raw IPv4 sockets see the IP header
                # The kernel rewrites the id on ping sockets; the random token is ours alone.
                if len(data) >= 8 + len(token) and data[0] == reply and data[8:24] == token:
                    return "echo reply"
        except _Failed:
            raise
        except OSError as exc:
            raise _classify(exc, connected=False) from None


_PROBES: dict[str, Callable[[str, int, float, Callable[[], float]], str]] = {
    "icmp": _probe_icmp,
    "tcp": _probe_tcp,
    "postgresql": _probe_postgresql,
    "mysql": _probe_mysql,
}


def run_probe(
    kind: str,
    address: str,
    port: int | None,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
) -> Probe:
    """Run one probe until ``deadline`` (on ``clock``) at the latest. Never raises."""
    start = clock()
    try:
        detail = _PROBES[kind](address, port or 0, deadline, clock)
        outcome = ProbeOutcome.ANSWERED
    except _Failed as failed:
        outcome, detail = failed.outcome, failed.detail
    except Exception as exc:  # a bug must become evidence, not a crash of the check
        outcome, detail = ProbeOutcome.ERROR, f"{type(exc).__name__}: {exc}"[:200]
    return Probe(kind, address, port, outcome, detail, clock() - start)


# ------------------------------------------------------------------ the shell


class SafetyCheck:
    """Gathers the evidence in parallel and judges it.

    Contract: ``run()`` returns a :class:`SafetyResult` within ``timeout``
    seconds plus a few milliseconds of thread bookkeeping, whatever the
    network does; it never raises. It is safe to call from any thread, and
    calls do not share state. The constructor validates its arguments
    (ValueError) and opens nothing.
    """

    def __init__(
        self,
        *,
        targets: Sequence[SafetyTarget],
        peer_addresses: Sequence[str],
        engine: Engine,
        db_port: int,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < timeout <= 60:
            raise ValueError(f"safety timeout must be in (0, 60] seconds, not {timeout!r}")
        if engine not in ("postgresql", "mariadb", "mysql"):
            raise ValueError(f"unknown engine {engine!r}")
        if not 1 <= db_port <= 65535:
            raise ValueError(f"database port {db_port} out of range")
        for t in targets:
            if t.kind not in ("icmp", "tcp") or (t.kind == "tcp" and t.port is None):
                raise ValueError(f"bad safety target {t}")
        self.peer_addresses = tuple(str(ipaddress.ip_address(a)) for a in peer_addresses)
        self.targets = tuple(targets)
        self.engine: Engine = engine
        self.db_kind = "postgresql" if engine == "postgresql" else "mysql"
        self.db_port = db_port
        self.timeout = timeout
        self._clock = clock

    @classmethod
    def from_config(cls, cfg: Config) -> SafetyCheck:
        return cls(
            targets=cfg.safety.targets,
            peer_addresses=[str(a) for a in cfg.peer.addresses],
            engine=cfg.database.engine,
            db_port=cfg.database.port,
            timeout=cfg.safety.timeout_ms / 1000.0,
        )

    def run(self) -> SafetyResult:
        """Probe every target and every peer address at once; judge; never raises."""
        start = self._clock()
        deadline = start + self.timeout
        jobs: list[tuple[str, str, int | None]] = [
            (t.kind, str(t.host), t.port) for t in self.targets
        ]
        jobs += [(self.db_kind, a, self.db_port) for a in self.peer_addresses]
        results: list[Probe | None] = [None] * len(jobs)

        def work(i: int) -> None:
            kind, address, port = jobs[i]
            results[i] = run_probe(kind, address, port, deadline, self._clock)

        threads = [
            threading.Thread(target=work, args=(i,), name=f"dbha-safety-{i}", daemon=True)
            for i in range(len(jobs))
        ]
        for t in threads:
            t.start()
        # Every probe sets its socket timeouts from the same deadline; the grace
        # only covers thread scheduling on a loaded host.
        grace = 0.05
        for t in threads:
            t.join(max(0.0, deadline + grace - self._clock()))
        probes = tuple(
            r
            if r is not None
            else Probe(
                kind, address, port, ProbeOutcome.TIMEOUT, "probe did not finish in time", 0.0
            )
            for r, (kind, address, port) in zip(results, jobs, strict=True)
        )
        n = len(self.targets)
        verdict, reason = judge(probes[:n], probes[n:])
        return SafetyResult(verdict, reason, probes[:n], probes[n:], self._clock() - start)
