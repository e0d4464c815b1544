"""Install what the lab needs, without letting a package start a server.

Debian's postgresql and mariadb-server packages start a server in the root
namespace from their maintainer scripts unless /usr/sbin/policy-rc.d exits
101: we create one for the install only if none exists, and remove only the
one we created.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from dbha import proc
from dbha.errors import CommandFailed, CommandTimeout, LabError

# What the lab runs, and the Debian package that provides it.
NEEDED = {
    "/usr/lib/postgresql/15/bin/postgres": "postgresql-15",
    "/usr/lib/postgresql/15/bin/pg_rewind": "postgresql-15",
    "/usr/bin/psql": "postgresql-client-15",
    "/usr/sbin/mariadbd": "mariadb-server",
    "/usr/bin/mariadb-install-db": "mariadb-server",
    "/usr/bin/mariadb": "mariadb-client",
    "/usr/bin/mariabackup": "mariadb-backup",
    "/usr/bin/arping": "iputils-arping",
    "/usr/bin/ping": "iputils-ping",
    "/usr/sbin/ip": "iproute2",
    "/usr/sbin/tc": "iproute2",
    "/usr/bin/setpriv": "util-linux",
    "/usr/sbin/sysctl": "procps",
    "/usr/bin/tcpdump": "tcpdump",
    "/usr/sbin/nft": "nftables",
    "/usr/sbin/haproxy": "haproxy",
    "/usr/bin/curl": "curl",
}
POLICY = Path("/usr/sbin/policy-rc.d")
APT_TIMEOUT = 900.0


def missing() -> list[str]:
    """Debian packages whose programs are not installed, in a stable order."""
    return sorted({pkg for path, pkg in NEEDED.items() if not os.path.exists(path)})


def lists_fresh(max_age: float = 3600.0) -> bool:
    """True if apt's package lists were refreshed within ``max_age`` seconds (so the
    set-up scripts and the lab together run one ``apt-get update``, not two)."""
    lists = Path("/var/lib/apt/lists")
    try:
        newest = max(p.stat().st_mtime for p in lists.glob("*_Packages*"))
    except (OSError, ValueError):
        return False
    return time.time() - newest < max_age


def ensure() -> list[str]:
    """Install the missing packages (one apt-get update first). Returns what was installed."""
    need = missing()
    if not need:
        return []
    if os.geteuid() != 0:
        raise LabError(f"packages missing ({', '.join(need)}) and installing them needs root")
    if shutil.which("apt-get") is None:
        raise LabError(f"packages missing ({', '.join(need)}) and there is no apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    made_policy = False
    if not POLICY.exists():
        POLICY.write_text(
            "#!/bin/sh\n# dbha lab: no service starts during this install\nexit 101\n"
        )
        POLICY.chmod(0o755)
        made_policy = True
    try:
        apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "-q"]
        if not lists_fresh():
            proc.run([*apt, "update"], timeout=APT_TIMEOUT, env=env)
        proc.run(
            [*apt, "install", "-y", "--no-install-recommends", *need], timeout=APT_TIMEOUT, env=env
        )
    except (CommandFailed, CommandTimeout) as exc:
        raise LabError(f"installing {', '.join(need)} failed: {exc}") from exc
    finally:
        if made_policy:
            POLICY.unlink(missing_ok=True)
    still = missing()
    if still:
        raise LabError(f"after installing, still missing: {', '.join(still)}")
    return need
