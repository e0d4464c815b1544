"""The demo, run as an operator runs it (``dbha lab demo``), in a lab of its own.

It must fail over each pair under a writing client, lose no acknowledged write,
bring the old primary back with ``dbha resync``, exit 0, and leave nothing of
its lab behind. Its timings are recorded, never asserted.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from dbha.lab import net
from dbha.lab.core import Lab
from tests.lab.helpers import dbha

RecordProperty = Callable[[str, object], None]
DEMO_TIMEOUT = 900.0  # a bound on the whole run (it takes a minute or two)


def test_the_demo_fails_over_both_pairs_resyncs_the_old_primaries_and_cleans_up(
    lab: Lab, record_property: RecordProperty
) -> None:
    prefix = lab.prefix + "d"  # the session lab only lends its prefix
    res = dbha("lab", "demo", "--prefix", prefix, check=False, timeout=DEMO_TIMEOUT)
    out = res.stdout
    print(out)
    try:
        assert res.returncode == 0, out[-4000:] + res.stderr[-2000:]
        for service, old, new in (("pg", "a", "b"), ("mariadb", "b", "a")):
            took = re.search(
                rf"^   {service} failover: {old} -> {new} in (\d+\.\d+) s ", out, re.MULTILINE
            )
            assert took is not None, f"no {service} failover line"
            record_property(f"{service}_fault_to_first_write_s", float(took.group(1)))
            assert re.search(
                rf"^   ok: {service} verified: \d+ acknowledged writes, 0 lost "
                rf"\(each checked on a, b\)$",
                out,
                re.MULTILINE,
            ), f"no verified {service} run on both nodes"
            assert re.search(rf"^   {service} resync: {old} rejoined by \w+", out, re.MULTILINE), (
                f"no {service} resync line"
            )
            assert re.search(
                rf"^   {service} +\S+ \S+ +\d+\.\d+ s +\d+\.\d+ s +\d+ +0 lost ", out, re.MULTILINE
            ), f"no {service} row with 0 lost in the summary"
        assert "FAILED" not in out
        done = re.search(r"^== demo done in (\d+\.\d+)s: every check passed", out, re.MULTILINE)
        assert done is not None
        record_property("demo_total_s", float(done.group(1)))
    finally:
        left, left_dir = net.lab_namespaces(prefix), Lab(prefix).dir.exists()
        if left or left_dir:
            Lab(prefix).down()  # never leave a lab behind, even when the demo did
    assert left == [], f"the demo left namespaces behind: {left}"
    assert not left_dir, "the demo left its lab directory behind"
