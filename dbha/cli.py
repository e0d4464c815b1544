"""The ``dbha`` command line (click).

Commands are thin: they parse arguments, call into dbha, print, and choose the
exit code. The lab is imported lazily so that nothing but this module and the
tests depends on ``dbha.lab``.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from dbha import __version__
from dbha.errors import ConfigError, DbhaError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dbha")
def main() -> None:
    """dbha: high availability for a PostgreSQL or MySQL/MariaDB pair in mirror mode.

    A supervisor on each host watches its database and its peer over several
    heartbeat paths, fences, promotes and moves the virtual IP.
    """


# --------------------------------------------------------------------- config


@main.group("config")
def config_group() -> None:
    """Validate and explain configuration files."""


@config_group.command("check")
@click.option(
    "-c",
    "--config",
    "path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The TOML config file of one supervised service on this node.",
)
def config_check(path: str) -> None:
    """Validate a config: print every problem (exit 1) or a short summary (exit 0)."""
    from dbha import config

    try:
        cfg = config.load(path)
        problems = config.check_files(cfg) + config.unavailable(cfg)
        if problems:
            raise ConfigError(path, problems)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(config.summary(cfg))
    for line in config.missing_files(cfg):
        click.echo(f"warning: {line} on this host (dbha run needs it)", err=True)


# ----------------------------------------------------------------- supervisor


def _load(path: str) -> Any:
    from dbha import config

    try:
        return config.load(path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


# How long the CLI waits for a request that acts (a resync may copy the whole
# database: the supervisor bounds it by its rejoin budget, 600 s).
ACTING_REQUEST_TIMEOUT = 660.0


def _ask(cfg: Any, request: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
    from dbha.node.control import ControlError, local_request

    try:
        return local_request(cfg.service.control_socket, request, timeout)
    except ControlError as exc:
        click.echo(f"dbha: {exc}", err=True)
        sys.exit(2)


def _ask_peer(cfg: Any, request: dict[str, Any]) -> dict[str, Any] | str:
    """The peer supervisor's reply over its door (bounded: 2 s), or why it gave none."""
    from dbha.node.control import ControlError, peer_request

    try:
        key = cfg.heartbeat.key_file.read_bytes().strip()
        addrs = [(str(p.peer_address), p.port) for p in cfg.heartbeat.paths]
        return peer_request(addrs, key, request, timeout=2.0)
    except (ControlError, OSError) as exc:
        return str(exc)


def _answer(reply: dict[str, Any]) -> None:
    if not reply.get("ok"):
        click.echo(f"dbha: {reply.get('error')}", err=True)
        sys.exit(1)
    click.echo(reply.get("answer", "ok"))


