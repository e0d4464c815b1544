"""The lab's HAProxy (dbha.lab.haproxy): its config, and the write timeline from its log."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dbha.lab import topology as topo
from dbha.lab.haproxy import CHECK, FRONTENDS, most_up_at_once, render, write_timeline
from dbha.lab.layout import Layout


def test_each_service_has_a_write_and_a_read_backend_on_the_doors(tmp_path: Path) -> None:
    text = render(Layout.for_prefix("hx", tmp_path))
    for service, svc in topo.SERVICES.items():
        w, r = FRONTENDS[service]
        assert (
            f"bind {topo.HOSTS['c'].lan}:{w}" in text and f"bind {topo.HOSTS['c'].lan}:{r}" in text
        )
        for h in topo.DB_HOSTS:
            line = f"server {h} {topo.HOSTS[h].lan}:{svc.port} check port {svc.http_port}"
            assert text.count(line) == 2  # in the write and the read backend
    assert text.count("uri /primary ") == 2 and text.count("uri /replica?lag=") == 2
    assert text.count("on-marked-down shutdown-sessions") == 4


def test_a_new_primary_is_marked_up_later_than_the_old_is_marked_down() -> None:
    """The old primary answers 503 from its fence on, the new one 200 only after it
    promoted (later): with rise checks to come up and fall to go down, rise > fall
    keeps the write backend from routing to both."""
    assert CHECK["rise"] > CHECK["fall"]


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is installed by the lab")
def test_haproxy_accepts_the_config(tmp_path: Path) -> None:
    layout = Layout.for_prefix("hx", tmp_path)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render(layout))
    got = subprocess.run(
        ["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert got.returncode == 0, got.stdout + got.stderr


LOG = """\
[WARNING]  (12) : Server pg_write/a is DOWN, reason: Layer7 wrong status, code: 503, check duration: 1ms. 0 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue.
[WARNING]  (12) : Server pg_read/a is UP, reason: Layer7 check passed, code: 200, check duration: 1ms.
[WARNING]  (12) : Server mariadb_write/b is DOWN, reason: Layer4 timeout, check duration: 401ms.
[WARNING]  (12) : Server pg_write/b is UP, reason: Layer7 check passed, code: 200, check duration: 1ms. 1 active and 0 backup servers online.
"""  # noqa: E501


def test_a_change_printed_twice_is_one_change() -> None:
    twice = "\n".join(line for line in LOG.splitlines() for _ in (0, 1))
    assert write_timeline(twice, "pg") == [("a", "DOWN"), ("b", "UP")]


def test_the_timeline_reads_the_write_backends_changes_in_order() -> None:
    assert write_timeline(LOG, "pg") == [("a", "DOWN"), ("b", "UP")]
    assert write_timeline(LOG, "mariadb") == [("b", "DOWN")]
    assert most_up_at_once(write_timeline(LOG, "pg"), {"a": True, "b": False}) == 1
    assert most_up_at_once([("b", "UP"), ("a", "DOWN")], {"a": True, "b": False}) == 2
