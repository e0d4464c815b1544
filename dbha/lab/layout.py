"""Where a lab keeps its files, and its secrets.

One directory per lab (``/var/lib/dbha-lab/PREFIX``): per-node data, sockets
and logs under ``HOST/SERVICE/``, each supervisor's config, state, control
socket and log under ``HOST/dbha/SERVICE/``, passwords and heartbeat keys in
``secrets/`` (0700, files 0600, root's), never on a command line.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from dbha.lab.operator import DEFAULT_PAIRS, PAIRS

DEFAULT_ROOT = Path("/var/lib/dbha-lab")


@dataclass(frozen=True, slots=True)
class Layout:
    root: Path  # the lab's own directory

    @classmethod
    def for_prefix(cls, prefix: str, base: Path = DEFAULT_ROOT) -> Layout:
        return cls(base / prefix)

    def node(self, host: str, service: str) -> Path:
        return self.root / host / service

    @property
    def meta_path(self) -> Path:
        """The lab's choices (``lab.json``: sync, profile, pairs, supervisors, faults)."""
        return self.root / "lab.json"

    def pairs(self) -> str:
        """How the lab builds its pairs: "dbha" (the default) or "operator"."""
        try:
            value = json.loads(self.meta_path.read_text()).get("pairs", DEFAULT_PAIRS)
        except (OSError, ValueError, AttributeError):
            return DEFAULT_PAIRS
        return value if value in PAIRS else DEFAULT_PAIRS

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    def secret_path(self, name: str) -> Path:
        return self.secrets_dir / f"{name}.password"

    def secret(self, name: str) -> str:
        """The password ``name``, made (random, 0600) on first use."""
        path = self.secret_path(name)
        if not path.exists():
            self.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            value = secrets.token_urlsafe(24)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(value + "\n")
        return path.read_text().strip()

    def key_path(self, name: str) -> Path:
        return self.secrets_dir / f"{name}.key"

    def key(self, name: str) -> Path:
        """The shared key file ``name`` (random, 0600), made on first use; its path."""
        path = self.key_path(name)
        if not path.exists():
            self.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
        return path

    def supervisor(self, host: str, service: str) -> Path:
        """Where the dbha supervisor of ``service`` on ``host`` keeps its files."""
        return self.root / host / "dbha" / service


def make_dir(path: Path, owner: str, mode: int = 0o700) -> Path:
    """Create ``path`` (and parents, root-owned 0755) owned by ``owner``."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    path.mkdir(mode=mode, exist_ok=True)
    pw = pwd.getpwnam(owner)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    os.chmod(path, mode)
    return path


def write_owned(path: Path, text: str, owner: str, mode: int = 0o600) -> None:
    """Write a file that belongs to ``owner`` with ``mode`` from the first byte."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    pw = pwd.getpwnam(owner)
    os.chown(tmp, pw.pw_uid, pw.pw_gid)
    os.replace(tmp, path)


def remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
