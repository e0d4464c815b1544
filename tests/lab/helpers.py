"""Helpers for lab tests: run the CLI and commands on lab hosts, with bounds."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from dbha.lab import topology as topo
from dbha.lab.core import Lab


def dbha(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the dbha CLI as an operator would, in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "dbha", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def lab_json(prefix: str) -> dict[str, Any]:
    res = dbha("lab", "status", "--json", "--prefix", prefix, check=False)
    data: dict[str, Any] = json.loads(res.stdout)
    data["_exit"] = res.returncode
    return data


def ns_exec(
    lab: Lab, host: str, *argv: str, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        lab.exec_argv(host, list(argv)),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ping(
    lab: Lab,
    host: str,
    address: str,
    count: int = 1,
    interval: float = 0.2,
) -> subprocess.CompletedProcess[str]:
    return ns_exec(
        lab, host, "ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1", address
    )


@contextlib.contextmanager
def supervised_lab(
    lab: Lab, suffix: str, pairs: str = "dbha", haproxy: bool = False
) -> Iterator[Lab]:
    """A lab beside the session's (its prefix plus ``suffix``), synchronous, with
    dbha supervisors on both hosts, its pairs built by dbha's lab or as their
    operators would (``pairs``), with HAProxy in host c routing by the supervisors'
    HTTP doors when ``haproxy``; torn down when the block ends."""
    other = Lab(lab.prefix + suffix)
    try:
        other.up(sync=True, install=False, supervisors=True, pairs=pairs, haproxy=haproxy)
        yield other
    finally:
        other.down()


@contextlib.contextmanager
def strict_sync(lab: Lab, service: str) -> Iterator[None]:
    """Both supervisors of ``service`` restarted on ``sync_fallback = "strict"`` (the
    default an operator gets); the lab's own setting and supervisors back afterwards."""
    configs = {h: lab.supervisors.paths(service, h).config for h in topo.DB_HOSTS}
    saved = {h: c.read_text() for h, c in configs.items()}

    def restart(texts: dict[str, str]) -> None:
        for host in topo.DB_HOSTS:
            lab.supervisors.stop(service, host)
        for host, text in texts.items():
            configs[host].write_text(text)
        for host in topo.DB_HOSTS:
            lab.supervisors.start(service, host, "run")
            lab.supervisors.wait_started(service, host, "run")

    strict = {}
    for host, text in saved.items():
        assert 'sync_fallback = "fallback"' in text, text
        strict[host] = text.replace('sync_fallback = "fallback"', 'sync_fallback = "strict"')
    restart(strict)
    try:
        yield
    finally:
        restart(saved)


def as_built(lab: Lab, service: str) -> bool:
    """The service's pair is as the lab built it: its primary serves, unfenced,
    alone with the VIP, and the lab reports no problem with it."""
    svc = topo.SERVICES[service]
    st = lab.status(proof=False)
    return (
        st["services"][service]["primary"] == svc.primary
        and not st["services"][service]["fenced"]
        and lab.vip_holders(service) == [svc.primary]
        and not [p for p in st["problems"] if p.startswith(f"{service}:")]
    )


def supervisor_status(lab: Lab, service: str, host: str) -> dict[str, Any]:
    """`dbha status --json` run inside ``host`` as an operator there would."""
    cfg = str(lab.supervisors.paths(service, host).config)
    res = ns_exec(lab, host, sys.executable, "-m", "dbha", "status", "-c", cfg, "--json")
    # 0 healthy, 1 degraded, 3 critical, 4 no local supervisor; 2 is a usage error
    assert res.returncode in (0, 1, 3, 4), res.stderr
    return dict(json.loads(res.stdout))


def timed(call: Callable[[], object]) -> float:
    """Seconds ``call()`` took (perf counter)."""
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0
