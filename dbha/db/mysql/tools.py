"""Client tools for the MySQL/MariaDB driver: option files, bounded runs, pipes.

Credentials reach a tool only through a 0600 option file passed with
``--defaults-extra-file`` (removed when the block ends): never argv, never the
environment. Every run is bounded by the verb's deadline; a tool that overruns
is killed by its PID. Failures become ``DbTimeout`` / ``DbCommandFailed``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from dbha import proc
from dbha.db.base import DbCommandFailed, DbError, DbTimeout
from dbha.db.mysql.conn import Deadline, boundary

KILL_GRACE = 5.0  # after killing a tool that overran, how long to wait for it to go


def _quote_option(value: str) -> str:
    r"""An option-file value: double-quoted, with the escapes the servers' option
    parser undoes (\\ \n \r \t)."""
    escaped = (
        value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )
    return f'"{escaped}"'


def option_text(user: str, password: str, host: str | None, port: int, socket: str | None) -> str:
    lines = ["[client]", f"user={_quote_option(user)}", f"password={_quote_option(password)}"]
    if socket is not None:
        lines.append(f"socket={_quote_option(socket)}")
    else:
        lines += [f"host={_quote_option(host or '127.0.0.1')}", f"port={int(port)}"]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def option_file(text: str, what: str) -> Iterator[str]:
    """A 0600 option file holding ``text`` for the life of the block, then removed."""
    try:
        fd, path = tempfile.mkstemp(prefix="dbha-my-", suffix=".cnf")
    except OSError as exc:
        raise DbError(f"{what}: cannot make an option file: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def query_tool(argv: Sequence[str], sql: str, deadline: Deadline, what: str) -> list[str]:
    """Run a client tool with ``sql`` on standard input; its output lines."""
    with boundary(what):
        res = proc.run(argv, timeout=deadline.left(what), input=sql)
    return res.stdout.splitlines()


def _tail(f: IO[bytes]) -> str:
    with contextlib.suppress(OSError):
        f.seek(0)
        lines = f.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else "no output"
    return "no output"


def _finish(procs: list[subprocess.Popen[bytes]], deadline: Deadline, what: str) -> None:
    try:
        for p in procs:
            p.wait(timeout=max(deadline.remaining(), 0.001))
    except subprocess.TimeoutExpired as exc:
        for p in procs:
            with contextlib.suppress(OSError):
                p.kill()
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=KILL_GRACE)
        raise DbTimeout(f"{what}: not done within {deadline.timeout:g} s") from exc


def spawn_to_file(argv: Sequence[str], out_path: Path, deadline: Deadline, what: str) -> None:
    """Run a tool whose standard output goes to a new 0600 file ``out_path``."""
    deadline.left(what)
    with tempfile.TemporaryFile() as err, boundary(what):
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            child = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _finish([child], deadline, what)
        if child.returncode != 0:
            raise DbCommandFailed(f"{what}: exit {child.returncode}: {_tail(err)}")


def pipe_tools(first: Sequence[str], second: Sequence[str], deadline: Deadline, what: str) -> None:
    """``first | second``, both bounded by the deadline; killed (by PID) if late."""
    deadline.left(what)
    with tempfile.TemporaryFile() as err1, tempfile.TemporaryFile() as err2, boundary(what):
        a = subprocess.Popen(
            list(first), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err1
        )
        try:
            b = subprocess.Popen(list(second), stdin=a.stdout, stdout=err2, stderr=err2)
        except OSError:
            a.kill()
            a.wait(timeout=KILL_GRACE)
            raise
        finally:
            if a.stdout is not None:
                a.stdout.close()
        _finish([b, a], deadline, what)
        if a.returncode != 0:
            raise DbCommandFailed(f"{what}: reading side exit {a.returncode}: {_tail(err1)}")
        if b.returncode != 0:
            raise DbCommandFailed(f"{what}: writing side exit {b.returncode}: {_tail(err2)}")
