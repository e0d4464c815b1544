"""Helpers for lab tests: run the CLI and commands on lab hosts, with bounds."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

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
