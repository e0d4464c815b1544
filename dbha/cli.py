"""The ``dbha`` command line (click).

Commands are thin: they parse arguments, call into dbha, print, and choose the
exit code. The lab is imported lazily so that nothing but this module and the
tests depends on ``dbha.lab``.
"""

from __future__ import annotations

import sys

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
        problems = config.check_files(cfg)
        if problems:
            raise ConfigError(path, problems)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(config.summary(cfg))
    for line in config.missing_files(cfg):
        click.echo(f"warning: {line} on this host (dbha run needs it)", err=True)


# ------------------------------------------------------------------------ lab


def _register_lab() -> None:
    from dbha.lab.cli import lab

    main.add_command(lab)


_register_lab()


def run() -> None:
    """Entry point that turns dbha's own errors into a message and exit code 2."""
    try:
        main(standalone_mode=True)
    except DbhaError as exc:  # pragma: no cover - click handles most paths
        click.echo(f"dbha: {exc}", err=True)
        sys.exit(2)
