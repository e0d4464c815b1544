"""The ``dbha`` command line (click).

Commands are thin: they parse arguments, call into dbha, print, and choose the
exit code. The lab is imported lazily so that nothing but this module and the
tests depends on ``dbha.lab``.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from dbha import __version__
from dbha.errors import ConfigError, DbhaError


class _Main(click.Group):
    """The top group; ``dbha lab`` is imported only when it is asked for, so that
    ``dbha run`` (a supervisor restarting while its peer is dead counts every
    tenth of a second) does not load the lab and what it imports."""

    LAZY = "lab"

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), self.LAZY})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name == self.LAZY:
            from dbha.lab.cli import lab

            return lab
        return super().get_command(ctx, name)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
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
    """Validate a config: print every problem (exit 1) or a short summary (exit 0).

    Files the config names that do not exist on this host (secret files, programs,
    the watchdog device) are warnings, so that a config can be checked before it is
    deployed; ``dbha run`` refuses to start without them."""
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
    missing = config.missing_files(cfg)
    for line in missing:
        click.echo(f"warning: {line} on this host", err=True)
    if missing:
        # Fine for a config checked before it is deployed; not for one that runs here.
        click.echo(
            f"warning: {len(missing)} file(s) missing: dbha run refuses to start (exit 2) "
            "until they exist on this host; the config itself is valid",
            err=True,
        )


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
    from dbha.node.control import Doors

    got: dict[str, Any] | str = Doors(cfg).ask(cfg.peer.name, request, timeout=2.0)
    return got


def _answer(reply: dict[str, Any]) -> None:
    if not reply.get("ok"):
        click.echo(f"dbha: {reply.get('error')}", err=True)
        sys.exit(1)
    click.echo(reply.get("answer", "ok"))


@main.command("run")
@click.option("-c", "--config", "path", required=True, type=click.Path(dir_okay=False))
@click.option(
    "--json-log",
    is_flag=True,
    help='Log one JSON object per line (as log.format = "json" does).',
)
def run_cmd(path: str, json_log: bool) -> None:
    """The supervisor, in the foreground (systemd Type=notify with watchdog, or plain).

    It refuses to start (exit 2) on a config with a problem, or whose files (the
    password and heartbeat key files, programs, the watchdog device) are missing."""
    import logging

    from dbha import config
    from dbha.node import logs
    from dbha.node.daemon import run

    logs.setup(json_lines=json_log)
    log = logging.getLogger("dbha")
    try:
        cfg = config.load(path)
        problems = config.run_problems(cfg)
        if problems:
            raise ConfigError(path, problems)
    except ConfigError as exc:
        _refuse_to_run(log, json_log, exc)
    json_log = json_log or cfg.log.format == "json"
    logs.setup(
        cfg.log.level,
        json_lines=json_log,
        static={"service": cfg.service.id, "node": cfg.node.name},
        secrets=logs.secrets_of(
            [
                cfg.database.password_file,
                cfg.heartbeat.key_file,
                cfg.database.replication_password_file,
            ]
        ),
    )
    sys.exit(run(cfg, json_log=json_log))


def _refuse_to_run(log: Any, json_log: bool, exc: ConfigError) -> NoReturn:
    """Exit 2, saying every problem: in the log's own format with --json-log."""
    from dbha.node.logs import FIELDS

    if json_log:
        log.error("refusing to start: %s", exc, extra={FIELDS: {"problems": exc.problems}})
    else:
        click.echo(f"dbha run: refusing to start: {exc}", err=True)
    sys.exit(2)


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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (one object).")
@click.option(
    "--watch",
    "watch",
    type=click.FloatRange(0.5, 3600),
    is_flag=False,
    flag_value=2.0,
    default=None,
    metavar="[SECONDS]",
    help="Redraw every SECONDS (default 2) until Ctrl-C; with --json, one object per line.",
)
def status_cmd(path: str, as_json: bool, watch: float | None) -> None:
    """Both nodes: role, epoch, database, position and lag, every heartbeat path with
    its last beat, dropped beats, VIP, maintenance, resync, the last failover, and
    what is wrong. Works without a supervisor on this node (it looks at what it can
    directly, and says so).

    \b
    Exit codes:
      0  healthy: both supervisors answer, no finding on either node
      1  degraded: the pair serves but is not whole (no working standby,
         maintenance on, a path down, lag, ...) or the peer cannot be asked
      2  usage or config error
      3  critical: a CRITICAL finding (no node serves, two primaries,
         commits blocked, the primary's database down, ...); a
         standby's own database down is degraded (1)
      4  the supervisor on this node is not running (or does not answer)
    """
    import json
    import time

    from dbha.monitor import pairstatus, statustext

    cfg = _load(path)
    src = pairstatus.sources(cfg, lambda req: _ask_peer(cfg, req))
    code = 0
    try:
        while True:
            report = pairstatus.gather(cfg, src)
            code = int(report["code"])
            if as_json:
                text = json.dumps(report, default=str, indent=None if watch else 2)
            else:
                text = statustext.render(report)
                if watch and sys.stdout.isatty():
                    text = "\033[H\033[2J" + text  # redraw in place
                elif watch:
                    text += "\n"
            click.echo(text)
            if watch is None:
                break
            time.sleep(watch)
    except KeyboardInterrupt:
        pass
    sys.exit(code)


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
    """Pause (on) or resume (off) automatic failover for the pair: set on this node
    and on the peer (over its door). While either node has it on, neither node
    fails over, hands over or rejoins by itself, and dbha check says WARNING on
    both. Exit 0 when both nodes took it, 1 when one did not (said which)."""
    from dbha.node.control import Doors
    from dbha.node.switchover import maintenance

    code, lines = maintenance(Doors(_load(path)), mode == "on")
    for line in lines:
        click.echo(line, err=code != 0)
    sys.exit(code)


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
@click.option("--to", "to", help="The node to hand the role to (default: the replica).")
@click.option("--dry-run", is_flag=True, help="Run every check, show the plan, change nothing.")
@click.option(
    "--timeout",
    type=click.FloatRange(1, 3600),
    default=60.0,
    show_default=True,
    help="How long to wait for the outcome (seconds).",
)
@click.option(
    "--lag-wait",
    type=click.FloatRange(0, 600),
    default=10.0,
    show_default=True,
    help="Refused only because the replica is past the lag bound, ask again for this "
    "long (seconds) before refusing: a replica under load moves about its bound. "
    "Not with --dry-run, which answers for now.",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation on a terminal.")
@click.option(
    "--force",
    is_flag=True,
    help="Switch over even with maintenance on or the replica past the lag bound (it "
    "still takes over only once it has received everything).",
)
@click.option("--json", "as_json", is_flag=True, help="The outcome as one JSON object.")
def switchover_cmd(
    path: str,
    to: str | None,
    dry_run: bool,
    timeout: float,
    lag_wait: float,
    yes: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Planned switchover, run on either node: hand the primary role to the replica,
    losing nothing, and report the outcome.

    \b
    Exit codes:
      0  done: the target serves with the VIP
      1  failed: the primary could not start the handover
      2  error: bad usage or config, or a supervisor could not be asked
      3  refused: a check (or the operator at the prompt) said no; nothing changed
      4  rolled back: the target did not take over; the old primary serves again
      5  timed out: no outcome within --timeout (see dbha status)
    """
    import json

    from dbha.node import switchover as so
    from dbha.node.control import Doors

    doors = Doors(_load(path))
    got = so.plan(doors, to, force, 0.0 if dry_run else lag_wait)

    def finish(out: so.Outcome) -> None:
        if as_json:
            click.echo(json.dumps(out.as_dict(), default=str))
        else:
            for line in out.lines:
                click.echo(line, err=out.code not in (so.EXIT_DONE,))
        sys.exit(out.code)

    if isinstance(got, so.Outcome):
        finish(got)
    assert isinstance(got, so.Plan)
    if not as_json:
        for line in got.lines:
            click.echo(line)
    if dry_run:
        finish(so.Outcome(so.EXIT_DONE, ["dry run: every check passed; nothing was changed"]))
    if not yes and sys.stdin.isatty() and not click.confirm("Switch over now?", default=False):
        finish(so.Outcome(so.EXIT_REFUSED, ["not confirmed: nothing was changed"]))
    finish(so.execute(doors, got, force, timeout, lag_wait=lag_wait))


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


def run() -> None:
    """Entry point that turns dbha's own errors into a message and exit code 2."""
    try:
        main(standalone_mode=True)
    except DbhaError as exc:  # a dbha error no command turned into a message itself
        click.echo(f"dbha: {exc}", err=True)
        sys.exit(2)
