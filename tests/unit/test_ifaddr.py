"""The netlink address reader behind ``Vip.holds_vip``: its parser on made-up
dumps (pure), and the reader against this machine's kernel, read-only, compared
with pyroute2's answer for the loopback interface."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import struct
import subprocess
import sys

import pytest
from pyroute2 import IPRoute

from dbha.host.ifaddr import (
    AF_INET,
    IFA_ADDRESS,
    IFADDRMSG,
    NLM_F_DUMP_INTR,
    NLM_F_MULTI,
    NLMSG,
    NLMSG_DONE,
    NLMSG_ERROR,
    RTA,
    RTM_NEWADDR,
    AddrError,
    AddrReader,
    parse_dump,
)

SEQ = 7


def rta(kind: int, payload: bytes) -> bytes:
    raw = RTA.pack(RTA.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def newaddr(
    index: int, address: str, family: int = AF_INET, seq: int = SEQ, flags: int = 0
) -> bytes:
    body = IFADDRMSG.pack(family, 24, 0, 0, index)
    body += rta(8, b"eth0\0")  # IFA_LABEL first: the parser must walk past it
    body += rta(IFA_ADDRESS, socket.inet_aton(address))
    return NLMSG.pack(NLMSG.size + len(body), RTM_NEWADDR, NLM_F_MULTI | flags, seq, 0) + body


def done(seq: int = SEQ, flags: int = 0) -> bytes:
    body = struct.pack("=i", 0)
    return NLMSG.pack(NLMSG.size + len(body), NLMSG_DONE, NLM_F_MULTI | flags, seq, 0) + body


def error(code: int, seq: int = SEQ) -> bytes:
    body = struct.pack("=i", code) + b"\0" * 16
    return NLMSG.pack(NLMSG.size + len(body), NLMSG_ERROR, 0, seq, 0) + body


def test_addresses_of_the_interface_asked_about_only() -> None:
    data = newaddr(2, "198.18.0.11") + newaddr(3, "198.18.1.1") + newaddr(2, "198.18.0.100")
    chunk = parse_dump(data, SEQ, 2)
    assert chunk.addresses == ("198.18.0.11", "198.18.0.100") and not chunk.done


def test_done_ends_the_dump_and_interrupted_is_reported() -> None:
    assert parse_dump(newaddr(2, "10.0.0.1") + done(), SEQ, 2).done
    chunk = parse_dump(newaddr(2, "10.0.0.1", flags=NLM_F_DUMP_INTR) + done(), SEQ, 2)
    assert chunk.interrupted and chunk.done


def test_messages_of_an_older_request_are_skipped() -> None:
    data = newaddr(2, "10.9.9.9", seq=SEQ - 1) + done(seq=SEQ - 1) + newaddr(2, "10.0.0.1")
    chunk = parse_dump(data, SEQ, 2)
    assert chunk.addresses == ("10.0.0.1",) and not chunk.done


def test_an_error_message_is_an_addr_error() -> None:
    with pytest.raises(AddrError, match="Operation not permitted"):
        parse_dump(error(-1), SEQ, 2)
    assert parse_dump(error(0), SEQ, 2).done  # an acknowledgement


def test_other_families_are_ignored() -> None:
    body = IFADDRMSG.pack(10, 64, 0, 0, 2) + rta(IFA_ADDRESS, b"\xfe\x80" + b"\0" * 14)
    msg = NLMSG.pack(NLMSG.size + len(body), RTM_NEWADDR, NLM_F_MULTI, SEQ, 0) + body
    assert parse_dump(msg, SEQ, 2).addresses == ()


@pytest.mark.parametrize(
    "data",
    [
        newaddr(2, "10.0.0.1")[:-3],  # cut inside the address
        NLMSG.pack(200, RTM_NEWADDR, 0, SEQ, 0) + b"\0" * 20,  # longer than the datagram
        NLMSG.pack(4, RTM_NEWADDR, 0, SEQ, 0),  # shorter than its own header
        NLMSG.pack(NLMSG.size + 2, RTM_NEWADDR, 0, SEQ, 0) + b"\0\0",  # no ifaddrmsg
    ],
)
def test_malformed_dumps_are_addr_errors(data: bytes) -> None:
    with pytest.raises(AddrError, match="malformed"):
        parse_dump(data, SEQ, 2)


def test_the_parser_never_raises_anything_else() -> None:
    rng = random.Random(42)
    good = newaddr(2, "10.0.0.1") + newaddr(2, "10.0.0.2") + done()
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = data[: rng.randint(0, len(data))]
        with contextlib.suppress(AddrError):  # anything else fails the test
            parse_dump(bytes(data), SEQ, 2)


def test_the_kernel_agrees_with_pyroute2_on_loopback() -> None:
    """Read-only: the loopback interface's IPv4 addresses, both ways."""
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname="lo")[0]
        expected = {a.get("IFA_ADDRESS") for a in ipr.get_addr(index=index, family=2)}
    reader = AddrReader(index)
    try:
        got = reader.addresses()
        assert set(got) == expected and "127.0.0.1" in got
        assert reader.addresses() == got  # the socket is used again
    finally:
        reader.close()
    nobody = AddrReader(2**31 - 1)
    try:
        assert nobody.addresses() == ()
    finally:
        nobody.close()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
def test_a_change_is_seen_at_once_not_after_the_cache_ends() -> None:
    """In a private network namespace (nothing outside it changes): an address
    added or removed is in the very next answer, though answers are cached."""
    script = (
        "import subprocess, socket\n"
        "from dbha.host import ifaddr\n"
        "ifaddr.REFRESH = 3600.0\n"
        "r = ifaddr.AddrReader(socket.if_nametoindex('lo'))\n"
        "ip = lambda *a: subprocess.run(['ip', *a], check=True, timeout=10)\n"
        "before = r.addresses()\n"
        "again = r.addresses()\n"
        "ip('addr', 'add', '198.18.255.1/32', 'dev', 'lo')\n"
        "added = r.addresses()\n"
        "ip('addr', 'del', '198.18.255.1/32', 'dev', 'lo')\n"
        "removed = r.addresses()\n"
        "print(before, again, added, removed, sep='|')\n"
    )
    out = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    before, again, added, removed = out.split("|")
    assert before == again
    assert "198.18.255.1" in added and "198.18.255.1" not in before
    assert "198.18.255.1" not in removed
