"""The lab's pure parts: its address plan, prefixes, and the netem spec parser."""

from __future__ import annotations

import ipaddress

import pytest

from dbha.lab import topology as topo
from dbha.lab.netem import Spec, parse_spec

LAB_NET = ipaddress.ip_network(topo.LAB_NET)


def test_every_planned_address_is_in_the_benchmark_range() -> None:
    addrs = [topo.GATEWAY] + [s.vip for s in topo.SERVICES.values()]
    for h in topo.HOSTS.values():
        addrs += [a for a in (h.lan, h.hb) if a]
    assert len(addrs) == len(set(addrs)), "an address is planned twice"
    for a in addrs:
        assert ipaddress.ip_address(a) in LAB_NET, a


def test_each_host_is_primary_of_one_service_mutual_standby() -> None:
    primaries = sorted(s.primary for s in topo.SERVICES.values())
    assert primaries == ["a", "b"]
    for s in topo.SERVICES.values():
        assert {s.primary, s.replica} == set(topo.DB_HOSTS)


@pytest.mark.parametrize(
    ("prefix", "ok"),
    [
        ("dbha", True),
        ("t12345", True),
        ("a", True),
        ("abcdefghij", True),
        ("abcdefghijk", False),
        ("1lab", False),
        ("Lab", False),
        ("my-lab", False),
        ("", False),
    ],
)
def test_prefix_rule(prefix: str, ok: bool) -> None:
    if ok:
        assert topo.check_prefix(prefix) == prefix
    else:
        with pytest.raises(ValueError, match="lab prefix"):
            topo.check_prefix(prefix)


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("loss 30%", Spec(loss=0.3)),
        ("loss 30% delay 100ms 100ms", Spec(loss=0.3, delay=0.1, jitter=0.1)),
        ("delay 250us", Spec(delay=0.00025)),
        ("delay 1s duplicate 5%", Spec(delay=1.0, duplicate=0.05)),
        ("loss 100%", Spec(loss=1.0)),
    ],
)
def test_netem_spec_is_read_like_netem(text: str, spec: Spec) -> None:
    assert parse_spec(text) == spec


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty"),
        ("loss", "cannot read 'loss'"),
        ("loss lots", "netem loss 'lots'"),
        ("loss 130%", "netem loss '130%'"),
        ("delay fast", "netem delay 'fast'"),
        ("rate 1mbit", "cannot read 'rate'"),
        ("delay 20s", "at most 10s"),
    ],
)
def test_netem_spec_errors_name_the_word(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_spec(text)
