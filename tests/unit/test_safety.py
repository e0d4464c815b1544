"""The safety check: the verdict table (pure), then the probes against loopback servers.

Loopback servers stand in for the peer's database: a listener that speaks the
first bytes of each protocol, one that accepts and stays silent (a hung
server), and a closed port. Nothing here leaves 127.0.0.0/8.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest

from dbha.config import SafetyTarget
from dbha.core.model import Verdict
from dbha.host.safety import (
    PG_SSL_REQUEST,
    Probe,
    ProbeOutcome,
    SafetyCheck,
    describe_greeting,
    judge,
    run_probe,
)

O = ProbeOutcome  # noqa: E741 - short, for the table


def gw(*outcomes: ProbeOutcome) -> list[Probe]:
    return [Probe("icmp", f"198.18.0.{i + 1}", None, o, "", 0.0) for i, o in enumerate(outcomes)]


def peer(*outcomes: ProbeOutcome) -> list[Probe]:
    return [Probe("postgresql", f"198.18.{i}.2", 5432, o, "", 0.0) for i, o in enumerate(outcomes)]


# ------------------------------------------------------------------ the table

TABLE: list[tuple[str, list[Probe], list[Probe], Verdict]] = [
    # the peer's database answers: never a failover, whatever the gateway says
    ("db answers, gw ok", gw(O.ANSWERED), peer(O.ANSWERED), Verdict.PEER_ALIVE_HEARTBEAT_BROKEN),
    ("db answers on one address", gw(O.ANSWERED), peer(O.TIMEOUT, O.ANSWERED),
     Verdict.PEER_ALIVE_HEARTBEAT_BROKEN),
    ("db answers, gw silent", gw(O.TIMEOUT), peer(O.ANSWERED), Verdict.PEER_ALIVE_HEARTBEAT_BROKEN),
    ("db answers, gw error", gw(O.ERROR), peer(O.ANSWERED), Verdict.PEER_ALIVE_HEARTBEAT_BROKEN),
    # gateway reached, the database serves nowhere
    ("all silent", gw(O.ANSWERED), peer(O.TIMEOUT, O.UNREACHABLE), Verdict.PEER_DEAD),
    ("refused", gw(O.ANSWERED), peer(O.REFUSED, O.TIMEOUT), Verdict.PEER_DEAD),
    ("hung server", gw(O.ANSWERED), peer(O.NO_GREETING, O.NO_GREETING), Verdict.PEER_DEAD),
    ("one target is enough", gw(O.TIMEOUT, O.ANSWERED), peer(O.TIMEOUT), Verdict.PEER_DEAD),
    ("tcp target refusing is up", [Probe("tcp", "198.18.0.1", 22, O.REFUSED, "", 0.0)],
     peer(O.TIMEOUT), Verdict.PEER_DEAD),
    ("target error beside a reached one", gw(O.ERROR, O.ANSWERED), peer(O.TIMEOUT),
     Verdict.PEER_DEAD),
    # nothing answers at all
    ("isolated", gw(O.TIMEOUT), peer(O.UNREACHABLE, O.TIMEOUT), Verdict.I_AM_ISOLATED),
    ("isolated, all targets", gw(O.UNREACHABLE, O.TIMEOUT), peer(O.UNREACHABLE),
     Verdict.I_AM_ISOLATED),
    # anything else: unknown
    ("gw silent, peer host answers", gw(O.TIMEOUT), peer(O.REFUSED), Verdict.UNKNOWN),
    ("gw silent, peer hung", gw(O.TIMEOUT), peer(O.NO_GREETING), Verdict.UNKNOWN),
    ("gw error, peer silent", gw(O.ERROR), peer(O.TIMEOUT), Verdict.UNKNOWN),
    ("gw error and silence", gw(O.ERROR, O.TIMEOUT), peer(O.TIMEOUT), Verdict.UNKNOWN),
    ("not a database", gw(O.ANSWERED), peer(O.BAD_ANSWER), Verdict.UNKNOWN),
    ("peer probe error", gw(O.ANSWERED), peer(O.TIMEOUT, O.ERROR), Verdict.UNKNOWN),
    ("no peer address", gw(O.ANSWERED), [], Verdict.UNKNOWN),
    ("no target", [], peer(O.TIMEOUT), Verdict.UNKNOWN),
    ("nothing", [], [], Verdict.UNKNOWN),
]  # fmt: skip


@pytest.mark.parametrize(("targets", "peers", "verdict"), [t[1:] for t in TABLE],
                         ids=[t[0] for t in TABLE])  # fmt: skip
def test_verdict_table(targets: list[Probe], peers: list[Probe], verdict: Verdict) -> None:
    got, reason = judge(targets, peers)
    assert got is verdict
    assert reason


def test_the_reason_names_the_evidence() -> None:
    _, reason = judge(gw(O.ANSWERED), peer(O.ANSWERED, O.TIMEOUT))
    assert "postgresql 198.18.0.2:5432" in reason
    _, reason = judge(gw(O.ANSWERED), peer(O.REFUSED))
    assert "icmp 198.18.0.1" in reason and "refused" in reason


# ------------------------------------------------------------------ greeting parser


@pytest.mark.parametrize(
    ("header", "payload", "outcome", "word"),
    [
        (b"\x4a\0\0\0", b"\x0a10.11.6-MariaDB\0rest", O.ANSWERED, "10.11.6-MariaDB"),
        (b"\x20\0\0\0", b"\xff\x69\x04Host is blocked", O.ANSWERED, "1129"),
        (b"\x05\0\0\0", b"\x09abcd", O.BAD_ANSWER, "0x09"),
        (b"\x05\0\0\x01", b"\x0a5.7\0", O.BAD_ANSWER, "not"),
        (b"HTTP", b"/1.1 400", O.BAD_ANSWER, ""),
        (b"\0\0\0\0", b"", O.BAD_ANSWER, ""),
        (b"\x01", b"\x0a", O.BAD_ANSWER, ""),
    ],
)
def test_greeting_parser_never_raises(
    header: bytes, payload: bytes, outcome: ProbeOutcome, word: str
) -> None:
    got, detail = describe_greeting(header, payload)
    assert got is outcome and word in detail


# ------------------------------------------------------------------ probes on loopback


def serve(handler: Callable[[socket.socket], None]) -> Iterator[int]:
    """A loopback TCP server running ``handler`` on each connection; yields its port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.05)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            conn.settimeout(2.0)
            with contextlib.suppress(OSError):
                handler(conn)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        thread.join(2.0)
        srv.close()
        for c in conns:
            c.close()


