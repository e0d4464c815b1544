"""Build a node's database driver (and one for the peer's database) from its config."""

from __future__ import annotations

from pathlib import Path

from dbha.config import Config
from dbha.db.base import DatabaseDriver, Upstream
from dbha.db.mysql.conn import MysqlSettings
from dbha.db.mysql.driver import MysqlDriver
from dbha.db.postgres.conn import PgSettings, setpriv_prefix
from dbha.db.postgres.driver import PostgresDriver


def local_driver(cfg: Config) -> DatabaseDriver:
    """The driver for this node's own server."""
    db = cfg.database
    if db.is_postgresql:
        assert db.data_directory is not None and db.replication_passfile is not None
        assert db.password_file is not None
        return PostgresDriver(
            PgSettings(
                node_name=cfg.node.name,
                peer_name=cfg.peer.name,
                data_dir=db.data_directory,
                host=str(db.socket) if db.socket is not None else str(db.host),
                password_file=db.password_file,
                replication_passfile=db.replication_passfile,
                port=db.port,
                user=db.user,
                dbname=db.dbname,
                bin_dir=db.bin_directory,
                os_user=db.os_user,
                tool_prefix=setpriv_prefix(db.os_user),
                start_argv=db.start_command,
                stop_argv=db.stop_command,
                replication_user=db.replication_user,
                work_dir=db.aside_directory,
            )
        )
    return MysqlDriver(
        MysqlSettings(
            name=cfg.node.name,
            engine=db.engine,
            host=None if db.socket is not None else db.host,
            socket=None if db.socket is None else str(db.socket),
            port=db.port,
            user=db.user,
            password_file=None if db.password_file is None else str(db.password_file),
            repl_user=db.replication_user,
            repl_password_file=(
                None if db.replication_password_file is None else str(db.replication_password_file)
            ),
            stop_argv=db.stop_command or (),
            start_argv=db.start_command or (),
            aside_dir=str(db.aside_directory or Path(cfg.service.state_dir) / "aside"),
        )
    )


def upstream(cfg: Config) -> Upstream:
    """The peer as a replication upstream: its first address (the one listed first in
    peer.addresses, normally the LAN) and the database port."""
    return Upstream(cfg.peer.name, str(cfg.peer.addresses[0]), cfg.database.port)
