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

# Python itself. Everything else (database servers, network tools) is
# installed by `dbha lab install` (dbha/lab/packages.py), which keeps servers
# from starting in the root namespace and reuses this apt-get update.
PACKAGES=(python3 python3-venv)
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
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
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
