"""``dbha lab ...``: build, inspect, fault and tear down the local lab (root, Linux)."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from dbha.errors import DbhaError
from dbha.lab import operator as op
from dbha.lab import topology as topo
from dbha.lab.layout import DEFAULT_ROOT
from dbha.lab.status import render_status
from dbha.lab.supervisors import START_BY_DEFAULT


class LabContext:
    def __init__(self, prefix: str, base: Path) -> None:
        self.prefix, self.base = prefix, base

    def lab(self) -> Any:
        from dbha.lab.core import Lab

        if os.geteuid() != 0:
            raise click.ClickException("the lab needs root (network namespaces)")
        try:
            return Lab(self.prefix, self.base)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc


F = TypeVar("F", bound=Callable[..., Any])


def pass_ctx(fn: F) -> F:
    """Give a lab command its --prefix and --dir options, as a LabContext."""

    @click.option(
        "--prefix",
        default=topo.DEFAULT_PREFIX,
        show_default=True,
        envvar="DBHA_LAB_PREFIX",
        help="Name prefix of the lab's namespaces (two labs need two prefixes).",
    )
    @click.option(
        "--dir",
        "base",
        default=str(DEFAULT_ROOT),
        show_default=True,
        type=click.Path(file_okay=False),
        help="Where labs keep their files.",
    )
    @functools.wraps(fn)
    def wrapper(*args: Any, prefix: str, base: str, **kwargs: Any) -> Any:
        return fn(LabContext(prefix, Path(base)), *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _fail(exc: DbhaError) -> None:
    raise click.ClickException(str(exc))


@click.group("lab")
def lab() -> None:
    """The local lab: hosts a, b (databases) and c (client) as network namespaces,
    a PostgreSQL pair (primary a) and a MariaDB pair (primary b), real replication.

    Every subcommand takes --prefix (or DBHA_LAB_PREFIX) to pick the lab."""


@lab.command()
def install() -> None:
    """Install the Debian packages the lab needs (no server is started)."""
    from dbha.lab import packages

    try:
        done = packages.ensure()
    except DbhaError as exc:
        _fail(exc)
    click.echo(f"installed: {', '.join(done)}" if done else "everything is installed")


@lab.command()
@click.option(
    "--sync/--async",
    "sync",
    default=None,
    help="Synchronous replication for both pairs (default: keep, else async).",
)
@click.option(
    "--supervisors/--no-supervisors",
    "supervisors",
    default=None,
    help="Run a dbha supervisor per service on each database host, or none "
    "(driver tests). Default: keep the lab's choice; a new lab: "
    + ("supervisors." if START_BY_DEFAULT else "no supervisors."),
)
@click.option(
    "--profile",
    type=click.Choice(sorted(topo.PROFILES)),
    default=None,
    help="Timing of the supervisors' configs: default, or the fast profile "
    "(docs/config.md). Default: keep the lab's choice, else default.",
)
@click.option(
    "--pairs",
    type=click.Choice(op.PAIRS),
    default=None,
    help="How the database pairs are built: as dbha wants them (dbha), or as an "
    "operator following each engine's own documentation would (operator: "
    "docs/lab.md). Default: keep the lab's choice, else dbha. A change rebuilds "
    "both pairs.",
)
@click.option(
    "--haproxy/--no-haproxy",
    "haproxy",
    default=None,
    help="Run HAProxy in host c, routing writes and reads by the supervisors' HTTP "
    "doors (docs/lab.md). Default: keep the lab's choice, else none.",
)
@pass_ctx
def up(
    c: LabContext,
    sync: bool | None,
    supervisors: bool | None,
    profile: str | None,
    pairs: str | None,
    haproxy: bool | None,
) -> None:
    """Build the lab, or repair what is missing (idempotent); write each node's
    dbha config (and start the supervisors)."""
    try:
        t = c.lab().up(
            sync=sync, supervisors=supervisors, profile=profile, pairs=pairs, haproxy=haproxy
        )
    except DbhaError as exc:
        _fail(exc)
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in t.steps)
    click.echo(f"lab {c.prefix} is up in {t.total:.1f}s ({steps})")


@lab.command()
@pass_ctx
def down(c: LabContext) -> None:
    """Remove the lab: its processes (by PID), namespaces and files."""
    try:
        t = c.lab().down()
    except DbhaError as exc:
        _fail(exc)
    click.echo(f"lab {c.prefix} is down in {t.total:.1f}s")


@lab.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--no-proof", is_flag=True, help="Skip the write proof.")
@pass_ctx
def status(c: LabContext, as_json: bool, no_proof: bool) -> None:
    """Namespaces, links, each database's role and replication, and a write proof.

    Exit 0 only when the lab is healthy."""
    try:
        st = c.lab().status(proof=not no_proof)
    except DbhaError as exc:
        _fail(exc)
    click.echo(json.dumps(st, indent=2, default=str) if as_json else render_status(st))
    sys.exit(0 if st["healthy"] else 1)


@lab.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_ctx
def exec_(c: LabContext, host: str, argv: tuple[str, ...]) -> None:
    """Run a command on a lab host: dbha lab exec HOST -- CMD..."""
    try:
        full = c.lab().exec_argv(host, list(argv))
    except DbhaError as exc:
        _fail(exc)
    os.execvp(full[0], full)


@lab.group()
def fault() -> None:
    """Inject faults: host deaths, link cuts, netem, isolation, database kills and hangs."""


@fault.command("kill-host")
@click.argument("host")
@pass_ctx
def kill_host(c: LabContext, host: str) -> None:
    """HOST dies: all its processes are frozen and killed, its links go down."""
    try:
        pids = c.lab().kill_host(host)
    except DbhaError as exc:
        _fail(exc)
    click.echo(f"{host}: killed {len(pids)} processes, links down")


@fault.command("isolate")
@click.argument("host")
@pass_ctx
def isolate(c: LabContext, host: str) -> None:
    """All of HOST's links go down; its processes keep running."""
    try:
        c.lab().isolate(host)
    except DbhaError as exc:
        _fail(exc)
    click.echo(f"{host}: isolated")


