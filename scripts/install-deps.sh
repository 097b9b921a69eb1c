#!/usr/bin/env bash
# Installs what the real-PostgreSQL integration tests need: PostgreSQL server binaries
# (initdb, pg_ctl, postgres) and PgBouncer from Debian's packages, and the drivers of other
# ecosystems that pool-proxy/tests/drivers.rs runs through the proxy: psycopg 3 from PyPI
# into .venv-drivers/ and node-postgres (pg) from npm into drivers/node/node_modules/, at
# the versions drivers/python/requirements.txt and drivers/node/package-lock.json name.
# Idempotent: installs only what is missing or whose pinned version changed. Never leaves
# the Debian-managed default cluster running: the test harness starts its own throwaway
# clusters on free loopback ports.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv-drivers"
PY_REQUIREMENTS="$ROOT/drivers/python/requirements.txt"
NODE_DIR="$ROOT/drivers/node"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

have_initdb() {
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

have_pgbouncer() {
    command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || [ -x /usr/bin/pgbouncer ]
}

have_python_venv() {
    command -v python3 >/dev/null 2>&1 && python3 -c 'import ensurepip, venv' >/dev/null 2>&1
}

# ---- Debian packages ----

missing=()
have_initdb || missing+=(postgresql)
have_pgbouncer || missing+=(pgbouncer)
have_python_venv || missing+=(python3 python3-venv)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null

    # The packages may start a default cluster / pgbouncer service; the tests need neither.
    if command -v pg_lsclusters >/dev/null 2>&1; then
        pg_lsclusters --no-header 2>/dev/null | while read -r ver name _rest; do
            $SUDO pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true
        done
    fi
    $SUDO service postgresql stop >/dev/null 2>&1 || true
    $SUDO service pgbouncer stop >/dev/null 2>&1 || true

    have_initdb || { echo "install-deps: initdb still missing" >&2; exit 1; }
    have_pgbouncer || { echo "install-deps: pgbouncer still missing" >&2; exit 1; }
    have_python_venv || { echo "install-deps: python3 venv still missing" >&2; exit 1; }
    command -v npm >/dev/null 2>&1 || { echo "install-deps: npm still missing" >&2; exit 1; }
fi

# ---- Drivers (a stamp beside each install records the pins it was made from) ----

installed=()

py_stamp="$VENV/.install-deps-requirements.txt"
if "$VENV/bin/python" -c 'import psycopg' >/dev/null 2>&1 \
    && cmp -s "$PY_REQUIREMENTS" "$py_stamp"; then
    :
else
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$PY_REQUIREMENTS"
    "$VENV/bin/python" -c 'import psycopg' \
        || { echo "install-deps: psycopg still missing from $VENV" >&2; exit 1; }
    cp "$PY_REQUIREMENTS" "$py_stamp"
    installed+=(psycopg)
fi

node_stamp="$NODE_DIR/node_modules/.install-deps-package-lock.json"
if (cd "$NODE_DIR" && node -e 'require("pg")' >/dev/null 2>&1) \
    && cmp -s "$NODE_DIR/package-lock.json" "$node_stamp"; then
    :
else
    (cd "$NODE_DIR" && npm ci --silent --no-audit --no-fund)
    (cd "$NODE_DIR" && node -e 'require("pg")') \
        || { echo "install-deps: pg still missing from $NODE_DIR/node_modules" >&2; exit 1; }
    cp "$NODE_DIR/package-lock.json" "$node_stamp"
    installed+=(node-postgres)
fi

if [ "${#missing[@]}" -eq 0 ] && [ "${#installed[@]}" -eq 0 ]; then
    echo "install-deps: everything already installed"
else
    echo "install-deps: installed ${missing[*]} ${installed[*]}"
fi