@main.command("run")
@click.option("-c", "--config", "path", required=True, type=click.Path(dir_okay=False))
@click.option("--json-log", is_flag=True, help="Log one JSON object per line.")
def run_cmd(path: str, json_log: bool) -> None:
    """The supervisor, in the foreground (systemd Type=notify with watchdog, or plain)."""
    import logging

    from dbha import config
    from dbha.node.daemon import run

    cfg = _load(path)
    problems = config.check_files(cfg) + config.missing_files(cfg) + config.unavailable(cfg)
    if problems:
        click.echo(str(ConfigError(path, problems)), err=True)
        sys.exit(2)
    logging.basicConfig(
        level=getattr(logging, cfg.log.level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    sys.exit(run(cfg, json_log=json_log))


@main.command("check")
@click.option("-c", "--config", "path", required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of one line.")
@click.option(
    "--report-only", is_flag=True, help="Observe and decide, but change nothing and write nothing."
)
def check_cmd(path: str, as_json: bool, report_only: bool) -> None:
    """One supervision round for cron or a monitoring system (exit 0 OK, 1 WARNING,
    2 CRITICAL). With a supervisor running, it only reports what that supervisor sees;
    without one, it observes, decides and acts as one tick would (docs/operations.md)."""
    import json
    import logging

    from dbha.monitor.command import check

    logging.basicConfig(level=logging.WARNING, format="dbha check: %(levelname)s %(message)s")
    result = check(path, act=not report_only)
    click.echo(json.dumps(result.as_dict(), default=str) if as_json else result.line)
    sys.exit(int(result.status))


@main.command("status")
@click.option("-c", "--config", "path", required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_cmd(path: str, as_json: bool) -> None:
    """Both nodes: role, epoch, database, paths, VIP, maintenance, the last decision."""
    import json

    cfg = _load(path)
    mine = _ask(cfg, {"cmd": "status"})
    if not mine.get("ok"):
        _answer(mine)
    peer: dict[str, Any] | None
    got = _ask_peer(cfg, {"cmd": "status"})
    peer = {"error": got} if isinstance(got, str) else got.get("status")
    result = {"local": mine["status"], "peer": peer}
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    for label, st in (("this node", mine["status"]), ("peer", peer)):
        if st is None or ("error" in st and "role" not in st):
            click.echo(f"{label}: unreachable ({(st or {}).get('error')})")
            continue
        click.echo(f"{label}: {st['node']} {st['summary']}")
        dec = st.get("decision") or {}
        paths = ", ".join(f"{n} {'up' if v['up'] else 'DOWN'}" for n, v in st["paths"].items())
        click.echo(
            f"  paths: {paths}; maintenance {'on' if st['maintenance'] else 'off'}; "
            f"needs resync: {'yes' if st['needs_resync'] else 'no'}"
        )
        click.echo(f"  decision: {dec.get('rule')}: {dec.get('reason')}")


@main.command("history")
@click.option("-c", "--config", "path", required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
@click.option(
    "-n",
    "--last",
    "last",
    type=click.IntRange(1, 1000),
    default=50,
    show_default=True,
    help="How many of the newest events.",
)
def history_cmd(path: str, as_json: bool, last: int) -> None:
    """The pair's events, newest last: this node's history file, and the peer's
    (asked of its supervisor; said when it cannot be asked)."""
    import json

    from dbha.node import history

    cfg = _load(path)
    events = history.read(cfg.service.state_dir, last)
    missing: str | None = None
    got = _ask_peer(cfg, {"cmd": "history", "last": last})
    if isinstance(got, str):
        missing = got
    elif got.get("ok") and isinstance(got.get("events"), list):
        events += [e for e in got["events"] if isinstance(e, dict) and "event" in e]
    else:
        missing = str(got.get("error"))
    events.sort(key=history.time_of)
    events = events[-last:]
    if as_json:
        for e in events:
            click.echo(json.dumps(e, sort_keys=True))
    else:
        for e in events:
            click.echo(history.line(e))
    if missing is not None:
        click.echo(f"dbha: the peer's history is not shown: {missing}", err=True)


@main.command("maintenance")
@click.argument("mode", type=click.Choice(["on", "off"]))
@click.option("-c", "--config", "path", required=True, type=click.Path(dir_okay=False))
def maintenance_cmd(mode: str, path: str) -> None:
    """Pause (on) or resume (off) automatic failover for this pair."""
    _answer(_ask(_load(path), {"cmd": f"maintenance_{mode}"}))


@main.command("preflight")
@click.option("-c", "--config", "path", required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
@click.option("--local", is_flag=True, help="Only this node's server and host, not the peer's.")
def preflight_cmd(path: str, as_json: bool, local: bool) -> None:
    """Check every prerequisite dbha relies on, on the live servers and this host, each
    with its fix (exit 0: nothing wrong, 1: warnings, 2: failures). Items marked
    FIX are made right by dbha itself once it runs."""
    import json

    from dbha.node import preflight

    cfg = _load(path)
    items = preflight.run(cfg, peer=not local)
    code = preflight.exit_code(items)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "code": code,
                    "items": [
                        {"level": i.level, "where": i.where, "what": i.what, "fix": i.fix}
                        for i in items
                    ],
                }
            )
        )
    else:
        for i in items:
            click.echo(i.line())
        counts = {lv: sum(1 for i in items if i.level == lv) for lv in preflight.LEVELS}
        click.echo(", ".join(f"{n} {lv}" for lv, n in counts.items()))
    sys.exit(code)


@main.group("sync")
def sync_group() -> None:
    """Synchronous commit on this primary."""


@sync_group.command("relax")
@click.option("-c", "--config", "path", required=True, type=click.Path(dir_okay=False))
@click.option(
    "--force",
    is_flag=True,
    help="Relax even while the replica may still take over without what is acknowledged meanwhile.",
)
def sync_relax_cmd(path: str, force: bool) -> None:
    """Run on the primary: accept asynchronous commits until the replica is back.

    For replication.mode = "sync" with sync_fallback = "strict", whose commits wait
    while the replica is gone (after a failover, the old primary needs a resync).
    The primary persists and announces a replica-not-in-sync mark, so the replica
    is not promoted until it has caught up; commits wait again once it is back.
    Refused while the replica is heard as eligible or its database still answers,
    unless --force."""
    _answer(_ask(_load(path), {"cmd": "sync_relax", "force": force}))


@main.command("switchover")
@click.option("-c", "--config", "path", required=True, type=click.Path(dir_okay=False))
def switchover_cmd(path: str) -> None:
    """Planned switchover, run on the primary: give the role to the peer, losing nothing."""
    _answer(_ask(_load(path), {"cmd": "switchover"}, timeout=ACTING_REQUEST_TIMEOUT))


@main.command("failover")
@click.option("-c", "--config", "path", required=True, type=click.Path(dir_okay=False))
@click.option("--to", "to", required=True, help="The node to promote: this node.")
@click.option("--force", is_flag=True, help="Promote even past the lag bound (may lose data).")
def failover_cmd(path: str, to: str, force: bool) -> None:
    """Operator-forced promotion of this node (run on the node to promote)."""
    cfg = _load(path)
    if to != cfg.node.name:
        click.echo(f"dbha: run this on {to}: this is {cfg.node.name}", err=True)
        sys.exit(2)
    _answer(_ask(cfg, {"cmd": "failover", "force": force}, timeout=ACTING_REQUEST_TIMEOUT))


@main.command("resync")
@click.option("-c", "--config", "path", required=True, type=click.Path(dir_okay=False))
@click.option(
    "--force",
    is_flag=True,
    help="MySQL/MariaDB: a node holding transactions the peer lacks keeps them aside "
    "and is re-cloned (without --force it is refused and stays fenced).",
)
def resync_cmd(path: str, force: bool) -> None:
    """Rejoin the local node as a replica of the peer."""
    _answer(_ask(_load(path), {"cmd": "resync", "force": force}, timeout=ACTING_REQUEST_TIMEOUT))


# ------------------------------------------------------------------------ lab


def _register_lab() -> None:
    from dbha.lab.cli import lab

    main.add_command(lab)


_register_lab()


def run() -> None:
    """Entry point that turns dbha's own errors into a message and exit code 2."""
    try:
        main(standalone_mode=True)
    except DbhaError as exc:  # a dbha error no command turned into a message itself
        click.echo(f"dbha: {exc}", err=True)
        sys.exit(2)
