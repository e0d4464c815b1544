"""The lab's life cycle: up is idempotent and repairs, labs with two prefixes do not
disturb each other, and down leaves nothing behind, even after a half-made up."""

from __future__ import annotations

import signal
import subprocess

from dbha.lab import net, procs
from dbha.lab.core import Lab
from dbha.lab.layout import make_dir
from tests.lab.helpers import dbha, lab_json, ping


def _server_pids(lab: Lab) -> dict[str, int | None]:
    return {f"{s}/{h}": lab.node(s, h).pid() for s in ("pg", "mariadb") for h in ("a", "b")}


def test_up_twice_changes_nothing_and_repairs_what_is_missing(healthy_lab: Lab) -> None:
    before = _server_pids(healthy_lab)
    dbha("lab", "up", "--prefix", healthy_lab.prefix)
    assert _server_pids(healthy_lab) == before  # nothing restarted
    # Break it: the client host vanishes and the PostgreSQL replica dies.
    subprocess.run(
        ["ip", "netns", "del", net.ns_name(healthy_lab.prefix, "c")], check=True, timeout=10
    )
    healthy_lab.node("pg", "b").signal(signal.SIGKILL)
    dbha("lab", "up", "--prefix", healthy_lab.prefix)
    st = lab_json(healthy_lab.prefix)
    assert st["_exit"] == 0, st["problems"]
    assert ping(healthy_lab, "c", "198.18.0.11").returncode == 0


def test_two_labs_do_not_disturb_each_other_and_down_leaves_nothing(healthy_lab: Lab) -> None:
    other = Lab(healthy_lab.prefix + "x")
    try:
        other.up(install=False, supervisors=False)
        assert other.status()["healthy"]
        pids = [p for h in net.all_hosts() for p in net.ns_pids(other.prefix, h)]
        assert pids
        # The same addresses live in both labs; a death in one is not seen in the other.
        other.kill_host("a")
        assert lab_json(healthy_lab.prefix)["healthy"] is True
        assert lab_json(other.prefix)["healthy"] is False
    finally:
        dbha("lab", "down", "--prefix", other.prefix)
    assert net.lab_namespaces(other.prefix) == []
    assert not other.dir.exists()
    assert not [p for p in pids if procs.alive(p)]
    assert lab_json(healthy_lab.prefix)["healthy"] is True


def test_down_cleans_up_after_a_half_made_up(lab: Lab) -> None:
    """An up that died after the network and a data directory: down removes all of it."""
    half = Lab(lab.prefix + "h")
    net.build(half.prefix)
    make_dir(half.layout.node("a", "pg"), "postgres")
    assert len(net.lab_namespaces(half.prefix)) == 4
    half.down()
    half.down()  # and again: nothing to do, no error
    assert net.lab_namespaces(half.prefix) == []
    assert not half.dir.exists()
