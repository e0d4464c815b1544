"""Build the MySQL/MariaDB driver for a lab MariaDB node, as dbha would be configured there.

The driver runs in the root namespace and reaches its server over the node's
unix socket; client tools (mariadb, mariadb-dump, mariadb-binlog) run inside
the node's namespace (``tool_prefix``) so that they reach the peer over the lab
LAN, as they would on a real host.
"""

from __future__ import annotations

from dbha.db.base import Upstream
from dbha.db.mysql.conn import MysqlSettings
from dbha.db.mysql.driver import MysqlDriver
from dbha.lab import topology as topo
from dbha.lab.core import Lab
from dbha.lab.maria import MariaNode
from dbha.lab.net import ns_name


def mariadb_settings(lab: Lab, host: str, **overrides: object) -> MysqlSettings:
    node = lab.node("mariadb", host)
    assert isinstance(node, MariaNode)
    lab.layout.secret("mariadb-dbha")  # made at lab up; read here only to be sure it exists
    fields: dict[str, object] = {
        "name": host,
        "engine": "mariadb",
        "socket": str(node.socket),
        "port": topo.SERVICES["mariadb"].port,
        "user": "dbha",
        "password_file": str(lab.layout.secret_path("mariadb-dbha")),
        "repl_user": "repl",
        "repl_password_file": str(lab.layout.secret_path("mariadb-repl")),
        "tool_prefix": ("ip", "netns", "exec", ns_name(lab.prefix, host)),
        "aside_dir": str(node.dir / "aside"),
    }
    fields.update(overrides)
    return MysqlSettings(**fields)  # type: ignore[arg-type]


def mariadb_driver(lab: Lab, host: str) -> MysqlDriver:
    """The driver for the lab's MariaDB server on ``host`` ("a" or "b")."""
    return MysqlDriver(mariadb_settings(lab, host))


def mariadb_upstream(host: str) -> Upstream:
    """The lab's MariaDB server on ``host`` as an upstream to follow (its LAN address)."""
    return Upstream(name=host, host=topo.HOSTS[host].lan, port=topo.SERVICES["mariadb"].port)
