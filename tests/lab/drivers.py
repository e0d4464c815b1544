"""Build the PostgreSQL driver for a lab node, from the lab's own paths and secrets.

Tools run inside the node's namespace (so pg_rewind, pg_basebackup and
pg_receivewal reach the peer over the lab network) as ``postgres``; the
driver's own sessions use the node's unix socket from the root namespace.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dbha.db.base import Upstream
from dbha.db.postgres.conn import PgSettings, setpriv_prefix
from dbha.db.postgres.driver import PostgresDriver
from dbha.lab import topology as topo
from dbha.lab.core import Lab
from dbha.lab.net import ns_name
from dbha.lab.pg import OWNER, PGBIN, SERVICE, PgNode


def pg_settings(lab: Lab, host: str, **overrides: Any) -> PgSettings:
    """Settings for the lab's PostgreSQL on ``host``; ``overrides`` replace fields."""
    node = PgNode(lab.prefix, lab.layout, host)
    settings = PgSettings(
        node_name=host,
        peer_name=next(h for h in topo.DB_HOSTS if h != host),
        data_dir=node.data,
        host=str(node.run),
        port=SERVICE.port,
        user="dbha",
        dbname="postgres",
        password_file=lab.layout.secret_path("pg-dbha"),
        replication_user="replicator",
        replication_passfile=node.passfile,
        bin_dir=PGBIN,
        os_user=OWNER,
        tool_prefix=("ip", "netns", "exec", ns_name(lab.prefix, host), *setpriv_prefix(OWNER)),
        tool_env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(node.dir)},
        start_argv=tuple(node.start_argv()),
        work_dir=node.dir,
    )
    return replace(settings, **overrides) if overrides else settings


def pg_driver(lab: Lab, host: str, **overrides: Any) -> PostgresDriver:
    return PostgresDriver(pg_settings(lab, host, **overrides))


def pg_upstream(host: str) -> Upstream:
    """How a lab PostgreSQL node is reached by its peer: its LAN address."""
    return Upstream(name=host, host=topo.HOSTS[host].lan, port=SERVICE.port)
