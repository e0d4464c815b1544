"""``dbha check -c FILE``: one answer for cron and Nagios. When a supervisor runs
on this node, report what it says (it acts; the check never does); otherwise run
one supervision round (:mod:`dbha.monitor.round`) that observes, decides and acts
as the supervisor would."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dbha.config import Config
from dbha.errors import ConfigError
from dbha.monitor.nagios import Limits, assess
from dbha.monitor.result import CheckResult, failed, result
from dbha.monitor.round import run_round
from dbha.monitor.views import view_from_status

log = logging.getLogger("dbha.check")

ASK_TIMEOUT = 5.0  # bound on asking the local supervisor for its status


def check(path: str, act: bool = True) -> CheckResult:
    """``dbha check -c PATH``: report from the running supervisor, or run one round."""
    try:
        return _check(path, act)
    except Exception as exc:
        # A monitoring plugin that dies with a traceback exits 1, which reads as a
        # mere WARNING: whatever went wrong, say CRITICAL and what it was.
        log.exception("dbha check failed")
        return failed(f"dbha check failed: {type(exc).__name__}: {exc}")


def _check(path: str, act: bool) -> CheckResult:
    from dbha import config

    try:
        cfg = config.load(path)
    except ConfigError as exc:
        return failed(f"config {path}: " + "; ".join(exc.problems[:3]))
    status = ask_supervisor(cfg.service.control_socket)
    if status is not None:
        return from_supervisor(cfg, status)
    problems = config.run_problems(cfg)
    if problems:
        return failed(f"config {path}: " + "; ".join(problems[:3]))
    return run_round(cfg, act)


def ask_supervisor(socket_path: Path) -> dict[str, Any] | str | None:
    """The running supervisor's ``status`` reply; None when no supervisor runs (no
    socket, or a socket nobody listens on); a string saying why when one seems to
    run but does not answer properly."""
    from dbha.node.control import ControlError, local_request

    try:
        reply = local_request(socket_path, {"cmd": "status"}, ASK_TIMEOUT)
    except ControlError as exc:
        if isinstance(exc.__cause__, FileNotFoundError | ConnectionRefusedError):
            return None  # no socket, or one left behind by a supervisor that is gone
        return str(exc)
    if not reply.get("ok"):
        return f"the supervisor answered an error: {reply.get('error')}"
    return reply


def from_supervisor(cfg: Config, reply: dict[str, Any] | str) -> CheckResult:
    """Report what a running supervisor says (it acts; the check never does)."""
    if isinstance(reply, str):
        return failed(f"{cfg.service.id} on {cfg.node.name}: {reply}", mode="supervisor")
    limits = Limits.of(cfg)
    view = view_from_status(reply.get("status"), limits)
    return result(
        assess(view, limits),
        mode="supervisor",
        service=cfg.service.id,
        node=cfg.node.name,
        acted=False,
        decision={"rule": view.rule, "reason": view.reason},
    )
