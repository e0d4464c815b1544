#!/usr/bin/env bash
# Set up everything dbha needs on a Debian 12 machine, as root, idempotently:
# the Debian packages, a virtualenv in .venv, and dbha installed in it.
# Sourced by scripts/demo and scripts/test; safe to run any number of times.
set -euo pipefail

DBHA_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$DBHA_ROOT/.venv"

if [ "$(id -u)" -ne 0 ]; then
    echo "dbha: run this as root (the lab builds network namespaces)" >&2
    exit 1
fi

# Debian packages the project needs. The database servers are installed
# without letting their maintainer scripts start a server in the root
# namespace: a policy-rc.d that refuses, created only if absent and removed
# only if we created it.
PACKAGES=(python3 python3-venv iproute2 iputils-ping iputils-arping tcpdump
          postgresql-15 postgresql-client-15 mariadb-server mariadb-client
          mariadb-backup util-linux procps)
missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "dbha: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -q
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    trap '[ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
    if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    trap - EXIT
fi

# The virtualenv, rebuilt only when pyproject.toml changed since the last install.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
stamp="$VENV/.dbha-installed"
if [ ! -f "$stamp" ] || [ "$DBHA_ROOT/pyproject.toml" -nt "$stamp" ]; then
    "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$DBHA_ROOT[dev]"
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