@fault.command("link-down")
@click.argument("host")
@click.argument("path")
@pass_ctx
def link_down(c: LabContext, host: str, path: str) -> None:
    """Cut HOST's link on PATH (lan or hb)."""
    try:
        c.lab().link(host, path, up=False)
    except DbhaError as exc:
        _fail(exc)
    click.echo(f"{host}: {path} down")


@fault.command("link-up")
@click.argument("host")
@click.argument("path")
@pass_ctx
def link_up(c: LabContext, host: str, path: str) -> None:
    """Restore HOST's link on PATH."""
    try:
        c.lab().link(host, path, up=True)
    except DbhaError as exc:
        _fail(exc)
    click.echo(f"{host}: {path} up")


@fault.command("netem")
@click.argument("host")
@click.argument("path")
@click.argument("spec")
@pass_ctx
def netem(c: LabContext, host: str, path: str, spec: str) -> None:
    """Impair HOST's traffic on PATH both ways, e.g. 'loss 30% delay 100ms 100ms'."""
    try:
        c.lab().netem(host, path, spec)
    except DbhaError as exc:
        _fail(exc)
    click.echo(f"{host}: {path} impaired ({spec})")


@fault.command("block")
@click.argument("host")
@click.argument("proto", type=click.Choice(["udp", "tcp"]))
@click.argument("port", type=click.IntRange(1, 65535))
@pass_ctx
def block(c: LabContext, host: str, proto: str, port: int) -> None:
    """Drop PROTO traffic to PORT in and out of HOST (nftables), e.g. heartbeats: udp 5405."""
    try:
        c.lab().block(host, proto, port)
    except DbhaError as exc:
        _fail(exc)
    click.echo(f"{host}: {proto} port {port} blocked")


@fault.command("kill-db")
@click.argument("host")
@click.argument("service", type=click.Choice(list(topo.SERVICES)))
@pass_ctx
def kill_db(c: LabContext, host: str, service: str) -> None:
    """SIGKILL the SERVICE's server on HOST (the whole server process tree)."""
    try:
        pids = c.lab().kill_db(host, service)
    except DbhaError as exc:
        _fail(exc)
    click.echo(f"{host}: {service} killed ({len(pids)} processes)")


@fault.command("stop-db")
@click.argument("host")
@click.argument("service", type=click.Choice(list(topo.SERVICES)))
@pass_ctx
def stop_db(c: LabContext, host: str, service: str) -> None:
    """SIGSTOP the SERVICE's server on HOST: it hangs until heal."""
    try:
        pids = c.lab().stop_db(host, service)
    except DbhaError as exc:
        _fail(exc)
    click.echo(f"{host}: {service} stopped ({len(pids)} processes)")


@click.command("heal")
@pass_ctx
def heal(c: LabContext) -> None:
    """Undo every fault: links up, impairments removed, servers resumed or restarted."""
    try:
        done = c.lab().heal()
    except DbhaError as exc:
        _fail(exc)
    click.echo("healed" + (": " + "; ".join(done) if done else ""))


fault.add_command(heal)
lab.add_command(heal)


@lab.command()
@pass_ctx
def demo(c: LabContext) -> None:
    """A real failover of each pair under a writing client, then `dbha resync` of the
    old primary, every step checked; the lab is torn down at the end.

    Exit 0 only if every check passed."""
    from dbha.lab.demo import Demo

    sys.exit(0 if Demo(c.lab(), click.echo).run() else 1)