def _pg(conn: socket.socket) -> None:
    if conn.recv(8) == PG_SSL_REQUEST:
        conn.sendall(b"N")


def _maria(conn: socket.socket) -> None:
    payload = b"\x0a5.5.5-10.11.6-MariaDB\0" + b"\0" * 40
    conn.sendall(len(payload).to_bytes(3, "little") + b"\0" + payload)


def _silent(conn: socket.socket) -> None:
    pass  # accepted by the kernel, never a byte back (a hung server)


def _http(conn: socket.socket) -> None:
    conn.recv(8)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")


@pytest.fixture
def pg_port() -> Iterator[int]:
    yield from serve(_pg)


@pytest.fixture
def maria_port() -> Iterator[int]:
    yield from serve(_maria)


@pytest.fixture
def silent_port() -> Iterator[int]:
    yield from serve(_silent)


@pytest.fixture
def http_port() -> Iterator[int]:
    yield from serve(_http)


@pytest.fixture
def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()  # nothing listens there now
    return port


def probe(kind: str, port: int | None, timeout: float = 1.0) -> Probe:
    import time

    return run_probe(kind, "127.0.0.1", port, time.monotonic() + timeout)


def test_postgresql_probe(pg_port: int, maria_port: int, http_port: int) -> None:
    assert probe("postgresql", pg_port).outcome is O.ANSWERED
    assert probe("postgresql", http_port).outcome is O.BAD_ANSWER


def test_mysql_probe(maria_port: int, pg_port: int) -> None:
    p = probe("mysql", maria_port)
    assert p.outcome is O.ANSWERED and "MariaDB" in p.detail
    # PostgreSQL waits for the client to speak first: to a MySQL probe it is silent.
    assert probe("mysql", pg_port, timeout=0.2).outcome is O.NO_GREETING


def test_a_hung_server_is_no_greeting_within_the_bound(silent_port: int) -> None:
    for kind in ("postgresql", "mysql"):
        p = probe(kind, silent_port, timeout=0.2)
        assert p.outcome is O.NO_GREETING, p
    assert probe("tcp", silent_port).outcome is O.ANSWERED  # a TCP target only needs the connect


def test_a_closed_port_is_refused(closed_port: int) -> None:
    for kind in ("tcp", "postgresql", "mysql"):
        assert probe(kind, closed_port).outcome is O.REFUSED


def test_icmp_echo_on_loopback() -> None:
    p = probe("icmp", None)
    if p.outcome is O.ERROR:
        pytest.skip(f"no ICMP socket here: {p.detail}")
    assert p.outcome is O.ANSWERED, p


def test_no_time_left_is_a_timeout(pg_port: int) -> None:
    assert probe("postgresql", pg_port, timeout=-1).outcome is O.TIMEOUT


def test_check_runs_everything_and_judges(pg_port: int, closed_port: int) -> None:
    """The whole check on loopback: a TCP witness that answers, the peer at two
    addresses (one live PostgreSQL, one closed port): the peer is alive."""
    lo = ipaddress.ip_address("127.0.0.1")
    targets = [SafetyTarget("tcp", lo, pg_port)]
    check = SafetyCheck(
        targets=targets,
        peer_addresses=["127.0.0.1"],
        engine="postgresql",
        db_port=pg_port,
        timeout=1.0,
    )
    result = check.run()
    assert result.verdict is Verdict.PEER_ALIVE_HEARTBEAT_BROKEN
    assert [p.target for p in result.targets] == [f"tcp 127.0.0.1:{pg_port}"]
    assert result.as_dict()["peer"][0]["outcome"] == "answered"
    dead = SafetyCheck(
        targets=targets,
        peer_addresses=["127.0.0.1"],
        engine="mariadb",
        db_port=closed_port,
        timeout=1.0,
    ).run()
    assert dead.verdict is Verdict.PEER_DEAD
    assert dead.peer[0].outcome is O.REFUSED


def test_check_rejects_bad_arguments() -> None:
    lo = ipaddress.ip_address("127.0.0.1")
    ok = {"targets": [], "peer_addresses": ["127.0.0.1"], "engine": "postgresql", "db_port": 5432}
    with pytest.raises(ValueError):
        SafetyCheck(**ok, timeout=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SafetyCheck(**{**ok, "engine": "oracle"}, timeout=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SafetyCheck(**{**ok, "peer_addresses": ["nohost"]}, timeout=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SafetyCheck(
            targets=[SafetyTarget("tcp", lo, None)],
            peer_addresses=[],
            engine="mysql",
            db_port=3306,
            timeout=1,
        )


def test_ssl_request_is_the_documented_bytes() -> None:
    assert struct.unpack("!ii", PG_SSL_REQUEST) == (8, 1234 << 16 | 5679)
