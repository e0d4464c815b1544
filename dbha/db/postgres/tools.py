"""The external tools of the PostgreSQL driver (pg_ctl, pg_rewind, pg_basebackup,
pg_controldata), run as the server's OS user, bounded, never with a secret on a
command line; and the files they read (pgpass), written owned by that user."""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from dbha import proc
from dbha.db.base import DbCommandFailed, DbError, DbTimeout
from dbha.db.postgres.conn import Deadline, PgSettings, map_error, read_password
from dbha.errors import CommandFailed, CommandTimeout


def pgpass_line(user: str, password: str) -> str:
    """One pgpass line for ``user`` on any host, port and database."""

    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace(":", "\\:")

    return f"*:*:*:{esc(user)}:{esc(password)}\n"


def pgpass_passwords(path: Path) -> list[str]:
    """The passwords in a pgpass file (for the argv guard); [] if unreadable."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        fields = re.split(r"(?<!\\):", line, maxsplit=4)
        if len(fields) == 5 and fields[4]:
            out.append(fields[4].replace("\\:", ":").replace("\\\\", "\\"))
    return out


def check_argv(argv: Sequence[str], secrets: Sequence[str]) -> None:
    """Refuse an argv that carries a secret or a ``password=`` conninfo key: child
    command lines are visible to every local user (ps, /proc)."""
    for arg in argv:
        if re.search(r"(^|\s)password\s*=", arg) or any(x and x in arg for x in secrets):
            raise DbError(f"refusing to run {argv[0]}: a secret would be on its command line")


def chown_to(path: Path, owner: str) -> None:
    pw = pwd.getpwnam(owner)
    os.chown(path, pw.pw_uid, pw.pw_gid)


def write_owned(path: Path, text: str, owner: str, mode: int = 0o600) -> None:
    """Write ``path`` atomically, owned by ``owner`` with ``mode`` from the first byte."""
    tmp = path.with_name(f".{path.name}.dbha-tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    chown_to(tmp, owner)
    os.replace(tmp, path)


class Tools:
    """Runs server-side tools (pg_ctl, pg_rewind, ...) as the OS user, bounded by a
    deadline, with a guard that no secret is ever on a command line."""

    def __init__(self, s: PgSettings) -> None:
        self.s = s

    def secrets(self) -> list[str]:
        out = pgpass_passwords(self.s.replication_passfile)
        with suppress(DbError):
            out.append(read_password(self.s.password_file))
        return [x for x in out if x]

    def argv(self, argv: Sequence[str]) -> list[str]:
        """The full command line for ``argv`` (checked: no secret on it)."""
        full = [*self.s.tool_prefix, *argv]
        check_argv(full, self.secrets())
        return full

    def run(
        self, argv: Sequence[str], deadline: Deadline, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        full = self.argv(argv)
        try:
            return proc.run(full, timeout=deadline.left(), env=self.s.tool_env, check=check)
        except (CommandFailed, CommandTimeout) as exc:
            raise map_error(exc, f"{deadline.what}: {Path(argv[0]).name}") from exc

    def bin(self, name: str) -> str:
        return str(self.s.bin_dir / name)

    def running(self, deadline: Deadline) -> bool:
        """Whether a postmaster runs on the data directory (pg_ctl status)."""
        res = self.run([self.bin("pg_ctl"), "status", "-D", str(self.s.data_dir)], deadline, False)
        if res.returncode == 0:
            return True
        if res.returncode == 3:
            return False
        raise DbCommandFailed(
            f"{deadline.what}: pg_ctl status: exit {res.returncode}: {_last_line_text(res)}"
        )

    def start(self, deadline: Deadline) -> None:
        self.run(self.s.start_command(deadline.left()), deadline)

    def stop(self, mode: str, deadline: Deadline) -> None:
        """Stop the server (no-op if it is not running) and check that it stopped."""
        if not self.running(deadline):
            return
        self.run(self.s.stop_command(mode, deadline.left()), deadline, check=False)
        if self.running(deadline):
            raise DbTimeout(f"{deadline.what}: the server did not stop ({mode})")

    def controldata(self, deadline: Deadline) -> dict[str, str]:
        res = self.run([self.bin("pg_controldata"), "-D", str(self.s.data_dir)], deadline)
        out = {}
        for line in res.stdout.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
        return out


def _last_line_text(res: subprocess.CompletedProcess[str]) -> str:
    lines = (res.stderr or res.stdout).strip().splitlines()
    return lines[-1] if lines else "no output"


@contextmanager
def temp_passfile(s: PgSettings, user: str, password: str) -> Iterator[Path]:
    """A pgpass file for one tool run: 0600, owned by the OS user, in the work dir,
    removed afterwards whatever happens."""
    path = s.workdir() / f".dbha-pgpass-{os.getpid()}-{threading.get_ident()}"
    try:
        write_owned(path, pgpass_line(user, password), s.os_user)
    except OSError as exc:
        raise DbError(f"cannot write a passfile in {s.workdir()}: {exc.strerror or exc}") from exc
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
